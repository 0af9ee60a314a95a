"""The glocal estimator: a Koopman (Hankel-DMD) model of a hypergradient trajectory.

Given the local hypergradients h_1, ..., h_tau of a window (rows of ``trajectory``), build
time-delay observables g_t = [h_{t-d+1}; ...; h_t] (depth ``delay``) and fit the affine model
``g_{t+1} - gbar = U (A y_t + c)`` with ``y_t = U^T (g_t - gbar)``: ``gbar`` is the mean delay
vector, ``U`` the leading POD modes of the *centred* snapshots, and ``c`` carries the
eigenvalue-1 (constant) mode. Estimators:

* ``limit`` (default, the paper's): the eigenvalue-1 part, i.e. the fixed point
  y* = (I - A)^{-1} c, mapped back by gbar + U y* and the last delay block. Other modes are
  discarded.
* ``horizon`` (ours): the fitted model run forward ``steps_ahead`` steps from the last
  snapshot, eigenvalues of A clipped into the closed unit disk: a growing mode is frozen at
  its current size (its eigenvalue scaled onto the unit circle) about the model's fixed point.
* ``robust`` (ours, opt-in, for mini-batch noise): a level plus one decay rate shared by all
  coordinates fitted to the trajectory itself (:func:`shared_rate_fit`) and run ``steps_ahead``
  steps, its correction to h_tau shrunk by kappa in [0, 1] from a backtest on the window's first
  half (:func:`backtest_shrinkage`; kappa = 0 gives local). Gives up most of ``horizon``'s gains at full batch.
* ``auto`` (ours): ``horizon`` or ``robust``, whichever predicts h_tau better from the window's
  first half (the same backtest); the choice is in the diagnostics (``choice``).
* ``local``: h_tau itself (the baseline).

Scale and precision. The fit never depends on the size or the floating type of its input: the
trajectory is converted to float64 and divided by its largest row norm before anything else,
and the snapshots are centred, so every rank decision and pseudo-inverse cut-off is relative
to the trajectory's own variation (an uncentred fit with a constant row of ones compares the
O(1) constant with O(||h||) coordinates, and silently collapses to A ~ 0 when ||h|| is small or
the trajectory has nearly converged). The estimate comes back in the input's dtype and scale.

Guards: the estimator never returns NaN or inf. It falls back to the local hypergradient,
sets ``fallback`` and says why when the fit is unusable: too few snapshots, non-finite
eigenvalues, a *degenerate* fit (every eigenvalue below ``collapse_tol`` in modulus although
the trajectory varies: the model then only rescales an average), for ``limit`` an
ill-conditioned ``I - A`` (:func:`fixed_point_condition` above ``max_condition``) or a fit carried by growing modes (spectral
radius above 1 and most of the last snapshot in those modes: there is no limit), a non-finite
value, or an estimate larger than ``max_norm_ratio`` times the largest observed ||h_t||.
Degenerate and growing fits are flagged in the diagnostics whether or not they fall back.
``robust`` (and ``auto``) fall back when the window is too short for the backtest (tau < 6) or
the shared-rate forecast is non-finite or above the norm guard; kappa = 0 is not a fallback.
Everything is torch.linalg, so it runs on the trajectory's device.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = [
    "DMDFit",
    "GlocalEstimate",
    "SharedRateFit",
    "shared_rate_fit",
    "shared_rate_grid",
    "backtest_shrinkage",
    "hankel_dmd",
    "glocal_estimate",
    "ESTIMATORS",
    "NEEDS_STEPS_AHEAD",
    "RANK_RULES",
    "growing_share",
    "fixed_point_condition",
    "optimal_hard_threshold_rank",
    "validate_trajectory",
]

ESTIMATORS = ("limit", "horizon", "robust", "auto", "local")
#: Estimators that extrapolate a given number of steps and so need ``steps_ahead``.
NEEDS_STEPS_AHEAD = ("horizon", "robust", "auto")
#: How the POD rank is chosen when ``rank`` is not given (see :func:`hankel_dmd`).
RANK_RULES = ("oht", "full", "overdetermined")
DEFAULT_RANK_RULE = "full"

_FIT_DTYPE = torch.float64
#: A mode grows when its eigenvalue modulus exceeds 1 by more than this (float64 round-off).
_GROWTH_TOL = 1e-9


def validate_trajectory(trajectory: Any) -> torch.Tensor:
    """Return ``trajectory`` as a (tau, q) real floating tensor, or raise a ValueError that says what is wrong.

    A 1-D input is a scalar sequence (tau,) and becomes (tau, 1). A tensor or numpy array keeps
    its floating dtype (integers become float64); a list of Python numbers becomes float64.
    Complex input is an error: hypergradients of a real objective are real.
    """
    if isinstance(trajectory, torch.Tensor):
        t = trajectory
    else:
        try:
            t = torch.as_tensor(trajectory)
            # A list of Python floats is float64 data: read it as such (torch would pick float32).
            if t.is_floating_point() and not hasattr(trajectory, "dtype"):
                t = torch.as_tensor(trajectory, dtype=_FIT_DTYPE)
        except (TypeError, ValueError, RuntimeError) as err:
            raise ValueError(f"trajectory must be a (tau, q) array of numbers: {err}") from None
    if t.is_complex():
        raise ValueError(f"trajectory is complex ({t.dtype}); hypergradients are real: pass the real part explicitly")
    if t.dtype == torch.bool:
        raise ValueError("trajectory is boolean; expected real numbers")
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise ValueError(
            f"trajectory must have shape (tau, q) (one row per step) or (tau,), got shape {tuple(t.shape)}"
        )
    if t.shape[0] < 1 or t.shape[1] < 1:
        raise ValueError(f"trajectory must have shape (tau, q) with tau >= 1 and q >= 1, got {tuple(t.shape)}")
    if not t.is_floating_point():
        t = t.to(_FIT_DTYPE)
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        where = bad.nonzero().tolist()
        shown = ", ".join(f"(step {i}, coordinate {j})" for i, j in where[:5])
        more = f" and {len(where) - 5} more" if len(where) > 5 else ""
        raise ValueError(f"trajectory has {len(where)} non-finite (NaN or inf) entries at {shown}{more}")
    return t


@dataclass
class DMDFit:
    """A fitted Hankel-DMD model, in float64 and in units of ``scale``.

    Delay vectors g_t (columns, newest block last) are divided by ``scale`` (the largest row
    norm of the trajectory) and centred on their mean ``mean``; ``y_t = U^T (g_t / scale - mean)``
    follows ``y_{t+1} = A y_t + c``. ``last`` is the last snapshot's coordinates y_tau.
    With ``constant=False`` nothing is centred (``mean`` = 0) and c = 0.
    """

    A: torch.Tensor
    c: torch.Tensor
    U: torch.Tensor
    mean: torch.Tensor
    scale: float
    singular_values: torch.Tensor
    rank: int
    delay: int
    q: int
    n_snapshots: int
    residual: float
    last: torch.Tensor
    rank_rule: str = DEFAULT_RANK_RULE

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of A (complex); the constant observable adds an eigenvalue 1 not listed here."""
        if self.rank == 0:
            return torch.zeros(0, dtype=torch.complex128, device=self.A.device)
        return torch.linalg.eigvals(self.A)

    def point(self, y: torch.Tensor) -> torch.Tensor:
        """The hypergradient (float64, input scale) of the model state with coordinates ``y``."""
        g = self.mean + self.U.to(y.dtype) @ y if self.rank else self.mean.to(y.dtype)
        return self.scale * g[-self.q :]

    def direction(self, v: torch.Tensor) -> torch.Tensor:
        """The hypergradient-space direction (input scale) of coordinate vector ``v`` (e.g. an eigenvector)."""
        return self.scale * (self.U.to(v.dtype) @ v)[-self.q :]

    def unembed(self, y: torch.Tensor) -> torch.Tensor:
        """Alias of :meth:`point` (the mapping back from coordinates to a hypergradient)."""
        return self.point(y)


