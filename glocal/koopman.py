"""The glocal estimator: a Koopman (Hankel-DMD) model of a hypergradient trajectory.

Given the local hypergradients h_1, ..., h_tau of a window (rows of ``trajectory``), build
time-delay observables g_t = [h_{t-d+1}; ...; h_t] (depth ``delay``), project the snapshots on
their leading ``r`` POD modes, and fit the affine model ``y_{t+1} = A y_t + c`` by least
squares (the constant observable 1 carries the eigenvalue-1 mode). Estimators:

* ``limit`` (default, the paper's): the eigenvalue-1 part, i.e. the fixed point
  y* = (I - A)^{-1} c, mapped back by the POD basis and the last delay block. Other modes are
  discarded.
* ``horizon`` (ours): the fitted model run forward ``steps_ahead`` steps from the last
  snapshot, eigenvalues of A clipped into the closed unit disk.
* ``local``: h_tau itself (the baseline).

Guards: the estimator never returns NaN or inf. An ill-conditioned fit (cond(I - A) above
``max_condition``, rank < 1, too few snapshots, a non-finite value, or an estimate larger than
``max_norm_ratio`` times the largest observed ||h_t||) falls back to the local hypergradient,
sets ``fallback`` and says why. Everything is torch.linalg, so it runs on the trajectory's device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["DMDFit", "GlocalEstimate", "hankel_dmd", "glocal_estimate", "ESTIMATORS", "validate_trajectory"]

ESTIMATORS = ("limit", "horizon", "local")


def validate_trajectory(trajectory: Any) -> torch.Tensor:
    """Return ``trajectory`` as a (tau, q) floating tensor, or raise a ValueError that says what is wrong.

    A 1-D input is a scalar sequence (tau,) and becomes (tau, 1).
    """
    if not isinstance(trajectory, torch.Tensor):
        trajectory = torch.as_tensor(trajectory)
    if trajectory.ndim == 1:
        trajectory = trajectory[:, None]
    if trajectory.ndim != 2:
        raise ValueError(
            f"trajectory must have shape (tau, q) (one row per step) or (tau,), got shape {tuple(trajectory.shape)}"
        )
    if trajectory.shape[0] < 1 or trajectory.shape[1] < 1:
        raise ValueError(f"trajectory must have shape (tau, q) with tau >= 1 and q >= 1, got {tuple(trajectory.shape)}")
    if not trajectory.is_floating_point():
        trajectory = trajectory.to(torch.get_default_dtype())
    bad = ~torch.isfinite(trajectory)
    if bool(bad.any()):
        where = bad.nonzero().tolist()
        shown = ", ".join(f"(step {i}, coordinate {j})" for i, j in where[:5])
        more = f" and {len(where) - 5} more" if len(where) > 5 else ""
        raise ValueError(f"trajectory has {len(where)} non-finite (NaN or inf) entries at {shown}{more}")
    return trajectory


@dataclass
class DMDFit:
    """A fitted Hankel-DMD model ``y_{t+1} = A y_t + c`` in POD coordinates ``y = U^T g``."""

    A: torch.Tensor
    c: torch.Tensor
    U: torch.Tensor
    singular_values: torch.Tensor
    rank: int
    delay: int
    q: int
    n_snapshots: int
    residual: float
    last: torch.Tensor  # the last delay vector g_tau

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues of A (complex); the constant observable adds an eigenvalue 1 not listed here."""
        if self.rank == 0:
            return torch.zeros(0, dtype=torch.complex128, device=self.A.device)
        return torch.linalg.eigvals(self.A)

    def unembed(self, y: torch.Tensor) -> torch.Tensor:
        """Map POD coordinates back to a hypergradient: g = U y, then the last delay block."""
        return (self.U @ y)[-self.q :]


def _select_rank(s: torch.Tensor, rank: int | None, energy: float | None, rtol: float | None, cap: int) -> int:
    if s.numel() == 0 or float(s[0]) == 0.0:
        return 0
    if rtol is None:
        rtol = 1e3 * torch.finfo(s.dtype).eps
    r = int((s > rtol * s[0]).sum())
    if energy is not None:
        if not 0.0 < energy <= 1.0:
            raise ValueError(f"energy must lie in (0, 1], got {energy}")
        e = torch.cumsum(s**2, 0) / torch.sum(s**2)
        r = min(r, int((e < energy - 1e-15).sum()) + 1)
    if rank is not None:
        if rank < 1:
            raise ValueError(f"rank must be >= 1 or None, got {rank}")
        r = min(r, rank)
    return max(0, min(r, cap))


