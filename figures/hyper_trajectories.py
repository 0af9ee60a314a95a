"""Figure 2: hyperparameter trajectories (per-layer learning rates, weight decay, momentum, or the mean
example weights of clean and flipped examples) per strategy, mean and band over seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.agg import over_seeds
from figures.io import Run

LOG_PREFIXES = ("hp:lr", "hp:weight_decay")
NICE = {
    "hp:momentum": "momentum",
    "hp:weight_decay": "weight decay",
    "hp:example_weight_mean": "mean example weight (all)",
    "hp:example_weight_clean_mean": "mean weight, clean examples",
    "hp:example_weight_flipped_mean": "mean weight, flipped examples",
    "hp:slope": "small-loss rule slope",
    "hp:offset": "small-loss rule offset",
}


def label_of(col: str) -> str:
    name = col[3:] if col.startswith("hp:") else col
    if name == "lr":
        return "learning rate"
    if name.startswith("lr["):
        return f"learning rate, layer group {name[3:-1]}"
    return NICE.get(col, name)


def hp_columns(runs: Mapping[str, Mapping[int, Run]]) -> list[str]:
    cols: list[str] = []
    for by_seed in runs.values():
        for r in by_seed.values():
            cols += [c for c in r.metrics if c.startswith("hp:") and c not in cols]
    pref = ["hp:lr", "hp:weight_decay", "hp:momentum", "hp:example_weight_clean_mean",
            "hp:example_weight_flipped_mean", "hp:example_weight_mean"]
    return sorted(cols, key=lambda c: (next((i for i, p in enumerate(pref) if c.startswith(p)), len(pref)), c))


def plot_hyper_trajectories(runs: Mapping[str, Mapping[int, Run]], task: str, out_stem: str | Path,
                            seeds: Sequence[int] | None = None,
                            strategies: Sequence[str] | None = None) -> dict[str, Any]:
    """One panel per logged hyperparameter column ``hp:*``, one line per strategy (mean over seeds,
    min-max band). ``random``/``tpe`` show their best trial's (constant) values."""
    strategies = style.order(strategies or list(runs))
    seeds = list(seeds) if seeds is not None else sorted({s for b in runs.values() for s in b})
    cols = hp_columns({s: runs[s] for s in strategies if s in runs})
    n = max(1, len(cols))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = style.subplots(nrows, ncols, w=3.2, h=2.5)
    data: dict[str, Any] = {"columns": cols}
    if not cols:
        style.empty(axes[0, 0], f"no hyperparameter columns (hp:*) in any run of task {task}")
    for ax, col in zip(axes.ravel(), cols):
        ax.set_label(col)
        ax.set_title(label_of(col))
        ax.set_xlabel("training step (cumulative inner steps)")
        ax.set_ylabel(label_of(col) + (" (log scale)" if col.startswith(LOG_PREFIXES) else ""))
        for strat in strategies:
            ok = [r for r in runs.get(strat, {}).values() if col in r.metrics]
            if not ok:
                continue
            a = over_seeds(ok, col)
            if not len(a["x"]):
                continue
            n_ok = len(ok)
            lab = strat + (f" ({n_ok}/{len(seeds)} seeds)" if n_ok < len(seeds) else "")
            c = style.color(strat)
            ax.plot(a["x"], a["mean"], color=c, label=lab,
                    ls="--" if strat in ("random", "tpe") else "-")
            if np.any(a["n"] > 1):
                ax.fill_between(a["x"], a["min"], a["max"], color=c, alpha=0.15, lw=0)
            for r in ok:
                if r.diverged_step is not None:
                    y = r.metrics[col]
                    m = np.isfinite(y)
                    if m.any():
                        i = np.where(m)[0][-1]
                        ax.plot([r.metrics["step"][i]], [y[i]], "x", color=c, ms=8, mew=2,
                                label=f"{strat} seed {r.seed} diverged")
        if col.startswith(LOG_PREFIXES):
            ax.set_yscale("log")
    for ax in axes.ravel()[len(cols):]:
        ax.set_visible(False)
    fig.suptitle(f"task {task}: hyperparameter trajectories (mean over seeds, band min-max)", fontsize=9)
    style.finish(fig)
    style.legend_below(fig, axes, ncol=6)  # one row: it must clear the bottom panels' axis labels
    fig.subplots_adjust(bottom=0.15 if nrows > 1 else 0.24)
    data.update(style.save(fig, out_stem))
    return data