def optimal_hard_threshold_rank(s: torch.Tensor, n_rows: int, n_cols: int) -> int:
    """Gavish & Donoho's optimal hard threshold with unknown noise level (as PyDMD's ``svd_rank=0``).

    Keeps the singular values above omega(beta) * median(s), beta = aspect ratio; at least 1
    when any singular value is nonzero.
    """
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    beta = min(n_rows, n_cols) / max(n_rows, n_cols)
    omega = 0.56 * beta**3 - 0.95 * beta**2 + 1.82 * beta + 1.43
    threshold = float(torch.median(s)) * omega
    return max(1, int((s > threshold).sum()))


def _select_rank(s: torch.Tensor, *, rank: int | None, energy: float | None, rtol: float | None,
                 rule: str, shape: tuple[int, int], n_transitions: int, constant: bool) -> int:
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    if rtol is None:
        rtol = 1e3 * torch.finfo(_FIT_DTYPE).eps
    r = int((s > rtol * s[0]).sum())
    if energy is not None:
        if not 0.0 < energy <= 1.0:
            raise ValueError(f"energy must lie in (0, 1], got {energy}")
        e = torch.cumsum(s**2, 0) / torch.sum(s**2)
        r = min(r, int((e < energy - 1e-15).sum()) + 1)
    if rank is not None:
        if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
            raise ValueError(f"rank must be a positive int or None, got {rank!r}")
        return min(r, rank)
    if energy is not None:
        return r
    if rule == "oht":
        r = min(r, optimal_hard_threshold_rank(s, *shape))
    elif rule == "overdetermined":
        # r coefficients (+1 for c) per row from n_transitions equations, with one to spare.
        r = min(r, n_transitions - (2 if constant else 1))
    elif rule != "full":
        raise ValueError(f"rank_rule must be one of {RANK_RULES}, got {rule!r}")
    return max(0, r)


