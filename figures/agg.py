"""Aggregation over seeds: mean and spread of a metric at each logged step."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from figures.io import Run


def over_seeds(runs: Sequence[Run], col: str, key: str = "step") -> dict[str, np.ndarray]:
    """Mean, std, min, max and count over the runs of ``col`` at each value of ``key`` (finite values only),
    plus the mean wall time at that step. Steps present in any run are kept; a step where every run is
    non-finite (diverged) is dropped."""
    table: dict[float, list[float]] = {}
    walls: dict[float, list[float]] = {}
    for r in runs:
        m = r.metrics
        if col not in m or key not in m:
            continue
        wall = m.get("wall_time", np.full(len(m[key]), np.nan))
        for k, v, w in zip(m[key], m[col], wall):
            if np.isfinite(k) and np.isfinite(v):
                table.setdefault(float(k), []).append(float(v))
                walls.setdefault(float(k), []).append(float(w))
    xs = np.array(sorted(table), dtype=float)
    vals = [np.array(table[x]) for x in xs]
    return {
        "x": xs,
        "mean": np.array([v.mean() for v in vals]),
        "std": np.array([v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals]),
        "min": np.array([v.min() for v in vals]),
        "max": np.array([v.max() for v in vals]),
        "n": np.array([len(v) for v in vals]),
        "wall": np.array([np.nanmean(walls[x]) if np.any(np.isfinite(walls[x])) else np.nan for x in xs]),
    }


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and sample std (ddof=1; NaN for one value) of the finite values, and how many there were."""
    v = np.asarray([x for x in values if x is not None], dtype=float)
    v = v[np.isfinite(v)]
    if not len(v):
        return float("nan"), float("nan"), 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else float("nan"), int(len(v))
