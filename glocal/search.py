"""Black-box baselines: random search, Optuna's TPE and CMA-ES (``glocal train --strategy random|tpe|cmaes``).

One *trial* is one full training run of the task (``steps`` inner steps from theta_0, the run
seed's initialization and batch order) at hyperparameters fixed for the whole run, exactly
like the ``fixed`` strategy; trials differ only in their hyperparameters. The trial's
objective is the **final** validation loss (after the last step), the quantity the gradient
strategies descend; a run that diverges scores ``inf``. The budget is counted in full
training runs, the unit of ``global``'s M (``meta_iterations``).

Search spaces (ranges overridable per name under ``strategy_options.<random|tpe>.space``):

* ``lr`` task — the hyperparameters the gradient strategies tune (``tasks.lr.tune``): each
  per-layer learning rate ``lr[i]`` log-uniform in [1e-3, 1], ``weight_decay`` log-uniform in
  [1e-6, 1e-1], ``momentum`` uniform in [0, 0.99], ``beta1`` / ``beta2`` uniform in [0.5, 0.999].
* ``reweight`` task — a two-parameter weighting rule instead of one weight per example:
  ``w_i = sigmoid(slope * (loss_i - mean_batch loss) + offset)`` (rule ``centered``, the
  default) or ``w_i = sigmoid(slope * loss_i + offset)`` (rule ``raw``), recomputed before
  every step from the current per-example training losses (detached). ``slope`` is uniform in
  [-10, 0] (negative: high-loss examples, likely flipped, are down-weighted — the small-loss
  rule), ``offset`` uniform in [-3, 3]. The rule is applied through the task's own
  ``example_weight`` block (phi_i = slope * loss_i + offset), so the step is the same
  :class:`~glocal.dynamics.TrainingDynamics` step the other strategies use.

Run directory (same format as the other strategies, plus the study):

Samplers: ``random`` (RandomSampler), ``tpe`` (TPESampler, multivariate) and ``cmaes`` (CmaEsSampler, the
evolution strategy CMA-ES of the ``cmaes`` package: after ``n_startup_trials`` random trials, generations of
``popsize`` trials sampled from a Gaussian whose mean, step size and covariance it adapts to the ranking of
the previous generation; its state lives in the study, so it resumes like the others).

* ``study.db`` — the Optuna RDB storage (SQLite). A search killed halfway and started again
  continues from its finished trials; a trial left ``RUNNING`` by the kill is marked ``FAIL``
  and re-run with the same parameters (the sampler of trial k is seeded by (seed, k), where k
  counts *finished* trials, so the resumed search proposes what the uninterrupted one would).
* ``trials/trial_{k:03d}/`` — ``metrics.csv`` and ``summary.json`` (and ``weights.csv``) of trial k;
* ``trials.csv`` — one row per finished trial: parameters, final metrics, wall time, cumulative
  wall time and the best-so-far validation loss (with that trial's test metrics);
* ``metrics.csv``, ``summary.json``, ``weights.csv`` — those of the best trial (lowest
  objective), the summary adding ``n_training_runs`` (trials run) and ``search`` statistics;
  ``time.total`` is the wall time of the whole search.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from glocal.config import ConfigError, check_run, strategy_options, task_config
from glocal.dynamics import Batch, HyperBlock, HyperSpace
from glocal.rundir import (
    METRIC_COLUMNS,
    Divergence,
    DivergenceCheck,
    RunDirectory,
    StopRequested,
    all_finite,
    best_val_loss,
    common_summary,
    fingerprint,
    write_metrics,
    write_weights,
)
from glocal.tasks import Task, build_task
from glocal.utils import (
    atomic_write_bytes,
    atomic_write_csv,
    atomic_write_json,
    make_dirs,
    resolve_device,
    resolve_dtype,
)

__all__ = ["run_search", "DEFAULT_SPACE", "SEARCH_STRATEGIES", "SAMPLER_NAMES", "validate_space", "TRIAL_COLUMNS"]

SEARCH_STRATEGIES = ("random", "tpe", "cmaes")
#: the Optuna sampler class of each search strategy (recorded in summary.json)
SAMPLER_NAMES = {"random": "RandomSampler", "tpe": "TPESampler", "cmaes": "CmaEsSampler"}

#: Default ranges: name -> (low, high, log). ``lr`` applies to every per-layer rate.
DEFAULT_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"low": 1e-3, "high": 1.0, "log": True},
    "weight_decay": {"low": 1e-6, "high": 1e-1, "log": True},
    "momentum": {"low": 0.0, "high": 0.99, "log": False},
    "beta1": {"low": 0.5, "high": 0.999, "log": False},
    "beta2": {"low": 0.5, "high": 0.999, "log": False},
    "slope": {"low": -10.0, "high": 0.0, "log": False},
    "offset": {"low": -3.0, "high": 3.0, "log": False},
}
_RANGE_FIELDS = ("low", "high", "log")
_UNIT_INTERVAL = ("momentum", "beta1", "beta2")
_REWEIGHT_RULES = ("centered", "raw")
_LOGIT_EPS = 1e-6

#: Leading columns of trials.csv; parameter columns follow ``trial``, metric columns follow them.
TRIAL_COLUMNS = [
    "val_loss", "best_val_loss", "val_acc", "test_loss", "test_acc", "train_loss", "train_acc",
    "diverged_step", "wall_time", "cumulative_wall_time", "n_training_runs",
    "best_so_far_val_loss", "best_so_far_trial", "best_so_far_test_loss", "best_so_far_test_acc",
]


# ---------------------------------------------------------------------------- configuration
def validate_space(space: Any, where: str) -> None:
    """Check a ``space`` mapping (name -> {low, high, log}); errors name the offending key."""
    if space is None:
        return
    if not isinstance(space, Mapping):
        raise ConfigError(f"{where}: expected a mapping of hyperparameter name -> {{low, high, log}}")
    for name, rng in space.items():
        key = f"{where}.{name}"
        if name not in DEFAULT_SPACE:
            raise ConfigError(f"{key}: unknown hyperparameter {name!r} in the search space; "
                              f"known: {sorted(DEFAULT_SPACE)}")
        if not isinstance(rng, Mapping):
            raise ConfigError(f"{key}: expected a mapping with keys {list(_RANGE_FIELDS)}")
        for field in rng:
            if field not in _RANGE_FIELDS:
                raise ConfigError(f"{key}.{field}: unknown field {field!r}; expected {list(_RANGE_FIELDS)}")
        merged = {**DEFAULT_SPACE[name], **rng}
        low, high, log = merged["low"], merged["high"], merged["log"]
        for f, v in (("low", low), ("high", high)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise ConfigError(f"{key}.{f}: expected a finite number, got {v!r}")
        if not isinstance(log, bool):
            raise ConfigError(f"{key}.log: expected true or false, got {log!r}")
        if not low < high:
            raise ConfigError(f"{key}: low ({low}) must be below high ({high})")
        if log and low <= 0:
            raise ConfigError(f"{key}.low: a log-uniform range needs low > 0, got {low}")
        if name in ("lr", "weight_decay") and low <= 0:
            raise ConfigError(f"{key}.low: {name} must stay positive, got {low}")
        if name in _UNIT_INTERVAL and not (0 <= low and high < 1):
            raise ConfigError(f"{key}: {name} must lie in [0, 1), got [{low}, {high}]")


_OPTION_KEYS = {"n_trials", "space", "reweight_rule", "n_startup_trials", "popsize", "sigma0"}
#: options only some search strategies take
_OWN_OPTIONS = {"n_startup_trials": ("tpe", "cmaes"), "popsize": ("cmaes",), "sigma0": ("cmaes",)}


def _check_options(config: Mapping[str, Any], task: str, strategy: str) -> dict[str, Any]:
    """Resolved options of a search strategy, every key checked where it was written."""
    sources = [(f"strategy_options.{strategy}", (config.get("strategy_options") or {}).get(strategy) or {})]
    over = (task_config(config, task).get("strategy_options") or {}).get(strategy) or {}
    sources.append((f"tasks.{task}.strategy_options.{strategy}", over))
    for where, raw in sources:
        for key in raw:
            if key not in _OPTION_KEYS or strategy not in _OWN_OPTIONS.get(key, (strategy,)):
                raise ConfigError(f"{where}.{key}: unknown option {key!r} of strategy {strategy!r}")
        validate_space(raw.get("space"), f"{where}.space")
        rule = raw.get("reweight_rule")
        if rule is not None and rule not in _REWEIGHT_RULES:
            raise ConfigError(f"{where}.reweight_rule: expected one of {list(_REWEIGHT_RULES)}, got {rule!r}")
    opts = strategy_options(config, task, strategy)
    opts.pop("outer", None)
    n = opts.get("n_trials", 10)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"strategy_options.{strategy}.n_trials: expected a positive integer, got {n!r}")
    space = {k: dict(v) for k, v in DEFAULT_SPACE.items()}
    for name, rng in (opts.get("space") or {}).items():
        space[name].update(rng)
    validate_space(space, f"strategy_options.{strategy}.space")
    resolved = {"n_trials": n, "space": space, "reweight_rule": opts.get("reweight_rule") or "centered"}
    if strategy == "tpe":
        ns = opts.get("n_startup_trials")
        resolved["n_startup_trials"] = int(ns) if ns is not None else max(2, min(10, n // 3))
    if strategy == "cmaes":
        resolved["n_startup_trials"] = int(opts.get("n_startup_trials") or 1)
        resolved["popsize"] = None if opts.get("popsize") is None else int(opts["popsize"])
        resolved["sigma0"] = None if opts.get("sigma0") is None else float(opts["sigma0"])
    return resolved


# ---------------------------------------------------------------------------- search space
def _space_names(task: Task) -> list[tuple[str, str]]:
    """(parameter name, space key) of every searched coordinate, in suggestion order."""
    if task.kind == "reweight":
        return [("slope", "slope"), ("offset", "offset")]
    out = []
    for b in task.hyper.blocks:
        if b.size == 1:
            out.append((b.name, b.name))
        else:
            out += [(f"{b.name}[{i}]", b.name) for i in range(b.size)]
    return out


def _phi_from_params(task: Task, params: Mapping[str, float]) -> torch.Tensor:
    """Unconstrained phi of the lr task at the trial's constrained values."""
    blocks = []
    for b in task.hyper.blocks:
        vals = [params[b.name]] if b.size == 1 else [params[f"{b.name}[{i}]"] for i in range(b.size)]
        v = torch.tensor(vals, dtype=torch.float64)
        if b.transform == "logit":
            v = v.clamp(_LOGIT_EPS, 1 - _LOGIT_EPS)
        blocks.append(HyperBlock(b.name, b.size, b.transform, v))
    return HyperSpace(blocks).init_phi(task.dtype, task.device)


