"""Error bounds (docs/design.md section 5) and the complexity formulas of its complexity table.

Error bound.  With the exact Koopman modes of a hypergradient sequence,
``h_t - h_inf = sum_{mu != 1} P_mu(t) mu^t`` with ``P_mu(t) = sum_{m < m_mu} c_{mu,m} t^m`` (Jordan block
of size m_mu), the triangle inequality gives, for every T >= 1,

    ||h_T - h_inf|| <= sum_mu sum_m ||c_{mu,m}|| T^m |mu|^T             (``error_bound(..., form='terms')``)
                    <= sum_mu (sum_m ||c_{mu,m}||) T^(m_mu - 1) |mu|^T   (``form='jordan'``, docs/design.md)
                    <= C(rho') rho'^T   for any rho' > max|mu| (= max|mu| if no Jordan block sits there)

Here the observable g is the identity on h, so ``||g^dagger v_j||`` is absorbed into ``||c_j||``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch

__all__ = [
    "error_bound",
    "geometric_constant",
    "geometric_bound",
    "cost_global_reverse",
    "cost_global_forward",
    "cost_local",
    "cost_glocal",
    "cost_dmd",
    "memory_global_reverse",
    "memory_global_forward",
    "memory_local",
    "memory_glocal",
    "expected_slope",
    "expected_memory_slope",
    "SLOPES",
    "MEMORY_SLOPES",
    "fit_loglog_slope",
    "finite_difference_error",
    "richardson_third_derivative",
    "rounding_scale",
    "FD_SAFETY",
]

#: safety factor of :func:`finite_difference_error` over its two leading terms
FD_SAFETY = 10.0


def _modes(problem_or_modes) -> list:
    if hasattr(problem_or_modes, "modes"):
        return list(problem_or_modes.modes())
    return list(problem_or_modes)


def _terms(problem_or_modes, exclude_one: bool = True):
    """(|mu|, m, ||c||) for every term of every mode (mu = 1 excluded: it is h_inf)."""
    out = []
    for md in _modes(problem_or_modes):
        if exclude_one and md.mu == 1.0:
            continue
        for m in range(md.size):
            c = float(torch.linalg.vector_norm(md.coefs[m]))
            if c > 0:
                out.append((abs(md.mu), m, c, md.size))
    return out


def error_bound(problem_or_modes, T, form: str = "jordan") -> torch.Tensor:
    """Bound on ||h_T - h_inf|| for T >= 1 (scalar or array-like of T); see module docstring for ``form``."""
    T_t = torch.as_tensor(T, dtype=torch.float64)
    out = torch.zeros_like(T_t)
    if form == "terms":
        for amu, m, c, _ in _terms(problem_or_modes):
            out = out + c * T_t**m * amu**T_t
    elif form == "jordan":
        for md in _modes(problem_or_modes):
            if md.mu == 1.0:
                continue
            c = float(sum(torch.linalg.vector_norm(md.coefs[m]) for m in range(md.size)))
            out = out + c * T_t ** (md.size - 1) * abs(md.mu) ** T_t
    else:
        raise ValueError(form)
    return out


def _sup_power_geometric(m: int, ratio: float) -> float:
    """sup_{T >= 1 integer} T^m ratio^T for 0 <= ratio <= 1 (ratio < 1 when m > 0)."""
    if m == 0:
        return ratio  # attained at T = 1 (ratio <= 1)
    if ratio >= 1.0:
        return math.inf
    if ratio == 0.0:
        return 0.0
    tstar = m / math.log(1.0 / ratio)
    cands = {1, max(1, math.floor(tstar)), max(1, math.ceil(tstar))}
    return max(t**m * ratio**t for t in cands)


def geometric_constant(problem_or_modes, rho: float | None = None) -> tuple[float, float]:
    """(C, rho) with ||h_T - h_inf|| <= C rho^T for all T >= 1.

    Default rho: the largest |mu| (mu != 1) if no Jordan block (m > 1) has that modulus, else
    rho_max + (1 - rho_max)/4."""
    terms = _terms(problem_or_modes)
    if not terms:
        return 0.0, 0.0 if rho is None else rho
    rmax = max(t[0] for t in terms)
    if rho is None:
        jordan_at_max = any(t[0] == rmax and t[1] > 0 for t in terms)
        rho = rmax + (1 - rmax) / 4 if jordan_at_max else rmax
    C = 0.0
    for amu, m, c, _ in terms:
        ratio = amu / rho
        # c T^m amu^T <= C_term rho^T for all T >= 1  <=>  C_term = c sup_T T^m (amu / rho)^T
        C += c * _sup_power_geometric(m, ratio)
    return C, rho


def geometric_bound(problem_or_modes, T, rho: float | None = None) -> torch.Tensor:
    C, r = geometric_constant(problem_or_modes, rho)
    T_t = torch.as_tensor(T, dtype=torch.float64)
    return C * r**T_t


# ----------------------------------------------------------------------------------------------------
# complexity per hyperparameter update (c = cost of one training step, p = #inner state, q = #hyperparams)
# ----------------------------------------------------------------------------------------------------
def cost_global_reverse(T, c=1.0):
    """Reverse-mode (backprop through training) over the full horizon: O(T c)."""
    return T * c


def cost_global_forward(T, q, c=1.0):
    """Forward-mode (real-time recurrent) over the full horizon: O(T q c)."""
    return T * q * c


def cost_local(tau, q, c=1.0, mode: str = "forward"):
    """Local (window tau) hypergradient: O(tau q c) forward, O(tau c) reverse."""
    if mode == "forward":
        return tau * q * c
    if mode == "reverse":
        return tau * c
    raise ValueError(mode)


def cost_dmd(tau, q, d, r):
    """Hankel-DMD on a length-tau trajectory of q-vectors with delay d and POD rank r: O(d q tau^2 + r^3)."""
    return d * q * tau**2 + r**3


def cost_glocal(tau, q, d, r, c=1.0, mode: str = "forward"):
    """Glocal = local trajectory + DMD: O(tau q c + d q tau^2 + r^3) (forward trajectory)."""
    return cost_local(tau, q, c, mode) + cost_dmd(tau, q, d, r)


def memory_global_reverse(T, p, checkpoint: str | int | None = None):
    """O(T p); O(sqrt(T) p) with sqrt checkpointing; O((T/k + k) p) with every-k checkpointing."""
    if checkpoint is None:
        return T * p
    if checkpoint == "sqrt":
        return math.sqrt(T) * p
    k = int(checkpoint)
    return (T / k + k) * p


def memory_global_forward(p, q):
    return p * q


def memory_local(tau, p, q, mode: str = "forward"):
    if mode == "forward":
        return p * q
    if mode == "reverse":
        return tau * p
    raise ValueError(mode)


def memory_glocal(tau, p, q, d):
    return p * q + d * q * tau


# expected log-log slopes of measured time against one variable, others fixed (asymptotic, dominant term)
SLOPES: dict[tuple[str, str], float] = {
    ("global_reverse", "T"): 1.0,
    ("global_reverse", "q"): 0.0,
    ("global_forward", "T"): 1.0,
    ("global_forward", "q"): 1.0,
    ("local_forward", "tau"): 1.0,
    ("local_forward", "q"): 1.0,
    ("local_reverse", "tau"): 1.0,
    ("local_reverse", "q"): 0.0,
    ("dmd", "tau"): 2.0,
    ("dmd", "q"): 1.0,
    ("dmd", "d"): 1.0,
    ("dmd", "r"): 3.0,
    # glocal total: the training-step term dominates in practice (c >> d q tau)
    ("glocal", "tau"): 1.0,
    ("glocal", "q"): 1.0,
    ("finite_difference", "T"): 1.0,
    ("finite_difference", "q"): 1.0,
}
MEMORY_SLOPES: dict[tuple[str, str], float] = {
    ("global_reverse", "T"): 1.0,
    ("global_reverse_sqrt", "T"): 0.5,
    ("global_forward", "T"): 0.0,
    ("global_forward", "q"): 1.0,
    ("local_forward", "tau"): 0.0,
    ("local_reverse", "tau"): 1.0,
    ("glocal", "tau"): 0.0,  # p q dominates d q tau for p >> d tau
}
ALIASES = {
    "reverse_hypergradient": "global_reverse",
    "reverse": "global_reverse",
    "forward_trajectory": "local_forward",  # cost of a forward trajectory of length tau (or T)
    "forward": "global_forward",
    "reverse_window_hypergradients": "local_reverse",
    "hankel_dmd": "dmd",
    "glocal_estimate": "dmd",
    "finite_difference_hypergradient": "finite_difference",
}
_VAR_ALIASES = {
    "T": "T", "tau": "tau", "window": "tau", "q": "q", "d": "d", "delay": "d", "r": "r", "rank": "r"
}


def _key(method: str, variable: str) -> tuple[str, str]:
    m = ALIASES.get(method, method)
    v = _VAR_ALIASES.get(variable, variable)
    # forward_trajectory / global_forward: T and tau are the same thing (trajectory length)
    if m in ("local_forward", "global_forward", "local_reverse", "global_reverse") and v in ("T", "tau"):
        return (m, "tau" if m.startswith("local") else "T")
    return (m, v)


def expected_slope(method: str, variable: str) -> float:
    """Expected log-log slope of time vs ``variable`` for ``method``; ('forward_trajectory', 'tau') -> 1."""
    key = _key(method, variable)
    if key not in SLOPES:
        raise KeyError(f"no expected slope for {key}; known: {sorted(SLOPES)}")
    return SLOPES[key]


def expected_memory_slope(method: str, variable: str) -> float:
    key = _key(method, variable)
    if key not in MEMORY_SLOPES:
        raise KeyError(f"no expected memory slope for {key}; known: {sorted(MEMORY_SLOPES)}")
    return MEMORY_SLOPES[key]


def fit_loglog_slope(x: Sequence[float] | Iterable[float], y: Sequence[float] | Iterable[float]) -> float:
    """Least-squares slope of log y against log x."""
    lx = torch.log(torch.as_tensor(list(x), dtype=torch.float64))
    ly = torch.log(torch.as_tensor(list(y), dtype=torch.float64))
    lx = lx - lx.mean()
    return float((lx * (ly - ly.mean())).sum() / (lx * lx).sum())


def finite_difference_error(eps: float, *, value_scale: float, third_derivative, steps: int = 1,
                            dtype: torch.dtype = torch.float64, safety: float = FD_SAFETY):
    """Error bound of the central difference D(eps) = (f(x + eps) - f(x - eps)) / (2 eps) of f'(x).

    Truncation: eps^2 / 6 |f'''| (``third_derivative``: a number, or a tensor per coordinate, e.g. from
    :func:`richardson_third_derivative`). Rounding: f is computed through ``steps`` unrolled inner steps,
    each adding a relative error of about u (the unit roundoff of ``dtype``) to the state; independent
    rounding errors add up like a random walk, so each value of f carries about sqrt(steps) u
    ``value_scale`` and the quotient sqrt(steps) u ``value_scale`` / eps. ``value_scale`` is the size of f
    as its rounding sees it: |f| + ||grad_theta f|| ||theta|| (:func:`rounding_scale`; the second term is
    the state's rounding passed through f, and dominates when f is small by cancellation, e.g. a squared
    residual near its minimum). ``safety`` covers the constants (the growth of rounding errors through the
    unroll, the next term of the expansion). With eps = 1e-5 in float64, a value scale and |f'''| of 1 and
    9 steps it is ~7e-10: three to four orders below the fixed 1e-5 or 1e-6 a loose test would allow.
    """
    u = float(torch.finfo(dtype).eps)
    third = third_derivative.abs() if isinstance(third_derivative, torch.Tensor) else abs(third_derivative)
    return safety * (eps * eps / 6.0 * third + math.sqrt(max(1, int(steps))) * u * abs(value_scale) / eps)


def rounding_scale(val_fn, state: torch.Tensor, phi: torch.Tensor) -> float:
    """|f| + ||grad_theta f|| ||theta|| for f = ``val_fn(state, phi)``: the scale of f's rounding error when the
    state carries a relative error (see :func:`finite_difference_error`)."""
    from torch.func import grad

    s = state.detach()
    g = grad(lambda s_: val_fn(s_, phi.detach()))(s)
    with torch.no_grad():
        value = float(val_fn(s, phi.detach()))
    return abs(value) + float(torch.linalg.vector_norm(g)) * float(torch.linalg.vector_norm(s))


def richardson_third_derivative(d_eps, d_2eps, eps: float):
    """|f'''| estimated from the central differences at steps eps and 2 eps:
    D(h) = f' + h^2 f''' / 6 + O(h^4), so D(2 eps) - D(eps) = eps^2 f''' / 2 + O(eps^4)."""
    return 2.0 * abs(d_2eps - d_eps) / (eps * eps)