def hankel_dmd(
    trajectory: Any,
    *,
    delay: int = 1,
    rank: int | None = None,
    energy: float | None = None,
    rtol: float | None = None,
    rank_rule: str = DEFAULT_RANK_RULE,
    constant: bool = True,
) -> DMDFit:
    """Fit the centred Hankel-DMD model of the module docstring to a (tau, q) trajectory.

    The fit runs in float64 on the trajectory divided by its largest row norm, whatever the
    input's dtype and size (see the module docstring).

    Parameters
    ----------
    delay:
        Depth d of the time-delay embedding (1 = no delay).
    rank, energy, rtol:
        POD truncation of the centred snapshots: exactly ``rank`` modes at most, or the fewest
        modes holding an ``energy`` fraction of the squared singular values, and never modes
        below ``rtol`` times the largest singular value (default 1e3 * float64 epsilon).
    rank_rule:
        The rank when neither ``rank`` nor ``energy`` is given: ``oht`` (default; Gavish &
        Donoho's optimal hard threshold, which drops noise-level modes), ``full`` (every mode
        above ``rtol``; the least squares may then be underdetermined, solved with minimum
        norm) or ``overdetermined`` (at most n_transitions - 2 modes, so the least squares keeps
        a spare equation).
    constant:
        Include the constant observable (centring and the column c). Without it the model is
        the plain linear ``y_{t+1} = A y_t`` on uncentred snapshots and c = 0.
    """
    traj = validate_trajectory(trajectory)
    tau, q = traj.shape
    if not isinstance(delay, int) or isinstance(delay, bool) or delay < 1:
        raise ValueError(f"delay must be a positive int, got {delay!r}")
    if rank_rule not in RANK_RULES:
        raise ValueError(f"rank_rule must be one of {RANK_RULES}, got {rank_rule!r}")
    m = tau - delay + 1  # number of delay vectors
    if m < 1:
        raise ValueError(f"delay={delay} is longer than the trajectory (tau={tau})")
    dev, dt = traj.device, _FIT_DTYPE
    x = traj.to(dt)
    scale = float(torch.linalg.norm(x, dim=1).max())
    if scale > 0:
        x = x / scale
    # Column j is [h_j; ...; h_{j+d-1}]: newest block last.
    G = x.unfold(0, delay, 1).transpose(1, 2).reshape(m, delay * q).T
    mean = G.mean(dim=1) if constant else torch.zeros(G.shape[0], dtype=dt, device=dev)
    Gc = G - mean[:, None]
    empty = torch.zeros(0, 0, dtype=dt, device=dev)

    def trivial(U: torch.Tensor, S: torch.Tensor) -> DMDFit:
        return DMDFit(empty, torch.zeros(0, dtype=dt, device=dev), U, mean, scale, S, 0, delay, q, m,
                      float("nan"), torch.zeros(0, dtype=dt, device=dev), rank_rule)

    if m < 3:  # need at least two transitions to fit anything
        return trivial(torch.zeros(G.shape[0], 0, dtype=dt, device=dev), torch.zeros(0, dtype=dt, device=dev))
    U, S, _ = torch.linalg.svd(Gc, full_matrices=False)
    r = _select_rank(S, rank=rank, energy=energy, rtol=rtol, rule=rank_rule, shape=tuple(Gc.shape),
                     n_transitions=m - 1, constant=constant)
    if r == 0:
        return trivial(U[:, :0], S)
    Ur = U[:, :r]
    Y = Ur.T @ Gc
    Y0, Y1 = Y[:, :-1], Y[:, 1:]
    if constant:  # least squares with an intercept = regression of the centred Y1 on the centred Y0
        m0, m1 = Y0.mean(dim=1, keepdim=True), Y1.mean(dim=1, keepdim=True)
        X0, X1 = Y0 - m0, Y1 - m1
    else:
        X0, X1 = Y0, Y1
    # Minimum-norm least squares. The cut-off is relative to X0's own largest singular value and
    # at float64's resolution (eps * size): the small directions of a converging trajectory carry
    # its slow modes, and a coarser cut-off (1e3 eps) measurably loses them.
    A = X1 @ torch.linalg.pinv(X0, rtol=torch.finfo(dt).eps * max(X0.shape))
    c = (m1 - A @ m0)[:, 0] if constant else torch.zeros(r, dtype=dt, device=dev)
    denom = float(torch.linalg.norm(X1))
    resid = float(torch.linalg.norm(X1 - A @ X0)) / denom if denom > 0 else 0.0
    return DMDFit(A, c, Ur, mean, scale, S, r, delay, q, m, resid, Y[:, -1].clone(), rank_rule)


