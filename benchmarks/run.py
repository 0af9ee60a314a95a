"""Speed and memory benchmarks: ``glocal bench`` / ``python -m benchmarks``.

Everything is timed in one process (peak memory on CPU needs a fresh process per measurement:
see :func:`_probe`), float32, one torch thread, on two problems with the same peers:

* ``lr_wd`` (overhead-bound, the issue's benchmark): MLP 64-32-10 on digits, SGD with momentum
  0.9, mini-batches of 128, phi = log of the 3 per-layer learning rates and of the weight decay
  (q = 4). Each step is a few small kernels, so per-call overhead decides the ratios.
* ``cnn`` (compute-bound): a CNN (two 3x3 conv layers of 32 and 64 channels with GroupNorm,
  max-pooling, a linear head) on the 8x8 digits, batches of 256, the same optimizer,
  phi = log of the 5 per-layer learning rates and of the weight decay (q = 6). Convolutions
  dominate: what a user with a larger model will see.

Robust to a loaded machine: the methods are interleaved (each round runs every method once, in
a rotated order), repeated, and summarized by medians with their spread; every ratio is taken
within a round (method / floor of the same round) and then summarized. On CPU the clock is the
calling thread's CPU time (``time.thread_time``: the work of one torch thread, not the time
other jobs held the core); on CUDA, wall time after synchronization. Sections of ``bench.json``:

* ``hypergradient`` — per problem and T: the floor (plain ``torch.optim.SGD`` training, T steps),
  our pure unroll, ``reverse_hypergradient`` (recompute default, ``checkpoint='sqrt'`` and
  ``'graph'``), ``forward_trajectory`` (the last h), and the peers ``higher`` and ``torchopt``
  (each checked against ours before it is timed); peak memory.
* ``q_sweep`` — reverse and forward mode against q: q = 3 (per-layer learning rates), q = 30 and
  300 (per-example weights of a training subset of q examples, full batch, same MLP/optimizer).
* ``updates`` — one hyperparameter update of local (window tau), glocal (window tau: trajectory
  + DMD) and global (T steps), swept over tau, T and q; also written to ``cost.csv``.
* ``hpo`` — whole HPO runs (:func:`glocal.train.run_experiment`) per strategy and task.
* ``compile`` (with ``--compile``) — ``torch.compile`` of the step: compile time and the compiled
  unroll's speed.
"""

from __future__ import annotations

import argparse
import copy
import datetime as _dt
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.nn import functional as F

from benchmarks.peers import higher_hypergradient, param_groups, peer_status, torchopt_hypergradient
from glocal.config import load_config
from glocal.hypergrad import forward_trajectory, reverse_hypergradient, reverse_window_hypergradients, unroll
from glocal.koopman import glocal_estimate
from glocal.tasks import Task, build_task
from glocal.train import choose_engine, run_experiment
from glocal.utils import atomic_write_csv, atomic_write_json, resolve_device, versions

__all__ = ["configure_parser", "run", "main", "SCALES", "COST_COLUMNS", "make_task", "run_benchmark",
           "interleaved", "summarize"]

COST_COLUMNS = ["method", "variable", "value", "seconds_per_update", "seconds_per_run", "q", "engine", "device"]

METHODS = ("floor", "unroll", "reverse", "reverse_sqrt", "reverse_graph", "forward", "higher", "torchopt")

SCALES: dict[str, dict[str, Any]] = {
    "small": {  # CI and the smoke config: seconds
        "repeats": 2,
        "problems": {"lr_wd": {"Ts": [40], "peer_Ts": [40], "memory_Ts": [40], "memory_methods": ["floor", "reverse"],
                               "skip": ["reverse_sqrt"]}},
        "q_T": 30, "qs": [3], "taus": [5, 10], "global_Ts": [30], "cost_qs": [30], "q_tau": 10,
        "hpo": {"steps": 30, "window": 10, "meta_iterations": 10, "repeats": 1, "reweight_q": None,
                "record_strides": [1]},
    },
    "medium": {  # the default pipeline's cost figure: slopes over a few points, a few minutes
        "repeats": 3,
        "problems": {"lr_wd": {"Ts": [25, 50, 100], "peer_Ts": [50], "memory_Ts": [25, 100],
                               "memory_methods": ["floor", "reverse", "forward"], "skip": ["reverse_sqrt"]}},
        "q_T": 30, "qs": [3, 30], "taus": [5, 10, 20, 40], "global_Ts": [25, 50, 100], "cost_qs": [3, 30], "q_tau": 10,
        "hpo": {"steps": 60, "window": 10, "meta_iterations": 10, "repeats": 1, "reweight_q": None,
                "record_strides": [1]},
    },
    "full": {  # benchmarks/README.md's grid
        "repeats": 7,
        "problems": {
            "lr_wd": {"Ts": [50, 100, 200, 400], "peer_Ts": [50, 100, 200, 400], "memory_Ts": [50, 400],
                      "memory_methods": ["floor", "reverse", "reverse_graph", "forward", "higher", "torchopt"],
                      "skip": []},
            "cnn": {"Ts": [10, 25, 50], "peer_Ts": [10, 25, 50], "memory_Ts": [10, 50], "repeats": 5,
                    "memory_methods": ["floor", "reverse", "reverse_graph", "forward", "torchopt"],
                    "skip": ["reverse_sqrt"]},
        },
        "q_T": 100, "qs": [3, 30, 300], "taus": [1, 5, 10, 20, 50, 100], "global_Ts": [50, 100, 200, 400],
        "cost_qs": [3, 30, 300], "q_tau": 20,
        "hpo": {"steps": 200, "window": 20, "meta_iterations": 10, "repeats": 3, "reweight_q": 300,
                "record_strides": [1, 4]},
    },
}

