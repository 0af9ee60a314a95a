"""Sensitivity to the starting point: ``glocal sensitivity``.

The ``sensitivity`` section names, per task, starting values of its hyperparameters: for a task of kind
``lr`` multiples of its inner learning rate (``lr_factors``: every layer starts at factor x
``optimizer.lr``), for a task of kind ``reweight`` initial example weights (``init_weights``). Every
strategy of ``sensitivity.strategies`` (fixed and the gradient strategies) runs from each start, for each
seed of ``sensitivity.seeds``, with the task's own options otherwise (outer learning rates included). The
question is which strategies recover from a bad start: fixed shows how bad the start is untuned.

One command runs one start of one task (every strategy and seed) into ``<out>/<strategy>/seed<seed>/``
(ordinary run directories, :func:`glocal.train.run_experiment`) and writes ``<out>/index.json``; a restarted
command reuses the finished runs. Expansion of the section: :func:`glocal.config.sensitivity_starts`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from glocal.config import ConfigError, load_config, sensitivity_config, sensitivity_starts
from glocal.utils import add_threads_argument, apply_threads, atomic_write_json, make_dirs

__all__ = ["run_start", "find_start"]


def find_start(config: Mapping[str, Any], task: str, start: str) -> dict[str, Any]:
    """The start named ``start`` of ``task`` (:func:`glocal.config.sensitivity_starts`); an error naming the
    configured ones otherwise."""
    starts = sensitivity_starts(config)
    for s in starts:
        if s["task"] == task and s["start"] == start:
            return s
    known = sorted(f"{s['task']}/{s['start']}" for s in starts)
    raise ConfigError(f"--task/--start: {task}/{start} is not a start of the sensitivity section; it defines {known}")


def run_start(config: Mapping[str, Any], task: str, start: str, out: str | Path, *, progress: bool = False
              ) -> dict[str, Any]:
    """Run every strategy and seed of the sensitivity section from one start into ``out``; returns the index
    written to ``out/index.json`` ({task, start, parameter, value, initial, runs: [{strategy, seed, path}]})."""
    from glocal.train import run_or_reuse

    spec = find_start(config, task, start)
    sec = config.get("sensitivity") or {}
    cfg = sensitivity_config(config, spec)
    out = Path(out)
    runs = []
    for strategy in sec.get("strategies") or []:
        for seed in sec.get("seeds") or [0]:
            rel = f"{strategy}/seed{seed}"
            t0 = time.perf_counter()
            summary = run_or_reuse(cfg, task, strategy, int(seed), out / rel)
            if progress:
                print(f"sensitivity {task}/{start}/{strategy} seed {seed}: test_loss="
                      f"{summary['final'].get('test_loss')} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
            runs.append({"strategy": strategy, "seed": int(seed), "path": rel})
    index = {"task": task, "kind": spec["kind"], "start": start, "parameter": spec["parameter"],
             "value": spec["value"], "initial": spec["initial"], "runs": runs}
    make_dirs(out)
    atomic_write_json(out / "index.json", index)
    return index


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glocal sensitivity``."""
    p.add_argument("--config", help="experiment YAML (default: built-in defaults)")
    p.add_argument("--task", required=True, help="a task of the sensitivity section")
    p.add_argument("--start", required=True, help="its starting point, e.g. lr_x0.1 or w0.9")
    p.add_argument("--out", required=True, help="output directory (one run directory per strategy and seed)")
    p.add_argument("--progress", action="store_true", help="print a line per finished run")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    """``glocal sensitivity``."""
    apply_threads(args.threads)
    config = load_config(args.config)
    index = run_start(config, args.task, args.start, args.out, progress=args.progress)
    print(f"sensitivity {args.task}/{args.start}: {len(index['runs'])} runs -> {args.out}")
    return 0