@dataclass
class GlocalEstimate:
    """A glocal hypergradient estimate with the diagnostics of its fit.

    ``degenerate`` is True when the fit collapsed (every eigenvalue ~0 on a varying trajectory),
    whether or not it led to a fallback; ``reason`` says why the estimate fell back, if it did.
    """

    value: torch.Tensor
    estimator: str
    fallback: bool
    reason: str | None
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def degenerate(self) -> bool:
        """The fit collapsed (all eigenvalues ~0 while the trajectory varies)."""
        return bool(self.diagnostics.get("degenerate", False))

    def to_record(self, *, include_value: bool = True) -> dict[str, Any]:
        """JSON-friendly dict (eigenvalues as [re, im] pairs)."""
        from glocal.utils import to_jsonable

        rec = {
            "estimator": self.estimator,
            "fallback": self.fallback,
            "reason": self.reason,
            "norm": float(torch.linalg.norm(self.value.to(_FIT_DTYPE))),
            **{k: to_jsonable(v) for k, v in self.diagnostics.items()},
        }
        if include_value:
            rec["value"] = to_jsonable(self.value)
        return rec


def _clip_to_unit_disk(A: torch.Tensor) -> tuple[torch.Tensor, int]:
    """A with every eigenvalue of modulus > 1 scaled onto the unit circle (others unchanged), and how many."""
    lam, V = torch.linalg.eig(A)
    mod = lam.abs()
    n_clipped = int((mod > 1.0).sum())
    if n_clipped == 0:
        return A, 0
    lam = torch.where(mod > 1.0, lam / mod, lam)
    return (V @ torch.diag(lam) @ torch.linalg.inv(V)).real.to(A.dtype), n_clipped


def fixed_point_condition(A: torch.Tensor) -> float:
    """Condition number of I - A measured against the identity: max(sigma_max, 1) / sigma_min.

    It equals cond(I - A) whenever sigma_max >= 1, and 1 / sigma_min (the amplification of the
    fixed point (I - A)^{-1} c) otherwise: a 1x1 fit a ~ 1 is ill-conditioned although every
    1x1 matrix has condition number 1. ``inf`` when I - A is singular.
    """
    s = torch.linalg.svdvals(torch.eye(A.shape[0], dtype=A.dtype, device=A.device) - A)
    smin = float(s[-1])
    return max(float(s[0]), 1.0) / smin if smin > 0 else float("inf")


def growing_share(fit: DMDFit, fixed_point: torch.Tensor) -> float:
    """Fraction of the last snapshot's deviation from ``fixed_point`` carried by growing modes.

    The deviation y_tau - y* is decomposed on the eigenvectors v_j of A (b = V^{-1} (y_tau - y*));
    mode j contributes |b_j| ||U v_j|| and grows when |lambda_j| > 1. Returns
    sum_{growing} / sum_{all} (0 when nothing grows or there is no deviation; 1 when the
    decomposition is not finite, i.e. A is not diagonalizable to working precision).
    """
    lam, V = torch.linalg.eig(fit.A)
    grow = lam.abs() > 1.0 + _GROWTH_TOL
    if not bool(grow.any()):
        return 0.0
    dev = (fit.last - fixed_point).to(V.dtype)
    try:
        b = torch.linalg.solve(V, dev)
    except RuntimeError:  # singular eigenvector matrix
        return 1.0
    amp = b.abs() * torch.linalg.norm(fit.U.to(V.dtype) @ V, dim=0)
    total = float(amp.sum())
    if not (total == total) or total == float("inf"):
        return 1.0
    return float(amp[grow].sum()) / total if total > 0 else 0.0


# ------------------------------------------------------------------------------ the robust estimator
#: Candidate rates of :func:`shared_rate_fit`: how many, and the shortest time scale c (lam = 1 - 1/c).
N_RATES = 60
MIN_TIMESCALE = 1.05
#: Fewest rows a shared-rate fit accepts (two coefficients per coordinate plus the shared rate).
MIN_SHARED_RATE_STEPS = 3


def shared_rate_grid(tau: int, *, n_rates: int = N_RATES, min_timescale: float = MIN_TIMESCALE) -> torch.Tensor:
    """The candidate rates lam = 1 - 1/c, c log-spaced in [min_timescale, max(tau, min_timescale)] (float64, increasing).

    The slowest candidate has time scale tau: a slower decay cannot be told from a drift within
    the window.
    """
    if not isinstance(n_rates, int) or isinstance(n_rates, bool) or n_rates < 1:
        raise ValueError(f"n_rates must be a positive int, got {n_rates!r}")
    if not min_timescale > 1.0:
        raise ValueError(f"min_timescale must exceed 1 (a rate 1 - 1/c in (0, 1)), got {min_timescale!r}")
    hi = max(float(tau), float(min_timescale))
    c = torch.logspace(math.log10(min_timescale), math.log10(hi), n_rates, dtype=_FIT_DTYPE)
    return 1.0 - 1.0 / c


