"""Shared fixtures and hypothesis profiles for the glocal test suite.

Hypothesis profiles: ``ci`` (few examples, derandomized: the default) and ``thorough``
(200 examples). Pick one with the environment variable ``HYPOTHESIS_PROFILE``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=10,
    deadline=None,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "thorough",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# The models here are tiny: intra-op threads only add contention (and under pytest-xdist the
# workers would oversubscribe the cores), so every test process computes single-threaded.
torch.set_num_threads(1)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Norm-wise relative error ||a - b|| / ||b|| (absolute when b is zero)."""
    a = torch.as_tensor(a, dtype=torch.float64)
    b = torch.as_tensor(b, dtype=torch.float64)
    den = float(torch.linalg.norm(b))
    num = float(torch.linalg.norm(a - b))
    return num / den if den > 0 else num


@dataclass
class InnerProblem:
    """A small inner training problem in float64, ready for the hypergradient engines."""

    dyn: Any
    phi: torch.Tensor
    state0: torch.Tensor
    state_s: torch.Tensor  # after ``pretrain`` steps (== state0 when pretrain == 0)
    batches: list  # the window's batches (global step numbers continue after pretraining)
    val_fn: Any
    x: torch.Tensor
    y: torch.Tensor
    n_train: int


def make_batches(x, y, *, batch_size, n_steps, start_step=0, seed=0):
    """Mini-batches ``Batch(x, y, index, step)`` drawn from seeded random permutations."""
    from glocal.dynamics import Batch

    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    out, perm, pos = [], torch.randperm(n, generator=g), 0
    for t in range(n_steps):
        if pos + batch_size > n:
            perm, pos = torch.randperm(n, generator=g), 0
        idx = perm[pos : pos + batch_size]
        pos += batch_size
        out.append(Batch(x[idx], y[idx], idx, start_step + t))
    return out


def hyper_blocks_for(opt_kind: str, n_groups: int, n_train: int, *, example_weights: bool = True):
    """Every hyperparameter the optimizer has: per-layer lr, decay, momentum/betas, example weights."""
    from glocal.dynamics import HyperBlock

    lr = 0.01 if opt_kind == "adam" else 0.1
    blocks = [
        HyperBlock("lr", size=n_groups, init=torch.linspace(0.7 * lr, 1.2 * lr, n_groups)),
        HyperBlock("weight_decay", init=1e-2),
    ]
    if opt_kind in ("momentum", "nesterov"):
        blocks.append(HyperBlock("momentum", init=0.8))
    if opt_kind == "adam":
        blocks += [HyperBlock("beta1", init=0.85), HyperBlock("beta2", init=0.95)]
    if example_weights:
        g = torch.Generator().manual_seed(123)
        blocks.append(HyperBlock("example_weight", size=n_train, init=0.2 + 0.6 * torch.rand(n_train, generator=g)))
    return blocks


def build_problem(
    model_kind: str = "logreg",
    opt_kind: str = "sgd",
    *,
    n_train: int = 24,
    n_features: int = 5,
    n_classes: int = 3,
    hidden: int = 6,
    batch_size: int = 8,
    pretrain: int = 5,
    window: int = 7,
    blocks=None,
    seed: int = 0,
) -> InnerProblem:
    """Seeded classification problem (logreg or a 2-layer tanh MLP) with a trained start state."""
    from glocal.dynamics import HyperSpace, OptimizerConfig, TrainingDynamics
    from glocal.hypergrad import unroll
    from glocal.models import build_model

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train, n_features, generator=g, dtype=torch.float64)
    y = torch.randint(0, n_classes, (n_train,), generator=g)
    xv = torch.randn(16, n_features, generator=g, dtype=torch.float64)
    yv = torch.randint(0, n_classes, (16,), generator=g)
    spec = {"kind": "logreg"} if model_kind == "logreg" else {"kind": "mlp", "hidden": [hidden], "activation": "tanh"}
    torch.manual_seed(seed)
    model = build_model(spec, (n_features,), n_classes).to(torch.float64)
    n_groups = 1 if model_kind == "logreg" else 2
    if blocks is None:
        blocks = hyper_blocks_for(opt_kind, n_groups, n_train)
    dyn = TrainingDynamics(model, OptimizerConfig(kind=opt_kind), HyperSpace(blocks), loss="cross_entropy")
    assert dyn.n_groups == n_groups
    phi = dyn.hyper.init_phi(torch.float64)
    state0 = dyn.init_state(seed, dtype=torch.float64)
    batches = make_batches(x, y, batch_size=batch_size, n_steps=pretrain + window, seed=seed + 1)
    state_s = unroll(dyn.step, state0, phi, batches[:pretrain]) if pretrain else state0
    return InnerProblem(dyn, phi, state0, state_s, batches[pretrain:], dyn.loss_fn(xv, yv), x, y, n_train)


@pytest.fixture
def problem_factory():
    """``build_problem`` as a fixture (conftest helpers are not importable as a module)."""
    return build_problem


@pytest.fixture
def relerr():
    """``rel_err`` as a fixture."""
    return rel_err


@pytest.fixture
def batch_factory():
    """``make_batches`` as a fixture."""
    return make_batches
