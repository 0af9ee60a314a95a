"""Models for the inner problems, all compatible with ``torch.func``.

No BatchNorm running statistics, no in-place operations, no dropout: every
model is a pure function of its parameters and input, so it can be used with
``torch.func.functional_call``, ``jvp``, ``vjp`` and ``vmap``.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["build_model", "layer_groups", "MODEL_KINDS", "MLP", "SmallCNN", "WideResNet"]

MODEL_KINDS = ("logreg", "mlp", "cnn", "wrn")

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "gelu": nn.GELU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
}


def _activation(name: str) -> nn.Module:
    try:
        return _ACTIVATIONS[name]()
    except KeyError:
        raise ValueError(f"model.activation must be one of {sorted(_ACTIVATIONS)}, got {name!r}") from None


def _groups_for(channels: int, max_groups: int = 8) -> int:
    """Number of GroupNorm groups: the largest divisor of ``channels`` <= max_groups."""
    return math.gcd(channels, max_groups) or 1


class MLP(nn.Module):
    """Flatten, then Linear layers with an activation between them.

    With ``hidden=[]`` this is multinomial logistic regression.
    """

    def __init__(self, in_features: int, hidden: list[int], n_classes: int, activation: str = "relu"):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for h in hidden:
            layers += [nn.Linear(prev, int(h)), _activation(activation)]
            prev = int(h)
        layers.append(nn.Linear(prev, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.net(x)


class SmallCNN(nn.Module):
    """Small CNN: [conv3x3 -> (GroupNorm) -> ReLU -> (pool)] * len(channels) -> Linear.

    A 2x2 pool follows each conv while the spatial size is at least 2, so the
    same spec works on 1x8x8, 1x28x28 and 3x32x32 inputs.
    """

    def __init__(
        self,
        in_shape: tuple,
        channels: list[int],
        n_classes: int,
        norm: str = "group",
        pool: str = "max",
    ):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(
                f"model.kind 'cnn' needs image input (C, H, W); got in_shape={tuple(in_shape)} "
                "(load the data with flatten=False)"
            )
        if norm not in ("group", "none"):
            raise ValueError(f"model.norm must be 'group' or 'none', got {norm!r}")
        if pool not in ("max", "avg"):
            raise ValueError(f"model.pool must be 'max' or 'avg', got {pool!r}")
        c, h, w = (int(s) for s in in_shape)
        layers: list[nn.Module] = []
        for ch in channels:
            ch = int(ch)
            layers.append(nn.Conv2d(c, ch, kernel_size=3, padding=1))
            if norm == "group":
                layers.append(nn.GroupNorm(_groups_for(ch), ch))
            layers.append(nn.ReLU())
            if min(h, w) >= 2:
                layers.append(nn.MaxPool2d(2) if pool == "max" else nn.AvgPool2d(2))
                h, w = h // 2, w // 2
            c = ch
        layers.append(nn.Flatten())
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c * h * w, n_classes)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        return self.head(self.features(x))


class _WideBlock(nn.Module):
    """Pre-activation wide residual block with GroupNorm."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups_for(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(_groups_for(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.shortcut = (
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False) if (stride != 1 or c_in != c_out) else None
        )

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        o = F.relu(self.norm1(x))
        skip = x if self.shortcut is None else self.shortcut(o)
        y = self.conv1(o)
        y = self.conv2(F.relu(self.norm2(y)))
        return y + skip


class WideResNet(nn.Module):
    """Wide-ResNet-depth-width (Zagoruyko & Komodakis) with GroupNorm instead of BatchNorm."""

    def __init__(self, in_shape: tuple, n_classes: int, depth: int = 16, width: int = 4):
        super().__init__()
        if len(in_shape) != 3:
            raise ValueError(
                f"model.kind 'wrn' needs image input (C, H, W); got in_shape={tuple(in_shape)} "
                "(load the data with flatten=False)"
            )
        if depth < 10 or (depth - 4) % 6 != 0:
            raise ValueError(f"model.depth must satisfy (depth - 4) % 6 == 0 and depth >= 10, got {depth}")
        if width < 1:
            raise ValueError(f"model.width must be >= 1, got {width}")
        n = (depth - 4) // 6
        widths = [16, 16 * width, 32 * width, 64 * width]
        self.conv1 = nn.Conv2d(int(in_shape[0]), widths[0], 3, padding=1, bias=False)
        blocks: list[nn.Module] = []
        c = widths[0]
        for g, stride in zip(range(3), (1, 2, 2)):
            for i in range(n):
                blocks.append(_WideBlock(c, widths[g + 1], stride if i == 0 else 1))
                c = widths[g + 1]
        self.blocks = nn.Sequential(*blocks)
        self.norm = nn.GroupNorm(_groups_for(c), c)
        self.head = nn.Linear(c, n_classes)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        o = self.blocks(self.conv1(x))
        o = F.relu(self.norm(o))
        o = o.mean(dim=(2, 3))
        return self.head(o)


def build_model(spec: dict, in_shape: tuple, n_classes: int) -> nn.Module:
    """Build a model from a config spec.

    ``spec['kind']``: ``logreg`` (flatten + Linear), ``mlp`` (``hidden``: list of
    widths, ``activation``: relu|tanh|gelu|softplus|sigmoid), ``cnn``
    (``channels``: list, default [16, 32]; ``norm``: group|none; ``pool``:
    max|avg; needs ``in_shape=(C, H, W)``), ``wrn`` (``depth`` default 16,
    ``width`` default 4; needs ``in_shape=(C, H, W)``).
    ``in_shape`` is the shape of one example (without batch dimension).
    """
    kind = spec.get("kind")
    in_shape = tuple(int(s) for s in in_shape)
    in_features = int(math.prod(in_shape))
    if kind == "logreg":
        return MLP(in_features, [], n_classes)
    if kind == "mlp":
        return MLP(in_features, list(spec.get("hidden", [64, 32])), n_classes, spec.get("activation", "relu"))
    if kind == "cnn":
        return SmallCNN(
            in_shape,
            list(spec.get("channels", [16, 32])),
            n_classes,
            norm=spec.get("norm", "group"),
            pool=spec.get("pool", "max"),
        )
    if kind == "wrn":
        depth, width = int(spec.get("depth", 16)), int(spec.get("width", 4))
        return WideResNet(in_shape, n_classes, depth=depth, width=width)
    raise ValueError(f"model.kind must be one of {list(MODEL_KINDS)}, got {kind!r}")


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names grouped per module (e.g. weight + bias of one layer).

    Groups follow module registration order, which is the forward order for
    the models of this file; every parameter appears in exactly one group.
    """
    groups: list[list[str]] = []
    for mod_name, module in model.named_modules():
        names = [
            f"{mod_name}.{p_name}" if mod_name else p_name
            for p_name, _ in module.named_parameters(recurse=False)
        ]
        if names:
            groups.append(names)
    return groups
