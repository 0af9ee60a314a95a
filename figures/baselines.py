"""Figure 8: best validation loss so far, and the test loss of that run, against the number of full
training runs and against wall time, for every strategy (fixed, local, glocal, global, random, tpe, cmaes) of one
task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import Run, to_float


def best_so_far(run: Run, col: str = "val_loss") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(training runs, cumulative wall time (s), value) of one run directory, where value is the best final
    validation loss so far (``col='val_loss'``) or the test loss of that best run (``col='test_loss'``).
    random/tpe/cmaes: trials.csv; global: the final losses of each of its M runs (metrics ``run``);
    fixed/local/glocal: one point, the final loss at one run and time.total."""
    t = run.trials
    if t and "trial" in t:
        n = t.get("n_training_runs", t["trial"] + 1)
        best_val = t.get("best_so_far_val_loss")
        if best_val is None:
            best_val = np.fmin.accumulate(np.where(np.isfinite(t["val_loss"]), t["val_loss"], np.inf))
        if col == "val_loss":
            y = best_val
        else:
            y = t.get(f"best_so_far_{col}")
            if y is None:  # the test loss of the trial that is best so far by validation loss
                vals = np.where(np.isfinite(t["val_loss"]), t["val_loss"], np.inf)
                idx = [int(np.argmin(vals[: k + 1])) for k in range(len(vals))]
                y = t[col][idx] if col in t else np.full(len(vals), np.nan)
        w = t.get("cumulative_wall_time", np.cumsum(t.get("wall_time", np.full(len(n), np.nan))))
        return n, w, np.where(np.isfinite(y), y, np.nan)
    m = run.metrics
    if m and "run" in m and len(np.unique(m["run"])) > 1:
        xs, ws, ys = [], [], []
        best, best_y = np.inf, np.nan
        for k in np.unique(m["run"]):
            idx = np.where(m["run"] == k)[0]
            v = m["val_loss"][idx[-1]]
            if np.isfinite(v) and v < best:
                best, best_y = v, m[col][idx[-1]] if col in m else np.nan
            xs.append(k + 1)
            ws.append(m["wall_time"][idx[-1]])
            ys.append(best_y if np.isfinite(best) else np.nan)
        tot = to_float(run.summary.get("time", {}).get("total"))
        if np.isfinite(tot) and ws:
            ws[-1] = max(ws[-1], tot)
        return np.array(xs, float), np.array(ws, float), np.array(ys, float)
    fin = to_float(run.summary.get("final", {}).get(col)) if run.summary else np.nan
    if not np.isfinite(fin) and m and col in m and len(m[col]):
        fin = m[col][-1]
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

    def agg(fn, k):
        ys = [p[1] for p in by_n[k]]
        return fn(ys) if any(np.isfinite(ys)) else np.nan

    w = np.array([np.nanmean([p[0] for p in by_n[k]]) for k in ns])
    y = np.array([agg(np.nanmean, k) for k in ns])
    lo = np.array([agg(np.nanmin, k) for k in ns])
    hi = np.array([agg(np.nanmax, k) for k in ns])
    return ns, w, y, lo, hi


#: sideways offset (in training runs) of the single-run strategies left of one run, so that none hides another
#: or the first step of a multi-run strategy (global, random, tpe, cmaes), which stays at exactly one run
DODGE = {"fixed": -0.4, "hd": -0.3, "local": -0.2, "glocal": -0.1}
YLABEL = {"val_loss": "best validation loss so far", "test_loss": "test loss of that run"}


