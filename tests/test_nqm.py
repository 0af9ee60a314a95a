"""Tests for glocal.nqm: the noisy quadratic model of Wu et al. (2018).

The second-moment recursion against Monte Carlo over many noise draws; its closed form (matrix
powers by doubling) against the step recursion; the exact hypergradient from every engine in
both modes against each other, finite differences and the closed form's autograd gradient; the
answer key against grids; the short-horizon bias; the task's interface with the runner.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.func import vmap

from glocal.config import ConfigError
from glocal.dynamics import HyperBlock, HyperSpace
from glocal.hypergrad import (
    finite_difference_hypergradient,
    forward_trajectory,
    reverse_hypergradient,
    reverse_window_hypergradients,
    unroll,
)
from glocal.nqm import (
    NoisyQuadratic,
    NQMBatch,
    NQMDynamics,
    build_nqm_task,
    greedy_schedule,
    horizon_optimal_lr,
    local_hypergradient_descent,
    optimal_hyperparameters,
    phase_lengths,
    short_horizon_bias,
)


def rel(a, b) -> float:
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    return float((a - b).norm() / b.norm())


def small_task(mode: str, *, dim: int = 64, steps: int = 40, phases: int = 2, tune=("lr", "momentum"), **kw):
    cfg = {"dim": dim, "steps": steps, "phases": phases, "tune": list(tune), "mode": mode, "batch_size": 4.0,
           "optimizer": {"lr": 0.3, "momentum": 0.6}, **kw}
    return build_nqm_task(cfg, seed=0)


# ---------------------------------------------------------------------------- the model
def test_phase_lengths_split_the_steps():
    assert phase_lengths(10, 1) == [10]
    assert phase_lengths(10, 3) == [4, 3, 3]
    assert sum(phase_lengths(1000, 7)) == 1000
    with pytest.raises(ValueError, match="phases"):
        phase_lengths(3, 4)


def test_second_moments_match_monte_carlo():
    """E theta^2, E theta v, E v^2 after T sampled steps (2000 noise draws, through the sampled
    step itself) agree with the expected-mode recursion within 4 Monte Carlo standard errors,
    and the realized loss's mean with the expected loss."""
    R, T = 2000, 25
    exp_task = small_task("expected", dim=24, steps=T, phases=2)
    smp_task = small_task("sampled", dim=24, steps=T, phases=2)
    n = exp_task.problem.dim
    phi = exp_task.init_phi()
    S = unroll(exp_task.dynamics.step, exp_task.init_state(), phi, exp_task.batches(0, T))
    exact = S.reshape(3, n)

    def one_step(state, noise, t):
        return smp_task.dynamics.step(state, phi, NQMBatch(t, noise))

    states = smp_task.init_state().expand(R, -1).clone()
    for t in range(T):
        noise = torch.stack([smp_task.batch(t, order=k).noise for k in range(R)])
        states = vmap(one_step, in_dims=(0, 0, None))(states, noise, t)
    theta, v = states[:, :n], states[:, n:]
    for k, sample in enumerate((theta * theta, theta * v, v * v)):
        mean, se = sample.mean(0), sample.std(0) / math.sqrt(R)
        z = (mean - exact[k]) / se
        assert float(z.abs().max()) < 4.0, f"moment {k}: max |z| = {float(z.abs().max()):.2f}"
    losses = vmap(lambda s: smp_task.dynamics.val_fn(s, phi))(states)
    z = (losses.mean() - exp_task.dynamics.val_fn(S, phi)) / (losses.std() / math.sqrt(R))
    assert abs(float(z)) < 4.0
    # The noise really is there: the spread is far above zero.
    assert float(losses.std()) > 1e-3 * float(losses.mean())