#: meaning of each problem name used in the results
PROBLEMS = {
    "lr_wd": "MLP 64-32-10 on digits, momentum SGD, batch 128; phi = log per-layer lr (3) + log weight decay: q = 4",
    "cnn": "CNN conv3x3(32)-GN-ReLU-pool-conv3x3(64)-GN-ReLU-pool-linear on 8x8 digits, momentum SGD, batch 256; "
           "phi = log per-layer lr (5) + log weight decay: q = 6",
    "lr": "as lr_wd but phi = log per-layer lr only: q = 3",
    "weights": "same MLP/optimizer, full batch on a training subset of q examples; phi = logit per-example weights",
}


# ---------------------------------------------------------------------------------------- problems
def make_task(problem: str, device: torch.device, dtype: torch.dtype, *, q: int | None = None,
              steps: int = 100) -> Task:
    """Build the benchmark problem (see :data:`PROBLEMS`)."""
    opt = {"kind": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
    mlp = {"kind": "mlp", "hidden": [64, 32]}
    if problem in ("lr_wd", "lr", "cnn"):
        tune = ["lr"] if problem == "lr" else ["lr", "weight_decay"]
        model = {"kind": "cnn", "channels": [32, 64]} if problem == "cnn" else mlp
        cfg = load_config(None, {"tasks": {"lr": {"model": model, "optimizer": opt, "tune": tune, "per_layer_lr": True,
                                                   "batch_size": 256 if problem == "cnn" else 128, "steps": steps}}})
        return build_task(cfg, "lr", 0, device, dtype)
    if problem == "weights":
        if not q:
            raise ValueError("problem 'weights' needs q (the number of weighted examples)")
        cfg = load_config(None, {"data": {"n_train": int(q)},
                                 "tasks": {"reweight": {"model": mlp, "optimizer": opt, "label_noise": 0.0,
                                                        "batch_size": None, "steps": steps}}})
        return build_task(cfg, "reweight", 0, device, dtype)
    raise ValueError(f"unknown benchmark problem {problem!r}; expected one of {sorted(PROBLEMS)}")


# ---------------------------------------------------------------------------------------- timing
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def resolve_clock(clock: str, device: torch.device) -> str:
    """``cpu`` (the calling thread's CPU time) or ``wall``; ``auto``: cpu on a CPU device with one
    torch thread (all the work is then this thread's), wall otherwise."""
    if clock == "auto":
        return "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    if clock not in ("cpu", "wall"):
        raise ValueError(f"--clock: expected auto, cpu or wall, got {clock!r}")
    if clock == "cpu" and device.type == "cuda":
        raise ValueError("--clock cpu measures the calling thread's CPU time, which excludes GPU work; use wall")
    return clock


def timed(fn: Callable[[], Any], device: torch.device, clock: str) -> float:
    """Seconds one call of ``fn`` takes on ``clock``."""
    now = time.thread_time if clock == "cpu" else time.perf_counter
    _sync(device)
    t0 = now()
    fn()
    _sync(device)
    return now() - t0


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, device: torch.device, clock: str, *,
                warmup: int = 1) -> dict[str, list[float]]:
    """Times of every method over ``repeats`` rounds; each round calls every method once, the order
    rotated from round to round, so that a slow spell of a loaded machine hits all of them alike."""
    names = list(fns)
    for _ in range(warmup):
        for n in names:
            fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(repeats):
        k = r % len(names)
        for n in names[k:] + names[:k]:
            times[n].append(timed(fns[n], device, clock))
    return times


def _quantiles(xs: list[float]) -> dict[str, float]:
    ys = sorted(xs)
    if len(ys) == 1:
        return {"median": ys[0], "p25": ys[0], "p75": ys[0], "min": ys[0], "max": ys[0]}
    q = statistics.quantiles(ys, n=4, method="inclusive")
    return {"median": statistics.median(ys), "p25": q[0], "p75": q[2], "min": ys[0], "max": ys[-1]}


def summarize(times: dict[str, list[float]], floor: str | None = "floor") -> dict[str, dict[str, Any]]:
    """Median and spread of each method's times, and of its per-round ratio to ``floor``."""
    out: dict[str, dict[str, Any]] = {}
    for n, ts in times.items():
        q = _quantiles(ts)
        e: dict[str, Any] = {"median_s": q["median"], "p25_s": q["p25"], "p75_s": q["p75"],
                             "times_s": [round(t, 6) for t in ts]}
        if floor is not None and floor in times:
            r = _quantiles([t / f for t, f in zip(ts, times[floor])])
            e.update(ratio_to_floor=r["median"], ratio_p25=r["p25"], ratio_p75=r["p75"])
        out[n] = e
    return out


