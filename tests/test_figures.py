"""Figures and tables render from small synthetic result files, plot exactly their input, and survive
missing seeds, diverged runs and absent inputs."""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from figures import catalog, style, tables
from figures.io import load_runs

STEPS = [0, 10, 20, 30]
HP_LR = ["hp:lr[0]", "hp:lr[1]", "hp:weight_decay", "hp:momentum"]
HP_RW = ["hp:example_weight_clean_mean", "hp:example_weight_flipped_mean", "hp:example_weight_mean"]


def _write_csv(path: Path, rows: list[dict], fields: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)


def val_loss(task, strat, seed, step):
    base = {"fixed": 1.0, "local": 0.8, "glocal": 0.6, "global": 0.7}[strat] + 0.1 * seed
    return base * math.exp(-step / 20) + 0.1 + (0.05 if task == "reweight" else 0)


def write_run(root: Path, task: str, strat: str, seed: int, *, diverge_at: int | None = None) -> None:
    d = root / "runs" / task / strat / f"seed{seed}"
    d.mkdir(parents=True)
    hps = HP_LR if task == "lr" else HP_RW
    runs = 2 if strat == "global" else 1
    rows = []
    for r in range(runs):
        for st in STEPS:
            step = r * STEPS[-1] + st
            v = val_loss(task, strat, seed, st) + 0.05 * (runs - 1 - r)
            if diverge_at is not None and step >= diverge_at:
                v = float("nan")
            row = {"step": step, "run": r, "wall_time": 0.5 + step * (0.2 if strat == "global" else 0.1) + seed,
                   "train_loss": v, "train_acc": 0.5, "val_loss": v, "val_acc": 0.6, "test_loss": v * 1.1 if v == v else v,
                   "test_acc": 0.7 + 0.01 * seed}
            for i, h in enumerate(hps):
                row[h] = 0.05 * (1 + i) * (1 + (0 if strat == "fixed" else step / 100 + seed / 10))
            rows.append(row)
    _write_csv(d / "metrics.csv", rows, list(rows[0]))
    last = rows[-1]
    summary = {"task": task, "strategy": strat, "seed": seed,
               "final": {k: last[k] for k in ("train_loss", "train_acc", "val_loss", "val_acc", "test_loss", "test_acc")},
               "time": {"total": last["wall_time"] + 1.0}, "diverged_step": diverge_at, "engine": "forward",
               "n_training_runs": runs, "n_hyper_updates": 0 if strat == "fixed" else 3, "steps": STEPS[-1],
               "peak_memory_mb": 100.0 + seed}
    model = {"kind": "mlp", "hidden": [64]} if task == "lr" else {"kind": "logreg"}
    (d / "config.json").write_text(json.dumps({"config": {"tasks": {task: {"model": model}}}, "task": task}))
    if task == "reweight":
        rng = np.random.default_rng(seed)
        flipped = (np.arange(40) % 4 == 0).astype(int)
        w = np.full(40, 0.5) if strat == "fixed" else np.clip(0.7 - 0.4 * flipped + 0.1 * rng.standard_normal(40), 0, 1)
        _write_csv(d / "weights.csv", [{"index": i, "weight": w[i], "flipped": flipped[i]} for i in range(40)],
                   ["index", "weight", "flipped"])
        from sklearn.metrics import roc_auc_score  # not the plotting module's own helper

        summary["auc"] = float(roc_auc_score(flipped == 0, w))
    if strat == "glocal":
        summary["fit_health"] = {"windows": 10, "fallbacks": 2 + seed, "fallbacks_by_reason": {"growing mode": 2 + seed},
                                 "degenerate": seed, "growing": 3, "median_rank": 4 + 2 * seed,
                                 "median_spectral_radius": 0.9 + 0.04 * seed}
    (d / "summary.json").write_text(json.dumps(summary))
    if strat == "glocal":
        recs = [{"step": s, "eigenvalues": [[0.9 - 0.1 * k, 0.1 * k], [0.9 - 0.1 * k, -0.1 * k]]}
                for k, s in enumerate(STEPS)] + [{"step": 35, "fallback": True, "eigenvalues": [[1.2, 0.0]]},
                                                 {"step": 40, "fallback": True, "eigenvalues": None}]
        (d / "hypergrads.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n{\"partial")


NQM_TASKS = {"nqm": "expected", "nqm_sampled": "sampled"}
NQM_STRATEGIES = ["fixed", "local", "glocal", "global", "glocal_robust"]
NQM_T = 30
#: the synthetic answer key: constant optimum (loss, effective lr), a 3-phase schedule optimum
NQM_KEY = {"optimum_constant_loss": 0.4, "optimum_schedule_loss": 0.2, "optimum_schedule_phases": 3,
           "optimum_constant_effective_lr": 1.25, "optimum_schedule_effective_lr": [4.0, 1.0, 0.25]}


def nqm_ratio(task: str, strat: str, seed: int) -> float:
    return {"fixed": 2.0, "local": 0.9, "glocal": 0.8, "global": 1.05, "glocal_robust": 0.85}[strat] + 0.01 * seed + (
        0.02 if task == "nqm_sampled" else 0.0)


