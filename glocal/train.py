"""Hyperparameter-optimization runs: ``glocal train``.

One run = one task x strategy x seed = one directory holding

* ``config.json``  — the resolved config, task, strategy, seed;
* ``metrics.csv``  — step, run, wall time, train/val/test loss and accuracy, hyperparameters;
* ``hypergrads.jsonl`` — every hypergradient used for an update, with the estimator's diagnostics;
* ``summary.json`` — final metrics, time split, peak memory, device, versions, divergence step;
* ``weights.csv`` (reweight) — learned example weights with the flipped mask;
* ``checkpoint.pt`` while the run is in progress (resumed automatically, removed at the end).

The directory itself (its lock, atomic files, checkpoint safety checks, and the definition of
divergence shared by every strategy) is :mod:`glocal.rundir`'s.

Strategies: ``fixed`` (phi never changes), ``hd`` (hypergradient descent: the local
hypergradient over one step), ``local`` (the hypergradient over a window of tau steps, by
default glocal's window: the paper's local baseline), ``glocal`` (a Koopman/DMD estimate of the global
hypergradient from the window's trajectory of local hypergradients) and ``global`` (M full
training runs from theta_0, one hypergradient update after each). ``random`` and ``tpe``
(black-box baselines) live in :mod:`glocal.search`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch

from glocal.config import ConfigError, base_strategy, check_run, load_config, strategy_options
from glocal.hypergrad import (
    forward_trajectory,
    reverse_hypergradient,
    reverse_window_hypergradients,
    unroll,
)
from glocal.koopman import glocal_estimate
from glocal.rundir import (
    METRIC_COLUMNS,
    CorruptCheckpointError,
    Divergence,
    DivergenceCheck,
    RunDirectory,
    StopRequested,
    all_finite,
    best_val_loss,
    common_summary,
    fingerprint,
)
from glocal.tasks import Task, build_task
from glocal.utils import add_threads_argument, apply_threads, resolve_device, resolve_dtype

__all__ = ["run_experiment", "run_or_reuse", "OuterOptimizer", "choose_engine", "fit_health", "GRADIENT_STRATEGIES",
           "STRATEGIES", "METRIC_COLUMNS", "StopRequested"]

GRADIENT_STRATEGIES = ("fixed", "hd", "local", "glocal", "global")
STRATEGIES = GRADIENT_STRATEGIES + ("random", "tpe", "cmaes")


class OuterOptimizer:
    """The optimizer on phi: Adam or SGD, with optional clipping of the hypergradient norm."""

    def __init__(self, kind: str = "adam", lr: float = 0.05, clip: float | None = None,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> None:
        if kind not in ("adam", "sgd"):
            raise ConfigError(f"strategy_options.outer.optimizer: expected 'adam' or 'sgd', got {kind!r}")
        self.kind, self.lr, self.clip, self.betas, self.eps = kind, float(lr), clip, betas, eps
        self.m: torch.Tensor | None = None
        self.v: torch.Tensor | None = None
        self.t = 0

    def step(self, phi: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Return phi after one descent step along the hypergradient ``h``."""
        h = h.detach()
        if self.clip is not None:
            n = float(torch.linalg.norm(h))
            if n > self.clip:
                h = h * (self.clip / n)
        if self.kind == "sgd":
            return phi - self.lr * h
        if self.m is None:
            self.m = torch.zeros_like(phi)
            self.v = torch.zeros_like(phi)
        self.t += 1
        b1, b2 = self.betas
        self.m = b1 * self.m + (1 - b1) * h
        self.v = b2 * self.v + (1 - b2) * h * h
        m_hat = self.m / (1 - b1**self.t)
        v_hat = self.v / (1 - b2**self.t)
        return phi - self.lr * m_hat / (torch.sqrt(v_hat) + self.eps)

    def state_dict(self) -> dict[str, Any]:
        """Serializable state (tensors and plain numbers only)."""
        return {"m": self.m, "v": self.v, "t": self.t}

    def load_state_dict(self, sd: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`."""
        self.m, self.v, self.t = sd["m"], sd["v"], int(sd["t"])


def choose_engine(engine: str, q: int, tau: int, *, trajectory: bool, record_stride: int = 1) -> str:
    """Pick forward or reverse mode by cost (docs/design.md, the engines).

    Forward mode costs ``tau * q`` Jacobian-vector products for the whole window; reverse mode
    ``tau`` vector-Jacobian products for one hypergradient, or, for the trajectory, one backward
    chain per recorded step: the sum of the recorded offsets (``tau (tau + 1) / 2`` when every
    step is recorded; every ``record_stride``-th step, ending at tau, otherwise).
    ``engine`` other than ``auto`` is returned as is.
    """
    if engine in ("forward", "reverse"):
        return engine
    if engine != "auto":
        raise ConfigError(f"engine: expected auto, forward or reverse, got {engine!r}")
    if trajectory:
        stride = max(1, min(int(record_stride), tau))
        reverse_cost = sum(range(tau - (tau - 1) // stride * stride, tau + 1, stride))
    else:
        reverse_cost = tau
    return "forward" if tau * q <= reverse_cost else "reverse"


class _Run:
    """Mutable state of one run, checkpointed as plain tensors and lists."""

    def __init__(self, task: Task, strategy: str, opts: dict[str, Any], rundir: RunDirectory, fingerprint: str,
                 divergence: DivergenceCheck | None = None, base: str | None = None) -> None:
        self.task, self.strategy, self.opts, self.rundir, self.fp = task, strategy, opts, rundir, fingerprint
        self.base = base or strategy  # the built-in strategy that runs a variant
        self.div = divergence or DivergenceCheck()
        self.eval_every = int(opts.get("eval_every") or max(1, task.steps // 50))
        self.checkpoint_every = int(opts.get("checkpoint_every") or 10)
        self.step = 0
        self.run = 0
        self.outer_steps = 0
        self.state = task.init_state()
        self.theta0 = self.state.clone()
        self.phi = task.init_phi()
        o = opts.get("outer", {})
        self.outer = OuterOptimizer(o.get("optimizer", "adam"), o.get("lr", 0.05), o.get("clip"))
        self.rows: list[dict[str, Any]] = []
        self.hyperlog: list[dict[str, Any]] = []
        self.timers = {"training": 0.0, "hypergradient": 0.0, "dmd": 0.0, "evaluation": 0.0}
        self.wall_offset = 0.0
        self.t_start = time.perf_counter()
        # CPU time of this process (every thread): a cost that a busy shared machine inflates less than wall time
        self.cpu_offset = 0.0
        self.c_start = time.process_time()
        self.divergence: Divergence | None = None
        self.engine: str | None = None
        self.n_updates = 0
        self.last_eval_step = -1

    @property
    def diverged_step(self) -> int | None:
        """Global step at which the run diverged (None: it did not)."""
        return None if self.divergence is None else self.divergence.step

    # ---------------------------------------------------------------- bookkeeping
    def wall(self) -> float:
        return self.wall_offset + time.perf_counter() - self.t_start

    def cpu(self) -> float:
        return self.cpu_offset + time.process_time() - self.c_start

    def log_metrics(self, force: bool = False) -> bool:
        """Evaluate and log a metrics row; True when the training loss shows the run diverged."""
        if not force and self.step == self.last_eval_step:
            return False
        t0 = time.perf_counter()
        row: dict[str, Any] = {"step": self.global_step(), "run": self.run}
        if all_finite(self.state):
            row.update(self.task.evaluate(self.state))
        else:
            row.update({k: float("nan") for k in METRIC_COLUMNS[3:]})
        row.update(self.task.hyper_values(self.phi))
        self.timers["evaluation"] += time.perf_counter() - t0
        row["wall_time"] = round(self.wall(), 4)
        self.rows.append(row)
        self.last_eval_step = self.step
        if self.divergence is None:
            self.divergence = self.div.training_loss(row["step"], row["train_loss"])
        return self.divergence is not None

    def global_step(self) -> int:
        return self.run * self.task.steps + self.step

    def checkpoint(self) -> None:
        self.rundir.save_checkpoint({
            "fingerprint": self.fp,
            "step": self.step, "run": self.run, "outer_steps": self.outer_steps,
            "state": self.state.cpu(), "theta0": self.theta0.cpu(), "phi": self.phi.cpu(),
            "outer": {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in self.outer.state_dict().items()},
            "rows": json.dumps(self.rows), "hyperlog": json.dumps(self.hyperlog),
            "timers": json.dumps(self.timers), "wall": self.wall(), "cpu": self.cpu(),
            "engine": self.engine or "", "n_updates": self.n_updates, "last_eval_step": self.last_eval_step,
        })

    def check_checkpoint(self, ck: Mapping[str, Any]) -> None:
        """Raise :class:`CorruptCheckpointError` when ``ck`` cannot be this run's (missing entries, wrong sizes)."""
        for name, like in (("state", self.state), ("theta0", self.theta0), ("phi", self.phi)):
            t = ck[name]
            if not isinstance(t, torch.Tensor) or t.shape != like.shape:
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise CorruptCheckpointError(f"its {name} has shape {got}, this run's has {tuple(like.shape)}")
        for name, t in ck["outer"].items():
            if isinstance(t, torch.Tensor) and t.shape != self.phi.shape:
                raise CorruptCheckpointError(f"its outer optimizer's {name} has shape {tuple(t.shape)}, "
                                             f"phi has {tuple(self.phi.shape)}")
        step, run = int(ck["step"]), int(ck["run"])
        if not (0 <= step <= self.task.steps and run >= 0 and int(ck["outer_steps"]) >= 0):
            raise CorruptCheckpointError(f"its position (run {run}, step {step}) lies outside this run")
        for name, parse in (("rows", json.loads), ("hyperlog", json.loads), ("timers", json.loads), ("wall", float),
                            ("n_updates", int), ("last_eval_step", int), ("engine", str)):
            parse(ck[name])

    def restore(self, ck: Mapping[str, Any]) -> None:
        dev = self.task.device
        self.step, self.run, self.outer_steps = int(ck["step"]), int(ck["run"]), int(ck["outer_steps"])
        self.state, self.theta0, self.phi = ck["state"].to(dev), ck["theta0"].to(dev), ck["phi"].to(dev)
        self.outer.load_state_dict({k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in ck["outer"].items()})
        self.rows, self.hyperlog = json.loads(ck["rows"]), json.loads(ck["hyperlog"])
        self.timers = json.loads(ck["timers"])
        self.wall_offset, self.t_start = float(ck["wall"]), time.perf_counter()
        self.cpu_offset, self.c_start = float(ck.get("cpu", 0.0)), time.process_time()
        self.engine = ck["engine"] or None
        self.n_updates = int(ck["n_updates"])
        self.last_eval_step = int(ck["last_eval_step"])
        if self.rows:  # the initial training loss, the reference of divergence
            self.div.initial_loss = float(self.rows[0]["train_loss"])

    def diverge(self, div: Divergence) -> None:
        """End the run as diverged at ``div`` (logs the state it reached)."""
        self.log_metrics(force=True)
        self.divergence = div

    def check_divergence(self, hypergradient: torch.Tensor | None = None, name: str = "hypergradient") -> bool:
        """True (and the run marked diverged) when state, phi, ``hypergradient`` or the validation loss is non-finite."""
        step = self.global_step()
        div = self.div.tensors(step, **{"state": self.state, "hyperparameters": self.phi, name: hypergradient})
        if div is None:
            with torch.no_grad():
                div = self.div.value(step, "validation loss", self.task.val_fn()(self.state, self.phi))
        if div is None:
            return False
        self.diverge(div)
        return True

    def record_update(self, h: torch.Tensor, local: torch.Tensor | None, info: dict[str, Any]) -> None:
        rec: dict[str, Any] = {"step": self.global_step(), "run": self.run, "engine": self.engine}
        rec["norm"] = float(torch.linalg.norm(h))
        if local is not None:
            rec["local_norm"] = float(torch.linalg.norm(local))
            denom = float(torch.linalg.norm(h) * torch.linalg.norm(local))
            rec["cosine_to_local"] = float(h @ local) / denom if denom > 0 else None
        rec.update(info)
        if h.numel() <= 64:
            rec["value"] = [float(x) for x in h.detach().cpu()]
            # phi after this update, i.e. the phi of the next window (or meta-iteration): with the record's
            # step and tau, the schedule a run actually used (glocal.nqm.run_record reads it back)
            rec["phi"] = [float(x) for x in self.phi.detach().cpu()]
        self.hyperlog.append(rec)


def record_stride(opts: Mapping[str, Any], tau: int) -> int:
    """Every how many steps the reverse engine records h_t in a window of tau steps (>= 1, <= tau)."""
    return max(1, min(int(opts.get("record_stride") or 1), tau))


def _window_hypergradients(r: _Run, batches: list, trajectory: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(h trajectory or local h, new state) over ``batches`` from r.state with the chosen engine."""
    task = r.task
    step_fn, val_fn = task.dynamics.step, task.val_fn()
    tau = len(batches)
    stride = record_stride(r.opts, tau)
    engine = choose_engine(r.opts.get("engine", "auto"), task.hyper.q, tau, trajectory=trajectory,
                           record_stride=stride)
    r.engine = engine
    chunk = r.opts.get("chunk_size")
    # A window is short: keep its autograd graph (no recomputation; memory tau x activations).
    checkpoint = r.opts.get("checkpoint", "graph")
    if trajectory:
        if engine == "forward":
            res = forward_trajectory(step_fn, val_fn, r.state, r.phi, batches, chunk_size=chunk)
        else:
            # Equally spaced and ending at tau, so the fit sees a time-invariant sampled system.
            rec = list(range(tau - (tau - 1) // stride * stride, tau + 1, stride))
            res = reverse_window_hypergradients(step_fn, val_fn, r.state, r.phi, batches, rec, chunk_size=chunk,
                                                checkpoint="graph" if checkpoint == "graph" else None)
        return res.h, res.final_state
    if engine == "forward":
        res = forward_trajectory(step_fn, val_fn, r.state, r.phi, batches, chunk_size=chunk, record=[tau])
        return res.h[-1], res.final_state
    rr = reverse_hypergradient(step_fn, val_fn, r.state, r.phi, batches, checkpoint=checkpoint)
    return rr.h, rr.final_state


def _run_windowed(r: _Run, bar, stop_after: int | None) -> None:
    """fixed / local / glocal: one training run, phi updated at the end of every window.

    With ``update_every`` = P (local, glocal; default: the window) phi is updated once every P steps: each
    period trains its first P - window steps without hypergradients and ends with one window.
    """
    task, T = r.task, r.task.steps
    window = int(r.opts.get("window", r.eval_every)) if r.base != "fixed" else r.eval_every
    if window < 1:
        raise ConfigError(f"strategy_options.{r.strategy}.window: must be >= 1, got {window}")
    period = int(r.opts.get("update_every") or window) if r.base in ("local", "glocal") else window
    if period < window:
        raise ConfigError(f"strategy_options.{r.strategy}.update_every: the period ({period}) must be at least the "
                          f"window ({window})")
    if r.step == 0 and not r.rows and r.log_metrics(force=True):
        return
    while r.step < T:
        if period > window:  # the period's steps before its window: plain training at the current phi
            plain_end = min(r.step + period - window, T)
            t0 = time.perf_counter()
            r.state = unroll(task.dynamics.step, r.state, r.phi, task.batches(r.step, plain_end))
            r.timers["training"] += time.perf_counter() - t0
            bar.update(plain_end - r.step)
            prev, r.step = r.step, plain_end
            if r.check_divergence() or (r.step // r.eval_every != prev // r.eval_every and r.log_metrics()):
                return
            if r.step >= T:
                break
        end = min(r.step + window, T)
        batches = task.batches(r.step, end)
        bad_h: torch.Tensor | None = None
        bad_name = "hypergradient"
        if r.base == "fixed":
            t0 = time.perf_counter()
            r.state = unroll(task.dynamics.step, r.state, r.phi, batches)
            r.timers["training"] += time.perf_counter() - t0
        else:
            t0 = time.perf_counter()
            traj_or_h, new_state = _window_hypergradients(r, batches, trajectory=(r.base == "glocal"))
            r.timers["hypergradient"] += time.perf_counter() - t0
            r.state = new_state
            if not all_finite(traj_or_h):
                # A diverging inner (or outer) loop: no estimate from it, the run ends below.
                bad_h, bad_name = traj_or_h, "hypergradient trajectory" if r.base == "glocal" else "hypergradient"
            elif r.base in ("hd", "local"):
                h, info, local = traj_or_h, {"estimator": "local", "tau": len(batches)}, None
            else:
                t1 = time.perf_counter()
                # The fitted model steps once per recorded step: extrapolate in those units.
                stride = record_stride(r.opts, len(batches)) if r.engine == "reverse" else 1
                steps_ahead = r.opts.get("steps_ahead") or math.ceil((T - end) / stride)
                est = glocal_estimate(
                    traj_or_h,
                    estimator=r.opts.get("estimator", "limit"),
                    delay=int(r.opts.get("delay", 1)),
                    rank=r.opts.get("rank"),
                    energy=r.opts.get("energy"),
                    steps_ahead=int(steps_ahead),
                    max_condition=float(r.opts.get("max_condition", 1e8)),
                    max_norm_ratio=float(r.opts.get("max_norm_ratio", 10.0)),
                    rank_rule=r.opts.get("rank_rule", "full"),
                    max_growing_share=float(r.opts.get("max_growing_share", 0.5)),
                    collapse_tol=float(r.opts.get("collapse_tol", 1e-3)),
                )
                r.timers["dmd"] += time.perf_counter() - t1
                h, local = est.value, traj_or_h[-1]
                info = est.to_record(include_value=False)
                info.pop("norm", None)
                info["tau"] = len(batches)
            if bad_h is None and not all_finite(h):
                bad_h, bad_name = h, "hypergradient estimate"
            if bad_h is None:
                r.phi = r.outer.step(r.phi, h)
                r.n_updates += 1
                r.record_update(h, local, info)
        bar.update(end - r.step)
        prev, r.step = r.step, end
        r.outer_steps += 1
        if r.check_divergence(bad_h, bad_name):
            return
        if r.step // r.eval_every != prev // r.eval_every:  # the window crossed an evaluation point
            if r.log_metrics():
                return
        if r.outer_steps % r.checkpoint_every == 0 and r.step < T:
            r.checkpoint()
            if stop_after is not None and r.outer_steps >= stop_after:
                raise StopRequested
    r.log_metrics()


def _run_global(r: _Run, bar, stop_after: int | None) -> None:
    """global: M full training runs from theta_0; the hypergradient of run m updates phi for run m + 1."""
    task, T = r.task, r.task.steps
    M = int(r.opts.get("meta_iterations", 10))
    step_fn, val_fn = task.dynamics.step, task.val_fn()
    while r.run < M:
        # Training run m with the current phi (metrics along the way).
        r.state, r.step, r.last_eval_step = r.theta0.clone(), 0, -1
        if r.log_metrics(force=True):
            return
        while r.step < T:
            end = min(r.step + r.eval_every, T)
            t0 = time.perf_counter()
            r.state = unroll(step_fn, r.state, r.phi, task.batches(r.step, end))
            r.timers["training"] += time.perf_counter() - t0
            bar.update(end - r.step)
            r.step = end
            if r.check_divergence() or r.log_metrics():
                return
        if r.run < M - 1:  # the last run's hypergradient would never be used
            batches = task.batches(0, T)
            engine = choose_engine(r.opts.get("engine", "auto"), task.hyper.q, T, trajectory=False)
            r.engine = engine
            t0 = time.perf_counter()
            if engine == "forward":
                h = forward_trajectory(step_fn, val_fn, r.theta0, r.phi, batches, record=[T],
                                       chunk_size=r.opts.get("chunk_size")).h[-1]
            else:
                h = reverse_hypergradient(step_fn, val_fn, r.theta0, r.phi, batches,
                                          checkpoint=r.opts.get("checkpoint")).h
            r.timers["hypergradient"] += time.perf_counter() - t0
            if r.check_divergence(h):
                return
            r.phi = r.outer.step(r.phi, h)
            r.n_updates += 1
            r.record_update(h, None, {"estimator": "global", "tau": T})
        r.run += 1
        r.outer_steps += 1
        if r.run < M:
            r.checkpoint()
            if stop_after is not None and r.outer_steps >= stop_after:
                raise StopRequested
    r.run = M - 1  # report the last run's numbers


def fit_health(hyperlog: list[Mapping[str, Any]]) -> dict[str, Any]:
    """How the glocal fits of a run fared, from the diagnostics of every window's estimate.

    ``windows``; ``fallbacks`` and ``fallbacks_by_reason`` (the reason's text before its colon);
    ``degenerate`` (collapsed fits: every eigenvalue ~0 on a varying trajectory), ``growing``
    (spectral radius above 1, whether or not it fell back); ``degenerate_or_fallback_fraction``;
    ``median_rank`` and ``median_spectral_radius`` over the windows that have them.
    """
    import statistics

    recs = [h for h in hyperlog if h.get("estimator") not in (None, "local", "global")]
    reasons: dict[str, int] = {}
    for h in recs:
        if h.get("fallback"):
            key = str(h.get("reason") or "unknown").split(":")[0]
            reasons[key] = reasons.get(key, 0) + 1
    radii = [float(h["spectral_radius"]) for h in recs
             if isinstance(h.get("spectral_radius"), (int, float)) and math.isfinite(h["spectral_radius"])]
    ranks = [int(h["rank"]) for h in recs if isinstance(h.get("rank"), int)]
    bad = sum(1 for h in recs if h.get("fallback") or h.get("degenerate"))
    return {
        "windows": len(recs),
        "fallbacks": sum(1 for h in recs if h.get("fallback")),
        "fallbacks_by_reason": dict(sorted(reasons.items())),
        "degenerate": sum(1 for h in recs if h.get("degenerate")),
        "growing": sum(1 for h in recs if h.get("growing")),
        "degenerate_or_fallback_fraction": bad / len(recs) if recs else None,
        "median_rank": statistics.median(ranks) if ranks else None,
        "median_spectral_radius": statistics.median(radii) if radii else None,
    }


def run_experiment(
    config: Mapping[str, Any],
    task: str,
    strategy: str,
    seed: int,
    out: str | os.PathLike,
    *,
    progress: bool | None = None,
    stop_after: int | None = None,
    answer_key: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Run one task x strategy x seed into directory ``out`` and return its summary.

    ``config`` must be validated (:func:`glocal.config.load_config`). A checkpoint left by an
    interrupted run with the same config is resumed; the finished run's numbers equal those of
    an uninterrupted one. ``stop_after`` (tests) stops after that many outer steps, right after
    a checkpoint, as a kill would. ``answer_key`` (tasks of kind ``nqm``): the task's
    answer_key.json (``glocal nqm key``); without it the key is computed here (seconds). The run's
    summary then has a section ``nqm`` (:func:`glocal.nqm_runs.run_record`).
    """
    if strategy in ("random", "tpe", "cmaes"):
        from glocal.search import run_search

        return run_search(config, task, strategy, seed, out, progress=progress, stop_after=stop_after,
                          answer_key=answer_key)
    base = base_strategy(config, strategy)
    if base not in GRADIENT_STRATEGIES:
        raise ConfigError(f"strategy: unknown strategy {strategy!r}; expected one of {list(STRATEGIES)}")
    # Every check, and the data, before the run directory is touched.
    device = resolve_device(config.get("device", "auto"))
    dtype = resolve_dtype(config.get("dtype", "float32"))
    opts = strategy_options(config, task, strategy)
    check_run(config, task, strategy)
    torch.manual_seed(seed)
    t = build_task(config, task, seed, device, dtype)
    from glocal.nqm_runs import task_answer_key

    key = task_answer_key(config, t, answer_key)
    resolved = {"config": dict(config), "task": task, "strategy": strategy, "seed": seed, "options": opts}
    fp = fingerprint(resolved)
    if progress is None:
        progress = sys.stderr.isatty()
    with RunDirectory(out, task=task, strategy=strategy, seed=seed) as rd:
        rd.write_config({**resolved, "fingerprint": fp})
        r = _Run(t, strategy, opts, rd, fp, DivergenceCheck.from_config(config), base=base)
        ck = rd.load_checkpoint(fp, check=r.check_checkpoint)
        resumed = ck is not None
        if resumed:
            r.restore(ck)
        from tqdm.auto import tqdm

        total = t.steps * (int(opts.get("meta_iterations", 10)) if base == "global" else 1)
        bar = tqdm(total=total, initial=min(r.global_step(), total), disable=not progress,
                   desc=f"{task}/{strategy}/seed{seed}", unit="step", leave=False)
        try:
            if base == "global":
                _run_global(r, bar, stop_after)
            else:
                _run_windowed(r, bar, stop_after)
        finally:
            bar.close()
        summary = common_summary(
            task=task, strategy=strategy, seed=seed, final=r.rows[-1] if r.rows else {},
            best_val_loss=best_val_loss(r.rows), device=device, dtype=dtype, divergence=r.divergence,
        )
        summary.update({
            "hyperparameters": t.hyper_values(r.phi),
            "time": {"total": r.wall(), "cpu": r.cpu(), **r.timers},
            "engine": r.engine,
            "n_training_runs": (r.run + 1) if base == "global" else 1, "base_strategy": base, "task_kind": t.kind,
            "n_hyper_updates": r.n_updates, "q": t.hyper.q, "steps": t.steps, "resumed": resumed,
            "fallbacks": sum(1 for h in r.hyperlog if h.get("fallback")),
            "options": opts, "config": dict(config), "fingerprint": fp,
        })
        if t.kind == "reweight" and t.data.flipped is not None:
            summary["auc"] = rd.write_weights(t.hyper.constrain(r.phi)["example_weight"], t.data.flipped)
        rd.write_metrics(r.rows)
        rd.write_hypergrads(r.hyperlog)
        sections = {"fit_health": fit_health(r.hyperlog)} if base == "glocal" else {}
        if key is not None:
            from glocal.nqm_runs import run_record

            sections["nqm"] = run_record(t, base, r.hyperlog, r.phi, key, diverged_step=r.diverged_step,
                                         final_loss=summary["final"].get("val_loss"),
                                         n_training_runs=summary["n_training_runs"], wall_time=r.wall(),
                                         cpu_time=r.cpu())
        summary = rd.write_summary(summary, **sections)
        rd.remove_checkpoint()
    return summary


def run_or_reuse(config: Mapping[str, Any], task: str, strategy: str, seed: int, out: str | os.PathLike,
                 *, progress: bool | None = False) -> dict[str, Any]:
    """:func:`run_experiment`, unless ``out`` already holds the finished run of exactly this config, task,
    strategy and seed (its ``summary.json`` carries the same fingerprint): then that run's summary.

    For commands that run several runs in one job (``glocal sensitivity``, ``glocal ablate hpo``): restarted
    after a kill, they redo only the runs that had not finished (and resume those from their checkpoints).
    """
    opts = strategy_options(config, task, strategy)
    fp = fingerprint({"config": dict(config), "task": task, "strategy": strategy, "seed": seed, "options": opts})
    path = os.path.join(os.fspath(out), RunDirectory.SUMMARY)
    try:
        with open(path) as fh:
            summary = json.load(fh)
        if summary.get("fingerprint") == fp:
            return summary
    except (OSError, ValueError):
        pass
    return run_experiment(config, task, strategy, seed, out, progress=progress)


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glocal train``."""
    p.add_argument("--config", help="experiment YAML (default: built-in defaults)")
    p.add_argument("--task", required=True, help="a task of the config (lr, reweight, nqm, ...)")
    p.add_argument("--strategy", required=True,
                   help=f"one of {', '.join(STRATEGIES)}, or a variant declared under strategy_variants")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the run: initialization, batch order and label noise (default: 0)")
    p.add_argument("--out", required=True, help="run directory")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the config's device")
    p.add_argument("--dtype", choices=["float32", "float64"], help="override the config's dtype")
    p.add_argument("--no-progress", action="store_true", help="never show a progress bar")
    p.add_argument("--answer-key", default=None,
                   help="tasks of kind nqm: the task's answer_key.json (glocal nqm key); default: computed in the run")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    """``glocal train``."""
    apply_threads(args.threads)
    overrides: dict[str, Any] = {}
    if args.device:
        overrides["device"] = args.device
    if args.dtype:
        overrides["dtype"] = args.dtype
    config = load_config(args.config, overrides)
    if args.strategy not in STRATEGIES and args.strategy not in (config.get("strategy_variants") or {}):
        raise ConfigError(f"--strategy: unknown strategy {args.strategy!r}; expected one of {list(STRATEGIES)} "
                          "or a variant declared under strategy_variants")
    summary = run_experiment(config, args.task, args.strategy, args.seed, args.out,
                             progress=False if args.no_progress else None, answer_key=args.answer_key)
    print(summary_line(summary))
    return 0


def _fmt(x: Any) -> str:
    return f"{x:.4g}" if isinstance(x, (int, float)) and not isinstance(x, bool) else "n/a"


def summary_line(summary: Mapping[str, Any]) -> str:
    """One line for the terminal: final test loss and accuracy (4 significant digits), wall time, status."""
    f, div = summary["final"], summary.get("divergence")
    if div:
        status = f"diverged at step {div['step']}: {div['reason']}"
    elif summary.get("diverged_step") is not None:
        status = f"diverged at step {summary['diverged_step']}"
    else:
        status = "ok"
    return (f"{summary['task']}/{summary['strategy']}/seed{summary['seed']}: test_loss={_fmt(f.get('test_loss'))} "
            f"test_acc={_fmt(f.get('test_acc'))} time={summary['time']['total']:.1f}s ({status})")
