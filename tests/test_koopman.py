"""Tests for glocal.koopman: exact recovery on known stable linear systems, robustness and guards."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from glocal.koopman import (
    backtest_shrinkage,
    fixed_point_condition,
    glocal_estimate,
    growing_share,
    hankel_dmd,
    optimal_hard_threshold_rank,
    shared_rate_fit,
    shared_rate_grid,
    validate_trajectory,
)

TOL = 1e-8
F64 = torch.float64


def _stable_matrix(g: torch.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Random real n x n matrix with well separated eigenvalues of modulus in [0.48, 0.88]."""
    reals = [0.5, -0.5, 0.62, -0.62, 0.74, -0.74, 0.86, -0.86]
    pairs = [(0.6, 0.8), (0.75, 1.6), (0.85, 2.4), (0.7, 0.3)]
    perm_r = torch.randperm(len(reals), generator=g).tolist()
    perm_p = torch.randperm(len(pairs), generator=g).tolist()
    lo = max(0, -(-(n - len(reals)) // 2))
    n_pairs = int(torch.randint(lo, min(n // 2, len(pairs)) + 1, (1,), generator=g))
    blocks, eigs = [], []
    for k in perm_p[:n_pairs]:
        r, th = pairs[k]
        r += 0.04 * (torch.rand(1, generator=g).item() - 0.5)
        a, b = r * math.cos(th), r * math.sin(th)
        blocks.append(torch.tensor([[a, -b], [b, a]], dtype=F64))
        eigs += [complex(a, b), complex(a, -b)]
    for k in perm_r[: n - 2 * n_pairs]:
        lam = reals[k] + 0.04 * (torch.rand(1, generator=g).item() - 0.5)
        blocks.append(torch.tensor([[lam]], dtype=F64))
        eigs.append(complex(lam, 0))
    D = torch.block_diag(*blocks)
    Q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=F64))
    V = Q @ torch.diag(1 + torch.rand(n, generator=g, dtype=F64))
    return V @ D @ torch.linalg.inv(V), torch.tensor(eigs, dtype=torch.complex128)


def _system_sequence(seed: int, q: int, n: int, delay: int, extra: int = 20):
    """h_t = C z_t with z_{t+1} = K z_t + e (n latent modes, q observed coordinates).

    Redraws (deterministically) until the snapshot matrix of the fit is well conditioned,
    so that a 1e-8 tolerance tests the estimator rather than the luck of the draw.
    Returns (sequence of length tau + extra, tau, limit, eigenvalues).
    """
    g = torch.Generator().manual_seed(seed)
    tau = n + delay + 3
    for _ in range(200):
        K, eigs = _stable_matrix(g, n)
        e = torch.randn(n, generator=g, dtype=F64)
        z = torch.randn(n, generator=g, dtype=F64)
        C = torch.eye(n, dtype=F64) if q == n else torch.randn(q, n, generator=g, dtype=F64)
        hs = []
        for _t in range(tau + extra):
            z = K @ z + e
            hs.append(C @ z)
        H = torch.stack(hs)
        m = tau - delay + 1
        G = torch.stack([H[j : j + delay].reshape(-1) for j in range(m)], dim=1)
        # what the fit inverts: the centred snapshots (n nonzero singular values when the system is observable)
        X0 = G[:, :-1] - G[:, :-1].mean(dim=1, keepdim=True)
        s = torch.linalg.svdvals(X0)
        if s.numel() >= n and float(s[0] / s[n - 1]) < 1e4:
            limit = C @ torch.linalg.solve(torch.eye(n, dtype=F64) - K, e)
            return H, tau, limit, eigs
    raise AssertionError("could not draw a well-conditioned system")  # pragma: no cover


def _match_eigs(est: torch.Tensor, true: torch.Tensor) -> float:
    """Largest distance from a true eigenvalue to its nearest estimated one (counts must match)."""
    assert est.numel() == true.numel(), (est, true)
    return max(float((est - t).abs().min()) for t in true)


def _rel(a, b) -> float:
    return float(torch.linalg.norm(a - b) / torch.linalg.norm(b))


# ---------------------------------------------------------------------------- exact recovery
@given(seed=st.integers(0, 2**20), n_modes=st.integers(1, 4))
def test_scalar_sequence_needs_delay_at_least_modes(seed, n_modes):
    H, tau, limit, eigs = _system_sequence(seed, 1, n_modes, n_modes)
    traj = H[:tau, 0]  # 1-D input: a scalar sequence
    est = glocal_estimate(traj, delay=n_modes)
    assert est.value.shape == ()
    assert not est.fallback, est.reason
    assert abs(float(est.value - limit[0])) <= TOL * abs(float(limit[0]))
    assert _match_eigs(est.diagnostics["eigenvalues"], eigs) <= TOL
    assert est.diagnostics["rank"] == n_modes
    # a longer delay still gives the limit
    est2 = glocal_estimate(traj, delay=n_modes + 1)
    assert abs(float(est2.value - limit[0])) <= TOL * abs(float(limit[0]))
    hz = glocal_estimate(traj, delay=n_modes, estimator="horizon", steps_ahead=9)
    assert abs(float(hz.value - H[tau - 1 + 9, 0])) <= TOL * abs(float(H[tau - 1 + 9, 0]))


def test_scalar_delay_too_short_is_wrong():
    """Control: with delay < number of modes the model cannot represent the sequence."""
    H, tau, limit, _ = _system_sequence(5, 1, 3, 3)
    est = glocal_estimate(H[:tau, 0], delay=1)
    assert est.fallback or abs(float(est.value - limit[0])) > 1e-3 * abs(float(limit[0]))


@given(seed=st.integers(0, 2**20), q=st.integers(2, 5))
def test_vector_sequence_delay_one(seed, q):
    """h_{t+1} = M h_t + b with q distinct stable modes, delay 1."""
    H, tau, limit, eigs = _system_sequence(seed, q, q, 1)
    est = glocal_estimate(H[:tau])
    assert est.value.shape == (q,)
    assert not est.fallback, est.reason
    assert _rel(est.value, limit) <= TOL
    assert _match_eigs(est.diagnostics["eigenvalues"], eigs) <= TOL
    assert est.diagnostics["spectral_radius"] < 1
    for k in (1, 5, 15):
        hz = glocal_estimate(H[:tau], estimator="horizon", steps_ahead=k)
        assert not hz.fallback
        assert _rel(hz.value, H[tau - 1 + k]) <= TOL
    hz0 = glocal_estimate(H[:tau], estimator="horizon", steps_ahead=0)
    assert _rel(hz0.value, H[tau - 1]) <= TOL


@given(seed=st.integers(0, 2**20), q=st.integers(2, 5))
def test_vector_sequence_delay_two(seed, q):
    """2q latent modes seen through q coordinates: needs delay 2."""
    H, tau, limit, eigs = _system_sequence(seed, q, 2 * q, 2)
    est = glocal_estimate(H[:tau], delay=2)
    assert not est.fallback, est.reason
    assert _rel(est.value, limit) <= TOL
    assert _match_eigs(est.diagnostics["eigenvalues"], eigs) <= TOL
    assert est.diagnostics["delay"] == 2
    hz = glocal_estimate(H[:tau], delay=2, estimator="horizon", steps_ahead=7)
    assert _rel(hz.value, H[tau - 1 + 7]) <= TOL


def test_hankel_dmd_fit_is_exact_and_record_is_jsonable():
    import json

    H, tau, limit, eigs = _system_sequence(1, 3, 3, 1)
    fit = hankel_dmd(H[:tau])
    assert fit.rank == 3 and fit.delay == 1 and fit.q == 3 and fit.n_snapshots == tau
    assert fit.residual < 1e-10
    assert _match_eigs(fit.eigenvalues, eigs) <= TOL
    rec = glocal_estimate(H[:tau]).to_record()
    json.dumps(rec)
    assert rec["fallback"] is False and len(rec["value"]) == 3


def test_local_estimator_is_last_row():
    H, tau, _, _ = _system_sequence(2, 3, 3, 1)
    est = glocal_estimate(H[:tau], estimator="local")
    assert torch.equal(est.value, H[tau - 1]) and est.fallback is False and est.reason is None


# ---------------------------------------------------------------------------- robustness
def _finite(est) -> bool:
    return bool(torch.isfinite(torch.as_tensor(est.value)).all())


@pytest.mark.parametrize("estimator", ["limit", "horizon"])
def test_constant_sequence(estimator):
    traj = torch.full((12, 3), 2.5, dtype=F64)
    est = glocal_estimate(traj, estimator=estimator, steps_ahead=10)
    assert _finite(est)
    assert not est.fallback
    torch.testing.assert_close(est.value, traj[-1], rtol=1e-10, atol=0)


def test_zero_sequence_is_its_own_limit():
    """An all-zero trajectory is constant: its limit and every horizon are 0, with no fallback."""
    traj = torch.zeros(10, 2, dtype=F64)
    for estimator in ("limit", "horizon"):
        est = glocal_estimate(traj, estimator=estimator, steps_ahead=5)
        assert _finite(est) and not est.fallback, est.reason
        assert est.diagnostics["rank"] == 0 and est.diagnostics["constant"] is True
        assert torch.equal(est.value, traj[-1])


@pytest.mark.parametrize("tau", [1, 2])
def test_too_short_sequences_fall_back(tau):
    traj = torch.arange(1, tau * 2 + 1, dtype=F64).reshape(tau, 2)
    for estimator in ("limit", "horizon"):
        est = glocal_estimate(traj, estimator=estimator, steps_ahead=3)
        assert _finite(est) and est.fallback
        assert "snapshots" in est.reason
        assert torch.equal(est.value, traj[-1])
    est = glocal_estimate(traj, delay=3)
    assert est.fallback and "delay" in est.reason


def test_rank_deficient_sequence():
    """q = 4 but all columns proportional: rank reported, value finite and right."""
    t = torch.arange(15, dtype=F64)
    a = 1.0 + 0.6**t  # one mode plus a constant
    v = torch.tensor([1.0, -2.0, 0.5, 3.0], dtype=F64)
    traj = a[:, None] * v
    est = glocal_estimate(traj)
    assert _finite(est)
    assert est.diagnostics["rank"] <= 2
    assert not est.fallback, est.reason
    torch.testing.assert_close(est.value, v, rtol=1e-8, atol=1e-10)


def test_oscillating_sequence():
    t = torch.arange(16, dtype=F64)
    traj = ((-1.0) ** t)[:, None] * torch.tensor([1.0, 2.0], dtype=F64)
    est = glocal_estimate(traj)
    assert _finite(est)
    assert est.diagnostics["spectral_radius"] == pytest.approx(1.0, abs=1e-8)
    hz = glocal_estimate(traj, estimator="horizon", steps_ahead=3)
    assert _finite(hz)
    if not hz.fallback:
        torch.testing.assert_close(hz.value, -traj[-1], rtol=1e-8, atol=1e-10)


def test_exploding_sequence_reports_spectral_radius():
    traj = (2.0 ** torch.arange(20, dtype=F64))[:, None] * torch.tensor([1.0, -1.0], dtype=F64)
    est = glocal_estimate(traj)
    assert _finite(est)
    assert est.diagnostics["spectral_radius"] > 1.5
    hz = glocal_estimate(traj, estimator="horizon", steps_ahead=50)
    assert _finite(hz)
    assert float(torch.linalg.norm(hz.value)) <= 10.0 * float(torch.linalg.norm(traj, dim=1).max())


def test_linear_growth_triggers_condition_guard():
    """h_t = t v: a double eigenvalue 1 (I - A singular); only the condition-number guard can tell.

    The spectral radius is 1 (no growing mode) and the trajectory is not degenerate, so with the
    condition guard disabled the estimate is garbage or the solve fails: the guard is the one firing.
    """
    traj = torch.arange(1, 21, dtype=F64)[:, None] * torch.tensor([1.0, 0.5], dtype=F64)
    est = glocal_estimate(traj)
    assert _finite(est) and est.fallback
    assert est.reason.startswith("ill-conditioned fit"), est.reason
    assert est.diagnostics["condition_number"] > 1e8
    assert est.diagnostics["spectral_radius"] == pytest.approx(1.0, abs=1e-6)
    assert not est.diagnostics["growing"] and not est.degenerate
    assert torch.equal(est.value, traj[-1])


def test_condition_guard_alone_on_a_near_unit_mode():
    """A limit well inside the norm guard, but cond(I - A) ~ 1e9: only the condition guard fires."""
    t = torch.arange(1, 41, dtype=F64)
    lam = 1.0 - 1e-9
    traj = torch.stack([1.0 + 0.5**t, 0.3 * (1.0 - lam**t) / (1.0 - lam) * 1e-9], dim=1)
    est = glocal_estimate(traj)
    assert est.fallback and est.reason.startswith("ill-conditioned"), est.reason
    loose = glocal_estimate(traj, max_condition=float("inf"))
    assert loose.reason is None or not loose.reason.startswith("ill-conditioned")


def test_norm_guard():
    """A slowly converging sequence whose limit is far beyond everything seen falls back."""
    t = torch.arange(1, 11, dtype=F64)
    traj = (1.0 - 0.999**t)[:, None] * torch.tensor([1.0, 2.0], dtype=F64)
    est = glocal_estimate(traj)
    assert est.fallback and est.reason.startswith("norm guard:"), est.reason
    assert torch.equal(est.value, traj[-1])
    # with the guard relaxed the same fit returns the (correct) far-away limit
    loose = glocal_estimate(traj, max_norm_ratio=1e6)
    assert not loose.fallback
    torch.testing.assert_close(loose.value, torch.tensor([1.0, 2.0], dtype=F64), rtol=1e-6, atol=0)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_input_raises_with_location(bad):
    traj = torch.ones(6, 3, dtype=F64)
    traj[4, 1] = bad
    with pytest.raises(ValueError, match=r"step 4, coordinate 1"):
        glocal_estimate(traj)
    with pytest.raises(ValueError, match=r"step 4, coordinate 1"):
        hankel_dmd(traj)


def test_wrong_shape_and_arguments_raise():
    with pytest.raises(ValueError, match=r"\(tau, q\)"):
        glocal_estimate(torch.ones(4, 2, 2, dtype=F64))
    with pytest.raises(ValueError, match="estimator"):
        glocal_estimate(torch.ones(5, 2, dtype=F64), estimator="magic")
    with pytest.raises(ValueError, match="steps_ahead"):
        glocal_estimate(torch.ones(5, 2, dtype=F64), estimator="horizon")
    with pytest.raises(ValueError, match="delay"):
        hankel_dmd(torch.ones(5, 2, dtype=F64), delay=0)
    with pytest.raises(ValueError, match="energy"):
        hankel_dmd(torch.rand(8, 2, dtype=F64), energy=1.5)
    assert validate_trajectory([1.0, 2.0, 3.0]).shape == (3, 1)
    with pytest.raises(ValueError, match="boolean"):
        validate_trajectory(torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="tau >= 1"):
        validate_trajectory(torch.zeros(0, 3, dtype=F64))
    with pytest.raises(ValueError, match="q >= 1"):
        validate_trajectory(torch.zeros(3, 0, dtype=F64))


# ---------------------------------------------------------------------------- scale, precision, collapse
def _noisy_modal(seed: int, q: int = 4, tau: int = 30) -> torch.Tensor:
    """A converging modal trajectory plus a little noise: a generic (inexact) fit."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(1, tau + 1, dtype=F64)[:, None]
    lams = torch.tensor([0.5, 0.8, 0.95], dtype=F64)
    W = torch.randn(3, q, generator=g, dtype=F64)
    base = torch.randn(q, generator=g, dtype=F64)
    return base + (lams**t) @ W + 1e-3 * torch.randn(tau, q, generator=g, dtype=F64)


@given(seed=st.integers(0, 2**16), exponent=st.sampled_from([-12, -9, -6, -3, 3, 6, 9, 12]),
       estimator=st.sampled_from(["limit", "horizon", "robust", "auto", "local"]), delay=st.integers(1, 3),
       option=st.sampled_from([{}, {"rank": 2}, {"energy": 0.999}, {"rank_rule": "oht"},
                               {"rank_rule": "overdetermined"}, {"rtol": 1e-6}]))
def test_estimate_is_equivariant_to_the_scale_of_its_input(seed, exponent, estimator, delay, option):
    """The estimate of c * H is c times the estimate of H (1e-8 relative), fallbacks included."""
    H = _noisy_modal(seed)
    c = 10.0**exponent
    a = glocal_estimate(H, estimator=estimator, delay=delay, steps_ahead=40, **option)
    b = glocal_estimate(c * H, estimator=estimator, delay=delay, steps_ahead=40, **option)
    assert a.fallback == b.fallback and a.reason == b.reason or a.reason.split(":")[0] == b.reason.split(":")[0]
    assert a.diagnostics["rank"] == b.diagnostics["rank"]
    assert _rel(b.value / c, a.value) <= 1e-8
    if estimator in ("robust", "auto"):  # neither the rate, the shrinkage nor the choice depends on the scale
        assert a.diagnostics["choice" if estimator == "auto" else "rate"] == b.diagnostics[
            "choice" if estimator == "auto" else "rate"]
        assert a.diagnostics["kappa"] == pytest.approx(b.diagnostics["kappa"], rel=1e-8, abs=1e-12)


def test_scaled_trajectories_keep_their_modes():
    """The collapse of the old fit: a small, nearly converged trajectory must keep its slow mode."""
    t = torch.arange(1, 21, dtype=F64)[:, None]
    g = torch.Generator().manual_seed(3)
    v, w = torch.randn(50, generator=g, dtype=F64), torch.randn(50, generator=g, dtype=F64)
    for scale in (1e-12, 1e-4, 1.0, 1e6, 1e12):
        H = scale * (v + 0.05 * 0.9**t * w)  # a mean 20x larger than the variation
        est = glocal_estimate(H)
        assert not est.fallback and not est.degenerate, est.reason
        assert est.diagnostics["spectral_radius"] == pytest.approx(0.9, abs=1e-8)
        assert _rel(est.value, scale * v) <= 1e-8


def test_fit_runs_in_float64_and_returns_the_input_dtype():
    H = _noisy_modal(1)
    ref = glocal_estimate(H.float().double(), estimator="horizon", steps_ahead=30)
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        x = H.to(dt)
        est = glocal_estimate(x, estimator="horizon", steps_ahead=30)
        assert est.value.dtype == dt
        fit64 = glocal_estimate(x.double(), estimator="horizon", steps_ahead=30)
        # the same numbers fitted in float64, rounded once to the input's dtype at the end
        assert torch.equal(est.value, fit64.value.to(dt))
    assert torch.equal(glocal_estimate(H.float(), estimator="horizon", steps_ahead=30).value,
                       ref.value.float())
    lst = glocal_estimate(H.tolist())
    assert lst.value.dtype == torch.float64
    assert torch.equal(lst.value, glocal_estimate(H).value)
    with pytest.raises(ValueError, match="complex"):
        glocal_estimate(H.to(torch.complex128))
    with pytest.raises(ValueError, match="complex"):
        hankel_dmd([[1 + 2j, 0.0], [1.0, 1.0], [0.5, 0.5]])


def test_float32_trajectory_keeps_the_float64_fit_accuracy():
    """Rounded to float32, a slowly converging trajectory still gives its limit to ~float32 accuracy."""
    g = torch.Generator().manual_seed(7)
    q, tau = 40, 60
    t = torch.arange(1, tau + 1, dtype=F64)[:, None]
    lams = torch.tensor([0.6, 0.85, 0.93, 0.97], dtype=F64)
    W = torch.randn(4, q, generator=g, dtype=F64)
    limit = torch.randn(q, generator=g, dtype=F64)
    H = 1e-4 * (limit + (lams**t) @ W)
    est = glocal_estimate(H.float())
    assert not est.fallback, est.reason
    assert _rel(est.value.double(), 1e-4 * limit) < 1e-3
    assert _rel(H[-1], 1e-4 * limit) > 0.1  # the local hypergradient is far off


def test_growing_trajectory_falls_back_for_limit_and_is_frozen_by_horizon():
    """h_t = a + b 1.1^t + c 0.5^t: no limit; horizon freezes the growing mode at its current size."""
    t = torch.arange(1, 31, dtype=F64)
    a, b, c = 2.0, 1e-3, 1.0
    h = a + b * 1.1**t + c * 0.5**t
    est = glocal_estimate(h, delay=2)
    assert est.fallback and est.reason.startswith("growing mode"), est.reason
    assert est.diagnostics["growing"] and est.diagnostics["growing_share"] > 0.5
    assert est.diagnostics["spectral_radius"] == pytest.approx(1.1, abs=1e-8)
    assert float(est.value) == float(h[-1])
    n = 12
    hz = glocal_estimate(h, delay=2, estimator="horizon", steps_ahead=n)
    assert not hz.fallback, hz.reason
    assert hz.diagnostics["n_clipped"] == 1 and hz.diagnostics["growing"]
    frozen = a + b * 1.1**30 + c * 0.5 ** (30 + n)
    assert abs(float(hz.value) - frozen) <= 1e-8 * abs(frozen)


def test_small_growing_noise_mode_does_not_hide_the_limit():
    """A slightly unstable mode carrying little of the trajectory is flagged, not a fallback."""
    t = torch.arange(1, 41, dtype=F64)
    h = 3.0 + 1.0 * 0.8**t + 1e-4 * 1.01**t
    est = glocal_estimate(h, delay=2)
    assert est.diagnostics["growing"] and est.diagnostics["growing_share"] < 0.5
    assert not est.fallback, est.reason
    assert abs(float(est.value) - 3.0) <= 1e-8 * 3.0


def test_degenerate_fits_are_flagged_and_fall_back():
    # a single jump, then constant: every eigenvalue is 0 (X1 does not vary); the fallback (the
    # local value) is also the limit here, so the guard costs nothing when the fit is right
    jump = torch.tensor([[1.0, 0.0]] + [[0.0, 1.0]] * 9, dtype=F64)
    est = glocal_estimate(jump)
    assert est.degenerate and est.fallback and est.reason.startswith("degenerate"), est.reason
    assert est.diagnostics["spectral_radius"] < 1e-3
    assert torch.equal(est.value, jump[-1])
    assert not glocal_estimate(jump, collapse_tol=0.0).fallback
    # a converging trajectory is not degenerate
    assert not glocal_estimate(_noisy_modal(0)).degenerate


def test_rank_rules():
    H = _noisy_modal(2, q=30, tau=12)  # q > tau: the centred snapshots have rank tau - 1 = 11
    full = hankel_dmd(H)
    assert full.rank_rule == "full" and full.rank == 11
    over = hankel_dmd(H, rank_rule="overdetermined")
    assert over.rank == 12 - 3  # r + 1 coefficients per row from tau - 1 = 11 equations, one to spare
    oht = hankel_dmd(H, rank_rule="oht")
    assert 1 <= oht.rank < full.rank and oht.rank_rule == "oht" and over.rank_rule == "overdetermined"
    # without the constant: r coefficients per row from 11 equations, one to spare; nothing is centred
    plain = hankel_dmd(H, rank_rule="overdetermined", constant=False)
    assert plain.rank == 11 - 1 and bool((plain.mean == 0).all()) and bool((plain.c == 0).all())
    for name in ("A", "c", "U", "mean", "singular_values", "last"):
        assert getattr(plain, name).dtype == F64, name
    assert hankel_dmd(H, rank=3, rank_rule="overdetermined").rank == 3
    with pytest.raises(ValueError, match="rank_rule"):
        hankel_dmd(H, rank_rule="magic")
    with pytest.raises(ValueError, match="rank"):
        hankel_dmd(H, rank=0)
    with pytest.raises(ValueError, match="rank"):
        hankel_dmd(H, rank=True)  # a bool is not a rank


def test_optimal_hard_threshold_uses_gavish_donohos_omega():
    """omega(beta) ~ 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43 (Gavish & Donoho 2014, eq. 5): 2.86 for a
    square matrix, 1.834375 for aspect ratio 1/4; the rank counts singular values above omega * median."""
    ones = [1.0] * 4
    assert optimal_hard_threshold_rank(torch.tensor([10.0, 2.9, 2.8] + ones, dtype=F64), 7, 7) == 2
    assert optimal_hard_threshold_rank(torch.tensor([10.0, 2.87, 2.85] + ones, dtype=F64), 7, 7) == 2
    assert optimal_hard_threshold_rank(torch.tensor([10.0, 1.84, 1.83] + ones, dtype=F64), 2, 8) == 2
    assert optimal_hard_threshold_rank(torch.tensor([10.0, 1.84, 1.83] + ones, dtype=F64), 8, 2) == 2
    assert optimal_hard_threshold_rank(torch.tensor([1.0, 1.0, 1.0], dtype=F64), 3, 3) == 1  # at least one
    assert optimal_hard_threshold_rank(torch.zeros(3, dtype=F64), 3, 3) == 0
    assert optimal_hard_threshold_rank(torch.tensor([3.0], dtype=F64), 1, 5) == 1  # one nonzero value: kept
    assert optimal_hard_threshold_rank(torch.zeros(0, dtype=F64), 0, 5) == 0


def test_growing_share_is_zero_without_growing_modes_and_one_when_only_they_move():
    fit = hankel_dmd(_noisy_modal(0))
    assert fit.rank > 0 and float(fit.eigenvalues.abs().max()) < 1
    assert growing_share(fit, torch.zeros(fit.rank, dtype=F64)) == 0.0
    t = torch.arange(1, 21, dtype=F64)
    grow = hankel_dmd(2.0 + 1e-3 * 1.2**t)  # one growing mode and the constant
    assert grow.rank == 1 and float(grow.eigenvalues.abs().max()) == pytest.approx(1.2, rel=1e-10)
    ystar = torch.linalg.solve(torch.eye(1, dtype=F64) - grow.A, grow.c)
    assert growing_share(grow, ystar) == pytest.approx(1.0, abs=1e-12)


def test_agrees_with_pydmd_dmdc_with_a_constant_input():
    """Our model is PyDMD's DMDc with u = 1: on an exactly modal system both give the limit and the horizon."""
    pydmd = pytest.importorskip("pydmd")
    import numpy as np

    from glocal.extract import pydmd_dmdc_estimate

    H, tau, limit, _ = _system_sequence(4, 3, 3, 1)
    G = H[:tau].numpy().T
    d = pydmd.DMDc(svd_rank=-1, svd_rank_omega=-1)  # PyDMD's public API, independently of our adapter
    d.fit(G, np.ones((1, tau - 1)))
    Ur, At = d.basis, d.operator.as_numpy_array
    z = np.linalg.solve(np.eye(At.shape[0]) - At, Ur.T @ d.B[:, 0])
    ours = glocal_estimate(H[:tau]).value
    assert _rel(torch.as_tensor(Ur @ z), ours) <= 1e-9
    assert _rel(ours, limit) <= 1e-9
    peer = pydmd_dmdc_estimate(H[:tau], ["limit", "horizon"], 7)
    assert _rel(peer["limit"][0], ours) <= 1e-9 and not peer["limit"][1]
    assert _rel(peer["horizon"][0], H[tau - 1 + 7]) <= 1e-9


# ---------------------------------------------------------------------------- robust and auto (issue 12)
def _shared_rate_sequence(seed: int, q: int, lam: float, length: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """h_t = a + lam^t b, t = 1..length: a level and one decay rate shared by all q coordinates."""
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(q, generator=g, dtype=F64), torch.randn(q, generator=g, dtype=F64)
    t = torch.arange(1, length + 1, dtype=F64)[:, None]
    return a + lam**t * b, a, b


@pytest.mark.parametrize("tau", [6, 25, 80])
@pytest.mark.parametrize("index", [0, 17, 41, 59])
def test_shared_rate_fit_recovers_level_and_rate_exactly(tau, index):
    lam = float(shared_rate_grid(tau)[index])
    H, a, b = _shared_rate_sequence(tau + index, 5, lam, tau + 30)
    fit = shared_rate_fit(H[:tau])
    assert fit.rate == lam and fit.tau == tau
    assert fit.residual <= 1e-7  # root of a relative squared norm: float64 round-off is ~1e-8
    assert _rel(fit.level, a) <= 1e-9 and _rel(fit.amplitude, b) <= 1e-9
    for n in (0, 7, 30):
        assert _rel(fit.predict(n), H[tau - 1 + n]) <= 1e-10
    assert int(torch.argmin(fit.residuals)) == index


def test_shared_rate_grid_and_fit_arguments():
    grid = shared_rate_grid(100)
    assert grid.shape == (60,) and grid.dtype == F64 and bool((grid[1:] > grid[:-1]).all())
    assert float(grid[0]) == pytest.approx(1 - 1 / 1.05) and float(grid[-1]) == pytest.approx(1 - 1 / 100)
    assert shared_rate_grid(50, n_rates=7).shape == (7,)
    with pytest.raises(ValueError, match="n_rates"):
        shared_rate_grid(10, n_rates=0)
    with pytest.raises(ValueError, match="min_timescale"):
        shared_rate_grid(10, min_timescale=1.0)
    with pytest.raises(ValueError, match="tau=2"):
        shared_rate_fit(torch.ones(2, 3, dtype=F64))


def test_robust_estimate_is_exact_when_kappa_is_one():
    """A slow shared rate: the first half's fit (rates only up to time scale tau/2) under-predicts the move,
    the unclipped shrinkage exceeds 1, kappa = 1, and the estimate is the exact h_{tau+n}."""
    tau, n = 40, 60
    lam = float(shared_rate_grid(tau)[-2])
    H, _, _ = _shared_rate_sequence(3, 6, lam, tau + n)
    est = glocal_estimate(H[:tau], estimator="robust", steps_ahead=n)
    d = est.diagnostics
    assert not est.fallback, est.reason
    assert d["kappa_raw"] > 1 and d["kappa"] == 1.0
    assert d["rate"] == lam and d["spectral_radius"] == lam and d["residual"] <= 1e-7
    assert d["timescale"] == pytest.approx(1.0 / (1.0 - lam), rel=1e-12)
    assert d["eigenvalues"].dtype == torch.complex128 and d["eigenvalues"].tolist() == [complex(lam, 0)]
    assert _rel(est.value, H[tau - 1 + n]) <= 1e-10
    assert _rel(H[tau - 1], H[tau - 1 + n]) > 0.1  # the local hypergradient is far off


def test_robust_estimate_is_local_when_the_first_half_model_is_useless():
    """The first half decays along b; then the trajectory turns and moves along b + c: the first half's model
    predicts a move against the actual one, kappa = 0, and the estimate is h_tau."""
    tau, tb = 30, 15
    t = torch.arange(1, tau + 1, dtype=F64)[:, None]
    b, c = torch.tensor([1.0, 0.0, 0.0], dtype=F64), torch.tensor([0.0, 1.0, 0.0], dtype=F64)
    H = 2.0 + 0.8 ** torch.clamp(t, max=tb) * b + torch.clamp(t - tb, min=0) * 0.05 * (b + c)
    est = glocal_estimate(H, estimator="robust", steps_ahead=50)
    d = est.diagnostics
    assert not est.fallback, est.reason
    assert d["kappa"] == 0.0 and d["kappa_raw"] <= 0.0
    assert torch.equal(est.value, H[-1])
    assert d["backtest_robust"] == pytest.approx(d["backtest_local"])
    # the ungated shared-rate forecast differs: the gate is what returns the local hypergradient
    assert d["backtest_shared_rate"] > d["backtest_local"]
    assert backtest_shrinkage(torch.zeros(3, dtype=F64), c) == (0.0, 0.0)


@pytest.mark.parametrize("estimator", ["robust", "auto"])
def test_robust_and_auto_run_in_float64_and_return_the_input_dtype(estimator):
    H = _noisy_modal(4, q=6, tau=40)
    for dt in (torch.float32, torch.float16, torch.bfloat16):
        x = H.to(dt)
        est = glocal_estimate(x, estimator=estimator, steps_ahead=50)
        assert est.value.dtype == dt
        fit64 = glocal_estimate(x.double(), estimator=estimator, steps_ahead=50)
        assert torch.equal(est.value, fit64.value.to(dt))
        # every number of the fit (backtest errors included) is the float64 fit's, bit for bit
        for key, v in fit64.diagnostics.items():
            if isinstance(v, float):
                assert est.diagnostics[key] == v or math.isnan(v) and math.isnan(est.diagnostics[key]), (dt, key)
    lst = glocal_estimate(H.tolist(), estimator=estimator, steps_ahead=50)
    assert lst.value.dtype == F64 and torch.equal(lst.value, glocal_estimate(H, estimator=estimator, steps_ahead=50).value)


@pytest.mark.parametrize("estimator", ["robust", "auto"])
@pytest.mark.parametrize("exponent", [-12, -6, 6, 12])
def test_robust_and_auto_are_scale_equivariant(estimator, exponent):
    """Seeds whose shrinkage lies strictly inside (0, 1) or at 1, and whose auto choice differs: c * H gives c times
    the estimate, the same rate, kappa and choice."""
    c = 10.0**exponent
    kappas, choices = set(), set()
    for seed in (1, 2, 3, 4):
        H = _noisy_modal(seed)
        if estimator == "auto":
            H = H + 0.02 * torch.randn(H.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
        a = glocal_estimate(H, estimator=estimator, steps_ahead=40)
        b = glocal_estimate(c * H, estimator=estimator, steps_ahead=40)
        assert _rel(b.value / c, a.value) <= 1e-10
        assert a.diagnostics["rate"] == b.diagnostics["rate"]
        assert a.diagnostics["kappa"] == pytest.approx(b.diagnostics["kappa"], rel=1e-10)
        assert b.diagnostics["backtest_local"] == pytest.approx(c * a.diagnostics["backtest_local"], rel=1e-10)
        kappas.add(round(a.diagnostics["kappa"], 3))
        choices.add(a.diagnostics.get("choice"))
    assert len(kappas) >= 2  # the cases exercise the shrinkage, not only kappa = 0
    if estimator == "auto":
        assert choices == {"horizon", "robust"}


@pytest.mark.parametrize("estimator", ["robust", "auto"])
def test_robust_and_auto_need_steps_ahead(estimator):
    with pytest.raises(ValueError, match="steps_ahead"):
        glocal_estimate(torch.rand(20, 2, dtype=F64), estimator=estimator)
    with pytest.raises(ValueError, match="steps_ahead"):
        glocal_estimate(torch.rand(20, 2, dtype=F64), estimator=estimator, steps_ahead=-1)


@pytest.mark.parametrize("estimator", ["robust", "auto"])
def test_robust_and_auto_are_finite_and_guarded(estimator):
    import json

    # too short for the backtest: the local hypergradient, flagged as a fallback with the reason
    short = torch.rand(5, 3, dtype=F64)
    est = glocal_estimate(short, estimator=estimator, steps_ahead=10)
    assert est.fallback and "backtest" in est.reason and torch.equal(est.value, short[-1])
    # constant and zero trajectories are their own forecast
    for traj in (torch.full((12, 3), 2.5, dtype=F64), torch.zeros(12, 3, dtype=F64)):
        est = glocal_estimate(traj, estimator=estimator, steps_ahead=10)
        assert not est.fallback and torch.equal(est.value, traj[-1])
    # an exploding trajectory: finite, inside the norm guard
    boom = (2.0 ** torch.arange(30, dtype=F64))[:, None] * torch.tensor([1.0, -1.0], dtype=F64)
    est = glocal_estimate(boom, estimator=estimator, steps_ahead=100)
    assert _finite(est) and float(torch.linalg.norm(est.value)) <= 10.0 * float(torch.linalg.norm(boom[-1]))
    # a forecast far beyond everything seen falls back, saying why
    t = torch.arange(1, 31, dtype=F64)[:, None]
    slow = (1.0 - 0.9**t) * torch.tensor([1.0, 2.0], dtype=F64)  # level 1.04x the largest observed norm
    est = glocal_estimate(slow, estimator=estimator, steps_ahead=300, max_norm_ratio=1.0)
    assert est.fallback and est.reason.startswith("norm guard:") and torch.equal(est.value, slow[-1])
    assert est.diagnostics["backtest_reason"].startswith("norm guard: shared-rate forecast norm")  # the first half too
    assert not glocal_estimate(slow, estimator=estimator, steps_ahead=300, max_norm_ratio=1.1).fallback
    rec = glocal_estimate(_noisy_modal(1), estimator=estimator, steps_ahead=20).to_record()
    text = json.dumps(rec)
    for key in ("kappa", "kappa_raw", "rate", "backtest_local", "backtest_shared_rate", "backtest_robust"):
        assert key in rec, key
    assert "NaN" not in text and rec["estimator"] == estimator
    if estimator == "auto":
        assert rec["choice"] in ("horizon", "robust") and "backtest_horizon" in rec


def test_auto_picks_horizon_on_an_exact_modal_system():
    """Distinct modes, no noise: the first half's DMD fit predicts h_tau exactly, the shared-rate fit cannot."""
    H, tau, limit, _ = _system_sequence(6, 3, 3, 1, extra=80)
    tau = 2 * tau  # the first half alone must determine the DMD model
    n = 40
    auto = glocal_estimate(H[:tau], estimator="auto", steps_ahead=n)
    d = auto.diagnostics
    assert d["choice"] == "horizon", d
    assert d["backtest_horizon"] <= 1e-8 * d["backtest_local"] < d["backtest_robust"]
    hz = glocal_estimate(H[:tau], estimator="horizon", steps_ahead=n)
    assert torch.equal(auto.value, hz.value) and auto.fallback == hz.fallback
    assert _rel(auto.value, H[tau - 1 + n]) <= 1e-8
    assert d["kappa"] >= 0 and "rate" in d  # the robust diagnostics are kept
    assert d["robust_fallback"] is False and d["robust_residual"] >= 0 and d["residual"] == hz.diagnostics["residual"]


def test_auto_picks_robust_on_a_noisy_shared_rate_trajectory():
    """A shared decay plus noise: the full-rank DMD fit regresses noise, the shared-rate fit does not."""
    g = torch.Generator().manual_seed(11)
    tau, n, q = 50, 100, 8
    H, _, _ = _shared_rate_sequence(11, q, 0.95, tau + n)
    noisy = H[:tau] + 0.02 * torch.randn(tau, q, generator=g, dtype=F64)
    auto = glocal_estimate(noisy, estimator="auto", steps_ahead=n)
    d = auto.diagnostics
    assert d["choice"] == "robust", d
    assert d["backtest_robust"] < d["backtest_horizon"]
    robust = glocal_estimate(noisy, estimator="robust", steps_ahead=n)
    assert torch.equal(auto.value, robust.value)
    target = H[tau - 1 + n]
    assert _rel(robust.value, target) < _rel(glocal_estimate(noisy, estimator="horizon", steps_ahead=n).value, target)
    assert _rel(robust.value, target) < 0.5 * _rel(noisy[-1], target)


# ---------------------------------------------------------------------------- contracts the mutation run found unchecked
def test_validate_trajectory_keeps_floating_array_dtypes():
    """A numpy float32 array stays float32 (only lists of Python floats are read as float64)."""
    import numpy as np

    assert validate_trajectory(np.ones((4, 2), dtype=np.float32)).dtype == torch.float32
    assert validate_trajectory(np.ones((4, 2), dtype=np.float64)).dtype == F64
    assert validate_trajectory(np.ones((4, 2), dtype=np.int32)).dtype == F64
    assert validate_trajectory([[1.0, 2.0], [3.0, 4.0]]).dtype == F64
    assert validate_trajectory([1, 2, 3]).dtype == F64


def test_non_finite_message_lists_five_locations_and_counts_the_rest():
    traj = torch.ones(8, 3, dtype=F64)
    traj[1:8, 2] = float("nan")  # 7 entries
    with pytest.raises(ValueError) as err:
        validate_trajectory(traj)
    msg = str(err.value)
    assert msg.startswith("trajectory has 7 non-finite") and msg.count("(step") == 5 and msg.endswith("and 2 more")
    traj[1:3, 2] = 0.0  # exactly 5: all listed, nothing more
    with pytest.raises(ValueError) as err:
        validate_trajectory(traj)
    assert str(err.value).count("(step") == 5 and str(err.value).endswith("(step 7, coordinate 2)")


def test_energy_rank_is_the_fewest_modes_holding_the_fraction():
    # eight points on a circle: two equal singular values, the first mode holds exactly half the energy
    k = torch.arange(8, dtype=F64)
    circle = torch.stack([torch.cos(2 * math.pi * k / 8), torch.sin(2 * math.pi * k / 8)], dim=1)
    assert hankel_dmd(circle, energy=0.5).rank == 1
    assert hankel_dmd(circle, energy=0.5 + 1e-9).rank == 2
    # a generic trajectory: the count from an independent SVD of the centred snapshots
    H = _noisy_modal(5, q=6, tau=30)
    s = torch.linalg.svdvals(H - H.mean(dim=0))
    frac = torch.cumsum(s**2, 0) / torch.sum(s**2)
    for energy in (0.5, 0.9, 0.99, 0.9999):
        want = int((frac < energy).sum()) + 1
        assert hankel_dmd(H, energy=energy).rank == want, energy


def test_three_snapshots_fit_a_geometric_sequence_exactly():
    """Three steps are two transitions: enough for one mode and the constant (the fewest the fit accepts)."""
    t = torch.arange(1, 4, dtype=F64)
    h = 2.0 + 3.0 * 0.5**t
    est = glocal_estimate(h)
    assert not est.fallback and est.diagnostics["rank"] == 1, est.reason
    assert abs(float(est.value) - 2.0) <= 1e-12 * 2.0
    assert est.diagnostics["spectral_radius"] == pytest.approx(0.5, abs=1e-12)
    hz = glocal_estimate(h, estimator="horizon", steps_ahead=4)
    assert abs(float(hz.value) - (2.0 + 3.0 * 0.5**7)) <= 1e-12 * 2.0


def test_trivial_fits_are_float64_and_keep_their_fields():
    """Too few snapshots, and a constant trajectory: rank 0, a NaN residual for the unfitted model, every
    tensor in float64, the rank rule passed through."""
    for traj in (torch.ones(2, 3, dtype=torch.float32), torch.full((6, 3), 0.5, dtype=torch.float32)):
        fit = hankel_dmd(traj, rank_rule="oht")
        assert fit.rank == 0 and fit.rank_rule == "oht" and fit.q == 3 and fit.delay == 1
        assert fit.U.shape == (3, 0) and fit.last.shape == (0,) and fit.A.shape == (0, 0) and fit.c.shape == (0,)
        for name in ("A", "c", "U", "mean", "singular_values", "last"):
            assert getattr(fit, name).dtype == F64, name
    assert math.isnan(hankel_dmd(torch.ones(2, 3), rank_rule="oht").residual)


def test_fit_residual_is_the_relative_least_squares_misfit():
    """A two-mode scalar sequence fitted with one delay: the residual equals the closed-form 1-D regression's,
    and the estimator reports the fit's residual."""
    t = torch.arange(1, 13, dtype=F64)
    h = 1.0 + 0.8**t + 0.3 * (-0.5) ** t
    x0, x1 = h[:-1] - h[:-1].mean(), h[1:] - h[1:].mean()
    a = float(x0 @ x1) / float(x0 @ x0)
    want = float(torch.linalg.norm(x1 - a * x0) / torch.linalg.norm(x1))
    fit = hankel_dmd(h)
    assert fit.rank == 1 and want > 0.05
    assert fit.residual == pytest.approx(want, rel=1e-12)
    assert float(fit.A[0, 0]) == pytest.approx(a, rel=1e-12)
    assert glocal_estimate(h).diagnostics["residual"] == fit.residual


def test_fixed_point_condition_closed_forms():
    """max(sigma_max(I - A), 1) / sigma_min(I - A)."""
    assert fixed_point_condition(torch.tensor([[0.5]], dtype=F64)) == pytest.approx(2.0, rel=1e-15)
    assert fixed_point_condition(torch.tensor([[-3.0]], dtype=F64)) == pytest.approx(1.0, rel=1e-15)
    assert fixed_point_condition(torch.diag(torch.tensor([0.5, -2.0], dtype=F64))) == pytest.approx(6.0, rel=1e-15)
    assert fixed_point_condition(torch.diag(torch.tensor([0.9, 0.2], dtype=F64))) == pytest.approx(10.0, rel=1e-13)
    assert fixed_point_condition(torch.eye(2, dtype=F64)) == float("inf")


def test_shared_rate_fit_of_a_constant_trajectory_has_zero_residual():
    fit = shared_rate_fit(torch.full((10, 3), -1.5, dtype=F64))
    assert fit.residual == 0.0 and bool((fit.residuals == 0).all())
    torch.testing.assert_close(fit.level, torch.full((3,), -1.5, dtype=F64), rtol=1e-15, atol=0)
    assert bool((fit.amplitude == 0).all())
    with pytest.raises(ValueError, match="n_rates"):
        shared_rate_grid(10, n_rates=True)  # a bool is not a count


def test_backtest_shrinkage_reads_any_floating_dtype():
    """kappa = clip(<d_m, d_r> / ||d_m||^2, 0, 1): here 10 / 5 = 2, clipped to 1; the same in float32 and float16."""
    dm = torch.tensor([1.0, 2.0], dtype=F64)
    for dt in (F64, torch.float32, torch.float16):
        assert backtest_shrinkage(dm, torch.tensor([2.0, 4.0], dtype=dt)) == (1.0, 2.0)
        assert backtest_shrinkage(dm.to(dt), torch.tensor([0.5, 0.0], dtype=F64)) == (0.1, 0.1)


def test_diagnostics_are_complete_on_every_path():
    """tau on every path; rank 0 when the delay is too long; the robust estimator's one mode, its undefined
    condition number and kappa = 0 when the window is too short for the backtest; auto's backtest NaN there."""
    traj = _noisy_modal(3, q=3, tau=20)
    for estimator in ("limit", "horizon", "robust", "auto", "local"):
        for x in (traj, traj[:2], torch.full((12, 3), 2.5, dtype=F64)):  # fitted, too short, constant
            est = glocal_estimate(x, estimator=estimator, steps_ahead=5)
            d = est.diagnostics
            assert d["tau"] == x.shape[0] and d["degenerate"] is False and d["growing"] is False, (estimator, d)
            assert d["eigenvalues"].dtype == torch.complex128, (estimator, d)
            assert isinstance(est.fallback, bool)
            if estimator != "local":
                assert "condition_number" in d and "residual" in d, (estimator, d)
    # the robust diagnostics have the same keys whether or not the window allows the backtest
    assert set(glocal_estimate(traj[:5], estimator="robust", steps_ahead=5).diagnostics) == set(
        glocal_estimate(traj, estimator="robust", steps_ahead=5).diagnostics)
    # tau = 6: the shortest window with a backtest (its first half has 3 rows)
    d6 = glocal_estimate(traj[:6], estimator="auto", steps_ahead=5).diagnostics
    assert math.isfinite(d6["backtest_horizon"]) and d6["backtest_horizon_fallback"] in (True, False)
    assert glocal_estimate(torch.full((12, 3), 2.5, dtype=F64), estimator="robust", steps_ahead=5).diagnostics[
        "constant"] is True
    assert glocal_estimate(traj).diagnostics["scale"] == float(torch.linalg.norm(traj, dim=1).max())
    long_delay = glocal_estimate(traj[:2], delay=3)
    assert long_delay.fallback and long_delay.diagnostics["rank"] == 0 and long_delay.diagnostics["tau"] == 2
    for estimator in ("robust", "auto"):
        for x in (traj, traj[:5]) if estimator == "robust" else (traj[:5],):  # auto may choose horizon on traj
            d = glocal_estimate(x, estimator=estimator, steps_ahead=5).diagnostics
            assert d["rank"] == 1 and d["delay"] == 1 and math.isnan(d["condition_number"]), (estimator, d)
        short = glocal_estimate(traj[:5], estimator=estimator, steps_ahead=5)
        assert short.fallback and short.diagnostics["kappa"] == 0.0
    d = glocal_estimate(traj[:5], estimator="auto", steps_ahead=5).diagnostics
    assert isinstance(d["backtest_horizon"], float) and math.isnan(d["backtest_horizon"])


def test_horizon_refuses_to_freeze_growing_modes_without_a_fixed_point():
    """h_t = t + 1e-3 1.1^t: a growing mode and a double eigenvalue 1 (I - A singular). Horizon clips the
    growing mode but has no fixed point to freeze it about: it falls back and says so."""
    t = torch.arange(1, 31, dtype=F64)
    h = t + 1e-3 * 1.1**t
    hz = glocal_estimate(h, delay=3, estimator="horizon", steps_ahead=12)
    assert hz.fallback and hz.reason.startswith("growing modes with an ill-conditioned fit"), hz.reason
    assert hz.diagnostics["n_clipped"] >= 1 and hz.diagnostics["condition_number"] > 1e8
    assert float(hz.value) == float(h[-1])


def test_record_reports_reason_and_the_float64_norm():
    """to_record: the reason as given, and the norm of the value computed in float64 (not in bfloat16)."""
    H = _noisy_modal(2)
    est = glocal_estimate(H.to(torch.bfloat16), estimator="horizon", steps_ahead=30)
    rec = est.to_record()
    assert rec["norm"] == float(torch.linalg.norm(est.value.double()))
    t = torch.arange(1, 11, dtype=F64)
    guarded = glocal_estimate((1.0 - 0.999**t)[:, None] * torch.tensor([1.0, 2.0], dtype=F64))
    assert guarded.fallback and guarded.to_record()["reason"] == guarded.reason and guarded.reason.startswith("norm guard:")


def test_fit_options_reach_every_fit():
    """rtol reaches the fit of limit and horizon; auto's first-half horizon backtest uses the same options."""
    H = _noisy_modal(6, q=5, tau=30)
    cut = hankel_dmd(H, rtol=1e-2).rank
    assert cut < hankel_dmd(H).rank
    for estimator in ("limit", "horizon"):
        assert glocal_estimate(H, estimator=estimator, rtol=1e-2, steps_ahead=5).diagnostics["rank"] == cut
    tb = H.shape[0] // 2
    for opts in ({"rank": 1}, {"delay": 2}, {"rtol": 1e-2}):
        d = glocal_estimate(H, estimator="auto", steps_ahead=5, **opts).diagnostics
        half = glocal_estimate(H[:tb], estimator="horizon", steps_ahead=H.shape[0] - tb, **opts)
        assert d["backtest_horizon"] == float(torch.linalg.norm(half.value - H[-1])), opts
        plain = glocal_estimate(H[:tb], estimator="horizon", steps_ahead=H.shape[0] - tb)
        assert not torch.equal(half.value, plain.value), opts  # the option matters here


def test_direction_is_the_linear_part_of_point():
    """point(y + v) - point(y) = direction(v): the map from coordinates back to a hypergradient is affine."""
    fit = hankel_dmd(_noisy_modal(4, q=3), delay=2)
    g = torch.Generator().manual_seed(0)
    y, v = torch.randn(fit.rank, generator=g, dtype=F64), torch.randn(fit.rank, generator=g, dtype=F64)
    torch.testing.assert_close(fit.point(y + v) - fit.point(y), fit.direction(v), rtol=1e-12, atol=1e-15)
    assert fit.direction(v).shape == (3,)
