"""The same hypergradient computed with the tools users would pick instead of glocal.

Problem: an ``nn.Module`` trained by SGD with (heavy-ball) momentum, one learning rate per
layer group and one weight decay, all tuned on a log scale:
``phi = (log lr_0, ..., log lr_{G-1}[, log wd])``. The hypergradient is
``d L_val(theta_T(phi)) / d phi`` with theta_0 held fixed, exactly what
:func:`glocal.hypergrad.reverse_hypergradient` returns for the same
:class:`glocal.TrainingDynamics` (coupled L2 weight decay, momentum buffer starting at zero,
dampening 0).

* ``higher`` (0.2.1): ``innerloop_ctx`` on a ``torch.optim.SGD`` with one param group per
  layer; learning rates and weight decay passed as differentiable ``override`` tensors.
* ``torchopt`` (0.7): its functional API, one ``torchopt.sgd`` gradient transformation per
  layer group with a tensor learning rate, ``inplace=False`` updates, backward through the
  whole unrolled graph. torchopt's ``weight_decay`` argument must be a Python number, so the
  differentiable decay ``wd * theta`` is added to the gradient before the transformation.

Each peer is optional: :func:`peer_status` says whether it imports (and why not).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call
from torch.nn import functional as F

from glocal.dynamics import TrainingDynamics

__all__ = ["PEERS", "peer_status", "param_groups", "split_phi", "higher_hypergradient", "torchopt_hypergradient"]

PEERS = ("higher", "torchopt")


def peer_status() -> dict[str, dict[str, Any]]:
    """``{name: {"available": bool, "version": str | None, "reason": str | None}}`` for each peer."""
    out: dict[str, dict[str, Any]] = {}
    for name in PEERS:
        try:
            mod = __import__(name)
            try:
                from importlib.metadata import version

                ver = version(name)
            except Exception:
                ver = getattr(mod, "__version__", "unknown")
            out[name] = {"available": True, "version": ver, "reason": None}
        except Exception as exc:  # ImportError, or a compiled extension that does not load
            out[name] = {"available": False, "version": None,
                         "reason": f"{type(exc).__name__}: {exc}".strip()[:300]}
    return out


def param_groups(dyn: TrainingDynamics) -> list[list[int]]:
    """Indices (into ``dyn.param_names``) of the parameters of each layer group."""
    groups: list[list[int]] = [[] for _ in range(dyn.n_groups)]
    for i, n in enumerate(dyn.param_names):
        owner = n.rsplit(".", 1)[0] if "." in n else ""
        g = dyn.group_names.index(owner) if owner in dyn.group_names else 0
        groups[g].append(i)
    return groups


def split_phi(dyn: TrainingDynamics, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | float]:
    """(per-group learning rates [G], weight decay) as differentiable functions of phi."""
    hp = dyn.hyper.constrain(phi)
    if set(hp) - {"lr", "weight_decay"}:
        raise ValueError(f"peers support tuned 'lr' and 'weight_decay' only, got {sorted(hp)}")
    lr = hp["lr"]
    if lr.numel() == 1:
        lr = lr.expand(dyn.n_groups)
    wd = hp["weight_decay"][0] if "weight_decay" in hp else dyn.optimizer.weight_decay
    return lr, wd


def _check(dyn: TrainingDynamics) -> None:
    if dyn.optimizer.kind != "momentum" or dyn.optimizer.decoupled_weight_decay:
        raise ValueError("peers are set up for heavy-ball momentum SGD with coupled weight decay")
    if dyn.loss_kind != "cross_entropy":
        raise ValueError("peers are set up for the cross-entropy loss")


def _module_at(dyn: TrainingDynamics, state: torch.Tensor) -> torch.nn.Module:
    model = copy.deepcopy(dyn.model)
    with torch.no_grad():
        for p, v in zip(model.parameters(), dyn.params(state.detach()).values()):
            p.copy_(v)
    return model


def higher_hypergradient(
    dyn: TrainingDynamics,
    state: torch.Tensor,
    phi: torch.Tensor,
    batches: Sequence[Any],
    x_val: torch.Tensor,
    y_val: torch.Tensor,
    *,
    model: torch.nn.Module | None = None,
) -> torch.Tensor:
    """h_{0->T} with ``higher.innerloop_ctx`` (differentiable optimizer, overrides for lr and wd).

    ``model``: a module already holding the parameters of ``state`` (built when None; pass one
    to keep the copy out of a timing).
    """
    import higher

    _check(dyn)
    model = _module_at(dyn, state) if model is None else model
    params = list(model.parameters())
    groups = param_groups(dyn)
    opt = torch.optim.SGD([{"params": [params[i] for i in g]} for g in groups], lr=0.1,
                          momentum=dyn.optimizer.momentum, weight_decay=0.0)
    phi = phi.detach().requires_grad_(True)
    lr, wd = split_phi(dyn, phi)
    override = {"lr": [lr[g] for g in range(len(groups))], "weight_decay": [wd] * len(groups)}
    with higher.innerloop_ctx(model, opt, copy_initial_weights=True, override=override) as (fmodel, diffopt):
        for b in batches:
            diffopt.step(F.cross_entropy(fmodel(b.x), b.y))
        val = F.cross_entropy(fmodel(x_val), y_val)
        (h,) = torch.autograd.grad(val, phi)
    return h.detach()


def torchopt_hypergradient(
    dyn: TrainingDynamics,
    state: torch.Tensor,
    phi: torch.Tensor,
    batches: Sequence[Any],
    x_val: torch.Tensor,
    y_val: torch.Tensor,
) -> torch.Tensor:
    """h_{0->T} with torchopt's functional API (differentiable ``torchopt.sgd`` per layer group)."""
    import torchopt

    _check(dyn)
    groups = param_groups(dyn)
    names = dyn.param_names
    phi = phi.detach().requires_grad_(True)
    lr, wd = split_phi(dyn, phi)
    params = [v.detach().clone().requires_grad_(True) for v in dyn.params(state.detach()).values()]
    # torchopt's own weight_decay must be a Python number (it goes to ``Tensor.add(alpha=)``), so
    # the differentiable decay is added to the gradient by hand, as torch.optim.SGD does.
    opts = [torchopt.sgd(lr=lr[g], momentum=dyn.optimizer.momentum, moment_requires_grad=True)
            for g in range(len(groups))]
    states = [o.init(tuple(params[i] for i in g)) for o, g in zip(opts, groups)]

    def loss_of(ps: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(dyn.model, dict(zip(names, ps)), (x,)), y)

    for b in batches:
        grads = torch.autograd.grad(loss_of(params, b.x, b.y), params, create_graph=True)
        new = list(params)
        for k, (o, g) in enumerate(zip(opts, groups)):
            gp = tuple(params[i] for i in g)
            gg = tuple(grads[i] + wd * params[i] for i in g)
            upd, states[k] = o.update(gg, states[k], params=gp, inplace=False)
            for i, p in zip(g, torchopt.apply_updates(gp, upd, inplace=False)):
                new[i] = p
        params = new
    (h,) = torch.autograd.grad(loss_of(params, x_val, y_val), phi)
    return h.detach()
