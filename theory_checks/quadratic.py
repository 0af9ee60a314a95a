"""Synthetic quadratic bilevel problems with exact (closed-form) hypergradient trajectories.

Inner problem: l(theta, phi) = 1/2 theta^T H(phi) theta - b(phi)^T theta, solved by gradient descent
``theta_{t+1} = theta_t - alpha(phi) (H(phi) theta_t - b(phi))``, i.e. ``theta_{t+1} = A theta_t + alpha b``
with ``A = I - alpha H``.  Outer (validation) loss ``L_val(theta) = 1/2 ||X_v theta - y_v||^2 / N_v``.

Everything here is float64 torch and independent of :mod:`glocal`.

Closed forms (U, a: eigenvectors / eigenvalues of the symmetric A; e_0 = theta_0 - theta^*;
~ = coordinates in the eigenbasis):

* ``theta_t = theta^* + A^t e_0``.
* Differentiating the recursion w.r.t. phi_k gives ``Z_{t+1} = A Z_t - alpha J_k - M_k A^t e_0`` with
  ``J_k = dH_k theta^* - db_k`` and ``M_k = dalpha_k H + alpha dH_k``; summing the geometric series,
  ``Z_t[:, k] = (I - A^t) Z^*_k - U (M~_k o D_t) e~_0`` where ``Z^*_k = -H^{-1} J_k`` (implicit function
  theorem) and ``D_t[i, j] = sum_{s<t} a_i^(t-1-s) a_j^s`` is the divided difference of x -> x^t
  (Daleckii-Krein);
  ``D_t[i, i] = t a_i^(t-1)`` produces the Jordan (t mu^t) terms.
* ``h_t = Z_t^T grad L_val(theta_t)`` and ``h_inf = Z^*^T grad L_val(theta^*)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

DTYPE = torch.float64
KINDS = ("spd_decay", "ridge_weights", "step_size")

__all__ = [
    "DTYPE",
    "KINDS",
    "Mode",
    "QuadraticProblem",
    "divided_power",
    "hankel_matrix",
    "make_problem",
    "numerical_rank",
    "simulate",
]


# ----------------------------------------------------------------------------------------------------
# numerics helpers
# ----------------------------------------------------------------------------------------------------
def _as_t(t) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=DTYPE)
    if torch.any(t < 0) or torch.any(t != torch.round(t)):
        raise ValueError("t must be non-negative integers")
    return t


def divided_power(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``D_t(x, y) = sum_{s=0}^{t-1} x^(t-1-s) y^s`` = (x^t - y^t)/(x - y), = t x^(t-1) when x == y.

    Broadcasts over x, y, t (t non-negative integers stored as float64).  Numerically stable for close x, y of
    the same sign: with m = (x+y)/2, r = (x-y)/(x+y), ``D = m^(t-1) (1-r^2)^(t/2) sinh(t atanh r) / r``
    evaluated in log space; the direct quotient is used when |r| >= 1/2 or x, y have opposite signs (no
    cancellation there).
    """
    x, y, t = torch.broadcast_tensors(
        torch.as_tensor(x, dtype=DTYPE), torch.as_tensor(y, dtype=DTYPE), torch.as_tensor(t, dtype=DTYPE)
    )
    diff = x - y
    s = x + y
    same = (x * y > 0) & (diff.abs() < 0.5 * s.abs())
    # direct branch, on x and y divided by a = max(|x|, |y|) so that x^t and y^t cannot underflow
    # (x = 0, y = 6e-254, t = 2: y^2 is 0 in float64 but D = y)
    a = torch.maximum(x.abs(), y.abs())
    a = torch.where(a > 0, a, torch.ones_like(a))
    safe_diff = torch.where(same | (diff == 0), torch.ones_like(diff), diff / a)
    direct = torch.pow(a, t - 1) * (torch.pow(x / a, t) - torch.pow(y / a, t)) / safe_diff
    direct = torch.where(t == 0, torch.zeros_like(direct), direct)
    # stable branch (only meaningful where `same`)
    m = torch.where(same, s / 2, torch.ones_like(s))
    r = torch.where(same, diff / torch.where(same, s, torch.ones_like(s)), torch.zeros_like(s))
    ar = r.abs()
    at = torch.atanh(ar)
    z = t * at  # >= 0
    # sinh(z)/|r| = exp(z) * (-expm1(-2z) / (2z)) * (z/|r|)
    two_z = 2 * z
    f = torch.where(two_z > 1e-300, -torch.expm1(-two_z) / torch.where(two_z > 1e-300, two_z, 1.0), 1.0)
    z_over_r = torch.where(ar > 0, t * at / torch.where(ar > 0, ar, 1.0), t)
    logmag = (t - 1) * torch.log(m.abs()) + 0.5 * t * torch.log1p(-r * r) + z
    sign_m = torch.where((m < 0) & (torch.remainder(t - 1, 2) == 1), -1.0, 1.0)
    # sinh(t atanh r) / r is even in r and positive, so only the sign of m^(t-1) matters
    stable = sign_m * torch.exp(logmag) * f * z_over_r
    stable = torch.where(t == 0, torch.zeros_like(stable), stable)
    # exactly equal x == y with opposite-sign test failing (x == y == 0 or x == y < 0 handled by `same`)
    eq0 = (diff == 0) & ~same
    eqval = t * torch.pow(x, torch.clamp(t - 1, min=0))
    out = torch.where(same, stable, torch.where(eq0, eqval, direct))
    return out


