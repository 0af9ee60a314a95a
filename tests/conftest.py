"""Shared fixtures and hypothesis profiles for the glocal test suite.

Hypothesis profiles (pick one with the environment variable ``HYPOTHESIS_PROFILE``):

* ``ci`` (default): 25 examples per property, no example database. The random seed is fixed per commit
  (derived from ``git rev-parse HEAD``, or ``GLOCAL_HYPOTHESIS_SEED``, or pytest's ``--hypothesis-seed``)
  and printed in the session header: a run is reproducible, and every new commit sees new inputs.
* ``thorough``: 200 examples per property, fresh random inputs every run.
* ``mutation``: 5 derandomized examples (scripts/mutation_test.sh runs the tests once per mutant).

No test sets ``max_examples`` itself except as a fraction of the profile's (``settings.default.max_examples``),
so ``HYPOTHESIS_PROFILE=thorough`` reaches every property test.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    database=None,
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
settings.register_profile(  # scripts/mutation_test.sh: every mutant runs the property tests; few fixed examples
    "mutation",
    max_examples=5,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _ci_seed() -> tuple[int | None, str]:
    """(seed, where it came from) for the ``ci`` profile; (None, ...) for the other profiles (fresh seeds)."""
    if "GLOCAL_HYPOTHESIS_SEED" in os.environ:
        return int(os.environ["GLOCAL_HYPOTHESIS_SEED"]), "GLOCAL_HYPOTHESIS_SEED"
    if settings.get_current_profile_name() != "ci":
        return None, f"profile {settings.get_current_profile_name()!r}: seeded by hypothesis"
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        return int(head[:8], 16), f"git commit {head[:12]}"
    except (OSError, subprocess.SubprocessError, ValueError):
        return 0, "no git checkout: fixed seed 0"


def pytest_configure(config: pytest.Config) -> None:
    from hypothesis import core

    if config.getoption("hypothesis_seed", None) is not None:  # --hypothesis-seed wins
        config._glocal_hypothesis = f"seed {config.getoption('hypothesis_seed')} (--hypothesis-seed)"
        return
    seed, origin = _ci_seed()
    if seed is not None:
        core.global_force_seed = seed
        config._glocal_hypothesis = f"seed {seed} ({origin}; rerun with --hypothesis-seed={seed})"
    else:
        config._glocal_hypothesis = origin


def pytest_report_header(config: pytest.Config) -> str:
    return (f"hypothesis: profile {settings.get_current_profile_name()!r}, "
            f"{settings.default.max_examples} examples, {getattr(config, '_glocal_hypothesis', '')}")

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


# ---------------------------------------------------------------------------- engine tolerances
def phi_dependent_meta(val_fn, n_params: int):
    """A meta objective that depends on phi directly as well as through theta_T: the validation loss plus a
    regularizer on phi and a phi-weighted penalty on the parameters (so d val / d phi is nonzero and also
    depends on theta_T). With it, an engine that drops the direct term is off by O(||h||)."""

    def meta(state: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
        theta = state[:n_params]
        return val_fn(state, phi) + 0.02 * (phi * phi).mean() + 0.05 * torch.tanh(phi).mean() * (theta * theta).mean()

    return meta


def fd_reference(step_fn, val_fn, state, phi, batches, *, eps: float = 1e-5, indices=None):
    """Central differences with their own per-coordinate error bound: (fd, bound).

    The bound is theory_checks.bounds.finite_difference_error at step ``eps``: truncation eps^2/6 |f'''|
    with f''' estimated by Richardson from a second difference at 2 eps, plus the rounding through the
    ``len(batches)`` unrolled steps, sqrt(len(batches)) u (|val| + ||grad val|| ||theta||) / eps.
    Coordinates not in ``indices`` are NaN."""
    from glocal.hypergrad import finite_difference_hypergradient, unroll
    from theory_checks.bounds import finite_difference_error, richardson_third_derivative, rounding_scale

    fd = finite_difference_hypergradient(step_fn, val_fn, state, phi, batches, eps=eps, indices=indices)
    fd2 = finite_difference_hypergradient(step_fn, val_fn, state, phi, batches, eps=2 * eps, indices=indices)
    scale = rounding_scale(val_fn, unroll(step_fn, state, phi, batches), phi)
    bound = finite_difference_error(eps, value_scale=scale, steps=len(batches), dtype=phi.dtype,
                                    third_derivative=richardson_third_derivative(fd, fd2, eps))
    return fd, bound


def assert_fd_close(h: torch.Tensor, fd: torch.Tensor, bound: torch.Tensor, what: str = "") -> float:
    """Every coordinate of ``h`` (where ``fd`` is not NaN) within the finite differences' own error bound;
    returns the largest error / bound."""
    keep = ~torch.isnan(fd)
    assert keep.any(), "no finite-difference coordinate to compare"
    # the bound is estimated from the differences themselves: broken differences (e.g. f(+) + f(-)) would
    # make it as large as they are, so it must stay small against the hypergradient (about 1e-7 relative)
    tight = float(bound[keep].max()) / max(float(h[keep].abs().max()), 1e-300)
    assert tight <= 1e-4, f"{what}: the finite-difference error bound is {tight:.3g} of max |h|; the differences are broken"
    ratio = float(((h[keep] - fd[keep]).abs() / bound[keep]).max())
    assert ratio <= 1.0, f"{what}: |h - fd| exceeds the finite-difference error bound {ratio:.3g}x"
    return ratio


@pytest.fixture
def fd_check():
    """``(fd_reference, assert_fd_close)`` as a fixture."""
    return fd_reference, assert_fd_close


@pytest.fixture
def meta_factory():
    """``phi_dependent_meta`` as a fixture."""
    return phi_dependent_meta