@dataclass
class SharedRateFit:
    """h_t ~ level + rate^t * amplitude for t = 1..tau: one decay rate shared by every coordinate.

    ``level`` (the eigenvalue-1 mode) and ``amplitude`` are float64 in the input's scale;
    ``residual`` is the fraction of the trajectory's variation about its mean left unexplained
    (root of the squared-norm ratio, in [0, 1]); ``residuals`` holds that number for every
    candidate in ``rates`` (the profile the rate was chosen on).
    """

    level: torch.Tensor
    amplitude: torch.Tensor
    rate: float
    residual: float
    tau: int
    scale: float
    rates: torch.Tensor
    residuals: torch.Tensor

    def predict(self, steps_ahead: int) -> torch.Tensor:
        """The fitted h_{tau + steps_ahead} (float64, input scale)."""
        return self.level + self.rate ** (self.tau + int(steps_ahead)) * self.amplitude


def shared_rate_fit(trajectory: Any, *, n_rates: int = N_RATES, min_timescale: float = MIN_TIMESCALE) -> SharedRateFit:
    """Fit a level plus one shared decay rate to a (tau, q) trajectory (optimized-DMD style, on the trajectory itself).

    For every candidate lam of :func:`shared_rate_grid` the trajectory H (rows h_1..h_tau) is
    projected on the two columns Phi_lam = [1, lam^t]; the rate with the smallest residual
    ||(I - P_Phi) H||_F wins and (level, amplitude) = Phi_lam^+ H. Projecting on [1, u] is
    centring plus projecting on the centred u, so the residual of every candidate is
    ||H_c||^2 - ||W^T u_c||^2 / ||u_c||^2 with W = U S the SVD factor of the centred H_c:
    O(tau^2 q) once, then O(tau min(tau, q)) per candidate, cheap for q in the thousands.
    Runs in float64 on H divided by its largest row norm (scale-free). Ties go to the faster
    rate (a constant trajectory gets the fastest candidate and amplitude 0).
    """
    traj = validate_trajectory(trajectory)
    tau, q = traj.shape
    if tau < MIN_SHARED_RATE_STEPS:
        raise ValueError(f"shared_rate_fit needs a trajectory of at least {MIN_SHARED_RATE_STEPS} steps, got tau={tau}")
    x = traj.to(_FIT_DTYPE)
    scale = float(torch.linalg.norm(x, dim=1).max())
    if scale > 0:
        x = x / scale
    dev = x.device
    rates = shared_rate_grid(tau, n_rates=n_rates, min_timescale=min_timescale).to(dev)
    mean = x.mean(dim=0)
    xc = x - mean
    total = float(torch.sum(xc * xc))
    U, S, _ = torch.linalg.svd(xc, full_matrices=False)
    W = U * S  # (tau, k): ||(I - P) H_c||_F = ||(I - P) W||_F for any projection P acting on rows
    t = torch.arange(1, tau + 1, dtype=_FIT_DTYPE, device=dev)
    u = rates[:, None] ** t  # (n_rates, tau)
    uc = u - u.mean(dim=1, keepdim=True)
    uc = uc / torch.linalg.norm(uc, dim=1, keepdim=True)
    explained = torch.sum((uc @ W) ** 2, dim=1)
    resid = (total - explained).clamp_min(0.0)
    best = int(torch.argmin(resid))
    lam = float(rates[best])
    ub = u[best]
    ubc = ub - ub.mean()
    amplitude = (ubc @ xc) / float(ubc @ ubc)
    level = mean - float(ub.mean()) * amplitude
    rel = torch.sqrt(resid / total) if total > 0 else torch.zeros_like(resid)
    return SharedRateFit(scale * level if scale > 0 else level, scale * amplitude if scale > 0 else amplitude,
                         lam, float(rel[best]), tau, scale, rates, rel)


def backtest_shrinkage(predicted_change: torch.Tensor, actual_change: torch.Tensor) -> tuple[float, float]:
    """kappa = clip(<d_m, d_r> / ||d_m||^2, 0, 1), and the unclipped ratio.

    d_m is what the first half's model predicted the trajectory would move from h_tb to h_tau,
    d_r how it actually moved. kappa is the least-squares shrinkage of the model's correction
    toward the local hypergradient: 1 when the model predicted the move, 0 when it predicted
    nothing useful (or nothing at all: d_m = 0 gives 0).
    """
    dm = predicted_change.to(_FIT_DTYPE).reshape(-1)
    dr = actual_change.to(_FIT_DTYPE).reshape(-1)
    nm = float(dm @ dm)
    if not nm > 0:
        return 0.0, 0.0
    raw = float(dm @ dr) / nm
    if not math.isfinite(raw):
        return 0.0, raw
    return min(max(raw, 0.0), 1.0), raw


def _shared_rate_forecast(x: torch.Tensor, steps_ahead: int, max_norm_ratio: float
                          ) -> tuple[torch.Tensor, SharedRateFit, str | None]:
    """F(H, n) of the robust estimator: the shared-rate fit's h_{tau+n}, or h_tau with a reason when guarded.

    ``x`` is float64. The guard: a non-finite value, or a norm above ``max_norm_ratio`` times
    the largest observed row norm of ``x``.
    """
    fit = shared_rate_fit(x)
    value = fit.predict(steps_ahead)
    if not bool(torch.isfinite(value).all()):
        return x[-1].clone(), fit, "non-finite shared-rate forecast"
    norm = float(torch.linalg.norm(value))
    if norm > max_norm_ratio * fit.scale:
        return x[-1].clone(), fit, (f"norm guard: shared-rate forecast norm {norm:.3g} exceeds {max_norm_ratio:g} x "
                                    f"the largest observed norm {fit.scale:.3g}")
    return value, fit, None


