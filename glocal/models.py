"""Models for the inner problems, all compatible with ``torch.func``.

No BatchNorm running statistics, no in-place operations, no dropout: every
model is a pure function of its parameters and input, so it can be used with
``torch.func.functional_call``, ``jvp``, ``vjp`` and ``vmap``.

The sequence models (``gru``, ``transformer``) read an image as a sequence of
its rows (8 tokens of 8 pixels for digits, 28 of 28 for MNIST, 32 of 32 * 3 for
CIFAR-10). Their recurrence, attention and LayerNorm are written out with
elementary ops: ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` take
fused kernels that have no forward-mode derivative (``torch.func.jvp`` fails),
cuDNN's GRU has no second derivative, and ``F.layer_norm``'s second derivatives
are wrong under ``jacrev``, yet every hypergradient differentiates a gradient step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "build_model",
    "layer_groups",
    "MODEL_KINDS",
    "IMAGE_INPUT_KINDS",
    "MLP",
    "SmallCNN",
    "WideResNet",
    "GRUClassifier",
    "TransformerClassifier",
]

MODEL_KINDS = ("logreg", "mlp", "cnn", "wrn", "gru", "transformer")

#: Model kinds that need the data as images (C, H, W), i.e. loaded with ``flatten=False``.
IMAGE_INPUT_KINDS = ("cnn", "wrn", "gru", "transformer")

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


def _rows_shape(kind: str, in_shape: tuple) -> tuple[int, int]:
    """(number of rows, features per row) of an image read row by row."""
    if len(in_shape) != 3:
        raise ValueError(
            f"model.kind {kind!r} needs image input (C, H, W); got in_shape={tuple(in_shape)} "
            "(load the data with flatten=False)"
        )
    c, h, w = (int(s) for s in in_shape)
    return h, w * c


def _as_rows(x: Tensor, in_shape: tuple) -> Tensor:
    """(N, C, H, W) images (or their flat vectors) as (N, H, W * C) sequences of rows."""
    c, h, w = in_shape
    return x.reshape(-1, c, h, w).permute(0, 2, 3, 1).reshape(-1, h, w * c)


def _layer_norm(x: Tensor, weight: Tensor, bias: Tensor, eps: float = 1e-5) -> Tensor:
    """LayerNorm over the last dimension, from elementary ops.

    ``F.layer_norm``'s second derivatives are wrong under some ``torch.func`` compositions
    (measured: the Hessian-vector product through ``jacrev`` in torch 2.13; see also
    pytorch/functorch#534 on its backward's batching rule and pytorch/pytorch#196700 on nested
    ``jvp``), and a hypergradient differentiates a gradient step, so the models do not use it.
    """
    centred = x - x.mean(dim=-1, keepdim=True)
    var = (centred * centred).mean(dim=-1, keepdim=True)
    return centred * torch.rsqrt(var + eps) * weight + bias


def _init_linear(weight: Tensor, bias: Tensor | None) -> None:
    """nn.Linear's default initialization, for weights held outside an nn.Linear."""
    nn.init.kaiming_uniform_(weight, a=math.sqrt(5))
    if bias is not None:
        bound = 1.0 / math.sqrt(weight.shape[1])
        nn.init.uniform_(bias, -bound, bound)


