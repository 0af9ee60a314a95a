"""Tests for glocal.hypergrad: the exact engines agree with each other to float64 round-off and with finite
differences to the differences' own error level, with meta objectives that ignore phi and ones that depend
on it directly; forward mode continues a split window through ``Z0``; the engines converge to the
implicit-function-theorem limit, stay finite under Adam with dead parameters, and forward mode's memory
does not grow with the window length."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import jvp, vjp
from torch.profiler import ProfilerActivity, profile

from glocal.dynamics import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics
from glocal.hypergrad import (
    finite_difference_hypergradient,
    forward_trajectory,
    reverse_hypergradient,
    reverse_window_hypergradients,
    unroll,
)

#: engine against engine in float64, relative (measured here: <= 3e-16)
ENGINE_RTOL = 1e-12
OPTIMIZERS = ["sgd", "momentum", "nesterov", "adam"]
MODELS = ["logreg", "mlp"]
CHECKPOINTS = (None, "sqrt", 3, "graph")
META = ["val", "val+phi"]


def _meta(pb, meta_factory, kind):
    """The problem's validation loss (ignores phi) or a meta objective that also depends on phi directly."""
    return pb.val_fn if kind == "val" else meta_factory(pb.val_fn, pb.dyn.n_params)


# ---------------------------------------------------------------------------- engines agree
@pytest.mark.parametrize("meta", META)
@pytest.mark.parametrize("opt_kind", OPTIMIZERS)
@pytest.mark.parametrize("model_kind", MODELS)
def test_engines_agree_all_hyperparameters(problem_factory, relerr, fd_check, meta_factory, model_kind, opt_kind,
                                           meta):
    """forward / reverse (plain, sqrt, int and 'graph' checkpoints) / reverse-window agree to round-off and
    with central differences to their own error level, in float64, for a window that starts from a trained
    theta_s, with every hyperparameter of the optimizer (per-layer lr, weight decay, momentum or betas,
    per-example weights) tuned at once; the meta objective ignores phi or depends on it directly."""
    fd_reference, assert_fd_close = fd_check
    pb = problem_factory(model_kind, opt_kind, pretrain=5, window=7)
    dyn, phi, s, batches = pb.dyn, pb.phi, pb.state_s, pb.batches
    val_fn = _meta(pb, meta_factory, meta)
    assert not torch.equal(pb.state_s, pb.state0)  # the window really starts mid-training
    if opt_kind == "adam":  # Adam's bias correction continues from the 5 steps taken before the window
        assert float(dyn.optimizer_state(s)["step"]) == 5
    T = len(batches)

    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches)
    assert fwd.h.shape == (T, dyn.hyper.q)
    assert fwd.steps == list(range(1, T + 1))
    assert torch.isfinite(fwd.h).all()
    h = fwd.h[-1]
    assert float(torch.linalg.norm(h)) > 1e-6  # not a vacuous comparison
    if meta != "val":  # the direct term d val / d phi is a large part of h: dropping it cannot hide
        direct = torch.func.grad(val_fn, argnums=1)(fwd.final_state, phi)
        assert float(direct.norm()) > 0.2 * float(h.norm())

    # final state is the plain unrolled state
    torch.testing.assert_close(fwd.final_state, unroll(dyn.step, s, phi, batches), rtol=0, atol=1e-12)

    for ckpt in CHECKPOINTS + (T + 5,):
        rev = reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint=ckpt)
        assert relerr(rev.h, h) <= ENGINE_RTOL, f"checkpoint={ckpt!r}: {relerr(rev.h, h):.3g}"
        assert rev.val_loss == pytest.approx(float(fwd.val_losses[-1]), rel=1e-12)
        assert relerr(rev.final_state, fwd.final_state) <= ENGINE_RTOL, f"checkpoint={ckpt!r}"

    fd, bound = fd_reference(dyn.step, val_fn, s, phi, batches)
    assert_fd_close(h, fd, bound, "forward vs FD")

    for ckpt in (None, "graph"):
        win = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, checkpoint=ckpt)
        assert win.steps == fwd.steps
        for k in range(T):
            assert relerr(win.h[k], fwd.h[k]) <= ENGINE_RTOL, f"window step {k + 1}, checkpoint={ckpt!r}"
        assert relerr(win.final_state, fwd.final_state) <= ENGINE_RTOL, f"checkpoint={ckpt!r}"
        assert relerr(win.val_losses, fwd.val_losses) <= ENGINE_RTOL, f"checkpoint={ckpt!r}"
        assert win.Z.numel() == 0 and win.Z.dtype == fwd.Z.dtype  # reverse mode has no tangent matrix


