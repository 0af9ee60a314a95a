"""The property checks of docs/design.md section 5 as plain functions (shared by the tests and ``glocal theory``).

Every check returns :class:`CheckResult` objects: the inputs, one measured number, the bound it is held to
and pass/fail (plus ``extra`` data for figures). Checks:

* ``engines_*`` (i)  closed form == forward mode == reverse mode == finite differences.
* ``spectrum`` (ii)  the eigenvalues of the fitted Hankel-DMD model (plus the constant mode 1) match the exact
  Koopman spectrum ``problem.spectrum()`` (Jordan blocks counted with their size).
* ``floor`` / ``beats_local`` (iii)  with d * q >= n, tau = n + d + 1 and POD rank n, the glocal limit
  estimate reaches relative error <= 1e-5, and is >= 100x below the local h_tau error.
* ``bound`` (iii)  ||h_T - h_inf|| <= the Jordan-form bound at every T (measured: the largest ratio).
* ``rank_choice``  the plain (untruncated) pseudo-inverse fit, for comparison.
* ``noise`` (iv)  with trajectory noise sigma, the change of the estimate grows at most linearly in sigma.
* ``complexity_*`` (v)  the operation count of the engines grows with tau, q and T as the complexity table of
  docs/design.md says: the log-log slope of its increments between consecutive sizes (the exponent of the
  leading term) matches the table's exponent. Counts are deterministic; wall times are measured beside them
  (:func:`measure_timing`) and reported, not checked (on small problems the per-step dispatch overhead, not
  the arithmetic, sets the time).

Fault injection (:func:`estimate_with_fault`) re-implements the estimator with a deliberate bug on top of
:func:`glocal.koopman.hankel_dmd`, so the tests can show that the properties catch a broken estimator.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode  # the base class torch.utils.flop_counter uses
from torch.utils._pytree import tree_flatten

from theory_checks import bounds
from theory_checks.quadratic import DTYPE, QuadraticProblem, make_problem

__all__ = [
    "FAULTS",
    "FLOOR_TOL",
    "LOCAL_FACTOR",
    "CheckResult",
    "Estimate",
    "ProblemSpec",
    "check_beats_local",
    "check_bound",
    "check_complexity",
    "check_engines",
    "check_error_floor",
    "check_noise",
    "check_spectrum",
    "count_forward_q",
    "count_forward_tau",
    "count_operations",
    "count_reverse_T",
    "delay_for",
    "error_vs_tau",
    "estimate",
    "estimate_with_fault",
    "koopman_cases",
    "leading_exponent",
    "match_spectrum",
    "measure_complexity",
    "measure_timing",
    "problem_scale",
    "time_forward_tau",
    "time_forward_q",
    "time_reverse_T",
]

FAULTS = ("no_constant", "wrong_delay", "transposed")
FLOOR_TOL = 1e-5  # relative error floor the glocal estimate must reach (docs/design.md section 5)
LOCAL_FACTOR = 100.0  # ... and this many times below the local error at tau = n + d + 1
LOCAL_AT_FLOOR = 1e-12  # a local error already this small leaves no room to be 100x below it
MODE_WEIGHT = 1e-6  # modes contributing less than this (relative) are below the Hankel conditioning floor
SPECTRUM_TOL = 1e-3  # |mu_fit - mu_true| (loose: Jordan blocks split by ~sqrt(perturbation))
ENGINE_TOL = 1e-11  # forward / reverse vs the closed form (relative to max_t ||h_t||; measured <= 3.3e-13)
NOISE_SLOPE_TOL = 0.25  # log-log slope of the noise response must be <= 1 + this
SLOPE_TOL = 0.05  # complexity: |exponent of the operation count's leading term - expected| <= this
COUNT_STATE = 1024  # state size of the counting problem (every count is proportional to it)


@dataclass
class CheckResult:
    """One row of checks.csv: ``measured`` is compared with ``bound`` (pass: ``passed``)."""

    check: str
    case: str
    inputs: dict[str, Any]
    measured: float
    bound: float
    passed: bool
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        """measured / bound (how close to failing; > 1 usually means failed)."""
        if self.bound == 0:
            return math.inf if self.measured > 0 else 0.0
        return abs(self.measured) / abs(self.bound)

    def row(self) -> dict[str, Any]:
        import json

        return {
            "check": self.check,
            "case": self.case,
            "inputs": json.dumps(self.inputs, sort_keys=True, default=float),
            "measured": self.measured,
            "bound": self.bound,
            "passed": bool(self.passed),
        }


# ----------------------------------------------------------------------------------------------------
# problems
# ----------------------------------------------------------------------------------------------------
@dataclass
class ProblemSpec:
    """Arguments of :func:`theory_checks.quadratic.make_problem` (hashable, JSON-able)."""

    kind: str = "spd_decay"
    p: int = 1
    q: int = 1  # number of example weights for ridge_weights (ignored otherwise: q = 1)
    kappa: float = 3.0
    alpha_fraction: float = 1.3
    seed: int = 0

    def build(self) -> QuadraticProblem:
        return make_problem(self.kind, p=self.p, q_or_n=self.q, kappa=self.kappa,
                            alpha_fraction=self.alpha_fraction, seed=self.seed)

    def name(self) -> str:
        return f"{self.kind}-p{self.p}-q{self.q}-k{self.kappa:.3g}-a{self.alpha_fraction:.3g}-s{self.seed}"

    def inputs(self) -> dict[str, Any]:
        return {"kind": self.kind, "p": self.p, "q": self.q, "kappa": self.kappa,
                "alpha_fraction": self.alpha_fraction, "seed": self.seed}


def koopman_cases(n_cases: int, dims: Sequence[int] = (1, 2), seed: int = 0,
                  kinds: Sequence[str] = ("spd_decay", "ridge_weights", "step_size")) -> list[ProblemSpec]:
    """Seeded problems in the regime where float64 Hankel-DMD reaches the floor.

    p = 1 uses alpha_fraction in [0.3, 0.75] U [1.25, 1.7] (|eig(A)| >= 0.25, so the local error at
    tau = n + d + 1 stays well above the floor) and kappa in [1.5, 5]. p = 2 (spd_decay,
    step_size) uses alpha_fraction in [0.6, 0.75] and kappa in [1.5, 2.5]: slower, clustered modes make the
    Hankel matrix too ill-conditioned for 1e-5 at tau = n + d + 1, faster ones leave the local error at
    tau = n + d + 1 too close to the floor for the 100x margin. ridge_weights (p = 1) uses q = 2 or 3 example
    weights, so d = ceil(n / q) < n exercises the vector delay embedding.
    """
    g = torch.Generator().manual_seed(int(seed))
    out = []
    for i in range(int(n_cases)):
        kind = kinds[i % len(kinds)]
        p = int(dims[(i // len(kinds)) % len(dims)])
        u = torch.rand(3, generator=g, dtype=DTYPE).tolist()
        if kind == "ridge_weights":
            p = 1  # q >= 2 example weights with p >= 2: too few snapshots at tau = n + d + 1 for 1e-5
        if p == 1:
            af = 0.3 + 0.45 * u[0] if u[1] < 0.4 else 1.25 + 0.45 * u[0]
            kappa = 1.5 + 3.5 * u[2]
        else:
            af = 0.6 + 0.15 * u[0]
            kappa = 1.5 + 1.0 * u[2]
        q = 2 + (i % 2) if kind == "ridge_weights" else 1
        out.append(ProblemSpec(kind, p, q, round(kappa, 4), round(af, 4), int(seed) * 1000 + i))
    return out


def delay_for(problem: QuadraticProblem, n: int | None = None) -> int:
    """Smallest delay with d * q >= n."""
    n = problem.koopman_dimension_count() if n is None else n
    return max(1, math.ceil(n / problem.q))


def problem_scale(problem: QuadraticProblem, T: int = 50) -> float:
    """||h_inf||, or (step_size: h_inf = 0) the largest ||h_t|| of the first T steps."""
    s = float(torch.linalg.vector_norm(problem.h_inf()))
    if s > 0:
        return s
    return float(torch.linalg.vector_norm(problem.h_trajectory(T), dim=-1).max())


def _err(a: torch.Tensor, b: torch.Tensor, scale: float) -> float:
    return float(torch.linalg.vector_norm(torch.as_tensor(a, dtype=DTYPE) - b)) / scale


# ----------------------------------------------------------------------------------------------------
# estimators (the correct one is glocal.koopman; the faulty ones are built here)
# ----------------------------------------------------------------------------------------------------
@dataclass
class Estimate:
    value: torch.Tensor  # (q,)
    eigenvalues: torch.Tensor  # complex; includes the constant mode 1 when the fit has one
    fallback: bool = False
    reason: str | None = None


def estimate(traj: torch.Tensor, *, delay: int, rank: int | None) -> Estimate:
    """The library's ``limit`` estimator (glocal.koopman.glocal_estimate) with the constant mode appended."""
    from glocal.koopman import glocal_estimate

    est = glocal_estimate(traj, estimator="limit", delay=delay, rank=rank)
    eig = est.diagnostics.get("eigenvalues", torch.zeros(0, dtype=torch.complex128)).to(torch.complex128)
    eig = torch.cat([eig, torch.ones(1, dtype=torch.complex128)])
    return Estimate(est.value.reshape(-1), eig, est.fallback, est.reason)


