"""The noisy quadratic model in the pipeline: answer keys, the short-horizon-bias curve, run records.

* :func:`answer_key_document` — the optimum of E[L(theta_T)] of an NQM task over a constant
  learning rate (and momentum, when tuned) and over a piecewise-constant schedule of
  ``answer_key.schedule_phases`` phases: ``glocal nqm key`` writes it to
  ``results/nqm/<task>/answer_key.json`` once per task configuration, and every run of the
  task reads it (``glocal train --answer-key``).
* :func:`bias_document` — the short-horizon-bias curve (:func:`glocal.nqm.short_horizon_bias`):
  ``glocal nqm bias`` writes ``results/nqm/<task>/short_horizon_bias.json`` and ``.csv``.
* :func:`run_record` — what a run of an NQM task adds to its ``summary.json`` (section ``nqm``):
  the expected final loss of the hyperparameters the run actually used (in sampled mode the
  realized loss is one noisy draw), its ratio to both optima, the learned (effective) learning
  rates, and the run's cost in training steps.

The learning rate and the momentum of heavy ball trade off through the effective learning rate
alpha / (1 - beta) (the loss is flat along it), so records and tables compare effective rates.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from glocal.config import ConfigError, load_config, task_config, task_kind
from glocal.nqm import NQMTask, build_nqm_task, phase_lengths, short_horizon_bias
from glocal.utils import add_threads_argument, apply_threads, atomic_write_csv, atomic_write_json, versions

__all__ = ["answer_key_document", "bias_document", "run_record", "read_answer_key", "nqm_tasks", "BIAS_COLUMNS",
           "KEY_FORMAT"]

#: Format tag of answer_key.json (a run refuses a key of another format or another problem).
KEY_FORMAT = "glocal-nqm-answer-key/1"
BIAS_COLUMNS = ["task", "tau", "momentum", "horizon_lr", "horizon_ratio", "greedy_first_lr", "greedy_last_lr",
                "greedy_ratio", "optimum_lr", "optimum_loss", "steps"]


def nqm_tasks(config: Mapping[str, Any]) -> list[str]:
    """The enabled tasks of kind ``nqm`` of a validated config."""
    return [t for t, c in (config.get("tasks") or {}).items()
            if (c or {}).get("enabled", True) and task_kind(config, t) == "nqm"]


def _nqm_task(config: Mapping[str, Any], task: str, seed: int = 0) -> NQMTask:
    if task_kind(config, task) != "nqm":
        raise ConfigError(f"--task: task {task!r} has kind {task_kind(config, task)!r}, not 'nqm'")
    return build_nqm_task(task_config(config, task), seed, "cpu", torch.float64, name=task)


def _problem_record(task: NQMTask) -> dict[str, Any]:
    """What identifies the optimization problem (the same for both modes and every run seed)."""
    p = task.problem
    return {"dim": p.dim, "curvature_power": p.curvature_power, "batch_size": p.batch_size,
            "theta0": {"distribution": p.theta0_kind, "scale": p.theta0_scale, "seed": p.theta0_seed},
            "steps": task.steps, "tune_momentum": "momentum" in task.hyper,
            "momentum": None if "momentum" in task.hyper else task.dynamics.fixed_momentum}


def answer_key_document(config: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The answer key of NQM task ``task``: the constant optimum and the schedule optimum (float64)."""
    t0 = time.perf_counter()
    nt = _nqm_task(config, task)
    k_sched = int((task_config(config, task).get("answer_key") or {}).get("schedule_phases", 10))
    k_sched = min(k_sched, nt.steps)
    const = nt.answer_key(phases=1)
    sched = nt.answer_key(phases=k_sched) if k_sched > 1 else const
    return {"format": KEY_FORMAT, "task": task, "mode": nt.mode, "problem": _problem_record(nt),
            "initial_loss": const.initial_loss, "constant": const.to_record(), "schedule": sched.to_record(),
            "seconds": time.perf_counter() - t0, "versions": versions()}


def read_answer_key(path: str | Path, task: NQMTask | None = None) -> dict[str, Any]:
    """An answer_key.json; with ``task``, refuses (naming the file) a key of another problem."""
    import json

    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"--answer-key: cannot read {str(path)!r} ({type(exc).__name__}: {exc})") from exc
    if not isinstance(doc, dict) or doc.get("format") != KEY_FORMAT:
        raise ValueError(f"--answer-key: {str(path)!r} is not an NQM answer key (format {KEY_FORMAT!r})")
    if task is not None and doc.get("problem") != _problem_record(task):
        raise ValueError(f"--answer-key: {str(path)!r} is the key of another problem ({doc.get('problem')}); "
                         f"this task is {_problem_record(task)}")
    return doc