@pytest.mark.parametrize("opt_kind", OPTIMIZERS)
def test_direct_term_adds_exactly(problem_factory, relerr, opt_kind):
    """h for val + R(phi) minus h for val equals grad R(phi) exactly, in every engine and checkpoint mode
    (the derivative is linear in the meta objective, and R does not depend on theta)."""
    pb = problem_factory("mlp", opt_kind, pretrain=2, window=5)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    c = torch.linspace(0.5, 2.0, phi.numel(), dtype=phi.dtype)

    def with_reg(state, p):
        return val_fn(state, p) + 0.5 * (c * p * p).sum() + torch.sin(p).sum()

    grad_reg = c * phi + torch.cos(phi)
    plain = forward_trajectory(dyn.step, val_fn, s, phi, batches).h
    reg = forward_trajectory(dyn.step, with_reg, s, phi, batches).h
    for k in range(len(batches)):
        assert relerr(reg[k] - plain[k], grad_reg) <= ENGINE_RTOL, f"forward, step {k + 1}"
    for ckpt in CHECKPOINTS:
        d = (reverse_hypergradient(dyn.step, with_reg, s, phi, batches, checkpoint=ckpt).h
             - reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint=ckpt).h)
        assert relerr(d, grad_reg) <= ENGINE_RTOL, f"reverse, checkpoint={ckpt!r}"
    for ckpt in (None, "graph"):
        wr = reverse_window_hypergradients(dyn.step, with_reg, s, phi, batches, [1, 3, 5], checkpoint=ckpt).h
        wp = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [1, 3, 5], checkpoint=ckpt).h
        for k in range(3):
            assert relerr(wr[k] - wp[k], grad_reg) <= ENGINE_RTOL, f"reverse window, row {k}, checkpoint={ckpt!r}"


@pytest.mark.parametrize("split", [1, 3])
@pytest.mark.parametrize("opt_kind", OPTIMIZERS)
def test_forward_window_split_with_Z0_equals_one_run(problem_factory, relerr, meta_factory, opt_kind, split):
    """A window run in two pieces, the second started from the first's final state with ``Z0`` = the first's
    Z, gives the same h_{s->t} and Z as one run (forward mode's state is (theta, Z), nothing else)."""
    pb = problem_factory("mlp", opt_kind, pretrain=3, window=6)
    dyn, phi, s, batches = pb.dyn, pb.phi, pb.state_s, pb.batches
    val_fn = meta_factory(pb.val_fn, dyn.n_params)
    full = forward_trajectory(dyn.step, val_fn, s, phi, batches)
    first = forward_trajectory(dyn.step, val_fn, s, phi, batches[:split])
    second = forward_trajectory(dyn.step, val_fn, first.final_state, phi, batches[split:], Z0=first.Z)
    assert second.steps == list(range(1, len(batches) - split + 1))
    assert relerr(first.h, full.h[:split]) <= ENGINE_RTOL
    for k in range(len(batches) - split):
        assert relerr(second.h[k], full.h[split + k]) <= ENGINE_RTOL, f"step {split + k + 1}"
    assert relerr(second.Z, full.Z) <= ENGINE_RTOL
    assert relerr(second.final_state, full.final_state) <= ENGINE_RTOL
    # control: starting the second piece from Z = 0 (theta_split held fixed) is a different quantity
    fresh = forward_trajectory(dyn.step, val_fn, first.final_state, phi, batches[split:])
    assert relerr(fresh.h[-1], full.h[-1]) > 1e-3