def hankel_matrix(seq: torch.Tensor, depth: int | None = None) -> torch.Tensor:
    """Block Hankel matrix of a sequence ``seq[T, q]`` (or ``[T]``): block rows ``t .. t+K-1`` for t < depth.

    Shape ``(depth * q, T - depth + 1)``; column j is the stacked delay vector (seq[j], ..., seq[j+depth-1]).
    """
    if seq.ndim == 1:
        seq = seq[:, None]
    T, q = seq.shape
    depth = depth or (T + 1) // 2
    K = T - depth + 1
    idx = torch.arange(depth)[:, None] + torch.arange(K)[None, :]  # depth x K
    return seq[idx].permute(0, 2, 1).reshape(depth * q, K)


def numerical_rank(M: torch.Tensor, tol: float | None = 1e-10, gap: float = 1e3) -> int:
    """Robust numerical rank: count singular values above ``tol * s_max``; if the spectrum shows a clear gap
    (ratio >= ``gap`` between consecutive singular values) below that threshold nothing changes, and if
    ``tol is None`` the rank is placed at the largest log-gap among singular values above 1e-15 s_max."""
    s = torch.linalg.svdvals(M)
    if s.numel() == 0 or s[0] == 0:
        return 0
    s = s / s[0]
    if tol is not None:
        return int((s > tol).sum())
    s = s[s > 1e-15]
    if s.numel() <= 1:
        return int(s.numel())
    ratios = s[:-1] / s[1:]
    k = int(torch.argmax(ratios))
    if ratios[k] < gap:
        return int(s.numel())
    return k + 1


@dataclass
class Mode:
    """One Koopman mode of the hypergradient sequence: ``sum_m coefs[m] * t^m * mu^t`` (coefs: [size, q])."""

    mu: float
    coefs: torch.Tensor

    @property
    def size(self) -> int:  # Jordan block size m_j
        return int(self.coefs.shape[0])

    def __call__(self, t) -> torch.Tensor:
        t = _as_t(t)
        pw = torch.stack([t**m for m in range(self.size)], -1)  # [..., size]
        return (pw @ self.coefs) * torch.pow(torch.as_tensor(self.mu, dtype=DTYPE), t)[..., None]


