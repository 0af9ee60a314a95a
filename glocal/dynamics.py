"""Inner training as a pure, differentiable dynamical system.

One optimizer step is a pure function ``state_{t+1} = step(state_t, phi, batch_t)`` on a
*flat* state vector (model parameters, then the optimizer's buffers, then Adam's step
counter), so that forward- and reverse-mode hypergradient engines can treat every model and
optimizer the same way. Hyperparameters live in an unconstrained vector ``phi`` in R^q; named blocks map
slices of ``phi`` to their constrained values through a transform (``log`` for rates and
decay, ``logit`` for momentum, betas and per-example weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.func import functional_call
from torch.func import grad as func_grad
from torch.nn import functional as F

__all__ = [
    "Batch",
    "HyperBlock",
    "HyperSpace",
    "OptimizerConfig",
    "TrainingDynamics",
    "TRANSFORMS",
    "DEFAULT_TRANSFORMS",
]

TRANSFORMS = ("log", "logit", "identity")

#: The transform each standard hyperparameter uses unless told otherwise.
DEFAULT_TRANSFORMS = {
    "lr": "log",
    "weight_decay": "log",
    "momentum": "logit",
    "beta1": "logit",
    "beta2": "logit",
    "example_weight": "logit",
}

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam")


class Batch(NamedTuple):
    """One mini-batch: inputs, targets, their indices in the training set, and the global step.

    ``step`` is informational (the batch schedule's step number): the step itself never reads
    it. Adam's bias correction counts its steps in the state, as ``torch.optim.Adam`` does, so
    ``[batch] * T`` and batches with explicit step numbers give the same trajectory.
    """

    x: torch.Tensor
    y: torch.Tensor
    index: torch.Tensor
    step: int = 0


def _forward_transform(kind: str, u: torch.Tensor) -> torch.Tensor:
    if kind == "log":
        return torch.exp(u)
    if kind == "logit":
        return torch.sigmoid(u)
    return u


def _inverse_transform(kind: str, v: torch.Tensor) -> torch.Tensor:
    if kind == "log":
        if torch.any(v <= 0):
            raise ValueError(f"a 'log' hyperparameter needs a positive initial value, got {v.min().item()}")
        return torch.log(v)
    if kind == "logit":
        if torch.any((v <= 0) | (v >= 1)):
            raise ValueError("a 'logit' hyperparameter needs an initial value strictly between 0 and 1")
        return torch.log(v) - torch.log1p(-v)
    return v


@dataclass
class HyperBlock:
    """A named block of ``size`` coordinates of phi with a transform and an initial (constrained) value."""

    name: str
    size: int = 1
    transform: str | None = None
    init: float | Sequence[float] | torch.Tensor = 0.1

    def __post_init__(self) -> None:
        if self.transform is None:
            self.transform = DEFAULT_TRANSFORMS.get(self.name, "identity")
        if self.transform not in TRANSFORMS:
            raise ValueError(
                f"hyperparameter {self.name!r}: transform must be one of {TRANSFORMS}, got {self.transform!r}"
            )
        if int(self.size) < 1:
            raise ValueError(f"hyperparameter {self.name!r}: size must be >= 1, got {self.size}")
        self.size = int(self.size)


@dataclass
class HyperSpace:
    """The hyperparameters being tuned, as an unconstrained vector phi of length ``q``."""

    blocks: list[HyperBlock] = field(default_factory=list)

    def __post_init__(self) -> None:
        names = [b.name for b in self.blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate hyperparameter names in {names}")
        self._slices: dict[str, slice] = {}
        start = 0
        for b in self.blocks:
            self._slices[b.name] = slice(start, start + b.size)
            start += b.size
        self._q = start

    @property
    def q(self) -> int:
        """Number of scalar hyperparameters."""
        return self._q

    def __contains__(self, name: str) -> bool:
        return name in self._slices

    def slice(self, name: str) -> slice:
        """Slice of phi that holds block ``name``."""
        return self._slices[name]

    def block(self, name: str) -> HyperBlock:
        """The block called ``name``."""
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def init_phi(self, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu") -> torch.Tensor:
        """Unconstrained initial vector phi (inverse transform of each block's initial value)."""
        parts = []
        for b in self.blocks:
            v = torch.as_tensor(b.init, dtype=torch.float64).reshape(-1)
            if v.numel() == 1:
                v = v.expand(b.size)
            if v.numel() != b.size:
                raise ValueError(f"hyperparameter {b.name!r}: init has {v.numel()} values, size is {b.size}")
            parts.append(_inverse_transform(b.transform, v.clone()))
        if not parts:
            return torch.zeros(0, dtype=dtype, device=device)
        return torch.cat(parts).to(dtype=dtype, device=device)

    def constrain(self, phi: torch.Tensor) -> dict[str, torch.Tensor]:
        """Constrained values of every block (differentiable in phi)."""
        if phi.shape[-1] != self.q:
            raise ValueError(f"phi has {phi.shape[-1]} entries, the hyperparameter space has q={self.q}")
        return {b.name: _forward_transform(b.transform, phi[..., self._slices[b.name]]) for b in self.blocks}

    def names(self) -> list[str]:
        """One readable name per coordinate of phi, e.g. ``lr[0]``."""
        out = []
        for b in self.blocks:
            out += [b.name] if b.size == 1 else [f"{b.name}[{i}]" for i in range(b.size)]
        return out


@dataclass
class OptimizerConfig:
    """Inner optimizer and the values of the hyperparameters that are *not* tuned.

    ``kind``: ``sgd``, ``momentum`` (heavy ball), ``nesterov`` or ``adam``. Weight decay is an
    L2 term added to the gradient (coupled); ``decoupled_weight_decay`` gives AdamW-style decay.
    """

    kind: str = "sgd"
    lr: float = 0.1
    weight_decay: float = 0.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    decoupled_weight_decay: bool = False

    def __post_init__(self) -> None:
        if self.kind not in OPTIMIZERS:
            raise ValueError(f"optimizer.kind: expected one of {OPTIMIZERS}, got {self.kind!r}")

    @property
    def n_buffers(self) -> int:
        """Number of parameter-sized buffers the optimizer keeps in the state."""
        return {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2}[self.kind]

    @property
    def n_counters(self) -> int:
        """Number of scalar step counters at the end of the state (Adam's bias correction: 1)."""
        return 1 if self.kind == "adam" else 0


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite derivative at 0 (Adam's second moment of an always-zero gradient).

    The double ``where`` keeps the untaken branch finite, so its derivative never produces
    0 * inf = NaN; at v = 0 the tangent of v is itself 0 under Adam's update.
    """
    positive = v > 0
    safe = torch.where(positive, v, torch.ones_like(v))
    return torch.where(positive, torch.sqrt(safe), torch.zeros_like(v))


def _transformed() -> bool:
    """True inside a ``torch.func`` transform (jvp, vjp, vmap, grad) or a forward-AD dual level.

    There ``torch.autograd.grad`` cannot differentiate (functorch wraps the tensors; dual
    tensors carry tangents that ``autograd.grad`` would drop), so the step takes its gradient
    with ``torch.func.grad`` instead.
    """
    if torch._C._functorch.peek_interpreter_stack() is not None:
        return True
    return torch.autograd.forward_ad._current_level >= 0


class _ParameterSwap:
    """Calls a module with given tensors standing in for its parameters.

    The same thing ``torch.func.functional_call`` does, without its per-call bookkeeping
    (about a fifth of a small model's step): the tensors are written straight into each owning
    module's ``_parameters`` (every alias of a tied parameter too) and the originals are put
    back afterwards. Modules that react to attribute assignment (a custom ``__setattr__``, as
    ``nn.RNN`` has, or parametrizations) go through ``functional_call``.
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.model = model
        self.names = list(names)
        index = {id(p): k for k, (_, p) in enumerate(model.named_parameters())}
        self.slots: list[tuple[nn.Module, str, int]] = []
        for full, p in model.named_parameters(remove_duplicate=False):
            owner, _, attr = full.rpartition(".")
            self.slots.append((model.get_submodule(owner), attr, index[id(p)]))
        custom = any(type(m).__setattr__ is not nn.Module.__setattr__ for m in model.modules())
        parametrized = any(hasattr(m, "parametrizations") for m in model.modules())
        self.direct = not (custom or parametrized)

    def __call__(self, tensors: Sequence[torch.Tensor], *args: Any) -> Any:
        if not self.direct:
            return functional_call(self.model, dict(zip(self.names, tensors)), args)
        saved = [m._parameters[a] for m, a, _ in self.slots]
        try:
            for m, a, k in self.slots:
                m._parameters[a] = tensors[k]
            return self.model(*args)
        finally:
            for (m, a, _), p in zip(self.slots, saved):
                m._parameters[a] = p


class TrainingDynamics:
    """One inner optimizer step of ``model`` as a pure function of a flat state.

    The state is one 1-D tensor of length :attr:`P`: the ``n_params`` model parameters (in
    ``model.named_parameters()`` order), then ``optimizer.n_buffers`` parameter-sized buffers
    (momentum: the velocity; Adam: the first and second moments), then ``optimizer.n_counters``
    step counters (Adam: the number of steps taken, which its bias correction reads, as
    ``torch.optim.Adam`` keeps ``step`` in its state; counted in the state's dtype, exact up to
    2^24 steps in float32). :meth:`optimizer_state` names the parts. A state from ``s`` steps of
    training therefore continues Adam's bias correction at step s + 1.

    Parameters
    ----------
    model:
        Any ``nn.Module`` without hidden mutable state in its forward pass. Its current
        parameters are the default initial point.
    optimizer:
        Optimizer kind and fixed hyperparameter values.
    hyper:
        The tuned hyperparameters. Recognized block names: ``lr`` (size 1, or one per layer
        group), ``weight_decay``, ``momentum``, ``beta1``, ``beta2``, ``example_weight``
        (one per training example, indexed by ``Batch.index``).
    loss:
        ``cross_entropy`` (class labels) or ``mse`` (regression, 1/2 squared error).
    param_groups:
        ``layer`` (one group per module owning parameters) or ``all`` (a single group);
        an ``lr`` block of size > 1 must have one entry per group.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: OptimizerConfig,
        hyper: HyperSpace,
        *,
        loss: str = "cross_entropy",
        param_groups: str = "layer",
    ) -> None:
        if loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss: expected 'cross_entropy' or 'mse', got {loss!r}")
        self.model = model
        self.optimizer = optimizer
        self.hyper = hyper
        self.loss_kind = loss
        named = [(n, p) for n, p in model.named_parameters()]
        if not named:
            raise ValueError("the model has no parameters")
        self.param_names = [n for n, _ in named]
        self.param_shapes = [tuple(p.shape) for _, p in named]
        self.param_numels = [p.numel() for _, p in named]
        self.n_params = sum(self.param_numels)
        #: length of the flat state: parameters, optimizer buffers, step counters
        self.P = self.n_params * (1 + optimizer.n_buffers) + optimizer.n_counters
        self._state_sizes = [self.n_params] * (1 + optimizer.n_buffers) + [1] * optimizer.n_counters
        self._swap = _ParameterSwap(model, self.param_names)
        # Layer groups: parameters owned by the same module share a learning rate.
        if param_groups == "layer":
            owners: list[str] = []
            for n in self.param_names:
                owner = n.rsplit(".", 1)[0] if "." in n else ""
                if owner not in owners:
                    owners.append(owner)
            group_of_param = [owners.index(n.rsplit(".", 1)[0] if "." in n else "") for n in self.param_names]
            self.group_names = owners
        elif param_groups == "all":
            group_of_param = [0] * len(self.param_names)
            self.group_names = ["all"]
        else:
            raise ValueError(f"param_groups: expected 'layer' or 'all', got {param_groups!r}")
        self.n_groups = len(self.group_names)
        self._group_index = torch.cat(
            [torch.full((k,), g, dtype=torch.long) for k, g in zip(self.param_numels, group_of_param)]
        )
        if "lr" in hyper and hyper.block("lr").size not in (1, self.n_groups):
            raise ValueError(
                f"hyperparameter 'lr' has size {hyper.block('lr').size}; expected 1 or the number of "
                f"layer groups ({self.n_groups}: {self.group_names})"
            )
        unknown = [b.name for b in hyper.blocks if b.name not in DEFAULT_TRANSFORMS]
        if unknown:
            raise ValueError(f"unknown hyperparameter block(s) {unknown}; known: {sorted(DEFAULT_TRANSFORMS)}")
        if optimizer.kind != "adam" and any(n in hyper for n in ("beta1", "beta2")):
            raise ValueError(f"beta1/beta2 are Adam hyperparameters; optimizer.kind is {optimizer.kind!r}")
        if optimizer.kind not in ("momentum", "nesterov") and "momentum" in hyper:
            raise ValueError(f"'momentum' is tuned but optimizer.kind is {optimizer.kind!r}")
        # Where each tuned value sits in phi, for the step's fused transform (see _constrained).
        self._transform_kinds = {b.transform for b in hyper.blocks}
        kind_of = [b.transform for b in hyper.blocks for _ in range(b.size)]
        self._host_tensors: dict[str, torch.Tensor] = {
            "log_mask": torch.tensor([k == "log" for k in kind_of], dtype=torch.bool),
            "logit_mask": torch.tensor([k == "logit" for k in kind_of], dtype=torch.bool),
        }
        self._device_cache: dict[tuple[str, torch.device], torch.Tensor] = {}
        self._scalar_position = {b.name: hyper.slice(b.name).start for b in hyper.blocks if b.size == 1}
        if "lr" in hyper and hyper.block("lr").size > 1:
            self._host_tensors["lr"] = self._group_index + hyper.slice("lr").start
        self._weights_start = hyper.slice("example_weight").start if "example_weight" in hyper else None

    # ------------------------------------------------------------------ layout
    def params(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model parameters as a name -> tensor dict of views into ``state``."""
        flat = state[..., : self.n_params]
        pieces = torch.split(flat, self.param_numels, dim=-1)
        return {
            n: piece.reshape(*flat.shape[:-1], *shape)
            for n, piece, shape in zip(self.param_names, pieces, self.param_shapes)
        }

    def flatten_params(self, params: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Inverse of :meth:`params` for the parameter part."""
        return torch.cat([params[n].reshape(-1) for n in self.param_names])

    def optimizer_state(self, state: torch.Tensor) -> dict[str, torch.Tensor]:
        """The optimizer's part of ``state`` by name (views): ``momentum_buffer``; or Adam's
        ``exp_avg``, ``exp_avg_sq`` and ``step`` (a 1-element tensor, steps taken so far)."""
        n, kind = self.n_params, self.optimizer.kind
        if kind in ("momentum", "nesterov"):
            return {"momentum_buffer": state[n : 2 * n]}
        if kind == "adam":
            return {"exp_avg": state[n : 2 * n], "exp_avg_sq": state[2 * n : 3 * n], "step": state[3 * n :]}
        return {}

    def init_state(
        self,
        seed: int | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> torch.Tensor:
        """Initial flat state: parameters (re-initialized with ``seed`` when given), zero buffers
        and zero step counters."""
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                for m in self.model.modules():
                    if hasattr(m, "reset_parameters"):
                        m.reset_parameters()
        ref = next(self.model.parameters())
        dtype = dtype or ref.dtype
        device = device or ref.device
        p = torch.cat([q.detach().reshape(-1) for q in self.model.parameters()]).to(dtype=dtype, device=device)
        rest = torch.zeros(self.P - self.n_params, dtype=dtype, device=device)
        return torch.cat([p, rest])

    # ------------------------------------------------------------------ losses
    def _call(self, flat_params: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The model's output on ``x`` with the parameters held in the flat vector ``flat_params``."""
        pieces = torch.split(flat_params, self.param_numels)
        return self._swap([p.reshape(shape) for p, shape in zip(pieces, self.param_shapes)], x)

    def _per_example_loss(self, flat_params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = self._call(flat_params, x)
        if self.loss_kind == "cross_entropy":
            return F.cross_entropy(out, y, reduction="none")
        diff = out - y.reshape(out.shape)
        return 0.5 * diff.pow(2).reshape(diff.shape[0], -1).sum(-1)

    def _batch_loss(
        self, flat_params: torch.Tensor, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor | None
    ) -> torch.Tensor:
        if weights is None and self.loss_kind == "cross_entropy":  # one fused op, as torch.optim users write it
            return F.cross_entropy(self._call(flat_params, x), y)
        losses = self._per_example_loss(flat_params, x, y)
        return losses.mean() if weights is None else (weights * losses).mean()

    def logits(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Model output at the parameters held in ``state``."""
        return self._call(state[: self.n_params], x)

    def loss(self, state: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Unweighted mean loss of the model in ``state`` on (x, y)."""
        return self._per_example_loss(state[: self.n_params], x, y).mean()

    def accuracy(self, state: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> float:
        """Classification accuracy of the model in ``state`` on (x, y)."""
        with torch.no_grad():
            return (self.logits(state, x).argmax(-1) == y).to(torch.float64).mean().item()

    def loss_fn(self, x: torch.Tensor, y: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Meta objective ``val_fn(state, phi)``: the mean loss on (x, y); it does not depend on phi."""

        def val_fn(state: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
            return self.loss(state, x, y)

        return val_fn

    def train_loss(self, state: torch.Tensor, phi: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Training loss of one batch, weighted by the per-example weights when they are tuned."""
        weights = self._example_weights(self._constrained(phi), batch.index)
        return self._batch_loss(state[: self.n_params], batch.x, batch.y, weights)

    # ------------------------------------------------------------------ the step
    def _on(self, name: str, device: torch.device) -> torch.Tensor:
        """Index or mask tensor ``name`` (built once on the CPU) on ``device``, cached."""
        key = (name, device)
        t = self._device_cache.get(key)
        if t is None:
            t = self._device_cache[key] = self._host_tensors[name].to(device)
        return t

    def _constrained(self, phi: torch.Tensor) -> torch.Tensor:
        """Every coordinate of phi through its block's transform, in one to five operations.

        The same values as :meth:`HyperSpace.constrain`, without one slice and one transform per
        block (their autograd nodes cost a small model's step about a tenth of its time).
        """
        kinds = self._transform_kinds
        if kinds <= {"identity"}:
            return phi
        if kinds == {"log"}:
            return torch.exp(phi)
        if kinds == {"logit"}:
            return torch.sigmoid(phi)
        out = phi
        if "logit" in kinds:
            out = torch.where(self._on("logit_mask", phi.device), torch.sigmoid(phi), out)
        if "log" in kinds:
            log_mask = self._on("log_mask", phi.device)
            # exp only where it is taken: an overflowing untaken branch would give 0 * inf = NaN.
            out = torch.where(log_mask, torch.exp(torch.where(log_mask, phi, torch.zeros_like(phi))), out)
        return out

    def _value(self, values: torch.Tensor, name: str) -> torch.Tensor | float:
        """A scalar hyperparameter: the tuned value (0-d tensor) or the optimizer config's number."""
        pos = self._scalar_position.get(name)
        return getattr(self.optimizer, name) if pos is None else values[..., pos]

    def _lr(self, values: torch.Tensor) -> torch.Tensor | float:
        """The learning rate, per state entry when it is per layer group."""
        if "lr" in self._host_tensors:
            return values.index_select(-1, self._on("lr", values.device))
        return self._value(values, "lr")

    def _example_weights(self, values: torch.Tensor, index: torch.Tensor) -> torch.Tensor | None:
        if self._weights_start is None:
            return None
        return values.index_select(-1, index + self._weights_start if self._weights_start else index)

    def _gradient(
        self, theta: torch.Tensor, batch: Batch, weights: torch.Tensor | None, transformed: bool
    ) -> torch.Tensor:
        """Gradient of the batch loss at ``theta``, itself differentiable when autograd needs it.

        Plain autograd where it can (a ``torch.func.grad`` transform costs about as much again
        as the gradient on a small model); second order (``create_graph``) only when the
        gradient depends on something that requires grad: theta, or the example weights.
        """
        if transformed:
            return func_grad(self._batch_loss)(theta, batch.x, batch.y, weights)
        graph = torch.is_grad_enabled() and (theta.requires_grad or (weights is not None and weights.requires_grad))
        with torch.enable_grad():
            leaf = theta if graph and theta.requires_grad else theta.detach().requires_grad_(True)
            loss = self._batch_loss(leaf, batch.x, batch.y, weights)
            (g,) = torch.autograd.grad(loss, leaf, create_graph=graph)
        return g

    def step(self, state: torch.Tensor, phi: torch.Tensor, batch: Batch) -> torch.Tensor:
        """One optimizer step ``state -> state'`` on the flat state (see the class docstring).

        Pure and differentiable in ``state`` and ``phi``: by ``torch.autograd`` (first and second
        order) and by ``torch.func`` transforms (``jvp``, ``vjp``, ``vmap``).
        """
        if state.shape[-1] != self.P:
            raise ValueError(
                f"state has {state.shape[-1]} entries; this model and optimizer ({self.optimizer.kind}) need P={self.P} "
                f"(parameters, {self.optimizer.n_buffers} buffer(s), {self.optimizer.n_counters} step counter(s))"
            )
        if phi.shape[-1] != self.hyper.q:
            raise ValueError(f"phi has {phi.shape[-1]} entries, the hyperparameter space has q={self.hyper.q}")
        values = self._constrained(phi)
        # One split, not one slice per part: its backward is one concatenation, not one
        # zero-filled state-sized gradient per part.
        theta, *parts = torch.split(state, self._state_sizes)
        weights = self._example_weights(values, batch.index)
        transformed = _transformed()
        g = self._gradient(theta, batch, weights, transformed)
        lr = self._lr(values)
        wd = self._value(values, "weight_decay")
        opt = self.optimizer
        decoupled = opt.decoupled_weight_decay
        if not decoupled:
            g = _axpy(g, wd, theta)
        rest: list[torch.Tensor] = []
        if opt.kind == "sgd":
            update = g
        elif opt.kind in ("momentum", "nesterov"):
            mu = self._value(values, "momentum")
            v = _axpy(g, mu, parts[0])
            update = _axpy(g, mu, v) if opt.kind == "nesterov" else v
            rest = [v]
        else:  # adam
            b1 = self._value(values, "beta1")
            b2 = self._value(values, "beta2")
            # Steps taken, counted in the state; no derivative flows through a counter.
            t = parts[2].detach() + 1
            m = b1 * parts[0] + (1 - b1) * g
            v = b2 * parts[1] + (1 - b2) * g * g
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            update = m_hat / (_safe_sqrt(v_hat) + opt.eps)
            rest = [m, v, t]
        new_theta = _axpy(theta, -lr, update)
        if decoupled:
            new_theta = new_theta - lr * wd * theta
        return torch.cat([new_theta, *rest])

    def __repr__(self) -> str:
        return (
            f"TrainingDynamics(optimizer={self.optimizer.kind}, n_params={self.n_params}, P={self.P}, "
            f"q={self.hyper.q}, groups={self.n_groups})"
        )


def _axpy(y: torch.Tensor, a: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """y + a x in one operation (``a`` a Python number or a tensor broadcast against x)."""
    if isinstance(a, torch.Tensor):
        return torch.addcmul(y, a, x)
    return y if a == 0 else torch.add(y, x, alpha=a)
