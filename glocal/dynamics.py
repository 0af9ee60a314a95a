"""Inner training as a pure, differentiable dynamical system.

One optimizer step is a pure function ``state_{t+1} = step(state_t, phi, batch_t)`` on a
*flat* state vector (model parameters followed by the optimizer's buffers), so that
forward- and reverse-mode hypergradient engines can treat every model and optimizer the
same way. Hyperparameters live in an unconstrained vector ``phi`` in R^q; named blocks map
slices of ``phi`` to their constrained values through a transform (``log`` for rates and
decay, ``logit`` for momentum, betas and per-example weights).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

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
    """One mini-batch: inputs, targets, their indices in the training set, and the global step."""

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


def _safe_sqrt(v: torch.Tensor) -> torch.Tensor:
    """sqrt with a finite derivative at 0 (Adam's second moment of an always-zero gradient).

    The double ``where`` keeps the untaken branch finite, so its derivative never produces
    0 * inf = NaN; at v = 0 the tangent of v is itself 0 under Adam's update.
    """
    positive = v > 0
    safe = torch.where(positive, v, torch.ones_like(v))
    return torch.where(positive, torch.sqrt(safe), torch.zeros_like(v))


class TrainingDynamics:
    """One inner optimizer step of ``model`` as a pure function of a flat state.

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
        self.P = self.n_params * (1 + optimizer.n_buffers)
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

    def init_state(
        self, seed: int | None = None, *, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Initial flat state: parameters (re-initialized with ``seed`` when given) and zero buffers."""
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
        buffers = torch.zeros(self.n_params * self.optimizer.n_buffers, dtype=dtype, device=device)
        return torch.cat([p, buffers])

    # ------------------------------------------------------------------ losses
    def _per_example_loss(self, flat_params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(self.model, self.params(flat_params), (x,))
        if self.loss_kind == "cross_entropy":
            return F.cross_entropy(out, y, reduction="none")
        diff = out - y.reshape(out.shape)
        return 0.5 * diff.pow(2).reshape(diff.shape[0], -1).sum(-1)

    def logits(self, state: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Model output at the parameters held in ``state``."""
        return functional_call(self.model, self.params(state[: self.n_params]), (x,))

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
        losses = self._per_example_loss(state[: self.n_params], batch.x, batch.y)
        if "example_weight" in self.hyper:
            w = self.hyper.constrain(phi)["example_weight"][batch.index]
            return (w * losses).mean()
        return losses.mean()

    # ------------------------------------------------------------------ the step
    def _value(self, hp: Mapping[str, torch.Tensor], name: str) -> torch.Tensor | float:
        if name in hp:
            v = hp[name]
            return v[0] if v.shape[-1] == 1 else v
        return getattr(self.optimizer, name)

    def step(self, state: torch.Tensor, phi: torch.Tensor, batch: Batch) -> torch.Tensor:
        """One optimizer step: pure and differentiable in ``state`` and ``phi``."""
        hp = self.hyper.constrain(phi)
        n = self.n_params
        theta = state[:n]

        def weighted_loss(flat: torch.Tensor) -> torch.Tensor:
            losses = self._per_example_loss(flat, batch.x, batch.y)
            if "example_weight" in hp:
                return (hp["example_weight"][batch.index] * losses).mean()
            return losses.mean()

        g = func_grad(weighted_loss)(theta)
        lr = self._value(hp, "lr")
        if isinstance(lr, torch.Tensor) and lr.ndim > 0 and lr.shape[-1] > 1:
            lr = lr[self._group_index.to(lr.device)]
        wd = self._value(hp, "weight_decay")
        opt = self.optimizer
        decoupled = opt.decoupled_weight_decay
        if not decoupled:
            g = g + wd * theta
        if opt.kind == "sgd":
            update = g
            buffers: list[torch.Tensor] = []
        elif opt.kind in ("momentum", "nesterov"):
            mu = self._value(hp, "momentum")
            v = mu * state[n : 2 * n] + g
            update = g + mu * v if opt.kind == "nesterov" else v
            buffers = [v]
        else:  # adam
            b1 = self._value(hp, "beta1")
            b2 = self._value(hp, "beta2")
            t = batch.step + 1
            m = b1 * state[n : 2 * n] + (1 - b1) * g
            v = b2 * state[2 * n : 3 * n] + (1 - b2) * g * g
            m_hat = m / (1 - b1**t)
            v_hat = v / (1 - b2**t)
            update = m_hat / (_safe_sqrt(v_hat) + opt.eps)
            buffers = [m, v]
        new_theta = theta - lr * update
        if decoupled:
            new_theta = new_theta - lr * wd * theta
        return torch.cat([new_theta, *buffers])

    def __repr__(self) -> str:
        return (
            f"TrainingDynamics(optimizer={self.optimizer.kind}, n_params={self.n_params}, P={self.P}, "
            f"q={self.hyper.q}, groups={self.n_groups})"
        )