@pytest.mark.parametrize("scale", [1e-12, 1.0, 1e12])
def test_closed_form_matches_step_recursion(scale):
    """The matrix-power closed form of a 3-phase schedule equals the step recursion (and the
    per-step schedule evaluator) to 1e-12, for theta_0 scaled by 1e-12 and 1e12 as well."""
    p = NoisyQuadratic(300, batch_size=3.0, theta0_scale=scale, theta0_seed=4)
    hyper = HyperSpace([HyperBlock("lr", 3, init=[0.9, 0.4, 0.05]), HyperBlock("momentum", 1, init=0.7)])
    T = 50
    dyn = NQMDynamics(p, "expected", T, hyper, phases=3)
    phi = hyper.init_phi(torch.float64)
    S = unroll(dyn.step, dyn.init_state(), phi, [NQMBatch(t) for t in range(T)]).reshape(3, -1)
    closed = p.expected_moments([0.9, 0.4, 0.05], 0.7, phase_lengths(T, 3))
    for k in range(3):
        assert rel(closed[k], S[k]) < 1e-12, k
    loss = float(dyn.val_fn(S.reshape(-1), phi))
    assert float(p.expected_loss([0.9, 0.4, 0.05], 0.7, T)) == pytest.approx(loss, rel=1e-12)
    per_step = [0.9] * 17 + [0.4] * 17 + [0.05] * 16
    assert phase_lengths(T, 3) == [17, 17, 16]
    assert p.expected_loss_per_step(per_step, 0.7) == pytest.approx(loss, rel=1e-12)


def test_closed_form_batches_over_hyperparameters():
    p = NoisyQuadratic(100)
    lrs = torch.tensor([[0.1], [0.5], [1.0]], dtype=torch.float64)
    batched = p.expected_loss(lrs, torch.tensor([[0.0], [0.5], [0.9]], dtype=torch.float64), 30)
    single = [float(p.expected_loss(a, b, 30)) for a, b in ((0.1, 0.0), (0.5, 0.5), (1.0, 0.9))]
    assert batched.shape == (3,)
    torch.testing.assert_close(batched, torch.tensor(single, dtype=torch.float64), rtol=1e-13, atol=0)


@pytest.mark.parametrize("mode", ["expected", "sampled"])
def test_engines_agree(mode):
    """Forward, reverse (plain, sqrt checkpoints, graph) and reverse-window hypergradients agree
    to 1e-10 in float64, finite differences to 1e-6; in expected mode also the closed form's
    autograd gradient. A 3-phase schedule with tuned momentum, from a mid-training state."""
    task = small_task(mode, dim=200, steps=60, phases=3)
    step, val = task.dynamics.step, task.val_fn()
    phi = task.init_phi()
    s = unroll(step, task.init_state(), phi, task.batches(0, 10))
    batches = task.batches(10, 60)  # the window crosses the phase boundaries at 20 and 40
    fwd = forward_trajectory(step, val, s, phi, batches)
    h = fwd.h[-1]
    assert float(h.norm()) > 1e-3
    assert bool((h[:3] != 0).all())  # every phase's learning rate matters
    for ck in (None, "sqrt", "graph"):
        assert rel(reverse_hypergradient(step, val, s, phi, batches, checkpoint=ck).h, h) < 1e-10, ck
    win = reverse_window_hypergradients(step, val, s, phi, batches, [5, 25, 50])
    for k, t in enumerate(win.steps):
        assert rel(win.h[k], fwd.h[t - 1]) < 1e-10
    fd = finite_difference_hypergradient(step, val, s, phi, batches, eps=1e-6)
    assert rel(fd, h) < 1e-6
    if mode == "expected":
        full = forward_trajectory(step, val, task.init_state(), phi, task.batches(0, 60), record=[60]).h[-1]
        p = phi.clone().requires_grad_(True)
        lrs = torch.exp(p[:3])
        loss = task.problem.expected_loss(lrs, torch.sigmoid(p[3]), 60)
        (g,) = torch.autograd.grad(loss, p)
        assert rel(g, full) < 1e-10


