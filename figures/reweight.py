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
    Top row: histograms (density, seeds pooled) of clean and flipped weights per strategy; bottom: ROC
    curves of every seed, AUC mean +- std in the legend."""
    strategies = style.order(strategies or list(runs))
    seeds = list(seeds) if seeds is not None else sorted({s for b in runs.values() for s in b})
    k = max(1, len(strategies))
    fig = style.plt.figure(figsize=(max(2.3 * k, 7.0), 5.6))
    gs = fig.add_gridspec(2, k, height_ratios=[1, 1.25])
    data: dict[str, Any] = {"auc": {}}
    roc_ax = fig.add_subplot(gs[1, :max(1, (k + 1) // 2)])
    roc_ax.set_label("roc")
    roc_ax.plot([0, 1], [0, 1], ":", color="k", lw=0.8, label="chance (AUC 0.5)")
    for j, strat in enumerate(strategies):
        ax = fig.add_subplot(gs[0, j])
        ax.set_label(f"hist/{strat}")
        ax.set_title(strat, color=style.color(strat))
        ax.set_xlabel("learned weight")
        if j == 0:
            ax.set_ylabel("density")
        ok = [r for s, r in sorted(runs.get(strat, {}).items()) if len(r.weights.get("weight", []))]
        missing = [s for s in seeds if s not in {r.seed for r in ok}]
        if not ok:
            style.empty(ax, "no weights.csv")
            continue
        w = np.concatenate([r.weights["weight"] for r in ok])
        f = np.concatenate([r.weights["flipped"] for r in ok])
        lo, hi = float(np.nanmin(w)), float(np.nanmax(w))
        bins = BINS if lo >= 0 and hi <= 1 else np.linspace(lo, hi if hi > lo else lo + 1, 26)
        centers = 0.5 * (bins[1:] + bins[:-1])
        for name, mask, c in (("clean", f == 0, "#1b9e77"), ("flipped", f == 1, "#d95f02")):
            if mask.any():
                h, _ = np.histogram(w[mask], bins=bins, density=True)
                ax.step(centers, h, where="mid", color=c, label=f"{name} examples")
                ax.fill_between(centers, h, step="mid", color=c, alpha=0.2, lw=0)
        if hi - lo < 1e-6:
            style.note(ax, f"all weights = {lo:.3g}\n(not tuned)", loc="bottom")
        elif missing:
            style.note(ax, f"missing seed(s) {missing}")
        aucs = []
        for r in ok:
            fpr, tpr, auc = roc(r.weights["weight"], r.weights["flipped"])
            aucs.append(auc)
        a = np.array(aucs, dtype=float)
        lab = f"{strat}: AUC {np.nanmean(a):.3f}" + (f" ± {np.nanstd(a, ddof=1):.3f}" if len(a) > 1 else "")
        for i, r in enumerate(ok):
            fpr, tpr, _ = roc(r.weights["weight"], r.weights["flipped"])
            roc_ax.plot(fpr, tpr, color=style.color(strat), lw=1.0, alpha=0.9,
                        label=lab if i == 0 else f"_{strat} seed {r.seed}")
        data["auc"][strat] = aucs
    roc_ax.set_xlabel("false positive rate (flipped examples kept)")
    roc_ax.set_ylabel("true positive rate (clean examples kept)")
    roc_ax.set_title("ROC: weight as a score for 'clean' (one curve per seed)")
    roc_ax.set_aspect("equal")
    roc_ax.legend(loc="center left", bbox_to_anchor=(1.05, 0.5), fontsize=7)
    proxies = [style.plt.Line2D([], [], color=c, label=f"{n} examples (histograms)")
               for n, c in (("clean", "#1b9e77"), ("flipped", "#d95f02"))]
    fig.legend(handles=proxies, loc="lower right", bbox_to_anchor=(0.98, 0.2), fontsize=7)
    fig.suptitle("task reweight: learned per-example weights (seeds pooled)", fontsize=9)
    fig.tight_layout()
    data.update(style.save(fig, out_stem))
    return data