def _plain_log_ticks(ax) -> None:
    """A log axis with few, plainly written tick labels (no colliding '3x10^0 4x10^0' minor labels)."""
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0), numticks=8))
    fmt = ScalarFormatter()
    fmt.set_scientific(False)
    ax.xaxis.set_major_formatter(fmt)
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_baselines(runs: Mapping[str, Mapping[int, Run]], task: str, out_stem: str | Path,
                   seeds: Sequence[int] | None = None) -> dict[str, Any]:
    """``runs``: {strategy: {seed: Run}} of one task. Rows: best validation loss so far, the test loss of that
    run; columns: against the number of full training runs, against cumulative wall time. Mean over seeds,
    min-max band / error bars; single-run strategies spread sideways at one run."""
    seeds = list(seeds) if seeds is not None else sorted({s for b in runs.values() for s in b})
    strategies = style.order(runs)
    fig, axes = style.subplots(2, 2, w=4.0, h=2.8)
    data: dict[str, Any] = {"curves": {}}
    notes = []
    for i, col in enumerate(("val_loss", "test_loss")):
        for ax, xk in zip(axes[i], ("runs", "wall")):
            ax.set_label(f"baselines/{xk}" if col == "val_loss" else f"baselines/{col}/{xk}")
            ax.set_xlabel("number of full training runs (searches: one per trial)" if xk == "runs"
                          else "wall time (s, log scale)")
            ax.set_ylabel(YLABEL[col])
    if not strategies:
        for ax in axes.ravel():
            style.empty(ax, f"no runs of task {task}")
    for strat in strategies:
        by_seed = runs[strat]
        missing = [s for s in seeds if s not in by_seed]
        bad = [r.seed for r in by_seed.values() if r.diverged_step is not None and not r.trials]
        c, mk = style.color(strat), style.MARKERS.get(strat, "o")
        drawn = False
        for i, col in enumerate(("val_loss", "test_loss")):
            curves = [best_so_far(r, col) for _, r in sorted(by_seed.items())]
            curves = [cv for cv in curves if len(cv[0]) and np.any(np.isfinite(cv[2]))]
            if not curves:
                continue
            drawn = True
            ns, w, y, lo, hi = _mean_curves(curves)
            n_ok = len(curves)
            lab = strat + (f" ({n_ok}/{len(seeds)} seeds)" if n_ok < len(seeds) else "")
            single = len(ns) == 1
            for ax, x in zip(axes[i], (ns + (DODGE.get(strat, -0.05) if single else 0.0), w)):
                ok = np.isfinite(y) & np.isfinite(x)
                ax.plot(x[ok], y[ok], color=c, marker=mk, ms=6 if single else 3, ls="none" if single else "-",
                        label=lab, drawstyle="default" if single else "steps-post")
                if n_ok > 1:
                    if single:
                        ax.errorbar(x[ok], y[ok], yerr=[y[ok] - lo[ok], hi[ok] - y[ok]], color=c, ls="none",
                                    capsize=3, label="_err")
                    else:
                        ax.fill_between(x[ok], lo[ok], hi[ok], color=c, alpha=0.15, lw=0, step="post")
            key = strat if col == "val_loss" else (strat, col)
            data["curves"][key] = {"runs": ns.tolist(), "wall": w.tolist(), "best": y.tolist()}
        if not drawn:
            notes.append(f"{strat}: no finite validation loss")
            continue
        if missing:
            notes.append(f"{strat}: missing seed(s) {', '.join(map(str, missing))}")
        if bad:
            notes.append(f"{strat}: seed(s) {', '.join(map(str, bad))} diverged")
    for ax in axes.ravel():
        if ax.get_lines():
            ax.set_yscale("log")
            style.plain_log_labels(ax.yaxis)
    for ax in axes[:, 1]:
        if ax.get_lines():
            ax.set_xscale("log")
            _plain_log_ticks(ax)
    for ax in axes[:, 0]:
        if ax.get_lines():
            from matplotlib.ticker import MaxNLocator

            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlim(left=0.5)
    fig.suptitle(f"task {task}: best loss against budget (mean over seeds; bars and bands: min-max)", fontsize=10)
    style.finish(fig)
    style.legend_below(fig, axes, ncol=6)
    fig.subplots_adjust(bottom=0.16, top=0.91)
    style.footnote(fig, notes)
    data.update(style.save(fig, out_stem))
    return data
