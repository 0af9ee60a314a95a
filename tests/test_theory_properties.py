"""Property-based checks of docs/design.md section 5 (theory_checks.properties), with fault injection.

Examples per test come from the hypothesis profile (tests/conftest.py: ``ci`` by default,
``HYPOTHESIS_PROFILE=thorough`` for 200 examples); no test here fixes its own count.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from theory_checks import bounds
from theory_checks import properties as pr
from theory_checks.quadratic import make_problem

LOCAL = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def koopman_specs(draw, kinds=("spd_decay", "ridge_weights", "step_size")):
    """Problems in the regime of theory_checks.properties.koopman_cases (size, conditioning, step size, kind)."""
    kind = draw(st.sampled_from(kinds))
    p = 1 if kind == "ridge_weights" else draw(st.sampled_from([1, 1, 2]))
    if p == 1:
        af = draw(st.one_of(st.floats(0.3, 0.75), st.floats(1.25, 1.7)))
        kappa = draw(st.floats(1.5, 5.0))
    else:
        af = draw(st.floats(0.6, 0.75))
        kappa = draw(st.floats(1.5, 2.5))
    q = draw(st.integers(2, 3)) if kind == "ridge_weights" else 1
    return pr.ProblemSpec(kind, p, q, kappa, af, draw(st.integers(0, 10_000)))


# (i) closed form = forward = reverse = finite differences
@LOCAL
@given(kind=st.sampled_from(["spd_decay", "ridge_weights", "step_size"]), p=st.integers(1, 6),
       kappa=st.floats(1.5, 100.0), af=st.one_of(st.floats(0.2, 0.95), st.floats(1.05, 1.8)),
       seed=st.integers(0, 10_000), T=st.integers(1, 40))
def test_engines_agree_with_closed_form(kind, p, kappa, af, seed, T):
    P = make_problem(kind, p=p, q_or_n=3, kappa=kappa, alpha_fraction=af, seed=seed)
    for r in pr.check_engines(P, T):
        assert r.passed, (r.check, r.measured, r.bound)


# (ii) spectrum recovery (p = 1: well separated modes, all above the float64 Hankel floor)
@LOCAL
@given(spec=koopman_specs())
def test_spectrum_recovered(spec):
    assume(spec.p == 1)
    r = pr.check_spectrum(spec.build())
    assert r.passed, (spec, r.measured, r.inputs)


# (iii) error floor and 100x below local at tau = n + d + 1; bound at every T
@LOCAL
@given(spec=koopman_specs())
def test_glocal_reaches_floor_and_beats_local(spec):
    P = spec.build()
    fl = pr.check_error_floor(P)
    assert fl.inputs["d"] * P.q >= fl.inputs["n"] and fl.inputs["tau"] == fl.inputs["n"] + fl.inputs["d"] + 1
    assert fl.passed, (spec, fl.measured)
    bl = pr.check_beats_local(P)
    assert bl.passed, (spec, bl.extra)


@LOCAL
@given(spec=koopman_specs(), extra=st.integers(1, 20))
def test_floor_holds_for_longer_windows(spec, extra):
    P = spec.build()
    fl = pr.check_error_floor(P)
    r = pr.check_error_floor(P, tau=fl.inputs["tau"] + extra)
    assert r.passed, (spec, r.measured)


@LOCAL
@given(kind=st.sampled_from(["spd_decay", "ridge_weights", "step_size"]), p=st.integers(1, 5),
       kappa=st.floats(1.5, 50.0), af=st.one_of(st.floats(0.2, 0.95), st.floats(1.05, 1.8)),
       seed=st.integers(0, 10_000))
def test_error_never_exceeds_bound(kind, p, kappa, af, seed):
    P = make_problem(kind, p=p, q_or_n=3, kappa=kappa, alpha_fraction=af, seed=seed)
    r = pr.check_bound(P, 120)
    assert r.passed, r.measured


# (iv) noise: at most linear growth
@LOCAL
@given(spec=koopman_specs(), noise_seed=st.integers(0, 100))
def test_noise_response_at_most_linear(spec, noise_seed):
    # median of 11 draws: the change of a single draw is heavy-tailed, and a median of 3 misjudged the slope of
    # about 1 problem in 100 (0 of 300 with 11 draws)
    r = pr.check_noise(spec.build(), (1e-8, 1e-7, 1e-6, 1e-5), n_draws=11, seed=noise_seed)
    assert r.passed, (spec, r.measured, r.extra["error"])


def test_noise_check_can_fail():
    """A response growing like sigma^2 has slope 2 and fails the same criterion."""
    from theory_checks import bounds

    sig = [1e-8, 1e-7, 1e-6, 1e-5]
    assert bounds.fit_loglog_slope(sig, [s**2 for s in sig]) > 1 + pr.NOISE_SLOPE_TOL


def test_rank_choice_plain_pinv_is_worse():
    """Rank-n truncation reaches the floor at every tau >= n + d + 1; the plain pseudo-inverse does not."""
    plain_fail = 0
    for spec in pr.koopman_cases(6, (1, 2), seed=3):
        P = spec.build()
        thr = pr.check_error_floor(P).inputs["tau"]
        rows = pr.error_vs_tau(P, range(thr, thr + 25, 4))
        assert all(r["glocal_error"] <= pr.FLOOR_TOL for r in rows), spec
        plain_fail += any(r["plain_error"] > pr.FLOOR_TOL for r in rows)
    assert plain_fail >= 1


# fault injection: each fault makes the floor or the spectrum check fail while the correct estimator passes
FAULT_CASES = [c for c in pr.koopman_cases(12, (1, 2), seed=7) if c.kind != "step_size"]  # step_size: h_inf = 0


@pytest.mark.parametrize("fault", pr.FAULTS)
def test_faults_are_caught(fault):
    for spec in FAULT_CASES:
        P = spec.build()
        ok_floor = pr.check_error_floor(P)
        assert ok_floor.passed, spec
        bad_floor = pr.check_error_floor(P, fault=fault)
        checks = [bad_floor.passed]
        if spec.p == 1:
            assert pr.check_spectrum(P).passed, spec
            checks.append(pr.check_spectrum(P, fault=fault).passed)
        assert not all(checks), (fault, spec, bad_floor.measured)


def test_fault_argument_validated():
    P = pr.koopman_cases(1)[0].build()
    with pytest.raises(ValueError, match="fault"):
        pr.estimate_with_fault(P.h_trajectory(12), "bogus", delay=5, rank=5)


# (v) complexity: exponents of deterministic operation counts (wall times: `glocal theory`, reported only)
@pytest.mark.parametrize("kind,sizes,fixed", [("tau", [4, 8, 16], 4), ("q", [2, 4, 8, 16], 8), ("T", [16, 32, 64], 4)])
def test_complexity_exponents(kind, sizes, fixed):
    r = pr.measure_complexity(kind, sizes, fixed=fixed)
    assert r.passed, (r.check, r.extra["exponent"], r.extra["counts"])
    counts = r.extra["counts"]
    assert counts == sorted(counts) and counts[0] > 0
    assert pr.measure_complexity(kind, sizes, fixed=fixed).extra["counts"] == counts  # deterministic


def test_forward_q_count_sees_the_vmapped_directions():
    """The counter sits below vmap: the q tangent directions are counted, and every extra direction adds the
    same work (up to the q x q identity and other O(q) bookkeeping, < 1e-3 of it); the plain log-log slope
    is below 1 because the primal step is computed once, which is why the check fits the exponent of the
    increments."""
    qs = [1, 2, 3, 4]
    counts = pr.count_forward_q(qs, tau=3)
    inc = [b - a for a, b in zip(counts, counts[1:])]
    assert inc[0] > 3 * 3 * pr.COUNT_STATE, counts  # at least one state-sized tangent op per step
    assert max(inc) - min(inc) <= 1e-3 * min(inc), counts
    assert bounds.fit_loglog_slope([2, 4, 8], pr.count_forward_q([2, 4, 8], tau=3)) < 0.9


def test_complexity_check_can_fail():
    """An engine whose work grew like q^2 (or tau^2) fails; a large constant part (the per-step overhead of a
    tiny problem) does not hide a linear law."""
    sizes = [2, 4, 8, 16]
    assert not pr.check_complexity("forward_trajectory", "q", sizes, [500 + 7 * q * q for q in sizes]).passed
    assert not pr.check_complexity("forward_trajectory", "tau", sizes, [3 * t ** 1.5 for t in sizes]).passed
    assert pr.check_complexity("forward_trajectory", "q", sizes, [10**6 + 7 * q for q in sizes]).passed
    with pytest.raises(ValueError, match="3 distinct sizes"):
        pr.leading_exponent([2, 4], [1, 2])
    assert pr.complexity_grid([10, 20]) == [10, 20, 40]