def hankel_dmd(
    trajectory: torch.Tensor,
    *,
    delay: int = 1,
    rank: int | None = None,
    energy: float | None = None,
    rtol: float | None = None,
    constant: bool = True,
) -> DMDFit:
    """Fit the Hankel-DMD model of DESIGN.md section 1 to a (tau, q) trajectory.

    Parameters
    ----------
    delay:
        Depth d of the time-delay embedding (1 = no delay).
    rank, energy, rtol:
        POD truncation: at most ``rank`` modes, the fewest modes holding an ``energy`` fraction
        of the squared singular values, and never modes below ``rtol`` times the largest
        singular value (default 1e3 * machine epsilon). The rank is also capped so the least
        squares problem stays overdetermined.
    constant:
        Include the constant observable (the column c). Without it c = 0.
    """
    traj = validate_trajectory(trajectory)
    tau, q = traj.shape
    if not isinstance(delay, int) or delay < 1:
        raise ValueError(f"delay must be a positive int, got {delay!r}")
    m = tau - delay + 1  # number of delay vectors
    dev, dt = traj.device, traj.dtype
    if m < 1:
        raise ValueError(f"delay={delay} is longer than the trajectory (tau={tau})")
    # Column j is [h_j; ...; h_{j+d-1}]: newest block last.
    G = torch.stack([traj[j : j + delay].reshape(-1) for j in range(m)], dim=1)
    last = G[:, -1]
    empty = torch.zeros(0, 0, dtype=dt, device=dev)
    if m < 3:  # need at least two transitions to fit anything
        return DMDFit(empty, torch.zeros(0, dtype=dt, device=dev), torch.zeros(G.shape[0], 0, dtype=dt, device=dev),
                      torch.zeros(0, dtype=dt, device=dev), 0, delay, q, m, float("nan"), last)
    U, S, _ = torch.linalg.svd(G, full_matrices=False)
    n_eq = m - 1
    cap = n_eq - 1 if constant else n_eq
    r = _select_rank(S, rank, energy, rtol, cap)
    if r == 0:
        return DMDFit(empty, torch.zeros(0, dtype=dt, device=dev), U[:, :0], S, 0, delay, q, m, float("nan"), last)
    Ur = U[:, :r]
    Y = Ur.T @ G
    Y0, Y1 = Y[:, :-1], Y[:, 1:]
    Phi = torch.cat([Y0, torch.ones(1, n_eq, dtype=dt, device=dev)]) if constant else Y0
    # Minimum-norm least squares through the pseudo-inverse (works on every device).
    M = Y1 @ torch.linalg.pinv(Phi, rtol=1e3 * torch.finfo(dt).eps * max(Phi.shape))
    A = M[:, :r]
    c = M[:, r] if constant else torch.zeros(r, dtype=dt, device=dev)
    denom = torch.linalg.norm(Y1)
    resid = torch.linalg.norm(Y1 - M @ Phi) / denom if float(denom) > 0 else torch.tensor(0.0)
    return DMDFit(A, c, Ur, S, r, delay, q, m, float(resid), last)


@dataclass
class GlocalEstimate:
    """A glocal hypergradient estimate with the diagnostics of its fit."""

    value: torch.Tensor
    estimator: str
    fallback: bool
    reason: str | None
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def to_record(self, *, include_value: bool = True) -> dict[str, Any]:
        """JSON-friendly dict (eigenvalues as [re, im] pairs)."""
        from glocal.utils import to_jsonable

        rec = {
            "estimator": self.estimator,
            "fallback": self.fallback,
            "reason": self.reason,
            "norm": float(torch.linalg.norm(self.value)),
            **{k: to_jsonable(v) for k, v in self.diagnostics.items()},
        }
        if include_value:
            rec["value"] = to_jsonable(self.value)
        return rec


def _clip_to_unit_disk(A: torch.Tensor) -> torch.Tensor:
    """A with every eigenvalue of modulus > 1 scaled onto the unit circle (others unchanged)."""
    lam, V = torch.linalg.eig(A)
    mod = lam.abs()
    if bool((mod <= 1.0).all()):
        return A
    lam = torch.where(mod > 1.0, lam / mod, lam)
    return (V @ torch.diag(lam) @ torch.linalg.inv(V)).real.to(A.dtype)


