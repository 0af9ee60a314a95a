"""Tests for glocal.dynamics: the hyperparameter space and the pure optimizer step."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glocal.dynamics import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics

F64 = torch.float64


def _mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 3)).to(F64)


def _data(n: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g, dtype=F64)
    y = torch.randint(0, 3, (n,), generator=g)
    return x, y


# ---------------------------------------------------------------------------- HyperSpace
def test_hyperspace_round_trip_and_names():
    w = torch.tensor([0.1, 0.5, 0.9])
    space = HyperSpace(
        [
            HyperBlock("lr", size=2, init=torch.tensor([0.05, 0.2])),
            HyperBlock("momentum", init=0.9),
            HyperBlock("example_weight", size=3, init=w),
            HyperBlock("weight_decay", transform="identity", init=-0.3),
        ]
    )
    assert space.q == 7
    assert space.names() == ["lr[0]", "lr[1]", "momentum", "example_weight[0]", "example_weight[1]",
                             "example_weight[2]", "weight_decay"]
    assert space.block("lr").transform == "log" and space.block("momentum").transform == "logit"
    phi = space.init_phi(F64)
    assert phi.shape == (7,) and phi.dtype == F64
    vals = space.constrain(phi)
    torch.testing.assert_close(vals["lr"], torch.tensor([0.05, 0.2], dtype=F64))
    torch.testing.assert_close(vals["momentum"], torch.tensor([0.9], dtype=F64))
    torch.testing.assert_close(vals["example_weight"], w.to(F64))
    torch.testing.assert_close(vals["weight_decay"], torch.tensor([-0.3], dtype=F64))
    torch.testing.assert_close(phi[space.slice("lr")], torch.log(torch.tensor([0.05, 0.2], dtype=F64)))
    assert "lr" in space and "beta1" not in space
    # constrain is differentiable
    phi.requires_grad_(True)
    space.constrain(phi)["lr"].sum().backward()
    torch.testing.assert_close(phi.grad[:2], torch.tensor([0.05, 0.2], dtype=F64))


def test_hyperspace_errors():
    with pytest.raises(ValueError, match="transform"):
        HyperBlock("lr", transform="sqrt")
    with pytest.raises(ValueError, match="size"):
        HyperBlock("lr", size=0)
    with pytest.raises(ValueError, match="duplicate"):
        HyperSpace([HyperBlock("lr"), HyperBlock("lr")])
    with pytest.raises(ValueError, match="init has 2 values"):
        HyperSpace([HyperBlock("example_weight", size=3, init=[0.5, 0.5])]).init_phi()
    with pytest.raises(ValueError, match="positive"):
        HyperSpace([HyperBlock("lr", init=0.0)]).init_phi()
    with pytest.raises(ValueError, match="between 0 and 1"):
        HyperSpace([HyperBlock("momentum", init=1.0)]).init_phi()
    space = HyperSpace([HyperBlock("lr"), HyperBlock("weight_decay")])
    with pytest.raises(ValueError, match="q=2"):
        space.constrain(torch.zeros(3))
    with pytest.raises(KeyError):
        space.block("nope")
    assert HyperSpace([]).init_phi().shape == (0,)
    assert HyperSpace([]).init_phi(F64).dtype == F64  # an empty phi still has the requested dtype
    # a block without a standard name defaults to the identity transform (TrainingDynamics refuses it later)
    assert HyperBlock("my_scale").transform == "identity"


# ---------------------------------------------------------------------------- TrainingDynamics errors
def test_dynamics_configuration_errors():
    model = _mlp()
    with pytest.raises(ValueError, match="'lr'"):
        TrainingDynamics(model, OptimizerConfig(), HyperSpace([HyperBlock("lr", size=3)]))
    with pytest.raises(ValueError, match="learning_rate"):
        TrainingDynamics(model, OptimizerConfig(), HyperSpace([HyperBlock("learning_rate")]))
    with pytest.raises(ValueError, match="kind"):
        OptimizerConfig(kind="rmsprop")
    with pytest.raises(ValueError, match="beta1"):
        TrainingDynamics(model, OptimizerConfig(kind="sgd"), HyperSpace([HyperBlock("beta1", init=0.9)]))
    with pytest.raises(ValueError, match="beta1/beta2"):
        TrainingDynamics(model, OptimizerConfig(kind="momentum"), HyperSpace([HyperBlock("beta2", init=0.99)]))
    with pytest.raises(ValueError, match="momentum"):
        TrainingDynamics(model, OptimizerConfig(kind="adam"), HyperSpace([HyperBlock("momentum", init=0.9)]))
    with pytest.raises(ValueError, match="loss"):
        TrainingDynamics(model, OptimizerConfig(), HyperSpace([]), loss="hinge")
    with pytest.raises(ValueError, match="param_groups"):
        TrainingDynamics(model, OptimizerConfig(), HyperSpace([]), param_groups="neuron")
    dyn = TrainingDynamics(model, OptimizerConfig(), HyperSpace([HyperBlock("lr")]), param_groups="all")
    assert dyn.n_groups == 1 and dyn.group_names == ["all"]


@pytest.mark.parametrize("kind,n_buf,n_count", [("sgd", 0, 0), ("momentum", 1, 0), ("nesterov", 1, 0), ("adam", 2, 1)])
def test_state_layout(kind, n_buf, n_count):
    dyn = TrainingDynamics(_mlp(), OptimizerConfig(kind=kind), HyperSpace([HyperBlock("lr")]))
    assert dyn.n_groups == 2 and dyn.n_params == 4 * 5 + 5 + 5 * 3 + 3
    assert dyn.P == dyn.n_params * (1 + n_buf) + n_count
    s = dyn.init_state(3, dtype=F64)
    assert s.shape == (dyn.P,) and torch.all(s[dyn.n_params :] == 0)
    torch.testing.assert_close(s, dyn.init_state(3, dtype=F64))
    assert not torch.equal(s, dyn.init_state(4, dtype=F64))
    p = dyn.params(s)
    assert p["0.weight"].shape == (5, 4) and p["2.bias"].shape == (3,)
    # the requested dtype, whatever the model's (float64 here): parameters rounded, buffers zero
    s32 = dyn.init_state(3, dtype=torch.float32)
    assert s32.dtype == torch.float32 and torch.equal(s32, s.float())
    torch.testing.assert_close(dyn.flatten_params(p), s[: dyn.n_params])


# ---------------------------------------------------------------------------- the step
@pytest.mark.parametrize("kind", ["sgd", "momentum", "adam"])
@pytest.mark.parametrize("frozen", [0, 1])
def test_per_layer_lr_only_moves_its_layer(kind, frozen):
    """lr[frozen] = 0 leaves exactly that layer's parameters unchanged."""
    lr = torch.tensor([0.1, 0.1], dtype=F64)
    lr[frozen] = 0.0
    hyper = HyperSpace([HyperBlock("lr", size=2, transform="identity", init=lr)])
    dyn = TrainingDynamics(_mlp(), OptimizerConfig(kind=kind), hyper)
    assert dyn.group_names == ["0", "2"]
    x, y = _data()
    state = dyn.init_state(0, dtype=F64)
    phi = hyper.init_phi(F64)
    new = state
    for t in range(3):
        new = dyn.step(new, phi, Batch(x, y, torch.arange(10), t))
    before, after = dyn.params(state), dyn.params(new)
    for name in before:
        layer = 0 if name.startswith("0.") else 1
        if layer == frozen:
            assert torch.equal(before[name], after[name]), name
        else:
            assert not torch.equal(before[name], after[name]), name


