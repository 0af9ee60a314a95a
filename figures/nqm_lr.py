"""The noisy quadratic model: the learning rate each strategy learned against the optimum, and the final
expected loss over the optimum against wall time (one row per NQM task, i.e. per mode).

Everything comes from the runs' summaries (section ``nqm``, written against the task's answer key): the
effective learning rate lr / (1 - momentum) of the schedule the run trained with (per step), the optimum's
constant and K-phase schedule, and the expected final loss of the run's schedule divided by the constant
optimum's (in sampled mode the expected loss of the schedule the run chose, not its noisy realized loss).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import Run, to_float

SEARCHES = ("random", "tpe")
GOAL = 1.1  #: the goal: glocal within 10% of the optimum's loss


def phase_lengths(steps: int, phases: int) -> list[int]:
    """Steps per phase of a K-phase schedule, as :func:`glocal.nqm.phase_lengths` splits them."""
    counts = [0] * phases
    for t in range(steps):
        counts[min(t * phases // steps, phases - 1)] += 1
    return counts


def per_step_lr(run: Run) -> np.ndarray | None:
    """The effective learning rate of every training step of the run's schedule (None without a record)."""
    sched = (run.summary.get("nqm") or {}).get("effective_lr_schedule")
    if not sched:
        return None
    stop = int(max(s[1] for s in sched))
    out = np.full(stop, np.nan)
    for start, end, v in sched:
        out[int(start):int(end)] = float(v)
    return out


def _key(runs: Mapping[str, Mapping[int, Run]]) -> dict[str, Any]:
    for by_seed in runs.values():
        for r in by_seed.values():
            n = r.summary.get("nqm")
            if n:
                return n
    return {}


def _steps(runs: Mapping[str, Mapping[int, Run]]) -> int:
    for by_seed in runs.values():
        for r in by_seed.values():
            if r.summary.get("steps"):
                return int(r.summary["steps"])
    return 0


def plot_nqm_learned_lr(runs: Mapping[str, Mapping[str, Mapping[int, Run]]], tasks: Sequence[str],
                        out_stem: str | Path, seeds: Sequence[int] | Mapping[str, Sequence[int]] | None = None,
                        strategies: Sequence[str] | None = None) -> dict[str, Any]:
    """Per NQM task (rows): left, the effective learning rate of each strategy (mean over seeds) against the
    training step with the constant and the schedule optimum; right, final expected loss / optimum against
    the strategy's wall time (mean over seeds, bars min-max), with the goal (1.1) and the schedule optimum.
    ``seeds``: the expected seeds, of every task or per task (a mapping)."""
    tasks = list(tasks)
    fig, axes = style.subplots(max(1, len(tasks)), 2, w=4.6, h=3.0)
    data: dict[str, Any] = {"points": {}, "notes": []}
    notes: list[str] = []
    if not tasks:
        style.empty(axes[0, 0], "no task of kind nqm in this configuration")
        style.empty(axes[0, 1], "no task of kind nqm in this configuration")
    for row, task in enumerate(tasks):
        tr = runs.get(task, {})
        strats = style.order(strategies or list(tr))
        expected = seeds.get(task) if isinstance(seeds, Mapping) else seeds
        key = _key(tr)
        ax_lr, ax_loss = axes[row, 0], axes[row, 1]
        mode = key.get("mode", "?")
        ax_lr.set_label(f"{task}/lr")
        ax_loss.set_label(f"{task}/loss")
        ax_lr.set_title(f"{task} ({mode} mode): learned effective learning rate")
        ax_loss.set_title(f"{task} ({mode} mode): final expected loss / optimum")
        ax_lr.set_xlabel("training step")
        ax_lr.set_ylabel("lr / (1 - momentum)")
        ax_loss.set_xlabel("wall time of the strategy (s)")
        ax_loss.set_ylabel("E[L_T] / optimum (constant lr)")
        if not key:
            style.empty(ax_lr, f"no NQM run summary for task {task}")
            style.empty(ax_loss, f"no NQM run summary for task {task}")
            continue
        T = _steps(tr)
        for strat in strats:
            by_seed = {s: r for s, r in tr.get(strat, {}).items() if r.summary.get("nqm")}
            if not by_seed:
                continue
            c, m = style.color(strat), style.MARKERS.get(strat, "o")
            lab = strat + (f" ({len(by_seed)}/{len(expected)} seeds)" if expected and len(by_seed) < len(expected)
                           else "")
            lrs = [per_step_lr(r) for r in by_seed.values()]
            lrs = [x for x in lrs if x is not None]
            if lrs:
                n = max(len(x) for x in lrs)
                arr = np.full((len(lrs), n), np.nan)
                for i, x in enumerate(lrs):
                    arr[i, : len(x)] = x
                with np.errstate(all="ignore"):
                    mean = np.nanmean(arr, 0)
                x = np.arange(n + 1)
                ax_lr.plot(x, np.r_[mean, mean[-1]], drawstyle="steps-post", color=c,
                           ls="--" if strat in SEARCHES else "-", label=lab)
            ratios = [to_float(r.summary["nqm"].get("ratio_to_constant_optimum")) for r in by_seed.values()]
            walls = [to_float((r.summary.get("time") or {}).get("total")) for r in by_seed.values()]
            div = [s for s, r in by_seed.items() if r.summary["nqm"].get("diverged")]
            if div:
                notes.append(f"{task}: {strat} diverged on seed(s) {', '.join(map(str, div))} (left out of the mean)")
            ok = [(w, q) for w, q in zip(walls, ratios) if np.isfinite(w) and np.isfinite(q)]
            if not ok:
                continue
            w, q = np.array(ok).T
            wm, qm = float(w.mean()), float(q.mean())
            ax_loss.errorbar([wm], [qm], xerr=[[wm - w.min()], [w.max() - wm]], yerr=[[qm - q.min()], [q.max() - qm]],
                             fmt=m, color=c, ms=6, capsize=2, lw=1, label=lab)
            data["points"][(task, strat)] = (wm, qm)
        opt = key.get("optimum_constant_effective_lr")
        sched = key.get("optimum_schedule_effective_lr") or []
        if opt:
            ax_lr.axhline(opt, color="black", ls="--", lw=1.2, label="optimum, constant learning rate")
        if sched and T:
            edges = np.r_[0, np.cumsum(phase_lengths(T, len(sched)))]
            ax_lr.plot(edges, np.r_[sched, sched[-1]], drawstyle="steps-post", color="black", ls=":", lw=1.5,
                       label=f"optimum, {len(sched)}-phase schedule")
        ax_lr.set_yscale("log")
        style.plain_log_labels(ax_lr.yaxis)
        ax_loss.axhline(1.0, color="black", ls="--", lw=1.2, label="optimum, constant learning rate")
        r_s = key.get("optimum_schedule_loss", np.nan) / key.get("optimum_constant_loss", np.nan)
        if np.isfinite(r_s):
            ax_loss.axhline(r_s, color="black", ls=":", lw=1.5,
                            label=f"optimum, {key.get('optimum_schedule_phases')}-phase schedule")
        ax_loss.axhline(GOAL, color="#888888", ls="-.", lw=1.0, label="10% above the optimum (the goal)")
        ax_loss.set_xscale("log")
        ax_loss.set_yscale("log")
        style.plain_log_labels(ax_loss.yaxis)
        style.plain_log_labels(ax_loss.xaxis)
    style.finish(fig, bottom=0.2 if len(tasks) > 1 else 0.33)
    style.legend_below(fig, axes, ncol=4)
    style.footnote(fig, notes)
    data["notes"] = notes
    data.update(style.save(fig, out_stem))
    return data
