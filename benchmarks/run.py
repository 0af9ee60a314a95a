"""Speed and memory benchmarks: ``glocal bench`` / ``python -m benchmarks``.

Everything is measured in one process (except peak memory on CPU, which needs a fresh process
per measurement: see :func:`_probe`), on one problem: the ``lr`` task's MLP 64-32-10 on digits,
SGD with momentum 0.9, mini-batches of 128, float32, tuning the per-layer learning rates and
the weight decay on a log scale (q = 4). Sections of ``bench.json``:

* ``hypergradient`` — for each T: the floor (plain ``torch.optim.SGD`` training, T steps), our
  pure unroll, ``reverse_hypergradient`` (default, ``checkpoint='sqrt'`` and ``'graph'``),
  ``forward_trajectory`` (the last h only, and every h of the window), and the peers ``higher``
  and ``torchopt`` (each checked against ours before it is timed); medians, ratios to the floor,
  peak memory.
* ``q_sweep`` — reverse and forward mode against q: q = 3 (per-layer learning rates), q = 30 and
  300 (per-example weights of a training subset of q examples, full batch, same MLP/optimizer).
* ``updates`` — one hyperparameter update of local (window tau), glocal (window tau: trajectory
  + DMD) and global (T steps), swept over tau, T and q; also written to ``cost.csv``.
* ``hpo`` — whole HPO runs (:func:`glocal.train.run_experiment`) per strategy.
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

__all__ = ["configure_parser", "run", "main", "SCALES", "COST_COLUMNS", "make_task", "run_benchmark"]

COST_COLUMNS = ["method", "variable", "value", "seconds_per_update", "seconds_per_run", "q", "engine", "device"]

SCALES: dict[str, dict[str, Any]] = {
    "small": {
        "repeats": 2, "Ts": [40], "peer_Ts": [40], "memory_Ts": [40], "q_T": 30, "qs": [3],
        "taus": [5, 10], "global_Ts": [30], "cost_qs": [30], "q_tau": 10,
        "hpo": {"steps": 30, "window": 10, "meta_iterations": 10, "repeats": 1, "reweight_q": None},
        "memory_methods": ["floor", "reverse"], "skip": ["reverse_sqrt", "forward_all"],
    },
    "medium": {  # the default pipeline's cost figure: slopes over a few points, a couple of minutes
        "repeats": 2, "Ts": [25, 50, 100], "peer_Ts": [50], "memory_Ts": [25, 100], "q_T": 30, "qs": [3, 30],
        "taus": [5, 10, 20, 40], "global_Ts": [25, 50, 100], "cost_qs": [3, 30], "q_tau": 10,
        "hpo": {"steps": 60, "window": 10, "meta_iterations": 10, "repeats": 1, "reweight_q": None},
        "memory_methods": ["floor", "reverse", "forward"], "skip": ["reverse_sqrt", "forward_all"],
    },
    "full": {
        "repeats": 3, "Ts": [50, 100, 200, 400], "peer_Ts": [50, 100, 200, 400], "memory_Ts": [50, 400],
        "q_T": 100, "qs": [3, 30, 300], "taus": [1, 5, 10, 20, 50, 100], "global_Ts": [50, 100, 200, 400],
        "cost_qs": [3, 30, 300], "q_tau": 20,
        "hpo": {"steps": 200, "window": 20, "meta_iterations": 10, "repeats": 1, "reweight_q": 300},
        "memory_methods": ["floor", "reverse", "reverse_graph", "forward", "torchopt"], "skip": ["forward_all"],
    },
}

#: meaning of each problem name used in the results
PROBLEMS = {
    "lr_wd": "MLP 64-32-10 on digits, momentum SGD, batch 128; phi = log per-layer lr (3) + log weight decay: q = 4",
    "lr": "as lr_wd but phi = log per-layer lr only: q = 3",
    "weights": "same MLP/optimizer, full batch on a training subset of q examples; phi = logit per-example weights",
}


# ---------------------------------------------------------------------------------------- problems
def make_task(problem: str, device: torch.device, dtype: torch.dtype, *, q: int | None = None,
              steps: int = 100) -> Task:
    """Build the benchmark problem (see :data:`PROBLEMS`)."""
    opt = {"kind": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
    mlp = {"kind": "mlp", "hidden": [64, 32]}
    if problem in ("lr_wd", "lr"):
        tune = ["lr", "weight_decay"] if problem == "lr_wd" else ["lr"]
        cfg = load_config(None, {"tasks": {"lr": {"model": mlp, "optimizer": opt, "tune": tune, "per_layer_lr": True,
                                                   "batch_size": 128, "steps": steps}}})
        return build_task(cfg, "lr", 0, device, dtype)
    if problem == "weights":
        if not q:
            raise ValueError("problem 'weights' needs q (the number of weighted examples)")
        cfg = load_config(None, {"data": {"n_train": int(q)},
                                 "tasks": {"reweight": {"model": mlp, "optimizer": opt, "label_noise": 0.0,
                                                        "batch_size": None, "steps": steps}}})
        return build_task(cfg, "reweight", 0, device, dtype)
    raise ValueError(f"unknown benchmark problem {problem!r}; expected one of {sorted(PROBLEMS)}")


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], Any], repeats: int, device: torch.device, *, warmup: int = 1) -> dict[str, Any]:
    """Median (and all) wall times of ``fn`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "times_s": [round(t, 6) for t in times]}


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
        "forward_all": lambda: forward_trajectory(dyn.step, vf, s0, phi, batches).h[-1],
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


def bench_hypergradient(sc: dict, device: torch.device, peers: dict) -> list[dict[str, Any]]:
    """T sweep on the q = 4 problem: floor, ours, peers (agreement-checked), memory."""
    task = make_task("lr_wd", device, torch.float32)
    rows = []
    for T in sc["Ts"]:
        batches = task.batches(0, T)
        fns = _methods(task, batches)
        ref = fns["reverse"]()
        results: dict[str, dict[str, Any]] = {}
        for name, fn in fns.items():
            if name in sc.get("skip", ()):
                continue
            entry: dict[str, Any] = {}
            if name in peers:
                if not peers[name]["available"]:
                    results[name] = {"skipped": peers[name]["reason"]}
                    continue
                if T not in sc["peer_Ts"]:
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
            entry.update(median_time(fn, sc["repeats"], device))
            results[name] = entry
        floor = results["floor"]["median_s"]
        for name, e in results.items():
            if "median_s" in e:
                e["ratio_to_floor"] = e["median_s"] / floor
                if name.startswith("forward"):
                    e["ratio_to_floor_per_direction"] = e["median_s"] / (floor * task.hyper.q)
        if T in sc["memory_Ts"]:
            for name in sc["memory_methods"]:
                if name in results and "median_s" in results[name]:
                    results[name]["peak_memory"] = peak_memory(name, T, device)
        rows.append({"problem": "lr_wd", "q": task.hyper.q, "T": T, "methods": results})
        _log(f"hypergradient T={T}: " + ", ".join(
            f"{k}={v['median_s']:.3f}s" for k, v in results.items() if "median_s" in v))
    return rows


def _q_task(q: int, device: torch.device) -> tuple[str, Task]:
    if q == 3:
        return "lr", make_task("lr", device, torch.float32)
    if q == 4:
        return "lr_wd", make_task("lr_wd", device, torch.float32)
    return "weights", make_task("weights", device, torch.float32, q=q)


def bench_q(sc: dict, device: torch.device) -> list[dict[str, Any]]:
    """Reverse vs forward mode against q at fixed T."""
    rows = []
    T = sc["q_T"]
    for q in sc["qs"]:
        problem, task = _q_task(q, device)
        fns = _methods(task, task.batches(0, T))
        res = {name: median_time(fns[name], sc["repeats"], device)
               for name in ("floor", "unroll", "reverse", "reverse_graph", "forward")}
        floor = res["floor"]["median_s"]
        for e in res.values():
            e["ratio_to_floor"] = e["median_s"] / floor
        res["forward"]["ratio_to_floor_per_direction"] = res["forward"]["median_s"] / (floor * q)
        rows.append({"problem": problem, "q": q, "T": T, "methods": res})
        _log(f"q={q} T={T}: " + ", ".join(f"{k}={v['median_s']:.3f}s" for k, v in res.items()))
    return rows


def _update_fn(strategy: str, task: Task, tau: int, T_total: int) -> tuple[Callable[[], Any], str]:
    """One hyperparameter update of ``strategy`` (as glocal.train does it) and its engine."""
    dyn, vf, s0, phi = task.dynamics, task.val_fn(), task.init_state(), task.init_phi()
    q = task.hyper.q
    batches = task.batches(0, tau)
    if strategy in ("local", "global"):
        engine = choose_engine("auto", q, tau, trajectory=False)
        if engine == "forward":
            return (lambda: forward_trajectory(dyn.step, vf, s0, phi, batches, record=[tau]).h[-1]), engine
        return (lambda: reverse_hypergradient(dyn.step, vf, s0, phi, batches).h), engine
    engine = choose_engine("auto", q, tau, trajectory=True)

    def glocal_update() -> torch.Tensor:
        if engine == "forward":
            traj = forward_trajectory(dyn.step, vf, s0, phi, batches).h
        else:
            traj = reverse_window_hypergradients(dyn.step, vf, s0, phi, batches).h
        return glocal_estimate(traj, estimator="limit", delay=1, steps_ahead=max(1, T_total - tau)).value

    return glocal_update, engine


def bench_updates(sc: dict, device: torch.device) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Seconds per hyperparameter update (and composed per run) over tau, T and q; cost.csv rows."""
    M, T_run = sc["hpo"]["meta_iterations"], sc["hpo"]["steps"]
    rows, csv_rows = [], []
    dev = device.type

    def add(method: str, variable: str, value: int, task: Task, tau: int, per_run_steps: int) -> None:
        if method == "train":
            t = median_time(lambda: unroll(task.dynamics.step, task.init_state(), task.init_phi(),
                                           task.batches(0, tau)), sc["repeats"], device)
            per_update, per_run, engine = None, t["median_s"], "none"
        else:
            fn, engine = _update_fn(method, task, tau, per_run_steps)
            t = median_time(fn, sc["repeats"], device)
            per_update = t["median_s"]
            if method == "global":
                train = median_time(lambda: unroll(task.dynamics.step, task.init_state(), task.init_phi(),
                                                   task.batches(0, tau)), sc["repeats"], device)["median_s"]
                per_run = M * train + (M - 1) * per_update
            else:
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


def bench_hpo(sc: dict, device: torch.device) -> list[dict[str, Any]]:
    """Whole HPO runs per strategy with :func:`glocal.train.run_experiment`."""
    h = sc["hpo"]
    opt = {"kind": "momentum", "lr": 0.05, "momentum": 0.9, "weight_decay": 1e-4}
    mlp = {"kind": "mlp", "hidden": [64, 32]}
    so = {"local": {"window": h["window"]}, "glocal": {"window": h["window"]},
          "global": {"meta_iterations": h["meta_iterations"]}}
    problems = [("lr", {"tasks": {"lr": {"model": mlp, "optimizer": opt, "tune": ["lr", "weight_decay"],
                                         "batch_size": 128, "steps": h["steps"]}}})]
    if h.get("reweight_q"):
        problems.append(("reweight", {"data": {"n_train": h["reweight_q"]},
                                      "tasks": {"reweight": {"model": mlp, "optimizer": opt, "label_noise": 0.3,
                                                             "batch_size": None, "steps": h["steps"]}}}))
    rows = []
    for task_name, over in problems:
        cfg = load_config(None, {**over, "device": device.type, "dtype": "float32", "strategy_options": so})
        res: dict[str, Any] = {}
        for strategy in ("fixed", "local", "glocal", "global"):
            times, summaries = [], []
            for _ in range(h["repeats"]):
                with tempfile.TemporaryDirectory() as tmp:
                    t0 = time.perf_counter()
                    s = run_experiment(cfg, task_name, strategy, 0, tmp, progress=False)
                    _sync(device)
                    times.append(time.perf_counter() - t0)
                    summaries.append(s)
            s = summaries[len(summaries) // 2]
            res[strategy] = {"median_s": statistics.median(times), "times_s": [round(t, 4) for t in times],
                             "time_split": s["time"], "engine": s["engine"], "q": s["q"],
                             "n_hyper_updates": s["n_hyper_updates"], "final_val_loss": s["final"].get("val_loss")}
        loc, glo, gl = (res[k]["median_s"] for k in ("local", "glocal", "global"))
        rows.append({"task": task_name, "steps": h["steps"], "window": h["window"],
                     "meta_iterations": h["meta_iterations"], "strategies": res,
                     "glocal_over_local": glo / loc, "global_over_glocal": gl / glo})
        _log(f"hpo {task_name}: " + ", ".join(f"{k}={v['median_s']:.2f}s" for k, v in res.items()))
    return rows


def _targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each with the measured value and met / missed."""
    out = []
    for row in result["hypergradient"]:
        m, T = row["methods"], row["T"]
        rev = m["reverse"]["median_s"]
        for peer, want in (("higher", 2.0), ("torchopt", 1.0)):
            if "median_s" in m.get(peer, {}):
                speedup = m[peer]["median_s"] / rev
                out.append({"target": f"reverse_hypergradient >= {want}x faster than {peer}", "T": T,
                            "measured": round(speedup, 3), "met": speedup >= want})
                g = m[peer]["median_s"] / m["reverse_graph"]["median_s"]
                out.append({"target": f"reverse (checkpoint='graph') >= {want}x faster than {peer}", "T": T,
                            "measured": round(g, 3), "met": g >= want})
        for name in ("reverse", "reverse_graph"):
            r = m[name]["ratio_to_floor"]
            out.append({"target": f"{name} within 4x of the floor", "T": T, "measured": round(r, 3), "met": r <= 4})
        r = m["forward"]["ratio_to_floor_per_direction"]
        out.append({"target": "forward_trajectory within 4x of the floor per direction", "T": T,
                    "measured": round(r, 3), "met": r <= 4})
    mem = [(row["T"], row["methods"]["forward"].get("peak_memory", {}).get("peak_mb"))
           for row in result["hypergradient"]]
    mem = [(T, v) for T, v in mem if v is not None]
    if len(mem) >= 2:
        growth = mem[-1][1] / max(mem[0][1], 1e-9)
        out.append({"target": "forward_trajectory memory flat in T", "T": f"{mem[0][0]}..{mem[-1][0]}",
                    "measured": f"{mem[0][1]:.1f} -> {mem[-1][1]:.1f} MiB", "met": growth <= 1.5})
    for row in result["hpo"]:
        out.append({"target": f"glocal HPO run <= 1.5x local (same window), task {row['task']}",
                    "measured": round(row["glocal_over_local"], 3), "met": row["glocal_over_local"] <= 1.5})
        out.append({"target": f"glocal HPO run >= 5x cheaper than global M={row['meta_iterations']}, task {row['task']}",
                    "measured": round(row["global_over_glocal"], 3), "met": row["global_over_glocal"] >= 5})
    return out


def _f(x: Any, nd: int = 3) -> str:
    return "-" if x is None else (f"{x:.{nd}f}" if isinstance(x, float) else str(x))


def render_markdown(res: dict[str, Any]) -> str:
    """Markdown tables of a ``bench.json`` result (what benchmarks/README.md shows)."""
    lines = [f"Date {res['date']}, device {res['device']}, scale {res['scale']}, "
             f"torch {res['versions'].get('torch')}, higher {res['versions'].get('higher')}, "
             f"torchopt {res['versions'].get('torchopt')}, {res['machine']['platform']}, "
             f"{res['machine']['cpu_count']} CPUs, torch threads {res['machine']['torch_threads']}.", "",
             "**Hypergradient over T steps** (q = 4; seconds, median; x floor; peak extra memory MiB)", ""]
    names = [n for n in ("floor", "unroll", "reverse", "reverse_sqrt", "reverse_graph", "forward", "forward_all",
                         "higher", "torchopt") if any(n in r["methods"] for r in res["hypergradient"])]
    lines += ["| T | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for r in res["hypergradient"]:
        cells = []
        for n in names:
            e = r["methods"].get(n, {})
            if "median_s" not in e:
                cells.append("skipped" if "skipped" in e else "-")
                continue
            c = f"{e['median_s']:.3f} s ({e['ratio_to_floor']:.1f}x)"
            pm = e.get("peak_memory", {}).get("peak_mb")
            if pm is not None:
                c += f", {pm:.1f} MiB"
            cells.append(c)
        lines.append(f"| {r['T']} | " + " | ".join(cells) + " |")
    lines += ["", "**Against q** (seconds, median; forward: x floor per direction)", "",
              "| q | problem | T | floor | reverse | reverse_graph | forward | forward x floor / q |",
              "|---|---|---|---|---|---|---|---|"]
    for r in res["q_sweep"]:
        m = r["methods"]
        lines.append(f"| {r['q']} | {r['problem']} | {r['T']} | {m['floor']['median_s']:.3f} | "
                     f"{m['reverse']['median_s']:.3f} | {m['reverse_graph']['median_s']:.3f} | "
                     f"{m['forward']['median_s']:.3f} | {m['forward']['ratio_to_floor_per_direction']:.2f} |")
    lines += ["", "**One hyperparameter update / one run** (cost.csv)", "",
              "| method | variable | value | q | engine | s / update | s / run |", "|---|---|---|---|---|---|---|"]
    for r in res["updates"]:
        lines.append(f"| {r['method']} | {r['variable']} | {r['value']} | {r['q']} | {r['engine']} | "
                     f"{_f(r['seconds_per_update'])} | {_f(r['seconds_per_run'])} |")
    lines += ["", "**Whole HPO runs** (glocal.train.run_experiment; wall seconds)", "",
              "| task | q | steps | window | fixed | local | glocal | global (M) | glocal / local | global / glocal |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in res["hpo"]:
        st = r["strategies"]
        lines.append(f"| {r['task']} | {st['glocal']['q']} | {r['steps']} | {r['window']} | "
                     f"{st['fixed']['median_s']:.2f} | {st['local']['median_s']:.2f} ({st['local']['engine']}) | "
                     f"{st['glocal']['median_s']:.2f} ({st['glocal']['engine']}) | "
                     f"{st['global']['median_s']:.2f} ({r['meta_iterations']}) | {r['glocal_over_local']:.2f} | "
                     f"{r['global_over_glocal']:.2f} |")
    lines += ["", "**Targets**", "", "| target | T | measured | met |", "|---|---|---|---|"]
    for t in res["targets"]:
        lines.append(f"| {t['target']} | {t.get('T', '-')} | {t['measured']} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines) + "\n"


def run_benchmark(scale: str, device: torch.device, out: Path | None) -> dict[str, Any]:
    """Run every section at ``scale`` on ``device``; write bench.json and cost.csv into ``out``."""
    sc = SCALES[scale]
    torch.manual_seed(0)
    peers = peer_status()
    t0 = time.perf_counter()
    result: dict[str, Any] = {
        "scale": scale, "device": str(device), "dtype": "float32",
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None},
        "versions": {**versions(), **{k: v["version"] for k, v in peers.items()}},
        "peers": peers, "problems": PROBLEMS, "settings": sc,
    }
    result["hypergradient"] = bench_hypergradient(sc, device, peers)
    result["q_sweep"] = bench_q(sc, device)
    result["updates"], csv_rows = bench_updates(sc, device)
    result["hpo"] = bench_hpo(sc, device)
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
                        "full: T in {50,100,200,400}, q in {3,30,300}, minutes")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--out", default="results/bench", help="directory for bench.json and cost.csv")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--probe", default=None, help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """``glocal bench``."""
    if getattr(args, "probe", None):
        print(json.dumps(_probe(json.loads(args.probe))))
        return 0
    torch.set_num_threads(max(1, int(args.threads)))
    device = resolve_device(args.device)
    res = run_benchmark(args.scale, device, Path(args.out))
    for t in res["targets"]:
        T = f" T={t['T']}" if "T" in t else ""
        print(f"{'met   ' if t['met'] else 'MISSED'} {t['target']}{T}: {t['measured']}")
    print(f"wrote {Path(args.out) / 'bench.json'} and {Path(args.out) / 'cost.csv'} ({res['elapsed_s']:.0f} s)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks``."""
    p = argparse.ArgumentParser(prog="python -m benchmarks", description="glocal speed and memory benchmarks")
    configure_parser(p)
    return run(p.parse_args(argv))
