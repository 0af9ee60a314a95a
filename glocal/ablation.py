"""Ablations of the glocal estimator: ``glocal ablate extract`` and ``glocal ablate hpo``.

**On the extraction** (``glocal ablate extract``): the exact hypergradient trajectories that ``glocal extract``
saved (``results/extract/<task>/trajectory.npz``) are refitted with other estimator settings, one axis at a
time, the others at the extract section's values; no hypergradient is recomputed. The axes:

* ``delay``: time-delay depth d of the Hankel embedding;
* ``rank``: fixed POD ranks; ``energy``: POD energy thresholds; ``rank_rule``: the rank rule used when
  neither is set (full, oht, overdetermined);
* ``stride``: the record stride k (the paper's "frequency" of local hypergradients): the fit sees every k-th
  h_t of the prefix, ending at tau (offsets tau - j k), and extrapolates in units of k steps. The rows are
  subsampled from the recorded trajectory, which is exactly what a window recording every k-th step gives;
* ``tau``: the prefix (window) length itself, at the base settings (the ``delay`` rows at the base delay).

Each row compares the estimate with the extraction's target (h_T at full batch; the mean of h_T over the K
batch orders under mini-batches) and with the local hypergradient h_tau of the same prefix. Cost columns:
``fit_seconds`` (wall time of the fit), ``n_recorded`` (rows of the prefix the fit uses) and ``engine_ops``:
what recording those rows costs with the extraction's engine (forward mode: tau * q Jacobian-vector
products whatever the stride; reverse mode: one backward chain per recorded offset, sum of the offsets
vector-Jacobian products).

**On the HPO outcome** (``glocal ablate hpo``): runs of one task (``ablation.hpo.task``) with the glocal
options of ``ablation.hpo.base`` and one axis value (delay, rank, energy, rank_rule, record_stride, window,
update_every, estimator), each run as a strategy variant of glocal (:func:`glocal.config.ablation_hpo_axes`).
One command runs one axis (every value and seed) into ``<out>/<value>/seed<seed>/`` and writes
``<out>/index.json``; a restarted command reuses the finished runs.

Outputs and their columns: docs/ablations.md.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from glocal.config import (
    ConfigError,
    ablation_config,
    ablation_hpo_axes,
    extract_options,
    load_config,
    task_config,
)
from glocal.koopman import glocal_estimate
from glocal.utils import (
    add_threads_argument,
    apply_threads,
    atomic_write_csv,
    atomic_write_json,
    make_dirs,
    versions,
)

__all__ = [
    "ABLATION_COLUMNS",
    "EXTRACT_AXES",
    "ablate_trajectory",
    "ablation_settings",
    "run_ablate_extract",
    "run_ablate_hpo",
    "stride_offsets",
]

#: the axes of the extraction ablation, in the order of the table and the figure
EXTRACT_AXES = ("delay", "rank", "energy", "rank_rule", "stride", "tau")

ABLATION_COLUMNS = [
    "task", "setting", "batch_size", "window_start", "realization", "tau", "estimator", "axis", "value",
    "rel_error", "local_rel_error", "ratio_to_local", "cosine", "fallback", "reason", "rank", "n_recorded",
    "fit_seconds", "engine", "engine_ops",
]


def stride_offsets(tau: int, stride: int) -> list[int]:
    """The offsets (1-based steps of the window) a record stride k keeps of a prefix of tau steps: every k-th,
    ending at tau (the same rule as the training runs' ``record_stride``)."""
    k = max(1, min(int(stride), int(tau)))
    return list(range(tau - (tau - 1) // k * k, tau + 1, k))


def ablation_settings(section: Mapping[str, Any], base: Mapping[str, Any]) -> list[tuple[str, Any, dict[str, Any]]]:
    """(axis, value, glocal_estimate options and the stride) of every setting of the ``ablation.extract``
    section, each axis varied alone from ``base`` (delay, rank, energy, rank_rule of the extract options).
    The ``tau`` axis is the base setting itself (one row per tau); it is listed as (``tau``, None, base)."""
    b = {"delay": int(base.get("delay", 1)), "rank": base.get("rank"), "energy": base.get("energy"),
         "rank_rule": base.get("rank_rule", "full"), "stride": 1}
    out: list[tuple[str, Any, dict[str, Any]]] = [("tau", None, dict(b))]
    for d in section.get("delays") or []:
        out.append(("delay", int(d), {**b, "delay": int(d)}))
    for r in section.get("ranks") or []:
        out.append(("rank", int(r), {**b, "rank": int(r), "energy": None}))
    for e in section.get("energies") or []:
        out.append(("energy", float(e), {**b, "energy": float(e), "rank": None}))
    for rule in section.get("rank_rules") or []:
        out.append(("rank_rule", str(rule), {**b, "rank_rule": str(rule), "rank": None, "energy": None}))
    for k in section.get("strides") or []:
        out.append(("stride", int(k), {**b, "stride": int(k)}))
    return out


def _rel_cos(est: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    tn = float(torch.linalg.norm(target))
    diff = float(torch.linalg.norm(est - target))
    en = float(torch.linalg.norm(est))
    cos = float(est @ target) / (en * tn) if en > 0 and tn > 0 else float("nan")
    return (diff / tn if tn > 0 else diff), cos


def ablate_trajectory(h: torch.Tensor, steps: list[int], target: torch.Tensor, T: int, taus: list[int],
                      settings: list[tuple[str, Any, dict[str, Any]]], estimators: list[str], *,
                      engine: str = "forward", guards: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Rows of the extraction ablation for one recorded trajectory ``h`` (n_recorded, q) whose row i is
    h_{s->s+steps[i]}: for every tau (whose prefix 1..tau is recorded), setting and estimator, the estimate
    from the prefix (strided as the setting says) against ``target`` and the local h_tau.

    ``guards``: max_condition, max_norm_ratio, max_growing_share of :func:`glocal.koopman.glocal_estimate`.
    """
    guards = dict(guards or {})
    row_of = {int(st): i for i, st in enumerate(steps)}
    q = int(h.shape[1])
    rows: list[dict[str, Any]] = []
    for tau in taus:
        if any(t not in row_of for t in range(1, tau + 1)) or tau > T:
            continue
        local = h[row_of[tau]]
        local_err, _ = _rel_cos(local, target)
        for axis, value, opts in settings:
            offsets = stride_offsets(tau, opts["stride"])
            prefix = h[[row_of[t] for t in offsets]]
            stride = max(1, min(int(opts["stride"]), tau))
            ahead = math.ceil((T - tau) / stride)  # the fitted model steps once per recorded row
            ops = tau * q if engine == "forward" else sum(offsets)
            for est in estimators:
                t0 = time.perf_counter()
                e = glocal_estimate(prefix, estimator=est, delay=opts["delay"], rank=opts["rank"],
                                    energy=opts["energy"], rank_rule=opts["rank_rule"], steps_ahead=ahead, **guards)
                seconds = time.perf_counter() - t0
                err, cos = _rel_cos(e.value.to(target.dtype), target)
                rows.append({
                    "tau": tau, "estimator": est, "axis": axis, "value": "" if value is None else value,
                    "rel_error": err, "local_rel_error": local_err,
                    "ratio_to_local": err / local_err if local_err > 0 else float("nan"), "cosine": cos,
                    "fallback": int(e.fallback), "reason": e.reason or "", "rank": e.diagnostics.get("rank", 0),
                    "n_recorded": len(offsets), "fit_seconds": seconds, "engine": engine, "engine_ops": ops,
                })
    return rows


def run_ablate_extract(config: Mapping[str, Any], task: str, extract_dir: str | Path, out: str | Path
                       ) -> dict[str, Any]:
    """The extraction ablation of ``task`` from ``extract_dir`` (``trajectory.npz``, ``meta.json`` of
    ``glocal extract``) into ``out`` (``ablation.csv``, ``meta.json``); returns the meta dict."""
    t_all = time.perf_counter()
    task_config(config, task)
    ecfg = extract_options(config, task)
    if ecfg is None:
        raise ConfigError(f"tasks.{task}.extract: task {task!r} is not extracted, so there is nothing to ablate")
    section = dict((config.get("ablation") or {}).get("extract") or {})
    extract_dir, out = Path(extract_dir), Path(out)
    meta_path, npz_path = extract_dir / "meta.json", extract_dir / "trajectory.npz"
    for p in (meta_path, npz_path):
        if not p.is_file():
            raise FileNotFoundError(f"--extract: no {p.name} in {str(extract_dir)!r}; run glocal extract first")
    meta = json.loads(meta_path.read_text())
    T, taus, engine = int(meta["T"]), [int(t) for t in meta["taus"]], str(meta["engine"])
    settings = ablation_settings(section, ecfg)
    estimators = list(section.get("estimators") or ["limit", "horizon"])
    n_real = int(section.get("realizations") or 1)
    guards = {"max_condition": float(ecfg.get("max_condition", 1e8)),
              "max_norm_ratio": float(ecfg.get("max_norm_ratio", 10.0)),
              "max_growing_share": float(ecfg.get("max_growing_share", 0.5))}
    rows: list[dict[str, Any]] = []
    with np.load(npz_path) as npz:
        for entry in meta["settings"]:
            setting, s = entry["setting"], int(entry["window_start"])
            key = f"{setting}__s{s}"
            H = torch.as_tensor(npz[f"h__{key}"], dtype=torch.float64)
            steps = [int(x) for x in npz[f"steps__{key}"]]
            if T not in steps:
                raise ValueError(f"{npz_path}: h__{key} does not record the horizon T = {T}")
            target = H[:, steps.index(T)].mean(0)
            for k in range(min(n_real, H.shape[0])):
                base = {"task": task, "setting": setting, "batch_size": entry["batch_size"], "window_start": s,
                        "realization": k}
                rows += [{**base, **r} for r in ablate_trajectory(H[k], steps, target, T, taus, settings, estimators,
                                                                  engine=engine, guards=guards)]
    make_dirs(out)
    atomic_write_csv(out / "ablation.csv", rows, ABLATION_COLUMNS)
    info = {"task": task, "extract_dir": str(extract_dir), "T": T, "taus": taus, "engine": engine, "q": meta.get("q"),
            "estimators": estimators, "realizations": n_real, "axes": list(EXTRACT_AXES), "n_rows": len(rows),
            "base": {k: ecfg.get(k) for k in ("delay", "rank", "energy", "rank_rule")}, "section": section,
            "seconds": time.perf_counter() - t_all, "versions": versions()}
    atomic_write_json(out / "meta.json", info)
    return info


def run_ablate_hpo(config: Mapping[str, Any], axis: str, out: str | Path, *, task: str | None = None,
                   progress: bool = False) -> dict[str, Any]:
    """Every run of one axis of the HPO ablation (each value x seed of ``ablation.hpo``) into
    ``out/<value>/seed<seed>/``, reusing finished runs; writes and returns ``out/index.json``."""
    from glocal.train import run_or_reuse

    sec = (config.get("ablation") or {}).get("hpo") or {}
    task = task or sec.get("task", "reweight")
    if task != sec.get("task", "reweight"):
        raise ConfigError(f"--task: the HPO ablation's task is ablation.hpo.task = {sec.get('task')!r}, not {task!r}")
    axes = ablation_hpo_axes(config)
    if axis not in axes:
        raise ConfigError(f"--axis: {axis!r} is not an axis of ablation.hpo.axes (enabled: {sorted(axes)})")
    out = Path(out)
    entries = []
    for run in axes[axis]:
        cfg = ablation_config(config, run)
        for seed in sec.get("seeds") or [0]:
            rel = f"{run['label']}/seed{seed}"
            t0 = time.perf_counter()
            summary = run_or_reuse(cfg, task, run["variant"], int(seed), out / rel)
            if progress:
                print(f"ablate hpo {task}/{axis}={run['label']} seed {seed}: test_loss="
                      f"{summary['final'].get('test_loss')} ({time.perf_counter() - t0:.1f}s)", file=sys.stderr)
            entries.append({"axis": axis, "label": run["label"], "value": run["value"], "variant": run["variant"],
                            "options": run["options"], "seed": int(seed), "path": rel})
    index = {"task": task, "axis": axis, "runs": entries}
    make_dirs(out)
    atomic_write_json(out / "index.json", index)
    return index


# ------------------------------------------------------------------------------ CLI
def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glocal ablate``: two sub-commands, ``extract`` and ``hpo``."""
    sub = p.add_subparsers(dest="what", metavar="WHAT", required=True,
                           help="extract: refit an extraction's trajectories; hpo: the HPO runs of one axis")
    e = sub.add_parser("extract", help="refit the saved exact trajectories of one task with other estimator settings")
    e.add_argument("--config", help="experiment YAML (default: built-in defaults)")
    e.add_argument("--task", required=True, help="the extracted task")
    e.add_argument("--extract", required=True, help="its glocal extract output directory")
    e.add_argument("--out", required=True, help="output directory")
    add_threads_argument(e)
    h = sub.add_parser("hpo", help="the HPO runs of one ablation axis (ablation.hpo.axes.<axis>)")
    h.add_argument("--config", help="experiment YAML (default: built-in defaults)")
    h.add_argument("--task", default=None, help="the ablation's task (default: ablation.hpo.task)")
    h.add_argument("--axis", required=True, help="the glocal option varied")
    h.add_argument("--out", required=True, help="output directory (one run directory per value and seed)")
    h.add_argument("--progress", action="store_true", help="print a line per finished run")
    add_threads_argument(h)


def run(args: argparse.Namespace) -> int:
    """``glocal ablate``."""
    apply_threads(args.threads)
    config = load_config(args.config)
    if args.what == "extract":
        info = run_ablate_extract(config, args.task, args.extract, args.out)
        print(f"ablate extract {args.task}: {info['n_rows']} rows in {info['seconds']:.1f}s -> {args.out}")
    else:
        index = run_ablate_hpo(config, args.axis, args.out, task=args.task, progress=args.progress)
        print(f"ablate hpo {index['task']}/{args.axis}: {len(index['runs'])} runs -> {args.out}")
    return 0