def plain_estimate(traj: torch.Tensor, *, delay: int) -> Estimate:
    """Hankel-DMD limit without any rank truncation: full delay vectors and an untruncated pseudo-inverse."""
    traj = traj if traj.ndim == 2 else traj[:, None]
    tau, q = traj.shape
    m = tau - delay + 1
    G = torch.stack([traj[j : j + delay].reshape(-1) for j in range(m)], dim=1)
    G0, G1 = G[:, :-1], G[:, 1:]
    Phi = torch.cat([G0, torch.ones(1, m - 1, dtype=G.dtype)])
    M = G1 @ torch.linalg.pinv(Phi, rtol=0.0)
    k = G.shape[0]
    A, c = M[:, :k], M[:, k]
    eye = torch.eye(k, dtype=G.dtype)
    y = torch.linalg.lstsq(eye - A, c[:, None]).solution[:, 0]
    eig = torch.cat([torch.linalg.eigvals(A).to(torch.complex128), torch.ones(1, dtype=torch.complex128)])
    return Estimate(y[-q:], eig)


def estimate_with_fault(traj: torch.Tensor, fault: str | None, *, delay: int, rank: int | None) -> Estimate:
    """The limit estimator with an injected bug (``fault`` in :data:`FAULTS`; ``None``: the correct one).

    * ``no_constant``: the constant observable is dropped (``hankel_dmd(constant=False)``); the limit
      y* = (I - A)^{-1} c is then computed with c = 0.
    * ``wrong_delay``: delay 1 instead of d (no delay embedding), so d * q < n and modes are not observable.
    * ``transposed``: the fitted matrix is used transposed (same eigenvalues, wrong eigenvectors).
    """
    from glocal.koopman import hankel_dmd

    if fault is None:
        return estimate(traj, delay=delay, rank=rank)
    if fault not in FAULTS:
        raise ValueError(f"fault must be one of {FAULTS} or None, got {fault!r}")
    if fault == "wrong_delay":
        return estimate(traj, delay=1, rank=rank)
    fit = hankel_dmd(traj, delay=delay, rank=rank, constant=(fault != "no_constant"))
    A = fit.A.T if fault == "transposed" else fit.A
    eye = torch.eye(fit.rank, dtype=A.dtype)
    y = torch.linalg.lstsq(eye - A, fit.c[:, None]).solution[:, 0]
    eig = torch.linalg.eigvals(A).to(torch.complex128)
    if fault != "no_constant":
        eig = torch.cat([eig, torch.ones(1, dtype=torch.complex128)])
    return Estimate(fit.unembed(y), eig)


