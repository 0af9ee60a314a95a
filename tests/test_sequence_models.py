"""Tests for the sequence models (GRU, transformer encoder) that read an image row by row:
they equal PyTorch's reference modules, work with every hypergradient engine (forward,
reverse, reverse window and finite differences agree on the lr task's hyperparameters),
have the expected shapes and parameter groups, and are deterministic."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from glocal.config import ConfigError, load_config
from glocal.data import load_dataset
from glocal.dynamics import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics
from glocal.hypergrad import (
    finite_difference_hypergradient,
    forward_trajectory,
    reverse_hypergradient,
    reverse_window_hypergradients,
    unroll,
)
from glocal.models import GRUClassifier, TransformerClassifier, build_model
from glocal.tasks import build_task

KINDS = ["gru", "transformer"]
ENGINE_TOL = 1e-10  # forward vs reverse: the same derivative, summed in a different order
FD_TOL = 1e-7  # central differences with eps 1e-5: truncation ~ eps^2, round-off ~ 1e-16 / eps (measured ~1e-9)


@pytest.fixture(scope="module")
def digits():
    """The digits images (not flattened), float64."""
    return load_dataset("digits", dtype=torch.float64, flatten=False)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("in_shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_output_shapes_and_flat_input(kind, in_shape):
    torch.manual_seed(0)
    model = build_model({"kind": kind}, in_shape, 10).double()
    x = torch.randn(5, *in_shape, dtype=torch.float64)
    out = model(x)
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()
    # the same examples as flat vectors give the same logits
    torch.testing.assert_close(model(x.reshape(5, -1)), out, rtol=0, atol=0)
    assert not any(isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm)) for m in model.modules())


def test_gru_equals_torch_gru():
    """Two GRU layers with nn.GRU's weights give nn.GRU's last hidden state, hence its logits."""
    torch.manual_seed(0)
    model = build_model({"kind": "gru", "hidden_size": 16, "layers": 2}, (1, 8, 8), 10).double()
    assert isinstance(model, GRUClassifier)
    ref = nn.GRU(8, 16, num_layers=2, batch_first=True).double()
    with torch.no_grad():
        for layer, cell in enumerate(model.cells):
            for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                getattr(ref, f"{name}_l{layer}").copy_(getattr(cell, name))
    x = torch.randn(6, 1, 8, 8, dtype=torch.float64)
    out, _ = ref(x.reshape(6, 8, 8))
    torch.testing.assert_close(model(x), model.head(out[:, -1]), rtol=1e-12, atol=1e-12)


def test_colour_rows_are_pixels_in_order():
    """A CIFAR-shaped image is 32 tokens of 32 * 3 values: row t lists pixel 0's (R, G, B), then
    pixel 1's, and so on."""
    torch.manual_seed(0)
    model = build_model({"kind": "gru", "hidden_size": 4}, (3, 32, 32), 10).double()
    assert model.cells[0].input_size == 96
    x = torch.randn(1, 3, 32, 32, dtype=torch.float64)
    rows = torch.stack([torch.cat([x[0, :, t, w] for w in range(32)]) for t in range(32)]).unsqueeze(0)
    torch.testing.assert_close(model(x), model.head(model._layer(model.cells[0], rows)[:, -1]), rtol=0, atol=0)