def test_float32_follows_float64():
    """float32 runs of both modes stay within 1e-4 of float64 over 300 steps."""
    for mode in ("expected", "sampled"):
        cfg = {"dim": 1000, "steps": 300, "mode": mode, "tune": ["lr"], "optimizer": {"lr": 0.5, "momentum": 0.5}}
        vals = []
        for dtype in (torch.float64, torch.float32):
            t = build_nqm_task(cfg, seed=0, dtype=dtype)
            s = unroll(t.dynamics.step, t.init_state(), t.init_phi(), t.batches(0, 300))
            assert s.dtype == dtype
            vals.append(float(t.val_fn()(s, t.init_phi())))
        assert vals[1] == pytest.approx(vals[0], rel=1e-4), mode


def test_sampled_noise_is_a_function_of_seed_order_and_step():
    t = small_task("sampled")
    a, b = t.batches(0, 8), t.batches(0, 8)
    assert all(torch.equal(x.noise, y.noise) for x, y in zip(a, b))
    assert torch.equal(t.batches(5, 8)[0].noise, a[5].noise)  # independent of where a window starts
    assert not torch.equal(t.batch(3, order=1).noise, a[3].noise)
    assert not torch.equal(a[3].noise, a[4].noise)
    other_seed = build_nqm_task({"dim": 64, "mode": "sampled", "steps": 40}, seed=1)
    assert not torch.equal(other_seed.batch(3).noise, a[3].noise)
    # The same noise gives bitwise the same training run; theta_0 does not depend on the run seed.
    s1 = unroll(t.dynamics.step, t.init_state(), t.init_phi(), a)
    s2 = unroll(t.dynamics.step, t.init_state(), t.init_phi(), t.batches(0, 8))
    assert torch.equal(s1, s2)
    assert torch.equal(other_seed.init_state()[:64], t.init_state()[:64])
    with pytest.raises(ValueError, match="noise"):
        t.dynamics.step(t.init_state(), t.init_phi(), NQMBatch(0, None))


def test_expected_mode_batches_carry_no_noise():
    t = small_task("expected")
    assert all(b.noise is None for b in t.batches(0, 5))
    assert [b.step for b in t.batches(3, 6)] == [3, 4, 5]
    assert [t.dynamics.phase(s) for s in (0, 19, 20, 39, 40, 100)] == [0, 0, 1, 1, 1, 1]


# ---------------------------------------------------------------------------- the answer key
def test_constant_optimum_against_grid():
    """The grid's best point is no better than the optimum, which lies within one grid cell of
    it; the gradient vanishes there. Learning rate only (momentum fixed) and with momentum."""
    p = NoisyQuadratic(300, batch_size=10.0)
    T = 100
    opt = optimal_hyperparameters(p, T, tune_momentum=False, momentum=0.5)
    assert opt.grad_norm < 1e-6 and not opt.at_limit
    log_a = torch.linspace(math.log(1e-3), math.log(p.stability_limit(0.5) * 0.999), 400, dtype=torch.float64)
    grid = p.expected_loss(torch.exp(log_a)[:, None], 0.5, T)
    j = int(torch.argmin(grid))
    assert float(grid[j]) >= opt.loss * (1 - 1e-12)
    assert abs(math.log(opt.lr[0]) - float(log_a[j])) <= float(log_a[1] - log_a[0])

    opt2 = optimal_hyperparameters(p, T, tune_momentum=True)
    assert opt2.grad_norm < 1e-6
    assert opt2.loss <= opt.loss * (1 + 1e-12)  # a free momentum can only help
    la = torch.linspace(math.log(1e-3), math.log(3.9), 60, dtype=torch.float64)
    mu = torch.linspace(0.02, 0.98, 49, dtype=torch.float64)
    A, M = torch.meshgrid(torch.exp(la), mu, indexing="ij")
    losses = torch.cat([p.expected_loss(A.reshape(-1)[i : i + 256, None], M.reshape(-1)[i : i + 256, None], T)
                        for i in range(0, A.numel(), 256)]).reshape(A.shape)
    losses = torch.where(A < 2 * (1 + M) / p.h_max, losses, torch.full_like(losses, math.inf))  # stable points
    assert float(losses.min()) >= opt2.loss * (1 - 1e-12)
    # With momentum the optimum lies on a flat ridge (alpha / (1 - beta) nearly constant), where a
    # 2-D grid's best point can sit cells away along the ridge; the cell check runs on the profile
    # min over lr (exact, checked against a grid above and in test_horizon_optimal_lr_against_grid).
    cell = 0.02
    moms = [0.70 + cell * k for k in range(15)]
    profile = [horizon_optimal_lr(p, T, momentum=b) for b in moms]
    k = min(range(len(moms)), key=lambda j: profile[j][1])
    assert profile[k][1] >= opt2.loss * (1 - 1e-12)
    assert abs(opt2.momentum - moms[k]) <= cell
    assert 0 < k < len(moms) - 1  # an interior optimum of the profile, not the edge of the grid


