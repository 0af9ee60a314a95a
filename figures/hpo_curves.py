"""Figure 1: validation and test loss of every strategy's final training run against the training step and
against the wall time the strategy has spent, per task, mean and band over seeds.

Every strategy is drawn on the same footing: the training run whose hyperparameters it ends with. For
``global`` that is its last meta-iteration (its earlier runs are the markers of the wall-time panels, one
per meta-iteration); for ``random``/``tpe`` the run of the best trial (dashed), placed in wall time where
that trial finished. Against wall time these multi-run strategies are drawn as one marker per run: global's
loss at the end of each meta-iteration, the searches' best loss so far after each trial (trials.csv).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.agg import over_seeds
from figures.io import Run

PANELS = [("val_loss", "step"), ("val_loss", "wall"), ("test_loss", "step"), ("test_loss", "wall")]
YLABEL = {"val_loss": "validation loss (cross-entropy)", "test_loss": "test loss (cross-entropy)"}
XLABEL = {"step": "training step of the final run", "wall": "wall time spent by the strategy (s)"}
SEARCHES = ("random", "tpe", "cmaes")
#: per-trial best-so-far columns of trials.csv for each loss
TRIAL_COLUMN = {"val_loss": "best_so_far_val_loss", "test_loss": "best_so_far_test_loss"}


def seed_status(by_seed: Mapping[int, Run], seeds: Sequence[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """(missing seeds, [(seed, diverged step)])."""
    missing = [s for s in seeds if s not in by_seed or not by_seed[s].metrics]
    diverged = [(s, r.diverged_step) for s, r in sorted(by_seed.items()) if r.diverged_step is not None]
    return missing, diverged


def _search_offset(run: Run) -> float:
    """Wall time before the best trial's run started (its metrics' wall time starts at 0 within the trial)."""
    t = run.trials
    if not t or "cumulative_wall_time" not in t or "wall_time" not in t:
        return 0.0
    runs = run.metrics.get("run")
    best = int(runs[-1]) if runs is not None and len(runs) else int(np.nanargmin(t.get("val_loss", [np.nan])))
    idx = np.where(t["trial"] == best)[0] if "trial" in t else []
    if not len(idx):
        return 0.0
    i = int(idx[0])
    return float(t["cumulative_wall_time"][i] - t["wall_time"][i])


def final_run(run: Run) -> Run:
    """The run's last training run (global: its last meta-iteration; searches: the best trial) as a Run whose
    metrics have ``step`` counted from 0 within that run and ``wall_time`` as the strategy's total so far."""
    m = run.metrics
    if not m or "step" not in m:
        return Run(run.task, run.strategy, run.seed, run.path)
    idx = np.arange(len(m["step"]))
    if "run" in m and len(m["run"]):
        idx = np.where(m["run"] == m["run"][-1])[0]
    view = {k: v[idx] for k, v in m.items()}
    view["step"] = view["step"] - view["step"][0]
    if "wall_time" in view and run.strategy in SEARCHES:
        view["wall_time"] = view["wall_time"] + _search_offset(run)
    return Run(run.task, run.strategy, run.seed, run.path, view, run.summary)


def run_ends(run: Run, col: str) -> tuple[np.ndarray, np.ndarray]:
    """(wall time, loss) at the end of each training run of a multi-run strategy: global's loss at the end of
    each meta-iteration, a search's best loss so far after each trial; empty for single-run strategies."""
    t = run.trials
    if t and "cumulative_wall_time" in t and TRIAL_COLUMN[col] in t:
        return t["cumulative_wall_time"], t[TRIAL_COLUMN[col]]
    m = run.metrics
    if m and "run" in m and len(np.unique(m["run"])) > 1 and col in m:
        last = np.r_[np.where(np.diff(m["run"]) != 0)[0], len(m["run"]) - 1]
        return m["wall_time"][last], m[col][last]
    return np.array([]), np.array([])


def last_finite(run: Run, col: str) -> tuple[float, float, float] | None:
    """(step within its training run, wall time, value) of the last finite value of ``col`` (diverged runs)."""
    m = run.metrics
    y = m.get(col)
    if y is None or not np.isfinite(y).any():
        return None
    i = int(np.where(np.isfinite(y))[0][-1])
    start = int(np.where(m["run"] == m["run"][i])[0][0]) if "run" in m else 0
    wall = float(m["wall_time"][i]) if "wall_time" in m else float("nan")
    return float(m["step"][i] - m["step"][start]), wall, float(y[i])