@pytest.mark.parametrize("heads", [2, 4])
def test_transformer_block_equals_torch_encoder_layer(heads):
    """One encoder block equals nn.TransformerEncoderLayer(norm_first=True, dropout=0) with its weights."""
    torch.manual_seed(0)
    model = build_model(
        {"kind": "transformer", "d_model": 16, "heads": heads, "layers": 1, "d_ff": 24}, (1, 8, 8), 10
    ).double()
    assert isinstance(model, TransformerClassifier)
    block = model.blocks[0]
    ref = nn.TransformerEncoderLayer(16, heads, 24, dropout=0.0, batch_first=True, norm_first=True).double().eval()
    with torch.no_grad():
        for mine, theirs in [
            ("norm1_weight", ref.norm1.weight),
            ("norm1_bias", ref.norm1.bias),
            ("norm2_weight", ref.norm2.weight),
            ("norm2_bias", ref.norm2.bias),
            ("qkv_weight", ref.self_attn.in_proj_weight),
            ("qkv_bias", ref.self_attn.in_proj_bias),
            ("out_weight", ref.self_attn.out_proj.weight),
            ("out_bias", ref.self_attn.out_proj.bias),
            ("ff1_weight", ref.linear1.weight),
            ("ff1_bias", ref.linear1.bias),
            ("ff2_weight", ref.linear2.weight),
            ("ff2_bias", ref.linear2.bias),
        ]:
            theirs.copy_(getattr(block, mine))
    h = torch.randn(3, 8, 16, dtype=torch.float64)
    torch.testing.assert_close(block(h), ref(h), rtol=1e-12, atol=1e-12)


def test_parameter_groups():
    """One learning-rate group per recurrent layer / encoder block, plus embedding and head."""
    gru = build_model({"kind": "gru", "layers": 2}, (1, 8, 8), 10)
    assert TrainingDynamics(gru, OptimizerConfig("sgd"), HyperSpace([])).group_names == ["cells.0", "cells.1", "head"]
    tf = build_model({"kind": "transformer"}, (1, 8, 8), 10)
    dyn = TrainingDynamics(tf, OptimizerConfig("sgd"), HyperSpace([]))
    assert dyn.group_names == ["embed", "blocks.0", "blocks.1", "head"]
    assert "embed.position" in dyn.param_names  # the learned positional embedding is trained


def test_errors():
    for kind in KINDS:
        with pytest.raises(ValueError, match=rf"model\.kind '{kind}'.*flatten=False"):
            build_model({"kind": kind}, (64,), 10)
    with pytest.raises(ValueError, match=r"d_model \(30\).*heads \(4\)"):
        build_model({"kind": "transformer", "d_model": 30, "heads": 4}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="activation"):
        build_model({"kind": "transformer", "activation": "swish"}, (1, 8, 8), 10)
    with pytest.raises(ValueError, match="hidden_size"):
        build_model({"kind": "gru", "hidden_size": 0}, (1, 8, 8), 10)


def test_init_state_resets_every_parameter():
    """init_state(seed) re-draws every parameter, the positional embedding included, so theta_0
    depends on the seed alone and not on the random state the model was built in."""
    for kind in KINDS:
        states = []
        for build_seed in (1, 2):
            torch.manual_seed(build_seed)
            model = build_model({"kind": kind}, (1, 8, 8), 10)
            states.append(TrainingDynamics(model, OptimizerConfig("sgd"), HyperSpace([])).init_state(0))
        assert torch.equal(states[0], states[1]), kind


def _lr_problem(digits, kind: str):
    """The lr task's hyperparameters (per-layer lr, weight decay, momentum) on a slice of digits,
    with a window that starts after three steps of training."""
    torch.manual_seed(0)
    model = build_model({"kind": kind}, digits.in_shape, digits.n_classes).double()
    probe = TrainingDynamics(model, OptimizerConfig("momentum"), HyperSpace([]))
    hyper = HyperSpace(
        [
            HyperBlock("lr", probe.n_groups, init=torch.linspace(0.05, 0.15, probe.n_groups)),
            HyperBlock("weight_decay", init=1e-3),
            HyperBlock("momentum", init=0.8),
        ]
    )
    dyn = TrainingDynamics(model, OptimizerConfig("momentum"), hyper)
    x, y = digits.x_train[:48], digits.y_train[:48]
    g = torch.Generator().manual_seed(0)
    batches = []
    for t in range(7):
        idx = torch.randperm(48, generator=g)[:16]
        batches.append(Batch(x[idx], y[idx], idx, t))
    phi = hyper.init_phi(torch.float64)
    state = unroll(dyn.step, dyn.init_state(0, dtype=torch.float64), phi, batches[:3])
    return dyn, phi, state, batches[3:], dyn.loss_fn(digits.x_val[:40], digits.y_val[:40])


