"""The noisy quadratic model (NQM): short-horizon bias with a known answer.

Wu, Ren, Liao & Grosse, "Understanding Short-Horizon Bias in Stochastic Meta-Optimization"
(ICLR 2018). The inner problem is the quadratic loss

    L(theta) = 1/2 sum_i h_i theta_i^2        theta in R^n   (default n = 1000, h_i = 1/i)

trained by heavy-ball SGD on the stochastic gradient g = H theta + eps, eps ~ N(0, diag(c)),
c_i = h_i / B for a "batch size" B:

    v <- beta v + g,    theta <- theta - alpha v.

The hyperparameters phi are the log learning rate (one value, or a K-phase piecewise-constant
schedule over the T steps) and, optionally, the logit momentum. One coordinate's state
x = (theta_i, v_i) follows x' = M x + n eps_i with M = [[1 - alpha h, -alpha beta], [h, beta]]
and n = (-alpha, 1), so its non-central second moment S = E[x x^T] (three numbers: E theta^2,
E theta v, E v^2) follows the deterministic recursion S' = M S M^T + c_i n n^T exactly.

Two modes, both exposing a pure ``step(state, phi, batch) -> state`` on a flat 1-D state and a
``val_fn(state, phi)``, so that every engine of :mod:`glocal.hypergrad` runs on them unchanged:

* ``expected`` — the state is the stacked second moments (3n numbers) and the meta-objective is
  the exact expected loss E[L(theta_t)] = 1/2 sum_i h_i E theta_i^2. Deterministic training.
* ``sampled`` — the state is (theta, v) (2n numbers), the noise of step t is drawn from a
  generator seeded by (noise seed, batch order, t) alone, and the meta-objective is the realized
  loss L(theta_t). The draw travels in the batch (:class:`NQMBatch`), outside the differentiated
  code, so forward and reverse engines and every tangent direction see the same noise.

The answer key (:func:`optimal_hyperparameters`) is the optimum of E[L(theta_T)], computed
directly: each phase of constant hyperparameters is a constant affine map of the moments, so
E[L(theta_T)] is a product of K matrix powers per coordinate, cheap and differentiable. A grid
plus L-BFGS-B on the exact (autograd) gradient finds the constant optimum; L-BFGS-B started
from it finds the K-phase schedule's. :func:`short_horizon_bias` gives the learning rates that
short-horizon (greedy) tuning selects, against the long-horizon optimum;
:func:`local_hypergradient_descent` runs the runner's ``hd`` / ``local`` strategies in a few lines.

How it plugs into the runner (proposal)
---------------------------------------
:class:`NQMTask` has the interface of :class:`glocal.tasks.Task` that ``glocal.train`` uses:
``dynamics.step``, ``val_fn()``, ``batches(start, stop, order=None)``, ``evaluate(state)``,
``hyper_values(phi)``, ``init_state()``, ``init_phi()``, ``hyper``, ``steps``, ``name``,
``seed``, ``device``, ``dtype`` (``data`` is None). ``build_task(config, "nqm", seed, device,
dtype)`` would return ``build_nqm_task(task_config(config, "nqm"), seed, device, dtype)``; the
config section ``tasks.nqm`` has the keys of :data:`NQM_DEFAULTS` (plus ``enabled`` and
``strategy_options``). ``evaluate`` reports the loss (expected or realized) under
``train_loss``/``val_loss``/``test_loss`` and no accuracy. The run summary would add
``task.answer_key().to_record()`` (the best constant learning rate when ``phases = 1``) and
``task.answer_key(phases=10)`` (the best schedule, which local and glocal can approach since
their phi changes along training), and the ratio of the run's expected final loss to both:
in expected mode that loss is the final ``val_loss``; in sampled mode it is
``task.expected_loss_of_segments([(start, stop, phi), ...])`` of the phi the run used on each
window (the realized loss of one run is a draw with a spread of 10-25%). The answer key costs
seconds: compute it once per task configuration, not once per run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from scipy import optimize

from glocal.config import ConfigError
from glocal.dynamics import HyperBlock, HyperSpace

__all__ = [
    "NQM_DEFAULTS",
    "NQMBatch",
    "NQMDynamics",
    "NQMOptimum",
    "NQMTask",
    "NoisyQuadratic",
    "build_nqm_task",
    "greedy_schedule",
    "horizon_optimal_lr",
    "local_hypergradient_descent",
    "optimal_hyperparameters",
    "phase_lengths",
    "short_horizon_bias",
]

MODES = ("expected", "sampled")
#: Keys of a ``tasks.<name>`` section of kind ``nqm`` that the pipeline reads and the task does not.
PIPELINE_KEYS = ("kind", "enabled", "seeds", "strategy_options", "answer_key", "short_horizon_bias")
THETA0_DISTRIBUTIONS = ("normal", "uniform", "constant")

#: Default ``tasks.nqm`` section (the proposal for the config schema).
NQM_DEFAULTS: dict[str, Any] = {
    "dim": 1000,
    "curvature_power": 1.0,  # h_i = i ** -power
    "batch_size": 10.0,  # c_i = h_i / batch_size
    "mode": "expected",
    "steps": 300,
    "phases": 1,
    "tune": ["lr", "momentum"],
    "optimizer": {"lr": 0.1, "momentum": 0.5},
    "theta0": {"distribution": "normal", "scale": 1.0, "seed": 0},
    "noise_seed": 0,
}


# ---------------------------------------------------------------------------------- the problem
class NQMBatch(NamedTuple):
    """What one NQM step consumes: the global step (for the schedule's phase) and the noise.

    ``noise`` is a standard-normal draw of shape (n,) in ``sampled`` mode (scaled by sqrt(c)
    inside the step) and ``None`` in ``expected`` mode.
    """

    step: int
    noise: torch.Tensor | None = None


def phase_lengths(steps: int, phases: int) -> list[int]:
    """Number of steps in each of the ``phases`` phases of a ``steps``-step schedule.

    Step t belongs to phase ``min(t * phases // steps, phases - 1)`` (steps past the end stay
    in the last phase); the lengths differ by at most one.
    """
    if steps < 1 or phases < 1 or phases > steps:
        raise ValueError(f"need 1 <= phases <= steps, got phases={phases}, steps={steps}")
    counts = [0] * phases
    for t in range(steps):
        counts[t * phases // steps] += 1
    return counts


class NoisyQuadratic:
    """The NQM problem: curvatures ``h``, gradient-noise variances ``c`` and theta_0.

    Parameters
    ----------
    dim:
        Dimension n.
    curvature_power:
        h_i = i ** -curvature_power, i = 1..n (1: the classic h_i = 1/i).
    batch_size:
        B in c_i = h_i / B (larger B, less noise); any positive number.
    theta0, theta0_scale, theta0_seed:
        theta_0 is drawn once: ``normal`` N(0, scale^2), ``uniform`` on [-scale sqrt(3),
        scale sqrt(3)] (same variance), or ``constant`` (every coordinate = scale).

    All closed forms here compute in float64; ``dtype`` is that of the tensors the dynamics use.
    """

    def __init__(
        self,
        dim: int = 1000,
        *,
        curvature_power: float = 1.0,
        batch_size: float = 10.0,
        theta0: str = "normal",
        theta0_scale: float = 1.0,
        theta0_seed: int = 0,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str = "cpu",
    ) -> None:
        if int(dim) < 1:
            raise ValueError(f"dim: must be >= 1, got {dim}")
        if not batch_size > 0:
            raise ValueError(f"batch_size: must be > 0, got {batch_size}")
        if theta0 not in THETA0_DISTRIBUTIONS:
            raise ValueError(f"theta0.distribution: expected one of {THETA0_DISTRIBUTIONS}, got {theta0!r}")
        self.dim = int(dim)
        self.curvature_power = float(curvature_power)
        self.batch_size = float(batch_size)
        self.theta0_kind, self.theta0_scale, self.theta0_seed = theta0, float(theta0_scale), int(theta0_seed)
        self.dtype, self.device = dtype, torch.device(device)
        i = torch.arange(1, self.dim + 1, dtype=torch.float64)
        h = i.pow(-self.curvature_power)
        g = torch.Generator().manual_seed(self.theta0_seed)
        if theta0 == "normal":
            t0 = self.theta0_scale * torch.randn(self.dim, generator=g, dtype=torch.float64)
        elif theta0 == "uniform":
            t0 = self.theta0_scale * math.sqrt(3.0) * (2 * torch.rand(self.dim, generator=g, dtype=torch.float64) - 1)
        else:
            t0 = torch.full((self.dim,), self.theta0_scale, dtype=torch.float64)
        # float64 masters for the closed forms; working copies for the dynamics.
        self.h64, self.c64, self.theta0_64 = h, h / self.batch_size, t0
        self.h = h.to(dtype=dtype, device=self.device)
        self.half_h = (0.5 * h).to(dtype=dtype, device=self.device)
        self.c = self.c64.to(dtype=dtype, device=self.device)
        self.sqrt_c = self.c64.sqrt().to(dtype=dtype, device=self.device)
        self.theta0 = t0.to(dtype=dtype, device=self.device)

    @property
    def h_max(self) -> float:
        """Largest curvature (sets the stability limit alpha h_max < 2 (1 + beta))."""
        return float(self.h64.max())

    def stability_limit(self, momentum: float) -> float:
        """Largest stable learning rate for heavy ball with ``momentum``: 2 (1 + beta) / h_max."""
        return 2.0 * (1.0 + momentum) / self.h_max

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        """L(theta) = 1/2 sum_i h_i theta_i^2."""
        return 0.5 * (self.h.to(theta.dtype) * theta * theta).sum(-1)

    def initial_moments(self) -> torch.Tensor:
        """S_0 = (theta_0^2, 0, 0) per coordinate, shape (3, n), float64 (v_0 = 0)."""
        z = torch.zeros_like(self.theta0_64)
        return torch.stack([self.theta0_64**2, z, z])

    def noise(self, step: int, seed: int = 0, order: int = 0) -> torch.Tensor:
        """Standard-normal draw of step ``step``: a function of (seed, order, step) alone."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        key = np.random.SeedSequence([int(seed), int(order), int(step)]).generate_state(2, dtype=np.uint32)
        g = torch.Generator().manual_seed(int(key[0]) << 32 | int(key[1]))
        return torch.randn(self.dim, generator=g, dtype=torch.float64).to(dtype=self.dtype, device=self.device)

    # ------------------------------------------------------------------ closed forms (float64)
    def _phase_map(self, lr: torch.Tensor, momentum: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(M^L, Q_L) of ``length`` = L steps with constant (lr, momentum), per coordinate.

        L steps map the moments as S -> M^L S (M^L)^T + Q_L, Q_L = sum_{j<L} M^j (c n n^T) M^jT.
        Computed by doubling, (M, Q) o (M, Q) = (M^2, M Q M^T + Q): O(log L) operations on
        2 x 2 matrices stored as tensors of shape (*batch, 2, 2, n).
        """
        a = lr[..., None]
        b = momentum[..., None]
        h, c = self.h64, self.c64
        one = torch.ones_like(a * h)
        M = _mat2(1 - a * h, -a * b * one, h * one, b * one)
        Q = _mat2(c * a * a, -c * a * one, -c * a * one, c * one)
        result = None
        L = int(length)
        while L:
            if L & 1:
                result = (M, Q) if result is None else _compose(result, (M, Q))
            L >>= 1
            if L:
                M, Q = _compose((M, Q), (M, Q))
        return result

    def expected_moments(
        self,
        lrs: torch.Tensor | Sequence[float] | float,
        momenta: torch.Tensor | Sequence[float] | float,
        lengths: Sequence[int],
        moments0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Second moments after phases of constant hyperparameters, in closed form (float64).

        ``lrs`` and ``momenta`` have shape (*batch, K) (or broadcast to it; scalars for K = 1),
        ``lengths`` the K phase lengths. Each phase is one affine map of the moments, its power
        by doubling (O(n log length) work). Returns (*batch, 3, n) = (E theta^2, E theta v,
        E v^2); differentiable in ``lrs`` and ``momenta``.
        """
        lrs = torch.as_tensor(lrs, dtype=torch.float64)
        momenta = torch.as_tensor(momenta, dtype=torch.float64)
        K = len(lengths)
        if lrs.ndim == 0:
            lrs = lrs.expand(K)
        if momenta.ndim == 0:
            momenta = momenta.expand(K)
        lrs, momenta = torch.broadcast_tensors(lrs, momenta)
        if lrs.shape[-1] != K:
            raise ValueError(f"got {lrs.shape[-1]} phase values for {K} phase lengths")
        S0 = self.initial_moments() if moments0 is None else torch.as_tensor(moments0, dtype=torch.float64)
        S = _mat2(S0[0], S0[1], S0[1], S0[2])
        for k, L in enumerate(lengths):
            if L == 0:
                continue
            M, Q = self._phase_map(lrs[..., k], momenta[..., k], L)
            S = _congruence(M, S) + Q
        S = S.expand(*lrs.shape[:-1], 2, 2, self.dim)
        return torch.stack([S[..., 0, 0, :], S[..., 0, 1, :], S[..., 1, 1, :]], -2)

    def expected_loss(
        self,
        lrs: torch.Tensor | Sequence[float] | float,
        momenta: torch.Tensor | Sequence[float] | float,
        steps: int | Sequence[int],
        moments0: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """E[L(theta_T)] in closed form for a piecewise-constant schedule (float64).

        ``steps``: the total T (the phases then split it as :func:`phase_lengths` does) or the
        list of phase lengths. Shapes as in :meth:`expected_moments`; returns shape (*batch,).
        """
        lrs_t = torch.as_tensor(lrs, dtype=torch.float64)
        if isinstance(steps, int):
            K = lrs_t.shape[-1] if lrs_t.ndim else 1
            lengths = phase_lengths(steps, K)
        else:
            lengths = [int(s) for s in steps]
        S = self.expected_moments(lrs_t, momenta, lengths, moments0)
        return 0.5 * (self.h64 * S[..., 0, :]).sum(-1)

    def expected_loss_per_step(
        self, lrs: Sequence[float] | torch.Tensor, momenta: Sequence[float] | torch.Tensor | float,
        moments0: torch.Tensor | None = None,
    ) -> float:
        """E[L(theta_T)] for an arbitrary per-step schedule (one lr, momentum per step).

        The expected loss of the hyperparameters a run actually used (e.g. a tuned run in
        sampled mode, whose phi changed every window), by the step recursion in float64.
        """
        lrs = torch.as_tensor(lrs, dtype=torch.float64).reshape(-1)
        momenta = torch.as_tensor(momenta, dtype=torch.float64).reshape(-1).expand(lrs.shape)
        S = self.initial_moments() if moments0 is None else torch.as_tensor(moments0, dtype=torch.float64)
        A, B, C = S
        h, c = self.h64, self.c64
        for a, b in zip(lrs.tolist(), momenta.tolist()):
            A, B, C = _moment_step(A, B, C, h, c, a, b)
        return float(0.5 * (h * A).sum())

    def __repr__(self) -> str:
        return (
            f"NoisyQuadratic(dim={self.dim}, curvature_power={self.curvature_power}, batch_size={self.batch_size}, "
            f"theta0={self.theta0_kind}(scale={self.theta0_scale}, seed={self.theta0_seed}))"
        )


def _mat2(m00: torch.Tensor, m01: torch.Tensor, m10: torch.Tensor, m11: torch.Tensor) -> torch.Tensor:
    """Per-coordinate 2 x 2 matrices as one tensor of shape (*batch, 2, 2, n)."""
    return torch.stack([torch.stack([m00, m01], -2), torch.stack([m10, m11], -2)], -3)


def _matmul2(X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    """X Y for stacks of 2 x 2 matrices of shape (*batch, 2, 2, n) (few, large operations)."""
    return (X.unsqueeze(-2) * Y.unsqueeze(-4)).sum(-3)


def _congruence(M: torch.Tensor, S: torch.Tensor) -> torch.Tensor:
    """M S M^T for stacks of 2 x 2 matrices."""
    return _matmul2(_matmul2(M, S), M.transpose(-3, -2))


def _compose(first: tuple, then: tuple) -> tuple:
    """The moment map of ``first`` followed by ``then``: (M2 M1, M2 Q1 M2^T + Q2)."""
    M1, Q1 = first
    M2, Q2 = then
    return _matmul2(M2, M1), _congruence(M2, Q1) + Q2


def _moment_step(A, B, C, h, c, a, b):
    """One step of S' = M S M^T + c n n^T, M = [[1 - a h, -a b], [h, b]], n = (-a, 1)."""
    m11 = 1 - a * h
    m12 = -a * b
    return (
        m11 * m11 * A + 2 * m11 * m12 * B + m12 * m12 * C + c * a * a,
        m11 * h * A + (m11 * b + m12 * h) * B + m12 * b * C - c * a,
        h * h * A + 2 * h * b * B + b * b * C + c,
    )


# --------------------------------------------------------------------------------- the dynamics
class NQMDynamics:
    """Heavy-ball SGD on the NQM as a pure ``step(state, phi, batch)`` on a flat state.

    Parameters
    ----------
    problem:
        The :class:`NoisyQuadratic`.
    mode:
        ``expected`` (state: E theta^2, E theta v, E v^2 stacked, 3n) or ``sampled``
        (state: theta, v, 2n).
    steps, phases:
        T and the number K of learning-rate phases (``phases = 1``: a constant learning rate).
    hyper:
        The tuned hyperparameters: a block ``lr`` (log transform) of size K, and optionally a
        block ``momentum`` (logit) of size 1; when momentum is not tuned it is ``momentum``.
    """

    def __init__(self, problem: NoisyQuadratic, mode: str, steps: int, hyper: HyperSpace, *,
                 phases: int = 1, momentum: float = 0.0) -> None:
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {MODES}, got {mode!r}")
        phase_lengths(steps, phases)  # validates
        if "lr" not in hyper or hyper.block("lr").size != phases or hyper.block("lr").transform != "log":
            raise ValueError(f"hyper must hold a log-transformed block 'lr' of size phases={phases}")
        if "momentum" in hyper and (hyper.block("momentum").size != 1 or hyper.block("momentum").transform != "logit"):
            raise ValueError("hyper block 'momentum' must be a single logit-transformed value")
        extra = [b.name for b in hyper.blocks if b.name not in ("lr", "momentum")]
        if extra:
            raise ValueError(f"the NQM tunes only 'lr' and 'momentum', got {extra}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum: fixed momentum must lie in [0, 1), got {momentum}")
        self.problem, self.mode, self.steps, self.phases = problem, mode, int(steps), int(phases)
        self.hyper, self.fixed_momentum = hyper, float(momentum)
        self.n = problem.dim
        self.P = (3 if mode == "expected" else 2) * self.n
        self._lr_start = hyper.slice("lr").start
        self._mom_index = hyper.slice("momentum").start if "momentum" in hyper else None
        self._poly: dict[tuple, torch.Tensor] = {}

    def phase(self, step: int) -> int:
        """Schedule phase of global step ``step`` (steps past T stay in the last phase)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        return min(step * self.phases // self.steps, self.phases - 1)

    def hyperparameters(self, phi: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor | float]:
        """(learning rate, momentum) used at global step ``step`` (differentiable in phi).

        The transforms of the validated blocks (exp for ``lr``, sigmoid for ``momentum``) are
        applied to the two entries used only: under the forward engine every operation pays
        the transforms' overhead once per tangent direction.
        """
        lr = torch.exp(phi[self._lr_start + self.phase(step)])
        mom = torch.sigmoid(phi[self._mom_index]) if self._mom_index is not None else self.fixed_momentum
        return lr, mom

    def _coefficients(self, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """The step as a polynomial in (alpha, beta): coefficients W of shape (monomials, n * out * in).

        Per coordinate, one step is a linear map of its inputs whose matrix is a polynomial in
        the learning rate alpha and the momentum beta; row ``(d + 1) i + j`` of W holds the
        coefficient of alpha^i beta^j (i, j <= d):

        * expected (d = 2): inputs (E theta^2, E theta v, E v^2, 1), outputs the first three,
          S' = M S M^T + c n n^T expanded;
        * sampled (d = 1): inputs (theta, v, sqrt(c) z), outputs (theta, v);
          v' = h theta + beta v + sqrt(c) z, theta' = theta - alpha v'.

        The step is then two matrix products (monomials @ W, then a batch of per-coordinate
        matrix-vector products). Why not the direct formula: under the forward engine
        (``vmap`` of ``jvp``) every elementwise operation that mixes a constant (h, c) with the
        state runs through PyTorch's Python reference implementation (about 1000 Python calls
        each), matrix products do not; the forward step is ~4x faster, the reverse one ~2x.
        """
        key = (dtype, device)
        if key not in self._poly:
            h, c = self.problem.h64, self.problem.c64
            one = torch.ones_like(h)
            if self.mode == "expected":
                W = torch.zeros(3, 3, self.n, 3, 4, dtype=torch.float64)  # alpha^i, beta^j, coordinate, out, in
                A, B, C, ONE = range(4)
                # E theta^2' = (1 - a h)^2 A - 2 (1 - a h) a b B + a^2 b^2 C + c a^2
                W[0, 0, :, 0, A], W[1, 0, :, 0, A], W[2, 0, :, 0, A] = one, -2 * h, h * h
                W[1, 1, :, 0, B], W[2, 1, :, 0, B], W[2, 2, :, 0, C], W[2, 0, :, 0, ONE] = -2 * one, 2 * h, one, c
                # E theta v' = (1 - a h) h A + (b - 2 a b h) B - a b^2 C - c a
                W[0, 0, :, 1, A], W[1, 0, :, 1, A], W[0, 1, :, 1, B], W[1, 1, :, 1, B] = h, -h * h, one, -2 * h
                W[1, 2, :, 1, C], W[1, 0, :, 1, ONE] = -one, -c
                # E v^2' = h^2 A + 2 h b B + b^2 C + c
                W[0, 0, :, 2, A], W[0, 1, :, 2, B], W[0, 2, :, 2, C], W[0, 0, :, 2, ONE] = h * h, 2 * h, one, c
            else:
                W = torch.zeros(2, 2, self.n, 2, 3, dtype=torch.float64)
                TH, V, NOISE = range(3)
                # theta' = theta - a (h theta + b v + noise)
                W[0, 0, :, 0, TH], W[1, 0, :, 0, TH], W[1, 1, :, 0, V], W[1, 0, :, 0, NOISE] = one, -h, -one, -one
                # v' = h theta + b v + noise
                W[0, 0, :, 1, TH], W[0, 1, :, 1, V], W[0, 0, :, 1, NOISE] = h, one, one
            self._poly[key] = W.reshape(W.shape[0] * W.shape[1], -1).to(dtype=dtype, device=device)
        return self._poly[key]

    def init_state(self, dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """Flat initial state: (theta_0^2, 0, 0) in expected mode, (theta_0, 0) in sampled mode."""
        t0 = self.problem.theta0
        dtype, device = dtype or t0.dtype, device or t0.device
        t0 = t0.to(dtype=dtype, device=device)
        z = torch.zeros_like(t0)
        return torch.cat([t0 * t0, z, z]) if self.mode == "expected" else torch.cat([t0, z])

    def step(self, state: torch.Tensor, phi: torch.Tensor, batch: NQMBatch) -> torch.Tensor:
        """One heavy-ball step: pure and differentiable in ``state`` and ``phi``."""
        a, b = self.hyperparameters(phi, batch.step)
        n, dtype, device = self.n, state.dtype, state.device
        b = torch.as_tensor(b, dtype=dtype, device=device)
        W = self._coefficients(dtype, device)
        if self.mode == "expected":
            a2, b2 = a * a, b * b
            monomials = torch.stack([torch.ones_like(a), b, b2, a, a * b, a * b2, a2, a2 * b, a2 * b2])
            extra = torch.ones(1, n, dtype=dtype, device=device)
            n_out = 3
        else:
            if batch.noise is None:
                raise ValueError(f"sampled mode needs the noise of step {batch.step} in the batch (NQMBatch.noise)")
            monomials = torch.stack([torch.ones_like(a), b, a, a * b])
            extra = (self.problem.sqrt_c.to(dtype) * batch.noise.to(dtype)).reshape(1, n)
            n_out = 2
        x = torch.cat([state.reshape(n_out, n), extra]).T.unsqueeze(-1)  # (n, inputs, 1)
        maps = (monomials @ W).reshape(n, n_out, n_out + 1)  # (n, outputs, inputs)
        return (maps @ x).reshape(n, n_out).T.reshape(n_out * n)

    def val_fn(self, state: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        """Meta-objective: E[L(theta_t)] (expected mode) or the realized L(theta_t) (sampled)."""
        n = self.n
        half_h = self.problem.half_h.to(state.dtype)
        if self.mode == "expected":
            return torch.dot(half_h, state[:n])
        theta = state[:n]
        return torch.dot(half_h, theta * theta)

    def theta_second_moment(self, state: torch.Tensor) -> torch.Tensor:
        """E theta^2 per coordinate (expected mode) or theta^2 (sampled mode)."""
        return state[: self.n] if self.mode == "expected" else state[: self.n] ** 2

    def __repr__(self) -> str:
        tuned = [b.name for b in self.hyper.blocks]
        return f"NQMDynamics(mode={self.mode}, steps={self.steps}, phases={self.phases}, tuned={tuned}, n={self.n})"


# --------------------------------------------------------------------------------- the task
@dataclass
class NQMTask:
    """The NQM with the interface of :class:`glocal.tasks.Task` that the runner uses."""

    problem: NoisyQuadratic
    dynamics: NQMDynamics
    hyper: HyperSpace
    steps: int
    seed: int
    device: torch.device
    dtype: torch.dtype
    noise_seed: int = 0
    name: str = "nqm"
    batch_size: float | None = None
    kind: str = "nqm"  #: the task kind (the runner, the search and the extraction dispatch on it)
    order_seed: int = 0
    data: Any = None  # no data set; the runner reads data.flipped only for reweight
    _answer: dict = field(default_factory=dict, repr=False)

    @property
    def mode(self) -> str:
        """``expected`` or ``sampled``."""
        return self.dynamics.mode

    def init_state(self) -> torch.Tensor:
        """The flat initial state (same theta_0 for every run seed: it is part of the problem)."""
        return self.dynamics.init_state(self.dtype, self.device)

    def init_phi(self) -> torch.Tensor:
        """phi_0 (log learning rates, logit momentum if tuned)."""
        return self.hyper.init_phi(self.dtype, self.device)

    def batch(self, step: int, order: int | None = None) -> NQMBatch:
        """The :class:`NQMBatch` of global step ``step``; ``order`` picks an independent noise stream."""
        if self.mode == "expected":
            return NQMBatch(step, None)
        order = self.order_seed if order is None else order
        # The run seed selects the noise stream (theta_0 and the answer key do not depend on it).
        return NQMBatch(step, self.problem.noise(step, seed=self.noise_seed * 1_000_003 + self.seed, order=order))

    def batches(self, start: int, stop: int, order: int | None = None) -> list[NQMBatch]:
        """Batches of steps ``start .. stop - 1``."""
        return [self.batch(t, order) for t in range(start, stop)]

    def val_fn(self):
        """The meta-objective ``val_fn(state, phi)``."""
        return self.dynamics.val_fn

    def evaluate(self, state: torch.Tensor) -> dict[str, float]:
        """The loss (expected or realized) under the runner's train/val/test keys; no accuracy."""
        with torch.no_grad():
            v = float(self.dynamics.val_fn(state, torch.zeros(0)))
        return {"train_loss": v, "val_loss": v, "test_loss": v}

    def hyper_values(self, phi: torch.Tensor) -> dict[str, float]:
        """Constrained values for logging: ``hp:lr`` (or ``hp:lr[k]`` per phase), ``hp:momentum``."""
        out: dict[str, float] = {}
        for name, v in self.hyper.constrain(phi.detach()).items():
            v = v.detach().cpu().to(torch.float64)
            if v.numel() == 1:
                out[f"hp:{name}"] = float(v[0])
            else:
                for i, x in enumerate(v.tolist()):
                    out[f"hp:{name}[{i}]"] = float(x)
        if "momentum" not in self.hyper:
            out["hp:momentum"] = self.dynamics.fixed_momentum
        return out

    def schedule(self, phi: torch.Tensor) -> tuple[list[float], float]:
        """(per-phase learning rates, momentum) of phi."""
        vals = self.hyper.constrain(phi.detach().to(torch.float64))
        mom = float(vals["momentum"][0]) if "momentum" in vals else self.dynamics.fixed_momentum
        return [float(x) for x in vals["lr"]], mom

    def expected_final_loss(self, phi: torch.Tensor) -> float:
        """E[L(theta_T)] of running all T steps with ``phi`` (closed form, float64)."""
        lrs, mom = self.schedule(phi)
        return float(self.problem.expected_loss(lrs, mom, phase_lengths(self.steps, self.dynamics.phases)))

    def expected_loss_of_segments(self, segments: Sequence[tuple[int, int, torch.Tensor]]) -> float:
        """E[L(theta_T)] of a run whose phi changed along training (local, glocal, or a sampled run).

        ``segments``: (start step, stop step, phi used on those steps), covering 0..T in order.
        In expected mode this equals the run's final validation loss; in sampled mode it is
        the expected loss of the schedule the run chose (its realized loss is one noisy draw).
        """
        lrs: list[float] = []
        moms: list[float] = []
        t = 0
        for start, stop, phi in segments:
            if start != t or stop <= start:
                raise ValueError(f"segments must cover the steps in order without gaps; got ({start}, {stop}) at step {t}")
            per_phase, mom = self.schedule(phi)
            lrs += [per_phase[self.dynamics.phase(k)] for k in range(start, stop)]
            moms += [mom] * (stop - start)
            t = stop
        if t != self.steps:
            raise ValueError(f"segments end at step {t}, the task has {self.steps} steps")
        return self.problem.expected_loss_per_step(lrs, moms)

    def answer_key(self, phases: int | None = None, **kwargs: Any) -> NQMOptimum:
        """The optimum of E[L(theta_T)] over this task's hyperparameters (cached).

        ``phases`` (default: the task's) sets the schedule's resolution: with ``phases = 1`` the
        best constant learning rate (what ``global`` can reach on a constant-lr task); strategies
        whose phi changes along training (local, glocal) realize a schedule, so compare them with
        a K-phase key as well (K = 10 comes within ~2% of K = 20 here). ``kwargs`` go to
        :func:`optimal_hyperparameters` (e.g. ``stable=False``).
        """
        phases = self.dynamics.phases if phases is None else int(phases)
        key = (phases, *sorted(kwargs.items()))
        if key not in self._answer:
            self._answer[key] = optimal_hyperparameters(
                self.problem, self.steps, phases=phases, tune_momentum="momentum" in self.hyper,
                momentum=self.dynamics.fixed_momentum, **kwargs,
            )
        return self._answer[key]


def build_nqm_task(
    tcfg: Mapping[str, Any], seed: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64,
    *, name: str = "nqm",
) -> NQMTask:
    """Build the NQM task ``name`` from its config section ``tasks.<name>`` (keys of
    :data:`NQM_DEFAULTS`, plus the pipeline's keys :data:`PIPELINE_KEYS`, which the task itself
    does not read; missing keys take the defaults; unknown or bad keys raise
    :class:`ConfigError` naming the key)."""
    unknown = sorted(set(tcfg) - set(NQM_DEFAULTS) - set(PIPELINE_KEYS))
    if unknown:
        raise ConfigError(f"tasks.{name}: unknown key(s) {unknown}; known: {sorted(NQM_DEFAULTS)}")
    kind = tcfg.get("kind", "nqm")
    if kind != "nqm":
        raise ConfigError(f"tasks.{name}.kind: an NQM task has kind 'nqm', got {kind!r}")
    cfg = {**NQM_DEFAULTS, **dict(tcfg)}
    opt = {**NQM_DEFAULTS["optimizer"], **dict(cfg["optimizer"] or {})}
    th0 = {**NQM_DEFAULTS["theta0"], **dict(cfg["theta0"] or {})}
    for sect, d, known in (("optimizer", opt, NQM_DEFAULTS["optimizer"]), ("theta0", th0, NQM_DEFAULTS["theta0"])):
        bad = sorted(set(d) - set(known))
        if bad:
            raise ConfigError(f"tasks.{name}.{sect}: unknown key(s) {bad}; known: {sorted(known)}")
    if cfg["mode"] not in MODES:
        raise ConfigError(f"tasks.{name}.mode: expected one of {list(MODES)}, got {cfg['mode']!r}")
    tune = list(cfg["tune"])
    if "lr" not in tune or set(tune) - {"lr", "momentum"}:
        raise ConfigError(f"tasks.{name}.tune: must contain 'lr' and may contain 'momentum', got {tune}")
    steps, phases = int(cfg["steps"]), int(cfg["phases"])
    if steps < 1:
        raise ConfigError(f"tasks.{name}.steps: must be >= 1, got {steps}")
    if not 1 <= phases <= steps:
        raise ConfigError(f"tasks.{name}.phases: must lie in 1..steps={steps}, got {phases}")
    if not float(opt["lr"]) > 0:
        raise ConfigError(f"tasks.{name}.optimizer.lr: must be > 0, got {opt['lr']}")
    mom = float(opt["momentum"])
    if "momentum" in tune and not 0 < mom < 1:
        raise ConfigError(f"tasks.{name}.optimizer.momentum: a tuned momentum needs 0 < momentum < 1, got {mom}")
    if not 0 <= mom < 1:
        raise ConfigError(f"tasks.{name}.optimizer.momentum: must lie in [0, 1), got {mom}")
    if not float(cfg["batch_size"]) > 0:
        raise ConfigError(f"tasks.{name}.batch_size: must be > 0, got {cfg['batch_size']}")
    if int(cfg["dim"]) < 1:
        raise ConfigError(f"tasks.{name}.dim: must be >= 1, got {cfg['dim']}")
    if th0["distribution"] not in THETA0_DISTRIBUTIONS:
        raise ConfigError(f"tasks.{name}.theta0.distribution: expected one of {list(THETA0_DISTRIBUTIONS)}, "
                          f"got {th0['distribution']!r}")
    device = torch.device(device)
    problem = NoisyQuadratic(
        int(cfg["dim"]), curvature_power=float(cfg["curvature_power"]), batch_size=float(cfg["batch_size"]),
        theta0=th0["distribution"], theta0_scale=float(th0["scale"]), theta0_seed=int(th0["seed"]),
        dtype=dtype, device=device,
    )
    blocks = [HyperBlock("lr", phases, init=float(opt["lr"]))]
    if "momentum" in tune:
        blocks.append(HyperBlock("momentum", 1, init=mom))
    hyper = HyperSpace(blocks)
    dyn = NQMDynamics(problem, cfg["mode"], steps, hyper, phases=phases, momentum=0.0 if "momentum" in tune else mom)
    return NQMTask(problem, dyn, hyper, steps, int(seed), device, dtype, noise_seed=int(cfg["noise_seed"]),
                   name=name, batch_size=float(cfg["batch_size"]))


# --------------------------------------------------------------------------------- answer key
@dataclass
class NQMOptimum:
    """The optimum of E[L(theta_T)]: per-phase learning rates, momentum, the loss, and how found."""

    lr: list[float]
    momentum: float
    loss: float
    steps: int
    phases: int
    tune_momentum: bool
    phi: torch.Tensor  # log lr per phase (+ logit momentum when tuned): the task's parametrization
    initial_loss: float
    grad_norm: float  # norm of d log E[L] / d phi at the optimum (0 at an interior optimum)
    n_evaluations: int
    seconds: float
    stable: bool = True  # whether the search kept every phase's learning rate in the stable region
    at_limit: bool = False  # whether a phase's learning rate ended at the search's limit (a boundary optimum)
    message: str = ""

    @property
    def effective_lr(self) -> list[float]:
        """alpha / (1 - beta) per phase: what the loss mostly depends on (lr and momentum trade off)."""
        return [a / (1.0 - self.momentum) for a in self.lr]

    def to_record(self) -> dict[str, Any]:
        """JSON-ready summary (for the run directory)."""
        return {
            "lr": self.lr, "momentum": self.momentum, "loss": self.loss, "steps": self.steps, "phases": self.phases,
            "tune_momentum": self.tune_momentum, "phi": [float(x) for x in self.phi], "initial_loss": self.initial_loss,
            "effective_lr": self.effective_lr, "grad_norm": self.grad_norm, "n_evaluations": self.n_evaluations,
            "seconds": self.seconds, "stable": self.stable, "at_limit": self.at_limit, "message": self.message,
        }


_U_BOUND = 30.0  # |logit| bound of the learning rates' search parametrization
_W_BOUNDS = (-12.0, 9.0)  # momentum in [6e-6, 0.99988]
_LOG_GROWTH_CAP = 600.0  # with stable=False no phase grows a second moment by more than e^600 (< float64's e^709)


def _lr_limit(problem: NoisyQuadratic, mom: torch.Tensor, length: int, stable: bool) -> torch.Tensor:
    """Largest learning rate the search admits in a phase of ``length`` steps.

    ``stable``: heavy ball's stability limit alpha h_max < 2 (1 + beta). Otherwise the
    largest learning rate whose phase grows the moments by at most e^cap: past the stability
    limit M's largest eigenvalue at h_max is -R with alpha h_max = 1 + beta + R + beta / R, and
    R^(2 L) = e^cap sets the limit (R = 1 is the stability limit).
    """
    R = 1.0 if stable else math.exp(_LOG_GROWTH_CAP / (2 * int(length)))
    return (1.0 + mom + R + mom / R) / problem.h_max


def _search_lrs(problem: NoisyQuadratic, u: torch.Tensor, mom: torch.Tensor, lengths: Sequence[int],
                stable: bool = True) -> torch.Tensor:
    """Learning rates alpha_k = limit(beta, L_k) * sigmoid(u_k): finite loss everywhere."""
    lim = torch.stack([_lr_limit(problem, mom, L, stable) * torch.ones_like(u[..., 0]) for L in lengths], -1)
    return lim * torch.sigmoid(u)


def _to_search(problem: NoisyQuadratic, lrs: Sequence[float], mom: float, lengths: Sequence[int],
               stable: bool = True) -> list[float]:
    """Inverse of :func:`_search_lrs` for given learning rates (clipped into the bounds)."""
    out = []
    for a, L in zip(lrs, lengths):
        f = a / float(_lr_limit(problem, torch.tensor(mom, dtype=torch.float64), L, stable))
        f = min(max(f, 1e-13), 1 - 1e-13)
        out.append(math.log(f) - math.log1p(-f))
    return out


def _counted_value_and_grad(fun):
    """(f, count): f(x) = (fun(x), its autograd gradient) on a float64 numpy vector, for scipy;
    count[0] counts the calls."""
    count = [0]

    def f(x: np.ndarray) -> tuple[float, np.ndarray]:
        count[0] += 1
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        v = fun(xt)
        (g,) = torch.autograd.grad(v, xt)
        return float(v.detach()), g.numpy().astype(np.float64)

    return f, count


def _lbfgs(fun, x0: np.ndarray, bounds, maxiter: int) -> tuple[np.ndarray, float, int, str]:
    """L-BFGS-B on a torch scalar function with its autograd gradient."""
    f, count = _counted_value_and_grad(fun)

    res = optimize.minimize(f, x0, jac=True, method="L-BFGS-B", bounds=bounds,
                            options={"maxiter": maxiter, "ftol": 1e-15, "gtol": 1e-11, "maxcor": 30})
    return np.asarray(res.x), float(res.fun), count[0], str(res.message)


def _newton_polish(fun, x0: np.ndarray, maxiter: int = 50) -> tuple[np.ndarray, int, str]:
    """Trust-region Newton steps with the exact (autograd) Hessian from ``x0``.

    With tuned momentum the optimum lies on a long, flat ridge (learning rate and momentum
    trade off through alpha / (1 - beta)), where L-BFGS-B stalls at a gradient of 1e-3; a
    few exact Newton steps converge to the ridge's optimum. Monotone: never worse than x0.
    """
    f, count = _counted_value_and_grad(fun)

    def hess(x: np.ndarray) -> np.ndarray:
        count[0] += x.size
        return torch.autograd.functional.hessian(fun, torch.tensor(x, dtype=torch.float64)).numpy()

    res = optimize.minimize(f, x0, jac=True, hess=hess, method="trust-exact", options={"maxiter": maxiter, "gtol": 1e-12})
    f0 = float(fun(torch.tensor(x0, dtype=torch.float64)))
    if not np.all(np.isfinite(res.x)) or not res.fun <= f0:
        return x0, count[0], "Newton polish rejected: " + str(res.message)
    return np.asarray(res.x), count[0], str(res.message)


def _split(problem: NoisyQuadratic, x: torch.Tensor, lengths: Sequence[int], tune_momentum: bool, momentum: float,
           stable: bool):
    """(learning rates, momentum) of a search point x = (u_1..u_K[, w])."""
    K = len(lengths)
    mom = torch.sigmoid(x[K]) if tune_momentum else torch.as_tensor(momentum, dtype=torch.float64)
    return _search_lrs(problem, x[:K], mom, lengths, stable), mom


def _constant_grid(problem, steps, tune_momentum, momentum, n_lr, n_mom, moments0=None, stable=True):
    """Best point of a grid over (learning rate as a fraction of its limit, momentum).

    Returns (u, w, loss, number of grid points)."""
    fr = torch.logspace(-4, math.log10(0.98), n_lr, dtype=torch.float64)
    u = torch.log(fr) - torch.log1p(-fr)
    if tune_momentum:
        moms = 1 - torch.logspace(0, -3, n_mom, dtype=torch.float64)[1:]  # 1 - 10^-x, x in (0, 3]
        moms = torch.cat([torch.tensor([0.01], dtype=torch.float64), moms])
    else:
        moms = torch.tensor([momentum], dtype=torch.float64)
    U, B = torch.meshgrid(u, moms, indexing="ij")
    U, B = U.reshape(-1), B.reshape(-1)
    lrs = _search_lrs(problem, U[:, None], B, [steps], stable)[:, 0]
    losses = []
    for i in range(0, lrs.numel(), 64):  # chunks bound the (chunk, n) temporaries
        losses.append(problem.expected_loss(lrs[i : i + 64, None], B[i : i + 64, None], [steps], moments0))
    losses = torch.cat(losses)
    losses = torch.where(torch.isfinite(losses), losses, torch.full_like(losses, math.inf))
    j = int(torch.argmin(losses))
    w = float(torch.log(B[j]) - torch.log1p(-B[j])) if tune_momentum else 0.0
    return float(U[j]), w, float(losses[j]), int(lrs.numel())


def optimal_hyperparameters(
    problem: NoisyQuadratic,
    steps: int,
    *,
    phases: int = 1,
    tune_momentum: bool = True,
    momentum: float = 0.0,
    stable: bool = True,
    grid: tuple[int, int] = (40, 12),
    maxiter: int = 2000,
    moments0: torch.Tensor | None = None,
) -> NQMOptimum:
    """The optimum of E[L(theta_T)] over a constant (``phases = 1``) or K-phase learning rate,
    and the momentum when ``tune_momentum`` (else ``momentum`` stays fixed).

    The constant optimum: the best point of a ``grid`` (learning rates log-spaced up to their
    limit x momenta), refined by L-BFGS-B on log E[L] with its exact gradient (autograd through
    the closed form), then, if the gradient is not yet ~0, by trust-region Newton steps with
    the exact Hessian (with tuned momentum the optimum lies on a long flat ridge along
    alpha / (1 - beta) = const, where L-BFGS-B stalls). The K-phase optimum: the same, started
    from the constant optimum (so never worse than it).

    ``stable`` (default) keeps every phase's learning rate below heavy ball's stability limit
    2 (1 + beta) / h_max. Without it the search also admits phases that blow the stiffest
    coordinates up by up to e^600 (they are damped again by later phases): for SGD schedules
    on h_i = 1/i that is lower still (about 7% at T = 1000, K = 5), but no practical tuner
    goes there and float32 overflows. Learning rates are searched as fractions sigmoid(u) of
    the limit, so every point the search visits has a finite loss.
    """
    t0 = time.perf_counter()
    phase_lengths(steps, phases)
    if not tune_momentum and not 0 <= momentum < 1:
        raise ValueError(f"momentum: must lie in [0, 1), got {momentum}")
    u0, w0, _, n_eval = _constant_grid(problem, steps, tune_momentum, momentum, grid[0], grid[1], moments0, stable)
    x = np.array([u0] + ([w0] if tune_momentum else []))
    lengths = [steps]
    messages = []
    for stage in ([steps], phase_lengths(steps, phases)) if phases > 1 else ([steps],):
        if stage is not lengths:  # start the K-phase search from the constant optimum
            lrs1, mom1 = _split(problem, torch.tensor(x, dtype=torch.float64), lengths, tune_momentum, momentum, stable)
            x = np.array(_to_search(problem, [float(lrs1[0])] * len(stage), float(mom1), stage, stable) + list(x[1:]))
            lengths = stage

        def fun(xt: torch.Tensor, _lengths: list[int] = lengths) -> torch.Tensor:
            lrs, mom = _split(problem, xt, _lengths, tune_momentum, momentum, stable)
            return torch.log(problem.expected_loss(lrs, mom, _lengths, moments0))

        bounds = [(-_U_BOUND, _U_BOUND)] * len(lengths) + ([_W_BOUNDS] if tune_momentum else [])
        x, _, n, msg = _lbfgs(fun, x, bounds, maxiter)
        n_eval += n
        messages.append(f"L-BFGS-B ({len(lengths)} phase(s)): {msg}")
        xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
        (g,) = torch.autograd.grad(fun(xt), xt)
        on_limit = float(torch.sigmoid(xt.detach()[: len(lengths)]).max()) > 0.999  # a boundary optimum: nothing to polish
        if float(g.norm()) > 1e-9 and not on_limit:
            x, n, msg = _newton_polish(fun, x)
            n_eval += n
            messages.append(f"Newton: {msg}")
    xt = torch.tensor(x, dtype=torch.float64)
    lrs, mom = _split(problem, xt, lengths, tune_momentum, momentum, stable)
    loss = float(problem.expected_loss(lrs, mom, lengths, moments0))
    phi = torch.log(lrs)
    if tune_momentum:
        phi = torch.cat([phi, (torch.log(mom) - torch.log1p(-mom)).reshape(1)])
    # The gradient in the task's own parametrization (log lr, logit momentum).
    p = phi.clone().requires_grad_(True)
    m = torch.sigmoid(p[phases]) if tune_momentum else torch.as_tensor(momentum, dtype=torch.float64)
    (g,) = torch.autograd.grad(torch.log(problem.expected_loss(torch.exp(p[:phases]), m, lengths, moments0)), p)
    S0 = problem.initial_moments() if moments0 is None else moments0
    return NQMOptimum(
        lr=[float(a) for a in lrs], momentum=float(mom), loss=loss, steps=int(steps), phases=int(phases),
        tune_momentum=bool(tune_momentum), phi=phi.detach(), initial_loss=float(0.5 * (problem.h64 * S0[0]).sum()),
        grad_norm=float(g.norm()), n_evaluations=n_eval, seconds=time.perf_counter() - t0, stable=stable,
        at_limit=bool(float(torch.sigmoid(xt[: len(lengths)]).max()) > 0.999),
        message="; ".join(messages),
    )


# --------------------------------------------------------------------------------- short-horizon bias
def horizon_optimal_lr(problem: NoisyQuadratic, tau: int, *, momentum: float = 0.0,
                       moments0: torch.Tensor | None = None) -> tuple[float, float]:
    """(lr, E[L(theta_tau)]) minimizing the loss ``tau`` steps ahead over a constant, stable
    learning rate at fixed ``momentum``, from ``moments0`` (default: theta_0).

    tau = 1: closed form (E[L] is quadratic in the learning rate); otherwise a grid over
    fractions of the stability limit refined by Brent's method (no gradients needed in 1-D).
    """
    if tau < 1:
        raise ValueError(f"tau must be >= 1, got {tau}")
    if tau == 1:
        S = problem.initial_moments() if moments0 is None else moments0
        A, B, C = S
        h, c, b = problem.h64, problem.c64, momentum
        # E[L_1] is quadratic in alpha: 1/2 sum h [A - 2 alpha (h A + b B) + alpha^2 (h^2 A + 2 h b B + b^2 C + c)].
        a = float((h * (h * A + b * B)).sum() / (h * (h * h * A + 2 * h * b * B + b * b * C + c)).sum())
        a = min(max(a, 1e-300), problem.stability_limit(momentum) * (1 - 1e-12))
        return a, float(problem.expected_loss(a, momentum, [1], S))
    # A batched grid over fractions of the stability limit, then Brent's method on the brackets
    # of the grid's three best local minima (with momentum, short horizons are multimodal).
    S = problem.initial_moments() if moments0 is None else moments0
    mom = torch.tensor(momentum, dtype=torch.float64)
    u = torch.linspace(-12.0, 8.0, 81, dtype=torch.float64)

    def losses(uu: torch.Tensor) -> torch.Tensor:
        return problem.expected_loss(_search_lrs(problem, uu[:, None], mom, [tau])[:, 0:1], momentum, [tau], S)

    lg = losses(u).tolist()
    n = len(lg)
    minima = [j for j in range(n) if (j == 0 or lg[j] <= lg[j - 1]) and (j == n - 1 or lg[j] <= lg[j + 1])]
    best_u, best = float(u[0]), math.inf
    for j in sorted(minima, key=lambda j: lg[j])[:3]:
        lo, hi = float(u[max(j - 1, 0)]), float(u[min(j + 1, n - 1)])
        res = optimize.minimize_scalar(lambda x: float(losses(torch.tensor([x], dtype=torch.float64))[0]),
                                       bounds=(lo, hi), method="bounded", options={"xatol": 1e-9})
        if res.fun < best:
            best_u, best = float(res.x), float(res.fun)
    a = float(_search_lrs(problem, torch.tensor([[best_u]], dtype=torch.float64), mom, [tau])[0, 0])
    return a, best


def greedy_schedule(problem: NoisyQuadratic, steps: int, tau: int, *, momentum: float = 0.0) -> dict[str, Any]:
    """Greedy short-horizon tuning (Wu et al.): in every window of ``tau`` steps the constant
    learning rate minimizing E[L] at the window's end, given the moments at its start.

    The ideal of a local tuner with window tau (exact, converged in every window). Returns the
    per-window learning rates (``lrs``, one per window) and E[L(theta_T)] of the schedule.
    """
    S = problem.initial_moments()
    lrs: list[float] = []
    t = 0
    while t < steps:
        L = min(tau, steps - t)
        a, _ = horizon_optimal_lr(problem, L, momentum=momentum, moments0=S)
        S = problem.expected_moments(a, momentum, [L], S).detach()
        lrs.append(a)
        t += L
    return {"tau": tau, "lrs": lrs, "loss": float(0.5 * (problem.h64 * S[0]).sum())}


def local_hypergradient_descent(
    task: NQMTask, window: int, *, outer_lr: float = 0.05, outer: str = "adam"
) -> dict[str, Any]:
    """Local hypergradient descent on ``task`` (expected mode: exact): one training run, phi
    updated at the end of every window of ``window`` steps by the outer optimizer, with the
    reverse-mode hypergradient of the window's end loss. Returns the per-window learning
    rates (``lrs``, ``momenta``), the expected final loss of the schedule used (``loss``) and
    the meta-objective at the end of training (``final_val_loss``: the same in expected mode,
    the realized loss in sampled mode).
    """
    from glocal.hypergrad import reverse_hypergradient
    from glocal.train import OuterOptimizer

    if task.dynamics.phases != 1:
        raise ValueError("local_hypergradient_descent: needs a constant-lr task (phases = 1)")
    state, phi = task.init_state(), task.init_phi()
    opt = OuterOptimizer(outer, outer_lr)
    lrs: list[float] = []
    moms: list[float] = []
    per_step_lr: list[float] = []
    per_step_mom: list[float] = []
    t = 0
    while t < task.steps:
        end = min(t + window, task.steps)
        lr, mom = task.schedule(phi)
        lrs.append(lr[0])
        moms.append(mom)
        per_step_lr += [lr[0]] * (end - t)
        per_step_mom += [mom] * (end - t)
        res = reverse_hypergradient(task.dynamics.step, task.val_fn(), state, phi, task.batches(t, end), checkpoint="graph")
        state = res.final_state
        if not bool(torch.isfinite(res.h).all()) or not bool(torch.isfinite(state).all()):
            break
        phi = opt.step(phi, res.h)
        t = end
    loss = task.problem.expected_loss_per_step(per_step_lr, per_step_mom) if t >= task.steps else math.inf
    final = float(task.val_fn()(state, phi)) if t >= task.steps else math.inf
    return {"window": window, "lrs": lrs, "momenta": moms, "loss": loss, "final_val_loss": final}


def short_horizon_bias(
    problem: NoisyQuadratic,
    steps: int,
    taus: Sequence[int],
    *,
    momentum: float = 0.0,
    greedy: bool = True,
) -> dict[str, Any]:
    """The short-horizon-bias curve at fixed ``momentum``: for every horizon tau,

    * ``horizon_lr`` — the constant lr minimizing E[L(theta_tau)] from theta_0 (the lr a tuner
      with a tau-step meta-objective selects at the start of training), and ``horizon_ratio``,
      E[L(theta_T)] of training all T steps with it over the optimum;
    * with ``greedy``: the greedy schedule with window tau (:func:`greedy_schedule`): its
      first and last window's lr and ``greedy_ratio``, its E[L(theta_T)] over the optimum;

    against the long-horizon optimum (``optimum``: the best constant lr for E[L(theta_T)]).
    """
    opt = optimal_hyperparameters(problem, steps, phases=1, tune_momentum=False, momentum=momentum)
    rows = []
    for tau in taus:
        a, _ = horizon_optimal_lr(problem, int(tau), momentum=momentum)
        row: dict[str, Any] = {
            "tau": int(tau), "horizon_lr": a,
            "horizon_ratio": float(problem.expected_loss(a, momentum, steps)) / opt.loss,
        }
        if greedy:
            g = greedy_schedule(problem, steps, int(tau), momentum=momentum)
            row.update({"greedy_first_lr": g["lrs"][0], "greedy_last_lr": g["lrs"][-1],
                        "greedy_ratio": g["loss"] / opt.loss, "greedy_lrs": g["lrs"]})
        rows.append(row)
    return {"steps": steps, "momentum": momentum, "optimum": opt.to_record(), "rows": rows}