EstimatorFn = Callable[..., Estimate]


def _estimator(fault: str | None) -> EstimatorFn:
    def fn(traj, *, delay, rank):
        return estimate_with_fault(traj, fault, delay=delay, rank=rank)

    return fn


# ----------------------------------------------------------------------------------------------------
# (i) engines
# ----------------------------------------------------------------------------------------------------
def check_engines(problem: QuadraticProblem, T: int, case: str = "", inputs: dict | None = None,
                  fd_eps: float = 1e-5) -> list[CheckResult]:
    """Forward mode, reverse mode and central differences against the closed form h_1..h_T.

    The engines are held to ``ENGINE_TOL`` (relative to max_t ||h_t||). Central differences are held, one
    coordinate at a time, to their own error level at step ``fd_eps``
    (:func:`theory_checks.bounds.finite_difference_error`: truncation from the Richardson estimate of f'''
    at fd_eps and 2 fd_eps, rounding through the T unrolled steps), not to a fixed loose tolerance; measured
    is the largest error / bound, which must not exceed 1."""
    from glocal import hypergrad

    inputs = dict(inputs or {}, T=T)
    step, val, batches = problem.torch_step_fn(), problem.torch_val_fn(), problem.batches(T)
    ref = problem.h_trajectory(T)
    scale = float(torch.linalg.vector_norm(ref, dim=-1).max()) or 1.0
    fwd_res = hypergrad.forward_trajectory(step, val, problem.theta0, problem.phi, batches)
    fwd = fwd_res.h
    rev = hypergrad.reverse_hypergradient(step, val, problem.theta0, problem.phi, batches).h
    fd = hypergrad.finite_difference_hypergradient(step, val, problem.theta0, problem.phi, batches, eps=fd_eps)
    fd2 = hypergrad.finite_difference_hypergradient(step, val, problem.theta0, problem.phi, batches, eps=2 * fd_eps)
    e_fwd = float(torch.linalg.vector_norm(fwd - ref, dim=-1).max()) / scale
    e_rev = _err(rev, ref[-1], scale)
    value_scale = bounds.rounding_scale(val, fwd_res.final_state, problem.phi)
    fd_bound = bounds.finite_difference_error(fd_eps, value_scale=value_scale, steps=T,
                                              third_derivative=bounds.richardson_third_derivative(fd, fd2, fd_eps))
    e_fd = float(((fd - ref[-1]).abs() / fd_bound).max())
    return [
        CheckResult("engines_forward", case, inputs, e_fwd, ENGINE_TOL, e_fwd <= ENGINE_TOL),
        CheckResult("engines_reverse", case, inputs, e_rev, ENGINE_TOL, e_rev <= ENGINE_TOL),
        CheckResult("engines_fd", case, dict(inputs, fd_eps=fd_eps), e_fd, 1.0, e_fd <= 1.0),
    ]