def _robust_estimate(x: torch.Tensor, steps_ahead: int, max_norm_ratio: float
                     ) -> tuple[torch.Tensor, bool, str | None, dict[str, Any]]:
    """The gated shared-rate estimate of a float64 trajectory ``x``: (value, fallback, reason, diagnostics).

    tb = tau // 2; d_m = F(H[:tb], tau - tb) - h_tb; d_r = h_tau - h_tb;
    kappa = :func:`backtest_shrinkage` (d_m, d_r); estimate h_tau + kappa (F(H, n) - h_tau).
    The backtest errors (input scale) are those of predicting h_tau from the first half by the
    local hypergradient h_tb (``backtest_local``), by the first half's shared-rate forecast
    (``backtest_shared_rate``) and by the gated one h_tb + kappa d_m (``backtest_robust``; kappa
    is fitted on this very point, so it is at most the smaller of the other two).
    """
    tau = x.shape[0]
    tb = tau // 2
    local = x[-1]
    nan = float("nan")
    diag: dict[str, Any] = {"rank": 1, "delay": 1, "eigenvalues": torch.zeros(0, dtype=torch.complex128),
                            "condition_number": nan, "spectral_radius": nan, "residual": nan,
                            "scale": float(torch.linalg.norm(x, dim=1).max()), "rate": nan, "timescale": nan,
                            "rate_half": nan, "kappa": 0.0, "kappa_raw": nan, "backtest_local": nan,
                            "backtest_shared_rate": nan, "backtest_robust": nan}
    if tb < MIN_SHARED_RATE_STEPS:
        return local.clone(), True, (f"window too short for the robust estimator's backtest (tau={tau}; its first "
                                     f"half needs >= {MIN_SHARED_RATE_STEPS} steps, so tau >= "
                                     f"{2 * MIN_SHARED_RATE_STEPS})"), diag
    forecast, fit, reason = _shared_rate_forecast(x, steps_ahead, max_norm_ratio)
    diag.update({"rate": fit.rate, "timescale": 1.0 / (1.0 - fit.rate), "residual": fit.residual,
                 "spectral_radius": fit.rate,
                 "eigenvalues": torch.tensor([fit.rate], dtype=torch.complex128)})
    if fit.scale == 0 or float(torch.linalg.norm(fit.amplitude)) == 0.0:
        diag["constant"] = True
    half_forecast, half_fit, half_reason = _shared_rate_forecast(x[:tb], tau - tb, max_norm_ratio)
    h_tb = x[tb - 1]
    d_m, d_r = half_forecast - h_tb, local - h_tb
    kappa, raw = backtest_shrinkage(d_m, d_r)
    diag.update({
        "rate_half": half_fit.rate, "kappa": kappa, "kappa_raw": raw,
        "backtest_local": float(torch.linalg.norm(d_r)),
        "backtest_shared_rate": float(torch.linalg.norm(d_m - d_r)),
        "backtest_robust": float(torch.linalg.norm(kappa * d_m - d_r)),
    })
    if half_reason is not None:
        diag["backtest_reason"] = half_reason
    if reason is not None:
        return local.clone(), True, reason, diag
    return local + kappa * (forecast - local), False, None, diag