def paired_ratio(times: dict[str, list[float]], num: str, den: str) -> dict[str, float]:
    """Median and interquartile range of num / den over the rounds (a speed-up when num is the peer)."""
    q = _quantiles([a / b for a, b in zip(times[num], times[den])])
    return {"median": q["median"], "p25": q["p25"], "p75": q["p75"]}


def median_time(fn: Callable[[], Any], repeats: int, device: torch.device, *, warmup: int = 1,
                clock: str = "wall") -> dict[str, Any]:
    """Median (and all) times of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    ts = interleaved({"fn": fn}, repeats, device, clock, warmup=warmup)["fn"]
    return {"median_s": statistics.median(ts), "times_s": [round(t, 6) for t in ts]}


class _Floor:
    """Plain training: the model as an ``nn.Module``, ``torch.optim.SGD`` with per-layer groups."""

    def __init__(self, task: Task) -> None:
        dyn = task.dynamics
        self.task = task
        self.model = copy.deepcopy(dyn.model)
        self.theta0 = task.init_state()
        vals = task.hyper.constrain(task.init_phi())
        lr = vals.get("lr", torch.tensor([dyn.optimizer.lr])).detach()
        lr = lr.expand(dyn.n_groups) if lr.numel() == 1 else lr
        wd = float(vals["weight_decay"][0]) if "weight_decay" in vals else dyn.optimizer.weight_decay
        params = list(self.model.parameters())
        groups = [{"params": [params[i] for i in g], "lr": float(lr[k])} for k, g in enumerate(param_groups(dyn))]
        self.opt = torch.optim.SGD(groups, lr=float(lr[0]), momentum=dyn.optimizer.momentum, weight_decay=wd)
        self.weights = vals.get("example_weight")

    def __call__(self, batches: list) -> None:
        with torch.no_grad():
            for p, v in zip(self.model.parameters(), self.task.dynamics.params(self.theta0).values()):
                p.copy_(v)
        self.opt.state.clear()
        for b in batches:
            self.opt.zero_grad()
            out = self.model(b.x)
            if self.weights is None:
                loss = F.cross_entropy(out, b.y)
            else:
                loss = (self.weights[b.index] * F.cross_entropy(out, b.y, reduction="none")).mean()
            loss.backward()
            self.opt.step()


def _methods(task: Task, batches: list) -> dict[str, Callable[[], Any]]:
    """Every timed method on ``task`` over ``batches`` (callables returning h or None)."""
    dyn, s0, phi, vf = task.dynamics, task.init_state(), task.init_phi(), task.val_fn()
    xv, yv = task.data.x_val, task.data.y_val
    T = len(batches)
    floor = _Floor(task)
    out: dict[str, Callable[[], Any]] = {
        "floor": lambda: floor(batches),
        "unroll": lambda: unroll(dyn.step, s0, phi, batches),
        "reverse": lambda: reverse_hypergradient(dyn.step, vf, s0, phi, batches).h,
        "reverse_sqrt": lambda: reverse_hypergradient(dyn.step, vf, s0, phi, batches, checkpoint="sqrt").h,
        "reverse_graph": lambda: reverse_hypergradient(dyn.step, vf, s0, phi, batches, checkpoint="graph").h,
        "forward": lambda: forward_trajectory(dyn.step, vf, s0, phi, batches, record=[T]).h[-1],
        "higher": lambda: higher_hypergradient(dyn, s0, phi, batches, xv, yv),
        "torchopt": lambda: torchopt_hypergradient(dyn, s0, phi, batches, xv, yv),
    }
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.linalg.norm(a.double() - b.double()) / max(float(torch.linalg.norm(b.double())), 1e-300))


# ---------------------------------------------------------------------------------------- memory
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Peak memory of one method call in this (fresh) process; prints nothing."""
    torch.set_num_threads(1)
    device = torch.device(spec["device"])
    task = make_task(spec["problem"], device, torch.float32, q=spec.get("q"))
    fns = _methods(task, task.batches(0, 2))
    fns[spec["method"]]()  # warm up lazy initialisation on a 2-step problem
    fn = _methods(task, task.batches(0, int(spec["T"])))[spec["method"]]
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return {"peak_mb": (torch.cuda.max_memory_allocated(device) - before) / 2**20, "kind": "cuda_max_allocated"}
    base = _rss_kib("VmRSS")
    fn()
    return {"peak_mb": max(0, _rss_kib("VmHWM") - base) / 1024.0, "kind": "cpu_rss_peak_minus_baseline"}


def peak_memory(method: str, T: int, device: torch.device, problem: str = "lr_wd", q: int | None = None) -> dict:
    """Peak extra memory (MiB) of one call of ``method`` over T steps, measured in a child process."""
    spec = {"method": method, "T": T, "device": str(device), "problem": problem, "q": q}
    root = str(Path(__file__).resolve().parent.parent)
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "benchmarks", "--probe", json.dumps(spec)]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=True)
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (subprocess.SubprocessError, ValueError, IndexError) as exc:
        err = getattr(exc, "stderr", "") or ""
        return {"peak_mb": None, "error": f"{type(exc).__name__}: {err.strip()[-300:]}"}


