"""Hypergradient extraction at fixed phi: ``glocal extract``.

For one task, at fixed phi = phi_0, and for every window start s (fractions of the task's
training steps) and every batch size of the ``extract`` config section:

1. train with phi_0 from theta_0 up to step s (the setting's batch size, the task's own batch
   order), giving theta_s (the noisy quadratic model: its mode, expected or sampled, is the
   setting; its K batch orders are K independent noise streams);
2. record the exact hypergradient trajectory h_{s->s+t} of the window s..s+T
   (T = ``extract.steps``) — every t when forward mode is the engine, and the steps
   1..max(taus) plus T when reverse mode is (the prefixes used for fitting are complete);
   under mini-batches this is done for K = ``n_batch_orders`` independent batch orders
   (orders 0..K-1; order 0 continues the training order) from the same theta_s;
3. for every prefix length tau, estimate h_{s->s+T} from the prefix h_{s->s+1..s+tau} with each
   estimator (``limit``; ``horizon``, ``robust`` and ``auto`` with steps_ahead = T - tau;
   ``local`` = h_{s->s+tau}) and
   each noise-robust variant (``smoothed``: fit a trailing moving average of the prefix;
   ``averaged``: fit the mean prefix over the K batch orders; ``truncated``: POD rank by the energy
   threshold ``truncate_energy``), and compare with the target:
   h_{s->s+T} at full batch, the mean of h_{s->s+T} over the K orders under mini-batches.

Outputs (see docs/extract.md): ``trajectory.npz``, ``estimates.csv``, ``spectra.csv``,
``noise_floor.csv``, ``meta.json``.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glocal.config import ConfigError, load_config, task_config
from glocal.hypergrad import forward_trajectory, reverse_window_hypergradients, unroll
from glocal.koopman import glocal_estimate, hankel_dmd
from glocal.tasks import Task, build_task
from glocal.utils import (
    add_threads_argument,
    apply_threads,
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    resolve_device,
    resolve_dtype,
    versions,
)

__all__ = [
    "run_extract",
    "extract_engine",
    "modal_tail_bound",
    "moving_average",
    "pydmd_dmdc_estimate",
    "PYDMD_SETTINGS",
    "ESTIMATE_COLUMNS",
    "SPECTRA_COLUMNS",
    "NOISE_COLUMNS",
]

ESTIMATE_COLUMNS = [
    "task", "setting", "batch_size", "window_start", "realization", "tau", "estimator", "rel_error", "cosine",
    "norm", "target_norm", "fallback", "reason", "degenerate", "growing", "rank", "condition_number",
    "spectral_radius", "bound", "bound_abs", "residual", "kappa", "rate", "choice",
]
#: Estimators whose fit depends on the POD rank (the ``truncated`` variant applies to them).
RANK_ESTIMATORS = ("limit", "horizon", "auto")
#: Estimators the PyDMD peer computes (``<estimator>+pydmd*`` rows).
PEER_ESTIMATORS = ("limit", "horizon")
SPECTRA_COLUMNS = ["task", "setting", "window_start", "batch_size", "realization", "tau", "estimator", "re", "im"]
NOISE_COLUMNS = [
    "task", "setting", "batch_size", "window_start", "n_orders", "target_norm", "rel_spread_rms", "rel_spread_min",
    "rel_spread_max", "cosine_mean", "cosine_min", "target_rel_stderr",
]


# ------------------------------------------------------------------------------ helpers
def extract_engine(engine: str, q: int, T: int, record: list[int]) -> str:
    """Forward or reverse mode for a window of T steps recording the offsets ``record``.

    Forward mode costs T * q Jacobian-vector products (all offsets come for free); reverse mode
    (one backward chain per recorded offset r, batched) costs sum(record) vector-Jacobian
    products. ``engine`` other than ``auto`` is returned as is.
    """
    if engine in ("forward", "reverse"):
        return engine
    if engine != "auto":
        raise ConfigError(f"extract.engine: expected auto, forward or reverse, got {engine!r}")
    return "forward" if T * q <= sum(record) else "reverse"


def moving_average(traj: torch.Tensor, window: int) -> torch.Tensor:
    """Trailing moving average of the rows: row k is the mean of rows k .. k + window - 1 ('valid').

    A linear time-invariant filter: a mode lambda^t stays a mode with the same eigenvalue
    (its amplitude scaled by mean_i lambda^-i), and the eigenvalue-1 (constant) part is
    unchanged — so the ``limit`` of an exactly modal trajectory is preserved.
    """
    w = min(int(window), traj.shape[0])
    if w <= 1:
        return traj
    c = torch.cumsum(torch.cat([torch.zeros_like(traj[:1]), traj]), 0)
    return (c[w:] - c[:-w]) / w


#: The PyDMD peer settings offered as extraction variants: (svd_rank, svd_rank_omega) of DMDc.
PYDMD_SETTINGS = {"pydmd": (-1, -1), "pydmd_oht": (0, 0)}


def pydmd_dmdc_estimate(traj: torch.Tensor, estimators: list[str], steps_ahead: int, *, svd_rank: float = -1,
                        svd_rank_omega: float = -1, delay: int = 1) -> dict[str, tuple[torch.Tensor, bool]]:
    """The peer: PyDMD's ``DMDc`` operator with a constant input u = 1 (B unknown) on the same delay vectors.

    The model x_{t+1} = A x_t + B u with u = 1 is the project's affine model; PyDMD reduces it on
    the left singular vectors U_r of the shifted snapshots (``svd_rank``) after a truncated SVD of
    [X; U] (``svd_rank_omega``; -1: none, 0: optimal hard threshold, a float: energy). ``limit`` is
    its fixed point U_r (I - A~)^{-1} B~; ``horizon`` iterates it ``steps_ahead`` steps from the last
    snapshot with eigenvalues of modulus > 1 frozen on the unit circle about that fixed point, as
    ours. Only PyDMD's operator is computed (``DMDBUnknownOperator.compute_operator``, what
    ``DMDc.fit`` does before its amplitude fit, which the estimates do not use), once for all
    ``estimators``. The trajectory is divided by its largest row norm first (PyDMD's rank rules
    compare the data with the row of ones). Returns {estimator: (estimate, fell back)}: an estimate
    that is not finite or is larger than 10x the largest observed norm is replaced by the local
    one, as our norm guard does. Needs the optional ``pydmd`` package (``pip install glocal[peers]``).
    """
    try:
        from pydmd.dmdc import DMDBUnknownOperator
    except ImportError as err:
        raise ImportError("the PyDMD peer needs the optional package pydmd: pip install 'glocal[peers]'") from err

    H = traj.detach().cpu().to(torch.float64).numpy()
    tau, q = H.shape
    scale = float(np.linalg.norm(H, axis=1).max())
    local = traj[-1].detach().cpu().to(torch.float64)
    m = tau - delay + 1
    if scale == 0 or m < 3:
        return {e: (local, True) for e in estimators}
    G = np.stack([(H[j : j + delay] / scale).reshape(-1) for j in range(m)], axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        op = DMDBUnknownOperator(svd_rank=svd_rank, svd_rank_omega=svd_rank_omega, tlsq_rank=0)
        Ur, B = op.compute_operator(G[:, :-1], G[:, 1:], np.ones((1, m - 1)))
    At = op.as_numpy_array
    Bt = Ur.T @ B[:, 0]
    r = At.shape[0]
    out: dict[str, tuple[torch.Tensor, bool]] = {}
    with np.errstate(all="ignore"):
        try:
            zstar = np.linalg.solve(np.eye(r) - At, Bt)
        except np.linalg.LinAlgError:
            return {e: (local, True) for e in estimators}
        for est in estimators:
            if est == "limit":
                z = zstar
            else:
                lam, V = np.linalg.eig(At)
                mod = np.abs(lam)
                Ac = At
                if (mod > 1).any():
                    try:
                        Ac = (V @ np.diag(np.where(mod > 1, lam / mod, lam)) @ np.linalg.inv(V)).real
                    except np.linalg.LinAlgError:
                        out[est] = (local, True)
                        continue
                z = zstar + np.linalg.matrix_power(Ac, int(steps_ahead)) @ (Ur.T @ G[:, -1] - zstar)
            value = scale * (Ur @ z)[-q:]
            ok = bool(np.all(np.isfinite(value)) and np.linalg.norm(value) <= 10.0 * scale)
            out[est] = (torch.as_tensor(value), False) if ok else (local, True)
    return out


def modal_tail_bound(traj: torch.Tensor, steps_ahead: int, *, delay: int = 1, rank: int | None = None,
                     energy: float | None = None) -> float:
    """The fitted modes' tail: sum_j |b_j| * ||g^dagger v_j|| * |lambda_j|^steps_ahead.

    Fit the Hankel-DMD model y_{t+1} = A y_t + c (POD coordinates of the centred, scaled delay
    vectors) to ``traj``; take its fixed point y* = (I - A)^{-1} c; decompose the last snapshot's
    deviation y_tau - y* = V b in the eigenvectors v_j of A (eigenvalues lambda_j); map each mode
    back to a hypergradient by the POD basis, the scale and the last delay block (g^dagger).
    The model's own h_{tau + n} - h_limit is sum_j b_j lambda_j^n g^dagger v_j, so the returned
    number bounds the model-predicted distance between the ``limit`` estimate and h_T when
    n = steps_ahead = T - tau (docs/design.md, section 5). NaN when the fit has rank 0, I - A is
    singular, or A is not diagonalizable to working precision.
    """
    try:
        fit = hankel_dmd(traj, delay=delay, rank=rank, energy=energy)
    except ValueError:
        return float("nan")
    if fit.rank < 1 or fit.n_snapshots < 3:
        return float("nan")
    A = fit.A
    eye = torch.eye(fit.rank, dtype=A.dtype, device=A.device)
    try:
        ystar = torch.linalg.solve(eye - A, fit.c)
        lam, V = torch.linalg.eig(A)
        b = torch.linalg.solve(V, (fit.last - ystar).to(V.dtype))
    except RuntimeError:  # singular
        return float("nan")
    mode_norms = torch.stack([torch.linalg.norm(fit.direction(V[:, j])) for j in range(V.shape[1])])
    terms = b.abs() * mode_norms * lam.abs() ** int(steps_ahead)
    val = float(terms.sum().real) if terms.is_complex() else float(terms.sum())
    return val if math.isfinite(val) else float("nan")


def _rel_cos(est: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    tn = float(torch.linalg.norm(target))
    diff = float(torch.linalg.norm(est - target))
    rel = diff / tn if tn > 0 else diff
    en = float(torch.linalg.norm(est))
    cos = float(est @ target) / (en * tn) if en > 0 and tn > 0 else float("nan")
    return rel, cos


def _settings(task: Task, batch_sizes: list) -> list[tuple[str, Any, bool]]:
    """(setting, batch-size label, deterministic?) of each batch mode the extraction sweeps.

    ``extract.batch_sizes`` (null: full batch), except for the noisy quadratic model, whose noise is set by
    the task's mode: ``expected`` is deterministic (one setting, ``full``); ``sampled`` draws the gradient
    noise of its batch size B (``tasks.<task>.batch_size``), and the K batch orders are K independent noise
    streams (setting ``sampled``).
    """
    if getattr(task, "kind", None) == "nqm":
        if task.mode == "expected":
            return [("full", "full", True)]
        return [("sampled", f"{task.batch_size:g}", False)]
    out = []
    for bs in batch_sizes:
        full = bs is None or int(bs) >= task.n_train
        out.append(("full", "full", True) if full else (f"bs{int(bs)}", int(bs), False))
    return out


def _window_trajectory(task: Task, state: torch.Tensor, phi: torch.Tensor, batches: list, engine: str,
                       record: list[int], chunk_size: int | None) -> tuple[torch.Tensor, list[int]]:
    step_fn, val_fn = task.dynamics.step, task.val_fn()
    if engine == "forward":
        res = forward_trajectory(step_fn, val_fn, state, phi, batches, chunk_size=chunk_size)
    else:
        res = reverse_window_hypergradients(step_fn, val_fn, state, phi, batches, record, chunk_size=chunk_size)
    return res.h.detach(), list(res.steps)


# ------------------------------------------------------------------------------ main work
def run_extract(config: Mapping[str, Any], task_name: str, out: str | Path, *, seed: int | None = None,
                progress: bool = False) -> dict[str, Any]:
    """Run the extraction of ``task_name`` into directory ``out``; return the meta dict."""
    task_config(config, task_name)  # names the configured tasks when task_name is not one of them
    t_all = time.perf_counter()
    ecfg = dict(config.get("extract", {}))
    T = int(ecfg["steps"])
    taus_cfg = sorted({int(t) for t in ecfg["taus"]})
    taus = [t for t in taus_cfg if t <= T]
    if not taus:
        raise ConfigError(f"extract.taus: every tau {taus_cfg} exceeds extract.steps = {T}")
    dropped = [t for t in taus_cfg if t > T]
    estimators = list(ecfg["estimators"])
    variants = list(ecfg.get("variants", []))
    smooth_w = int(ecfg.get("smooth_window", 5))
    truncate_energy = float(ecfg.get("truncate_energy", 0.99))
    K = int(ecfg["n_batch_orders"])
    delay, rank, energy = int(ecfg.get("delay", 1)), ecfg.get("rank"), ecfg.get("energy")
    max_cond, max_ratio = float(ecfg.get("max_condition", 1e8)), float(ecfg.get("max_norm_ratio", 10.0))
    fit_opts = {"rank_rule": ecfg.get("rank_rule", "full"),
                "max_growing_share": float(ecfg.get("max_growing_share", 0.5))}
    skipped: dict[str, str] = {}
    peers = [v for v in variants if v in PYDMD_SETTINGS]
    if peers:
        try:
            import pydmd  # noqa: F401
        except ImportError:
            for v in peers:
                skipped[v] = "PyDMD is not installed (pip install 'glocal[peers]')"
            peers = []
    device = resolve_device(config.get("device", "auto"))
    dtype = resolve_dtype(ecfg.get("dtype") or config.get("dtype", "float32"))
    seed = int(config.get("seeds", [0])[0]) if seed is None else int(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    torch.manual_seed(seed)
    task = build_task(config, task_name, seed, device, dtype)
    timings: dict[str, float] = {"build_task": time.perf_counter() - t0, "training": 0.0, "trajectory": 0.0,
                                 "estimates": 0.0, "peers": 0.0}
    q, n_train = task.hyper.q, getattr(task, "n_train", None)
    settings = _settings(task, ecfg["batch_sizes"])
    phi = task.init_phi()
    record = sorted(set(range(1, max(taus) + 1)) | {T})
    engine = extract_engine(ecfg.get("engine", "auto"), q, T, record)
    chunk = ecfg.get("chunk_size")
    starts = sorted({int(round(f * task.steps)) for f in ecfg["window_starts"]})

    est_rows: list[dict[str, Any]] = []
    spec_rows: list[dict[str, Any]] = []
    noise_rows: list[dict[str, Any]] = []
    arrays: dict[str, np.ndarray] = {"phi": phi.cpu().numpy(), "taus": np.array(taus)}
    settings_meta: list[dict[str, Any]] = []

    def add_estimates(base: dict[str, Any], prefix: torch.Tensor, target: torch.Tensor, tau: int, suffix: str,
                      names: list[str], energy: float | None = energy) -> None:
        tn = float(torch.linalg.norm(target))
        bound_abs: float | None = None
        for name in names:
            t1 = time.perf_counter()
            est = glocal_estimate(prefix, estimator=name, delay=delay, rank=rank, energy=energy,
                                  steps_ahead=T - tau, max_condition=max_cond, max_norm_ratio=max_ratio,
                                  **fit_opts)
            rel, cos = _rel_cos(est.value, target)
            d = est.diagnostics
            if name != "local" and bound_abs is None:
                bound_abs = modal_tail_bound(prefix, T - tau, delay=delay, rank=rank, energy=energy)
            b_abs = bound_abs if name != "local" else float("nan")
            label = name + suffix
            est_rows.append({
                **base, "tau": tau, "estimator": label, "rel_error": rel, "cosine": cos,
                "norm": float(torch.linalg.norm(est.value)), "target_norm": tn, "fallback": int(est.fallback),
                "reason": est.reason or "", "degenerate": int(bool(d.get("degenerate"))),
                "growing": int(bool(d.get("growing"))), "rank": d.get("rank", 0),
                "condition_number": d.get("condition_number", float("nan")),
                "spectral_radius": d.get("spectral_radius", float("nan")),
                "bound": (b_abs / tn if tn > 0 else b_abs) if b_abs is not None else float("nan"),
                "bound_abs": b_abs if b_abs is not None else float("nan"),
                "residual": d.get("residual", float("nan")),
                "kappa": d.get("kappa", ""), "rate": d.get("rate", ""), "choice": d.get("choice", ""),
            })
            eig = d.get("eigenvalues")
            if name != "local" and isinstance(eig, torch.Tensor) and eig.numel():
                for z in eig.reshape(-1).tolist():
                    spec_rows.append({k: base[k] for k in ("task", "setting", "window_start", "batch_size",
                                                          "realization")}
                                     | {"tau": tau, "estimator": label, "re": z.real, "im": z.imag})
            timings["estimates"] += time.perf_counter() - t1

    def add_peer_estimates(base: dict[str, Any], prefix: torch.Tensor, target: torch.Tensor, tau: int,
                           peer: str) -> None:
        t1 = time.perf_counter()
        svd_rank, svd_rank_omega = PYDMD_SETTINGS[peer]
        tn = float(torch.linalg.norm(target))
        fitted = [e for e in estimators if e in PEER_ESTIMATORS]
        if not fitted:
            return
        results = pydmd_dmdc_estimate(prefix, fitted, T - tau, svd_rank=svd_rank, svd_rank_omega=svd_rank_omega,
                                      delay=delay)
        for name in fitted:
            value, fell_back = results[name]
            rel, cos = _rel_cos(value.to(target.dtype).to(target.device), target)
            est_rows.append({**base, "tau": tau, "estimator": f"{name}+{peer}", "rel_error": rel, "cosine": cos,
                             "norm": float(torch.linalg.norm(value)), "target_norm": tn, "fallback": int(fell_back),
                             "reason": "non-finite or norm guard" if fell_back else ""})
        timings["peers"] += time.perf_counter() - t1

    for setting, bs_label, full in settings:
        if getattr(task, "kind", None) != "nqm":  # the NQM's noise is its own (its mode)
            task.batch_size = None if full else int(bs_label)
            task._perm_cache.clear()
        n_orders = 1 if full else K
        state, at = task.init_state(), 0
        for s in starts:
            t1 = time.perf_counter()
            state = unroll(task.dynamics.step, state, phi, task.batches(at, s))
            at = s
            timings["training"] += time.perf_counter() - t1
            if not bool(torch.isfinite(state).all()):
                raise ValueError(f"extract: training with phi_0 diverged before window start {s} ({setting})")
            hs, steps = [], None
            t1 = time.perf_counter()
            for k in range(n_orders):
                h, steps = _window_trajectory(task, state, phi, task.batches(s, s + T, order=k), engine, record, chunk)
                hs.append(h)
            timings["trajectory"] += time.perf_counter() - t1
            H = torch.stack(hs)  # (K, n_rec, q)
            row_of = {st: i for i, st in enumerate(steps)}
            key = f"{setting}__s{s}"
            arrays[f"h__{key}"] = H.cpu().numpy()
            arrays[f"steps__{key}"] = np.array(steps)
            hT = H[:, row_of[T]]
            target = hT.mean(0)
            tn = float(torch.linalg.norm(target))
            base0 = {"task": task_name, "setting": setting, "batch_size": bs_label, "window_start": s}
            settings_meta.append({**base0, "n_orders": n_orders, "n_recorded": len(steps)})
            if not full:
                devs = [float(torch.linalg.norm(hT[k] - target)) / tn if tn > 0 else float("nan")
                        for k in range(n_orders)]
                coss = [_rel_cos(hT[k], target)[1] for k in range(n_orders)]
                noise_rows.append({**base0, "n_orders": n_orders, "target_norm": tn,
                                   "rel_spread_rms": float(np.sqrt(np.mean(np.square(devs)))),
                                   "rel_spread_min": min(devs), "rel_spread_max": max(devs),
                                   "cosine_mean": float(np.mean(coss)), "cosine_min": min(coss),
                                   "target_rel_stderr": float(np.sqrt(np.sum(np.square(devs)) / max(1, n_orders - 1))
                                                              / math.sqrt(n_orders))})
            for tau in taus:
                idx = [row_of[t] for t in range(1, tau + 1)]
                for k in range(n_orders):
                    base = {**base0, "realization": k}
                    prefix = H[k, idx]
                    add_estimates(base, prefix, target, tau, "", estimators)
                    if "smoothed" in variants and tau > smooth_w:
                        fitted = [e for e in estimators if e != "local"]
                        add_estimates(base, moving_average(prefix, smooth_w), target, tau, "+smoothed", fitted)
                    for peer in peers:
                        add_peer_estimates(base, prefix, target, tau, peer)
                    if "truncated" in variants:
                        fitted = [e for e in estimators if e in RANK_ESTIMATORS]
                        add_estimates(base, prefix, target, tau, "+truncated", fitted, energy=truncate_energy)
                if "averaged" in variants and n_orders > 1:
                    add_estimates({**base0, "realization": "mean"}, H[:, idx].mean(0), target, tau, "+averaged",
                                  estimators)
            if progress:
                print(f"extract {task_name}: {setting} s={s} done ({time.perf_counter() - t_all:.1f}s)",
                      file=sys.stderr)

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(out / "trajectory.npz", buf.getvalue())
    atomic_write_csv(out / "estimates.csv", est_rows, ESTIMATE_COLUMNS)
    atomic_write_csv(out / "spectra.csv", spec_rows, SPECTRA_COLUMNS)
    atomic_write_csv(out / "noise_floor.csv", noise_rows, NOISE_COLUMNS)
    timings["total"] = time.perf_counter() - t_all
    meta = {
        "task": task_name, "seed": seed, "engine": engine, "q": q, "n_train": n_train, "P": task.dynamics.P,
        "T": T, "taus": taus, "taus_dropped": dropped, "window_starts": starts, "training_steps": task.steps,
        "record_steps": "all" if engine == "forward" else f"1..{max(taus)} and {T}",
        "estimators": estimators, "variants": variants, "skipped_variants": skipped, "fit_options": fit_opts,
        "pydmd_version": _pydmd_version() if peers else None, "smooth_window": smooth_w,
        "truncate_energy": truncate_energy, "n_batch_orders": K,
        "batch_orders": "orders 0..K-1 of Task.batches (order 0 continues the training order)",
        "settings": settings_meta, "timings": timings, "device": str(device),
        "dtype": str(dtype).replace("torch.", ""), "versions": versions(), "config": dict(config),
    }
    atomic_write_json(out / "meta.json", meta)
    return meta


def _pydmd_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("pydmd")
    except Exception:  # noqa: BLE001 - metadata is best effort
        return None


# ------------------------------------------------------------------------------ CLI
def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glocal extract``."""
    p.add_argument("--config", help="experiment YAML (default: built-in defaults)")
    p.add_argument("--task", required=True, help="a task of the config (lr, reweight, nqm, ...)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--seed", type=int, default=None, help="seed (default: the config's first seed)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="override the config's device")
    p.add_argument("--dtype", choices=["float32", "float64"], help="override extract.dtype")
    p.add_argument("--progress", action="store_true", help="print a line per finished window")
    add_threads_argument(p)


def run(args: argparse.Namespace) -> int:
    """``glocal extract``."""
    overrides: dict[str, Any] = {}
    if args.device:
        overrides["device"] = args.device
    if args.dtype:
        overrides["extract"] = {"dtype": args.dtype}
    apply_threads(args.threads)
    config = load_config(args.config, overrides)
    if args.task not in (config.get("tasks") or {}):
        raise ConfigError(f"--task: unknown task {args.task!r}; the config defines {sorted(config.get('tasks') or {})}")
    meta = run_extract(config, args.task, args.out, seed=args.seed, progress=args.progress)
    print(f"extract {args.task}: engine={meta['engine']} q={meta['q']} T={meta['T']} "
          f"time={meta['timings']['total']:.1f}s -> {args.out}")
    return 0