def glocal_estimate(
    trajectory: Any,
    *,
    estimator: str = "limit",
    delay: int = 1,
    rank: int | None = None,
    energy: float | None = None,
    rtol: float | None = None,
    steps_ahead: int | None = None,
    max_condition: float = 1e8,
    max_norm_ratio: float = 10.0,
) -> GlocalEstimate:
    """Estimate the global hypergradient from a window's trajectory of local hypergradients.

    Parameters
    ----------
    trajectory:
        (tau, q) tensor; row k is h_{s->s+k+1}. A 1-D input is a scalar sequence.
    estimator:
        ``limit`` (default), ``horizon`` or ``local``; see the module docstring.
    delay, rank, energy, rtol:
        Passed to :func:`hankel_dmd`.
    steps_ahead:
        For ``horizon``: how many steps past the last row to extrapolate (the remaining
        length of training). Required for ``horizon``.
    max_condition, max_norm_ratio:
        Guards; see the module docstring.

    Returns
    -------
    GlocalEstimate
        ``value`` has shape (q,) (or () for a 1-D input) and is always finite.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    scalar = isinstance(trajectory, torch.Tensor) and trajectory.ndim == 1
    traj = validate_trajectory(trajectory)
    tau, q = traj.shape
    local = traj[-1]
    observed = float(torch.linalg.norm(traj, dim=1).max())

    def finish(value: torch.Tensor, fallback: bool, reason: str | None, diag: dict[str, Any]) -> GlocalEstimate:
        diag.setdefault("tau", tau)
        diag.setdefault("delay", delay)
        return GlocalEstimate(value[0] if scalar else value, estimator, fallback, reason, diag)

    if estimator == "local":
        return finish(local.clone(), False, None, {"rank": 0, "eigenvalues": torch.zeros(0, dtype=torch.complex128)})
    if estimator == "horizon" and (steps_ahead is None or steps_ahead < 0):
        raise ValueError(f"estimator='horizon' needs steps_ahead >= 0, got {steps_ahead!r}")
    if delay > tau:
        return finish(local.clone(), True, f"delay {delay} longer than the trajectory (tau={tau})",
                      {"rank": 0, "eigenvalues": torch.zeros(0, dtype=torch.complex128)})
    fit = hankel_dmd(traj, delay=delay, rank=rank, energy=energy, rtol=rtol)
    diag: dict[str, Any] = {
        "rank": fit.rank,
        "n_snapshots": fit.n_snapshots,
        "residual": fit.residual,
        "eigenvalues": torch.zeros(0, dtype=torch.complex128),
        "condition_number": float("nan"),
        "spectral_radius": float("nan"),
    }
    if fit.n_snapshots < 3:
        return finish(local.clone(), True, f"too few snapshots ({fit.n_snapshots} delay vectors; need >= 3)", diag)
    if fit.rank < 1:
        return finish(local.clone(), True, "rank 0: the trajectory is zero (or below tolerance)", diag)
    eig = fit.eigenvalues
    diag["eigenvalues"] = eig.to(torch.complex128).cpu()
    if not bool(torch.isfinite(torch.view_as_real(eig)).all()):
        return finish(local.clone(), True, "non-finite eigenvalues in the fit", diag)
    diag["spectral_radius"] = float(eig.abs().max())
    eye = torch.eye(fit.rank, dtype=fit.A.dtype, device=fit.A.device)
    cond = float(torch.linalg.cond(eye - fit.A))
    diag["condition_number"] = cond
    if not (cond < max_condition):  # also catches NaN
        return finish(local.clone(), True, f"ill-conditioned fit: cond(I - A) = {cond:.3g} > {max_condition:.3g}", diag)
    if estimator == "limit":
        y = torch.linalg.solve(eye - fit.A, fit.c)
    else:
        A = _clip_to_unit_disk(fit.A)
        r = fit.rank
        Maug = torch.zeros(r + 1, r + 1, dtype=A.dtype, device=A.device)
        Maug[:r, :r] = A
        Maug[:r, r] = fit.c
        Maug[r, r] = 1.0
        y0 = torch.cat([fit.U.T @ fit.last, torch.ones(1, dtype=A.dtype, device=A.device)])
        y = (torch.linalg.matrix_power(Maug, int(steps_ahead)) @ y0)[:r]
    value = fit.unembed(y)
    if not bool(torch.isfinite(value).all()):
        return finish(local.clone(), True, "non-finite estimate", diag)
    norm = float(torch.linalg.norm(value))
    if observed > 0 and norm > max_norm_ratio * observed:
        return finish(
            local.clone(), True,
            f"estimate norm {norm:.3g} exceeds {max_norm_ratio:g} x the largest observed norm {observed:.3g}", diag,
        )
    if observed == 0 and norm > 0:
        return finish(local.clone(), True, "nonzero estimate from an all-zero trajectory", diag)
    return finish(value, False, None, diag)