def nqm_lr(strat: str, seed: int, step: int) -> float:
    """Effective learning rate of the synthetic runs at a training step (windows of 10 steps)."""
    if strat in ("fixed", "global"):
        return 0.2 if strat == "fixed" else 1.0 + 0.1 * seed
    return 0.2 * (1 + step // 10) * (1 + 0.1 * seed)


def write_nqm_run(root: Path, task: str, strat: str, seed: int) -> None:
    """A run of an NQM task: metrics, the summary with its nqm section (against NQM_KEY) and, for glocal
    strategies, the fit health and the hypergradient log with its cosine to local."""
    d = root / "runs" / task / strat / f"seed{seed}"
    d.mkdir(parents=True)
    runs = 2 if strat == "global" else 1
    rows = [{"step": r * NQM_T + st, "run": r, "wall_time": 0.1 * (r * NQM_T + st), "train_loss": 1.0 / (1 + st),
             "val_loss": 1.0 / (1 + st), "test_loss": 1.0 / (1 + st), "hp:lr": nqm_lr(strat, seed, st) / 2,
             "hp:momentum": 0.5} for r in range(runs) for st in (0, 10, 20, 30)]
    _write_csv(d / "metrics.csv", rows, list(rows[0]))
    sched = [[k, k + 1, nqm_lr(strat, seed, k)] for k in range(NQM_T)]
    ratio = nqm_ratio(task, strat, seed)
    wall = {"fixed": 0.1, "local": 0.3, "glocal": 0.8, "global": 4.0, "glocal_robust": 0.9}[strat] + 0.1 * seed
    summary = {"task": task, "strategy": strat, "seed": seed, "task_kind": "nqm", "steps": NQM_T,
               "base_strategy": "glocal" if strat == "glocal_robust" else strat, "diverged_step": None,
               "final": {"train_loss": 0.03, "val_loss": 0.03, "test_loss": 0.03},
               "time": {"total": wall, "cpu": wall / 2}, "n_training_runs": runs,
               "n_hyper_updates": 0 if strat == "fixed" else 3,
               "nqm": {**NQM_KEY, "mode": NQM_TASKS[task], "expected_final_loss": 0.4 * ratio,
                       "ratio_to_constant_optimum": ratio, "ratio_to_schedule_optimum": 2 * ratio,
                       "final_lr": [sched[-1][2] / 2], "final_momentum": 0.5, "final_effective_lr": [sched[-1][2]],
                       "mean_effective_lr": sum(s[2] for s in sched) / NQM_T, "effective_lr_schedule": sched,
                       "training_steps": runs * NQM_T, "wall_time": wall, "cpu_time": wall / 2, "diverged": False}}
    recs = []
    if summary["base_strategy"] == "glocal":
        summary["fit_health"] = {"windows": 3, "fallbacks": 1, "degenerate": 0, "median_spectral_radius": 0.9}
        recs = [{"step": 10 * k, "tau": 10, "norm": 2.0, "local_norm": 1.0, "cosine_to_local": c,
                 "eigenvalues": [[0.9, 0.0]]} for k, c in enumerate((1.0, 0.5, 0.9))]
    (d / "hypergrads.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    (d / "summary.json").write_text(json.dumps(summary))


def write_nqm_bias(root: Path, task: str) -> None:
    rows = [{"tau": tau, "horizon_lr": 1.2, "horizon_ratio": 1.05 if tau < NQM_T else 1.0,
             "greedy_first_lr": 1.2, "greedy_last_lr": 0.1 * tau ** 0.5, "greedy_ratio": 2.0 - tau / NQM_T,
             "greedy_lrs": [1.0 / (1 + k) for k in range(-(-NQM_T // tau))]} for tau in (1, 3, 10, NQM_T)]
    d = root / "nqm" / task
    d.mkdir(parents=True)
    (d / "short_horizon_bias.json").write_text(json.dumps(
        {"task": task, "steps": NQM_T, "momentum": 0.0, "optimum": {"lr": [0.98], "loss": 0.43}, "rows": rows,
         "taus_dropped": [100]}))


def write_search(root: Path, task: str, strat: str, seed: int) -> None:
    d = root / "runs" / task / strat / f"seed{seed}"
    d.mkdir(parents=True)
    vals = [0.9, 0.5, 0.7, 0.3]
    rows, best, cum = [], math.inf, 0.0
    for k, v in enumerate(vals):
        best, cum = min(best, v), cum + 2.0
        rows.append({"trial": k, "slope": -1.0, "val_loss": v, "test_loss": v, "test_acc": 0.8, "wall_time": 2.0,
                     "cumulative_wall_time": cum, "n_training_runs": k + 1, "best_so_far_val_loss": best})
    _write_csv(d / "trials.csv", rows, list(rows[0]))
    _write_csv(d / "metrics.csv", [{"step": s, "run": 3, "wall_time": s * 0.05, "val_loss": 0.3, "test_loss": 0.3,
                                    "hp:momentum": 0.5} for s in STEPS],
               ["step", "run", "wall_time", "val_loss", "test_loss", "hp:momentum"])
    (d / "summary.json").write_text(json.dumps({"final": {"val_loss": 0.3, "test_loss": 0.3, "test_acc": 0.8},
                                                "time": {"total": cum}, "n_training_runs": 4}))


#: the synthetic HPO ablation: {(axis, label): [(val_loss, test_loss, wall time, fallbacks, windows) per seed]}
ABLATION_HPO = {("delay", "1"): [(0.4, 0.5, 2.0, 1, 10), (0.6, 0.7, 4.0, 3, 10)],
                ("delay", "2"): [(0.3, 0.2, 3.0, 0, 10), (0.5, 0.4, 5.0, 2, 10)],
                ("window", "default"): [(0.2, 0.3, 1.0, 0, 5), (0.2, 0.3, 1.0, 0, 5)],
                ("window", "20"): [(0.1, 0.2, 6.0, 4, 8), (0.3, 0.2, 8.0, 0, 8)]}


def write_ablation_hpo(root: Path) -> None:
    """results/ablation/hpo/{axis}/: an index per axis and a summary.json per run, as `glocal ablate hpo` writes."""
    values = {"1": 1, "2": 2, "default": None, "20": 20}
    for axis in ("delay", "window"):
        runs = []
        for (ax, label), per_seed in ABLATION_HPO.items():
            if ax != axis:
                continue
            for seed, (val, test, wall, fallbacks, windows) in enumerate(per_seed):
                d = root / "ablation" / "hpo" / axis / label / f"seed{seed}"
                d.mkdir(parents=True)
                (d / "summary.json").write_text(json.dumps({
                    "final": {"val_loss": val, "test_loss": test}, "time": {"total": wall},
                    "fit_health": {"windows": windows, "fallbacks": fallbacks}}))
                runs.append({"axis": axis, "label": label, "value": values[label], "seed": seed,
                             "variant": f"ablation_{axis}_{label}", "path": f"{label}/seed{seed}"})
        (root / "ablation" / "hpo" / axis / "index.json").write_text(
            json.dumps({"task": "reweight", "axis": axis, "runs": runs}))


@pytest.fixture(scope="module")
def results(tmp_path_factory) -> Path:
    style.apply(dpi=60)  # fast PNGs in tests (the CLI default is 300)
    root = tmp_path_factory.mktemp("results")
    for task in ("lr", "reweight"):
        for strat in ("fixed", "local", "glocal", "global"):
            for seed in (0, 1):
                if task == "lr" and strat == "local" and seed == 1:
                    continue  # a missing seed
                write_run(root, task, strat, seed, diverge_at=20 if (task == "lr" and strat == "global"
                                                                     and seed == 1) else None)
    write_search(root, "lr", "random", 0)
    write_search(root, "lr", "tpe", 0)
    write_search(root, "lr", "tpe", 1)
    write_search(root, "lr", "cmaes", 0)
    # extraction ablation: the refits of a geometric trajectory by the library itself
    import torch

    from glocal.ablation import ABLATION_COLUMNS, ablate_trajectory, ablation_settings

    steps = list(range(1, 21)) + [40]
    h = torch.stack([torch.tensor([1.0, -2.0]) * (1 - 0.8 ** t) for t in steps]).double()
    settings = ablation_settings({"delays": [1, 2], "ranks": [1], "energies": [0.9], "rank_rules": ["full", "oht"],
                                  "strides": [1, 4]}, {"delay": 1, "rank": None, "energy": None, "rank_rule": "full"})
    abl = []
    for setting, bs in (("full", None), ("bs8", 8)):
        for s in (0, 15):
            abl += [{"task": "lr", "setting": setting, "batch_size": bs, "window_start": s, "realization": 0, **r}
                    for r in ablate_trajectory(h, steps, h[-1], 40, [5, 10, 20], settings, ["limit", "horizon"])]
    _write_csv(root / "ablation" / "extract" / "lr" / "ablation.csv", abl, ABLATION_COLUMNS)
    # sensitivity: indexes over the synthetic runs (as if each start had run them)
    for task, starts in (("lr", [("lr_x0.1", "lr_factor", 0.1, 0.005), ("lr_x1", "lr_factor", 1.0, 0.05)]),
                         ("reweight", [("w0.9", "init_weight", 0.9, 0.9)])):
        for start, parameter, value, initial in starts:
            d = root / "sensitivity" / task / start
            d.mkdir(parents=True)
            (d / "index.json").write_text(json.dumps({
                "task": task, "kind": task, "start": start, "parameter": parameter, "value": value, "initial": initial,
                "runs": [{"strategy": st, "seed": 0, "path": str(root / "runs" / task / st / "seed0")}
                         for st in ("fixed", "glocal", "global")]}))
    write_ablation_hpo(root)
    for task in NQM_TASKS:
        for strat in NQM_STRATEGIES:
            for seed in (0, 1):
                write_nqm_run(root, task, strat, seed)
        write_nqm_bias(root, task)
    # extraction analysis + spectra
    ev = []
    for task in ("lr", "reweight"):
        for setting, bs in (("full", "full"), ("bs8", "8")):
            for s in (0, 15):
                for tau in (5, 10, 20):
                    for est, e in (("limit", 1 / tau), ("horizon", 2 / tau), ("local", 0.5), ("limit+averaged", 0.3)):
                        if est.endswith("averaged") and setting == "full":
                            continue
                        ev.append({"task": task, "setting": setting, "batch_size": bs, "window_start": s, "tau": tau,
                                   "estimator": est, "n": 1, "rel_error": e if tau != 20 or est != "horizon" else 1e5,
                                   "rel_error_std": 0.0, "cosine": 0.9, "ratio_to_local": e / 0.5, "beats_local": 1,
                                   "bound": 1e50 if tau == 5 else 0.1 if est in ("limit", "horizon") else "nan",
                                   "fallback_fraction": 1.0 if tau == 10 else 0.0,
                                   "noise_floor": 0.2 if setting != "full" else "nan"})
        _write_csv(root / "extract" / task / "spectra.csv",
                   [{"task": task, "setting": "full", "window_start": s, "batch_size": "full", "realization": 0,
                     "tau": 20, "estimator": "limit", "re": 0.5 + 0.1 * s / 15, "im": 0.2 * k}
                    for s in (0, 15) for k in (-1, 1)] + [
                       {"task": task, "setting": "full", "window_start": 0, "batch_size": "full", "realization": 0,
                        "tau": 20, "estimator": "limit", "re": 3.0, "im": 0.0}],
                   ["task", "setting", "window_start", "batch_size", "realization", "tau", "estimator", "re", "im"])
    fields = list(ev[0])
    _write_csv(root / "analysis" / "error_vs_tau.csv", ev, fields)
    (root / "analysis" / "summary.md").write_text("analysis summary\n")
    # theory
    th = root / "theory"
    _write_csv(th / "checks.csv", [{"check": "floor", "case": f"c{i}", "inputs": "{}", "measured": 1e-7 * (i + 1),
                                    "bound": 1e-5, "passed": i < 2} for i in range(3)],
               ["check", "case", "inputs", "measured", "bound", "passed"])
    _write_csv(th / "error_vs_tau.csv", [{"case": "spd_decay-p1-q1-k3-a0.5-s0", "n": 3, "d": 3, "tau": t, "threshold": 7,
                                          "glocal_error": 10.0 ** -t, "plain_error": 1.0, "local_error": 0.5,
                                          "fallback": False} for t in range(3, 10)],
               ["case", "n", "d", "tau", "threshold", "glocal_error", "plain_error", "local_error", "fallback"])
    _write_csv(th / "bound_vs_T.csv", [{"case": "c", "T": t, "error": 0.5 ** t, "bound": 0.6 ** t} for t in range(1, 9)],
               ["case", "T", "error", "bound"])
    _write_csv(th / "spectrum.csv", [{"case": "c", "which": w, "re": 0.5, "im": 0.0} for w in ("true", "fitted")],
               ["case", "which", "re", "im"])
    (th / "summary.json").write_text(json.dumps({"n_checks": 3, "passed": 2, "failed": 1}))
    # benchmark cost
    cost = [{"method": m, "variable": v, "value": x, "seconds_per_update": 0.01 * x ** (1 if m != "local" else 0.5),
             "seconds_per_run": 0.1 * x, "q": 5, "engine": "reverse" if m == "global" else "forward", "device": "cpu"}
            for m in ("global", "local", "glocal") for v in ("T", "tau") for x in (10, 20, 40)
            if not (m == "global" and v == "tau") and not (m != "global" and v == "T")]
    cost += [{"method": m, "variable": "q", "value": q, "seconds_per_update": 0.01 * q, "seconds_per_run": 0.1 * q,
              "q": q, "engine": "reverse", "device": "cpu"} for m in ("local", "glocal") for q in (3, 30)]
    _write_csv(root / "bench" / "cost.csv", cost, list(cost[0]))
    return root


def _ok(paths):
    for p in paths:
        assert Path(p).is_file() and Path(p).stat().st_size > 1000, p


CONFIG = {"tasks": {"lr": {}, "reweight": {}, "nqm": {"kind": "nqm"}, "nqm_sampled": {"kind": "nqm"}},
          "strategies": ["fixed", "local", "glocal", "global", "random", "tpe", "glocal_robust"],
          "seeds": [0, 1], "sensitivity": {"strategies": ["fixed", "glocal", "global"],
                                           "tasks": {"lr": {"lr_factors": [0.1, 1]}, "reweight": {"init_weights": [0.9]}}},
          "ablation": {"hpo": {"enabled": True, "task": "reweight", "seeds": [0, 1],
                               "axes": [{"option": "delay", "values": [1, 2]}, {"option": "window", "values": [None, 20]}]}}}


@pytest.fixture(scope="module")
def rendered(results, tmp_path_factory) -> tuple[Path, dict]:
    """Every figure drawn once from the synthetic results: (output directory, {name: returned data})."""
    from figures.cli import render_all

    out = tmp_path_factory.mktemp("figs")
    return out, render_all(results, out, CONFIG)


def test_every_figure_renders(rendered):
    out, done = rendered
    names = catalog.figure_names(list(CONFIG["tasks"]), nqm_tasks=list(NQM_TASKS))
    assert done["_names"] == names
    assert {"hpo_curves_lr", "baselines_reweight", "reweight_weights", "cost", "theory_spectrum", "hpo_curves_nqm",
            "nqm_learned_lr", "nqm_short_horizon_bias"} <= set(names)
    assert not {"nqm_learned_lr", "nqm_short_horizon_bias"} & set(catalog.figure_names(["lr", "reweight"]))
    assert not [n for n in names if isinstance(done[n], BaseException)]
    _ok([out / f"{n}.{e}" for n in names for e in ("png", "pdf")])
    assert set(names) == {p.stem for p in out.glob("*.png")}


def test_cli_exit_status_and_run_indexes(results, tmp_path):
    """`glocal figures --runs INDEX` reads the runs of the index; a malformed index is an error naming it."""
    from figures.cli import configure_parser, run

    p = argparse.ArgumentParser()
    configure_parser(p)
    index = tmp_path / "runs" / "lr" / "index.json"
    index.parent.mkdir(parents=True)
    index.write_text(json.dumps({"task": "lr", "runs": [
        {"strategy": "glocal", "seed": 0, "path": str(results / "runs" / "lr" / "glocal" / "seed0")}]}))
    out = tmp_path / "figs"
    args = ["--results", str(results), "--out", str(out), "--dpi", "60", "--runs", str(index)]
    assert run(p.parse_args(args + ["--only", "hpo_curves_lr"])) == 0
    assert (out / "hpo_curves_lr.png").is_file() and not (out / "cost.png").exists()
    index.write_text("{not json")
    with pytest.raises(ValueError, match="index.json"):
        run(p.parse_args(args + ["--only", "hpo_curves_lr"]))


REPORT = Path(__file__).parents[1] / "workflow" / "report"


def _caption(stem: str) -> str:
    path = REPORT / f"{stem}.rst"
    assert path.is_file(), f"no report caption {path} for {stem}"
    return path.read_text()


def test_captions_name_only_what_the_figures_draw(rendered):
    """Every figure declares the quantities it shows (figures.catalog). Its report caption and its reading guide
    name each of them and no other quantity of catalog.VOCABULARY (no accuracy where none is plotted, no
    diagonal that is not drawn), and the drawn figure (its text: labels, titles, legend, notes) shows each."""
    _, done = rendered
    problems = []
    for fig in catalog.FIGURES:
        assert fig.quantities and set(fig.quantities) <= set(catalog.VOCABULARY), fig.pattern
        declared = set(fig.quantities)
        for what, text in (("caption", _caption(fig.caption_stem)), ("guide", fig.guide)):
            named = catalog.quantities_named(text)
            if named - declared:
                problems.append(f"{fig.pattern}: its {what} names {sorted(named - declared)}, which the figure "
                                f"does not declare")
            if declared - named:
                problems.append(f"{fig.pattern}: its {what} does not name {sorted(declared - named)}")
        drawn = [done[n] for n in done["_names"] if catalog.spec(n) is fig]
        assert drawn, f"{fig.pattern} was not drawn from the synthetic results"
        shown = catalog.quantities_named("\n".join(d["text"] for d in drawn))
        if declared - shown:
            problems.append(f"{fig.pattern}: the drawn figure does not show {sorted(declared - shown)}")
    assert not problems, "\n".join(problems)


def test_caption_check_catches_a_quantity_the_figure_lacks():
    """The check above fails on the captions this project had: cosine similarity that error_vs_tau does not plot,
    accuracy in hpo_curves, a diagonal in theory_bound, peak memory in the summary table."""
    old = {"error_vs_tau": "Relative error (and cosine similarity) against the exact global hypergradient",
           "hpo_curves": "Validation and test loss and accuracy against inner training steps",
           "theory_bound": "every point must lie below the diagonal (the bound holds)"}
    for pattern, text in old.items():
        fig = next(f for f in catalog.FIGURES if f.caption_stem == pattern)
        assert catalog.quantities_named(text) - set(fig.quantities), pattern
    summary = next(t for t in catalog.TABLES if t.caption_stem == "table_summary")
    assert "peak memory" in summary.quantities  # the column exists now (test_tables_declare_their_columns)


def test_every_workflow_figure_is_in_the_catalog():
    """FIGURE_SPECS (workflow/rules/common.smk) and the catalog list the same figures, each with a caption, so a
    figure added to the workflow is covered by the caption check."""
    smk = (Path(__file__).parents[1] / "workflow" / "rules" / "common.smk").read_text()
    block = smk[smk.index("FIGURE_SPECS = ["):]
    block = block[: block.index("\n]")]
    patterns = re.findall(r'\(\s*"([^"]+)"', block)
    assert patterns and sorted(patterns) == sorted(f.pattern for f in catalog.FIGURES)
    for fig in catalog.FIGURES:
        _caption(fig.caption_stem)


def test_tables_declare_their_columns(results, tmp_path):
    """Each table's caption (if the report shows it) and guide name exactly the quantities it declares, and its
    CSV header has each of them."""
    p = argparse.ArgumentParser()
    tables.configure_parser(p)
    out = tmp_path / "tables"
    assert tables.run(p.parse_args(["--results", str(results), "--out", str(out), "--readme",
                                    str(tmp_path / "README.md")])) == 0
    problems = []
    for t in catalog.TABLES:
        declared = set(t.quantities)
        texts = [("guide", t.guide)] + ([("caption", _caption(t.caption_stem))] if t.caption_stem else [])
        for what, text in texts:
            named = catalog.quantities_named(text)
            if named != declared:
                problems.append(f"{t.csv}: its {what} names {sorted(named)}, declared {sorted(declared)}")
        header = (out / t.csv).read_text().splitlines()[0]
        if declared - catalog.quantities_named(header):
            problems.append(f"{t.csv}: no column for {sorted(declared - catalog.quantities_named(header))}")
        page = re.sub(r"<[^>]+>", " ", (out / t.csv.replace(".csv", ".html")).read_text())  # what the report shows
        if declared - catalog.quantities_named(page):
            problems.append(f"{t.csv}: its HTML page does not show {sorted(declared - catalog.quantities_named(page))}")
    assert not problems, "\n".join(problems)


def test_ablation_hpo_table_and_figure_show_the_mean_over_seeds(results, rendered, tmp_path):
    """The HPO ablation table has one row per axis and value, in the order of the axes and values (the task's own
    value first), with the mean over seeds of the final losses and wall time and the fallbacks summed; the figure
    draws the same means and counts the fallbacks under it."""
    p = argparse.ArgumentParser()
    tables.configure_parser(p)
    out = tmp_path / "tables"
    assert tables.run(p.parse_args(["--results", str(results), "--out", str(out), "--readme",
                                    str(tmp_path / "README.md")])) == 0
    rows = list(csv.DictReader((out / "ablation_hpo.csv").open()))
    assert [(r["axis"], r["value"]) for r in rows] == [("delay", "1"), ("delay", "2"), ("window", "task's"),
                                                       ("window", "20")]
    delay1 = rows[0]
    assert float(delay1["validation loss (final)"]) == pytest.approx(0.5)
    assert float(delay1["test loss (final)"]) == pytest.approx(0.6)
    assert float(delay1["wall time (s)"]) == pytest.approx(3.0)
    assert (delay1["n_seeds"], delay1["fallbacks"], delay1["windows"]) == ("2", "4", "20")
    assert float(rows[3]["validation loss (final)"]) == pytest.approx(0.2)
    assert "| reweight | window | task's | 2 | 0 |" in (out / "ablation_hpo.md").read_text()
    _, done = rendered
    lines = done["ablation_hpo"]["lines"]
    delay_loss = next(v for k, v in lines.items() if k.startswith("delay/loss"))
    assert delay_loss["validation loss"][1] == pytest.approx([0.5, 0.4])
    assert delay_loss["test loss"][1] == pytest.approx([0.6, 0.3])
    wall = next(v for k, v in lines.items() if k.startswith("window/wall time"))
    assert wall["wall time of the run"][1] == pytest.approx([1.0, 7.0])
    total = sum(f for per_seed in ABLATION_HPO.values() for *_, f, _ in per_seed)
    windows = sum(w for per_seed in ABLATION_HPO.values() for *_, w in per_seed)
    assert f"fell back to local: {total} of {windows}" in done["ablation_hpo"]["text"]


def test_tables_and_figures_read_only_the_configs_runs(results, tmp_path):
    """Issue 15: after a run with strategies [fixed, local, glocal, global] and one with [fixed, local], the
    tables and figures list only fixed and local: they read the runs the current config asks for."""
    from figures.cli import render_all

    cfg = tmp_path / "two.yaml"
    cfg.write_text("strategies: [fixed, local]\nseeds: [0, 1]\n")
    p = argparse.ArgumentParser()
    tables.configure_parser(p)
    out = tmp_path / "tables"
    assert tables.run(p.parse_args(["--config", str(cfg), "--results", str(results), "--out", str(out),
                                    "--readme", str(tmp_path / "README.md")])) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert {r["strategy"] for r in rows} == {"fixed", "local"}
    md = (out / "summary.md").read_text()
    assert "| glocal |" not in md and "| global |" not in md and "| fixed |" in md
    assert {r["strategy"] for r in csv.DictReader((out / "budget.csv").open())} <= {"fixed", "local"}
    from glocal.config import load_config

    done = render_all(results, tmp_path / "figs", load_config(cfg), only=["hpo_curves_lr", "baselines_lr"])
    for name in ("hpo_curves_lr", "baselines_lr"):
        labels = {lb.split(" ")[0].rstrip(":,") for panel in done[name]["lines"].values() for lb in panel}
        assert labels & {"glocal", "global", "random", "tpe"} == set(), (name, labels)
        assert {"fixed", "local"} <= labels


def test_run_indexes_select_runs(results, tmp_path):
    """A run index (written by the workflow) lists the runs to read, relative to its directory."""
    from figures.io import index_runs, load_runs, select_runs

    idx = results / "runs" / "reweight" / "index.json"
    idx.write_text(json.dumps({"task": "reweight", "runs": [{"strategy": "glocal", "seed": 1, "path": "glocal/seed1"},
                                                             {"strategy": "fixed", "seed": 0, "path": "fixed/seed0"}]}))
    try:
        refs = index_runs([idx])
        assert [(t, s, n) for t, s, n, _ in refs] == [("reweight", "glocal", 1), ("reweight", "fixed", 0)]
        runs = load_runs(results, select_runs(results, {"tasks": {"lr": {}}, "strategies": ["local"], "seeds": [0]},
                                              [idx]))
        assert {t: {s: sorted(b) for s, b in v.items()} for t, v in runs.items()} == {
            "reweight": {"glocal": [1], "fixed": [0]}}
        by_config = load_runs(results, select_runs(results, {"tasks": {"lr": {}, "reweight": {"enabled": False}},
                                                             "strategies": ["local"], "seeds": [0, 1]}))
        assert {t: {s: sorted(b) for s, b in v.items()} for t, v in by_config.items()} == {"lr": {"local": [0]}}
        assert set(load_runs(results)) == {"lr", "reweight", *NQM_TASKS}  # no config: every run found
    finally:
        idx.unlink()


def test_hpo_curves_plot_input(results, tmp_path):
    from figures.hpo_curves import plot_hpo_curves

    runs = load_runs(results)["lr"]
    d = plot_hpo_curves(runs, "lr", tmp_path / "h", seeds=[0, 1])
    _ok(d["paths"])
    lines = d["lines"]
    # glocal: mean over both seeds at every step
    x, y = lines["val_loss/step"]["glocal"]
    assert x == STEPS
    np.testing.assert_allclose(y, [np.mean([val_loss("lr", "glocal", s, st) for s in (0, 1)]) for st in STEPS])
    # missing seed in the label, diverged seed marked; global draws its last run (steps counted within it),
    # where only seed 0 is finite (seed 1 diverged at step 20 of its first run)
    assert "local (1/2 seeds)" in lines["val_loss/step"]
    assert "global seed 1 diverged" in lines["val_loss/step"]
    gx, gy = lines["val_loss/step"]["global"]
    assert gx == STEPS
    assert gy[-1] == pytest.approx(val_loss("lr", "global", 0, STEPS[-1]))
    assert any("diverged at step 20" in n for n in d["notes"]) and any("missing seed(s) 1" in n for n in d["notes"])
    # wall time x = mean wall time over seeds (linear axis); global's loss at the end of each meta-iteration
    wx, _ = lines["val_loss/wall"]["glocal"]
    np.testing.assert_allclose(wx, [0.5 + st * 0.1 + 0.5 for st in STEPS])
    assert "global" not in lines["val_loss/wall"]  # multi-run strategies: one marker per run against wall time
    ex, ey = d["ends"][("global", "val_loss")]
    assert ex == pytest.approx([0.5 + 30 * 0.2, 0.5 + 60 * 0.2])
    assert ey == pytest.approx([val_loss("lr", "global", 0, 30) + 0.05, val_loss("lr", "global", 0, 30)])
    # every strategy is drawn: the searches' best trial (run 3), placed after the trials before it
    rx, ry = lines["val_loss/step"]["random (1/2 seeds)"]
    assert rx == STEPS and ry == pytest.approx([0.3] * 4)
    from figures.hpo_curves import final_run

    assert final_run(runs["random"][0]).metrics["wall_time"] == pytest.approx([6.0 + s * 0.05 for s in STEPS])
    assert d["ends"][("tpe", "val_loss")] == ([2.0, 4.0, 6.0, 8.0], [0.9, 0.5, 0.5, 0.3])


def test_hyper_trajectories_and_baselines(results, tmp_path):
    from figures.baselines import plot_baselines
    from figures.hyper_trajectories import plot_hyper_trajectories

    runs = load_runs(results)["lr"]
    d = plot_hyper_trajectories(runs, "lr", tmp_path / "t", seeds=[0, 1])
    _ok(d["paths"])
    x, y = d["lines"]["hp:momentum"]["glocal"]
    # write_run: hp:momentum = 0.05 * 4 * (1 + step / 100 + seed / 10); the mean over seeds 0 and 1
    assert x == STEPS and y == pytest.approx([0.2 * (1 + st / 100 + 0.05) for st in STEPS], rel=1e-12)
    assert "random (1/2 seeds), best trial of each seed" in d["lines"]["hp:momentum"]
    # global: one constant per meta-iteration (its first row), mean over seeds
    assert d["global"][("global", "hp:momentum")] == pytest.approx([0.2 * 1.05, 0.2 * 1.35])
    # layers named from the run's config.json (MLP with one hidden layer: two learning-rate groups)
    assert "learning rate, hidden layer 1 (64 units)" in d["text"] and "learning rate, output layer" in d["text"]
    assert "parameter group" not in d["text"]

    b = plot_baselines(runs, "lr", tmp_path / "b", seeds=[0, 1])
    _ok(b["paths"])
    rx, ry = b["lines"]["baselines/runs"]["tpe"]
    assert rx == [1, 2, 3, 4] and ry == [0.9, 0.5, 0.5, 0.3]
    wx, _ = b["lines"]["baselines/wall"]["tpe"]
    assert wx == [2.0, 4.0, 6.0, 8.0]
    gx, gy = b["lines"]["baselines/runs"]["global (1/2 seeds)"]  # seed 1 diverged: no finite loss
    assert gx == [1, 2]  # best-so-far after each of global's 2 runs
    assert gy == pytest.approx([val_loss("lr", "global", 0, STEPS[-1]) + 0.05, val_loss("lr", "global", 0, STEPS[-1])])
    fx, fy = b["lines"]["baselines/runs"]["glocal"]  # single runs spread sideways at one run
    assert fx == [0.9] and fy[0] == pytest.approx(np.mean([val_loss("lr", "glocal", s, STEPS[-1]) for s in (0, 1)]))
    assert b["lines"]["baselines/runs"]["local (1/2 seeds)"][0] == [0.8]
    # the test-loss panel: the test loss of the run that is best so far by validation loss
    assert b["curves"][("tpe", "test_loss")]["best"] == [0.9, 0.5, 0.5, 0.3]
    tx, ty = b["lines"]["baselines/test_loss/runs"]["glocal"]
    assert ty[0] == pytest.approx(np.mean([1.1 * val_loss("lr", "glocal", s, STEPS[-1]) for s in (0, 1)]))


def test_reweight_roc_and_weights(results, tmp_path):
    from sklearn.metrics import roc_auc_score

    from figures.reweight import plot_reweight_weights, roc

    runs = load_runs(results)["reweight"]
    d = plot_reweight_weights(runs, tmp_path / "w", seeds=[0, 1])
    _ok(d["paths"])
    for strat, aucs in d["auc"].items():
        for seed, auc in zip(sorted(runs[strat]), aucs):
            r = runs[strat][seed]
            assert auc == pytest.approx(roc_auc_score(r.weights["flipped"] == 0, r.weights["weight"]))
            assert auc == pytest.approx(r.summary["auc"])
    assert d["auc"]["fixed"][0] == pytest.approx(0.5)
    fpr, tpr, _ = roc(np.array([0.9, 0.1]), np.array([0, 1]))
    assert fpr.tolist() == [0, 0, 1] and tpr.tolist() == [0, 1, 1]


def test_error_spectra_cost_theory(results, tmp_path):
    from figures.cost import plot_cost
    from figures.error_vs_tau import plot_error_vs_tau
    from figures.io import read_csv
    from figures.spectra import plot_koopman_spectra, windows_from_hypergrads
    from figures.theory import plot_theory

    rows = read_csv(results / "analysis" / "error_vs_tau.csv")
    d = plot_error_vs_tau(rows, tmp_path / "e")
    _ok(d["paths"])
    x, y = d["lines"]["reweight/full/s15"]["glocal (limit)"]
    assert x == [5, 10, 20] and y == pytest.approx([0.2, 0.1, 0.05])
    _, yh = d["lines"]["lr/full/s0"]["glocal (horizon)"]
    assert yh[-1] == pytest.approx(1e3)  # 1e5 clipped to the top edge (noted)
    assert "noise floor (spread of $h_T$ over orders)" in d["lines"]["lr/bs8/s0"]
    assert "glocal (limit) + averaged (fit of the mean of K orders)" in d["lines"]["lr/bs8/s0"]
    # the bound is drawn only where it is inside the panel: 0.1 at tau 10 and 20, not 1e50 at tau 5
    assert d["lines"]["lr/full/s0"]["bound of the limit fit (model tail), where inside the panel"] == ([10, 20],
                                                                                                      [0.1, 0.1])
    assert any("outside the plotted range" in n for n in d["notes"])

    runs = load_runs(results)
    ws = {t: windows_from_hypergrads(runs[t]["glocal"][0].hypergrads()) for t in ("lr", "reweight")}
    assert len(ws["lr"]) == 5  # the fallback record without eigenvalues and the partial last line skipped
    assert [w.status for w in ws["lr"]] == ["accepted"] * 4 + ["fallback"]
    ext = {t: read_csv(results / "extract" / t / "spectra.csv") for t in ("lr",)}
    s = plot_koopman_spectra(ws, ext, tmp_path / "s", {"lr": 30, "reweight": 30})
    _ok(s["paths"])
    re_, im_, c = s["hpo"]["lr"]
    assert re_ == pytest.approx([0.9, 0.9, 0.8, 0.8, 0.7, 0.7, 0.6, 0.6]) and max(c) == pytest.approx(1.0)
    assert s["extract"][("lr", 15)] == ([0.6, 0.6], [-0.2, 0.2])
    assert s["status"][("lr", "fallback")] == 1 and "fit rejected by the guards" in s["text"]
    assert "zoom near 1" in s["text"]

    bench = read_csv(results / "bench" / "cost.csv")
    c = plot_cost(bench, tmp_path / "c")
    _ok(c["paths"])
    assert c["lines"]["cost/tau"]["glocal [forward], per update"] == ([10, 20, 40], pytest.approx([0.1, 0.2, 0.4]))
    slope, expected = c["slopes"][("tau", "glocal")]
    assert slope == pytest.approx(1.0) and expected == 1.0
    assert c["slopes"][("tau", "local")][0] == pytest.approx(0.5)
    assert ("q", "glocal") not in c["slopes"] and any("different problems" in n for n in c["notes"])  # q: no slope
    fb = plot_cost([], tmp_path / "c2", runs)  # no bench file: run summaries
    _ok(fb["paths"])
    assert fb["source"] == "runs" and ("update", "glocal") in fb["bars"] and ("update", "fixed") not in fb["bars"]

    e = plot_theory(tmp_path / "nothing", tmp_path / "th2", dpi=60)  # missing inputs: figures saying so
    _ok(e["paths"])


def test_missing_everything_still_draws(tmp_path):
    from figures.cli import render_all

    out = tmp_path / "f"
    done = render_all(tmp_path / "empty", out, {"tasks": {"lr": {}, "reweight": {"enabled": True}}})
    assert not [n for n, v in done.items() if isinstance(v, BaseException)]
    _ok([out / f"{n}.png" for n in done["_names"]])


def test_tables(results, tmp_path):
    p = argparse.ArgumentParser()
    tables.configure_parser(p)
    out = tmp_path / "tables"
    readme = tmp_path / "README.md"
    assert tables.run(p.parse_args(["--results", str(results), "--out", str(out), "--readme", str(readme)])) == 0
    rows = list(csv.DictReader((out / "summary.csv").open()))
    r = next(x for x in rows if x["task"] == "lr" and x["strategy"] == "glocal")
    v = [val_loss("lr", "glocal", s, STEPS[-1]) for s in (0, 1)]
    assert float(r["val_loss_mean"]) == pytest.approx(np.mean(v))
    assert float(r["val_loss_std"]) == pytest.approx(np.std(v, ddof=1))
    assert r["n_training_runs"] == "1"
    g = next(x for x in rows if x["task"] == "lr" and x["strategy"] == "global")
    assert g["n_diverged"] == "1" and g["n_training_runs"] == "2"
    assert math.isnan(float(g["val_loss_std"]))  # the diverged seed's NaN is left out: one value, no std
    loc = next(x for x in rows if x["task"] == "lr" and x["strategy"] == "local")
    assert loc["missing_seeds"] == "1" and loc["n_seeds"] == "1"
    tpe = next(x for x in rows if x["task"] == "lr" and x["strategy"] == "tpe")
    assert tpe["n_training_runs"] == "4"
    md = (out / "summary.md").read_text()
    assert f"{np.mean(v):.4g} ± {np.std(v, ddof=1):.2g}" in md and "AUC" in md and "random" in md
    # fit health: summed over the two seeds, medians over them; nothing for strategies that fit nothing
    assert (r["fit_windows"], r["fit_fallbacks"], r["fit_degenerate"], r["fit_growing"]) == ("20", "5", "1", "6")
    assert r["fit_fallbacks_by_reason"] == "growing mode=5"
    assert float(r["fit_median_rank"]) == 5 and float(r["fit_median_spectral_radius"]) == pytest.approx(0.92)
    assert loc["fit_windows"] == "" and "| 5/20 (growing mode=5); degenerate 1 |" in md
    th = (out / "theory.md").read_text()
    assert "| floor | 3 | 2 | 1 |" in th and "2 of 3 checks passed" in th
    assert (out / "error_vs_tau.md").read_text().endswith("analysis summary\n")
    assert "<td class=\"num\">" in (out / "summary.html").read_text() and "<h2>" in (out / "summary.html").read_text()
    rows_e = list(csv.DictReader((out / "error_vs_tau.csv").open()))
    r5 = next(r for r in rows_e if r["task"] == "lr" and r["batch mode"] == "full batch" and r["window start"] == "0"
              and r["prefix length tau"] == "5")
    assert r5["relative error: limit"] == "0.2" and r5["ratio to local: limit"] == "0.4"
    assert float(next(x for x in rows if x["strategy"] == "glocal" and x["task"] == "lr")["peak_memory_mb_mean"]) == 100.5
    text = readme.read_text()
    for n in catalog.figure_names(["lr", "reweight"]):
        assert f"`{n}`" in text


def test_catalog_matches_docs():
    doc = (Path(__file__).parents[1] / "docs" / "figures.md").read_text()
    assert catalog.markdown() in doc
    assert style.COLORS["glocal"] != style.COLORS["local"] and len(set(style.COLORS.values())) == len(style.COLORS)


def test_budget_table_reads_searches_at_the_gradient_budget(tmp_path):
    """random/tpe are read at the gradient strategy's number of runs and wall time (best so far by val loss)."""
    from figures.budget import budget_rows
    from figures.io import Run

    trials = {
        "n_training_runs": np.array([1.0, 2.0, 3.0]),
        "cumulative_wall_time": np.array([1.0, 2.0, 3.0]),
        "best_so_far_test_loss": np.array([0.9, 0.5, 0.4]),
        "best_so_far_test_acc": np.array([0.1, 0.5, 0.6]),
    }
    runs = {"lr": {
        "glocal": {0: Run("lr", "glocal", 0, tmp_path, summary={
            "n_training_runs": 1, "time": {"total": 2.5}, "final": {"test_loss": 0.3, "test_acc": 0.7}})},
        "global": {0: Run("lr", "global", 0, tmp_path, summary={
            "n_training_runs": 3, "time": {"total": 0.5}, "final": {"test_loss": 0.2, "test_acc": 0.8}})},
        "random": {0: Run("lr", "random", 0, tmp_path, summary={"n_training_runs": 3}, trials=trials)},
    }}
    rows = {r["strategy"]: r for r in budget_rows(runs)}
    assert rows["glocal"]["random_runs_test_loss"] == 0.9  # after 1 trial
    assert rows["glocal"]["random_wall_test_loss"] == 0.5  # trials finished within 2.5 s
    assert rows["global"]["random_runs_test_loss"] == 0.4  # after 3 trials
    assert rows["global"]["random_wall_n_missing"] == 1  # no trial finished within 0.5 s
    assert rows["global"]["tpe_runs_n_missing"] == 1  # no tpe run at all


def test_nqm_figures_plot_their_input(rendered):
    """nqm_learned_lr: each strategy's per-step effective learning rate, mean over seeds, and one point per
    strategy at (mean wall time, mean expected loss / optimum); nqm_short_horizon_bias: the curves of the
    bias files, one row per NQM task."""
    _, done = rendered
    d = done["nqm_learned_lr"]
    x, y = d["lines"]["nqm/lr"]["glocal"]
    assert x == list(range(NQM_T + 1))
    assert y[:NQM_T] == pytest.approx([np.mean([nqm_lr("glocal", s, k) for s in (0, 1)]) for k in range(NQM_T)])
    assert d["lines"]["nqm/lr"]["optimum, constant learning rate"][1] == [1.25, 1.25]
    assert d["lines"]["nqm/lr"]["optimum, 3-phase schedule"] == ([0, 10, 20, 30], [4.0, 1.0, 0.25, 0.25])
    wall, ratio = d["points"][("nqm_sampled", "glocal_robust")]
    assert wall == pytest.approx(0.95) and ratio == pytest.approx(np.mean([nqm_ratio("nqm_sampled", "glocal_robust", s)
                                                                          for s in (0, 1)]))
    assert ("nqm", "random") not in d["points"]  # no nqm section in those synthetic search runs: not drawn
    assert "10% above the optimum (the goal)" in d["lines"]["nqm/loss"]
    b = done["nqm_short_horizon_bias"]
    tx, ty = b["lines"]["nqm_sampled/lr"]["greedy schedule, last window"]
    assert tx == [1, 3, 10, NQM_T] and ty == pytest.approx([0.1 * t ** 0.5 for t in tx])
    sx, sy = b["lines"]["nqm/schedule"]["_tau 10"]
    assert sy[:NQM_T] == pytest.approx([1.0 / (1 + k // 10) for k in range(NQM_T)])
    assert any("exceed the 30 training steps" in n for n in b["notes"])


def test_nqm_table(results, tmp_path):
    """The NQM table: ratios to both optima, CPU time relative to global, the fit health and agreement with local
    of the glocal strategies, and the goal's verdict."""
    p = argparse.ArgumentParser()
    tables.configure_parser(p)
    out = tmp_path / "tables"
    assert tables.run(p.parse_args(["--results", str(results), "--out", str(out), "--readme",
                                    str(tmp_path / "README.md")])) == 0
    rows = {(r["task"], r["strategy"]): r for r in csv.DictReader((out / "nqm.csv").open())}
    assert {t for t, _ in rows} == set(NQM_TASKS)
    g = rows[("nqm", "glocal")]
    assert float(g["ratio_to_constant_optimum_mean"]) == pytest.approx(np.mean([nqm_ratio("nqm", "glocal", s)
                                                                                 for s in (0, 1)]))
    assert float(g["ratio_to_schedule_optimum_mean"]) == pytest.approx(2 * float(g["ratio_to_constant_optimum_mean"]))
    # CPU time: glocal (0.4, 0.45) against global (2.0, 2.05)
    assert float(g["cpu_time_relative_to_global"]) == pytest.approx(0.425 / 2.025)
    assert float(g["training_steps_relative_to_global"]) == pytest.approx(0.5)
    assert float(g["fallback_fraction"]) == pytest.approx(2 / 6) and float(g["median_cosine_to_local"]) == 0.9
    assert float(g["median_norm_ratio_to_local"]) == 2.0
    assert rows[("nqm", "glocal_robust")]["base_strategy"] == "glocal"
    assert rows[("nqm", "local")]["fallback_fraction"] == "nan"
    md = (out / "nqm.md").read_text()
    assert "## task `nqm` (expected mode)" in md and "## task `nqm_sampled` (sampled mode)" in md
    # glocal at 0.805x the constant optimum and 1.61x the schedule's, at 0.21 of global's CPU time
    assert "Goal against the constant optimum: not met (CPU time 0.21 > 0.2 of global's)." in md
    assert "Goal against the schedule optimum: not met (loss 1.61x > 1.1x; CPU time 0.21 > 0.2 of global's)." in md
    assert "summary" in tables.HTML_TABLES and "<table" in (out / "nqm.html").read_text()
    # the results README lists the NQM figures (the runs say which tasks are NQM tasks)
    assert "`nqm_learned_lr`" in (tmp_path / "README.md").read_text()


def test_paired_differences_are_paired_by_seed_with_a_t_interval():
    from types import SimpleNamespace

    from scipy import stats

    from figures.paired import paired_markdown, paired_rows, t_interval

    def run(loss):
        return SimpleNamespace(summary={"final": {"test_loss": loss, "val_loss": loss / 2}})

    # glocal beats local by exactly 0.1 on every seed although both vary a lot across seeds: a paired
    # comparison sees the difference, an unpaired one would not
    base = {0: 1.0, 1: 2.0, 2: 3.0, 3: 0.5}
    runs = {"lr": {"glocal": {s: run(v - 0.1) for s, v in base.items()},
                   "local": {s: run(v) for s, v in base.items()},
                   "global": {s: run(v - 0.1 + 0.05 * (-1) ** s) for s, v in base.items() if s != 3}}}
    rows = {(r["first"], r["second"]): r for r in paired_rows(runs)}
    r = rows[("glocal", "local")]
    assert r["n_pairs"] == 4 and r["test_loss_paired_difference"] == pytest.approx(-0.1)
    assert r["test_loss_interval_95_high"] == pytest.approx(-0.1) and r["test_loss_verdict"] == "glocal lower"
    g = rows[("glocal", "global")]  # differences +-0.05 on seeds 0-2: seed 3 has no global run
    diffs = [-0.05, 0.05, -0.05]
    half = stats.t.ppf(0.975, 2) * np.std(diffs, ddof=1) / np.sqrt(3)
    assert g["n_pairs"] == 3 and g["test_loss_interval_95_low"] == pytest.approx(np.mean(diffs) - half)
    assert g["test_loss_verdict"] == "no difference at 95%"
    assert ("glocal", "hd") not in rows  # no hd runs
    assert t_interval([1.0])[1] != t_interval([1.0])[1]  # NaN bounds for one pair
    assert "glocal − local" in paired_markdown(list(rows.values()))


def test_a_task_with_its_own_seeds_expects_those(results):
    """A task's own seeds (NQM tasks may set them) replace the top-level seeds in the runs read and expected."""
    from figures import nqm_table
    from figures.io import config_runs, expected_seeds, task_seeds

    cfg = {"tasks": {"lr": {}, "nqm": {"kind": "nqm", "seeds": [1]}}, "strategies": ["glocal"], "seeds": [0, 1]}
    assert task_seeds(cfg, "lr") == [0, 1] and task_seeds(cfg, "nqm") == [1] and task_seeds(cfg, None) == [0, 1]
    assert [(t, n) for t, _, n, _ in config_runs(results, cfg)] == [("lr", 0), ("lr", 1), ("nqm", 1)]
    runs = load_runs(results)
    assert expected_seeds(runs["nqm"], cfg, "nqm") == [1] and expected_seeds(runs["nqm"], cfg) == [0, 1]
    rows = {(r["task"], r["strategy"]): r for r in nqm_table.nqm_rows(runs, cfg)}
    assert rows[("nqm", "glocal")]["n_expected_seeds"] == 1 and rows[("nqm_sampled", "glocal")]["n_expected_seeds"] == 2