@pytest.mark.parametrize("opt_kind", OPTIMIZERS)
def test_prefix_windows_and_record(problem_factory, relerr, opt_kind):
    """h_{s->s+k} of the forward trajectory equals reverse mode on the first k batches,
    and recording a subset of steps returns exactly those rows."""
    pb = problem_factory("mlp", opt_kind, pretrain=3, window=6, n_train=16)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches)
    for k in (1, 2, 4):
        rev = reverse_hypergradient(dyn.step, val_fn, s, phi, batches[:k])
        assert relerr(rev.h, fwd.h[k - 1]) <= ENGINE_RTOL
    sub = forward_trajectory(dyn.step, val_fn, s, phi, batches, record=[2, 5], chunk_size=3)
    assert sub.steps == [2, 5]
    first = forward_trajectory(dyn.step, val_fn, s, phi, batches, record=[1])  # the first offset is valid
    assert first.steps == [1] and relerr(first.h[0], fwd.h[0]) <= ENGINE_RTOL
    assert relerr(sub.h[0], fwd.h[1]) <= ENGINE_RTOL and relerr(sub.h[1], fwd.h[4]) <= ENGINE_RTOL
    for ckpt in (None, "graph"):
        rsub = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [5, 2], checkpoint=ckpt,
                                             chunk_size=1)
        assert rsub.steps == [2, 5]
        assert relerr(rsub.h[0], fwd.h[1]) <= ENGINE_RTOL and relerr(rsub.h[1], fwd.h[4]) <= ENGINE_RTOL
        # the last recorded step (5) is before the window's end (6): the final state is still theta_{s+6}
        assert relerr(rsub.final_state, fwd.final_state) <= ENGINE_RTOL, f"checkpoint={ckpt!r}"


@pytest.mark.parametrize("opt_kind", OPTIMIZERS)
@pytest.mark.parametrize("model_kind", MODELS)
def test_single_hyperparameter_q1(problem_factory, relerr, fd_check, model_kind, opt_kind):
    """q = 1 (a single global learning rate)."""
    fd_reference, assert_fd_close = fd_check
    blocks = [HyperBlock("lr", init=0.01 if opt_kind == "adam" else 0.2)]
    pb = problem_factory(model_kind, opt_kind, blocks=blocks, pretrain=4, window=5)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    assert dyn.hyper.q == 1
    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches)
    assert fwd.h.shape == (5, 1)
    rev = reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint="sqrt")
    fd, bound = fd_reference(dyn.step, val_fn, s, phi, batches)
    assert abs(float(fd[0])) > 1e-8
    assert_fd_close(fwd.h[-1], fd, bound, "forward")
    assert relerr(rev.h, fwd.h[-1]) <= ENGINE_RTOL
    win = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [1, 3, 5])
    assert relerr(win.h, fwd.h[[0, 2, 4]]) <= ENGINE_RTOL


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("model_kind", MODELS)
def test_many_example_weights(problem_factory, relerr, fd_check, model_kind, opt_kind):
    """q >= 200: per-example weights on 240 examples plus lr and decay; FD on a random subset."""
    fd_reference, assert_fd_close = fd_check
    n = 240
    pb = problem_factory(model_kind, opt_kind, n_train=n, batch_size=40, pretrain=6, window=4, n_features=4)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    q = dyn.hyper.q
    assert q >= 200
    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches, chunk_size=64)
    h = fwd.h[-1]
    rev = reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint=3)
    assert relerr(rev.h, h) <= ENGINE_RTOL
    win = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [1, 2, 4], chunk_size=2)
    assert relerr(win.h, fwd.h[[0, 1, 3]]) <= ENGINE_RTOL

    # examples that no batch of the window touches get exactly zero hypergradient
    ew = dyn.hyper.slice("example_weight")
    seen = torch.zeros(n, dtype=torch.bool)
    for b in batches:
        seen[b.index] = True
    assert (~seen).any() and seen.any()
    assert torch.all(h[ew][~seen] == 0) and torch.all(rev.h[ew][~seen] == 0)
    assert torch.all(h[ew][seen] != 0)

    g = torch.Generator().manual_seed(7)
    seen_ids = seen.nonzero().flatten()
    pick = seen_ids[torch.randperm(seen_ids.numel(), generator=g)[:8]] + ew.start
    others = [i for i in range(q) if not (ew.start <= i < ew.stop)]  # lr(s), weight decay, betas
    idx = sorted(set(pick.tolist()) | set(others))
    fd, bound = fd_reference(dyn.step, val_fn, s, phi, batches, indices=idx)
    assert torch.isnan(fd).sum() == q - len(idx)  # untouched coordinates are NaN
    assert_fd_close(h, fd, bound, "forward")
    assert_fd_close(rev.h, fd, bound, "reverse")


