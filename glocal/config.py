"""Experiment configuration: load YAML, validate it against the JSON schema and fill defaults.

The schema is ``workflow/schemas/config.schema.yaml`` (the Snakefile validates with it); the
package carries an identical copy, ``glocal/config.schema.yaml``, so the command line
validates the same way when the package is installed without the workflow.

Checks across keys that a JSON schema cannot express (:func:`check_config`, :func:`check_run`)
live here too. The Snakefile loads this file by path to run them at parse time, from an
environment that may lack torch: keep its imports to the standard library, jsonschema and yaml.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

__all__ = [
    "load_config",
    "validate_config",
    "schema_path",
    "task_config",
    "task_kind",
    "strategy_options",
    "base_strategy",
    "BUILTIN_STRATEGIES",
    "check_config",
    "check_variants",
    "check_run",
    "check_data",
    "ConfigError",
    "WINDOWED_STRATEGIES",
    "enabled_tasks",
    "task_strategies",
    "task_seeds",
    "extract_options",
    "extract_tasks",
    "sensitivity_starts",
    "ablation_extract_tasks",
    "ablation_hpo_axes",
    "ABLATION_AXES",
    "ablation_config",
    "sensitivity_config",
    "check_sections",
]

#: The strategies the runner implements; a variant (``strategy_variants``) runs one of the gradient ones.
BUILTIN_STRATEGIES = ("fixed", "hd", "local", "glocal", "global", "random", "tpe", "cmaes")
VARIANT_BASES = ("hd", "local", "glocal", "global")

#: Strategies that update phi at the end of every window of ``strategy_options.<name>.window`` steps
#: (``hd``'s window is always 1; ``local``'s defaults to ``glocal``'s).
WINDOWED_STRATEGIES = ("hd", "local", "glocal")


class ConfigError(ValueError):
    """A configuration problem; the message names the offending key."""


def schema_path() -> Path:
    """Path of the config schema (the package copy)."""
    return Path(__file__).with_name("config.schema.yaml")


def _defaults_validator():
    base = jsonschema.Draft202012Validator

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    return jsonschema.validators.extend(base, {"properties": set_defaults})


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    return ".".join(parts) if parts else "<top level>"


def validate_config(config: Mapping[str, Any], *, source: str = "config") -> dict[str, Any]:
    """Validate ``config`` and return a copy with every default filled in.

    Raises :class:`ConfigError` naming the first bad key (unknown key, wrong type, bad value).
    """
    schema = yaml.safe_load(schema_path().read_text())
    cfg = copy.deepcopy(dict(config))
    validator_cls = _defaults_validator()
    # Fill defaults in two passes: defaults of nested objects appear only after their parent's.
    for _ in range(2):
        errors = sorted(validator_cls(schema).iter_errors(cfg), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        key = _key_path(err)
        if err.validator == "additionalProperties":
            raise ConfigError(f"{source}: unknown key at '{key}': {err.message}")
        raise ConfigError(f"{source}: invalid value for '{key}': {err.message}")
    check_variants(cfg)
    return cfg


def load_config(path: str | Path | None, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read a YAML config file (``None``: all defaults), apply ``overrides`` and validate."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"--config: no such file {str(p)!r}")
        loaded = yaml.safe_load(p.read_text())
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{p}: the top level must be a mapping of keys, got {type(loaded).__name__}")
        raw = loaded
    if overrides:
        raw = _deep_merge(raw, overrides)
    return validate_config(raw, source=str(path) if path else "config")


def _deep_merge(base: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(dict(base))
    for k, v in extra.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def task_config(config: Mapping[str, Any], task: str) -> dict[str, Any]:
    """The validated sub-config of ``task``, with an error naming the task and the configured ones when absent."""
    tasks = config.get("tasks", {})
    if task not in tasks:
        raise ConfigError(f"task: unknown task {task!r}; the config defines {sorted(tasks)} (under tasks)")
    return dict(tasks[task])


def task_kind(config: Mapping[str, Any], task: str) -> str:
    """Which task ``task`` is (``lr``, ``reweight``, ...): its ``kind`` key, by default its name."""
    return str(task_config(config, task).get("kind") or task)


def base_strategy(config: Mapping[str, Any], strategy: str) -> str:
    """The built-in strategy that runs ``strategy`` (itself, or a variant's base); :class:`ConfigError` if unknown."""
    if strategy in BUILTIN_STRATEGIES:
        return strategy
    variant = (config.get("strategy_variants") or {}).get(strategy)
    if variant is None:
        raise ConfigError(f"strategy: unknown strategy {strategy!r}; expected one of {list(BUILTIN_STRATEGIES)} "
                          "or a variant declared under strategy_variants")
    return variant["strategy"]


def strategy_options(config: Mapping[str, Any], task: str, strategy: str) -> dict[str, Any]:
    """Options of ``strategy`` for ``task``: top-level defaults merged with the task's overrides.

    A variant (``strategy_variants.<name>``) takes its base strategy's options, then its own
    ``options``, then ``tasks.<task>.strategy_options.<name>``.

    ``hd`` always has window 1; a ``local`` window left null is ``glocal``'s window for the task.

    The outer-optimizer settings are merged in under ``outer``: ``strategy_options.outer``, then
    ``tasks.<task>.strategy_options.outer``, then the strategy's own ``outer`` at either level.
    """
    base = base_strategy(config, strategy)
    over = task_config(config, task).get("strategy_options", {}) or {}
    if base != strategy:
        variant = config["strategy_variants"][strategy]
        return _deep_merge(_deep_merge(strategy_options(config, task, base), variant.get("options") or {}),
                           over.get(strategy) or {})
    top = config.get("strategy_options", {})
    opts = _deep_merge(top.get(strategy, {}), over.get(strategy, {}))
    # Outer optimizer, most specific last: all strategies, the task, the strategy, the task's strategy.
    outer: dict[str, Any] = {}
    for layer in (top.get("outer"), over.get("outer"), top.get(strategy, {}).get("outer"),
                  over.get(strategy, {}).get("outer")):
        outer = _deep_merge(outer, layer or {})
    opts["outer"] = outer
    if strategy == "hd":
        opts["window"] = 1
    elif strategy == "local" and opts.get("window") is None:
        # The paper's local baseline: the same window as glocal, so the two differ only in the estimate.
        opts["window"] = strategy_options(config, task, "glocal").get("window")
    return opts


# ---------------------------------------------------------------------------- checks across keys
def check_data(config: Mapping[str, Any]) -> None:
    """The dataset's directory exists (MNIST, CIFAR-10); :class:`ConfigError` naming ``data.root`` otherwise."""
    data = config.get("data") or {}
    name = data.get("name", "digits")
    if name == "digits":
        return
    root = data.get("root")
    if not root:
        raise ConfigError(f"data.root: dataset {name!r} reads local files; set data.root to their directory")
    path = Path(root).expanduser()
    if not path.is_dir():
        what = "exists but is not a directory" if path.exists() else "does not exist"
        raise ConfigError(f"data.root: the {name} directory {str(path)!r} {what}; set data.root to the directory "
                          f"holding the {name} files")


def _window(config: Mapping[str, Any], task: str, strategy: str) -> tuple[Any, str]:
    """The window of a windowed strategy on ``task`` and the key that set it."""
    over = ((task_config(config, task).get("strategy_options") or {}).get(strategy) or {})
    if over.get("window") is not None:
        return over["window"], f"tasks.{task}.strategy_options.{strategy}.window"
    top = ((config.get("strategy_options") or {}).get(strategy) or {})
    if strategy == "local" and top.get("window") is None:  # inherits glocal's
        window, key = _window(config, task, "glocal")
        return window, f"{key} (local's window is glocal's unless set)"
    return top.get("window"), f"strategy_options.{strategy}.window"


def check_run(config: Mapping[str, Any], task: str, strategy: str) -> None:
    """Checks of one run (task x strategy) across keys; :class:`ConfigError` naming the key.

    * the data directory exists (:func:`check_data`);
    * a ``local`` or ``glocal`` window is shorter than the task's ``steps``: phi is updated at the end
      of each window, so a window as long as the run would report tuned hyperparameters that
      training never used.
    """
    check_data(config)
    base = base_strategy(config, strategy)
    if base not in WINDOWED_STRATEGIES:
        return
    tcfg = task_config(config, task)
    window, key = _window(config, task, base)
    if base != strategy:
        window = strategy_options(config, task, strategy).get("window")
        over = ((tcfg.get("strategy_options") or {}).get(strategy) or {})
        if over.get("window") is not None:
            key = f"tasks.{task}.strategy_options.{strategy}.window"
        elif (config["strategy_variants"][strategy].get("options") or {}).get("window") is not None:
            key = f"strategy_variants.{strategy}.options.window"
    steps = tcfg.get("steps")
    if isinstance(window, int) and isinstance(steps, int) and window >= steps:
        raise ConfigError(
            f"{key}: the window ({window} steps) must be shorter than the run (tasks.{task}.steps = {steps}): "
            "hyperparameters are updated at the end of each window, so no update would ever be used"
        )
    if base in ("local", "glocal"):
        period = strategy_options(config, task, strategy).get("update_every")
        if base != strategy:
            window = strategy_options(config, task, strategy).get("window")
        if period is not None and isinstance(window, int) and period < window:
            raise ConfigError(f"update_every of strategy {strategy!r} on task {task!r}: the period ({period} steps) must "
                              f"be at least the window ({window} steps, {key}): each period ends with one window")
        if period is not None and isinstance(steps, int) and period >= steps:
            raise ConfigError(f"update_every of strategy {strategy!r} on task {task!r}: the period ({period} steps) must "
                              f"be shorter than the run (tasks.{task}.steps = {steps}), or no update would ever be used")


def check_variants(config: Mapping[str, Any]) -> None:
    """Strategy names and variants: every name in ``strategies`` exists; a variant does not shadow a
    built-in strategy; its options (and per-task options under its name) are valid options of its base."""
    variants = config.get("strategy_variants") or {}
    for name in variants:
        if name in BUILTIN_STRATEGIES:
            raise ConfigError(f"strategy_variants.{name}: a variant cannot take the name of the built-in strategy {name!r}")
    lists = [("strategies", config.get("strategies") or ())]
    lists += [(f"tasks.{t}.strategies", (tc or {}).get("strategies") or ()) for t, tc in (config.get("tasks") or {}).items()]
    lists.append(("sensitivity.strategies", (config.get("sensitivity") or {}).get("strategies") or ()))
    for key, names in lists:
        for name in names:
            if name not in BUILTIN_STRATEGIES and name not in variants:
                raise ConfigError(f"{key}: unknown strategy {name!r}; expected one of {list(BUILTIN_STRATEGIES)} "
                                  "or a variant declared under strategy_variants")
    schema = yaml.safe_load(schema_path().read_text())
    defs = schema["$defs"]

    def check(options: Mapping[str, Any], base: str, where: str) -> None:
        sub = {"$defs": defs, "$ref": f"#/$defs/{base}_override"}
        errors = sorted(jsonschema.Draft202012Validator(sub).iter_errors(dict(options)),
                        key=lambda e: list(e.absolute_path))
        if errors:
            err = errors[0]
            path = ".".join([where, *map(str, err.absolute_path)])
            raise ConfigError(f"{path}: {err.message} (an option of strategy {base!r})")

    for name, v in variants.items():
        check(v.get("options") or {}, v["strategy"], f"strategy_variants.{name}.options")
    for task, tcfg in (config.get("tasks") or {}).items():
        for name, opts in ((tcfg or {}).get("strategy_options") or {}).items():
            if name in defs.get("strategy_overrides", {}).get("properties", {}):
                continue  # a built-in's overrides: checked by the schema itself
            if name not in variants:
                raise ConfigError(f"tasks.{task}.strategy_options.{name}: unknown strategy {name!r} "
                                  "(not built in, not declared under strategy_variants)")
            check(opts, variants[name]["strategy"], f"tasks.{task}.strategy_options.{name}")


def check_config(config: Mapping[str, Any]) -> None:
    """:func:`check_run` for every run the config asks for (enabled tasks x their strategies), after
    :func:`check_variants`; then the ablation and sensitivity sections (:func:`check_sections`)."""
    check_variants(config)
    check_data(config)
    for task in enabled_tasks(config):
        for strategy in task_strategies(config, task):
            check_run(config, task, strategy)
    check_sections(config)


# ---------------------------------------------------------------------------- the runs a config asks for
def enabled_tasks(config: Mapping[str, Any]) -> list[str]:
    """The enabled tasks, in config order."""
    return [t for t, c in (config.get("tasks") or {}).items() if (c or {}).get("enabled", True)]


def task_strategies(config: Mapping[str, Any], task: str) -> list[str]:
    """The strategies run on ``task``: ``tasks.<task>.strategies``, else the top-level ``strategies``."""
    own = ((config.get("tasks") or {}).get(task) or {}).get("strategies")
    return list(own if own is not None else config.get("strategies") or [])


def task_seeds(config: Mapping[str, Any], task: str) -> list[int]:
    """The seeds of ``task``'s runs: ``tasks.<task>.seeds``, else the top-level ``seeds``."""
    own = ((config.get("tasks") or {}).get(task) or {}).get("seeds")
    return [int(s) for s in (own if own is not None else config.get("seeds") or [])]


def extract_options(config: Mapping[str, Any], task: str) -> dict[str, Any] | None:
    """The extract section as it applies to ``task`` (``tasks.<task>.extract`` merged over it), or None when
    the task is not extracted (``tasks.<task>.extract: false``)."""
    own = task_config(config, task).get("extract", True)
    if own is False:
        return None
    return _deep_merge(config.get("extract") or {}, own if isinstance(own, Mapping) else {})


def extract_tasks(config: Mapping[str, Any]) -> list[str]:
    """The enabled tasks that are extracted."""
    return [t for t in enabled_tasks(config) if extract_options(config, t) is not None]


def _label(value: Any) -> str:
    """A value as a name part (paths, wildcards): null -> default, numbers without trailing zeros."""
    if value is None:
        return "default"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def sensitivity_starts(config: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The starting points of the sensitivity section, one dict per (enabled) task and start:
    ``task``, ``kind``, ``start`` (its name: ``lr_x<factor>`` or ``w<weight>``), ``parameter``
    (``lr_factor`` or ``init_weight``), ``value``, ``initial`` (the starting value itself: the inner learning
    rate, or the initial weight) and ``task_overrides`` (what changes in ``tasks.<task>``)."""
    sec = config.get("sensitivity") or {}
    if not sec.get("enabled", True):
        return []
    enabled = set(enabled_tasks(config))
    out: list[dict[str, Any]] = []
    for task, spec in (sec.get("tasks") or {}).items():
        if task not in enabled:
            continue
        tcfg = task_config(config, task)
        kind = str(tcfg.get("kind") or task)
        for factor in (spec or {}).get("lr_factors") or []:
            lr = float(f"{float((tcfg.get('optimizer') or {}).get('lr', 0.1)) * float(factor):.12g}")
            optimizer = {**(tcfg.get("optimizer") or {}), "lr": lr}
            out.append({"task": task, "kind": kind, "start": f"lr_x{_label(float(factor))}", "parameter": "lr_factor",
                        "value": float(factor), "initial": lr, "task_overrides": {"optimizer": optimizer}})
        for w in (spec or {}).get("init_weights") or []:
            out.append({"task": task, "kind": kind, "start": f"w{_label(float(w))}", "parameter": "init_weight",
                        "value": float(w), "initial": float(w), "task_overrides": {"init_weight": float(w)}})
    return out


#: the glocal options an HPO ablation may vary (ablation.hpo.axes)
ABLATION_AXES = ("delay", "rank", "energy", "rank_rule", "record_stride", "window", "update_every", "estimator")


def ablation_extract_tasks(config: Mapping[str, Any]) -> list[str]:
    """The extracted tasks whose trajectories the extraction ablation refits."""
    sec = (config.get("ablation") or {}).get("extract") or {}
    if not sec.get("enabled", True):
        return []
    tasks = extract_tasks(config)
    wanted = sec.get("tasks")
    return tasks if wanted is None else [t for t in tasks if t in wanted]


def ablation_hpo_axes(config: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """The HPO ablation's runs by axis: {axis: [{"label", "value", "variant", "options"}]}, where
    ``options`` are the glocal options of the run (``ablation.hpo.base``, then the axis value; a null value
    leaves the option as the task's glocal option) and ``variant`` the strategy-variant name it runs under.
    Empty when the section is disabled or its task is not enabled."""
    sec = (config.get("ablation") or {}).get("hpo") or {}
    if not sec.get("enabled", True) or sec.get("task", "reweight") not in enabled_tasks(config):
        return {}
    out: dict[str, list[dict[str, Any]]] = {}
    for entry in sec.get("axes") or []:
        axis, values = entry["option"], entry["values"]
        if axis in out:
            raise ConfigError(f"ablation.hpo.axes: the option {axis!r} is listed twice")
        runs = []
        for i, value in enumerate(values):
            options = dict(sec.get("base") or {})
            if value is not None:
                options[axis] = value
            else:
                options.pop(axis, None)
            runs.append({"label": _label(value), "value": value, "variant": f"ablation_{axis}_{i}", "options": options})
        out[axis] = runs
    return out


def check_sections(config: Mapping[str, Any]) -> None:
    """The ablation and sensitivity sections name tasks that exist, with starting points of the right kind and
    valid glocal options; :class:`ConfigError` naming the key otherwise."""
    tasks = config.get("tasks") or {}
    sec = config.get("sensitivity") or {}
    if sec.get("enabled", True):
        for task, spec in (sec.get("tasks") or {}).items():
            if task not in tasks:
                raise ConfigError(f"sensitivity.tasks.{task}: unknown task {task!r}; the config defines {sorted(tasks)}")
            kind = str((tasks[task] or {}).get("kind") or task)
            wrong = {"lr": "init_weights", "reweight": "lr_factors"}.get(kind)
            if wrong and (spec or {}).get(wrong):
                raise ConfigError(f"sensitivity.tasks.{task}.{wrong}: task {task!r} is of kind {kind!r}, whose starting "
                                  f"points are {'lr_factors' if kind == 'lr' else 'init_weights'}")
        for strategy in sec.get("strategies") or []:
            if base_strategy(config, strategy) not in ("fixed",) + VARIANT_BASES:
                raise ConfigError(f"sensitivity.strategies: {strategy!r} is a black-box search, whose search space does "
                                  "not depend on the starting point; list fixed, the gradient strategies or their variants")
        for start in sensitivity_starts(config):
            for strategy in sec.get("strategies") or []:
                check_run(config, start["task"], strategy)
    abl = config.get("ablation") or {}
    ext = abl.get("extract") or {}
    if ext.get("enabled", True):
        for task in ext.get("tasks") or []:
            if task not in tasks:
                raise ConfigError(f"ablation.extract.tasks: unknown task {task!r}; the config defines {sorted(tasks)}")
    hpo = abl.get("hpo") or {}
    if hpo.get("enabled", True):
        task = hpo.get("task", "reweight")
        if task not in tasks:
            raise ConfigError(f"ablation.hpo.task: unknown task {task!r}; the config defines {sorted(tasks)}")
        schema = yaml.safe_load(schema_path().read_text())
        sub = {"$defs": schema["$defs"], "$ref": "#/$defs/glocal_override"}
        for j, (axis, runs) in enumerate(ablation_hpo_axes(config).items()):
            if axis not in ABLATION_AXES:
                raise ConfigError(f"ablation.hpo.axes[{j}].option: unknown option {axis!r}; expected one of "
                                  f"{list(ABLATION_AXES)}")
            for i, run in enumerate(runs):
                errors = sorted(jsonschema.Draft202012Validator(sub).iter_errors(run["options"]),
                                key=lambda e: list(e.absolute_path))
                if errors:
                    err = errors[0]
                    where = ("ablation.hpo.base" if list(err.absolute_path)[:1] != [axis]
                             else f"ablation.hpo.axes[{j}].values[{i}] ({axis})")
                    raise ConfigError(f"{where}: {err.message} (an option of strategy 'glocal')")
                check_run(ablation_config(config, run), task, run["variant"])


def ablation_config(config: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the ablation run's strategy variant declared (``run`` from :func:`ablation_hpo_axes`)."""
    cfg = dict(config)
    cfg["strategy_variants"] = {**(config.get("strategy_variants") or {}),
                                run["variant"]: {"strategy": "glocal", "options": dict(run["options"])}}
    return cfg


def sensitivity_config(config: Mapping[str, Any], start: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` with the task of a sensitivity start (from :func:`sensitivity_starts`) set to that start."""
    cfg = copy.deepcopy(dict(config))
    cfg["tasks"][start["task"]] = _deep_merge(cfg["tasks"][start["task"]], start["task_overrides"])
    return cfg
