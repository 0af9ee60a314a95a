"""Figure 2: hyperparameter trajectories per strategy against the training step of the run (per-layer
learning rates with the layers named, weight decay, momentum; or the mean example weight of clean and of
flipped examples), mean and band over seeds.

``global`` keeps its hyperparameters constant within each of its M training runs, so each meta-iteration
is one horizontal line (light = early, dark = last) over the same x range as the one-run strategies.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.agg import over_seeds
from figures.hpo_curves import SEARCHES, final_run, last_finite
from figures.io import Run

LOG_PREFIXES = ("hp:lr", "hp:weight_decay")
NICE = {
    "hp:momentum": "momentum",
    "hp:weight_decay": "weight decay",
    "hp:example_weight_mean": "mean example weight, all examples",
    "hp:example_weight_clean_mean": "mean example weight, clean examples",
    "hp:example_weight_flipped_mean": "mean example weight, flipped examples",
    "hp:slope": "small-loss rule slope",
    "hp:offset": "small-loss rule offset",
}
#: columns left out when the columns in the value are drawn (the mean of all weights mixes the two groups)
REDUNDANT = {"hp:example_weight_mean": ("hp:example_weight_clean_mean", "hp:example_weight_flipped_mean")}
#: constants of the searches' weighting rule: summarized under the panels, not drawn as trajectories
RULE_COLUMNS = ("hp:slope", "hp:offset")
_LAYER = re.compile(r"^hp:lr\[(\d+)\]$")


def layer_names(runs: Mapping[str, Mapping[int, Run]], n: int) -> list[str] | None:
    """Names of the n learning-rate groups (one per layer) from a run's config.json: for an MLP
    "layer k (h units)" and "output layer", for logistic regression "linear layer"; None when unknown."""
    for by_seed in runs.values():
        for r in by_seed.values():
            try:
                doc = json.loads((r.path / "config.json").read_text())
                model = doc["config"]["tasks"][doc.get("task", r.task)]["model"]
            except (OSError, ValueError, KeyError, TypeError):
                continue
            kind = model.get("kind")
            hidden = [int(h) for h in model.get("hidden") or []] if kind == "mlp" else []
            if kind in ("mlp", "logreg"):
                names = [f"hidden layer {k + 1} ({h} units)" for k, h in enumerate(hidden)]
                names.append("output layer" if names else "linear layer")
                return names if len(names) == n else None
            return None
    return None


def label_of(col: str, layers: list[str] | None = None) -> str:
    name = col[3:] if col.startswith("hp:") else col
    if name == "lr":
        return "learning rate"
    m = _LAYER.match(col)
    if m:
        i = int(m.group(1))
        return f"learning rate, {layers[i]}" if layers and i < len(layers) else f"learning rate, parameter group {i}"
    return NICE.get(col, name)


def hp_columns(runs: Mapping[str, Mapping[int, Run]]) -> list[str]:
    cols: list[str] = []
    for by_seed in runs.values():
        for r in by_seed.values():
            cols += [c for c in r.metrics if c.startswith("hp:") and c not in cols
                     and np.any(np.isfinite(r.metrics[c]))]
    cols = [c for c in cols if c not in RULE_COLUMNS and not all(o in cols for o in REDUNDANT.get(c, ("-",)))]
    pref = ["hp:lr", "hp:weight_decay", "hp:momentum", "hp:example_weight_clean_mean",
            "hp:example_weight_flipped_mean", "hp:example_weight_mean"]
    return sorted(cols, key=lambda c: (next((i for i, p in enumerate(pref) if c.startswith(p)), len(pref)), c))


def per_meta_iteration(runs: Sequence[Run], col: str) -> np.ndarray:
    """Mean over seeds of the value of ``col`` in each training run of a multi-run strategy (global)."""
    values: dict[int, list[float]] = {}
    for r in runs:
        m = r.metrics
        if col not in m or "run" not in m:
            continue
        for k in np.unique(m["run"]):
            v = m[col][np.where(m["run"] == k)[0][0]]
            if np.isfinite(v):
                values.setdefault(int(k), []).append(float(v))
    return np.array([np.mean(values[k]) for k in sorted(values)])


def _rule_note(runs: Mapping[str, Mapping[int, Run]]) -> list[str]:
    notes = []
    for strat in style.order(runs):
        if strat not in SEARCHES:
            continue
        vals = {c: [float(r.metrics[c][0]) for r in runs[strat].values() if c in r.metrics and len(r.metrics[c])]
                for c in RULE_COLUMNS}
        if all(vals.values()):
            notes.append(f"{strat}: per-example weights from the small-loss rule sigmoid(slope x loss + offset) of "
                         f"its best trial, slope {np.mean(vals['hp:slope']):.3g}, offset "
                         f"{np.mean(vals['hp:offset']):.3g} (mean over seeds)")
    return notes


def plot_hyper_trajectories(runs: Mapping[str, Mapping[int, Run]], task: str, out_stem: str | Path,
                            seeds: Sequence[int] | None = None,
                            strategies: Sequence[str] | None = None) -> dict[str, Any]:
    """One panel per logged hyperparameter column ``hp:*``, one line per strategy (mean over seeds,
    min-max band) against the training step of its final run; global's meta-iterations as horizontal lines;
    ``random``/``tpe`` (dashed) show their best trial."""
    strategies = style.order(strategies or list(runs))
    seeds = list(seeds) if seeds is not None else sorted({s for b in runs.values() for s in b})
    present = {s: runs[s] for s in strategies if s in runs}
    cols = hp_columns(present)
    n_layers = sum(bool(_LAYER.match(c)) for c in cols)
    layers = layer_names(present, n_layers) if n_layers else None
    n = max(1, len(cols))
    ncols = min(3, n + 1)  # one slot more: the legend
    nrows = math.ceil((n + 1) / ncols)
    fig, axes = style.subplots(nrows, ncols, w=3.5, h=2.7, sharex=True)
    data: dict[str, Any] = {"columns": cols, "global": {}}
    xmax = 0.0
    if not cols:
        style.empty(axes[0, 0], f"no hyperparameter columns (hp:*) in any run of task {task}")
    example_axes = []
    for ax, col in zip(axes.ravel(), cols):
        ax.set_label(col)
        ax.set_title(label_of(col, layers))
        ax.set_ylabel(label_of(col, layers).split(",")[0] + (" (log scale)" if col.startswith(LOG_PREFIXES) else ""))
        if col.startswith("hp:example_weight"):
            example_axes.append(ax)
        for strat in strategies:
            ok = [r for r in runs.get(strat, {}).values() if col in r.metrics]
            if not ok:
                continue
            c = style.color(strat)
            n_ok = len(ok)
            lab = strat + (f" ({n_ok}/{len(seeds)} seeds)" if n_ok < len(seeds) else "")
            views = [final_run(r) for r in ok]
            steps = np.concatenate([v.metrics["step"] for v in views if "step" in v.metrics] or [np.array([0.0])])
            xmax = max(xmax, float(np.nanmax(steps)) if len(steps) else 0.0)
            iters = per_meta_iteration(ok, col) if any("run" in r.metrics and len(np.unique(r.metrics["run"])) > 1
                                                      for r in ok) and strat not in SEARCHES else np.array([])
            if len(iters) > 1:
                for k, v in enumerate(iters):
                    last = k == len(iters) - 1
                    ax.axhline(v, color=c, lw=1.4 if last else 0.8, alpha=0.25 + 0.75 * k / (len(iters) - 1),
                               label=f"{lab}: meta-iterations 1-{len(iters)} (light to dark)" if last else "_meta")
                data["global"][(strat, col)] = iters.tolist()
                continue
            if strat in SEARCHES:  # the seeds' best trials are unrelated points of the search space: no mean
                for k, v in enumerate(views):
                    if col in v.metrics and np.isfinite(v.metrics[col]).any():
                        ax.plot(v.metrics["step"], v.metrics[col], color=c, ls="--", lw=1.0,
                                label=f"{lab}, best trial of each seed" if k == 0 else f"_{strat} seed {v.seed}")
                continue
            a = over_seeds(views, col)
            if not len(a["x"]):
                continue
            ax.plot(a["x"], a["mean"], color=c, label=lab)
            if np.any(a["n"] > 1):
                ax.fill_between(a["x"], a["min"], a["max"], color=c, alpha=0.15, lw=0)
            for r in ok:
                lf = last_finite(r, col) if r.diverged_step is not None else None
                if lf is not None:
                    ax.plot([lf[0]], [lf[2]], "x", color=c, ms=8, mew=2, label=f"{strat} seed {r.seed} diverged")
        if col.startswith(LOG_PREFIXES):
            ax.set_yscale("log")
            style.plain_log_labels(ax.yaxis)
    if len(example_axes) > 1:  # clean and flipped on one scale, so the two panels compare at a glance
        lo = min(a.get_ylim()[0] for a in example_axes)
        hi = max(a.get_ylim()[1] for a in example_axes)
        for a in example_axes:
            a.set_ylim(lo, hi)
    for ax in axes.ravel():
        ax.set_xlim(0, xmax or 1)
        ax.tick_params(labelbottom=True)
    for ax in axes.ravel()[: len(cols)]:
        ax.set_xlabel("training step of the run")
    spare = axes.ravel()[len(cols):]
    handles, labels = [], []
    for ax in axes.ravel()[: len(cols)]:
        for h, lb in zip(*ax.get_legend_handles_labels()):
            if not lb.startswith("_") and lb not in labels:
                handles.append(h)
                labels.append(lb)
    key = [(style.order([x.split(" ")[0].rstrip(":,") for x in labels]).index(lb.split(" ")[0].rstrip(":,")), i)
           for i, lb in enumerate(labels)]
    pairs = [(h, lb) for _, h, lb in sorted(zip(key, handles, labels), key=lambda t: t[0])]
    for ax in spare:
        ax.axis("off")
    if pairs and len(spare):
        spare[0].legend(*zip(*pairs), loc="center", frameon=False, title="strategy")
    fig.suptitle(f"task {task}: hyperparameters during the run (mean over seeds, band: min-max)", fontsize=10)
    style.finish(fig)
    if pairs and not len(spare):
        style.legend_below(fig, axes, ncol=3)
    style.footnote(fig, _rule_note(present))
    data.update(style.save(fig, out_stem))
    return data
