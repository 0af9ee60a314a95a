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
    "strategy_options",
    "check_config",
    "check_run",
    "check_data",
    "ConfigError",
    "WINDOWED_STRATEGIES",
]

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
    """The validated sub-config of ``task``, with an error naming ``tasks.<task>`` when absent."""
    tasks = config.get("tasks", {})
    if task not in ("lr", "reweight"):
        raise ConfigError(f"task: unknown task {task!r}; expected one of ['lr', 'reweight']")
    if task not in tasks:
        raise ConfigError(f"tasks.{task}: the task is not configured")
    return dict(tasks[task])


def strategy_options(config: Mapping[str, Any], task: str, strategy: str) -> dict[str, Any]:
    """Options of ``strategy`` for ``task``: top-level defaults merged with the task's overrides.

    ``hd`` always has window 1; a ``local`` window left null is ``glocal``'s window for the task.

    The outer-optimizer settings are merged in under ``outer``: ``strategy_options.outer``, then
    ``tasks.<task>.strategy_options.outer``, then the strategy's own ``outer`` at either level.
    """
    top = config.get("strategy_options", {})
    over = task_config(config, task).get("strategy_options", {}) or {}
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
    if strategy not in WINDOWED_STRATEGIES:
        return
    tcfg = task_config(config, task)
    window, key = _window(config, task, strategy)
    steps = tcfg.get("steps")
    if isinstance(window, int) and isinstance(steps, int) and window >= steps:
        raise ConfigError(
            f"{key}: the window ({window} steps) must be shorter than the run (tasks.{task}.steps = {steps}): "
            "hyperparameters are updated at the end of each window, so no update would ever be used"
        )


def check_config(config: Mapping[str, Any]) -> None:
    """:func:`check_run` for every run the config asks for (enabled tasks x ``strategies``)."""
    check_data(config)
    for task, tcfg in (config.get("tasks") or {}).items():
        if not (tcfg or {}).get("enabled", True):
            continue
        for strategy in config.get("strategies") or ():
            check_run(config, task, strategy)