# ----------------------------------------------------------------------------------------------------
# (ii) spectrum
# ----------------------------------------------------------------------------------------------------
def mode_weights(problem: QuadraticProblem, tau: int) -> list[tuple[float, int, float]]:
    """(mu, Jordan size, weight) per exact mode; weight = max_{t <= tau} ||mode(t)|| / max over modes."""
    t = torch.arange(1, tau + 1, dtype=DTYPE)
    ws = [(md.mu, md.size, float(torch.linalg.vector_norm(md(t), dim=-1).max())) for md in problem.modes()]
    top = max((w for _, _, w in ws), default=1.0) or 1.0
    return [(mu, size, w / top) for mu, size, w in ws]


def true_spectrum(problem: QuadraticProblem, tau: int | None = None, min_weight: float = 0.0) -> torch.Tensor:
    """Exact Koopman eigenvalues, each repeated by its Jordan block size (complex128); with ``tau``, only the
    modes whose largest contribution over the window is >= ``min_weight`` x the largest mode's."""
    if tau is None:
        mus = [mu for mu, size in problem.spectrum() for _ in range(size)]
    else:
        mus = [mu for mu, size, w in mode_weights(problem, tau) if w >= min_weight for _ in range(size)]
    return torch.tensor(mus, dtype=torch.complex128)


def match_spectrum(true: torch.Tensor, fitted: torch.Tensor) -> tuple[float, list[tuple[int, int]]]:
    """Optimal matching of every true eigenvalue to a distinct fitted one; (max distance, pairs).

    Infinite distance when there are fewer fitted than true eigenvalues (a mode is missing)."""
    from scipy.optimize import linear_sum_assignment

    t = true.numpy()
    f = fitted.numpy()
    if len(f) < len(t):
        cost = abs(t[:, None] - f[None, :]) if len(f) else None
        pairs = []
        if cost is not None:
            rows, cols = linear_sum_assignment(cost.T)  # match each fitted to a true one
            pairs = [(int(c), int(r)) for r, c in zip(rows, cols)]
        return math.inf, pairs
    cost = abs(t[:, None] - f[None, :])
    rows, cols = linear_sum_assignment(cost)
    return float(cost[rows, cols].max()) if len(rows) else 0.0, [(int(r), int(c)) for r, c in zip(rows, cols)]


def check_spectrum(problem: QuadraticProblem, *, tau: int | None = None, fault: str | None = None,
                   case: str = "", inputs: dict | None = None, tol: float = SPECTRUM_TOL,
                   min_weight: float = MODE_WEIGHT) -> CheckResult:
    """Spectrum recovery at d = ceil(n / q), r = n, tau = n + d + 1 (default).

    Every significant exact mode (largest contribution over the window >= ``min_weight`` x the largest mode's;
    modes below that sit under the float64 conditioning floor of the Hankel matrix) must be matched, one to
    one, by a fitted eigenvalue within ``tol``; measured = the largest matched distance."""
    n = problem.koopman_dimension_count()
    d = delay_for(problem, n)
    tau = n + d + 1 if tau is None else tau
    est = estimate_with_fault(problem.h_trajectory(tau), fault, delay=d, rank=n)
    true = true_spectrum(problem, tau, min_weight)
    dist, _ = match_spectrum(true, est.eigenvalues)
    inputs = dict(inputs or {}, n=n, d=d, tau=tau, rank=n, fault=fault, n_significant=len(true),
                  min_weight=min_weight)
    return CheckResult("spectrum", case, inputs, dist, tol, dist <= tol,
                       {"true": true_spectrum(problem), "significant": true, "fitted": est.eigenvalues})