class _Reweighter:
    """The parametric weighting rule phi_i = slope * (loss_i [- mean]) + offset (w_i = sigmoid(phi_i))."""

    def __init__(self, task: Task, slope: float, offset: float, rule: str) -> None:
        self.task, self.slope, self.offset, self.centered = task, float(slope), float(offset), rule == "centered"
        self.phi = task.init_phi().clone()

    def logits(self, state: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dyn = self.task.dynamics
        with torch.no_grad():
            losses = dyn._per_example_loss(state[: dyn.n_params], x, y)
            if self.centered:
                losses = losses - losses.mean()
            return self.slope * losses + self.offset

    def refresh(self, state: torch.Tensor, batch: Batch) -> None:
        """Set the weights of the batch's examples from their current losses."""
        self.phi[batch.index] = self.logits(state, batch.x, batch.y).to(self.phi.dtype)

    def refresh_all(self, state: torch.Tensor) -> torch.Tensor:
        """Weights of every training example at ``state`` (centered on the full-set mean); returns phi."""
        d = self.task.data
        self.phi = self.logits(state, d.x_train, d.y_train).to(self.phi.dtype)
        return self.phi


# ---------------------------------------------------------------------------- one trial
def _train_trial(task: Task, params: Mapping[str, float], opts: Mapping[str, Any], k: int,
                 trial_dir: Path, divergence: DivergenceCheck) -> dict[str, Any]:
    """One full training run at fixed hyperparameters; writes the trial's files, returns its record.

    ``divergence`` is the run's :class:`~glocal.rundir.DivergenceCheck` (the same definition as the
    gradient strategies'); a trial that diverges stops there and scores ``inf``.
    """
    t_start, c_start = time.perf_counter(), time.process_time()
    T = task.steps
    eval_every = max(1, T // 50)
    step_fn, val_fn = task.dynamics.step, task.val_fn()
    rw = _Reweighter(task, params["slope"], params["offset"], opts["reweight_rule"]) if task.kind == "reweight" else None
    phi = rw.phi if rw is not None else _phi_from_params(task, params)
    state = task.init_state()
    timers = {"training": 0.0, "evaluation": 0.0}
    rows: list[dict[str, Any]] = []
    check = DivergenceCheck(divergence.max_loss_ratio)  # each trial's own initial loss

    def log(step: int) -> Divergence | None:
        t0 = time.perf_counter()
        row: dict[str, Any] = {"step": step, "run": k}
        if all_finite(state):
            row.update(task.evaluate(state))
            if rw is not None:
                row.update(task.hyper_values(rw.refresh_all(state)))
        else:
            row.update({c: float("nan") for c in METRIC_COLUMNS[3:]})
        if rw is not None:
            row.update({"hp:slope": rw.slope, "hp:offset": rw.offset})
        else:
            row.update(task.hyper_values(phi))
        timers["evaluation"] += time.perf_counter() - t0
        row["wall_time"] = round(time.perf_counter() - t_start, 4)
        rows.append(row)
        return check.training_loss(step, row["train_loss"])

    diverged = log(0)
    step = 0
    while step < T and diverged is None:
        end = min(step + eval_every, T)
        t0 = time.perf_counter()
        with torch.no_grad():
            for batch in task.batches(step, end):
                if rw is not None:
                    rw.refresh(state, batch)
                state = step_fn(state, phi if rw is None else rw.phi, batch)
        timers["training"] += time.perf_counter() - t0
        step = end
        diverged = check.tensors(step, state=state)
        if diverged is None:
            with torch.no_grad():
                diverged = check.value(step, "validation loss", val_fn(state, phi))
        logged = log(step)
        diverged = diverged or logged
    final = rows[-1]
    val = final.get("val_loss", math.nan)
    objective = float(val) if diverged is None and math.isfinite(val) else math.inf
    record: dict[str, Any] = {
        "trial": k,
        "params": dict(params),
        "objective": objective,
        "final": {c: final.get(c) for c in METRIC_COLUMNS[3:]},
        "best_val_loss": best_val_loss(rows),
        "diverged_step": None if diverged is None else diverged.step,
        "divergence": None if diverged is None else diverged.to_record(),
        "timers": timers,
    }
    make_dirs(trial_dir)
    if rw is not None and diverged is None and task.data.flipped is not None:
        record["auc"] = write_weights(trial_dir, torch.sigmoid(rw.refresh_all(state)), task.data.flipped)
    elif rw is not None:
        record["auc"] = None
    if rw is not None:
        record["hyperparameters"] = {"slope": rw.slope, "offset": rw.offset, "rule": opts["reweight_rule"],
                                     **{k2: v for k2, v in final.items() if k2.startswith("hp:example_weight")}}
    else:
        record["hyperparameters"] = task.hyper_values(phi)
    write_metrics(trial_dir, rows)
    record["wall_time"] = time.perf_counter() - t_start
    record["cpu_time"] = time.process_time() - c_start
    atomic_write_json(trial_dir / "summary.json", record)
    return record


# ---------------------------------------------------------------------------- the study
def _cmaes_sampler_class():
    import optuna

    class IndexedCmaEsSampler(optuna.samplers.CmaEsSampler):
        """CmaEsSampler whose random numbers depend on the seed and the trial's index k (finished trials before
        it), not on Optuna's trial number, which also counts the attempts a kill interrupted: a resumed search
        then proposes exactly what the uninterrupted one would have (CmaEsSampler seeds its CMA-ES's generator
        with a draw of its own generator plus the trial number)."""

        def __init__(self, *, index: int, **kw: Any) -> None:
            super().__init__(**kw)
            self._index = int(index)

        def sample_relative(self, study, trial, search_space):
            renumbered = copy.copy(trial)
            renumbered.number = self._index
            return super().sample_relative(study, renumbered, search_space)

    return IndexedCmaEsSampler


def _sampler(strategy: str, seed: int, k: int, opts: Mapping[str, Any]):
    import optuna

    s = (seed * 1_000_003 + k * 7_919 + 17) % (2**31 - 1)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=s)
    if strategy == "cmaes":
        # A fresh sampler per trial, like the others: CMA-ES's state (mean, step size, covariance) is stored in
        # the study by the trial that completes a generation and restored from there.
        return _cmaes_sampler_class()(index=k, seed=s, n_startup_trials=int(opts["n_startup_trials"]),
                                      popsize=opts.get("popsize"), sigma0=opts.get("sigma0"),
                                      independent_sampler=optuna.samplers.RandomSampler(seed=s),
                                      warn_independent_sampling=False)
    return optuna.samplers.TPESampler(seed=s, n_startup_trials=int(opts["n_startup_trials"]))


def _suggest(trial, task: Task, space: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    params = {}
    for name, key in _space_names(task):
        r = space[key]
        params[name] = trial.suggest_float(name, float(r["low"]), float(r["high"]), log=bool(r["log"]))
    return params


def _trial_rows(trials: list, names: list[str]) -> list[dict[str, Any]]:
    """trials.csv rows from the finished trials (ordered by their index k)."""
    rows: list[dict[str, Any]] = []
    cum = 0.0
    best: dict[str, Any] | None = None
    for ft in sorted(trials, key=lambda t: t.user_attrs["index"]):
        rec = ft.user_attrs
        fin = rec["final"]
        cum += float(rec["wall_time"])
        row: dict[str, Any] = {"trial": rec["index"], **{n: ft.params[n] for n in names}}
        row.update({
            "val_loss": ft.value, "best_val_loss": rec.get("best_val_loss"),
            "val_acc": fin.get("val_acc"), "test_loss": fin.get("test_loss"), "test_acc": fin.get("test_acc"),
            "train_loss": fin.get("train_loss"), "train_acc": fin.get("train_acc"),
            "diverged_step": rec.get("diverged_step"), "wall_time": round(float(rec["wall_time"]), 4),
            "cumulative_wall_time": round(cum, 4), "n_training_runs": rec["index"] + 1,
        })
        if "auc" in rec:
            row["auc"] = rec["auc"]
        if best is None or ft.value < best["val_loss"]:
            best = row
        row.update({
            "best_so_far_val_loss": best["val_loss"], "best_so_far_trial": best["trial"],
            "best_so_far_test_loss": best["test_loss"], "best_so_far_test_acc": best["test_acc"],
        })
        rows.append(row)
    return rows


def run_search(
    config: Mapping[str, Any],
    task: str,
    strategy: str,
    seed: int,
    out,
    *,
    progress: bool | None = None,
    stop_after: int | None = None,
    answer_key=None,
) -> dict[str, Any]:
    """Random search, TPE or CMA-ES over the task's hyperparameters into run directory ``out``.

    ``answer_key`` (tasks of kind ``nqm``): as in :func:`glocal.train.run_experiment`.

    ``stop_after`` (tests) raises :class:`glocal.rundir.StopRequested` once that many trials
    have finished in the study, as a kill would. A second process writing the same ``out`` refuses
    (:class:`glocal.rundir.RunLockedError`).
    """
    import optuna  # noqa: F401 - without the `baselines` extra, fail before the directory is touched

    if strategy == "cmaes":
        try:
            import cmaes  # noqa: F401 - optuna's CmaEsSampler needs it
        except ImportError as err:
            raise ImportError("strategy cmaes needs the package cmaes: pip install 'glocal[baselines]'") from err

    if strategy not in SEARCH_STRATEGIES:
        raise ConfigError(f"strategy: {strategy!r} is not a search strategy; expected one of {list(SEARCH_STRATEGIES)}")
    # Every check, and the data, before the run directory is touched.
    opts = _check_options(config, task, strategy)
    check_run(config, task, strategy)
    out = Path(out)
    divergence = DivergenceCheck.from_config(config)
    device = resolve_device(config.get("device", "auto"))
    dtype = resolve_dtype(config.get("dtype", "float32"))
    torch.manual_seed(seed)
    t = build_task(config, task, seed, device, dtype)
    from glocal.nqm_runs import task_answer_key

    key = task_answer_key(config, t, answer_key)
    # n_trials stays out of the fingerprint: raising it extends a finished study.
    tcfg = {k: v for k, v in task_config(config, task).items() if k != "strategy_options"}
    fp_obj = {"data": config.get("data"), "device": str(device), "dtype": str(dtype), "task": task, "tcfg": tcfg,
              "strategy": strategy, "seed": seed, "options": {k: v for k, v in opts.items() if k != "n_trials"},
              "divergence": divergence.max_loss_ratio}
    fp = fingerprint(fp_obj)
    resolved = {"config": dict(config), "task": task, "strategy": strategy, "seed": seed, "options": opts}
    if progress is None:
        progress = sys.stderr.isatty()
    with RunDirectory(out, task=task, strategy=strategy, seed=seed) as rd:
        rd.write_config({**resolved, "fingerprint": fp})
        return _run_study(rd, config, t, strategy, opts, fp, divergence, progress=progress, stop_after=stop_after,
                          nqm_key=key)


def _run_study(rd: RunDirectory, config: Mapping[str, Any], t: Task, strategy: str, opts: Mapping[str, Any], fp: str,
               divergence: DivergenceCheck, *, progress: bool, stop_after: int | None,
               nqm_key: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The study of :func:`run_search` in its locked run directory ``rd``; returns the summary."""
    import optuna

    out, task, seed, device, dtype = rd.path, t.name, t.seed, t.device, t.dtype
    names = [n for n, _ in _space_names(t)]
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    db = out / "study.db"
    study_name = f"{task}/{strategy}/seed{seed}"
    storage = optuna.storages.RDBStorage(f"sqlite:///{db.resolve()}")
    try:
        study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize",
                                    load_if_exists=True)
        old_fp = study.user_attrs.get("fingerprint")
        if old_fp is not None and old_fp != fp:
            print(f"glocal train: {db} belongs to another configuration; starting afresh", file=sys.stderr)
            optuna.delete_study(study_name=study_name, storage=storage)
            shutil.rmtree(out / "trials", ignore_errors=True)
            study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize")
        study.set_user_attr("fingerprint", fp)
        # Trials a kill left RUNNING: mark them failed; the same index k is run again.
        stale = [ft for ft in study.get_trials(deepcopy=False) if ft.state == optuna.trial.TrialState.RUNNING]
        for ft in stale:
            storage.set_trial_state_values(ft._trial_id, state=optuna.trial.TrialState.FAIL)
        resumed = bool(study.get_trials(deepcopy=False))

        def complete():
            return study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))

        n_done = len(complete())
        from tqdm.auto import tqdm

        bar = tqdm(total=opts["n_trials"], initial=min(n_done, opts["n_trials"]), disable=not progress,
                   desc=f"{task}/{strategy}/seed{seed}", unit="trial", leave=False)
        try:
            while n_done < opts["n_trials"]:
                k = n_done
                t0, c0 = time.perf_counter(), time.process_time()
                study.sampler = _sampler(strategy, seed, k, opts)
                trial = study.ask()
                params = _suggest(trial, t, opts["space"])
                sampling = time.perf_counter() - t0
                sampling_cpu = time.process_time() - c0
                rec = _train_trial(t, params, opts, k, out / "trials" / f"trial_{k:03d}", divergence)
                rec["wall_time"] += sampling
                rec["cpu_time"] += sampling_cpu
                rec["sampling_time"] = sampling
                rec["final"] = {c: (v if v is None or math.isfinite(v) else None) for c, v in rec["final"].items()}
                for key in ("final", "best_val_loss", "diverged_step", "divergence", "wall_time", "sampling_time",
                            "timers", "auc", "cpu_time"):
                    if key in rec:
                        trial.set_user_attr(key, rec[key])
                trial.set_user_attr("index", k)
                study.tell(trial, rec["objective"])
                n_done += 1
                bar.update(1)
                if stop_after is not None and n_done >= stop_after and n_done < opts["n_trials"]:
                    raise StopRequested
        finally:
            bar.close()
        finished = [ft for ft in complete() if ft.user_attrs["index"] < opts["n_trials"]]
        n_failed = len(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)))
    finally:
        storage.engine.dispose()

    rows = _trial_rows(finished, names)
    extra = ["auc"] if t.kind == "reweight" else []
    atomic_write_csv(out / "trials.csv", rows, ["trial", *names, *TRIAL_COLUMNS, *extra])
    best_row = min(rows, key=lambda r: (r["val_loss"], r["trial"]))
    k_best = best_row["trial"]
    best_dir = out / "trials" / f"trial_{k_best:03d}"
    best = json.loads((best_dir / "summary.json").read_text())
    for name in (RunDirectory.METRICS, RunDirectory.WEIGHTS):
        if (best_dir / name).exists():
            atomic_write_bytes(out / name, (best_dir / name).read_bytes())
    walls = [r["wall_time"] for r in rows]
    timers = {"training": 0.0, "evaluation": 0.0}
    for ft in finished:
        for key in timers:
            timers[key] += float(ft.user_attrs.get("timers", {}).get(key, 0.0))
    div = best.get("divergence")
    summary = common_summary(task=task, strategy=strategy, seed=seed, final=best["final"],
                             best_val_loss=best.get("best_val_loss"), device=device, dtype=dtype,
                             divergence=Divergence(**div) if div else None)
    summary.update({
        "hyperparameters": best["hyperparameters"],
        "time": {"total": rows[-1]["cumulative_wall_time"],
                 "cpu": sum(float(ft.user_attrs.get("cpu_time", 0.0)) for ft in finished), "training": timers["training"],
                 "hypergradient": 0.0, "dmd": 0.0, "evaluation": timers["evaluation"],
                 "search": sum(float(ft.user_attrs.get("sampling_time", 0.0)) for ft in finished)},
        "engine": None,
        "n_training_runs": len(rows), "n_hyper_updates": 0, "q": len(names), "steps": t.steps,
        "resumed": resumed, "fallbacks": 0,
        "search": {
            "sampler": SAMPLER_NAMES[strategy],
            "objective": "final val_loss (inf if the run diverged)",
            "n_trials": len(rows), "best_trial": k_best, "best_params": best["params"],
            "parameters": names, "space": {key: opts["space"][key] for key in sorted({s for _, s in _space_names(t)})},
            "n_failed_attempts": n_failed, "n_diverged": sum(1 for r in rows if r["diverged_step"] is not None),
            "wall_time_per_trial": {"mean": sum(walls) / len(walls), "min": min(walls), "max": max(walls)},
            "study": str(db.name), "study_name": study_name,
        },
        "options": opts, "config": dict(config), "fingerprint": fp,
    })
    if t.kind == "reweight":
        summary["search"]["reweight_rule"] = opts["reweight_rule"]
        summary["auc"] = best.get("auc")
    # Same run-directory layout as the gradient strategies: a black-box search uses no hypergradient.
    rd.write_hypergrads([])
    sections = {}
    if nqm_key is not None:  # the best trial's hyperparameters against the task's answer key
        from glocal.nqm_runs import run_record

        sections["nqm"] = run_record(t, strategy, [], _phi_from_params(t, best["params"]), nqm_key,
                                     diverged_step=best.get("diverged_step"), final_loss=best["final"].get("val_loss"),
                                     n_training_runs=len(rows), wall_time=summary["time"]["total"],
                                     cpu_time=summary["time"]["cpu"])
    return rd.write_summary(summary, **sections)
