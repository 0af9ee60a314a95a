"""Figure 6: wall time per hyperparameter update and per run against T, tau (and q) for global, local and
glocal (log-log), with the slopes of the complexity table of docs/design.md; fallback: the HPO runs' timings."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.agg import mean_std
from figures.io import Run, to_float

VARIABLES = ["T", "tau", "q"]
XLABEL = {"T": "training horizon T (steps)", "tau": r"window length $\tau$ (steps)",
          "q": "number of hyperparameters q"}
METHOD_COLORS = {"global": "global", "local": "local", "glocal": "glocal", "train": "fixed"}
METHOD_NAMES = {"train": "plain training (T steps, no hypergradient)"}


def slope_key(method: str, engine: str) -> str:
    """The theory_checks.bounds complexity-table key of a benchmark method run with an engine."""
    if method == "global":
        return "global_forward" if engine == "forward" else "global_reverse"
    if method == "local":
        return "local_reverse" if engine == "reverse" else "local_forward"
    if method == "train":
        return "local_forward"  # T inner steps: linear in T
    return method


def expected(method: str, variable: str, engine: str) -> float | None:
    try:
        from theory_checks.bounds import expected_slope
    except ImportError:  # pragma: no cover
        return None
    try:
        return float(expected_slope(slope_key(method, engine), variable))
    except KeyError:
        return None


def plot_cost(bench_rows: Sequence[dict[str, Any]] | None, out_stem: str | Path,
              runs: Mapping[str, Mapping[str, Mapping[int, Run]]] | None = None) -> dict[str, Any]:
    """``bench_rows``: results/bench/cost.csv rows (method, variable, value, seconds_per_update,
    seconds_per_run, q, engine, device). One panel per variable: seconds per update (solid, markers)
    and per run (dashed) per method, with a dotted reference line of the expected slope through the
    first point of each per-update series. Without ``bench_rows``: bars of the HPO runs' time.total /
    n_hyper_updates and time.total per run (``runs``: {task: {strategy: {seed: Run}}}), with a note."""
    if bench_rows:
        return _from_bench(bench_rows, out_stem)
    return _from_runs(runs or {}, out_stem)


#: sweeps whose points come from different problems (benchmarks/run.py: q = 3 and 4 are optimizer
#: hyperparameters, larger q per-example weights): drawn as points, never joined or fitted
MIXED_PROBLEMS = {"q"}


def _from_bench(rows, out_stem):
    variables = [v for v in VARIABLES if any(r["variable"] == v for r in rows)]
    variables += sorted({r["variable"] for r in rows} - set(variables))
    fig, axes = style.subplots(1, len(variables), w=3.6, h=3.1)
    data: dict[str, Any] = {"series": {}, "slopes": {}}
    devices = sorted({str(r.get("device", "")) for r in rows if r.get("device")})
    notes: list[str] = []
    for ax, var in zip(axes[0], variables):
        ax.set_label(f"cost/{var}")
        ax.set_xlabel(XLABEL.get(var, var))
        ax.set_ylabel("wall time (s)")
        rs = [r for r in rows if r["variable"] == var]
        methods = style.order({r["method"] for r in rs})
        mixed = var in MIXED_PROBLEMS
        xs_all = []
        for m in methods:
            mr = sorted((r for r in rs if r["method"] == m), key=lambda r: to_float(r["value"]))
            engines = sorted({str(r.get("engine") or "") for r in mr})
            c = style.color(METHOD_COLORS.get(m, m))
            x = np.array([to_float(r["value"]) for r in mr])
            eng = "/".join(e for e in engines if e and e != "none")
            for col, ls, what in (("seconds_per_update", "-", "per update"), ("seconds_per_run", "--", "per run")):
                y = np.array([to_float(r.get(col)) for r in mr])
                ok = np.isfinite(y) & (y > 0) & np.isfinite(x) & (x > 0)
                if not ok.any():
                    continue
                xs_all += x[ok].tolist()
                lab = f"{METHOD_NAMES.get(m, m)}{' [' + eng + ']' if eng else ''}, {what}"
                ax.plot(x[ok], y[ok], ls="none" if mixed else ls, marker=style.MARKERS.get(METHOD_COLORS.get(m, m), "o"),
                        mfc=c if col == "seconds_per_update" else "white", color=c, label=lab)
                data["series"][(var, m, col)] = (x[ok].tolist(), y[ok].tolist())
                if col == "seconds_per_update" and ok.sum() >= 2 and not mixed:
                    slope = np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0]
                    k = expected(m, var, engines[0] if engines else "")
                    data["slopes"][(var, m)] = (float(slope), k)
                    if k is not None:
                        x0, y0 = x[ok][0], y[ok][0]
                        xs = np.array([x[ok].min(), x[ok].max()])
                        ax.plot(xs, y0 * (xs / x0) ** k, ":", color=c, lw=1.0, label=f"_ref {m} slope {k:g}")
                        notes.append(f"{var}: {m} fitted slope {slope:.2f}, expected {k:g}"
                                     + (f" ({ok.sum()} points)" if ok.sum() < 3 else ""))
                    else:
                        notes.append(f"{var}: {m} fitted slope {slope:.2f} (no table entry)")
        if mixed and xs_all:
            notes.append(f"{var}: the points come from different problems (benchmarks/run.py), so they are not "
                         "joined and no slope is fitted")
        ax.set_xscale("log")
        ax.set_yscale("log")
        style.ticks_at(ax, xs_all)
        ax.set_title(f"cost against {XLABEL.get(var, var).split(' (')[0]}")
    ref = style.plt.Line2D([], [], ls=":", color="k",
                           label="expected slope (complexity table, docs/design.md), through the 1st point")
    style.finish(fig)
    style.legend_below(fig, axes, ncol=3, extra=[ref])
    fig.subplots_adjust(bottom=0.36, top=0.86)
    fig.suptitle("Cost of hypergradient estimation (results/bench/cost.csv"
                 + (f"; device {', '.join(devices)}" if devices else "") + ")", fontsize=10)
    style.footnote(fig, notes)
    data.update(style.save(fig, out_stem))
    data["source"] = "bench"
    data["notes"] = notes
    return data


def _from_runs(runs, out_stem):
    tasks = sorted(runs)
    fig, axes = style.subplots(1, 2, w=3.8, h=3.0)
    data: dict[str, Any] = {"bars": {}, "source": "runs"}
    if not tasks:
        for ax in axes[0]:
            style.empty(ax, "no results/bench/cost.csv and no run summaries")
    for ax, (what, ylabel) in zip(axes[0], (("update", "wall time per hyperparameter update (s)"),
                                            ("run", "wall time per training run (s)"))):
        ax.set_label(f"cost/{what}")
        strategies = style.order({s for t in tasks for s in runs[t]})
        width = 0.8 / max(1, len(strategies))
        for j, strat in enumerate(strategies):
            xs, ys, es = [], [], []
            for i, task in enumerate(tasks):
                vals = []
                for r in runs[task].get(strat, {}).values():
                    tot = to_float(r.summary.get("time", {}).get("total"))
                    n = to_float(r.summary.get("n_hyper_updates" if what == "update" else "n_training_runs"))
                    if what == "run" and not np.isfinite(n):
                        n = 1.0
                    if np.isfinite(tot) and np.isfinite(n) and n > 0:
                        vals.append(tot / n)
                m, s, k = mean_std(vals)
                if k:
                    xs.append(i + (j - (len(strategies) - 1) / 2) * width)
                    ys.append(m)
                    es.append(s if np.isfinite(s) else 0.0)
            if xs:
                ax.bar(xs, ys, width=width * 0.95, yerr=es, color=style.color(strat), label=strat, capsize=2)
                data["bars"][(what, strat)] = (xs, ys)
        ax.set_xticks(range(len(tasks)))
        ax.set_xticklabels([f"task {t}" for t in tasks])
        ax.set_ylabel(ylabel)
        ax.set_yscale("log")
    style.finish(fig)
    style.legend_below(fig, axes, ncol=6)
    fig.subplots_adjust(bottom=0.22, top=0.82)
    fig.text(0.5, 0.90, "note: results/bench/cost.csv not found — timings of the HPO runs (time.total / updates, "
             "mean ± std over seeds); no sweep over T or τ", ha="center", fontsize=7, color="#8a6d00")
    fig.suptitle("Cost per hyperparameter update and per training run (HPO runs)", fontsize=9)
    data.update(style.save(fig, out_stem))
    return data