# ----------------------------------------------------------------------------------------------------
# (iii) error floor, beats local, bound
# ----------------------------------------------------------------------------------------------------
def error_floor(problem: QuadraticProblem, tau: int | None = None, fault: str | None = None,
                estimator: EstimatorFn | None = None) -> dict[str, Any]:
    """Relative errors of the glocal limit estimate and of the local h_tau against h_inf."""
    n = problem.koopman_dimension_count()
    d = delay_for(problem, n)
    tau = n + d + 1 if tau is None else tau
    traj = problem.h_trajectory(tau)
    hinf = problem.h_inf()
    scale = problem_scale(problem)
    fn = estimator or _estimator(fault)
    est = fn(traj, delay=d, rank=n)
    return {"n": n, "d": d, "tau": tau, "glocal": _err(est.value, hinf, scale), "local": _err(traj[-1], hinf, scale),
            "fallback": est.fallback, "reason": est.reason}


def check_error_floor(problem: QuadraticProblem, *, tau: int | None = None, fault: str | None = None,
                      case: str = "", inputs: dict | None = None, tol: float = FLOOR_TOL) -> CheckResult:
    """(iii) relative error of the glocal limit <= ``tol`` once d * q >= n and tau >= n + d + 1 (r = n)."""
    r = error_floor(problem, tau, fault)
    inputs = dict(inputs or {}, n=r["n"], d=r["d"], tau=r["tau"], rank=r["n"], fault=fault)
    return CheckResult("floor", case, inputs, r["glocal"], tol, r["glocal"] <= tol, r)


def check_beats_local(problem: QuadraticProblem, *, fault: str | None = None, case: str = "",
                      inputs: dict | None = None, factor: float = LOCAL_FACTOR) -> CheckResult:
    """(iii) at tau = n + d + 1 the glocal error is >= ``factor`` x below the local error.

    Measured: glocal / local error; bound 1 / factor. A local error already below 1e-12 (fast problems)
    leaves no room for the factor; then the check passes when the glocal error is below it as well."""
    r = error_floor(problem, None, fault)
    ratio = r["glocal"] / max(r["local"], 1e-300)
    at_floor = r["local"] <= LOCAL_AT_FLOOR
    passed = ratio <= 1.0 / factor or (at_floor and r["glocal"] <= LOCAL_AT_FLOOR)
    inputs = dict(inputs or {}, n=r["n"], d=r["d"], tau=r["tau"], fault=fault)
    return CheckResult("beats_local", case, inputs, ratio, 1.0 / factor, passed, dict(r, local_at_floor=at_floor))


def bound_curve(problem: QuadraticProblem, T: int, engine: bool = True) -> dict[str, torch.Tensor]:
    """||h_T - h_inf|| for T = 1..T (forward-mode engine, or the closed form) and the Jordan-form bound."""
    if engine:
        from glocal.hypergrad import forward_trajectory

        h = forward_trajectory(problem.torch_step_fn(), problem.torch_val_fn(), problem.theta0, problem.phi,
                               problem.batches(T)).h
    else:
        h = problem.h_trajectory(T)
    Ts = torch.arange(1, T + 1, dtype=DTYPE)
    err = torch.linalg.vector_norm(h - problem.h_inf(), dim=-1)
    return {"T": Ts, "error": err, "bound": bounds.error_bound(problem, Ts, form="jordan")}


def check_bound(problem: QuadraticProblem, T: int, *, case: str = "", inputs: dict | None = None,
                engine: bool = True, rel_slack: float = 1e-10) -> CheckResult:
    """||h_T - h_inf|| <= bound(T) at every T = 1..T; measured = max_T error / (bound + slack)."""
    cur = bound_curve(problem, T, engine)
    slack = rel_slack * float(cur["error"].max() + cur["bound"].max())
    ratio = float((cur["error"] / (cur["bound"] + slack)).max())
    inputs = dict(inputs or {}, T=T, form="jordan", engine=engine)
    return CheckResult("bound", case, inputs, ratio, 1.0, ratio <= 1.0, cur)