# ----------------------------------------------------------------------------------------------------
# problem
# ----------------------------------------------------------------------------------------------------
@dataclass
class QuadraticProblem:
    """A quadratic bilevel problem with closed-form theta_t, Z_t = d theta_t / d phi and h_t.

    ``H_fn(phi) -> [p, p]`` (symmetric positive definite), ``b_fn(phi) -> [p]``, ``alpha_fn(phi) -> scalar``
    must be differentiable torch functions; derivatives at ``phi`` are obtained with ``torch.func.jacfwd``.
    """

    kind: str
    phi: torch.Tensor
    theta0: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    H_fn: Callable[[torch.Tensor], torch.Tensor]
    b_fn: Callable[[torch.Tensor], torch.Tensor]
    alpha_fn: Callable[[torch.Tensor], torch.Tensor]
    hyper_names: list[str] = field(default_factory=list)
    info: dict = field(default_factory=dict)

    def __post_init__(self):
        self.phi = torch.as_tensor(self.phi, dtype=DTYPE).detach().clone()
        self.theta0 = torch.as_tensor(self.theta0, dtype=DTYPE).detach().clone()
        phi = self.phi
        with torch.no_grad():
            self.H = self.H_fn(phi).detach()
            self.H = (self.H + self.H.T) / 2
            self.b = self.b_fn(phi).detach()
            self.alpha = float(self.alpha_fn(phi))
        self.dH = torch.func.jacfwd(self.H_fn)(phi).detach()  # [p, p, q]
        self.dH = (self.dH + self.dH.transpose(0, 1)) / 2
        self.db = torch.func.jacfwd(self.b_fn)(phi).detach()  # [p, q]
        alpha_t = lambda x: torch.as_tensor(self.alpha_fn(x), dtype=DTYPE)  # noqa: E731
        self.dalpha = torch.func.jacfwd(alpha_t)(phi).detach()
        self.dalpha = self.dalpha.reshape(-1)  # [q]
        self.p = self.H.shape[0]
        self.q = phi.numel()
        if not self.hyper_names:
            self.hyper_names = [f"phi[{i}]" for i in range(self.q)]
        self.A = torch.eye(self.p, dtype=DTYPE) - self.alpha * self.H
        self.A = (self.A + self.A.T) / 2
        self.a, self.U = torch.linalg.eigh(self.A)
        if torch.any(self.a.abs() >= 1):
            raise ValueError(f"gradient descent is not contractive: eig(A) = {self.a.tolist()}")
        if torch.any(self.a.abs() < 1e-12):
            raise ValueError("A has a zero eigenvalue; pick another alpha_fraction")
        self.theta_star = torch.linalg.solve(self.H, self.b)
        self.e0 = self.theta0 - self.theta_star
        self.e0t = self.U.T @ self.e0
        # J[:, k] = dH_k theta* - db_k ; Z* = -H^{-1} J
        self.J = torch.einsum("ijk,j->ik", self.dH, self.theta_star) - self.db
        self.Z_star = -torch.linalg.solve(self.H, self.J)  # [p, q]
        self.Zt_star = self.U.T @ self.Z_star
        # M_k = dalpha_k H + alpha dH_k, in the eigenbasis: [q, p, p]
        M = self.dalpha[:, None, None] * self.H[None] + self.alpha * self.dH.permute(2, 0, 1)
        self.Mt = torch.einsum("pi,kpr,rj->kij", self.U, M, self.U)
        Nv = self.X_val.shape[0]
        self.G = self.X_val.T @ self.X_val / Nv
        self.g = self.X_val.T @ self.y_val / Nv
        self._modes: list[Mode] | None = None

    # ---------------- basic quantities ----------------
    def inner_grad(self, theta: torch.Tensor) -> torch.Tensor:
        return self.H @ theta - self.b

    def val_loss(self, theta: torch.Tensor) -> torch.Tensor:
        r = self.X_val @ theta - self.y_val
        return 0.5 * (r * r).sum(-1) / self.X_val.shape[0]

    def val_grad(self, theta: torch.Tensor) -> torch.Tensor:
        """grad L_val; theta: [..., p]."""
        return theta @ self.G - self.g

    # ---------------- closed forms ----------------
    def _apow(self, t: torch.Tensor) -> torch.Tensor:
        return torch.pow(self.a, t[..., None])  # [..., p]

    def theta(self, t) -> torch.Tensor:
        """theta_t, shape [..., p] for t of shape [...]."""
        t = _as_t(t)
        return self.theta_star + (self._apow(t) * self.e0t) @ self.U.T

    def D(self, t) -> torch.Tensor:
        """Divided-difference matrices D_t[i, j], shape [..., p, p]."""
        t = _as_t(t)
        return divided_power(self.a[:, None], self.a[None, :], t[..., None, None])

    def Z(self, t) -> torch.Tensor:
        """Z_t = d theta_t / d phi, shape [..., p, q]."""
        t = _as_t(t)
        at = self._apow(t)  # [..., p]
        Dt = self.D(t)  # [..., p, p]
        term = torch.einsum("kij,...ij,j->...ik", self.Mt, Dt, self.e0t)  # [..., p(i), q]
        w = (1 - at)[..., None] * self.Zt_star - term
        return torch.einsum("pi,...ik->...pk", self.U, w)

    def h(self, t) -> torch.Tensor:
        """h_t = Z_t^T grad L_val(theta_t), shape [..., q]."""
        t = _as_t(t)
        return torch.einsum("...pk,...p->...k", self.Z(t), self.val_grad(self.theta(t)))

    def h_trajectory(self, T: int, start: int = 0) -> torch.Tensor:
        """Tensor[T, q], row k = h_{start + k + 1} (the glocal.hypergrad.forward_trajectory convention)."""
        return self.h(torch.arange(start + 1, start + T + 1, dtype=DTYPE))

    def h_inf(self) -> torch.Tensor:
        """IFT limit -(d_phi grad_theta l)^T H^{-1} grad L_val(theta*) (0 for step_size)."""
        return self.Z_star.T @ self.val_grad(self.theta_star)

    # ---------------- glocal engine interface ----------------
    def torch_step_fn(self) -> Callable:
        H_fn, b_fn, alpha_fn = self.H_fn, self.b_fn, self.alpha_fn

        def step_fn(state, phi, batch=None):
            return state - alpha_fn(phi) * (H_fn(phi) @ state - b_fn(phi))

        return step_fn

    def torch_val_fn(self) -> Callable:
        Xv, yv = self.X_val, self.y_val

        def val_fn(state, phi=None):
            r = Xv @ state - yv
            return 0.5 * (r * r).sum() / Xv.shape[0]

        return val_fn

    def batches(self, T: int) -> list:
        return [None] * T

    # ---------------- Koopman structure ----------------
    def _raw_terms(self):
        """Expansions of w_t = U^T Z_t ([p, q]) and U^T grad L_val(theta_t) ([p]) as (mu, power, coef)."""
        p, a = self.p, self.a
        w_terms: list[tuple[float, int, torch.Tensor]] = [(1.0, 0, self.Zt_star.clone())]
        # - a^t o z~*
        for i in range(p):
            c = torch.zeros(p, self.q, dtype=DTYPE)
            c[i] = -self.Zt_star[i]
            w_terms.append((float(a[i]), 0, c))
        # - (M~_k o D_t) e~0, D_t[i,j] = (a_i^t - a_j^t)/(a_i - a_j) or t a_i^t / a_i
        for i in range(p):
            for j in range(p):
                coef = self.Mt[:, i, j] * self.e0t[j]  # [q]
                c = torch.zeros(p, self.q, dtype=DTYPE)
                if a[i] == a[j]:
                    c[i] = -coef / a[i]
                    w_terms.append((float(a[i]), 1, c))
                else:
                    d = a[i] - a[j]
                    c[i] = -coef / d
                    w_terms.append((float(a[i]), 0, c))
                    c2 = torch.zeros(p, self.q, dtype=DTYPE)
                    c2[i] = coef / d
                    w_terms.append((float(a[j]), 0, c2))
        rho = self.U.T @ self.val_grad(self.theta_star)
        Gt = self.U.T @ self.G @ self.U
        g_terms: list[tuple[float, int, torch.Tensor]] = [(1.0, 0, rho)]
        for j in range(p):
            g_terms.append((float(a[j]), 0, Gt[:, j] * self.e0t[j]))
        return w_terms, g_terms

    def modes(self, merge_tol: float = 1e-10, zero_tol: float = 1e-13) -> list[Mode]:
        """Exact Koopman modes of h_t: h_t = sum_j sum_m coefs_j[m] t^m mu_j^t for all t >= 0.

        Built by multiplying out the term expansions of Z_t and grad L_val(theta_t); eigenvalues closer than
        ``merge_tol * max(1, |mu|)`` are merged, terms with coefficients below ``zero_tol * scale`` dropped.
        Sorted by decreasing |mu| (the mu = 1 mode, if present, is first and equals h_inf).
        """
        if self._modes is not None:
            return self._modes
        w_terms, g_terms = self._raw_terms()
        prods = []
        for mu1, m1, c1 in w_terms:
            for mu2, m2, c2 in g_terms:
                prods.append((mu1 * mu2, m1 + m2, c2 @ c1))  # [q]
        prods.sort(key=lambda x: x[0])
        groups: list[list] = []
        for mu, m, c in prods:
            if groups and abs(mu - groups[-1][0]) <= merge_tol * max(1.0, abs(mu)):
                groups[-1][1].append((m, c))
            else:
                groups.append([mu, [(m, c)]])
        scale = max(float(c.abs().max()) for _, _, c in prods) if prods else 1.0
        scale = max(scale, 1e-300)
        out = []
        for mu, items in groups:
            maxm = max(m for m, _ in items)
            coefs = torch.zeros(maxm + 1, self.q, dtype=DTYPE)
            for m, c in items:
                coefs[m] += c
            keep = [bool(coefs[m].abs().max() > zero_tol * scale) for m in range(maxm + 1)]
            if not any(keep):
                continue
            top = max(i for i, k in enumerate(keep) if k)
            coefs = coefs[: top + 1]
            coefs[[i for i in range(top + 1) if not keep[i]]] = 0.0
            out.append(Mode(mu=float(mu), coefs=coefs))
        out.sort(key=lambda md: (-abs(md.mu), -md.mu))
        self._modes = out
        return out

    def h_from_modes(self, t) -> torch.Tensor:
        t = _as_t(t)
        return sum(md(t) for md in self.modes())

    def spectrum(self) -> list[tuple[float, int]]:
        """Distinct Koopman eigenvalues mu (from {1} U eig(A) U eig(A)eig(A)) with their Jordan block sizes,
        restricted to modes with nonzero coefficients."""
        return [(md.mu, md.size) for md in self.modes()]

    def candidate_spectrum(self) -> list[float]:
        """All structurally possible eigenvalues {1} U eig(A) U {a_i a_j}, deduplicated."""
        a = self.a.tolist()
        cands = sorted({1.0, *a, *(a[i] * a[j] for i in range(self.p) for j in range(i, self.p))})
        return cands

    def koopman_dimension_count(self) -> int:
        """n by counting: sum of Jordan block sizes of the modes with nonzero coefficients."""
        return sum(md.size for md in self.modes())

    def h_trajectory_mp(self, T: int, dps: int = 60) -> list[list]:
        """h_1..h_T by the direct recursion (theta and Z) in mpmath with ``dps`` digits, from the float64
        problem data (taken as exact).  Independent of the closed forms; list of T rows of q mpf."""
        import mpmath

        ctx = mpmath.mp.clone() if hasattr(mpmath.mp, "clone") else mpmath.mp
        old = ctx.dps
        ctx.dps = dps
        try:
            def mat(x):
                x = x.detach().cpu().tolist()
                return ctx.matrix(x if isinstance(x[0], list) else [[v] for v in x])

            H, b, G, g = mat(self.H), mat(self.b), mat(self.G), mat(self.g)
            th = mat(self.theta0)
            alpha = ctx.mpf(self.alpha)
            dal = [ctx.mpf(v) for v in self.dalpha.tolist()]
            dH = [mat(self.dH[:, :, k]) for k in range(self.q)]
            db = [mat(self.db[:, k]) for k in range(self.q)]
            Z = [ctx.matrix(self.p, 1) for _ in range(self.q)]
            out = []
            for _ in range(T):
                r = H * th - b
                Z = [Z[k] - dal[k] * r - alpha * (dH[k] * th + H * Z[k] - db[k]) for k in range(self.q)]
                th = th - alpha * r
                gv = G * th - g
                out.append([sum(Z[k][i] * gv[i] for i in range(self.p)) for k in range(self.q)])
            return out
        finally:
            ctx.dps = old

    def koopman_dimension(
        self,
        T_long: int | None = None,
        tol: float | None = None,
        coordinate: int | None = None,
        start: int = 0,
        precision: str = "mp",
        dps: int = 60,
    ) -> int:
        """Numerical rank of a long (block) Hankel matrix of the exact sequence h_{start+1..start+T_long}.

        ``precision='float64'``: closed-form sequence, float64 SVD (rank capped by conditioning: the Hankel
        singular values of these sequences span many decades, so clustered / Jordan modes drop below ~1e-13).
        ``precision='mp'``: direct recursion and SVD in mpmath with ``dps`` digits; ``tol`` then defaults to
        ``10^(-dps/2)`` relative.  Default T_long: 3 n_count + 20 for 'mp' (cost ~ T_long^3), 400 for
        'float64';
        default float64 tol: 1e-10 relative.
        """
        if T_long is None:
            T_long = 3 * self.koopman_dimension_count() + 20 if precision == "mp" else 400
        if precision == "float64":
            tol = 1e-10 if tol is None else tol
            seq = self.h_trajectory(T_long, start=start)
            if coordinate is not None:
                seq = seq[:, coordinate]
            return numerical_rank(hankel_matrix(seq), tol=tol)
        if precision != "mp":
            raise ValueError(precision)
        import mpmath

        rows = self.h_trajectory_mp(start + T_long, dps=dps)[start:]
        if coordinate is not None:
            rows = [[r[coordinate]] for r in rows]
        qq = len(rows[0])
        depth = (T_long + 1) // 2
        K = T_long - depth + 1
        old = mpmath.mp.dps
        mpmath.mp.dps = dps
        try:
            M = mpmath.matrix(depth * qq, K)
            for i in range(depth):
                for j in range(K):
                    for k in range(qq):
                        M[i * qq + k, j] = rows[i + j][k]
            s = mpmath.svd_r(M, compute_uv=False)
            s = sorted((abs(v) for v in s), reverse=True)
            if not s or s[0] == 0:
                return 0
            rel_tol = mpmath.mpf(10) ** (-dps // 2) if tol is None or tol >= 1e-20 else mpmath.mpf(tol)
            return int(sum(1 for v in s if v > rel_tol * s[0]))
        finally:
            mpmath.mp.dps = old

    def min_mode_separation(self) -> float:
        mus = sorted(md.mu for md in self.modes())
        if len(mus) < 2:
            return math.inf
        return min(b - a for a, b in zip(mus[:-1], mus[1:]))

    def rho(self) -> float:
        """Largest |mu| among the modes other than mu = 1."""
        return max((abs(md.mu) for md in self.modes() if md.mu != 1.0), default=0.0)


# ----------------------------------------------------------------------------------------------------
# direct simulation (reference)
# ----------------------------------------------------------------------------------------------------
def simulate(problem: QuadraticProblem, T: int) -> dict[str, torch.Tensor]:
    """Direct gradient-descent loop; Z = d theta_t / d phi by forward-mode autodiff (torch.func.jacfwd)
    through the loop.  Returns theta [T+1, p], Z [T+1, p, q], h [T+1, q] for t = 0..T."""
    phi = problem.phi
    step = problem.torch_step_fn()
    val = problem.torch_val_fn()

    def run(phi_):
        th = problem.theta0.clone()
        thetas = [th]
        for _ in range(T):
            th = step(th, phi_, None)
            thetas.append(th)
        return torch.stack(thetas)

    thetas = run(phi)
    Z = torch.func.jacfwd(run)(phi)  # [T+1, p, q]
    grads = torch.stack([torch.func.grad(val)(th, phi) for th in thetas])
    h = torch.einsum("tpk,tp->tk", Z, grads)
    return {"theta": thetas.detach(), "Z": Z.detach(), "h": h.detach()}


# ----------------------------------------------------------------------------------------------------
# problem factory
# ----------------------------------------------------------------------------------------------------
def _orthogonal(p: int, gen: torch.Generator) -> torch.Tensor:
    Q, R = torch.linalg.qr(torch.randn(p, p, dtype=DTYPE, generator=gen))
    return Q * torch.sign(torch.diagonal(R))[None, :]


def make_problem(
    kind: str = "spd_decay",
    p: int = 3,
    q_or_n: int | None = None,
    kappa: float = 10.0,
    alpha_fraction: float = 0.5,
    seed: int = 0,
    *,
    n_val: int = 20,
    weight_decay: float = 1e-2,
    spectrum: str = "geometric",
    noise: float = 0.1,
) -> QuadraticProblem:
    """Random quadratic bilevel problem.

    kind:
      * 'spd_decay'   -- H = H0 + lambda I, H0 = Q diag(eigs) Q^T with eigs in [1/kappa, 1] (geometric or
                         linspace), phi = [log lambda] (q = 1, lambda = ``weight_decay``); b fixed.
      * 'ridge_weights' -- l = 1/(2N) sum_i w_i (x_i^T theta - y_i)^2 + lam/2 ||theta||^2,
                         w_i = sigmoid(phi_i),
                         q = N = ``q_or_n`` (default 8), lam = ``weight_decay``; columns of X scaled so that
                         cond(X^T X) ~ kappa.
      * 'step_size'   -- H as in 'spd_decay' (fixed), phi = [log alpha]; h_inf = 0.
    alpha = alpha_fraction / L with L = lambda_max(H) (so eig(A) lies in [1 - alpha_fraction, 1)); stability
    needs alpha_fraction < 2, values > 1 give oscillating (negative) eigenvalues of A, and alpha_fraction = 1
    makes A singular (rejected: a zero eigenvalue is a nilpotent block, not an exponential mode).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")
    gen = torch.Generator().manual_seed(int(seed))
    Q = _orthogonal(p, gen)
    if spectrum == "geometric":
        eigs = torch.logspace(-math.log10(kappa), 0.0, p, dtype=DTYPE)
        if p == 1:
            eigs = torch.ones(1, dtype=DTYPE)
    elif spectrum == "linspace":
        eigs = torch.linspace(1.0 / kappa, 1.0, p, dtype=DTYPE)
    else:
        raise ValueError(spectrum)
    theta_true = torch.randn(p, dtype=DTYPE, generator=gen)
    theta0 = torch.randn(p, dtype=DTYPE, generator=gen)
    X_val = torch.randn(n_val, p, dtype=DTYPE, generator=gen)
    y_val = X_val @ (theta_true + 0.3 * torch.randn(p, dtype=DTYPE, generator=gen)) + noise * torch.randn(
        n_val, dtype=DTYPE, generator=gen
    )
    info = {"kind": kind, "p": p, "kappa": kappa, "alpha_fraction": alpha_fraction, "seed": seed}

    if kind in ("spd_decay", "step_size"):
        H0 = Q @ torch.diag(eigs) @ Q.T
        H0 = (H0 + H0.T) / 2
        b = H0 @ theta_true + noise * torch.randn(p, dtype=DTYPE, generator=gen)
        lam = float(weight_decay)
        L = float(eigs.max()) + lam
        alpha = alpha_fraction / L
        eye = torch.eye(p, dtype=DTYPE)
        if kind == "spd_decay":
            phi = torch.tensor([math.log(lam)], dtype=DTYPE)
            names = ["log_weight_decay"]

            def H_fn(ph):
                return H0 + torch.exp(ph[0]) * eye

            def b_fn(ph):
                return b + 0.0 * ph[0]

            def alpha_fn(ph):
                return torch.as_tensor(alpha, dtype=DTYPE) + 0.0 * ph[0]
        else:
            phi = torch.tensor([math.log(alpha)], dtype=DTYPE)
            names = ["log_lr"]
            Hc = H0 + lam * eye

            def H_fn(ph):
                return Hc + 0.0 * ph[0]

            def b_fn(ph):
                return b + 0.0 * ph[0]

            def alpha_fn(ph):
                return torch.exp(ph[0])

        info.update(weight_decay=lam, alpha=alpha)
        return QuadraticProblem(kind, phi, theta0, X_val, y_val, H_fn, b_fn, alpha_fn, names, info)

    # ridge_weights
    n = int(q_or_n or 8)
    scales = torch.sqrt(eigs)
    X = torch.randn(n, p, dtype=DTYPE, generator=gen) @ torch.diag(scales) @ Q.T
    y = X @ theta_true + noise * torch.randn(n, dtype=DTYPE, generator=gen)
    lam = float(weight_decay)
    phi = torch.randn(n, dtype=DTYPE, generator=gen)
    eye = torch.eye(p, dtype=DTYPE)

    def H_fn(ph):
        w = torch.sigmoid(ph)
        return (X.T * w) @ X / n + lam * eye

    def b_fn(ph):
        w = torch.sigmoid(ph)
        return X.T @ (w * y) / n

    with torch.no_grad():
        L = float(torch.linalg.eigvalsh(H_fn(phi)).max())
    alpha = alpha_fraction / L

    def alpha_fn(ph):
        return torch.as_tensor(alpha, dtype=DTYPE) + 0.0 * ph.sum()

    info.update(weight_decay=lam, alpha=alpha, n=n)
    names = [f"example_weight[{i}]" for i in range(n)]
    return QuadraticProblem(kind, phi, theta0, X_val, y_val, H_fn, b_fn, alpha_fn, names, info)


def make_problems(
    kinds: Sequence[str] = KINDS, seeds: Sequence[int] = (0, 1), **kw
) -> list[QuadraticProblem]:
    return [make_problem(k, seed=s, **kw) for k in kinds for s in seeds]