class GRUClassifier(nn.Module):
    """GRU over the rows of an image; a linear head reads the last hidden state.

    Each layer is an ``nn.GRUCell`` (PyTorch's parameter layout and initialization, so its
    weights are interchangeable with ``nn.GRU``'s), evaluated by an explicit loop over the
    rows: the cost is a handful of small ops per row, which is fine for 8 to 32 rows.
    Parameter groups (one learning rate each): ``cells.0`` ... ``cells.{layers-1}``, ``head``.
    """

    def __init__(self, in_shape: tuple, n_classes: int, hidden_size: int = 32, layers: int = 1):
        super().__init__()
        if hidden_size < 1 or layers < 1:
            raise ValueError(f"model.hidden_size and model.layers must be >= 1, got {hidden_size} and {layers}")
        _, features = _rows_shape("gru", in_shape)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.cells = nn.ModuleList(
            [nn.GRUCell(features if i == 0 else hidden_size, hidden_size) for i in range(layers)]
        )
        self.head = nn.Linear(hidden_size, n_classes)

    @staticmethod
    def _layer(cell: nn.GRUCell, seq: Tensor) -> Tensor:
        """Hidden states (N, T, H) of one GRU layer over ``seq`` (N, T, D), from h_0 = 0."""
        hsz = cell.hidden_size
        # Input projections of all rows at once; few ops per step (their count, not the
        # arithmetic, is what small recurrent models pay for, and forward mode pays it q times).
        in_rz, in_n = F.linear(seq, cell.weight_ih, cell.bias_ih).split([2 * hsz, hsz], dim=-1)
        h = seq.new_zeros(seq.shape[0], hsz)
        out = []
        for x_rz, x_n in zip(in_rz.unbind(1), in_n.unbind(1)):
            h_rz, h_n = F.linear(h, cell.weight_hh, cell.bias_hh).split([2 * hsz, hsz], dim=-1)
            r, z = torch.sigmoid(x_rz + h_rz).chunk(2, dim=-1)  # reset and update gates
            n = torch.tanh(x_n + r * h_n)
            h = n + z * (h - n)  # = (1 - z) n + z h
            out.append(h)
        return torch.stack(out, dim=1)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        seq = _as_rows(x, self.in_shape)
        for cell in self.cells:
            seq = self._layer(cell, seq)
        return self.head(seq[:, -1])


