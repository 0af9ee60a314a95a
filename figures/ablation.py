"""Ablations of the glocal estimator on the extraction (results/ablation/extract/{task}/ablation.csv, written by
``glocal ablate extract``): the figure ``ablation_extract`` and the table ``ablation_extract.md/.csv``.

Each axis (time-delay depth, POD rank, POD energy threshold, rank rule, record stride) is varied alone from the
extraction's base settings; the prefix length panel is the base setting at every tau. The figure reads, per task
and batch mode, the glocal limit estimate at the longest prefix tau recorded for the task (the window), mean over
window starts, against the local h_tau of the same prefix; its bottom row is the cost of each setting: the wall
time of the fit, and for the stride the number of recorded local hypergradients beside it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import to_float

#: the panels of the figure, in order: (axis in the CSV, x-axis label)
PANELS = [("delay", "time-delay depth d"), ("rank", "POD rank (fixed)"), ("energy", "POD energy threshold"),
          ("rank_rule", "POD rank rule"), ("stride", "record stride k"), ("tau", "prefix length tau")]
TABLE_FIELDS = ["task", "batch mode", "axis", "value", "estimator", "prefix length tau", "n_rows",
                "relative error", "ratio to local", "local relative error", "fallbacks", "recorded steps",
                "engine ops", "fit wall time (s)"]
TASK_MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]


def _mode(row: dict[str, str]) -> str:
    return "full batch" if row.get("setting") == "full" else f"batch size {row.get('batch_size') or row.get('setting')}"


def _value_key(v: str) -> tuple[int, float, str]:
    f = to_float(v)
    return (0, f, "") if math.isfinite(f) else (1, 0.0, str(v))


def _fmt_value(v: str) -> str:
    f = to_float(v)
    return f"{f:g}" if math.isfinite(f) else {"overdetermined": "overdet."}.get(str(v), str(v))


def summarize(rows: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """One row per task, batch mode, axis, value, estimator and tau of ablation.csv rows: the mean over window
    starts and realizations of the relative error, ratio to local and fit time; fallbacks counted. The tau axis
    keeps every tau; the other axes only the task's longest prefix (its window)."""
    longest: dict[str, int] = {}
    for r in rows:
        t = int(to_float(r["tau"]))
        longest[r["task"]] = max(longest.get(r["task"], 0), t)
    groups: dict[tuple, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        tau = int(to_float(r["tau"]))
        if r["axis"] != "tau" and tau != longest[r["task"]]:
            continue
        groups[(r["task"], _mode(r), r["axis"], r["value"], r["estimator"], tau)].append(r)

    def mean(rs, key):
        v = [to_float(r.get(key)) for r in rs]
        v = [x for x in v if math.isfinite(x)]
        return float(np.mean(v)) if v else float("nan")

    out = []
    for (task, mode, axis, value, est, tau), rs in groups.items():
        out.append({"task": task, "batch mode": mode, "axis": axis, "value": value, "estimator": est,
                    "prefix length tau": tau, "n_rows": len(rs), "relative error": mean(rs, "rel_error"),
                    "ratio to local": mean(rs, "ratio_to_local"), "local relative error": mean(rs, "local_rel_error"),
                    "fallbacks": sum(int(to_float(r.get("fallback")) or 0) for r in rs),
                    "recorded steps": int(max(to_float(r.get("n_recorded")) for r in rs)),
                    "engine ops": int(max(to_float(r.get("engine_ops")) for r in rs)),
                    "fit wall time (s)": mean(rs, "fit_seconds")})
    axis_rank = {a: i for i, (a, _) in enumerate(PANELS)}
    out.sort(key=lambda r: (r["task"], r["batch mode"] != "full batch", r["batch mode"], axis_rank.get(r["axis"], 99),
                            r["estimator"], _value_key(r["value"]), r["prefix length tau"]))
    return out


def table_rows(rows: Sequence[dict[str, str]]) -> list[dict[str, Any]]:
    """The table's rows (:func:`summarize`, numbers formatted)."""
    out = []
    for r in summarize(rows):
        out.append({**r, "value": _fmt_value(r["value"]) if r["axis"] != "tau" else "base",
                    **{k: style.fmt(r[k]) for k in ("relative error", "local relative error")},
                    "ratio to local": style.fmt(r["ratio to local"], 2),
                    "fit wall time (s)": style.fmt(r["fit wall time (s)"], 2)})
    return out


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The extraction ablation table as markdown (the glocal limit and horizon fits, the task's window)."""
    lines = ["# Ablations of the glocal estimator on the extraction (`glocal ablate extract`)", "",
             "Each axis varied alone from the extraction's settings, refitted on its saved exact trajectories: the "
             "relative error of the glocal estimate of h_T from the prefix of tau local hypergradients (the task's "
             "window; mean over window starts), its ratio to local (the local h_tau of the same prefix), the "
             "fallbacks to local among the fits, and the cost: recorded steps, engine ops (Jacobian-vector or "
             "vector-Jacobian products that recording them takes) and fit wall time (s). The prefix length axis "
             "('base') is the base setting at every tau. Every row: ablation_extract.csv.", ""]
    if not rows:
        return "\n".join(lines + ["No extraction ablation found (results/ablation/extract/*/ablation.csv).", ""])
    head = ["task", "batch mode", "axis", "value", "estimator", "prefix length tau", "relative error",
            "ratio to local", "fallbacks", "recorded steps", "engine ops", "fit wall time (s)"]
    lines += style.markdown_table(head, rows)
    return "\n".join(lines) + "\n"


def plot_ablation_extract(rows: Sequence[dict[str, str]], out_stem: str | Path, estimator: str = "limit"
                          ) -> dict[str, Any]:
    """The compact grid: one column per axis; one row of relative error per batch mode (glocal ``estimator``
    solid, local h_tau of the same prefix dotted, one marker per task), and a bottom row with the wall time of
    each fit (the stride panel also the recorded steps, on a second axis)."""
    summ = [r for r in summarize(rows) if r["estimator"] == estimator]
    modes = sorted({r["batch mode"] for r in summ}, key=lambda m: (m != "full batch", m)) or ["full batch"]
    tasks = sorted({r["task"] for r in summ})
    fig, axes = style.subplots(len(modes) + 1, len(PANELS), w=2.2, h=2.0)
    if not summ:
        for ax in axes.ravel():
            style.empty(ax, "no results/ablation/extract/*/ablation.csv")
        axes[0, 0].set_ylabel("relative error")
        axes[-1, 0].set_ylabel("fit wall time (s)")
        return style.save(fig, out_stem)
    notes: list[str] = []
    fallbacks = [0, 0]  # fits that fell back to local, fits drawn
    for j, (axis, label) in enumerate(PANELS):
        for i, mode in enumerate(modes + ["cost"]):
            ax = axes[i, j]
            ax.set_label(f"{axis}/{mode}")
            sel = [r for r in summ if r["axis"] == axis and (mode == "cost" or r["batch mode"] == mode)]
            if not sel:
                style.empty(ax, f"no {axis} rows")
                continue
            cats = sorted({r["value"] if axis != "tau" else str(r["prefix length tau"]) for r in sel}, key=_value_key)
            xpos = {c: k for k, c in enumerate(cats)}
            tw = None
            if mode == "cost" and axis == "stride":  # one second axis per panel, shared by the tasks
                tw = ax.twinx()
                tw.set_ylabel("recorded steps", color="#9467bd", fontsize=7)
                tw.tick_params(axis="y", labelsize=7, colors="#9467bd")
            for n, task in enumerate(tasks):
                mk = TASK_MARKERS[n % len(TASK_MARKERS)]
                rs = [r for r in sel if r["task"] == task]
                if mode == "cost":  # the fit's cost is the same for every batch mode: the mean
                    byv: dict[str, list[float]] = defaultdict(list)
                    rec: dict[str, float] = {}
                    for r in rs:
                        c = r["value"] if axis != "tau" else str(r["prefix length tau"])
                        byv[c].append(r["fit wall time (s)"])
                        rec[c] = r["recorded steps"]
                    cs = sorted(byv, key=_value_key)
                    ax.plot([xpos[c] for c in cs], [float(np.nanmean(byv[c])) for c in cs], marker=mk, color="k",
                            lw=1, label=f"{task}: fit wall time")
                    if tw is not None:
                        tw.plot([xpos[c] for c in cs], [rec[c] for c in cs], marker=mk, color="#9467bd", ls="--",
                                lw=1, label=f"{task}: recorded steps")
                    continue
                cs = sorted(rs, key=lambda r: _value_key(r["value"] if axis != "tau" else str(r["prefix length tau"])))
                xs = [xpos[r["value"] if axis != "tau" else str(r["prefix length tau"])] for r in cs]
                ax.plot(xs, [r["relative error"] for r in cs], marker=mk, color=style.COLORS["glocal"], lw=1.2,
                        label=f"{task}: glocal ({estimator})")
                ax.plot(xs, [r["local relative error"] for r in cs], marker=mk, color=style.COLORS["local"], ls=":",
                        lw=1, mfc="none", label=f"{task}: local")
                fallbacks[0] += sum(r["fallbacks"] for r in cs)
                fallbacks[1] += sum(r["n_rows"] for r in cs)
            ax.set_xticks(range(len(cats)), [_fmt_value(c) for c in cats], fontsize=7)
            ax.set_yscale("log")
            style.plain_log_labels(ax.yaxis)
            ax.tick_params(axis="y", which="both", labelsize=7)
            if i == 0:
                ax.set_title(label, fontsize=8)
            if i == len(modes):
                ax.set_xlabel(label, fontsize=7)
            if j == 0:
                ax.set_ylabel("fit wall time (s)" if mode == "cost" else f"relative error\n({mode})")
    taus = sorted({r["prefix length tau"] for r in summ if r["axis"] != "tau"})
    notes.insert(0, f"Error rows: the glocal ({estimator}) estimate of h_T at the longest prefix length tau of each "
                    f"task ({', '.join(map(str, taus))}), mean over window starts; dotted: local h_tau. Markers: "
                    + ", ".join(f"{TASK_MARKERS[n % len(TASK_MARKERS)]} {t}" for n, t in enumerate(tasks)) + ".")
    notes.append(f"Fits that fell back to local (the guards rejected the fit): {fallbacks[0]} of {fallbacks[1]}.")
    style.legend_below(fig, axes, ncol=4)
    style.finish(fig, bottom=0.3)
    style.footnote(fig, notes, y=0.2)
    return style.save(fig, out_stem)
