"""Short-horizon bias on the noisy quadratic model (Wu, Ren, Liao & Grosse 2018): the learning rate that
tuning with a horizon of tau steps selects, against the long-horizon optimum (one row per NQM task).

Reads ``results/nqm/<task>/short_horizon_bias.json`` (``glocal nqm bias``): for every tuning horizon tau the
constant learning rate minimizing E[L(theta_tau)] from theta_0, and the greedy schedule with window tau (in
every window the learning rate minimizing the expected loss at the window's end: the ideal local tuner),
both at the curve's fixed momentum, with the expected final loss of training all T steps with them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np

from figures import style


def greedy_per_step(lrs: Sequence[float], tau: int, steps: int) -> np.ndarray:
    """The greedy schedule's learning rate at every step (window k of tau steps uses lrs[k])."""
    out = np.repeat(np.asarray(lrs, dtype=float), tau)[:steps]
    return np.r_[out, np.full(max(0, steps - len(out)), out[-1] if len(out) else np.nan)]


def plot_nqm_short_horizon_bias(docs: Mapping[str, Mapping[str, Any]], tasks: Sequence[str],
                                out_stem: str | Path) -> dict[str, Any]:
    """Per NQM task (rows): the learning rate selected against the tuning horizon tau (left), the greedy
    schedules over training (middle), and the expected final loss of both over the optimum (right)."""
    tasks = list(tasks)
    fig, axes = style.subplots(max(1, len(tasks)), 3, w=3.6, h=2.9)
    data: dict[str, Any] = {"rows": {}}
    notes: list[str] = []
    if not tasks:
        for ax in axes[0]:
            style.empty(ax, "no task of kind nqm in this configuration")
    for i, task in enumerate(tasks):
        ax_lr, ax_sched, ax_loss = axes[i]
        for ax, what in ((ax_lr, "lr"), (ax_sched, "schedule"), (ax_loss, "loss")):
            ax.set_label(f"{task}/{what}")
        doc = docs.get(task) or {}
        if not doc.get("rows"):
            for ax in axes[i]:
                style.empty(ax, f"no short-horizon-bias curve for task {task}\n(results/nqm/{task}/"
                                "short_horizon_bias.json)")
            continue
        rows = sorted(doc["rows"], key=lambda r: r["tau"])
        taus = np.array([r["tau"] for r in rows], dtype=float)
        T, mom = int(doc["steps"]), float(doc["momentum"])
        opt_lr, opt_loss = doc["optimum"]["lr"][0], doc["optimum"]["loss"]
        data["rows"][task] = rows
        ax_lr.set_title(f"{task}: selected learning rate (momentum {mom:.3g})")
        ax_lr.plot(taus, [r["horizon_lr"] for r in rows], "o-", color=style.COLORS["local"],
                   label="constant lr minimizing the expected loss after tau steps")
        if "greedy_first_lr" in rows[0]:
            ax_lr.plot(taus, [r["greedy_first_lr"] for r in rows], "s--", color="#ff7f0e",
                       label="greedy schedule, first window")
            ax_lr.plot(taus, [r["greedy_last_lr"] for r in rows], "v:", color="#d62728",
                       label="greedy schedule, last window")
        ax_lr.axhline(opt_lr, color="black", ls="--", lw=1.2, label=f"long-horizon optimum (T = {T} steps)")
        ax_lr.set_xlabel("tuning horizon tau (steps)")
        ax_lr.set_ylabel("learning rate")
        ax_sched.set_title(f"{task}: greedy schedules with window tau")
        cmap = matplotlib.colormaps["viridis"]
        for k, r in enumerate(rows):
            if "greedy_lrs" not in r:
                continue
            y = greedy_per_step(r["greedy_lrs"], int(r["tau"]), T)
            ax_sched.plot(np.arange(T + 1), np.r_[y, y[-1]], drawstyle="steps-post", lw=1.1,
                          color=cmap(k / max(1, len(rows) - 1)), label=f"_tau {r['tau']}")
            ax_sched.annotate(f"tau {r['tau']}", (T, y[-1]), fontsize=6, xytext=(2, 0), textcoords="offset points",
                              va="center", color=cmap(k / max(1, len(rows) - 1)))
        ax_sched.axhline(opt_lr, color="black", ls="--", lw=1.2)
        ax_sched.set_xlabel("training step")
        ax_sched.set_ylabel("learning rate (greedy, window tau)")
        ax_loss.set_title(f"{task}: final expected loss / optimum")
        ax_loss.plot(taus, [r["horizon_ratio"] for r in rows], "o-", color=style.COLORS["local"],
                     label="constant lr minimizing the expected loss after tau steps")
        if "greedy_ratio" in rows[0]:
            ax_loss.plot(taus, [r["greedy_ratio"] for r in rows], "s--", color="#ff7f0e",
                         label="greedy schedule")
        ax_loss.axhline(1.0, color="black", ls="--", lw=1.2, label=f"long-horizon optimum (T = {T} steps)")
        ax_loss.set_xlabel("tuning horizon tau (steps)")
        ax_loss.set_ylabel("final expected loss / optimum")
        for ax in (ax_lr, ax_sched, ax_loss):
            ax.set_yscale("log")
            style.plain_log_labels(ax.yaxis)
        for ax in (ax_lr, ax_loss):
            ax.set_xscale("log")
            style.ticks_at(ax, taus)
        if doc.get("taus_dropped"):
            notes.append(f"{task}: horizons {doc['taus_dropped']} exceed the {T} training steps (left out)")
        notes.append(f"{task}: long-horizon optimum lr {opt_lr:.3g}, expected final loss {opt_loss:.4g} "
                     f"(momentum {mom:.3g})")
    style.finish(fig, bottom=0.22 if len(tasks) > 1 else 0.35)
    style.legend_below(fig, axes, ncol=2)
    style.footnote(fig, notes)
    data["notes"] = notes
    data.update(style.save(fig, out_stem))
    return data