@pytest.mark.parametrize("kind", KINDS)
def test_engines_agree_on_lr_task(digits, relerr, kind):
    dyn, phi, state, batches, val_fn = _lr_problem(digits, kind)
    T, q = len(batches), phi.numel()
    assert q == dyn.n_groups + 2

    fwd = forward_trajectory(dyn.step, val_fn, state, phi, batches)
    assert fwd.h.shape == (T, q) and torch.isfinite(fwd.h).all()
    h = fwd.h[-1]
    assert (h.abs() > 1e-8).all()  # every hyperparameter moves the validation loss: not vacuous

    rev = reverse_hypergradient(dyn.step, val_fn, state, phi, batches)
    assert relerr(rev.h, h) <= ENGINE_TOL, f"reverse: {relerr(rev.h, h):.3g}"
    win = reverse_window_hypergradients(dyn.step, val_fn, state, phi, batches)
    assert win.steps == fwd.steps
    for k in range(T):
        assert relerr(win.h[k], fwd.h[k]) <= ENGINE_TOL, f"reverse window, step {k + 1}"

    fd = finite_difference_hypergradient(dyn.step, val_fn, state, phi, batches, eps=1e-5)
    assert relerr(h, fd) <= FD_TOL, f"forward vs FD: {relerr(h, fd):.3g}"
    assert float((h - fd).abs().max()) <= FD_TOL * float(torch.linalg.norm(fd))


@pytest.mark.parametrize("kind", KINDS)
def test_engines_agree_in_float32(digits, relerr, kind):
    """Runs train in float32: forward and reverse mode still agree to float32's level."""
    dyn, phi, state, batches, _ = _lr_problem(digits, kind)
    dyn.model.float()
    x_val, y_val = digits.x_val[:40].float(), digits.y_val[:40]
    batches = [b._replace(x=b.x.float()) for b in batches]
    phi, state = phi.float(), state.float()
    val_fn = dyn.loss_fn(x_val, y_val)
    fwd = forward_trajectory(dyn.step, val_fn, state, phi, batches)
    assert fwd.h.dtype == torch.float32
    rev = reverse_hypergradient(dyn.step, val_fn, state, phi, batches)
    assert relerr(rev.h, fwd.h[-1]) <= 1e-4


@pytest.mark.parametrize("kind", KINDS)
def test_lr_task_feeds_images_and_is_deterministic(kind):
    """`model: {kind: ...}` validates, the task loads images, and the same seed gives the same
    numbers (a different seed does not)."""
    config = load_config(None, {"tasks": {"lr": {"model": {"kind": kind}, "batch_size": 32}}})

    def train(seed: int) -> torch.Tensor:
        task = build_task(config, "lr", seed, torch.device("cpu"), torch.float64)
        assert task.data.x_train.shape[1:] == (1, 8, 8)
        return unroll(task.dynamics.step, task.init_state(), task.init_phi(), task.batches(0, 3))

    a, b = train(0), train(0)
    assert torch.equal(a, b)
    assert not torch.equal(a, train(1))


def test_schema_rejects_bad_sequence_model_keys():
    with pytest.raises(ConfigError, match="hidden_sizes"):
        load_config(None, {"tasks": {"lr": {"model": {"kind": "gru", "hidden_sizes": 8}}}})
    with pytest.raises(ConfigError, match="heads"):
        load_config(None, {"tasks": {"lr": {"model": {"kind": "transformer", "heads": 0}}}})
    cfg = load_config(None, {"tasks": {"lr": {"model": {"kind": "transformer", "d_model": 16, "heads": 4, "layers": 1}}}})
    assert cfg["tasks"]["lr"]["model"]["d_model"] == 16