def test_theta0_window_matches(problem_factory, fd_check):
    """Windows starting at theta_0 (no pretraining) also agree."""
    fd_reference, assert_fd_close = fd_check
    pb = problem_factory("mlp", "momentum", pretrain=0, window=6)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches)
    fd, bound = fd_reference(dyn.step, val_fn, s, phi, batches)
    assert_fd_close(fwd.h[-1], fd, bound, "forward")


def test_engines_reject_bad_inputs(problem_factory):
    pb = problem_factory("logreg", "sgd", pretrain=0, window=3)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    with pytest.raises(ValueError, match="^batches is empty"):
        forward_trajectory(dyn.step, val_fn, s, phi, [])
    with pytest.raises(ValueError, match="1-D"):
        reverse_hypergradient(dyn.step, val_fn, s[None], phi, batches)
    with pytest.raises(ValueError, match="checkpoint"):
        reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint=0)
    with pytest.raises(ValueError, match="outside the window"):
        forward_trajectory(dyn.step, val_fn, s, phi, batches, record=[4])
    with pytest.raises(ValueError, match="record is empty"):
        forward_trajectory(dyn.step, val_fn, s, phi, batches, record=[])
    with pytest.raises(ValueError, match="record_steps"):
        reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [0])
    with pytest.raises(ValueError, match="record_steps is empty"):
        reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [])
    with pytest.raises(ValueError, match="record_steps must lie in"):  # the largest offset is checked
        reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [1, 2, len(batches) + 1])
    with pytest.raises(ValueError, match="checkpoint"):
        reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, checkpoint="sqrt")


def _phi_free_problem():
    """A step and a meta objective that do not depend on phi at all."""
    state, phi = torch.linspace(-1, 1, 5, dtype=torch.float64), torch.tensor([0.3, -0.2], dtype=torch.float64)

    def step(s, p, batch):
        return 0.9 * s + 0.1 * torch.tanh(s)

    def val(s, p):
        return (s * s).sum()

    return step, val, state, phi, [None] * 4


def test_hyperparameters_that_change_nothing_get_zero():
    """Hyperparameters that change nothing get exactly zero hypergradient from every engine."""
    step, val, state, phi, batches = _phi_free_problem()
    zero = torch.zeros_like(phi)
    assert torch.equal(forward_trajectory(step, val, state, phi, batches).h, torch.zeros(4, 2, dtype=phi.dtype))
    for ckpt in (None, "sqrt", 3):
        assert torch.equal(reverse_hypergradient(step, val, state, phi, batches, checkpoint=ckpt).h, zero), ckpt
    for ckpt in (None, "graph"):
        h = reverse_window_hypergradients(step, val, state, phi, batches, checkpoint=ckpt).h
        assert torch.equal(h, torch.zeros(4, 2, dtype=phi.dtype)), ckpt


def test_steps_that_overwrite_the_state():
    """A step whose output ignores its input state (state_{t+1} = W_t phi): the state cotangent of every step is
    empty (autograd returns None) and h_{s->t} = W_t^T W_t phi for val = ||s||^2 / 2, in every engine."""
    g = torch.Generator().manual_seed(0)
    batches = [torch.randn(3, 2, generator=g, dtype=torch.float64) for _ in range(4)]
    state, phi = torch.randn(3, generator=g, dtype=torch.float64), torch.tensor([0.7, -0.4], dtype=torch.float64)

    def step(s, p, W):
        return W @ p

    def val(s, p):
        return 0.5 * (s * s).sum()

    closed = torch.stack([W.T @ (W @ phi) for W in batches])
    torch.testing.assert_close(forward_trajectory(step, val, state, phi, batches).h, closed, rtol=1e-12, atol=0)
    for ckpt in (None, 1, "sqrt", 3, "graph"):  # 1: a checkpoint at every step, the same as None
        h = reverse_hypergradient(step, val, state, phi, batches, checkpoint=ckpt).h
        torch.testing.assert_close(h, closed[-1], rtol=1e-12, atol=0)
    for ckpt in (None, "graph"):
        h = reverse_window_hypergradients(step, val, state, phi, batches, checkpoint=ckpt).h
        torch.testing.assert_close(h, closed, rtol=1e-12, atol=0)


