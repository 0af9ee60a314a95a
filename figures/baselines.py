"""Figure 8 (issue 8): best validation loss so far against the number of full training runs and against
wall time, for every strategy (fixed, local, glocal, global, random, tpe) of one task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import Run, to_float


def best_so_far(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training runs, cumulative wall time (s), best final validation loss so far) of one run directory.
    random/tpe: trials.csv; global: the final validation loss of each of its M runs (metrics ``run``);
    fixed/local/glocal: one point, the final validation loss at one run and time.total."""
    t = run.trials
    if t and "trial" in t:
        n = t.get("n_training_runs", t["trial"] + 1)
        y = t.get("best_so_far_val_loss")
        if y is None:
            y = np.fmin.accumulate(np.where(np.isfinite(t["val_loss"]), t["val_loss"], np.inf))
        w = t.get("cumulative_wall_time", np.cumsum(t.get("wall_time", np.full(len(n), np.nan))))
        return n, w, np.where(np.isfinite(y), y, np.nan)
    m = run.metrics
    if m and "run" in m and len(np.unique(m["run"])) > 1:
        xs, ws, ys = [], [], []
        best = np.inf
        for k in np.unique(m["run"]):
            idx = np.where(m["run"] == k)[0]
            v = m["val_loss"][idx[-1]]
            best = min(best, v) if np.isfinite(v) else best
            xs.append(k + 1)
            ws.append(m["wall_time"][idx[-1]])
            ys.append(best if np.isfinite(best) else np.nan)
        tot = to_float(run.summary.get("time", {}).get("total"))
        if np.isfinite(tot) and ws:
            ws[-1] = max(ws[-1], tot)
        return np.array(xs, float), np.array(ws, float), np.array(ys, float)
    fin = to_float(run.summary.get("final", {}).get("val_loss")) if run.summary else np.nan
    if not np.isfinite(fin) and m and "val_loss" in m and len(m["val_loss"]):
        fin = m["val_loss"][-1]
    wall = to_float(run.summary.get("time", {}).get("total")) if run.summary else np.nan
    if not np.isfinite(wall) and m and "wall_time" in m and len(m["wall_time"]):
        wall = m["wall_time"][-1]
    n = to_float(run.summary.get("n_training_runs")) if run.summary else np.nan
    return np.array([n if np.isfinite(n) else 1.0]), np.array([wall]), np.array([fin])


def _mean_curves(curves: list[tuple[np.ndarray, np.ndarray, np.ndarray]]):
    """Mean over seeds at each number of runs (only where at least one seed has it)."""
    by_n: dict[float, list[tuple[float, float]]] = {}
    for n, w, y in curves:
        for a, b, c in zip(n, w, y):
            by_n.setdefault(float(a), []).append((float(b), float(c)))
    ns = np.array(sorted(by_n))
    w = np.array([np.nanmean([p[0] for p in by_n[k]]) for k in ns])
    y = np.array([np.nanmean([p[1] for p in by_n[k]]) if any(np.isfinite(p[1]) for p in by_n[k]) else np.nan
                  for k in ns])
    lo = np.array([np.nanmin([p[1] for p in by_n[k]]) if any(np.isfinite(p[1]) for p in by_n[k]) else np.nan
                   for k in ns])
    hi = np.array([np.nanmax([p[1] for p in by_n[k]]) if any(np.isfinite(p[1]) for p in by_n[k]) else np.nan
                   for k in ns])
    return ns, w, y, lo, hi


def plot_baselines(runs: Mapping[str, Mapping[int, Run]], task: str, out_stem: str | Path,
                   seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """``runs``: {strategy: {seed: Run}} of one task. Left: best validation loss so far against the number of
    full training runs; right: against cumulative wall time. Mean over seeds, min-max band/error bars."""
    seeds = list(seeds) if seeds is not None else sorted({s for b in runs.values() for s in b})
    strategies = style.order(runs)
    fig, axes = style.subplots(1, 2, w=3.8, h=3.0)
    data: dict[str, Any] = {"curves": {}}
    notes = []
    for ax, xk in zip(axes[0], ("runs", "wall")):
        ax.set_label(f"baselines/{xk}")
        ax.set_xlabel("full training runs" if xk == "runs" else "wall time (s)")
        ax.set_ylabel("best validation loss so far")
    if not strategies:
        for ax in axes[0]:
            style.empty(ax, f"no runs of task {task}")
    for strat in strategies:
        by_seed = runs[strat]
        curves = [best_so_far(r) for _, r in sorted(by_seed.items())]
        curves = [c for c in curves if len(c[0]) and np.any(np.isfinite(c[2]))]
        missing = [s for s in seeds if s not in by_seed]
        bad = [r.seed for r in by_seed.values() if r.diverged_step is not None and not r.trials]
        if not curves:
            notes.append(f"{strat}: no finite validation loss")
            continue
        ns, w, y, lo, hi = _mean_curves(curves)
        lab = strat + (f" ({len(curves)}/{len(seeds)} seeds)" if len(curves) < len(seeds) else "")
        c, mk = style.color(strat), style.MARKERS.get(strat, "o")
        for ax, x in zip(axes[0], (ns, w)):
            ok = np.isfinite(y) & np.isfinite(x)
            single = len(ns) == 1
            ax.plot(x[ok], y[ok], color=c, marker=mk, ms=6 if single else 3, ls="none" if single else "-",
                    label=lab, drawstyle="default" if single else "steps-post")
            if len(curves) > 1:
                if single:
                    ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], color=c, ls="none",
                                capsize=3, label="_err")
                else:
                    ax.fill_between(x[ok], lo[ok], hi[ok], color=c, alpha=0.15, lw=0, step="post")
        data["curves"][strat] = {"runs": ns.tolist(), "wall": w.tolist(), "best": y.tolist()}
        if missing:
            notes.append(f"{strat}: missing seed(s) {', '.join(map(str, missing))}")
        if bad:
            notes.append(f"{strat}: seed(s) {', '.join(map(str, bad))} diverged")
    for ax in axes[0]:
        if ax.get_lines():
            ax.set_yscale("log")
    axes[0, 1].set_xscale("log")
    if notes:
        style.note(axes[0, 0], "\n".join(notes), loc="bottom")
    style.finish(fig)
    style.legend_below(fig, axes, ncol=6)
    fig.subplots_adjust(bottom=0.25, top=0.88)
    fig.suptitle(f"task {task}: best validation loss against budget (mean over seeds; band/bars: min-max)",
                 fontsize=9)
    data.update(style.save(fig, out_stem))
    return data