def bias_momentum(config: Mapping[str, Any], task: str) -> float:
    """Momentum of the short-horizon-bias curve: the configured one, else the task's momentum when it is not
    tuned, else 0 (plain SGD, the setting of Wu et al.'s finding; at the large momentum a tuned task's optimum
    takes, short horizons select rates that vary non-monotonically with tau and the curve says less)."""
    tcfg = task_config(config, task)
    m = (tcfg.get("short_horizon_bias") or {}).get("momentum")
    if m is not None:
        return float(m)
    if "momentum" not in (tcfg.get("tune") or ["lr", "momentum"]):
        return float((tcfg.get("optimizer") or {}).get("momentum", 0.5))
    return 0.0


def bias_document(config: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The short-horizon-bias curve of NQM task ``task`` at the momentum of :func:`bias_momentum`: for every
    horizon tau the constant learning rate minimizing E[L(theta_tau)] from theta_0, and the greedy schedule
    with window tau (the ideal local tuner), against the long-horizon optimum at that momentum."""
    t0 = time.perf_counter()
    nt = _nqm_task(config, task)
    taus_cfg = list((task_config(config, task).get("short_horizon_bias") or {}).get("taus") or [1, 10, 100])
    taus = sorted({int(x) for x in taus_cfg if int(x) <= nt.steps})
    if not taus:
        raise ConfigError(f"tasks.{task}.short_horizon_bias.taus: every tau {taus_cfg} exceeds steps = {nt.steps}")
    mom = bias_momentum(config, task)
    out = short_horizon_bias(nt.problem, nt.steps, taus, momentum=mom)
    out.update({"task": task, "mode": nt.mode, "problem": _problem_record(nt), "taus_dropped":
                sorted({int(x) for x in taus_cfg} - set(taus)), "seconds": time.perf_counter() - t0,
                "versions": versions()})
    return out


def bias_rows(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The rows of short_horizon_bias.csv (:data:`BIAS_COLUMNS`)."""
    opt = doc["optimum"]
    return [{"task": doc["task"], "tau": r["tau"], "momentum": doc["momentum"], "horizon_lr": r["horizon_lr"],
             "horizon_ratio": r["horizon_ratio"], "greedy_first_lr": r.get("greedy_first_lr"),
             "greedy_last_lr": r.get("greedy_last_lr"), "greedy_ratio": r.get("greedy_ratio"),
             "optimum_lr": opt["lr"][0], "optimum_loss": opt["loss"], "steps": doc["steps"]} for r in doc["rows"]]


# ---------------------------------------------------------------------------------------- run records
def used_schedule(task: NQMTask, base: str, hyperlog: Sequence[Mapping[str, Any]], final_phi: torch.Tensor,
                  reached: int | None = None) -> list[tuple[int, int, torch.Tensor]]:
    """(start, stop, phi) segments of the hyperparameters a run trained with, over steps 0..T.

    ``hd``, ``local`` and ``glocal`` change phi at the end of every window: their hypergradient log has one
    record per window (its start ``step``, length ``tau`` and the ``phi`` after the update, which the next
    window uses). ``global`` reports its last training run (final phi); ``fixed`` and the searches train
    with one phi. ``reached``: the last step a diverged windowed run reached (its segments stop there).
    """
    dtype = torch.float64
    if base not in ("hd", "local", "glocal"):
        return [(0, task.steps, final_phi.detach().to(dtype))]
    phi = task.init_phi().detach().to(dtype)
    segments: list[tuple[int, int, torch.Tensor]] = []
    t = 0
    for rec in sorted((h for h in hyperlog if "tau" in h), key=lambda h: int(h["step"])):
        start, tau = int(rec["step"]), int(rec["tau"])
        if start != t or "phi" not in rec:
            raise ValueError(f"hypergradient log: window at step {start} (expected {t}) without a gap-free record "
                             "of phi; cannot reconstruct the schedule the run used")
        segments.append((start, start + tau, phi))
        phi = torch.tensor(rec["phi"], dtype=dtype)
        t = start + tau
    stop = task.steps if reached is None else min(int(reached), task.steps)
    if t < stop:
        segments.append((t, stop, phi))
    return segments


def _effective(lrs: Sequence[float], momentum: float) -> list[float]:
    return [a / (1.0 - momentum) for a in lrs]


def run_record(task: NQMTask, base: str, hyperlog: Sequence[Mapping[str, Any]], final_phi: torch.Tensor,
               key: Mapping[str, Any], *, diverged_step: int | None = None, final_loss: float | None = None,
               n_training_runs: int = 1, wall_time: float | None = None, cpu_time: float | None = None
               ) -> dict[str, Any]:
    """Section ``nqm`` of a run's summary: expected final loss of the schedule the run used and its ratio to
    the constant and the schedule optimum of ``key`` (an answer-key document), the learned learning rates and
    momentum (and effective rates alpha / (1 - beta)), their step-weighted mean over training, and the cost."""
    const, sched = key["constant"], key["schedule"]
    rec: dict[str, Any] = {"mode": task.mode, "optimum_constant_loss": const["loss"],
                           "optimum_schedule_loss": sched["loss"], "optimum_schedule_phases": sched["phases"],
                           "optimum_constant_effective_lr": const["effective_lr"][0],
                           "optimum_constant_lr": const["lr"][0], "optimum_constant_momentum": const["momentum"],
                           "optimum_schedule_effective_lr": sched["effective_lr"], "initial_loss": key["initial_loss"]}
    lrs, mom = task.schedule(final_phi.detach())
    rec.update({"final_lr": lrs, "final_momentum": mom, "final_effective_lr": _effective(lrs, mom)})
    if diverged_step is not None:
        reached = diverged_step - (n_training_runs - 1) * task.steps if base == "global" else diverged_step
        expected = math.inf
    else:
        reached, expected = None, None
    segs = used_schedule(task, base, hyperlog, final_phi, reached)
    # per-step effective learning rate of the schedule used: its step-weighted mean and its value per phase
    per_step: list[float] = []
    for start, stop, phi in segs:
        p_lrs, p_mom = task.schedule(phi)
        per_step += [p_lrs[task.dynamics.phase(k)] / (1.0 - p_mom) for k in range(start, stop)]
    if expected is None:
        expected = task.expected_loss_of_segments(segs)
    merged: list[list[float]] = []  # [start, stop, effective lr] of the schedule used, equal neighbours merged
    for k, v in enumerate(per_step):
        if merged and merged[-1][2] == v and merged[-1][1] == k:
            merged[-1][1] = k + 1
        else:
            merged.append([k, k + 1, v])
    lengths = phase_lengths(task.steps, 10 if task.steps >= 10 else 1)
    tenths, at = [], 0
    for L in lengths:
        chunk = per_step[at: at + L]
        tenths.append(sum(chunk) / len(chunk) if chunk else None)
        at += L
    finite = math.isfinite(expected)
    rec.update({
        "expected_final_loss": expected if finite else None,
        "realized_final_loss": final_loss,
        "ratio_to_constant_optimum": expected / const["loss"] if finite else None,
        "ratio_to_schedule_optimum": expected / sched["loss"] if finite else None,
        "mean_effective_lr": sum(per_step) / len(per_step) if per_step else None,
        "effective_lr_by_tenth": tenths,
        "effective_lr_schedule": merged,
        "n_segments": len(segs),
        "training_steps": n_training_runs * task.steps,
        "wall_time": wall_time,
        "cpu_time": cpu_time,
        "diverged": diverged_step is not None,
    })
    return rec


# ---------------------------------------------------------------------------------------- CLI

def task_answer_key(config: Mapping[str, Any], task: Any, path: str | os.PathLike | None) -> dict[str, Any] | None:
    """The answer key of an NQM task for a run of it (read from ``path``, else computed); None for a task
    of another kind, whose runs take no ``--answer-key``."""
    if getattr(task, "kind", None) != "nqm":
        if path is not None:
            raise ConfigError(f"--answer-key: task {task.name!r} is not of kind nqm")
        return None
    return read_answer_key(path, task) if path is not None else answer_key_document(config, task.name)

def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glocal nqm``."""
    p.add_argument("what", choices=["key", "bias"],
                   help="key: the answer key (answer_key.json); bias: the short-horizon-bias curve (.json and .csv)")
    p.add_argument("--config", help="experiment YAML (default: built-in defaults)")
    p.add_argument("--task", required=True, help="a task of kind nqm")
    p.add_argument("--out", required=True, help="output file (.json; bias also writes the .csv next to it)")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    """``glocal nqm key|bias``."""
    apply_threads(args.threads)
    config = load_config(args.config)
    task_config(config, args.task)
    out = Path(args.out)
    if args.what == "key":
        doc = answer_key_document(config, args.task)
        atomic_write_json(out, {**doc, "config": task_config(config, args.task)})
        c, s = doc["constant"], doc["schedule"]
        print(f"nqm key {args.task}: constant optimum E[L_T] = {c['loss']:.4g} (effective lr "
              f"{c['effective_lr'][0]:.4g}), {s['phases']}-phase schedule {s['loss']:.4g}; "
              f"{doc['seconds']:.1f}s -> {out}", file=sys.stderr)
        return 0
    doc = bias_document(config, args.task)
    atomic_write_json(out, {**doc, "config": task_config(config, args.task)})
    atomic_write_csv(out.with_suffix(".csv"), bias_rows(doc), BIAS_COLUMNS)
    print(f"nqm bias {args.task}: {len(doc['rows'])} horizons, {doc['seconds']:.1f}s -> {out}", file=sys.stderr)
    return 0
