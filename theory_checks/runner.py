"""``glocal theory --out DIR``: the section-2 property checks at scale, written as JSON/CSV plus figures.

Outputs in DIR: checks.csv (check, case, inputs (JSON), measured, bound, passed), checks.json (the same rows),
error_vs_tau.csv, bound_vs_T.csv, spectrum.csv, noise.csv, complexity.csv (operation counts, and wall times
with their spread unless --no-timing), summary.json and the figures theory_error_vs_tau, theory_bound,
theory_spectrum (.png at 300 dpi and .pdf). Failed checks are results: the exit code is 0 unless something
raised.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch

#: defaults of the ``theory:`` config section (the schema keys) plus the keys this runner adds
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "n_cases": 20,
    "dims": [4, 16],
    "steps": 200,
    "taus": [5, 10, 20, 50, 100],
    "complexity_sizes": [50, 100, 200, 400],
    "koopman_dims": [1, 2],
    "noise_sigmas": [1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3],
    "complexity_qs": [2, 4, 8, 16, 32],
    "complexity_state": 65536,
    "noise_draws": 5,
}
SMALL: dict[str, Any] = {
    "n_cases": 3,
    "dims": [3],
    "steps": 40,
    "taus": [5, 10, 20, 30],
    "complexity_sizes": [4, 8, 16],
    "noise_sigmas": [1e-8, 1e-6, 1e-4],
    "complexity_qs": [2, 4, 8],
    "complexity_state": 8192,
    "noise_draws": 7,
}


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="YAML config; its `theory:` section sets the sizes")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--scale", choices=("small", "full"), default=None,
                   help="small: a quick run (< 1 min); full (default): the config's sizes")
    p.add_argument("--no-timing", dest="timing", action="store_false",
                   help="skip the wall-time sweeps (reported only; the complexity checks count operations)")


def resolve_settings(config_path: str | None, scale: str | None) -> dict[str, Any]:
    """The effective settings: DEFAULTS < config `theory:` section < the small profile (with --scale small)."""
    settings = dict(DEFAULTS)
    if config_path is not None:
        from glocal.config import load_config

        settings.update(load_config(config_path).get("theory", {}) or {})
    if scale == "small":
        settings.update(SMALL)
        settings["n_cases"] = min(int(settings["n_cases"]), SMALL["n_cases"])
    return settings


def _case_rows(case: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"case": case, **r} for r in rows]


def run(args: argparse.Namespace) -> int:
    from glocal.utils import atomic_write_csv, atomic_write_json
    from theory_checks import figures
    from theory_checks import properties as pr
    from theory_checks.quadratic import KINDS, make_problem

    t_start = time.perf_counter()
    cfg = resolve_settings(args.config, args.scale)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(int(cfg["seed"]))
    results: list[pr.CheckResult] = []
    seed, n_cases, T = int(cfg["seed"]), int(cfg["n_cases"]), int(cfg["steps"])

    # (i) engines and the bound at every T, on problems of the configured sizes p
    bound_rows = []
    for i in range(n_cases):
        kind = KINDS[i % len(KINDS)]
        p = int(cfg["dims"][(i // len(KINDS)) % len(cfg["dims"])])
        af = [0.5, 1.4, 0.9][i % 3]
        spec = pr.ProblemSpec(kind, p, 4 if kind == "ridge_weights" else 1, 10.0, af, seed * 1000 + i)
        P = make_problem(spec.kind, p=spec.p, q_or_n=spec.q, kappa=spec.kappa, alpha_fraction=spec.alpha_fraction,
                         seed=spec.seed)
        results += pr.check_engines(P, min(T, 60), case=spec.name(), inputs=spec.inputs())
        b = pr.check_bound(P, T, case=spec.name(), inputs=spec.inputs())
        results.append(b)
        for t, e, bd in zip(b.extra["T"].tolist(), b.extra["error"].tolist(), b.extra["bound"].tolist()):
            bound_rows.append({"case": spec.name(), "T": int(t), "error": e, "bound": bd})

    # (ii), (iii), (iv) on the Koopman cases (small n, exact thresholds)
    cases = pr.koopman_cases(n_cases, cfg["koopman_dims"], seed=seed)
    tau_rows, spec_rows, noise_rows = [], [], []
    trunc_ok = plain_ok = 0
    for spec in cases:
        P = spec.build()
        name, inp = spec.name(), spec.inputs()
        fl = pr.check_error_floor(P, case=name, inputs=inp)
        results += [fl, pr.check_beats_local(P, case=name, inputs=inp)]
        if spec.p == 1:  # Jordan blocks of p >= 2 sit below the float64 Hankel floor: spectrum on p = 1
            s = pr.check_spectrum(P, case=name, inputs=inp)
            results.append(s)
            for which, vals in (("true", s.extra["true"]), ("fitted", s.extra["fitted"])):
                spec_rows += [{"case": name, "which": which, "re": float(z.real), "im": float(z.imag)}
                              for z in vals.tolist()]
        n, d = fl.inputs["n"], fl.inputs["d"]
        thr = n + d + 1
        taus = {t for t in cfg["taus"] if t <= 4 * thr} | set(range(d + 2, thr + 6)) | {2 * thr, 3 * thr}
        rows = pr.error_vs_tau(P, sorted(taus))
        tau_rows += _case_rows(name, rows)
        after = [r for r in rows if r["tau"] >= thr]
        trunc_ok += all(r["glocal_error"] <= pr.FLOOR_TOL for r in after)
        plain_ok += all(r["plain_error"] <= pr.FLOOR_TOL for r in after)
        nz = pr.check_noise(P, cfg["noise_sigmas"], n_draws=int(cfg["noise_draws"]), seed=seed, case=name, inputs=inp)
        results.append(nz)
        noise_rows += [{"case": name, "sigma": s_, "error": e} for s_, e in zip(nz.extra["sigma"], nz.extra["error"])]
    # rank choice: rank-n truncation reaches the floor at every tau >= n + d + 1 in every case; the plain
    # pseudo-inverse is reported for comparison (measured: fraction of cases where it reaches the floor)
    nc = max(1, len(cases))
    results.append(pr.CheckResult("rank_choice", "all", {"n_cases": len(cases), "plain_fraction": plain_ok / nc},
                                  trunc_ok / nc, 1.0, trunc_ok == len(cases),
                                  {"plain_fraction": plain_ok / nc}))

    # (v) complexity: exponents of the operation counts (checked, deterministic), and wall times at the
    # configured state size (reported with their spread, not checked: load and per-call overhead move them)
    comp_rows, timing = [], []
    ps = int(cfg["complexity_state"])
    sizes = [int(s) for s in cfg["complexity_sizes"]]
    for kind, sz, fixed in (("tau", sizes, 4), ("q", [int(q) for q in cfg["complexity_qs"]], min(sizes)),
                            ("T", [4 * s_ for s_ in sizes], 4)):
        c = pr.measure_complexity(kind, sz, fixed=fixed)
        results.append(c)
        tm = pr.measure_timing(kind, sz, p=ps, fixed=fixed, repeats=3) if getattr(args, "timing", True) else None
        if tm is not None:
            timing.append(tm)
        times = {} if tm is None else {s_: i for i, s_ in enumerate(tm["sizes"])}
        for s_ in sorted(set(c.extra["sizes"]) | set(times)):
            row = {"check": c.check, "size": s_, "operations": "", "time_median_s": "", "time_min_s": "",
                   "time_max_s": ""}
            if s_ in c.extra["sizes"]:
                row["operations"] = int(c.extra["counts"][c.extra["sizes"].index(s_)])
            if s_ in times:
                i = times[s_]
                row.update(time_median_s=tm["median_s"][i], time_min_s=tm["min_s"][i], time_max_s=tm["max_s"][i])
            comp_rows.append(row)

    # outputs
    rows = [r.row() for r in results]
    atomic_write_csv(out / "checks.csv", rows, ["check", "case", "inputs", "measured", "bound", "passed"])
    atomic_write_json(out / "checks.json", [dict(r, inputs=json.loads(r["inputs"])) for r in rows])
    atomic_write_csv(out / "error_vs_tau.csv", tau_rows,
                     ["case", "n", "d", "tau", "threshold", "glocal_error", "plain_error", "local_error", "fallback"])
    atomic_write_csv(out / "bound_vs_T.csv", bound_rows, ["case", "T", "error", "bound"])
    atomic_write_csv(out / "spectrum.csv", spec_rows, ["case", "which", "re", "im"])
    atomic_write_csv(out / "noise.csv", noise_rows, ["case", "sigma", "error"])
    atomic_write_csv(out / "complexity.csv", comp_rows,
                     ["check", "size", "operations", "time_median_s", "time_min_s", "time_max_s"])
    figures.plot_error_vs_tau(_pick(tau_rows), out)
    figures.plot_bound(bound_rows, out)
    figures.plot_spectrum(spec_rows, out)

    by_check: dict[str, dict[str, int]] = {}
    for r in results:
        d_ = by_check.setdefault(r.check, {"passed": 0, "failed": 0})
        d_["passed" if r.passed else "failed"] += 1
    err_checks = [r for r in results if r.check in ("floor", "bound", "engines_forward", "engines_reverse",
                                                     "engines_fd")]
    worst = max(err_checks, key=lambda r: r.ratio) if err_checks else None
    worst_bound = max((r for r in results if r.check == "bound"), key=lambda r: r.ratio, default=None)
    summary = {
        "n_checks": len(results),
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "by_check": by_check,
        "max_error_to_bound_ratio": worst.ratio if worst else None,
        "max_error_to_bound_check": {"check": worst.check, "case": worst.case} if worst else None,
        "max_bound_ratio": worst_bound.ratio if worst_bound else None,
        "max_ratio_by_check": {c: max(r.ratio for r in results if r.check == c) for c in by_check},
        "timing": [{k: t[k] for k in ("check", "p", "fixed", "sizes", "median_s", "min_s", "max_s", "slope",
                                      "expected")} for t in timing],
        "settings": cfg,
        "scale": args.scale or "full",
        "wall_time_s": time.perf_counter() - t_start,
    }
    try:
        from glocal.utils import versions

        summary["versions"] = versions()
    except Exception:  # pragma: no cover
        pass
    atomic_write_json(out / "summary.json", summary)
    print(f"glocal theory: {summary['passed']}/{summary['n_checks']} checks passed "
          f"({summary['failed']} failed); largest error/bound ratio {summary['max_error_to_bound_ratio']:.3g} "
          f"({summary['max_error_to_bound_check']}); {summary['wall_time_s']:.1f} s -> {out}")
    return 0


def _pick(tau_rows: list[dict[str, Any]], k: int = 4) -> list[dict[str, Any]]:
    """One error-vs-tau case per (kind, p), at most k, for the figure."""
    chosen: dict[str, str] = {}
    for r in tau_rows:
        key = r["case"].split("-k")[0].rsplit("-q", 1)[0]
        if key not in chosen and len(chosen) < k:
            chosen[key] = r["case"]
    keep = set(chosen.values())
    return [r for r in tau_rows if r["case"] in keep]
