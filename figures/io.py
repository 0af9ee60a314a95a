"""Readers of the result files (run directories, extraction, analysis, theory, benchmarks).

Every reader tolerates missing or partial inputs: absent files give empty results, unreadable rows are
skipped; the figures then mark what is missing instead of failing.
"""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


def read_csv(path: str | Path) -> list[dict[str, str]]:
    """Rows of a CSV file as dicts of strings; [] if the file is missing or empty."""
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def to_float(v: Any) -> float:
    if v is None:
        return math.nan
    if isinstance(v, (int, float)):
        return float(v)
    s = str(v).strip()
    if s == "" or s.lower() in ("none", "null"):
        return math.nan
    if s.lower() in ("true", "false"):
        return float(s.lower() == "true")
    try:
        return float(s)
    except ValueError:
        return math.nan


def columns(rows: list[dict[str, str]]) -> dict[str, np.ndarray]:
    """CSV rows as numeric columns (non-numeric cells become NaN)."""
    if not rows:
        return {}
    return {k: np.array([to_float(r.get(k)) for r in rows], dtype=float) for k in rows[0]}


def read_json(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, OSError):
        return {}


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a partially written last line
    return out


@dataclass
class Run:
    """One run directory (task x strategy x seed)."""

    task: str
    strategy: str
    seed: int
    path: Path
    metrics: dict[str, np.ndarray] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)
    trials: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return bool(self.summary)

    @property
    def diverged_step(self) -> int | None:
        d = self.summary.get("diverged_step")
        if d is not None:
            return int(d)
        vl = self.metrics.get("val_loss")
        if vl is not None and len(vl) and not np.all(np.isfinite(vl)):
            return int(self.metrics["step"][np.argmax(~np.isfinite(vl))])
        return None

    def hypergrads(self) -> list[dict[str, Any]]:
        return read_jsonl(self.path / "hypergrads.jsonl")


_SEED = re.compile(r"^seed(\d+)$")


def load_run(path: Path, task: str, strategy: str, seed: int) -> Run | None:
    metrics = columns(read_csv(path / "metrics.csv"))
    summary = read_json(path / "summary.json")
    if not metrics and not summary:
        return None
    return Run(task, strategy, seed, path, metrics, summary, columns(read_csv(path / "weights.csv")),
               columns(read_csv(path / "trials.csv")))


#: (task, strategy, seed, run directory) of one run to read
RunRef = tuple[str, str, int, Path]


def found_runs(results: str | Path) -> list[RunRef]:
    """Every run directory results/runs/{task}/{strategy}/seed{seed}/ that exists (used without a config)."""
    root = Path(results) / "runs"
    refs: list[RunRef] = []
    if not root.is_dir():
        return refs
    for tdir in sorted(p for p in root.iterdir() if p.is_dir()):
        for sdir in sorted(p for p in tdir.iterdir() if p.is_dir()):
            for rdir in sorted(p for p in sdir.iterdir() if p.is_dir() or p.is_symlink()):
                m = _SEED.match(rdir.name)
                if m:
                    refs.append((tdir.name, sdir.name, int(m.group(1)), rdir))
    return refs


def config_runs(results: str | Path, config: dict[str, Any]) -> list[RunRef]:
    """The runs a config asks for: enabled tasks x ``strategies`` x ``seeds`` (whether they exist or not)."""
    root = Path(results) / "runs"
    tasks = [t for t, c in (config.get("tasks") or {}).items() if (c or {}).get("enabled", True)]
    return [(t, s, int(n), root / t / s / f"seed{n}") for t in tasks for s in config.get("strategies") or []
            for n in task_seeds(config, t)]


def index_runs(paths: list[str | Path]) -> list[RunRef]:
    """The runs listed in run indexes (``results/runs/{task}/index.json``, written by the workflow from the
    runs its figures and tables depend on): {"task": t, "runs": [{"strategy", "seed", "path"}]}, each path
    relative to the index's directory. A missing or malformed index is an error that names the file."""
    refs: list[RunRef] = []
    for p in paths:
        p = Path(p)
        try:
            doc = json.loads(p.read_text())
            refs += [(str(doc["task"]), str(r["strategy"]), int(r["seed"]), p.parent / r["path"])
                     for r in doc["runs"]]
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"run index {str(p)!r} is unreadable or malformed ({type(exc).__name__}: {exc}); "
                             "expected {\"task\": ..., \"runs\": [{\"strategy\", \"seed\", \"path\"}]}") from exc
    return refs


def load_runs(results: str | Path, select: list[RunRef] | None = None) -> dict[str, dict[str, dict[int, Run]]]:
    """{task: {strategy: {seed: Run}}} of the readable runs among ``select`` (default: every run directory
    under results/runs/). Tables and figures pass the runs of the current config (``config_runs``,
    ``index_runs``), so a run left over from another config is never read."""
    out: dict[str, dict[str, dict[int, Run]]] = {}
    for task, strategy, seed, rdir in (found_runs(results) if select is None else select):
        run = load_run(Path(rdir), task, strategy, seed)
        if run is not None:
            out.setdefault(task, {}).setdefault(strategy, {})[seed] = run
    return out


def select_runs(results: str | Path, config: dict[str, Any] | None = None,
                indexes: list[str | Path] | None = None) -> list[RunRef] | None:
    """The runs tables and figures read: those of the run indexes if given, else those the config asks for,
    else (None) every run directory found."""
    if indexes:
        return index_runs(indexes)
    if config and config.get("tasks") and config.get("strategies") is not None and config.get("seeds") is not None:
        return config_runs(results, config)
    return None


def task_seeds(config: dict[str, Any], task: str | None) -> list[int]:
    """The seeds a config runs a task with: the task's own ``seeds`` (NQM tasks may set them), else the
    top-level ``seeds``."""
    own = ((config.get("tasks") or {}).get(task) or {}).get("seeds") if task is not None else None
    return [int(s) for s in (own or config.get("seeds") or [])]


def expected_seeds(runs: dict[str, dict[int, Run]], config: dict[str, Any] | None = None,
                   task: str | None = None) -> list[int]:
    """Seeds every strategy of a task should have: the config's (the task's own if it sets them), else the
    union of those found."""
    if config and config.get("seeds") is not None:
        return sorted(task_seeds(config, task))
    return sorted({s for by_seed in runs.values() for s in by_seed})
