"""Figure 3: reweighting — distribution of the learned weights of clean against flipped examples per
strategy, and the ROC curve (clean = positive, score = weight) with its AUC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import Run

BINS = np.linspace(0.0, 1.0, 26)
CLEAN, FLIPPED = "#1b9e77", "#d95f02"  # green, orange
ZOOM = ((0.0, 0.2), (0.8, 1.0))  # (false positive rate, true positive rate) range of the ROC zoom


def roc(weights: np.ndarray, flipped: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(false positive rate, true positive rate, AUC) of separating clean (positive) from flipped
    examples by their weight; ties count half (AUC = Mann-Whitney U / (n_clean n_flipped))."""
    w = np.asarray(weights, dtype=float)
    clean = np.asarray(flipped, dtype=float) == 0
    n1, n0 = int(clean.sum()), int((~clean).sum())
    if n1 == 0 or n0 == 0:
        return np.array([0.0, 1.0]), np.array([0.0, 1.0]), float("nan")
    order = np.argsort(-w, kind="mergesort")
    ws, cs = w[order], clean[order]
    # thresholds at distinct weights (descending)
    distinct = np.r_[np.where(np.diff(ws) != 0)[0], len(ws) - 1]
    tp = np.cumsum(cs)[distinct]
    fp = np.cumsum(~cs)[distinct]
    tpr = np.r_[0.0, tp / n1]
    fpr = np.r_[0.0, fp / n0]
    auc = float(np.trapezoid(tpr, fpr))
    return fpr, tpr, auc


def plot_reweight_weights(runs: Mapping[str, Mapping[int, Run]], out_stem: str | Path,
                          seeds: Sequence[int] | None = None,
                          strategies: Sequence[str] | None = None) -> dict[str, Any]:
    """``runs``: {strategy: {seed: Run}} of the reweight task (weights.csv: index, weight, flipped).
    Top row: histograms (counts on a log axis, seeds pooled) of clean and flipped weights per strategy;
    bottom: ROC curves of every seed, AUC mean +- std in the legend, the chance diagonal on top."""
    strategies = style.order(strategies or list(runs))
    seeds = list(seeds) if seeds is not None else sorted({s for b in runs.values() for s in b})
    k = max(1, len(strategies))
    ncol = max(k, 3)
    fig = style.plt.figure(figsize=(max(2.4 * ncol, 7.5), 7.0))
    gs = fig.add_gridspec(2, ncol, height_ratios=[1, 1.5], hspace=0.45)
    data: dict[str, Any] = {"auc": {}, "counts": {}}
    third = max(1, ncol // 3)
    roc_ax = fig.add_subplot(gs[1, :third])
    roc_ax.set_label("roc")
    zoom_ax = fig.add_subplot(gs[1, third: 2 * third])
    zoom_ax.set_label("roc/zoom")
    notes: list[str] = []
    hist_axes = []
    for j, strat in enumerate(strategies):
        ax = fig.add_subplot(gs[0, j], sharey=hist_axes[0] if hist_axes else None)
        hist_axes.append(ax)
        ax.set_label(f"hist/{strat}")
        ax.set_xlabel("learned example weight")
        if j == 0:
            ax.set_ylabel("count of examples (log)")
        ok = [r for s, r in sorted(runs.get(strat, {}).items()) if len(r.weights.get("weight", []))]
        missing = [s for s in seeds if s not in {r.seed for r in ok}]
        title = strat
        if not ok:
            ax.set_title(title, color=style.color(strat))
            style.empty(ax, "no weights.csv")
            continue
        w = np.concatenate([r.weights["weight"] for r in ok])
        f = np.concatenate([r.weights["flipped"] for r in ok])
        lo, hi = float(np.nanmin(w)), float(np.nanmax(w))
        bins = BINS if lo >= 0 and hi <= 1 else np.linspace(lo, hi if hi > lo else lo + 1, 26)
        for name, mask, c in (("clean", f == 0, CLEAN), ("flipped", f == 1, FLIPPED)):
            if mask.any():
                h, _ = np.histogram(w[mask], bins=bins)
                ax.stairs(h, bins, color=c, lw=1.2, label=f"{name} examples")
                ax.stairs(h, bins, color=c, alpha=0.2, fill=True, label="_fill")
                data["counts"][(strat, name)] = h.tolist()
        ax.set_yscale("log")
        if hi - lo < 1e-6:
            title += f"\n(not tuned: every weight {lo:.3g})"
        elif missing:
            title += f"\n(missing seed(s) {', '.join(map(str, missing))})"
        ax.set_title(title, color=style.color(strat))
        aucs = []
        for r in ok:
            fpr, tpr, auc = roc(r.weights["weight"], r.weights["flipped"])
            aucs.append(auc)
        a = np.array(aucs, dtype=float)
        lab = f"{strat}: AUC {np.nanmean(a):.3f}" + (f" ± {np.nanstd(a, ddof=1):.3f}" if len(a) > 1 else "")
        equal = hi - lo < 1e-6
        if equal:
            lab += " (all weights equal: on the chance line)"
        for i, r in enumerate(ok):
            fpr, tpr, _ = roc(r.weights["weight"], r.weights["flipped"])
            for a_, name in ((roc_ax, lab if i == 0 else f"_{strat} seed {r.seed}"), (zoom_ax, f"_{strat} {r.seed}")):
                a_.plot(fpr, tpr, color=style.color(strat), lw=3.0 if equal else 1.0, alpha=0.45 if equal else 0.9,
                        label=name, zorder=2)
        data["auc"][strat] = aucs
    roc_ax.plot([0, 1], [0, 1], ":", color="k", lw=1.0, label="chance (AUC 0.5): the diagonal", zorder=5)
    zoom_ax.plot([0, 1], [0, 1], ":", color="k", lw=1.0, label="_chance", zorder=5)
    for a_, (xr, yr), title in ((roc_ax, ((0.0, 1.0), (0.0, 1.01)),
                                 "ROC of the weight as a score for 'clean'\n(one curve per seed)"),
                                (zoom_ax, ZOOM, "zoom on the top-left corner")):
        a_.set_xlabel("false positive rate (flipped examples kept)")
        a_.set_ylabel("true positive rate (clean examples kept)")
        a_.set_title(title)
        a_.set_xlim(*xr)
        a_.set_ylim(*yr)
        a_.set_aspect("equal")
    roc_ax.indicate_inset((ZOOM[0][0], ZOOM[1][0], ZOOM[0][1] - ZOOM[0][0], ZOOM[1][1] - ZOOM[1][0]),
                          edgecolor="0.3")  # the zoomed region, without connector lines across the curves
    leg_ax = fig.add_subplot(gs[1, 2 * third:])
    leg_ax.axis("off")
    h_roc, l_roc = roc_ax.get_legend_handles_labels()
    proxies = [style.plt.Line2D([], [], color=c, lw=1.2, label=f"{n} examples (histograms)")
               for n, c in (("clean", CLEAN), ("flipped", FLIPPED))]
    leg_ax.legend(h_roc + proxies, l_roc + [p.get_label() for p in proxies], loc="center left", frameon=False,
                  title="ROC (AUC mean ± std over seeds)")
    fig.suptitle("task reweight: learned per-example weights (seeds pooled)", fontsize=10)
    style.footnote(fig, notes)
    data.update(style.save(fig, out_stem))
    return data