def test_finite_differences_and_a_meta_objective_of_phi_alone():
    """state_{t+1} = a s + phi (a scalar state, q = 1), val = phi s_T + phi^2 / 2, T = 3 steps from s_0:
    s_T = a^3 s_0 + (1 + a + a^2) phi, so dval/dphi = s_T + phi (1 + a + a^2) + phi exactly; the meta
    objective's state gradient is phi (never None), and central differences of this quadratic are exact up
    to round-off."""
    a, s0, phi = 0.7, torch.tensor([0.4], dtype=torch.float64), torch.tensor([-1.3], dtype=torch.float64)

    def step(s, p, batch):
        return a * s + p

    def val(s, p):
        return (p * s).sum() + 0.5 * (p * p).sum()

    geo = 1 + a + a * a
    sT = a**3 * s0 + geo * phi
    closed = sT + phi * geo + phi
    fd = finite_difference_hypergradient(step, val, s0, phi, [None] * 3)
    torch.testing.assert_close(fd, closed, rtol=1e-9, atol=0)
    torch.testing.assert_close(forward_trajectory(step, val, s0, phi, [None] * 3).h[-1], closed, rtol=1e-12, atol=0)
    torch.testing.assert_close(reverse_hypergradient(step, val, s0, phi, [None] * 3).h, closed, rtol=1e-12, atol=0)
    # a meta objective of phi alone: d val / d state is None for autograd, and h = dval/dphi = 2 phi
    only_phi = reverse_window_hypergradients(step, lambda s, p: (p * p).sum(), s0, phi, [None] * 3)
    torch.testing.assert_close(only_phi.h, (2 * phi).expand(3, 1), rtol=1e-15, atol=0)
    assert bool(torch.isnan(finite_difference_hypergradient(step, val, s0, phi, [None] * 3, indices=[])).all())


def test_graph_mode_zero_when_the_meta_objective_depends_on_other_leaves():
    """phi enters neither the step nor the meta objective, but the meta objective depends on a tensor that
    requires grad (a fixed reference network's parameter): the recorded value requires grad, phi is unused,
    and the graph engines still return zeros."""
    step, val, state, phi, batches = _phi_free_problem()
    ref = nn.Parameter(torch.linspace(0.5, 1.5, state.numel(), dtype=torch.float64))

    def meta(s, p):
        return val(s, p) + (ref * s).sum()

    assert torch.equal(reverse_hypergradient(step, meta, state, phi, batches, checkpoint="graph").h,
                       torch.zeros_like(phi))
    h = reverse_window_hypergradients(step, meta, state, phi, batches, [2, 4], checkpoint="graph").h
    assert torch.equal(h, torch.zeros(2, 2, dtype=phi.dtype))


def test_graph_mode_hyperparameters_that_change_nothing_get_zero():
    """Graph mode too, although phi never enters the recorded graph (nothing requires grad there)."""
    step, val, state, phi, batches = _phi_free_problem()
    h = reverse_hypergradient(step, val, state, phi, batches, checkpoint="graph").h
    assert torch.equal(h, torch.zeros_like(phi))