# ---------------------------------------------------------------------------------------- sections
def _log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _fmt_ratio(e: dict[str, Any]) -> str:
    return f"{e['ratio_to_floor']:.2f}x [{e['ratio_p25']:.2f}-{e['ratio_p75']:.2f}]"


def bench_hypergradient(sc: dict, device: torch.device, peers: dict, clock: str) -> list[dict[str, Any]]:
    """T sweep per problem: floor, ours, peers (agreement-checked), memory; all interleaved."""
    rows = []
    for problem, psc in sc["problems"].items():
        task = make_task(problem, device, torch.float32)
        repeats = int(psc.get("repeats", sc["repeats"]))
        for T in psc["Ts"]:
            fns = _methods(task, task.batches(0, T))
            ref = fns["reverse"]()
            timed_fns: dict[str, Callable[[], Any]] = {}
            results: dict[str, dict[str, Any]] = {}
            for name, fn in fns.items():
                if name in psc.get("skip", ()):
                    continue
                entry: dict[str, Any] = {}
                if name in peers:
                    if not peers[name]["available"]:
                        results[name] = {"skipped": peers[name]["reason"]}
                        continue
                    if T not in psc["peer_Ts"]:
                        continue
                    try:
                        entry["rel_err_vs_reverse"] = _rel(fn(), ref)
                    except Exception as exc:  # a peer that fails to run with this torch
                        results[name] = {"skipped": f"{type(exc).__name__}: {exc}"[:300]}
                        continue
                    entry["agrees"] = entry["rel_err_vs_reverse"] < 1e-3
                    if not entry["agrees"]:
                        results[name] = {**entry, "skipped": "disagrees with reverse_hypergradient; not timed"}
                        continue
                elif name not in ("floor", "unroll", "reverse"):
                    entry["rel_err_vs_reverse"] = _rel(fn(), ref)
                results[name] = entry
                timed_fns[name] = fn
            times = interleaved(timed_fns, repeats, device, clock)
            for name, e in summarize(times).items():
                results[name].update(e)
                if name == "forward":
                    q = task.hyper.q
                    results[name].update(per_direction=e["ratio_to_floor"] / q, per_direction_p25=e["ratio_p25"] / q,
                                         per_direction_p75=e["ratio_p75"] / q)
            speedups = {f"{peer}/{ours}": paired_ratio(times, peer, ours)
                        for peer in ("higher", "torchopt") if peer in times
                        for ours in ("reverse_graph", "reverse") if ours in times}
            if "reverse" in times and "reverse_graph" in times:
                speedups["reverse/reverse_graph"] = paired_ratio(times, "reverse", "reverse_graph")
            if T in psc["memory_Ts"]:
                for name in psc["memory_methods"]:
                    if name in times:
                        results[name]["peak_memory"] = peak_memory(name, T, device, problem)
            rows.append({"problem": problem, "q": task.hyper.q, "T": T, "repeats": repeats, "methods": results,
                         "ratios": speedups})
            _log(f"{problem} T={T}: " + ", ".join(f"{k}={_fmt_ratio(v)}" for k, v in results.items()
                                                  if "ratio_to_floor" in v))
    return rows


def _q_task(q: int, device: torch.device) -> tuple[str, Task]:
    if q == 3:
        return "lr", make_task("lr", device, torch.float32)
    if q == 4:
        return "lr_wd", make_task("lr_wd", device, torch.float32)
    return "weights", make_task("weights", device, torch.float32, q=q)


def bench_q(sc: dict, device: torch.device, clock: str) -> list[dict[str, Any]]:
    """Reverse vs forward mode against q at fixed T."""
    rows = []
    T = sc["q_T"]
    for q in sc["qs"]:
        problem, task = _q_task(q, device)
        fns = _methods(task, task.batches(0, T))
        names = ("floor", "unroll", "reverse", "reverse_graph", "forward")
        res = summarize(interleaved({n: fns[n] for n in names}, sc["repeats"], device, clock))
        res["forward"]["per_direction"] = res["forward"]["ratio_to_floor"] / q
        rows.append({"problem": problem, "q": q, "T": T, "methods": res})
        _log(f"q={q} T={T}: " + ", ".join(f"{k}={v['median_s']:.3f}s" for k, v in res.items()))
    return rows