def error_vs_tau(problem: QuadraticProblem, taus: Sequence[int]) -> list[dict[str, Any]]:
    """Glocal (rank n), plain pseudo-inverse and local relative errors for every tau (d fixed at ceil(n/q))."""
    n = problem.koopman_dimension_count()
    d = delay_for(problem, n)
    hinf, scale = problem.h_inf(), problem_scale(problem)
    T = max(taus)
    full = problem.h_trajectory(T)
    rows = []
    for tau in sorted(set(int(t) for t in taus)):
        if tau < d + 2:
            continue
        traj = full[:tau]
        g = estimate(traj, delay=d, rank=n)
        pl = plain_estimate(traj, delay=d)
        rows.append({"n": n, "d": d, "tau": tau, "threshold": n + d + 1,
                     "glocal_error": _err(g.value, hinf, scale), "plain_error": _err(pl.value, hinf, scale),
                     "local_error": _err(traj[-1], hinf, scale), "fallback": g.fallback})
    return rows


# ----------------------------------------------------------------------------------------------------
# (iv) noise
# ----------------------------------------------------------------------------------------------------
def noise_response(problem: QuadraticProblem, sigmas: Sequence[float], *, n_draws: int = 5, seed: int = 0,
                   tau: int | None = None) -> dict[str, Any]:
    """Median over draws of ||est(traj + sigma * s * N(0, 1)) - est(traj)|| / scale for every sigma.

    s is the largest |h_t| of the window (the noise is relative to the trajectory's size)."""
    n = problem.koopman_dimension_count()
    d = delay_for(problem, n)
    tau = 2 * (n + d) + 1 if tau is None else tau
    traj = problem.h_trajectory(tau)
    s = float(traj.abs().max())
    scale = problem_scale(problem)
    base = estimate(traj, delay=d, rank=n).value
    g = torch.Generator().manual_seed(int(seed))
    med = []
    for sigma in sigmas:
        errs = []
        for _ in range(n_draws):
            noisy = traj + sigma * s * torch.randn(traj.shape, generator=g, dtype=DTYPE)
            errs.append(_err(estimate(noisy, delay=d, rank=n).value, base, scale))
        med.append(float(torch.tensor(errs).median()))
    return {"n": n, "d": d, "tau": tau, "sigma": list(map(float, sigmas)), "error": med,
            "base_error": _err(base, problem.h_inf(), scale)}


def check_noise(problem: QuadraticProblem, sigmas: Sequence[float] = (1e-9, 1e-8, 1e-7, 1e-6, 1e-5),
                *, n_draws: int = 5, seed: int = 0, case: str = "", inputs: dict | None = None,
                tol: float = NOISE_SLOPE_TOL) -> CheckResult:
    """(iv) the noise-induced error grows at most linearly: fitted log-log slope <= 1 + tol.

    A super-linear response (a noise-amplifying fit) gives a slope near 2 and fails."""
    r = noise_response(problem, sigmas, n_draws=n_draws, seed=seed)
    pos = [(s, e) for s, e in zip(r["sigma"], r["error"]) if e > 0]
    slope = bounds.fit_loglog_slope([s for s, _ in pos], [e for _, e in pos]) if len(pos) >= 2 else 0.0
    lip = max((e / s for s, e in pos), default=0.0)
    r.update(slope=slope, lipschitz=lip)
    inputs = dict(inputs or {}, n=r["n"], d=r["d"], tau=r["tau"], sigmas=r["sigma"], n_draws=n_draws)
    return CheckResult("noise", case, inputs, slope, 1.0 + tol, slope <= 1.0 + tol, r)


# ----------------------------------------------------------------------------------------------------
# (v) complexity
# ----------------------------------------------------------------------------------------------------
def _timing_problem(p: int, q: int, seed: int = 0):
    """Separable quadratic inner problem with a state of size p and q weight-decay blocks (cost of a step and
    of each tangent direction is O(p), so time ~ tau * q * p for forward mode and ~ T * p for reverse)."""
    g = torch.Generator().manual_seed(seed)
    h = 0.1 + torch.rand(p, generator=g, dtype=DTYPE)
    b = torch.randn(p, generator=g, dtype=DTYPE)
    target = torch.randn(p, generator=g, dtype=DTYPE)
    blk = torch.arange(p) % q
    alpha = 0.5

    def step(state, phi, batch=None):
        wd = torch.exp(phi)[blk]
        return state - alpha * ((h + wd) * state - b)

    def val(state, phi=None):
        r = state - target
        return 0.5 * (r * r).mean()

    return step, val, torch.zeros(p, dtype=DTYPE), torch.full((q,), -2.0, dtype=DTYPE)