@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "adam"])
def test_step_matches_torch_optim(kind):
    """Several steps of the pure step equal torch.optim with the same (coupled) weight decay."""
    x, y = _data(12)
    model = _mlp(1)
    cfg = OptimizerConfig(kind=kind, lr=0.05, weight_decay=0.01, momentum=0.8, beta1=0.85, beta2=0.97)
    dyn = TrainingDynamics(model, cfg, HyperSpace([]))
    state = dyn.init_state(dtype=F64)
    phi = torch.zeros(0, dtype=F64)
    ref = _mlp(1)
    if kind == "adam":
        opt = torch.optim.Adam(ref.parameters(), lr=0.05, betas=(0.85, 0.97), eps=1e-8, weight_decay=0.01)
    else:
        mom = 0.0 if kind == "sgd" else 0.8
        opt = torch.optim.SGD(ref.parameters(), lr=0.05, momentum=mom, nesterov=kind == "nesterov",
                              weight_decay=0.01)
    for t in range(4):
        state = dyn.step(state, phi, Batch(x, y, torch.arange(12), t))
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    got = dyn.params(state)
    for name, p in ref.named_parameters():
        torch.testing.assert_close(got[name], p.detach(), rtol=1e-10, atol=1e-12)
    # the optimizer's buffers by name, each equal to torch.optim's (parameter-sized, in parameter order)
    buffers = dyn.optimizer_state(state)
    names = {"sgd": [], "momentum": ["momentum_buffer"], "nesterov": ["momentum_buffer"],
             "adam": ["exp_avg", "exp_avg_sq"]}[kind]
    assert sorted(buffers) == sorted(names + (["step"] if kind == "adam" else []))
    for key in names:
        want = torch.cat([opt.state[p][key].reshape(-1) for p in ref.parameters()])
        assert buffers[key].shape == (dyn.n_params,)
        torch.testing.assert_close(buffers[key], want, rtol=1e-10, atol=1e-12)