def test_schedule_optimum_no_worse_than_constant_and_decays():
    p = NoisyQuadratic(1000, batch_size=10.0)
    T = 300
    const = optimal_hyperparameters(p, T, tune_momentum=False, momentum=0.9)
    sched = optimal_hyperparameters(p, T, phases=4, tune_momentum=False, momentum=0.9)
    assert sched.loss <= const.loss
    assert sched.loss < 0.8 * const.loss  # a schedule pays off on the NQM
    assert all(a > b for a, b in zip(sched.lr, sched.lr[1:]))  # and it decays
    assert sched.grad_norm < 1e-6 and not sched.at_limit
    # The key's schedule really has that loss, by the dynamics the runner trains.
    task = build_nqm_task({"steps": T, "phases": 4, "tune": ["lr"], "optimizer": {"lr": 0.1, "momentum": 0.9}}, 0)
    s = unroll(task.dynamics.step, task.init_state(), sched.phi, task.batches(0, T))
    assert float(task.val_fn()(s, sched.phi)) == pytest.approx(sched.loss, rel=1e-10)
    assert task.expected_final_loss(sched.phi) == pytest.approx(sched.loss, rel=1e-12)


def test_schedule_stability_limit_is_reported():
    """For SGD schedules the stable optimum sits on the stability limit in its first phase (it is
    flagged); admitting unstable phases finds a lower loss."""
    p = NoisyQuadratic(300, batch_size=10.0)
    stable = optimal_hyperparameters(p, 100, phases=3, tune_momentum=False, momentum=0.0)
    assert stable.at_limit and stable.lr[0] == pytest.approx(2.0, rel=1e-3)
    free = optimal_hyperparameters(p, 100, phases=3, tune_momentum=False, momentum=0.0, stable=False)
    assert free.loss < stable.loss and free.lr[0] > 2.0 and not free.at_limit


def test_horizon_optimal_lr_against_grid():
    """The tau-step optimum over a constant lr, including a multimodal case (momentum 0.9, tau = 10)."""
    p = NoisyQuadratic(300, batch_size=10.0)
    for mom, tau in ((0.9, 10), (0.0, 1), (0.5, 1), (0.0, 30)):
        a, loss = horizon_optimal_lr(p, tau, momentum=mom)
        grid_a = torch.logspace(-4, math.log10(p.stability_limit(mom) * 0.999), 1500, dtype=torch.float64)
        grid = p.expected_loss(grid_a[:, None], mom, tau)
        if (mom, tau) == (0.9, 10):  # the hard case really has several local minima
            interior = (grid[1:-1] < grid[:-2]) & (grid[1:-1] < grid[2:])
            assert int(interior.sum()) >= 3
        assert float(grid.min()) >= loss * (1 - 1e-12), (mom, tau)
        assert loss == pytest.approx(float(p.expected_loss(a, mom, tau)), rel=1e-12)