# ---------------------------------------------------------------------------- IFT limit
def test_ridge_converges_to_implicit_function_theorem_limit(relerr):
    """Weighted ridge regression by plain GD: h_{0->T} -> the closed-form IFT hypergradient.

    Inner loss (as in TrainingDynamics, coupled decay): l(theta) = (1/N) sum_i w_i 0.5 (x_i^T theta - y_i)^2
    + (wd / 2) ||theta||^2; gradient (1/N) X^T W (X theta - y) + wd theta.
    phi = (logit w_1..w_N, log wd).
    """
    g = torch.Generator().manual_seed(3)
    N, Nv, d = 30, 20, 4
    X = torch.randn(N, d, generator=g, dtype=torch.float64)
    theta_true = torch.randn(d, generator=g, dtype=torch.float64)
    y = X @ theta_true + 0.3 * torch.randn(N, generator=g, dtype=torch.float64)
    Xv = torch.randn(Nv, d, generator=g, dtype=torch.float64)
    yv = Xv @ theta_true + 0.3 * torch.randn(Nv, generator=g, dtype=torch.float64)
    w0 = 0.2 + 0.6 * torch.rand(N, generator=g, dtype=torch.float64)
    wd0 = 0.05

    Hm = X.T @ torch.diag(w0) @ X / N + wd0 * torch.eye(d, dtype=torch.float64)
    lr = float(1.0 / torch.linalg.eigvalsh(Hm).max())
    hyper = HyperSpace([HyperBlock("example_weight", size=N, init=w0), HyperBlock("weight_decay", init=wd0)])
    model = nn.Linear(d, 1, bias=False).to(torch.float64)
    dyn = TrainingDynamics(model, OptimizerConfig(kind="sgd", lr=lr), hyper, loss="mse")
    phi = hyper.init_phi(torch.float64)
    state0 = torch.zeros(d, dtype=torch.float64)
    T_max = 250
    batches = [Batch(X, y, torch.arange(N), t) for t in range(T_max)]
    val_fn = dyn.loss_fn(Xv, yv)

    # closed form
    theta_star = torch.linalg.solve(Hm, X.T @ (w0 * y) / N)
    resid = X @ theta_star - y
    # d/dphi of grad_theta l: columns for w_i (chain rule through sigmoid) and for wd (through exp)
    Dw = (X * (resid * w0 * (1 - w0))[:, None]).T / N  # d x N
    Dwd = (theta_star * wd0)[:, None]  # d x 1
    D = torch.cat([Dw, Dwd], dim=1)
    grad_val = Xv.T @ (Xv @ theta_star - yv) / Nv
    h_inf = -D.T @ torch.linalg.solve(Hm, grad_val)

    fwd = forward_trajectory(dyn.step, val_fn, state0, phi, batches)
    torch.testing.assert_close(fwd.final_state, theta_star, rtol=1e-10, atol=1e-12)
    Ts = [5, 10, 20, 40, 80, 250]
    errs = [relerr(fwd.h[T - 1], h_inf) for T in Ts]
    assert errs[0] > 1e-3, errs  # short windows are genuinely biased
    for a, b in zip(errs, errs[1:]):
        assert b < a or b < 1e-12, errs  # decreasing in T (down to round-off)
    assert errs[-1] < 1e-6, errs
    # the reverse engine agrees at a long horizon too
    rev = reverse_hypergradient(dyn.step, val_fn, state0, phi, batches[:80], checkpoint="sqrt")
    assert relerr(rev.h, fwd.h[79]) <= ENGINE_RTOL


# ---------------------------------------------------------------------------- Adam, dead params
def _dead_feature_problem(model_kind: str):
    """Adam on data whose first input feature is always exactly 0: its weights get zero gradient."""
    g = torch.Generator().manual_seed(11)
    N, d, C = 20, 4, 3
    x = torch.randn(N, d, generator=g, dtype=torch.float64)
    x[:, 0] = 0.0
    y = torch.randint(0, C, (N,), generator=g)
    xv = torch.randn(10, d, generator=g, dtype=torch.float64)
    xv[:, 0] = 0.0
    yv = torch.randint(0, C, (10,), generator=g)
    torch.manual_seed(0)
    if model_kind == "logreg":
        model = nn.Linear(d, C)
    else:
        model = nn.Sequential(nn.Linear(d, 5), nn.Tanh(), nn.Linear(5, C))
    model = model.to(torch.float64)
    n_groups = 1 if model_kind == "logreg" else 2
    hyper = HyperSpace(
        [
            HyperBlock("lr", size=n_groups, init=0.02),
            HyperBlock("beta1", init=0.9),
            HyperBlock("beta2", init=0.99),
            HyperBlock("example_weight", size=N, init=0.5),
        ]
    )
    dyn = TrainingDynamics(model, OptimizerConfig(kind="adam"), hyper)
    phi = hyper.init_phi(torch.float64)
    state = dyn.init_state(dtype=torch.float64)
    batches = [Batch(x, y, torch.arange(N), t) for t in range(6)]
    return dyn, phi, state, batches, dyn.loss_fn(xv, yv)