def test_decoupled_weight_decay_matches_adamw():
    x, y = _data(12)
    cfg = OptimizerConfig(kind="adam", lr=0.05, weight_decay=0.1, decoupled_weight_decay=True)
    dyn = TrainingDynamics(_mlp(2), cfg, HyperSpace([]))
    state = dyn.init_state(dtype=F64)
    ref = _mlp(2)
    opt = torch.optim.AdamW(ref.parameters(), lr=0.05, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    for t in range(3):
        state = dyn.step(state, torch.zeros(0, dtype=F64), Batch(x, y, torch.arange(12), t))
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    for name, p in ref.named_parameters():
        torch.testing.assert_close(dyn.params(state)[name], p.detach(), rtol=1e-10, atol=1e-12)


def test_tuned_values_override_config_and_example_weights_enter_the_loss():
    x, y = _data(8)
    w = torch.linspace(0.1, 0.9, 8, dtype=F64)
    hyper = HyperSpace([HyperBlock("lr", init=0.3), HyperBlock("example_weight", size=8, init=w)])
    dyn = TrainingDynamics(_mlp(), OptimizerConfig(kind="sgd", lr=123.0), hyper)
    state = dyn.init_state(0, dtype=F64)
    phi = hyper.init_phi(F64)
    idx = torch.tensor([5, 1, 6, 2])  # a mini-batch whose weights are looked up by index
    new = dyn.step(state, phi, Batch(x[idx], y[idx], idx, 0))
    theta = state[: dyn.n_params].clone().requires_grad_(True)
    losses = dyn._per_example_loss(theta, x[idx], y[idx])
    (w[idx] * losses).mean().backward()
    torch.testing.assert_close(new, state - 0.3 * theta.grad, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(dyn.train_loss(state, phi, Batch(x[idx], y[idx], idx, 0)), (w[idx] * losses).mean())


def test_mse_loss_and_metrics():
    model = nn.Linear(3, 1, bias=False).to(F64)
    dyn = TrainingDynamics(model, OptimizerConfig(), HyperSpace([]), loss="mse")
    state = torch.tensor([1.0, -1.0, 2.0], dtype=F64)
    x = torch.eye(3, dtype=F64)
    y = torch.zeros(3, dtype=F64)
    # mean of 0.5 * (x_i^T theta - y_i)^2 = 0.5 * (1 + 1 + 4) / 3
    assert float(dyn.loss(state, x, y)) == pytest.approx(1.0)
    assert float(dyn.loss_fn(x, y)(state, torch.zeros(0))) == pytest.approx(1.0)
    # nonzero targets: 0.5 * mean of (x_i^T theta - y_i)^2 = 0.5 * ((1 - 0.5)^2 + (-1 + 2)^2 + (2 - 3)^2) / 3
    y = torch.tensor([0.5, -2.0, 3.0], dtype=F64)
    assert float(dyn.loss(state, x, y)) == pytest.approx(0.5 * (0.25 + 1.0 + 1.0) / 3, rel=1e-15)
    clf = TrainingDynamics(_mlp(), OptimizerConfig(), HyperSpace([]))
    xs, ys = _data(20)
    state = clf.init_state(0, dtype=F64)
    # predictions computed without the library: the flat state's leading entries are the parameters in order
    model, params, offset = _mlp(), {}, 0
    for name, numel, shape in zip(clf.param_names, clf.param_numels, clf.param_shapes):
        params[name] = state[offset : offset + numel].reshape(shape)
        offset += numel
    pred = torch.func.functional_call(model, params, (xs,)).argmax(dim=1)
    assert clf.accuracy(state, xs, ys) == pytest.approx(float((pred == ys).double().mean()), abs=1e-15)
    assert clf.accuracy(state, xs, pred) == 1.0  # labels equal to the predictions
    assert clf.accuracy(state, xs, (pred + 1) % 3) == 0.0  # labels that are never predicted
    assert "TrainingDynamics" in repr(clf)


# ---------------------------------------------------------------------------- Adam's step counter
@pytest.mark.parametrize(
    "weight_decay,decoupled", [(0.0, False), (0.01, False), (0.1, True)], ids=["adam", "adam-l2", "adamw"]
)
def test_adam_counts_its_steps_in_the_state_like_torch_optim(weight_decay, decoupled):
    """Batches built the quick-start way (``[batch] * T``, every ``Batch.step`` 0) follow
    torch.optim.Adam / AdamW step for step, buffers and step count included: the bias correction
    reads the counter in the state, not the batch."""
    x, y = _data(12)
    cfg = OptimizerConfig(kind="adam", lr=0.05, beta1=0.85, beta2=0.97, weight_decay=weight_decay,
                          decoupled_weight_decay=decoupled)
    dyn = TrainingDynamics(_mlp(3), cfg, HyperSpace([]))
    assert dyn.P == 3 * dyn.n_params + 1
    ref = _mlp(3)
    kind = torch.optim.AdamW if decoupled else torch.optim.Adam
    opt = kind(ref.parameters(), lr=0.05, betas=(0.85, 0.97), eps=1e-8, weight_decay=weight_decay)
    state = dyn.init_state(dtype=F64)
    phi = torch.zeros(0, dtype=F64)
    batches = [Batch(x, y, torch.arange(12))] * 8
    assert all(b.step == 0 for b in batches)
    for t, b in enumerate(batches, start=1):
        state = dyn.step(state, phi, b)
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
        got = dyn.params(state)
        buffers = dyn.optimizer_state(state)
        assert float(buffers["step"]) == t
        m, v = dyn.params(buffers["exp_avg"]), dyn.params(buffers["exp_avg_sq"])  # laid out like the parameters
        for name, p in ref.named_parameters():
            torch.testing.assert_close(got[name], p.detach(), rtol=1e-10, atol=1e-12, msg=f"step {t}, {name}")
            st = opt.state[p]
            assert float(st["step"]) == t
            torch.testing.assert_close(m[name], st["exp_avg"], rtol=1e-10, atol=1e-14)
            torch.testing.assert_close(v[name], st["exp_avg_sq"], rtol=1e-10, atol=1e-16)


def test_adam_window_from_a_trained_state_carries_the_counter():
    """A window that starts mid-training continues torch.optim.Adam's trajectory: theta_s from
    ``s`` steps holds the counter s, so the next steps use the bias correction of steps s+1, ..."""
    x, y = _data(12)
    cfg = OptimizerConfig(kind="adam", lr=0.05, beta1=0.8, beta2=0.9)
    dyn = TrainingDynamics(_mlp(4), cfg, HyperSpace([]))
    ref = _mlp(4)
    opt = torch.optim.Adam(ref.parameters(), lr=0.05, betas=(0.8, 0.9), eps=1e-8)
    phi = torch.zeros(0, dtype=F64)
    full = Batch(x, y, torch.arange(12))
    state_s = dyn.init_state(dtype=F64)
    for _ in range(5):
        state_s = dyn.step(state_s, phi, full)
    assert float(dyn.optimizer_state(state_s)["step"]) == 5
    state = state_s
    for _ in range(3):  # the window: batches numbered 0.. again, as a fresh list would be
        state = dyn.step(state, phi, full)
    for _ in range(8):
        opt.zero_grad()
        nn.functional.cross_entropy(ref(x), y).backward()
        opt.step()
    for name, p in ref.named_parameters():
        torch.testing.assert_close(dyn.params(state)[name], p.detach(), rtol=1e-10, atol=1e-12)
    # Control: the same window from the state with its counter reset is a different trajectory.
    reset = state_s.clone()
    reset[-1] = 0
    for _ in range(3):
        reset = dyn.step(reset, phi, full)
    assert not torch.allclose(reset, state, rtol=1e-6, atol=0)


def test_state_of_the_wrong_length_is_refused():
    dyn = TrainingDynamics(_mlp(), OptimizerConfig(kind="adam"), HyperSpace([]))
    x, y = _data()
    old_layout = dyn.init_state(dtype=F64)[:-1]  # Adam's state before the step counter was kept
    with pytest.raises(ValueError, match=f"P={dyn.P}"):
        dyn.step(old_layout, torch.zeros(0, dtype=F64), Batch(x, y, torch.arange(10)))


# ---------------------------------------------------------------------------- the fast paths are the same maths
class _Tied(nn.Module):
    """An encoder and a decoder sharing one weight (a tied parameter: two owners, one name)."""

    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(4, 3)
        self.dec = nn.Linear(3, 4)
        self.dec.weight = nn.Parameter(self.enc.weight.detach().t().contiguous())
        self.head = nn.Linear(4, 3)
        self.head.weight = self.enc.weight  # tied: named_parameters() lists it once, under enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.tanh(self.dec(torch.tanh(self.enc(x)))))


class _Recurrent(nn.Module):
    """nn.GRU keeps derived views of its weights and a custom __setattr__: it must go through functional_call."""

    def __init__(self) -> None:
        super().__init__()
        self.gru = nn.GRU(2, 3, batch_first=True)
        self.out = nn.Linear(3, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.gru(x.reshape(x.shape[0], 2, 2))[0][:, -1])


@pytest.mark.parametrize("make", [_mlp, _Tied, _Recurrent], ids=["mlp", "tied", "gru"])
def test_parameter_swap_is_functional_call(make):
    """The step's parameter swap gives functional_call's output and gradient, and puts the module's
    own parameters back (also when the forward raises)."""
    from torch.func import functional_call

    torch.manual_seed(0)
    model = make().to(F64)
    dyn = TrainingDynamics(model, OptimizerConfig(), HyperSpace([]))
    assert dyn._swap.direct == (make is not _Recurrent)
    originals = [p for p in model.parameters()]
    x, _ = _data(6)
    flat = torch.randn(dyn.n_params, dtype=F64, requires_grad=True)
    got = dyn._call(flat, x)
    want = functional_call(model, dyn.params(flat), (x,))
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    (g1,) = torch.autograd.grad(got.square().sum(), flat)
    (g2,) = torch.autograd.grad(want.square().sum(), flat)
    torch.testing.assert_close(g1, g2, rtol=1e-12, atol=1e-14)
    assert all(a is b for a, b in zip(model.parameters(), originals))
    with pytest.raises(RuntimeError):
        dyn._call(flat, torch.zeros(6, 5, dtype=F64))  # wrong input width: the forward raises
    assert all(a is b for a, b in zip(model.parameters(), originals))


@pytest.mark.parametrize("kind", ["sgd", "momentum", "nesterov", "adam"])
def test_autograd_and_functorch_paths_of_the_step_agree(kind):
    """The step takes its gradient by plain autograd outside torch.func transforms and by
    torch.func.grad inside them: values, vector-Jacobian products (torch.func.vjp against
    torch.autograd.grad) and Jacobian-vector products (torch.func.jvp against forward-mode dual
    tensors) agree in float64, with every hyperparameter tuned, mixed transforms included."""
    import torch.autograd.forward_ad as fwAD
    from torch.func import jvp, vjp

    x, y = _data(10)
    blocks = [HyperBlock("lr", size=2, init=[0.05, 0.1]), HyperBlock("weight_decay", init=0.01),
              HyperBlock("example_weight", size=10, init=0.6)]
    if kind in ("momentum", "nesterov"):
        blocks.append(HyperBlock("momentum", init=0.8))
    if kind == "adam":
        blocks += [HyperBlock("beta1", init=0.85), HyperBlock("beta2", init=0.95)]
    hyper = HyperSpace(blocks)
    dyn = TrainingDynamics(_mlp(5), OptimizerConfig(kind=kind), hyper)
    phi = hyper.init_phi(F64) + 0.1 * torch.randn(hyper.q, dtype=F64, generator=torch.Generator().manual_seed(1))
    batch = Batch(x[:6], y[:6], torch.arange(6))
    state = dyn.init_state(0, dtype=F64)
    for _ in range(2):
        state = dyn.step(state, phi, batch)
    g = torch.Generator().manual_seed(2)
    cot = torch.randn(dyn.P, generator=g, dtype=F64)
    ts, tp = torch.randn(dyn.P, generator=g, dtype=F64), torch.randn(hyper.q, generator=g, dtype=F64)
    if kind == "adam":
        # Only parameter directions: Adam's second moment is tiny after two steps and a random
        # perturbation of it would cross sqrt's kink at 0; the step counter carries no tangent.
        ts[dyn.n_params :] = 0

    def f(s, p):
        return dyn.step(s, p, batch)

    out_func, vjp_fn = vjp(f, state, phi)
    s_ = state.clone().requires_grad_(True)
    p_ = phi.clone().requires_grad_(True)
    out_auto = f(s_, p_)
    torch.testing.assert_close(out_func, out_auto.detach(), rtol=1e-14, atol=1e-15)
    for a, b in zip(vjp_fn(cot), torch.autograd.grad(out_auto, (s_, p_), cot)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-13)
    _, tangent_func = jvp(f, (state, phi), (ts, tp))
    with fwAD.dual_level():
        out_dual = f(fwAD.make_dual(state, ts), fwAD.make_dual(phi, tp))
        tangent_dual = fwAD.unpack_dual(out_dual).tangent
    torch.testing.assert_close(tangent_func, tangent_dual, rtol=1e-11, atol=1e-13)
    # and the JVP is the directional derivative (central differences)
    eps = 1e-6
    fd = (f(state + eps * ts, phi + eps * tp) - f(state - eps * ts, phi - eps * tp)) / (2 * eps)
    assert float((tangent_func - fd).norm() / fd.norm()) < 1e-7


def test_fused_transform_equals_constrain_and_stays_finite():
    """The step's one-pass transform of phi gives HyperSpace.constrain's values, and an overflowing
    exponential in an untaken branch (a logit coordinate far out) leaves values and gradients finite."""
    hyper = HyperSpace([HyperBlock("lr", size=2, init=[0.05, 0.2]), HyperBlock("momentum", init=0.9),
                        HyperBlock("weight_decay", transform="identity", init=-0.3),
                        HyperBlock("example_weight", size=3, init=0.5)])
    dyn = TrainingDynamics(_mlp(), OptimizerConfig(kind="momentum"), hyper)
    phi = hyper.init_phi(F64)
    phi[hyper.slice("example_weight")] = torch.tensor([1000.0, -1000.0, 0.0], dtype=F64)
    phi.requires_grad_(True)
    vals = dyn._constrained(phi)
    ref = hyper.constrain(phi)
    for b in hyper.blocks:
        torch.testing.assert_close(vals[hyper.slice(b.name)], ref[b.name], rtol=1e-15, atol=0)
    (grad,) = torch.autograd.grad(vals.sum(), phi)
    assert torch.isfinite(grad).all()
    assert dyn._value(vals, "momentum").ndim == 0 and dyn._value(vals, "beta1") == 0.9