def glocal_estimate(
    trajectory: Any,
    *,
    estimator: str = "limit",
    delay: int = 1,
    rank: int | None = None,
    energy: float | None = None,
    rtol: float | None = None,
    rank_rule: str = DEFAULT_RANK_RULE,
    steps_ahead: int | None = None,
    max_condition: float = 1e8,
    max_norm_ratio: float = 10.0,
    max_growing_share: float = 0.5,
    collapse_tol: float = 1e-3,
) -> GlocalEstimate:
    """Estimate the global hypergradient from a window's trajectory of local hypergradients.

    Parameters
    ----------
    trajectory:
        (tau, q) tensor (or array); row k is h_{s->s+k+1}. A 1-D input is a scalar sequence.
        Any real dtype: the fit runs in float64 and the value comes back in the input's dtype
        (float64 for non-tensor input).
    estimator:
        ``limit`` (default), ``horizon``, ``robust``, ``auto`` or ``local``; see the module docstring.
    delay, rank, energy, rtol, rank_rule:
        Passed to :func:`hankel_dmd` (``robust`` fits the trajectory itself and ignores them;
        ``auto`` passes them to its ``horizon`` fits).
    steps_ahead:
        For ``horizon``, ``robust`` and ``auto``: how many steps past the last row to
        extrapolate (the remaining length of training, in rows of the trajectory). Required
        for them.
    max_condition, max_norm_ratio, max_growing_share, collapse_tol:
        Guards; see the module docstring. ``max_condition`` and ``max_growing_share`` apply to
        ``limit`` only (``horizon`` clips growing modes onto the unit circle and never inverts
        I - A). A fit with spectral radius above 1 is always flagged (``growing``); ``limit``
        falls back when growing modes carry more than ``max_growing_share`` of the last
        snapshot's deviation from the fixed point (see :func:`growing_share`): under
        mini-batch noise slightly unstable noise modes (radius 1.00-1.02) are common and
        harmless, while a trajectory that really grows is carried by its growing modes.

    Returns
    -------
    GlocalEstimate
        ``value`` has shape (q,) (or () for a 1-D input) and is always finite. Its
        diagnostics: rank, n_snapshots, residual, eigenvalues, spectral_radius,
        condition_number, degenerate, growing, growing_share (limit), n_clipped (horizon),
        scale, tau, delay. ``robust`` reports rate (lam*; also as the one eigenvalue and the
        spectral radius), timescale 1 / (1 - lam*), residual (of the shared-rate fit),
        rate_half (the backtest fit's rate), kappa and kappa_raw (unclipped), and the backtest
        errors backtest_local, backtest_shared_rate, backtest_robust (input scale; see
        :func:`_robust_estimate`), with backtest_reason when the first half's forecast was
        guarded. ``auto`` reports choice (``horizon`` or ``robust``), backtest_horizon (the first
        half's ``horizon`` estimate of h_tau, its error), the robust diagnostics, and the
        chosen estimator's fit diagnostics (rank, eigenvalues, ...).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    traj = validate_trajectory(trajectory)
    ndim = getattr(trajectory, "ndim", None)
    scalar = (torch.as_tensor(trajectory).ndim if ndim is None else ndim) == 1
    out_dtype = traj.dtype
    tau, q = traj.shape
    local = traj[-1]
    no_eig = torch.zeros(0, dtype=torch.complex128)

    def finish(value: torch.Tensor, fallback: bool, reason: str | None, diag: dict[str, Any]) -> GlocalEstimate:
        diag.setdefault("tau", tau)
        diag.setdefault("delay", delay)
        diag.setdefault("degenerate", False)
        diag.setdefault("growing", False)
        value = value.to(out_dtype)
        return GlocalEstimate(value[0] if scalar else value, estimator, fallback, reason, diag)

    if estimator == "local":
        return finish(local.clone(), False, None, {"rank": 0, "eigenvalues": no_eig})
    if estimator in NEEDS_STEPS_AHEAD and (steps_ahead is None or int(steps_ahead) < 0):
        raise ValueError(f"estimator={estimator!r} needs steps_ahead >= 0 (the steps still to go after the window), "
                         f"got {steps_ahead!r}")
    if estimator == "robust":
        value, fallback, reason, diag = _robust_estimate(traj.to(_FIT_DTYPE), int(steps_ahead), max_norm_ratio)
        return finish(value, fallback, reason, diag)
    if estimator == "auto":
        opts = {"delay": delay, "rank": rank, "energy": energy, "rtol": rtol, "rank_rule": rank_rule,
                "max_condition": max_condition, "max_norm_ratio": max_norm_ratio,
                "max_growing_share": max_growing_share, "collapse_tol": collapse_tol}
        value, fallback, reason, diag = _auto_estimate(traj.to(_FIT_DTYPE), int(steps_ahead), opts)
        return finish(value, fallback, reason, diag)
    if delay > tau:
        return finish(local.clone(), True, f"delay {delay} longer than the trajectory (tau={tau})",
                      {"rank": 0, "eigenvalues": no_eig})
    fit = hankel_dmd(traj, delay=delay, rank=rank, energy=energy, rtol=rtol, rank_rule=rank_rule)
    diag: dict[str, Any] = {
        "rank": fit.rank,
        "n_snapshots": fit.n_snapshots,
        "residual": fit.residual,
        "eigenvalues": no_eig,
        "condition_number": float("nan"),
        "spectral_radius": float("nan"),
        "scale": fit.scale,
    }
    if fit.n_snapshots < 3:
        return finish(local.clone(), True, f"too few snapshots ({fit.n_snapshots} delay vectors; need >= 3)", diag)
    if fit.rank < 1:
        # The delay vectors do not vary (to float64 precision): the trajectory is constant
        # (or zero), and its limit and every horizon is that constant.
        diag["constant"] = True
        return finish(fit.point(torch.zeros(0, dtype=_FIT_DTYPE, device=traj.device)), False, None, diag)
    eig = fit.eigenvalues
    diag["eigenvalues"] = eig.to(torch.complex128).cpu()
    if not bool(torch.isfinite(torch.view_as_real(eig)).all()):
        return finish(local.clone(), True, "non-finite eigenvalues in the fit", diag)
    radius = float(eig.abs().max())
    diag["spectral_radius"] = radius
    diag["growing"] = radius > 1.0 + _GROWTH_TOL
    eye = torch.eye(fit.rank, dtype=fit.A.dtype, device=fit.A.device)
    cond = fixed_point_condition(fit.A)
    diag["condition_number"] = cond
    if radius < collapse_tol:
        diag["degenerate"] = True
        return finish(local.clone(), True,
                      f"degenerate fit: every eigenvalue below {collapse_tol:g} in modulus (spectral radius "
                      f"{radius:.3g}) although the trajectory varies; the model would only rescale an average", diag)
    if estimator == "limit":
        if not (cond < max_condition):  # also catches NaN
            return finish(local.clone(), True,
                          f"ill-conditioned fit: cond(I - A) = {cond:.3g} > {max_condition:.3g}", diag)
        y = torch.linalg.solve(eye - fit.A, fit.c)
        if diag["growing"]:
            share = growing_share(fit, y)
            diag["growing_share"] = share
            if share > max_growing_share:
                return finish(local.clone(), True,
                              f"growing mode: spectral radius {radius:.4g} > 1 and growing modes carry {share:.0%} "
                              f"of the last snapshot (> {max_growing_share:.0%}); the fitted model has no limit", diag)
    else:
        A, n_clipped = _clip_to_unit_disk(fit.A)
        diag["n_clipped"] = n_clipped
        n = int(steps_ahead)
        if n_clipped == 0:
            # The fitted model itself: y_{k+1} = A y_k + c, iterated with the augmented matrix
            # (exact also when I - A is singular, e.g. a mode with eigenvalue exactly 1).
            r = fit.rank
            Maug = torch.zeros(r + 1, r + 1, dtype=A.dtype, device=A.device)
            Maug[:r, :r] = A
            Maug[:r, r] = fit.c
            Maug[r, r] = 1.0
            y0 = torch.cat([fit.last, torch.ones(1, dtype=A.dtype, device=A.device)])
            y = (torch.linalg.matrix_power(Maug, n) @ y0)[:r]
        else:
            # Growing modes are frozen on the unit circle about the model's fixed point
            # y* = (I - A)^{-1} c: y_n = y* + A_clipped^n (y_tau - y*). (Clipping A but keeping c
            # would move the fixed point and make the frozen mode drift linearly.)
            if not (cond < max_condition):
                return finish(local.clone(), True,
                              f"growing modes with an ill-conditioned fit: cond(I - A) = {cond:.3g} > "
                              f"{max_condition:.3g}, no fixed point to freeze them about", diag)
            ystar = torch.linalg.solve(eye - fit.A, fit.c)
            y = ystar + torch.linalg.matrix_power(A, n) @ (fit.last - ystar)
    value = fit.point(y)
    if not bool(torch.isfinite(value).all()):
        return finish(local.clone(), True, "non-finite estimate", diag)
    norm = float(torch.linalg.norm(value))
    if norm > max_norm_ratio * fit.scale:
        return finish(
            local.clone(), True,
            f"norm guard: estimate norm {norm:.3g} exceeds {max_norm_ratio:g} x the largest observed norm "
            f"{fit.scale:.3g}", diag,
        )
    return finish(value, False, None, diag)


def _auto_estimate(x: torch.Tensor, steps_ahead: int, opts: dict[str, Any]
                   ) -> tuple[torch.Tensor, bool, str | None, dict[str, Any]]:
    """``auto``: ``horizon`` or ``robust`` on a float64 trajectory ``x``, chosen by the first-half backtest.

    Both predict h_tau from the first tb = tau // 2 rows: ``horizon`` by its own fit run tau - tb
    steps, ``robust`` by h_tb + kappa d_m (its gated backtest forecast). ``horizon`` is chosen
    when its error is strictly smaller; ties (e.g. both equal to the local h_tb) go to ``robust``.
    Returns (value, fallback, reason, diagnostics) like the other estimators.
    """
    tau = x.shape[0]
    tb = tau // 2
    r_value, r_fallback, r_reason, diag = _robust_estimate(x, steps_ahead, opts["max_norm_ratio"])
    diag["choice"] = "robust"
    diag["backtest_horizon"] = float("nan")
    if tb < MIN_SHARED_RATE_STEPS:  # no backtest: robust has fallen back to local, and so does auto
        return r_value, r_fallback, r_reason, diag
    half = glocal_estimate(x[:tb], estimator="horizon", steps_ahead=tau - tb, **opts)
    e_horizon = float(torch.linalg.norm(half.value - x[-1]))
    diag["backtest_horizon"] = e_horizon
    diag["backtest_horizon_fallback"] = half.fallback
    if not e_horizon < diag["backtest_robust"]:
        return r_value, r_fallback, r_reason, diag
    full = glocal_estimate(x, estimator="horizon", steps_ahead=steps_ahead, **opts)
    robust_diag = {k: v for k, v in diag.items() if k not in full.diagnostics}
    robust_diag.update({"robust_residual": diag["residual"], "robust_fallback": r_fallback})
    return full.value, full.fallback, full.reason, {**full.diagnostics, **robust_diag, "choice": "horizon"}
