"""Give every gradient strategy a fair chance: pick its outer (meta) learning rate on a tuning seed.

For each task and strategy (hd, local, glocal, global) this runs the config's experiment on
seeds that the reported runs never use (default 100 and 101) for each outer learning rate of a
grid and keeps the one with the lowest mean *validation* loss at the end of training over those
seeds (test data is never looked at; a setting that diverges on any tuning seed is excluded).
On a task of kind nqm (the noisy quadratic model) the objective is the expected final loss of the
schedule the run trained with (its summary's nqm section; in sampled mode the realized final loss is
one noisy draw), against the task's answer key, computed once here.
The table it writes is what `config.yaml`'s per-task `strategy_options.<strategy>.outer.lr`
came from; rerun it after changing the experiment:

    python scripts/tune_outer_lr.py --config config.yaml --out results/tuning
    python scripts/tune_outer_lr.py --tasks nqm nqm_sampled --strategies hd local glocal global glocal_robust
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path

import torch

from glocal.config import load_config, task_kind
from glocal.train import run_experiment
from glocal.utils import atomic_write_json


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="config.yaml")
    p.add_argument("--out", default="results/tuning")
    p.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    p.add_argument("--grid", type=float, nargs="+", default=[0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    p.add_argument("--tasks", nargs="+", default=["lr", "reweight"])
    p.add_argument("--strategies", nargs="+", default=["hd", "local", "glocal", "global"])
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or 1))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in args.tasks:
        key = None
        if task_kind(load_config(args.config), task) == "nqm":  # the answer key, once per task
            from glocal.nqm_runs import answer_key_document

            key = out / task / "answer_key.json"
            if not key.exists():
                key.parent.mkdir(parents=True, exist_ok=True)
                atomic_write_json(key, answer_key_document(load_config(args.config), task))
        for strategy in args.strategies:
            for lr in args.grid:
                over = {"tasks": {task: {"strategy_options": {strategy: {"outer": {"lr": lr}}}}}}
                cfg = load_config(args.config, over)
                vals, diverged, wall = [], False, 0.0
                for seed in args.seeds:
                    run_dir = out / task / strategy / f"lr{lr:g}" / f"seed{seed}"
                    if (run_dir / "summary.json").exists():
                        s = json.loads((run_dir / "summary.json").read_text())
                    else:
                        s = run_experiment(cfg, task, strategy, seed, run_dir, progress=False, answer_key=key)
                    v = s["nqm"]["expected_final_loss"] if s.get("nqm") else s["final"]["val_loss"]
                    diverged |= s["diverged_step"] is not None or v is None
                    vals.append(float("inf") if v is None else v)
                    wall += s["time"]["total"]
                rows.append({"task": task, "strategy": strategy, "outer_lr": lr,
                             "objective": "expected final loss" if key else "final val loss",
                             "final_val_loss": sum(vals) / len(vals), "worst_val_loss": max(vals),
                             "diverged_step": 0 if diverged else None, "wall_time": round(wall, 2)})
                print(rows[-1], flush=True)
    # Merge with the rows of earlier invocations (e.g. a grid extended past its edge), newest wins.
    table = out / "outer_lr.csv"
    merged = {}
    if table.exists():
        with open(table, newline="") as fh:
            for r in csv.DictReader(fh):
                merged[(r["task"], r["strategy"], float(r["outer_lr"]))] = r
    for r in rows:
        merged[(r["task"], r["strategy"], float(r["outer_lr"]))] = r
    with open(table, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(merged[k] for k in sorted(merged))
    rows = [{**r, "final_val_loss": float(r["final_val_loss"]), "outer_lr": float(r["outer_lr"]),
             "diverged_step": None if r["diverged_step"] in (None, "") else r["diverged_step"]}
            for r in merged.values()]
    best = {}
    for r in rows:
        v = r["final_val_loss"]
        if v is None or r["diverged_step"] is not None:
            continue
        key = (r["task"], r["strategy"])
        if key not in best or v < best[key]["final_val_loss"]:
            best[key] = r
    for (task, strategy), r in sorted(best.items()):
        print(f"best outer lr  {task:11s} {strategy:13s} {r['outer_lr']:g}  ({r['objective']} {r['final_val_loss']:.4f})")


if __name__ == "__main__":
    main()
