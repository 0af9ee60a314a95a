"""Tests for glocal.koopman: exact recovery on known stable linear systems, robustness and guards."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from glocal.koopman import glocal_estimate, hankel_dmd, validate_trajectory

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
    for _ in range(50):
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
        Phi = torch.cat([G[:, :-1], torch.ones(1, m - 1, dtype=F64)])
        if float(torch.linalg.cond(Phi)) < 1e4:
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
    assert torch.equal(est.value, H[tau - 1]) and not est.fallback


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


def test_zero_sequence_falls_back():
    traj = torch.zeros(10, 2, dtype=F64)
    est = glocal_estimate(traj)
    assert _finite(est) and est.fallback
    assert "rank 0" in est.reason and est.diagnostics["rank"] == 0
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
    """h_t = t: a double eigenvalue 1, I - A singular: falls back to the local value, says why."""
    traj = torch.arange(1, 21, dtype=F64)[:, None] * torch.tensor([1.0, 0.5], dtype=F64)
    est = glocal_estimate(traj)
    assert _finite(est) and est.fallback
    assert "cond" in est.reason or "norm" in est.reason, est.reason
    assert torch.equal(est.value, traj[-1])
    assert est.diagnostics["condition_number"] > 1e8 or "norm" in est.reason


def test_norm_guard():
    """A slowly converging sequence whose limit is far beyond everything seen falls back."""
    t = torch.arange(1, 11, dtype=F64)
    traj = (1.0 - 0.999**t)[:, None] * torch.tensor([1.0, 2.0], dtype=F64)
    est = glocal_estimate(traj)
    assert est.fallback and "exceeds" in est.reason
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
