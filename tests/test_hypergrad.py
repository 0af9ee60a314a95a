"""Tests for glocal.hypergrad: the exact engines agree with each other and with finite
differences, converge to the implicit-function-theorem limit, stay finite under Adam with
dead parameters, and forward mode's memory does not grow with the window length."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn
from torch.func import jvp, vjp

from glocal.dynamics import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics
from glocal.hypergrad import (
    finite_difference_hypergradient,
    forward_trajectory,
    reverse_hypergradient,
    reverse_window_hypergradients,
    unroll,
)

TOL = 1e-6
OPTIMIZERS = ["sgd", "momentum", "nesterov", "adam"]
MODELS = ["logreg", "mlp"]


# ---------------------------------------------------------------------------- engines agree
@pytest.mark.parametrize("opt_kind", OPTIMIZERS)
@pytest.mark.parametrize("model_kind", MODELS)
def test_engines_agree_all_hyperparameters(problem_factory, relerr, model_kind, opt_kind):
    """forward / reverse (plain, sqrt and int checkpoints) / reverse-window / FD agree in float64,
    for a window that starts from a trained theta_s, with every hyperparameter of the optimizer
    (per-layer lr, weight decay, momentum or betas, per-example weights) tuned at once."""
    pb = problem_factory(model_kind, opt_kind, pretrain=5, window=7)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
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

    # final state is the plain unrolled state
    torch.testing.assert_close(fwd.final_state, unroll(dyn.step, s, phi, batches), rtol=0, atol=1e-12)

    for ckpt in (None, "sqrt", 3, T + 5):
        rev = reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint=ckpt)
        assert relerr(rev.h, h) <= TOL, f"checkpoint={ckpt!r}: {relerr(rev.h, h):.3g}"
        assert rev.val_loss == pytest.approx(float(fwd.val_losses[-1]), rel=1e-12)

    fd = finite_difference_hypergradient(dyn.step, val_fn, s, phi, batches, eps=1e-5)
    assert relerr(h, fd) <= TOL, f"forward vs FD: {relerr(h, fd):.3g}"
    # every coordinate on its own (absolute, scaled by the overall size)
    assert float((h - fd).abs().max()) <= TOL * float(torch.linalg.norm(fd))

    for ckpt in (None, "graph"):
        win = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, checkpoint=ckpt)
        assert win.steps == fwd.steps
        for k in range(T):
            assert relerr(win.h[k], fwd.h[k]) <= TOL, f"window step {k + 1}, checkpoint={ckpt!r}"
        torch.testing.assert_close(win.final_state, fwd.final_state, rtol=0, atol=1e-12)


@pytest.mark.parametrize("opt_kind", OPTIMIZERS)
def test_prefix_windows_and_record(problem_factory, relerr, opt_kind):
    """h_{s->s+k} of the forward trajectory equals reverse mode on the first k batches,
    and recording a subset of steps returns exactly those rows."""
    pb = problem_factory("mlp", opt_kind, pretrain=3, window=6, n_train=16)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches)
    for k in (1, 2, 4):
        rev = reverse_hypergradient(dyn.step, val_fn, s, phi, batches[:k])
        assert relerr(rev.h, fwd.h[k - 1]) <= TOL
    sub = forward_trajectory(dyn.step, val_fn, s, phi, batches, record=[2, 5], chunk_size=3)
    assert sub.steps == [2, 5]
    assert relerr(sub.h[0], fwd.h[1]) <= 1e-12 and relerr(sub.h[1], fwd.h[4]) <= 1e-12
    for ckpt in (None, "graph"):
        rsub = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [5, 2], checkpoint=ckpt,
                                             chunk_size=1)
        assert rsub.steps == [2, 5]
        assert relerr(rsub.h[0], fwd.h[1]) <= TOL and relerr(rsub.h[1], fwd.h[4]) <= TOL
        # the last recorded step (5) is before the window's end (6): the final state is still theta_{s+6}
        torch.testing.assert_close(rsub.final_state, fwd.final_state, rtol=0, atol=1e-12)


@pytest.mark.parametrize("opt_kind", OPTIMIZERS)
@pytest.mark.parametrize("model_kind", MODELS)
def test_single_hyperparameter_q1(problem_factory, relerr, model_kind, opt_kind):
    """q = 1 (a single global learning rate)."""
    blocks = [HyperBlock("lr", init=0.01 if opt_kind == "adam" else 0.2)]
    pb = problem_factory(model_kind, opt_kind, blocks=blocks, pretrain=4, window=5)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    assert dyn.hyper.q == 1
    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches)
    assert fwd.h.shape == (5, 1)
    rev = reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint="sqrt")
    fd = finite_difference_hypergradient(dyn.step, val_fn, s, phi, batches)
    assert abs(float(fd[0])) > 1e-8
    assert relerr(fwd.h[-1], fd) <= TOL
    assert relerr(rev.h, fd) <= TOL
    win = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [1, 3, 5])
    assert relerr(win.h, fwd.h[[0, 2, 4]]) <= TOL


@pytest.mark.parametrize("opt_kind", ["sgd", "adam"])
@pytest.mark.parametrize("model_kind", MODELS)
def test_many_example_weights(problem_factory, relerr, model_kind, opt_kind):
    """q >= 200: per-example weights on 240 examples plus lr and decay; FD on a random subset."""
    n = 240
    pb = problem_factory(model_kind, opt_kind, n_train=n, batch_size=40, pretrain=6, window=4, n_features=4)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    q = dyn.hyper.q
    assert q >= 200
    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches, chunk_size=64)
    h = fwd.h[-1]
    rev = reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint=3)
    assert relerr(rev.h, h) <= TOL
    win = reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [1, 2, 4], chunk_size=2)
    assert relerr(win.h, fwd.h[[0, 1, 3]]) <= TOL

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
    fd = finite_difference_hypergradient(dyn.step, val_fn, s, phi, batches, indices=idx)
    assert torch.isnan(fd).sum() == q - len(idx)  # untouched coordinates are NaN
    assert relerr(h[idx], fd[idx]) <= TOL
    assert relerr(rev.h[idx], fd[idx]) <= TOL


def test_theta0_window_matches(problem_factory, relerr):
    """Windows starting at theta_0 (no pretraining) also agree."""
    pb = problem_factory("mlp", "momentum", pretrain=0, window=6)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    fwd = forward_trajectory(dyn.step, val_fn, s, phi, batches)
    fd = finite_difference_hypergradient(dyn.step, val_fn, s, phi, batches)
    assert relerr(fwd.h[-1], fd) <= TOL


def test_engines_reject_bad_inputs(problem_factory):
    pb = problem_factory("logreg", "sgd", pretrain=0, window=3)
    dyn, phi, s, batches, val_fn = pb.dyn, pb.phi, pb.state_s, pb.batches, pb.val_fn
    with pytest.raises(ValueError, match="empty"):
        forward_trajectory(dyn.step, val_fn, s, phi, [])
    with pytest.raises(ValueError, match="1-D"):
        reverse_hypergradient(dyn.step, val_fn, s[None], phi, batches)
    with pytest.raises(ValueError, match="checkpoint"):
        reverse_hypergradient(dyn.step, val_fn, s, phi, batches, checkpoint=0)
    with pytest.raises(ValueError, match="outside the window"):
        forward_trajectory(dyn.step, val_fn, s, phi, batches, record=[4])
    with pytest.raises(ValueError, match="record_steps"):
        reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, [0])
    with pytest.raises(ValueError, match="checkpoint"):
        reverse_window_hypergradients(dyn.step, val_fn, s, phi, batches, checkpoint="sqrt")


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
    assert relerr(rev.h, fwd.h[79]) <= TOL


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
def test_adam_zero_gradient_parameter_is_finite(relerr, model_kind):
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
    fd = finite_difference_hypergradient(dyn.step, val_fn, state, phi, batches)
    assert relerr(fwd.h[-1], fd) <= TOL
    assert relerr(rev.h, fd) <= TOL


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
                               rtol=1e-9, atol=0)

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
    assert relerr(h, fd) <= TOL, (h, fd)


# ---------------------------------------------------------------------------- memory
_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from torch import nn
    from glocal.dynamics import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics
    from glocal.hypergrad import forward_trajectory, reverse_hypergradient

    torch.set_num_threads(1)
    engine = sys.argv[1]
    torch.manual_seed(0)
    d_in, hid, C = 64, 1536, 2
    model = nn.Sequential(nn.Linear(d_in, hid), nn.Tanh(), nn.Linear(hid, C)).to(torch.float64)
    hyper = HyperSpace([HyperBlock("lr", init=0.05), HyperBlock("weight_decay", init=1e-3)])
    dyn = TrainingDynamics(model, OptimizerConfig(kind="sgd"), hyper)
    phi = hyper.init_phi(torch.float64)
    state = dyn.init_state(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (4,), generator=g)
    val_fn = dyn.loss_fn(x, y)

    def peak_mb():
        # VmHWM: this process's own high-water mark. ru_maxrss would start from the RSS of the
        # process that spawned it (Linux keeps it across exec), hiding growth under a large parent.
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # KiB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    def run(tau):
        batches = [Batch(x, y, torch.arange(4), t) for t in range(tau)]
        if engine == "forward_last":
            forward_trajectory(dyn.step, val_fn, state, phi, batches, record=[tau])
        elif engine == "forward_every":
            forward_trajectory(dyn.step, val_fn, state, phi, batches)
        else:
            reverse_hypergradient(dyn.step, val_fn, state, phi, batches)

    run(3)  # warm up allocator and kernels
    out = {"P": dyn.P, "base": peak_mb()}
    run(50)
    out["tau50"] = peak_mb()
    run(500)
    out["tau500"] = peak_mb()
    print(json.dumps(out))
    """
)