@pytest.mark.parametrize("model_kind", MODELS)
def test_adam_zero_gradient_parameter_is_finite(relerr, fd_check, model_kind):
    fd_reference, assert_fd_close = fd_check
    dyn, phi, state, batches, val_fn = _dead_feature_problem(model_kind)
    n = dyn.n_params
    first_w = dyn.param_names[0]
    dead = torch.zeros(n, dtype=torch.bool)
    offset = 0
    for name, numel, shape in zip(dyn.param_names, dyn.param_numels, dyn.param_shapes):
        if name == first_w:
            mask = torch.zeros(shape, dtype=torch.bool)
            mask[:, 0] = True
            dead[offset : offset + numel] = mask.reshape(-1)
        offset += numel
    s1 = dyn.step(state, phi, batches[0])
    # second moment of the dead weights is exactly zero: the sqrt(0) case is really exercised
    assert torch.all(s1[2 * n : 3 * n][dead] == 0)
    assert torch.all(s1[:n][dead] == state[:n][dead])

    # tangents and cotangents through one step at a state with v = 0 entries
    g = torch.Generator().manual_seed(0)
    ts = torch.randn(dyn.P, generator=g, dtype=torch.float64)
    tp = torch.randn(phi.numel(), generator=g, dtype=torch.float64)
    _, tangent = jvp(lambda s_, p_: dyn.step(s_, p_, batches[1]), (s1, phi), (ts, tp))
    assert torch.isfinite(tangent).all()
    _, vjp_fn = vjp(lambda s_, p_: dyn.step(s_, p_, batches[1]), s1, phi)
    cs, cp = vjp_fn(torch.randn(dyn.P, generator=g, dtype=torch.float64))
    assert torch.isfinite(cs).all() and torch.isfinite(cp).all()

    fwd = forward_trajectory(dyn.step, val_fn, state, phi, batches)
    assert torch.isfinite(fwd.h).all() and torch.isfinite(fwd.Z).all()
    rev = reverse_hypergradient(dyn.step, val_fn, state, phi, batches)
    assert torch.isfinite(rev.h).all()
    win = reverse_window_hypergradients(dyn.step, val_fn, state, phi, batches)
    assert torch.isfinite(win.h).all()
    fd, bound = fd_reference(dyn.step, val_fn, state, phi, batches)
    assert_fd_close(fwd.h[-1], fd, bound, "forward")
    assert relerr(rev.h, fwd.h[-1]) <= ENGINE_RTOL
    assert relerr(win.h[-1], fwd.h[-1]) <= ENGINE_RTOL


def test_adam_zero_gradient_check_can_fail(monkeypatch):
    """Control: with a naive sqrt the same computation produces NaN, so the test above is sensitive."""
    import glocal.dynamics as dynamics_module

    monkeypatch.setattr(dynamics_module, "_safe_sqrt", torch.sqrt)
    dyn, phi, state, batches, val_fn = _dead_feature_problem("logreg")
    fwd = forward_trajectory(dyn.step, val_fn, state, phi, batches)
    rev = reverse_hypergradient(dyn.step, val_fn, state, phi, batches)
    assert not (torch.isfinite(fwd.Z).all() and torch.isfinite(rev.h).all())


