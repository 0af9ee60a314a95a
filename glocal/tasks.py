"""The two experiment tasks, built from a validated config.

* ``lr``: tune per-layer log learning rates, log weight decay and logit momentum (or Adam's
  betas) of the inner optimizer; meta objective: validation loss.
* ``reweight``: tune per-example weights sigmoid(phi_i) on a training set with a fraction of
  labels flipped; meta objective: loss on the clean validation set.
* ``nqm``: the noisy quadratic model (:mod:`glocal.nqm`): log learning rate (schedule) and
  logit momentum of heavy ball; meta objective: the expected (or realized) final loss.

A :class:`Task` bundles the data, the pure training dynamics, the hyperparameter space and a
deterministic batch schedule (the batch of step t is a function of the seed and t alone, so a
resumed run, a forward and a reverse engine all see the same batches).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from glocal.config import ConfigError, task_config, task_kind
from glocal.data import DataSplits, load_dataset
from glocal.dynamics import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics
from glocal.models import IMAGE_INPUT_KINDS, build_model

__all__ = ["Task", "build_task", "TASKS"]

#: The task kinds (a config may define several tasks of one kind, e.g. ``lr`` and ``lr_gru``);
#: ``nqm`` (the noisy quadratic model) is built by :mod:`glocal.nqm`.
TASKS = ("lr", "reweight", "nqm")


@dataclass
class Task:
    """Everything a strategy needs to train and tune on one task."""

    name: str
    data: DataSplits
    dynamics: TrainingDynamics
    hyper: HyperSpace
    steps: int
    batch_size: int | None
    seed: int
    device: torch.device
    dtype: torch.dtype
    order_seed: int = 0
    kind: str = ""  #: which task this is (lr, reweight); empty means the name
    _perm_cache: dict = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.data.x_train.shape[0])

    def init_state(self) -> torch.Tensor:
        """theta_0 of this seed."""
        return self.dynamics.init_state(self.seed, dtype=self.dtype, device=self.device)

    def init_phi(self) -> torch.Tensor:
        """phi_0 (the hyperparameters' initial values, unconstrained)."""
        return self.hyper.init_phi(self.dtype, self.device)

    def batch_indices(self, step: int, order: int | None = None) -> torch.Tensor:
        """Indices of the training examples of global step ``step`` (full batch: all of them).

        ``order`` selects an independent batch order (default: the task's own); epochs are
        fresh permutations of the training set, the last incomplete batch of an epoch dropped.
        """
        n = self.n_train
        if self.batch_size is None or self.batch_size >= n:
            return torch.arange(n, device=self.device)
        per_epoch = n // self.batch_size
        epoch, k = divmod(step, per_epoch)
        key = (self.order_seed if order is None else order, epoch)
        perm = self._perm_cache.get(key)
        if perm is None:
            g = torch.Generator().manual_seed(key[0] * 1_000_003 + self.seed * 7919 + epoch)
            perm = torch.randperm(n, generator=g).to(self.device)
            if len(self._perm_cache) > 64:
                self._perm_cache.clear()
            self._perm_cache[key] = perm
        return perm[k * self.batch_size : (k + 1) * self.batch_size]

    def batch(self, step: int, order: int | None = None) -> Batch:
        """The :class:`Batch` of global step ``step``."""
        idx = self.batch_indices(step, order)
        return Batch(self.data.x_train[idx], self.data.y_train[idx], idx, step)

    def batches(self, start: int, stop: int, order: int | None = None) -> list[Batch]:
        """Batches of steps ``start .. stop - 1``."""
        return [self.batch(t, order) for t in range(start, stop)]

    def val_fn(self):
        """Meta objective: mean loss on the (clean) validation set."""
        return self.dynamics.loss_fn(self.data.x_val, self.data.y_val)

    def evaluate(self, state: torch.Tensor) -> dict[str, float]:
        """Loss and accuracy on train (as labelled, i.e. noisy for reweight), validation and test."""
        out: dict[str, float] = {}
        d = self.data
        with torch.no_grad():
            for split, x, y in (("train", d.x_train, d.y_train), ("val", d.x_val, d.y_val), ("test", d.x_test, d.y_test)):
                out[f"{split}_loss"] = float(self.dynamics.loss(state, x, y))
                out[f"{split}_acc"] = self.dynamics.accuracy(state, x, y)
        return out

    def hyper_values(self, phi: torch.Tensor) -> dict[str, float]:
        """Constrained hyperparameter values for logging (aggregates for per-example weights)."""
        vals = self.hyper.constrain(phi.detach())
        out: dict[str, float] = {}
        for name, v in vals.items():
            v = v.detach().cpu().to(torch.float64)
            if name == "example_weight":
                out["hp:example_weight_mean"] = float(v.mean())
                if self.data.flipped is not None:
                    flipped = self.data.flipped.cpu()
                    out["hp:example_weight_clean_mean"] = float(v[~flipped].mean()) if (~flipped).any() else float("nan")
                    out["hp:example_weight_flipped_mean"] = float(v[flipped].mean()) if flipped.any() else float("nan")
            elif v.numel() == 1:
                out[f"hp:{name}"] = float(v[0])
            else:
                for i, x in enumerate(v.tolist()):
                    out[f"hp:{name}[{i}]"] = float(x)
        return out


def _model_needs_images(kind: str) -> bool:
    return kind in IMAGE_INPUT_KINDS


def build_task(config: Mapping[str, Any], task: str, seed: int, device: torch.device, dtype: torch.dtype) -> Task:
    """Build task ``task`` of a validated config for ``seed`` on ``device`` in ``dtype``.

    A task of kind ``nqm`` is a :class:`glocal.nqm.NQMTask` (same interface, no data set).
    """
    tcfg = task_config(config, task)
    kind = task_kind(config, task)
    if kind not in TASKS:
        raise ConfigError(f"tasks.{task}.kind: unknown task kind {kind!r}; expected one of {list(TASKS)}")
    if kind == "nqm":
        from glocal.nqm import build_nqm_task

        return build_nqm_task(tcfg, seed, device, dtype, name=task)
    dcfg = config["data"]
    model_spec = dict(tcfg["model"])
    label_noise = float(tcfg.get("label_noise", 0.0)) if kind == "reweight" else 0.0
    root = dcfg.get("root")
    if dcfg["name"] != "digits" and not root:
        raise ConfigError(f"data.root: dataset {dcfg['name']!r} needs a local directory of its files")
    data = load_dataset(
        dcfg["name"],
        root=root,
        val_fraction=dcfg["val_fraction"],
        test_fraction=dcfg["test_fraction"],
        n_train=dcfg.get("n_train"),
        seed=dcfg["seed"],
        dtype=dtype,
        flatten=not _model_needs_images(model_spec["kind"]),
        label_noise=label_noise,
        noise_seed=dcfg["seed"] + 1000 * seed if label_noise > 0 else None,
    )
    data = _to_device(data, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(model_spec, data.in_shape, data.n_classes)
    model = model.to(device=device, dtype=dtype)
    ocfg = dict(tcfg["optimizer"])
    opt = OptimizerConfig(**ocfg)
    blocks: list[HyperBlock] = []
    if kind == "lr":
        for name in tcfg["tune"]:
            if name == "lr":
                continue  # sized below, once the layer groups are known
            if name == "momentum" and opt.kind not in ("momentum", "nesterov"):
                raise ConfigError(f"tasks.lr.tune: 'momentum' needs optimizer.kind momentum or nesterov, got {opt.kind!r}")
            if name in ("beta1", "beta2") and opt.kind != "adam":
                raise ConfigError(f"tasks.lr.tune: {name!r} needs optimizer.kind adam, got {opt.kind!r}")
            init = getattr(opt, name)
            if name == "weight_decay" and init <= 0:
                raise ConfigError("tasks.lr.optimizer.weight_decay: must be > 0 when weight_decay is tuned (log scale)")
            blocks.append(HyperBlock(name, 1, init=init))
        if "lr" in tcfg["tune"]:
            probe = TrainingDynamics(model, opt, HyperSpace([]))
            n_lr = probe.n_groups if tcfg.get("per_layer_lr", True) else 1
            blocks.insert(0, HyperBlock("lr", n_lr, init=opt.lr))
    else:
        n_train = int(data.x_train.shape[0])
        blocks.append(HyperBlock("example_weight", n_train, init=float(tcfg.get("init_weight", 0.5))))
    hyper = HyperSpace(blocks)
    dynamics = TrainingDynamics(model, opt, hyper)
    return Task(
        name=task,
        data=data,
        dynamics=dynamics,
        hyper=hyper,
        steps=int(tcfg["steps"]),
        batch_size=tcfg.get("batch_size"),
        seed=seed,
        device=device,
        dtype=dtype,
        kind=kind,
    )


def _to_device(data: DataSplits, device: torch.device) -> DataSplits:
    for field_name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "flipped", "clean_y_train"):
        v = getattr(data, field_name, None)
        if isinstance(v, torch.Tensor):
            setattr(data, field_name, v.to(device))
    return data
