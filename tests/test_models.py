"""Tests for glocal.models: shapes, torch.func compatibility, layer groups."""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call, jacrev, jvp, vjp, vmap

from glocal.models import MODEL_KINDS, build_model, layer_groups

SPECS = [
    ({"kind": "logreg"}, (64,)),
    ({"kind": "mlp", "hidden": [16, 8]}, (64,)),
    ({"kind": "mlp", "hidden": [16], "activation": "tanh"}, (64,)),
    ({"kind": "logreg"}, (1, 8, 8)),
    ({"kind": "cnn", "channels": [4, 8]}, (1, 8, 8)),
    ({"kind": "cnn", "channels": [4, 8, 8], "norm": "none", "pool": "avg"}, (1, 8, 8)),
    ({"kind": "wrn", "depth": 10, "width": 1}, (1, 8, 8)),
    ({"kind": "gru", "hidden_size": 8}, (1, 8, 8)),
    ({"kind": "gru", "hidden_size": 6, "layers": 2}, (1, 8, 8)),
    ({"kind": "transformer", "d_model": 8, "heads": 2, "d_ff": 12}, (1, 8, 8)),
    ({"kind": "transformer", "d_model": 8, "heads": 4, "layers": 1, "activation": "gelu"}, (1, 8, 8)),
]


def _params(model, dtype=torch.float64):
    return {k: v.detach().to(dtype) for k, v in model.named_parameters()}


@pytest.mark.parametrize("spec,in_shape", SPECS)
def test_forward_shape(spec, in_shape):
    torch.manual_seed(0)
    model = build_model(spec, in_shape, 10)
    x = torch.randn(5, *in_shape)
    out = model(x)
    assert out.shape == (5, 10)
    assert torch.isfinite(out).all()
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.Dropout) for m in model.modules())


@pytest.mark.parametrize("spec,in_shape", SPECS)
def test_torch_func(spec, in_shape):
    torch.manual_seed(0)
    model = build_model(spec, in_shape, 10).to(torch.float64)
    params = _params(model)
    x = torch.randn(3, *in_shape, dtype=torch.float64)
    y = torch.tensor([0, 1, 2])

    def loss(p):
        return torch.nn.functional.cross_entropy(functional_call(model, p, (x,)), y)

    grads = jacrev(loss)(params)
    assert set(grads) == set(params)
    assert all(torch.isfinite(g).all() for g in grads.values())

    tangent = {k: torch.randn_like(v) for k, v in params.items()}
    val, dval = jvp(loss, (params,), (tangent,))
    assert torch.isfinite(val) and torch.isfinite(dval)
    # jvp agrees with the reverse-mode gradient
    expected = sum((grads[k] * tangent[k]).sum() for k in params)
    torch.testing.assert_close(dval, expected)

    # forward-over-reverse (Hessian-vector product), as used by hypergradients
    def grad_dot(p):
        g = jacrev(loss)(p)
        return sum((g[k] * tangent[k]).sum() for k in p)

    _, hvp = jvp(lambda p: jacrev(loss)(p), (params,), (tangent,))
    assert all(torch.isfinite(h).all() for h in hvp.values())
    _, pullback = vjp(grad_dot, params)
    (hvp2,) = pullback(torch.ones((), dtype=torch.float64))
    for k in params:
        torch.testing.assert_close(hvp[k], hvp2[k])

    # vmap over per-example inputs
    per_ex = vmap(lambda xi: functional_call(model, params, (xi.unsqueeze(0),)).squeeze(0))(x)
    torch.testing.assert_close(per_ex, functional_call(model, params, (x,)))


def test_wrn_cifar_shape():
    torch.manual_seed(0)
    model = build_model({"kind": "wrn", "depth": 10, "width": 1}, (3, 32, 32), 10)
    out = model(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    params = dict(model.named_parameters())
    x = torch.randn(2, 3, 32, 32)

    def loss(p):
        return functional_call(model, p, (x,)).square().mean()

    g = jacrev(loss)(params)
    assert all(torch.isfinite(v).all() for v in g.values())


def test_cnn_mnist_and_cifar_shapes():
    for in_shape in [(1, 28, 28), (3, 32, 32)]:
        model = build_model({"kind": "cnn", "channels": [4, 8]}, in_shape, 10)
        assert model(torch.randn(2, *in_shape)).shape == (2, 10)


@pytest.mark.parametrize(
    "spec,in_shape",
    SPECS + [({"kind": "wrn", "depth": 16, "width": 2}, (3, 32, 32))],
)
def test_layer_groups_cover_all_params_once(spec, in_shape):
    model = build_model(spec, in_shape, 10)
    groups = layer_groups(model)
    flat = [n for g in groups for n in g]
    assert sorted(flat) == sorted(n for n, _ in model.named_parameters())
    assert len(flat) == len(set(flat))
    assert all(len(g) >= 1 for g in groups)


def test_layer_groups_order_and_pairs():
    model = build_model({"kind": "mlp", "hidden": [16, 8]}, (64,), 10)
    groups = layer_groups(model)
    assert len(groups) == 3
    assert [sorted(g) for g in groups] == [
        ["net.1.bias", "net.1.weight"],
        ["net.3.bias", "net.3.weight"],
        ["net.5.bias", "net.5.weight"],
    ]
    # forward order: input layer first, head last
    params = dict(model.named_parameters())
    assert params[groups[0][0]].shape[-1] in (64, 16)
    assert params["net.5.weight"].shape == (10, 8)
    assert layer_groups(build_model({"kind": "logreg"}, (64,), 10)) == [["net.1.weight", "net.1.bias"]]


def test_errors():
    with pytest.raises(ValueError, match=r"model\.kind.*logreg"):
        build_model({"kind": "resnet"}, (64,), 10)
    with pytest.raises(ValueError, match="flatten=False"):
        build_model({"kind": "cnn"}, (64,), 10)
    with pytest.raises(ValueError, match="depth"):
        build_model({"kind": "wrn", "depth": 12}, (3, 32, 32), 10)
    with pytest.raises(ValueError, match="activation"):
        build_model({"kind": "mlp", "hidden": [4], "activation": "swish"}, (64,), 10)
    assert set(MODEL_KINDS) == {"logreg", "mlp", "cnn", "wrn", "gru", "transformer"}