def _window_records(tau: int, stride: int) -> list[int]:
    """The recorded offsets of a strided window, as glocal.train records them (ending at tau)."""
    return list(range(tau - (tau - 1) // stride * stride, tau + 1, stride))


def _update_fn(strategy: str, task: Task, tau: int, T_total: int) -> tuple[Callable[[], Any], str]:
    """One hyperparameter update of ``strategy`` (as glocal.train does it by default) and its engine."""
    dyn, vf, s0, phi = task.dynamics, task.val_fn(), task.init_state(), task.init_phi()
    q = task.hyper.q
    batches = task.batches(0, tau)
    if strategy in ("local", "global"):
        engine = choose_engine("auto", q, tau, trajectory=False)
        if engine == "forward":
            return (lambda: forward_trajectory(dyn.step, vf, s0, phi, batches, record=[tau]).h[-1]), engine
        # glocal.train: local windows keep their graph; global recomputes (memory O(T p)) unless told otherwise
        ckpt = "graph" if strategy == "local" else None
        return (lambda: reverse_hypergradient(dyn.step, vf, s0, phi, batches, checkpoint=ckpt).h), engine
    engine = choose_engine("auto", q, tau, trajectory=True)

    def glocal_update() -> torch.Tensor:
        if engine == "forward":
            traj = forward_trajectory(dyn.step, vf, s0, phi, batches).h
        else:
            traj = reverse_window_hypergradients(dyn.step, vf, s0, phi, batches, checkpoint="graph").h
        return glocal_estimate(traj, estimator="limit", delay=1, steps_ahead=max(1, T_total - tau)).value

    return glocal_update, engine


def bench_updates(sc: dict, device: torch.device, clock: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seconds per hyperparameter update (and composed per run) over tau, T and q; cost.csv rows."""
    M, T_run = sc["hpo"]["meta_iterations"], sc["hpo"]["steps"]
    rows, csv_rows = [], []
    dev = device.type

    def train_fn(task: Task, steps: int) -> Callable[[], Any]:
        s0, phi, batches = task.init_state(), task.init_phi(), task.batches(0, steps)
        return lambda: unroll(task.dynamics.step, s0, phi, batches)

    def add(method: str, variable: str, value: int, task: Task, tau: int, per_run_steps: int) -> None:
        if method == "train":
            t = median_time(train_fn(task, tau), sc["repeats"], device, clock=clock)
            per_update, per_run, engine = None, t["median_s"], "none"
        else:
            fn, engine = _update_fn(method, task, tau, per_run_steps)
            if method == "global":
                both = interleaved({"update": fn, "train": train_fn(task, tau)}, sc["repeats"], device, clock)
                t = {"median_s": statistics.median(both["update"]), "times_s": both["update"]}
                per_update = t["median_s"]
                per_run = M * statistics.median(both["train"]) + (M - 1) * per_update
            else:
                t = median_time(fn, sc["repeats"], device, clock=clock)
                per_update = t["median_s"]
                per_run = math.ceil(per_run_steps / tau) * per_update
        rec = {"method": method, "variable": variable, "value": value, "seconds_per_update": per_update,
               "seconds_per_run": per_run, "q": task.hyper.q, "engine": engine, "device": dev}
        rows.append({**rec, "times_s": t["times_s"]})
        csv_rows.append(rec)

    task4 = make_task("lr_wd", device, torch.float32)
    for T in sc["global_Ts"]:
        add("train", "T", T, task4, T, T)
        add("global", "T", T, task4, T, T)
    for tau in sc["taus"]:
        add("local", "tau", tau, task4, tau, T_run)
        if tau >= 3:  # the DMD fit needs a few snapshots
            add("glocal", "tau", tau, task4, tau, T_run)
    tau = sc["q_tau"]
    for q in sc["cost_qs"]:
        _, task = _q_task(q, device)
        add("local", "q", q, task, tau, T_run)
        add("glocal", "q", q, task, tau, T_run)
        add("global", "q", q, task, T_run, T_run)
    _log(f"updates: {len(rows)} measurements")
    return rows, csv_rows


def _hpo_run(cfg: dict, task_name: str, key: str, summaries: dict) -> Callable[[], None]:
    """One HPO run of strategy ``key`` (``glocal/<stride>`` for glocal) into a temporary directory."""

    def fn() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            summaries[key] = run_experiment(cfg, task_name, key.split("/")[0], 0, tmp, progress=False)

    return fn


def _unroll_fn(step: Callable, s0: torch.Tensor, phi: torch.Tensor, batches: list) -> Callable[[], Any]:
    return lambda: unroll(step, s0, phi, batches)


def bench_hpo(sc: dict, device: torch.device, clock: str) -> list[dict[str, Any]]:
    """Whole HPO runs per strategy with :func:`glocal.train.run_experiment`, interleaved over repeats."""
    h = sc["hpo"]
    opt = {"kind": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
    mlp = {"kind": "mlp", "hidden": [64, 32]}
    problems = [("lr", {"tasks": {"lr": {"model": mlp, "optimizer": opt, "tune": ["lr", "weight_decay"],
                                         "batch_size": 128, "steps": h["steps"]}}})]
    if h.get("reweight_q"):
        problems.append(("reweight", {"data": {"n_train": h["reweight_q"]},
                                      "tasks": {"reweight": {"model": mlp, "optimizer": opt, "label_noise": 0.3,
                                                             "batch_size": None, "steps": h["steps"]}}}))
    strides = list(h.get("record_strides", [1]))
    rows = []
    for task_name, over in problems:
        so = {"local": {"window": h["window"]}, "global": {"meta_iterations": h["meta_iterations"]},
              "glocal": {"window": h["window"]}}
        base = load_config(None, {**over, "device": device.type, "dtype": "float32", "strategy_options": so})
        cfgs = {"fixed": base, "local": base, "global": base}
        for k in strides:
            cfgs[f"glocal/{k}"] = load_config(None, {**over, "device": device.type, "dtype": "float32",
                                                     "strategy_options": {**so, "glocal": {**so["glocal"],
                                                                                           "record_stride": k}}})
        summaries: dict[str, dict[str, Any]] = {}
        runs = {key: _hpo_run(cfg, task_name, key, summaries) for key, cfg in cfgs.items()}
        times = interleaved(runs, h["repeats"], device, clock)
        stats = summarize(times, floor=None)
        res: dict[str, Any] = {}
        for key, e in stats.items():
            s = summaries[key]
            res[key] = {**e, "time_split": s["time"], "engine": s["engine"], "q": s["q"],
                        "n_hyper_updates": s["n_hyper_updates"], "final_val_loss": s["final"].get("val_loss")}
        glocal = {str(k): {"glocal_over_local": paired_ratio(times, f"glocal/{k}", "local"),
                      "global_over_glocal": paired_ratio(times, "global", f"glocal/{k}")} for k in strides}
        rows.append({"task": task_name, "steps": h["steps"], "window": h["window"],
                     "meta_iterations": h["meta_iterations"], "repeats": h["repeats"], "strategies": res,
                     "record_strides": strides, "ratios": glocal})
        _log(f"hpo {task_name}: " + ", ".join(f"{k}={v['median_s']:.2f}s" for k, v in res.items()))
    return rows


def bench_compile(sc: dict, device: torch.device, clock: str) -> list[dict[str, Any]]:
    """``torch.compile`` of the step (no derivatives: plain training): compile time and speed of the unroll."""
    rows = []
    for problem, psc in sc["problems"].items():
        task = make_task(problem, device, torch.float32)
        T = psc["Ts"][0]
        batches, s0, phi = task.batches(0, T), task.init_state(), task.init_phi()
        compiled = torch.compile(task.dynamics.step, dynamic=False)
        t_wall, t_cpu = time.perf_counter(), time.thread_time()
        unroll(compiled, s0, phi, batches[:2])
        _sync(device)
        compile_wall, compile_cpu = time.perf_counter() - t_wall, time.thread_time() - t_cpu
        err = _rel(unroll(compiled, s0, phi, batches), unroll(task.dynamics.step, s0, phi, batches))
        floor = _Floor(task)
        times = interleaved({"floor": lambda f=floor, b=batches: f(b),
                             "unroll": _unroll_fn(task.dynamics.step, s0, phi, batches),
                             "unroll_compiled": _unroll_fn(compiled, s0, phi, batches)},
                            int(psc.get("repeats", sc["repeats"])), device, clock)
        rows.append({"problem": problem, "T": T, "compile_wall_s": compile_wall, "compile_cpu_s": compile_cpu,
                     "rel_err": err, "methods": summarize(times)})
        _log(f"compile {problem}: {compile_wall:.1f} s to compile; "
             f"compiled unroll {rows[-1]['methods']['unroll_compiled']['ratio_to_floor']:.2f}x the floor")
    return rows


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Issue 14's targets on the overhead-bound problem (lr_wd), each with the measured value and met / missed.

    The compute-bound problem (cnn) is reported, not targeted: there every exact reverse engine
    does the same arithmetic, so its ratios to the peers tend to 1 by construction.
    """
    out = []
    rows = [r for r in result["hypergradient"] if r["problem"] == "lr_wd"]
    for row in rows:
        m, T, ratios = row["methods"], row["T"], row["ratios"]
        r = m["unroll"]["ratio_to_floor"]
        out.append({"target": "pure step (unroll) within 1.2x of torch.optim", "T": T, "measured": round(r, 3),
                    "met": r <= 1.2})
        for peer in ("higher", "torchopt"):
            key = f"{peer}/reverse_graph"
            if key in ratios:
                sp = ratios[key]["median"]
                out.append({"target": f"reverse (checkpoint='graph') >= 1.25x faster than {peer}", "T": T,
                            "measured": round(sp, 3), "met": sp >= 1.25})
        if "reverse/reverse_graph" in ratios:
            r = ratios["reverse/reverse_graph"]["median"]
            out.append({"target": "reverse (recompute, the default) within 2x of graph mode", "T": T,
                        "measured": round(r, 3), "met": r <= 2.0})
        if "forward" in m and "per_direction" in m["forward"]:
            r = m["forward"]["per_direction"]
            out.append({"target": "forward_trajectory within 2.5x of the floor per direction", "T": T,
                        "measured": round(r, 3), "met": r <= 2.5})
    mem = [(row["T"], row["methods"].get("forward", {}).get("peak_memory", {}).get("peak_mb")) for row in rows]
    mem = [(T, v) for T, v in mem if v is not None]
    if len(mem) >= 2:
        growth = mem[-1][1] / max(mem[0][1], 1e-9)
        out.append({"target": "forward_trajectory memory flat in T", "T": f"{mem[0][0]}..{mem[-1][0]}",
                    "measured": f"{mem[0][1]:.1f} -> {mem[-1][1]:.1f} MiB", "met": growth <= 1.5})
    for row in result["hpo"]:
        for k, rr in row["ratios"].items():
            a, b = rr["glocal_over_local"]["median"], rr["global_over_glocal"]["median"]
            out.append({"target": f"glocal HPO run <= 1.5x local (same window), task {row['task']}, record_stride {k}",
                        "measured": round(a, 3), "met": a <= 1.5})
            out.append({"target": f"glocal HPO run >= 5x cheaper than global M={row['meta_iterations']}, "
                                  f"task {row['task']}, record_stride {k}", "measured": round(b, 3), "met": b >= 5})
    return out


def _f(x: Any, nd: int = 3) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def _cell(e: dict[str, Any], per_direction: bool = False) -> str:
    if "ratio_to_floor" not in e:
        return "skipped" if "skipped" in e else "-"
    if per_direction and "per_direction" in e:
        return (f"{e['ratio_to_floor']:.2f}x ({e['per_direction']:.2f}x per direction "
                f"[{e['per_direction_p25']:.2f}-{e['per_direction_p75']:.2f}])")
    return _fmt_ratio(e)


def render_markdown(res: dict[str, Any]) -> str:
    """Markdown tables of a ``bench.json`` result (what benchmarks/README.md shows)."""
    clock = {"cpu": "thread CPU time", "wall": "wall time"}[res.get("clock", "wall")]
    lines = [f"Date {res['date']}, device {res['device']}, scale {res['scale']}, clock: {clock}, "
             f"torch {res['versions'].get('torch')}, higher {res['versions'].get('higher')}, "
             f"torchopt {res['versions'].get('torchopt')}, {res['machine']['platform']}, "
             f"{res['machine']['cpu_count']} CPUs, torch threads {res['machine']['torch_threads']}, "
             f"load average at the start {res['machine'].get('loadavg', '-')}.", ""]
    for problem in dict.fromkeys(r["problem"] for r in res["hypergradient"]):
        rows = [r for r in res["hypergradient"] if r["problem"] == problem]
        names = [n for n in METHODS if any(n in r["methods"] for r in rows)]
        lines += [f"**Hypergradient over T steps, `{problem}`** (q = {rows[0]['q']}; {PROBLEMS[problem]}). "
                  f"Median time / floor over {rows[0]['repeats']} interleaved rounds [interquartile range]; "
                  "floor in seconds.", ""]
        lines += ["| T | floor (s) | " + " | ".join(n for n in names if n != "floor") + " |",
                  "|---" * len(names) + "|---|"]
        for r in rows:
            m = r["methods"]
            cells = [_cell(m.get(n, {}), per_direction=n == "forward") for n in names if n != "floor"]
            lines.append(f"| {r['T']} | {m['floor']['median_s']:.3f} | " + " | ".join(cells) + " |")
        keys = [k for k in ("higher/reverse_graph", "torchopt/reverse_graph", "higher/reverse", "torchopt/reverse",
                            "reverse/reverse_graph") if any(k in r["ratios"] for r in rows)]
        if keys:
            lines += ["", f"Paired ratios, `{problem}` (peer time / ours: > 1 means ours is faster; last column: the "
                          "recompute default / graph mode) [interquartile range]:", "",
                      "| T | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
            for r in rows:
                cells = [f"{r['ratios'][k]['median']:.2f} [{r['ratios'][k]['p25']:.2f}-{r['ratios'][k]['p75']:.2f}]"
                         if k in r["ratios"] else "-" for k in keys]
                lines.append(f"| {r['T']} | " + " | ".join(cells) + " |")
        mem_rows = [(r["T"], n, e["peak_memory"]) for r in rows for n, e in r["methods"].items()
                    if "peak_memory" in e]
        if mem_rows:
            Ts = sorted({T for T, _, _ in mem_rows})
            mnames = [n for n in METHODS if any(n == m for _, m, _ in mem_rows)]
            lines += ["", f"Peak extra memory (MiB), `{problem}`:", "",
                      "| method | " + " | ".join(f"T = {T}" for T in Ts) + " |", "|---" * (len(Ts) + 1) + "|"]
            for n in mnames:
                vals = {T: pm for T, m, pm in mem_rows if m == n}
                lines.append(f"| {n} | " + " | ".join(_f(vals.get(T, {}).get("peak_mb"), 1) for T in Ts) + " |")
        lines.append("")
    lines += ["**Against q** (median time / floor [interquartile range]; forward also per direction)", "",
              "| q | problem | T | floor (s) | reverse | reverse_graph | forward | forward / q |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res["q_sweep"]:
        m = r["methods"]
        lines.append(f"| {r['q']} | {r['problem']} | {r['T']} | {m['floor']['median_s']:.3f} | "
                     f"{_fmt_ratio(m['reverse'])} | {_fmt_ratio(m['reverse_graph'])} | {_fmt_ratio(m['forward'])} | "
                     f"{m['forward']['per_direction']:.2f}x |")
    lines += ["", "**One hyperparameter update / one run** (cost.csv; seconds, median)", "",
              "| method | variable | value | q | engine | s / update | s / run |", "|---|---|---|---|---|---|---|"]
    for r in res["updates"]:
        lines.append(f"| {r['method']} | {r['variable']} | {r['value']} | {r['q']} | {r['engine']} | "
                     f"{_f(r['seconds_per_update'])} | {_f(r['seconds_per_run'])} |")
    lines += ["", "**Whole HPO runs** (glocal.train.run_experiment; seconds, median over interleaved rounds; "
                  "ratios paired within a round [interquartile range])", "",
              "| task | q | steps | window | fixed | local | glocal (record_stride) | global (M) | glocal / local | "
              "global / glocal |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["hpo"]:
        st = r["strategies"]
        for k in r["record_strides"]:
            g, rr = st[f"glocal/{k}"], r["ratios"][str(k)]
            gl, gg = rr["glocal_over_local"], rr["global_over_glocal"]
            lines.append(f"| {r['task']} | {g['q']} | {r['steps']} | {r['window']} | {st['fixed']['median_s']:.2f} | "
                         f"{st['local']['median_s']:.2f} ({st['local']['engine']}) | "
                         f"{g['median_s']:.2f} ({g['engine']}, {k}) | "
                         f"{st['global']['median_s']:.2f} ({r['meta_iterations']}) | "
                         f"{gl['median']:.2f} [{gl['p25']:.2f}-{gl['p75']:.2f}] | "
                         f"{gg['median']:.2f} [{gg['p25']:.2f}-{gg['p75']:.2f}] |")
    if res.get("compile"):
        lines += ["", "**torch.compile of the step** (plain training, no derivatives)", "",
                  "| problem | T | compile (s, wall) | unroll | compiled unroll |", "|---|---|---|---|---|"]
        for r in res["compile"]:
            m = r["methods"]
            lines.append(f"| {r['problem']} | {r['T']} | {r['compile_wall_s']:.1f} | {_fmt_ratio(m['unroll'])} | "
                         f"{_fmt_ratio(m['unroll_compiled'])} |")
    lines += ["", "**Targets** (problem `lr_wd`; HPO runs as above)", "", "| target | T | measured | met |",
              "|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['target']} | {t.get('T', '-')} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def run_benchmark(scale: str, device: torch.device, out: Path | None, *, clock: str = "auto",
                  compile_step: bool = False) -> dict[str, Any]:
    """Run every section at ``scale`` on ``device``; write bench.json, cost.csv and bench.md into ``out``."""
    sc = SCALES[scale]
    clock = resolve_clock(clock, device)
    torch.manual_seed(0)
    peers = peer_status()
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "scale": scale, "device": str(device), "dtype": "float32", "clock": clock,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "loadavg": " ".join(f"{x:.1f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else None,
                    "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "versions": {**versions(), **{k: v["version"] for k, v in peers.items()}},
        "peers": peers, "problems": PROBLEMS, "settings": sc,
    }
    result["hypergradient"] = bench_hypergradient(sc, device, peers, clock)
    result["q_sweep"] = bench_q(sc, device, clock)
    result["updates"], csv_rows = bench_updates(sc, device, clock)
    result["hpo"] = bench_hpo(sc, device, clock)
    if compile_step:
        result["compile"] = bench_compile(sc, device, clock)
    result["targets"] = _targets(result)
    result["elapsed_s"] = time.perf_counter() - t0
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "bench.json", result)
        atomic_write_csv(out / "cost.csv", csv_rows, COST_COLUMNS)
        (out / "bench.md").write_text(render_markdown(result))
    return result


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glocal bench``."""
    p.add_argument("--scale", choices=sorted(SCALES), default="small",
                   help="small: one T, seconds (CI); medium: a few T, tau and q (the pipeline's cost figure); "
                        "full: the grid of benchmarks/README.md (both problems), tens of minutes")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", default="results/bench", help="directory for bench.json, cost.csv and bench.md")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--clock", choices=["auto", "cpu", "wall"], default="auto",
                   help="auto: the thread's CPU time on a CPU with one torch thread (robust to other jobs on the "
                        "machine), wall time otherwise")
    p.add_argument("--compile", action="store_true",
                   help="also measure torch.compile of the step (compile time and compiled plain training)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """``glocal bench``."""
    if getattr(args, "probe", None):
        print(json.dumps(_probe(json.loads(args.probe))))
        return 0
    torch.set_num_threads(max(1, int(args.threads)))
    device = resolve_device(args.device)
    res = run_benchmark(args.scale, device, Path(args.out), clock=getattr(args, "clock", "auto"),
                        compile_step=bool(getattr(args, "compile", False)))
    for t in res["targets"]:
        T = f" T={t['T']}" if "T" in t else ""
        print(f"{'met   ' if t['met'] else 'MISSED'} {t['target']}{T}: {t['measured']}")
    print(f"wrote {Path(args.out) / 'bench.json'}, cost.csv and bench.md ({res['elapsed_s']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="glocal speed and memory benchmarks")
    configure_parser(p)
    return run(p.parse_args(argv))