def test_answer_key_of_task_is_cached_and_consistent():
    task = build_nqm_task({"steps": 100, "tune": ["lr", "momentum"]}, 0)
    key = task.answer_key()
    assert task.answer_key() is key and key.phases == 1
    assert task.answer_key(phases=3).loss <= key.loss
    assert task.expected_final_loss(key.phi) == pytest.approx(key.loss, rel=1e-12)
    rec = key.to_record()
    assert rec["lr"] == key.lr and rec["effective_lr"][0] == pytest.approx(key.lr[0] / (1 - key.momentum))
    assert key.initial_loss > key.loss


# ---------------------------------------------------------------------------- short-horizon bias
def test_short_horizon_bias():
    """Wu et al.'s finding, on SGD (n = 1000, h_i = 1/i, B = 10, T = 300): greedy tuning with a
    short horizon decays the learning rate far too fast. With tau = 1 it ends about 10x below the
    long-horizon optimum and its final expected loss is ~2x the optimum; the bias shrinks as tau
    grows, and tau = T recovers the optimum. Measured from theta_0, the tau-step optimal constant
    lr goes the other way: it is *larger* than the long-horizon one, since a short horizon does not
    see the noise floor that a large lr reaches later."""
    p = NoisyQuadratic(1000, batch_size=10.0)
    T = 300
    out = short_horizon_bias(p, T, [1, 30, T], momentum=0.0)
    a_opt = out["optimum"]["lr"][0]
    rows = {r["tau"]: r for r in out["rows"]}
    assert rows[1]["greedy_last_lr"] < a_opt / 5
    assert rows[1]["greedy_ratio"] > 1.5
    assert rows[1]["greedy_ratio"] > rows[30]["greedy_ratio"] > rows[T]["greedy_ratio"] - 1e-9
    assert rows[T]["greedy_ratio"] == pytest.approx(1.0, abs=1e-9)
    assert rows[T]["horizon_lr"] == pytest.approx(a_opt, rel=1e-6)
    lrs = rows[1]["greedy_lrs"]
    assert all(b <= a for a, b in zip(lrs[1:], lrs[2:]))  # decays at every step after the first
    assert lrs[T // 10] < a_opt  # and falls below the long-horizon optimum within 10% of training
    assert rows[1]["horizon_lr"] > a_opt and rows[30]["horizon_lr"] > a_opt


def test_greedy_schedule_windows():
    p = NoisyQuadratic(200, batch_size=10.0)
    g = greedy_schedule(p, 50, 20)
    assert len(g["lrs"]) == 3  # windows of 20, 20 and 10 steps
    lengths = [20, 20, 10]
    assert g["loss"] == pytest.approx(float(p.expected_loss(g["lrs"], 0.0, lengths)), rel=1e-12)


def test_local_hypergradient_descent_decays_the_learning_rate():
    """Hypergradient descent with window 1 (the runner's `hd` strategy) lowers the lr through
    training and ends worse than the long-horizon optimum."""
    task = build_nqm_task({"steps": 300, "tune": ["lr"], "optimizer": {"lr": 0.5, "momentum": 0.0}}, 0)
    res = local_hypergradient_descent(task, 1, outer_lr=0.05)
    assert len(res["lrs"]) == 300
    assert res["lrs"][-1] < 0.5 * res["lrs"][0]
    assert res["loss"] > 1.2 * task.answer_key().loss
    assert res["final_val_loss"] == pytest.approx(res["loss"], rel=1e-10)  # expected mode: the run's own loss


def test_expected_loss_of_segments():
    """The expected loss of a run whose phi changed at window boundaries, in a 2-phase task."""
    task = small_task("expected", dim=100, steps=40, phases=2)
    phi0 = task.init_phi()
    phi1 = phi0 + torch.tensor([0.3, -0.5, 0.0, 0.2], dtype=torch.float64)[: phi0.numel()]
    assert task.expected_loss_of_segments([(0, 40, phi0)]) == pytest.approx(task.expected_final_loss(phi0), rel=1e-12)
    s = unroll(task.dynamics.step, task.init_state(), phi0, task.batches(0, 15))
    s = unroll(task.dynamics.step, s, phi1, task.batches(15, 40))
    got = task.expected_loss_of_segments([(0, 15, phi0), (15, 40, phi1)])
    assert got == pytest.approx(float(task.val_fn()(s, phi1)), rel=1e-12)
    with pytest.raises(ValueError, match="without gaps"):
        task.expected_loss_of_segments([(0, 15, phi0), (16, 40, phi1)])
    with pytest.raises(ValueError, match="40 steps"):
        task.expected_loss_of_segments([(0, 15, phi0)])


# ---------------------------------------------------------------------------- the task
def test_build_nqm_task_errors_name_the_key():
    for bad, key in (({"mode": "exact"}, "tasks.nqm.mode"), ({"tune": ["momentum"]}, "tasks.nqm.tune"),
                     ({"phases": 0}, "tasks.nqm.phases"), ({"lr": 0.1}, "tasks.nqm"),
                     ({"optimizer": {"beta": 0.9}}, "tasks.nqm.optimizer"),
                     ({"theta0": {"distribution": "cauchy"}}, "tasks.nqm.theta0.distribution"),
                     ({"batch_size": 0}, "tasks.nqm.batch_size"),
                     ({"optimizer": {"momentum": 0.0}}, "tasks.nqm.optimizer.momentum")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            build_nqm_task(bad, 0)


def test_task_interface():
    t = small_task("expected", phases=3)
    assert t.name == "nqm" and t.hyper.q == 4 and t.steps == 40
    phi = t.init_phi()
    vals = t.hyper_values(phi)
    assert set(vals) == {"hp:lr[0]", "hp:lr[1]", "hp:lr[2]", "hp:momentum"}
    assert vals["hp:lr[0]"] == pytest.approx(0.3) and vals["hp:momentum"] == pytest.approx(0.6)
    ev = t.evaluate(t.init_state())
    assert ev["val_loss"] == pytest.approx(float(t.problem.loss(t.problem.theta0)))
    one = small_task("sampled", phases=1, tune=["lr"])
    assert one.hyper_values(one.init_phi()) == {"hp:lr": pytest.approx(0.3), "hp:momentum": 0.6}
    assert one.init_state().numel() == 2 * 64 and t.init_state().numel() == 3 * 64


@pytest.mark.parametrize("strategy", ["fixed", "hd", "local", "glocal", "global"])
def test_runner_internals_run_the_task(tmp_path, strategy):
    """The runner's training loops (glocal.train with glocal.rundir, as of this commit) run the
    NQM task unchanged."""
    train = pytest.importorskip("glocal.train")
    rundir = pytest.importorskip("glocal.rundir")
    if not all(hasattr(train, f) for f in ("_Run", "_run_windowed", "_run_global")):
        pytest.skip("glocal.train's internals were refactored; the runner integration tests cover this")
    from tqdm.auto import tqdm

    task = small_task("expected", dim=100, steps=60, phases=2)
    window = 1 if strategy == "hd" else 10
    opts = {"window": window, "eval_every": 10, "meta_iterations": 3, "outer": {"optimizer": "adam", "lr": 0.1}}
    with rundir.RunDirectory(tmp_path, task="nqm", strategy=strategy) as rd:
        r = train._Run(task, strategy, opts, rd, "fp")
        bar = tqdm(total=0, disable=True)
        (train._run_global if strategy == "global" else train._run_windowed)(r, bar, None)
    assert r.diverged_step is None
    assert r.rows[-1]["step"] == 60 * (3 if strategy == "global" else 1)  # global: 3 training runs
    assert math.isfinite(r.rows[-1]["val_loss"])
    assert "hp:lr[1]" in r.rows[-1]
    if strategy == "fixed":
        assert torch.equal(r.phi, task.init_phi())
    else:
        assert r.n_updates > 0 and not torch.equal(r.phi, task.init_phi())
        assert r.rows[-1]["val_loss"] < r.rows[0]["val_loss"]
