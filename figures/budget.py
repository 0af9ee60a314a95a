"""Equal-budget comparison of gradient strategies with black-box search (results/tables/budget.md).

For each gradient strategy run (fixed, local, glocal, global) its budget is the number of full
training runs it used (1, or global's M) and its wall time. The black-box searches of the same
seed (random, tpe, cmaes) are read at the same budget from their trials.csv: the best trial so far (by
validation loss) after that many trials, and after the trials that finished within that wall
time. Test metrics of that trial are reported; mean +- std over seeds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from figures.agg import mean_std
from figures.io import Run, to_float

GRADIENT = ("fixed", "hd", "local", "glocal", "global")
SEARCH = ("random", "tpe", "cmaes")
BUDGET_FIELDS = ["task", "strategy", "n_seeds", "n_training_runs", "wall_time", "test_loss", "test_acc"] + [
    f"{s}_{b}_{m}" for s in SEARCH for b in ("runs", "wall") for m in ("test_loss", "test_acc", "n_missing")
]


def _best_at(run: Run, *, runs: float | None = None, wall: float | None = None) -> tuple[float, float] | None:
    """(test_loss, test_acc) of the best-so-far trial at a budget, or None when no trial fits it."""
    tr = run.trials
    if not tr or "best_so_far_test_loss" not in tr:
        return None
    n = np.asarray(tr.get("n_training_runs", np.arange(1, len(tr["best_so_far_test_loss"]) + 1)), dtype=float)
    cw = np.asarray(tr["cumulative_wall_time"], dtype=float)
    ok = n <= runs if runs is not None else cw <= wall
    if not ok.any():
        return None
    i = int(np.nonzero(ok)[0][-1])
    return float(tr["best_so_far_test_loss"][i]), float(tr["best_so_far_test_acc"][i])


def budget_rows(runs: dict[str, dict[str, dict[int, Run]]]) -> list[dict[str, Any]]:
    """One row per task x gradient strategy: its budget and the searches' best at that budget."""
    rows: list[dict[str, Any]] = []
    for task, by_strategy in sorted(runs.items()):
        for strategy in GRADIENT:
            seeds = {s: r for s, r in by_strategy.get(strategy, {}).items() if r.complete}
            if not seeds:
                continue
            row: dict[str, Any] = {"task": task, "strategy": strategy, "n_seeds": len(seeds)}
            cols: dict[str, list[float]] = {}
            for seed, run in seeds.items():
                s = run.summary
                budget_runs = float(s.get("n_training_runs") or 1)
                budget_wall = to_float(s.get("time", {}).get("total"))
                cols.setdefault("n_training_runs", []).append(budget_runs)
                cols.setdefault("wall_time", []).append(budget_wall)
                cols.setdefault("test_loss", []).append(to_float(s.get("final", {}).get("test_loss")))
                cols.setdefault("test_acc", []).append(to_float(s.get("final", {}).get("test_acc")))
                for search in SEARCH:
                    other = by_strategy.get(search, {}).get(seed)
                    for label, kw in (("runs", {"runs": budget_runs}), ("wall", {"wall": budget_wall})):
                        got = _best_at(other, **kw) if other is not None and other.complete else None
                        key = f"{search}_{label}"
                        if got is None:
                            cols.setdefault(f"{key}_n_missing", []).append(1.0)
                            continue
                        cols.setdefault(f"{key}_n_missing", []).append(0.0)
                        cols.setdefault(f"{key}_test_loss", []).append(got[0])
                        cols.setdefault(f"{key}_test_acc", []).append(got[1])
            for key, values in cols.items():
                if key.endswith("n_missing"):
                    row[key] = int(sum(values))
                    continue
                m, sd, _ = mean_std(values)
                row[key] = m
                row[f"{key}_std"] = sd
            rows.append(row)
    return rows


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    m = row.get(key)
    if m is None or not math.isfinite(m):
        return "–"
    sd = row.get(f"{key}_std")
    if sd is None or not math.isfinite(sd) or row.get("n_seeds", 1) < 2:
        return f"{m:.{digits}g}"
    return f"{m:.{digits}g} ± {sd:.2g}"


def budget_markdown(rows: list[dict[str, Any]]) -> str:
    """The equal-budget table as markdown."""
    lines = [
        "# Gradient strategies against black-box search at equal budgets",
        "",
        "Each row takes the budget of one gradient strategy (its full training runs and its wall time, "
        "per seed) and reads random search, TPE and CMA-ES of the same seed at that budget: the test loss / "
        "accuracy of their best trial so far (chosen by validation loss). `–`: no trial finished within "
        "the budget. Mean ± std over seeds.",
        "",
    ]
    for task in sorted({r["task"] for r in rows}):
        heads = [f"{s}, equal {b}" for b in ("runs", "wall") for s in SEARCH]
        lines += [f"## task `{task}`", "",
                  "| strategy | runs | wall (s) | test loss | test acc | " + " | ".join(heads) + " |",
                  "|---" * (5 + len(heads)) + "|"]
        for r in (r for r in rows if r["task"] == task):
            cells = [r["strategy"], _pm(r, "n_training_runs"), _pm(r, "wall_time"),
                     _pm(r, "test_loss"), _pm(r, "test_acc")]
            for b in ("runs", "wall"):
                for s in SEARCH:
                    k = f"{s}_{b}"
                    miss = r.get(f"{k}_n_missing", 0)
                    cell = f"{_pm(r, k + '_test_loss')} / {_pm(r, k + '_test_acc')}"
                    if miss:
                        cell += f" ({miss} seed(s) without a finished trial)"
                    cells.append(cell)
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)