@pytest.mark.parametrize("decoupled", [False, True], ids=["adam", "adamw"])
def test_adam_hypergradient_is_the_derivative_of_torch_optim_training(relerr, decoupled):
    """h of lr, weight decay, beta1 and beta2 over an Adam window built as ``[full] * T`` equals
    the central difference of the validation loss after training with ``torch.optim.Adam``
    (or AdamW) itself, from a mid-training start; batches with explicit step numbers give the
    same hypergradient."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(20, 4, generator=g, dtype=torch.float64)
    y = torch.randint(0, 3, (20,), generator=g)
    xv = torch.randn(12, 4, generator=g, dtype=torch.float64)
    yv = torch.randint(0, 3, (12,), generator=g)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(torch.float64)
    init = {"lr": 0.02, "weight_decay": 0.05, "beta1": 0.85, "beta2": 0.95}
    hyper = HyperSpace([HyperBlock(k, init=v) for k, v in init.items()])
    dyn = TrainingDynamics(model, OptimizerConfig(kind="adam", decoupled_weight_decay=decoupled), hyper)
    phi = hyper.init_phi(torch.float64)
    full = Batch(x, y, torch.arange(20))
    s, T = 4, 6
    state_s = unroll(dyn.step, dyn.init_state(dtype=torch.float64), phi, [full] * s)
    val_fn = dyn.loss_fn(xv, yv)
    h = forward_trajectory(dyn.step, val_fn, state_s, phi, [full] * T).h[-1]
    numbered = [Batch(x, y, torch.arange(20), s + t) for t in range(T)]
    torch.testing.assert_close(forward_trajectory(dyn.step, val_fn, state_s, phi, numbered).h[-1], h,
                               rtol=1e-12, atol=0)
    torch.testing.assert_close(reverse_hypergradient(dyn.step, val_fn, state_s, phi, [full] * T).h, h,
                               rtol=ENGINE_RTOL, atol=0)

    def torch_optim_val_loss(values: dict) -> float:
        ref = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(torch.float64)
        ref.load_state_dict(model.state_dict())
        kind = torch.optim.AdamW if decoupled else torch.optim.Adam
        opt = kind(ref.parameters(), lr=values["lr"], betas=(values["beta1"], values["beta2"]), eps=1e-8,
                   weight_decay=values["weight_decay"])
        for t in range(s + T):
            # theta_s is held fixed: the first s steps use the unperturbed hyperparameters
            for group in opt.param_groups:
                v = init if t < s else values
                group.update(lr=v["lr"], betas=(v["beta1"], v["beta2"]), weight_decay=v["weight_decay"])
            opt.zero_grad()
            nn.functional.cross_entropy(ref(x), y).backward()
            opt.step()
        with torch.no_grad():
            return float(nn.functional.cross_entropy(ref(xv), yv))

    eps = 1e-6
    fd = torch.zeros(4, dtype=torch.float64)
    for j in range(4):
        vals = []
        for sign in (1, -1):
            p = phi.clone()
            p[j] += sign * eps
            c = hyper.constrain(p)
            vals.append(torch_optim_val_loss({k: float(c[k][0]) for k in init}))
        fd[j] = (vals[0] - vals[1]) / (2 * eps)
    assert torch.all(fd.abs() > 1e-6), fd
    assert relerr(h, fd) <= 1e-7, (h, fd)  # central differences with eps = 1e-6: error ~ eps^2 + 1e-16 / eps


# ---------------------------------------------------------------------------- memory
def _peak_tensor_bytes(fn) -> int:
    """Peak bytes of tensors alive at once while ``fn()`` runs, from the allocations and frees the torch
    profiler records (what tensors hold, not what the allocator or the OS keeps: deterministic, and
    independent of the allocator's caching and of other processes)."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    assert events, "the profiler recorded no allocation"
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def _memory_problem():
    torch.manual_seed(0)
    d_in, hid, C = 64, 256, 2
    model = nn.Sequential(nn.Linear(d_in, hid), nn.Tanh(), nn.Linear(hid, C)).to(torch.float64)
    hyper = HyperSpace([HyperBlock("lr", init=0.05), HyperBlock("weight_decay", init=1e-3)])
    dyn = TrainingDynamics(model, OptimizerConfig(kind="sgd"), hyper)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (4,), generator=g)
    return dyn, hyper.init_phi(torch.float64), dyn.init_state(dtype=torch.float64), dyn.loss_fn(x, y), (x, y)


def test_forward_memory_does_not_grow_with_window_but_reverse_does():
    """Peak tensor memory at tau = 10 and tau = 40: forward mode stays flat (whether it records the last
    step or every step), reverse mode grows by the 30 extra states it stores, sqrt checkpointing by far less."""
    dyn, phi, state, val_fn, (x, y) = _memory_problem()
    state_bytes = dyn.P * 8

    def peaks(run):
        return [_peak_tensor_bytes(lambda t=tau: run([Batch(x, y, torch.arange(4), k) for k in range(t)]))
                for tau in (10, 40)]

    fwd_last = peaks(lambda b: forward_trajectory(dyn.step, val_fn, state, phi, b, record=[len(b)]))
    fwd_every = peaks(lambda b: forward_trajectory(dyn.step, val_fn, state, phi, b))
    rev = peaks(lambda b: reverse_hypergradient(dyn.step, val_fn, state, phi, b))
    rev_sqrt = peaks(lambda b: reverse_hypergradient(dyn.step, val_fn, state, phi, b, checkpoint="sqrt"))
    extra_states = 30 * state_bytes
    assert fwd_last[1] - fwd_last[0] <= 0.01 * extra_states, (fwd_last, extra_states)
    # recording every step adds one (q,) row per step to the preallocated output, nothing else
    assert fwd_every[1] - fwd_every[0] <= 30 * phi.numel() * 8 + 0.01 * extra_states, (fwd_every, extra_states)
    assert rev[1] - rev[0] >= 0.95 * extra_states, (rev, extra_states)  # the measurement does see growth
    assert rev_sqrt[1] - rev_sqrt[0] <= 0.5 * (rev[1] - rev[0]), (rev_sqrt, rev)
    # resident memory (RSS, which also sees heap fragmentation): tests/test_memory_rss.py, opt-in
