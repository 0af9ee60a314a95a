"""Figure 1: validation and test loss against training step and wall time, per task, mean and band over seeds."""

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
XLABEL = {"step": "training step (cumulative inner steps)", "wall": "wall time (s)"}


def seed_status(by_seed: Mapping[int, Run], seeds: Sequence[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """(missing seeds, [(seed, diverged step)])."""
    missing = [s for s in seeds if s not in by_seed or not by_seed[s].metrics]
    diverged = [(s, r.diverged_step) for s, r in sorted(by_seed.items()) if r.diverged_step is not None]
    return missing, diverged


def plot_hpo_curves(runs: Mapping[str, Mapping[int, Run]], task: str, out_stem: str | Path,
                    seeds: Sequence[int] | None = None, strategies: Sequence[str] | None = None) -> dict[str, Any]:
    """``runs``: {strategy: {seed: Run}} of one task. Mean over seeds (line) and min-max band (shaded);
    a diverged seed is marked with an x at its last finite value; missing seeds are noted in the legend.
    The global strategy's curve spans its M training runs (steps and wall time cumulative)."""
    strategies = style.order(strategies or [s for s in runs if s not in ("random", "tpe")])
    seeds = list(seeds) if seeds is not None else sorted({s for b in runs.values() for s in b})
    fig, axes = style.subplots(2, 2, w=3.6, h=2.7)
    notes: list[str] = []
    data: dict[str, Any] = {"agg": {}}
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
            if not ok:
                if col == "val_loss" and xk == "step":
                    notes.append(f"{strat}: no run found")
                continue
            a = over_seeds(ok, col)
            if not len(a["x"]):
                continue
            x = a["x"] if xk == "step" else a["wall"]
            c = style.color(strat)
            ax.plot(x, a["mean"], color=c, label=label)
            if np.any(a["n"] > 1):
                ax.fill_between(x, a["min"], a["max"], color=c, alpha=0.18, lw=0, label="_band")
            for s, dstep in diverged:
                r = by_seed[s]
                y, m = r.metrics[col], np.isfinite(r.metrics[col])
                if m.any():
                    i = np.where(m)[0][-1]
                    xv = r.metrics["step"][i] if xk == "step" else r.metrics["wall_time"][i]
                    ax.plot([xv], [y[i]], "x", color=c, ms=8, mew=2, label=f"{strat} seed {s} diverged")
                if col == "val_loss" and xk == "step":
                    notes.append(f"{strat} seed {s}: diverged at step {dstep}")
            if missing and col == "val_loss" and xk == "step":
                notes.append(f"{strat}: missing seed(s) {', '.join(map(str, missing))}")
            data["agg"][(strat, col, xk)] = {k: v.tolist() for k, v in a.items()}
            any_line = True
        if not any_line:
            style.empty(ax, f"no {col} data")
            continue
        ax.set_yscale("log")
        if xk == "wall":
            ax.set_xscale("log")
    if notes:
        style.note(axes[0, 0], "\n".join(notes[:8]) + ("\n..." if len(notes) > 8 else ""), loc="bottom")
    n_seeds = len(seeds)
    fig.suptitle(f"task {task}: loss during hyperparameter optimization "
                 f"(line: mean over {n_seeds} seed{'s' if n_seeds != 1 else ''}, band: min-max)", fontsize=9)
    style.finish(fig)
    style.legend_below(fig, axes, ncol=4)
    fig.subplots_adjust(bottom=0.17)
    data.update(style.save(fig, out_stem))
    data["notes"] = notes
    return data