def _peak_rss(engine: str) -> dict:
    """Peak RSS (MB) of a fresh process after tau=50 and then after tau=500 (peaks are cumulative)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, engine], capture_output=True, text=True, timeout=300, check=False, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _extra_states_mb(P: int) -> float:
    """What keeping the 450 extra states of tau=500 (vs tau=50) would cost, in MB."""
    return 450 * P * 8 / 2**20


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status (Linux)")


@linux_only
def test_forward_memory_does_not_grow_with_window_but_reverse_does():
    """Peak resident memory, fresh process per engine, peaks after tau=50 and then tau=500.

    The model has P ~ 1e5 float64 entries, so keeping all tau=500 states would cost ~ 350 MB
    more than tau=50: forward mode must stay flat, while reverse mode (which stores the states)
    must visibly grow, proving the measurement detects growth.
    """
    fwd = _peak_rss("forward_last")
    rev = _peak_rss("reverse")
    extra = _extra_states_mb(fwd["P"])
    assert extra > 300
    assert fwd["tau500"] - fwd["tau50"] < 0.1 * extra, (fwd, rev, extra)
    assert fwd["tau500"] / fwd["tau50"] < 1.2, (fwd, rev, extra)
    assert rev["tau500"] - rev["tau50"] > 0.5 * extra, (fwd, rev, extra)
    assert rev["tau500"] / rev["tau50"] > 1.5, (fwd, rev, extra)


@linux_only
# Regression: rows used to be kept as small per-step tensors, which fragmented the heap so that
# resident memory grew with tau; they now go into a preallocated (n_record, q) buffer.
def test_forward_memory_flat_when_recording_every_step():
    fwd = _peak_rss("forward_every")
    extra = _extra_states_mb(fwd["P"])
    assert fwd["tau500"] - fwd["tau50"] < 0.05 * extra, (fwd, extra)