def _mean_by_index(pairs: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Mean x and y over seeds at each index (runs of different lengths: the indices some seeds have)."""
    n = max((len(x) for x, _ in pairs), default=0)
    xs, ys = [], []
    for i in range(n):
        px = [x[i] for x, y in pairs if i < len(x) and np.isfinite(x[i]) and np.isfinite(y[i])]
        py = [y[i] for x, y in pairs if i < len(x) and np.isfinite(x[i]) and np.isfinite(y[i])]
        if px:
            xs.append(float(np.mean(px)))
            ys.append(float(np.mean(py)))
    return np.array(xs), np.array(ys)


def plot_hpo_curves(runs: Mapping[str, Mapping[int, Run]], task: str, out_stem: str | Path,
                    seeds: Sequence[int] | None = None, strategies: Sequence[str] | None = None) -> dict[str, Any]:
    """``runs``: {strategy: {seed: Run}} of one task. Mean over seeds (line) and min-max band (shaded) of each
    strategy's final training run; a diverged seed is marked with an x at its last finite value; missing
    seeds are noted in the legend and under the panels."""
    strategies = style.order(strategies or list(runs))
    seeds = list(seeds) if seeds is not None else sorted({s for b in runs.values() for s in b})
    fig, axes = style.subplots(2, 2, w=4.0, h=2.9)
    notes: list[str] = []
    data: dict[str, Any] = {"agg": {}, "ends": {}}
    for ax, (col, xk) in zip(axes.ravel(), PANELS):
        ax.set_label(f"{col}/{xk}")
        ax.set_xlabel(XLABEL[xk])
        ax.set_ylabel(YLABEL[col])
        any_line = False
        for strat in strategies:
            by_seed = runs.get(strat, {})
            ok = [r for r in by_seed.values() if r.metrics]
            missing, diverged = seed_status(by_seed, seeds)
            label = strat + (f" ({len(seeds) - len(missing)}/{len(seeds)} seeds)" if missing else "")
            first = col == "val_loss" and xk == "step"
            if not ok:
                if first:
                    notes.append(f"{strat}: no run found")
                continue
            c = style.color(strat)
            ls = "--" if strat in SEARCHES else "-"
            multi = any(len(run_ends(r, col)[0]) > 1 for r in ok)
            a = over_seeds([final_run(r) for r in ok], col)
            # against wall time a multi-run strategy is its markers (one per run): its final run's own curve is
            # in the step panels, and drawn at the end of the time axis it would only add a vertical drop
            if len(a["x"]) and not (multi and xk == "wall"):
                x = a["x"] if xk == "step" else a["wall"]
                ax.plot(x, a["mean"], color=c, ls=ls, label=label)
                if np.any(a["n"] > 1):
                    ax.fill_between(x, a["min"], a["max"], color=c, alpha=0.15, lw=0, label="_band")
                data["agg"][(strat, col, xk)] = {k: v.tolist() for k, v in a.items()}
                any_line = True
            if xk == "wall":
                ex, ey = _mean_by_index([run_ends(r, col) for r in ok])
                if len(ex) > 1:
                    what = "end of each meta-iteration" if strat not in SEARCHES else "best so far after each trial"
                    ax.plot(ex, ey, ls=":", lw=0.9, marker=style.MARKERS.get(strat, "o"), ms=3.5, color=c,
                            label=f"{strat}: {what}")
                    data["ends"][(strat, col)] = (ex.tolist(), ey.tolist())
                    any_line = True
            for s, dstep in diverged:
                lf = last_finite(by_seed[s], col)
                if lf is not None:
                    ax.plot([lf[0] if xk == "step" else lf[1]], [lf[2]], "x", color=c, ms=8, mew=2,
                            label=f"{strat} seed {s} diverged")
                if first:
                    notes.append(f"{strat} seed {s}: diverged at step {dstep}")
            if missing and first:
                notes.append(f"{strat}: missing seed(s) {', '.join(map(str, missing))}")
        if not any_line:
            style.empty(ax, f"no {YLABEL[col].split(' (')[0]} data")
            continue
        ax.set_yscale("log")
        style.plain_log_labels(ax.yaxis)
        ax.set_xlim(left=0)
    n_seeds = len(seeds)
    fig.suptitle(f"task {task}: loss of each strategy's final training run "
                 f"(line: mean over {n_seeds} seed{'s' if n_seeds != 1 else ''}, band: min-max)", fontsize=10)
    style.finish(fig)
    style.room_below(fig, style.legend_below(fig, axes, ncol=4), extra=0.02)
    style.footnote(fig, notes[:8] + (["..."] if len(notes) > 8 else []), y=0.0)
    data.update(style.save(fig, out_stem))
    data["notes"] = notes
    return data