class _RowEmbedding(nn.Module):
    """Linear embedding of each row plus a learned embedding of its position (one parameter group)."""

    def __init__(self, rows: int, features: int, d_model: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_model, features))
        self.bias = nn.Parameter(torch.empty(d_model))
        self.position = nn.Parameter(torch.empty(rows, d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # noqa: D102
        _init_linear(self.weight, self.bias)
        # About the size of a row's embedding, so that position is visible from the first step.
        nn.init.normal_(self.position, std=0.5)

    def forward(self, seq: Tensor) -> Tensor:  # noqa: D102
        return F.linear(seq, self.weight, self.bias) + self.position


class _EncoderBlock(nn.Module):
    """Pre-LayerNorm transformer encoder block (self-attention, then a feed-forward MLP).

    The block owns its parameters directly, so a per-layer learning rate is one rate per
    block; attention is written out (no fused kernels, see the module docstring).
    """

    def __init__(self, d_model: int, heads: int, d_ff: int, activation: str):
        super().__init__()
        self.heads = heads
        self.activation = _activation(activation)
        self.norm1_weight = nn.Parameter(torch.empty(d_model))
        self.norm1_bias = nn.Parameter(torch.empty(d_model))
        self.qkv_weight = nn.Parameter(torch.empty(3 * d_model, d_model))
        self.qkv_bias = nn.Parameter(torch.empty(3 * d_model))
        self.out_weight = nn.Parameter(torch.empty(d_model, d_model))
        self.out_bias = nn.Parameter(torch.empty(d_model))
        self.norm2_weight = nn.Parameter(torch.empty(d_model))
        self.norm2_bias = nn.Parameter(torch.empty(d_model))
        self.ff1_weight = nn.Parameter(torch.empty(d_ff, d_model))
        self.ff1_bias = nn.Parameter(torch.empty(d_ff))
        self.ff2_weight = nn.Parameter(torch.empty(d_model, d_ff))
        self.ff2_bias = nn.Parameter(torch.empty(d_model))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # noqa: D102
        for name in ("norm1", "norm2"):
            nn.init.ones_(getattr(self, f"{name}_weight"))
            nn.init.zeros_(getattr(self, f"{name}_bias"))
        for name in ("qkv", "out", "ff1", "ff2"):
            _init_linear(getattr(self, f"{name}_weight"), getattr(self, f"{name}_bias"))

    def _attention(self, x: Tensor) -> Tensor:
        n, t, d = x.shape
        dh = d // self.heads
        qkv = F.linear(x, self.qkv_weight, self.qkv_bias).reshape(n, t, 3, self.heads, dh)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (N, heads, T, dh)
        weights = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dh), dim=-1)
        o = (weights @ v).transpose(1, 2).reshape(n, t, d)
        return F.linear(o, self.out_weight, self.out_bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        x = x + self._attention(_layer_norm(x, self.norm1_weight, self.norm1_bias))
        h = _layer_norm(x, self.norm2_weight, self.norm2_bias)
        h = F.linear(self.activation(F.linear(h, self.ff1_weight, self.ff1_bias)), self.ff2_weight, self.ff2_bias)
        return x + h


class _PooledHead(nn.Module):
    """Mean over tokens, final LayerNorm, linear classifier (one parameter group)."""

    def __init__(self, d_model: int, n_classes: int):
        super().__init__()
        self.norm_weight = nn.Parameter(torch.empty(d_model))
        self.norm_bias = nn.Parameter(torch.empty(d_model))
        self.weight = nn.Parameter(torch.empty(n_classes, d_model))
        self.bias = nn.Parameter(torch.empty(n_classes))
        self.reset_parameters()

    def reset_parameters(self) -> None:  # noqa: D102
        nn.init.ones_(self.norm_weight)
        nn.init.zeros_(self.norm_bias)
        _init_linear(self.weight, self.bias)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        pooled = _layer_norm(x.mean(dim=1), self.norm_weight, self.norm_bias)
        return F.linear(pooled, self.weight, self.bias)


class TransformerClassifier(nn.Module):
    """Small transformer encoder over the rows of an image (no dropout, pre-LayerNorm).

    Rows -> linear embedding + learned positional embedding -> ``layers`` encoder blocks
    (``heads`` heads, feed-forward width ``d_ff``) -> mean over rows -> LayerNorm -> linear.
    Parameter groups (one learning rate each): ``embed``, ``blocks.0`` ... ``blocks.{layers-1}``,
    ``head``.
    """

    def __init__(
        self,
        in_shape: tuple,
        n_classes: int,
        d_model: int = 32,
        heads: int = 2,
        layers: int = 2,
        d_ff: int | None = None,
        activation: str = "relu",
    ):
        super().__init__()
        d_ff = 2 * d_model if d_ff is None else d_ff
        if min(d_model, heads, layers, d_ff) < 1:
            raise ValueError(
                f"model.d_model, heads, layers and d_ff must be >= 1, got {d_model}, {heads}, {layers}, {d_ff}"
            )
        if d_model % heads != 0:
            raise ValueError(f"model.d_model ({d_model}) must be divisible by model.heads ({heads})")
        rows, features = _rows_shape("transformer", in_shape)
        self.in_shape = tuple(int(s) for s in in_shape)
        self.embed = _RowEmbedding(rows, features, d_model)
        self.blocks = nn.ModuleList([_EncoderBlock(d_model, heads, d_ff, activation) for _ in range(layers)])
        self.head = _PooledHead(d_model, n_classes)

    def forward(self, x: Tensor) -> Tensor:  # noqa: D102
        h = self.embed(_as_rows(x, self.in_shape))
        for block in self.blocks:
            h = block(h)
        return self.head(h)


def build_model(spec: dict, in_shape: tuple, n_classes: int) -> nn.Module:
    """Build a model from a config spec.

    ``spec['kind']``: ``logreg`` (flatten + Linear), ``mlp`` (``hidden``: list of
    widths, ``activation``: relu|tanh|gelu|softplus|sigmoid), ``cnn``
    (``channels``: list, default [16, 32]; ``norm``: group|none; ``pool``:
    max|avg; needs ``in_shape=(C, H, W)``), ``wrn`` (``depth`` default 16,
    ``width`` default 4; needs ``in_shape=(C, H, W)``), ``gru`` (``hidden_size`` default 32,
    ``layers`` default 1), ``transformer`` (``d_model`` default 32, ``heads`` default 2,
    ``layers`` default 2, ``d_ff`` default 2 * d_model, ``activation`` of the feed-forward
    part, default relu). The sequence models read an image (C, H, W) as H rows of W * C
    values and need ``in_shape=(C, H, W)``; they accept the batch as images or flat vectors.
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
    if kind == "gru":
        return GRUClassifier(
            in_shape, n_classes, hidden_size=int(spec.get("hidden_size", 32)), layers=int(spec.get("layers", 1))
        )
    if kind == "transformer":
        d_ff = spec.get("d_ff")
        return TransformerClassifier(
            in_shape,
            n_classes,
            d_model=int(spec.get("d_model", 32)),
            heads=int(spec.get("heads", 2)),
            layers=int(spec.get("layers", 2)),
            d_ff=None if d_ff is None else int(d_ff),
            activation=spec.get("activation", "relu"),
        )
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
