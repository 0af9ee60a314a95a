"""Closed forms of the quadratic bilevel problems (theory_checks.quadratic) and bounds.py."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from glocal import hypergrad, koopman
from theory_checks import bounds
from theory_checks.quadratic import (
    DTYPE,
    KINDS,
    divided_power,
    hankel_matrix,
    make_problem,
    simulate,
)

# examples per test: the hypothesis profile's (tests/conftest.py), so HYPOTHESIS_PROFILE=thorough reaches these
FAST = settings(deadline=None)
# alpha_fraction = 1 makes A = I - alpha H singular (rejected by make_problem)
ALPHA_FRACTIONS = st.one_of(st.floats(0.2, 0.95), st.floats(1.05, 1.8))


def _t(T, start=0):
    return torch.arange(start, T + 1, dtype=DTYPE)


# ----------------------------------------------------------------------------------------------------
# numerics
# ----------------------------------------------------------------------------------------------------
@FAST
@given(
    x=st.floats(-0.999, 0.999),
    dy=st.one_of(st.just(0.0), st.floats(-1e-6, 1e-6), st.floats(-0.5, 0.5)),
    t=st.integers(0, 400),
)
@example(x=0.0, dy=6e-254, t=2)  # y^t underflows: found by the ci profile
@example(x=1e-200, dy=-4e-200, t=2)
def test_divided_power_matches_sum(x, dy, t):
    y = max(-0.999, min(0.999, x + dy))
    ref = math.fsum(x ** (t - 1 - s) * y**s for s in range(t))
    xt, yt = torch.tensor(x, dtype=DTYPE), torch.tensor(y, dtype=DTYPE)
    got = float(divided_power(xt, yt, torch.tensor(float(t))))
    scale = max(abs(x), abs(y)) ** max(t - 1, 0) * max(t, 1)
    assert abs(got - ref) <= 1e-12 * max(scale, abs(ref), 1e-300) + 1e-300


def test_hankel_matrix_layout():
    seq = torch.arange(12.0).reshape(6, 2)
    M = hankel_matrix(seq, depth=2)
    assert M.shape == (4, 5)
    assert torch.equal(M[:, 0], torch.tensor([0.0, 1, 2, 3]))
    assert torch.equal(M[:, 4], torch.tensor([8.0, 9, 10, 11]))


# ----------------------------------------------------------------------------------------------------
# closed forms == direct simulation
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha_fraction", [0.5, 1.4])
def test_closed_form_matches_simulation(kind, alpha_fraction):
    P = make_problem(kind, p=3, q_or_n=5, kappa=20, alpha_fraction=alpha_fraction, seed=3)
    T = 80
    sim = simulate(P, T)
    t = _t(T)
    for name, closed in [("theta", P.theta(t)), ("Z", P.Z(t)), ("h", P.h(t))]:
        ref = sim[name]
        err = float((closed - ref).abs().max())
        assert err <= 1e-10 * max(1.0, float(ref.abs().max())), (name, err)
    # scalar t and trajectory convention
    assert torch.allclose(P.h(7), sim["h"][7], atol=1e-12)
    assert torch.allclose(P.h_trajectory(T), sim["h"][1:], atol=1e-12)


@FAST
@given(kind=st.sampled_from(KINDS), p=st.integers(1, 5), seed=st.integers(0, 10_000),
       kappa=st.floats(1.5, 100.0), alpha_fraction=ALPHA_FRACTIONS)
def test_closed_form_matches_simulation_random(kind, p, seed, kappa, alpha_fraction):
    P = make_problem(kind, p=p, q_or_n=3, kappa=kappa, alpha_fraction=alpha_fraction, seed=seed)
    T = 40
    sim = simulate(P, T)
    t = _t(T)
    for name, closed in [("theta", P.theta(t)), ("Z", P.Z(t)), ("h", P.h(t))]:
        ref = sim[name]
        assert float((closed - ref).abs().max()) <= 1e-10 * max(1.0, float(ref.abs().max())), name


@pytest.mark.parametrize("kind", KINDS)
def test_modes_reconstruct_sequence(kind):
    P = make_problem(kind, p=3, q_or_n=4, kappa=10, alpha_fraction=0.8, seed=1)
    t = _t(300)
    h = P.h(t)
    rec = P.h_from_modes(t)
    assert float((rec - h).abs().max()) <= 1e-12 * max(1.0, float(h.abs().max()))
    mus = [mu for mu, _ in P.spectrum()]
    cands = P.candidate_spectrum()
    assert all(min(abs(mu - c) for c in cands) < 1e-10 for mu in mus)
    # every Jordan block of the quadratic model has size <= 2
    assert all(size <= 2 for _, size in P.spectrum())
    one = [md for md in P.modes() if md.mu == 1.0]
    if kind == "step_size":
        assert not one
    else:
        assert len(one) == 1 and one[0].size == 1
        assert torch.allclose(one[0].coefs[0], P.h_inf(), atol=1e-13, rtol=1e-10)


# ----------------------------------------------------------------------------------------------------
# limit, bound
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["spd_decay", "ridge_weights"])
def test_h_inf_is_implicit_function_theorem(kind):
    """h_inf == d/dphi L_val(theta*(phi)) computed independently by autograd through a linear solve."""
    P = make_problem(kind, p=3, q_or_n=4, kappa=10, alpha_fraction=0.8, seed=2)

    def outer(phi):
        theta_star = torch.linalg.solve(P.H_fn(phi), P.b_fn(phi))
        return P.torch_val_fn()(theta_star, phi)

    ref = torch.func.grad(outer)(P.phi)
    assert torch.allclose(P.h_inf(), ref, rtol=1e-10, atol=1e-14)
    assert float(P.h_inf().abs().max()) > 1e-6  # non-trivial


@FAST
@given(kind=st.sampled_from(KINDS), p=st.integers(1, 4), seed=st.integers(0, 10_000),
       alpha_fraction=ALPHA_FRACTIONS)
def test_error_bound_holds(kind, p, seed, alpha_fraction):
    P = make_problem(kind, p=p, q_or_n=3, kappa=10, alpha_fraction=alpha_fraction, seed=seed)
    T = torch.arange(1, 201, dtype=DTYPE)
    err = torch.linalg.vector_norm(P.h(T) - P.h_inf(), dim=-1)
    slack = 1e-12
    for form in ("terms", "jordan"):
        assert bool((err <= bounds.error_bound(P, T, form=form) + slack).all()), form
    assert bool((bounds.error_bound(P, T, "terms") <= bounds.error_bound(P, T, "jordan") + 1e-15).all())
    C, rho = bounds.geometric_constant(P)
    assert rho < 1
    assert bool((err <= C * rho**T + slack).all())
    assert bool((bounds.error_bound(P, T, "terms") <= bounds.geometric_bound(P, T) + slack).all())


@pytest.mark.parametrize("kind", KINDS)
def test_h_converges_to_h_inf(kind):
    P = make_problem(kind, p=3, q_or_n=4, kappa=10, alpha_fraction=1.2, seed=0)
    errs = [float(torch.linalg.vector_norm(P.h(T) - P.h_inf())) for T in (10, 100, 1000, 3000)]
    assert errs[-1] < 1e-12 and errs[-1] <= errs[1] <= errs[0]


def test_step_size_limit_is_zero():
    for seed in range(3):
        P = make_problem("step_size", p=3, kappa=10, alpha_fraction=0.9, seed=seed)
        assert float(P.h_inf().abs().max()) == 0.0
        assert float(P.h(20).abs().max()) > 1e-8  # the local hypergradient is not zero
        assert float(P.h(3000).abs().max()) < 1e-12


# ----------------------------------------------------------------------------------------------------
# Koopman dimension
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,p,q", [("spd_decay", 2, 1), ("spd_decay", 3, 1), ("step_size", 3, 1),
                                      ("ridge_weights", 2, 3), ("step_size", 1, 1)])
def test_koopman_dimension_matches_count(kind, p, q):
    P = make_problem(kind, p=p, q_or_n=q, kappa=10, alpha_fraction=0.7, seed=4)
    n = P.koopman_dimension_count()
    # structure: 1 (unless step size) + 2 per eig(A) + 2 per product a_i a_j (i <= j)
    expected = (0 if kind == "step_size" else 1) + 2 * p + p * (p + 1)
    assert n == expected
    assert P.koopman_dimension(precision="mp") == n
    # float64 Hankel rank cannot exceed n (and is capped by conditioning below it)
    assert P.koopman_dimension(precision="float64") <= n
    # scalar coordinate
    assert P.koopman_dimension(precision="mp", coordinate=0) == n


def test_koopman_dimension_float64_small():
    P = make_problem("spd_decay", p=1, kappa=4, alpha_fraction=0.9, seed=0)
    assert P.koopman_dimension(precision="float64") == P.koopman_dimension_count() == 5


# ----------------------------------------------------------------------------------------------------
# bounds.py formulas
# ----------------------------------------------------------------------------------------------------
def test_complexity_formulas_and_slopes():
    assert bounds.expected_slope("forward_trajectory", "tau") == 1
    assert bounds.expected_slope("forward_trajectory", "q") == 1
    assert bounds.expected_slope("reverse_hypergradient", "T") == 1
    assert bounds.expected_slope("reverse_hypergradient", "q") == 0
    assert bounds.expected_slope("hankel_dmd", "tau") == 2
    assert bounds.expected_memory_slope("reverse_hypergradient", "T") == 1
    with pytest.raises(KeyError):
        bounds.expected_slope("nope", "T")
    Ts = [10, 20, 40, 80]
    slope = bounds.fit_loglog_slope
    assert slope(Ts, [bounds.cost_global_forward(T, 5, 2.0) for T in Ts]) == pytest.approx(1)
    assert slope(Ts, [bounds.cost_dmd(T, 3, 2, 1) for T in Ts]) == pytest.approx(2, abs=0.01)
    assert bounds.cost_local(10, 4, 1.0, "reverse") == 10 and bounds.cost_local(10, 4, 1.0) == 40
    assert bounds.cost_glocal(10, 4, 2, 3, 1.0) == 40 + 2 * 4 * 100 + 27
    assert bounds.memory_global_reverse(100, 7, "sqrt") == pytest.approx(70)
    assert bounds.memory_glocal(10, 5, 4, 2) == 20 + 80


# ----------------------------------------------------------------------------------------------------
# cross-checks against the glocal engines
# ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_closed_form_equals_engines(kind, fd_check):
    P = make_problem(kind, p=3, q_or_n=4, kappa=10, alpha_fraction=0.9, seed=5)
    step, val, T = P.torch_step_fn(), P.torch_val_fn(), 60
    batches = P.batches(T)
    ref = P.h_trajectory(T)

    def rel(a, b):
        return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))

    fd_reference, assert_fd_close = fd_check
    fwd = hypergrad.forward_trajectory(step, val, P.theta0, P.phi, batches)
    assert fwd.h.shape == (T, P.q)
    # engines against the closed form: the closed form's own round-off (divided powers over 60 steps)
    # sets the level, ~1e-13; engines against each other: round-off of one unroll, ~1e-16
    assert rel(fwd.h, ref) <= 1e-11
    assert torch.allclose(fwd.final_state, P.theta(T), rtol=0, atol=1e-12)
    for ckpt in (None, "sqrt", 7, "graph"):
        rev = hypergrad.reverse_hypergradient(step, val, P.theta0, P.phi, batches, checkpoint=ckpt)
        assert rel(rev.h, ref[-1]) <= 1e-11, ckpt
        assert rel(rev.h, fwd.h[-1]) <= 1e-12, ckpt
    fd, bound = fd_reference(step, val, P.theta0, P.phi, batches)
    assert_fd_close(ref[-1], fd, bound, "closed form vs FD")
    win = hypergrad.reverse_window_hypergradients(step, val, P.theta0, P.phi, batches, [1, 10, T])
    assert rel(win.h, ref[[0, 9, T - 1]]) <= 1e-11
    assert rel(win.h, fwd.h[[0, 9, T - 1]]) <= 1e-12


def test_glocal_limit_beats_local_on_quadratic():
    P = make_problem("spd_decay", p=1, kappa=4, alpha_fraction=0.5, seed=0)
    n = P.koopman_dimension_count()
    tau = 3 * n + 10
    traj = P.h_trajectory(tau)
    hinf = P.h_inf()
    local_err = float(torch.linalg.vector_norm(traj[-1] - hinf))
    est = koopman.glocal_estimate(traj, estimator="limit", delay=n, rank=n)
    assert not est.fallback, est.reason
    glocal_err = float(torch.linalg.vector_norm(est.value - hinf))
    assert glocal_err <= 1e-6 * float(torch.linalg.vector_norm(hinf))
    assert glocal_err <= 1e-3 * local_err