class _ElementCounter(TorchDispatchMode):
    """Counts the elements read and written by every aten operation that runs under it.

    The mode sits below ``vmap``/``jvp`` in the dispatcher, so it sees the batched (q x P) tensors the
    transforms really compute with. View operations move no data and are not counted."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            leaves = tree_flatten((args, kwargs, out))[0]
            self.elements += sum(x.numel() for x in leaves if isinstance(x, torch.Tensor))
        return out


def count_operations(fn: Callable[[], Any]) -> int:
    """Elements read plus elements written by all aten operations of ``fn()``: an operation count that,
    unlike wall time, does not depend on machine load or per-call overhead."""
    with _ElementCounter() as counter:
        fn()
    return counter.elements


def count_forward_tau(taus: Sequence[int], *, p: int = COUNT_STATE, q: int) -> list[int]:
    """Operation counts of ``forward_trajectory`` (every step recorded) over windows of length tau."""
    from glocal.hypergrad import forward_trajectory

    step, val, s0, phi = _timing_problem(p, q)
    return [count_operations(lambda t=t: forward_trajectory(step, val, s0, phi, [None] * t)) for t in taus]


def count_forward_q(qs: Sequence[int], *, p: int = COUNT_STATE, tau: int) -> list[int]:
    """Operation counts of ``forward_trajectory`` over a window of length tau for q hyperparameters."""
    from glocal.hypergrad import forward_trajectory

    out = []
    for q in qs:
        step, val, s0, phi = _timing_problem(p, q)
        out.append(count_operations(lambda a=(step, val, s0, phi): forward_trajectory(*a, [None] * tau)))
    return out


def count_reverse_T(Ts: Sequence[int], *, p: int = COUNT_STATE, q: int = 4) -> list[int]:
    """Operation counts of ``reverse_hypergradient`` (default checkpointing) over horizons T."""
    from glocal.hypergrad import reverse_hypergradient

    step, val, s0, phi = _timing_problem(p, q)
    return [count_operations(lambda t=t: reverse_hypergradient(step, val, s0, phi, [None] * t)) for t in Ts]


def leading_exponent(sizes: Sequence[int], counts: Sequence[float]) -> float:
    """Exponent e of the leading term of count(size) = a + b size^e + (lower terms): the log-log slope of
    the increments count(size_{i+1}) - count(size_i) against size_i (on a geometric grid the increments of
    b size^e are b (r^e - 1) size_i^e; the constant a, e.g. the primal step that forward mode computes once
    beside its q tangent directions, cancels). Needs >= 3 increasing sizes."""
    pairs = sorted(zip(sizes, counts))
    if len(pairs) < 3 or len({s for s, _ in pairs}) != len(pairs):
        raise ValueError(f"leading_exponent needs at least 3 distinct sizes, got {list(sizes)}")
    inc = [(s0, c1 - c0) for (s0, c0), (_, c1) in zip(pairs, pairs[1:])]
    if any(d <= 0 for _, d in inc):
        raise ValueError(f"the count does not grow with the size: sizes {list(sizes)}, counts {list(counts)}")
    return bounds.fit_loglog_slope([s for s, _ in inc], [d for _, d in inc])


def complexity_grid(sizes: Sequence[int]) -> list[int]:
    """The sorted distinct sizes, extended by doubling the largest until there are three (a leading
    exponent needs two increments)."""
    grid = sorted({int(s) for s in sizes})
    if not grid:
        raise ValueError("complexity sizes are empty")
    while len(grid) < 3:
        grid.append(2 * grid[-1])
    return grid


def _timed(fn: Callable[[], Any], repeats: int) -> list[float]:
    """Wall times of ``repeats`` calls, single-threaded (thread contention distorts slopes)."""
    out = []
    nt = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(nt)
    return out


def _best_time(fn: Callable[[], Any], repeats: int) -> float:
    """Minimum wall time over ``repeats`` calls, single-threaded."""
    return min(_timed(fn, repeats))


def time_forward_tau(taus: Sequence[int], *, p: int, q: int, repeats: int = 3) -> list[list[float]]:
    """Wall times (``repeats`` per tau) of ``forward_trajectory`` over windows of length tau."""
    from glocal.hypergrad import forward_trajectory

    step, val, s0, phi = _timing_problem(p, q)
    forward_trajectory(step, val, s0, phi, [None] * 2)  # warm-up
    return [_timed(lambda t=t: forward_trajectory(step, val, s0, phi, [None] * t), repeats) for t in taus]


def time_forward_q(qs: Sequence[int], *, p: int, tau: int, repeats: int = 3) -> list[list[float]]:
    """Wall times (``repeats`` per q) of ``forward_trajectory`` over a window of length tau."""
    from glocal.hypergrad import forward_trajectory

    out = []
    for q in qs:
        step, val, s0, phi = _timing_problem(p, q)
        forward_trajectory(step, val, s0, phi, [None] * 2)
        out.append(_timed(lambda a=(step, val, s0, phi): forward_trajectory(*a, [None] * tau), repeats))
    return out


def time_reverse_T(Ts: Sequence[int], *, p: int, q: int = 4, repeats: int = 3) -> list[list[float]]:
    """Wall times (``repeats`` per T) of ``reverse_hypergradient`` over horizons T."""
    from glocal.hypergrad import reverse_hypergradient

    step, val, s0, phi = _timing_problem(p, q)
    reverse_hypergradient(step, val, s0, phi, [None] * 2)
    return [_timed(lambda t=t: reverse_hypergradient(step, val, s0, phi, [None] * t), repeats) for t in Ts]


_COMPLEXITY = {"tau": ("forward_trajectory", "tau"), "q": ("forward_trajectory", "q"),
               "T": ("reverse_hypergradient", "T")}


def check_complexity(method: str, variable: str, sizes: Sequence[int], counts: Sequence[float], *,
                     case: str = "", inputs: dict | None = None, tol: float = SLOPE_TOL) -> CheckResult:
    """(v) the exponent of the operation count's leading term in ``variable`` (:func:`leading_exponent`)
    within ``tol`` of the complexity table (docs/design.md). ``slope`` in the inputs is the plain log-log slope of the
    counts, for comparison (below the exponent when a size-independent part is still large)."""
    exponent = leading_exponent(sizes, counts)
    expected = bounds.expected_slope(method, variable)
    dev = abs(exponent - expected)
    slope = bounds.fit_loglog_slope(sizes, counts)
    inputs = dict(inputs or {}, method=method, variable=variable, sizes=list(map(int, sizes)), expected=expected,
                  exponent=exponent, slope=slope, counts=[int(c) for c in counts])
    return CheckResult(f"complexity_{method}_{variable}", case, inputs, dev, tol, dev <= tol,
                       {"sizes": list(sizes), "counts": list(counts), "exponent": exponent, "slope": slope,
                        "expected": expected})


def measure_complexity(kind: str, sizes: Sequence[int], *, fixed: int, p: int = COUNT_STATE,
                       tol: float = SLOPE_TOL) -> CheckResult:
    """Count and check one exponent: ``kind`` in 'tau' (forward_trajectory, q = fixed), 'q'
    (forward_trajectory, tau = fixed), 'T' (reverse_hypergradient, q = fixed), on :func:`complexity_grid`
    of ``sizes``. Deterministic: the same counts on every machine and under any load."""
    if kind not in _COMPLEXITY:
        raise ValueError(f"complexity kind must be 'tau', 'q' or 'T', got {kind!r}")
    grid = complexity_grid(sizes)
    if kind == "tau":
        counts, case, inp = count_forward_tau(grid, p=p, q=fixed), f"p{p}-q{fixed}", {"p": p, "q": fixed}
    elif kind == "q":
        counts, case, inp = count_forward_q(grid, p=p, tau=fixed), f"p{p}-tau{fixed}", {"p": p, "tau": fixed}
    else:
        counts, case, inp = count_reverse_T(grid, p=p, q=fixed), f"p{p}-q{fixed}", {"p": p, "q": fixed}
    method, variable = _COMPLEXITY[kind]
    return check_complexity(method, variable, grid, counts, case=case, inputs=inp, tol=tol)


def measure_timing(kind: str, sizes: Sequence[int], *, p: int, fixed: int, repeats: int = 3) -> dict[str, Any]:
    """Wall times of the same sweep as :func:`measure_complexity` at state size ``p`` (reported, not checked):
    per size the median, min and max over ``repeats`` calls, and the log-log slope of the medians."""
    if kind not in _COMPLEXITY:
        raise ValueError(f"complexity kind must be 'tau', 'q' or 'T', got {kind!r}")
    sizes = [int(s) for s in sizes]
    if kind == "tau":
        times = time_forward_tau(sizes, p=p, q=fixed, repeats=repeats)
    elif kind == "q":
        times = time_forward_q(sizes, p=p, tau=fixed, repeats=repeats)
    else:
        times = time_reverse_T(sizes, p=p, q=fixed, repeats=repeats)
    med = [float(torch.tensor(t, dtype=DTYPE).median()) for t in times]
    method, variable = _COMPLEXITY[kind]
    return {"check": f"complexity_{method}_{variable}", "p": p, "fixed": fixed, "sizes": sizes, "repeats": repeats,
            "median_s": med, "min_s": [min(t) for t in times], "max_s": [max(t) for t in times],
            "slope": bounds.fit_loglog_slope(sizes, med) if len(sizes) >= 2 else None,
            "expected": bounds.expected_slope(method, variable)}
