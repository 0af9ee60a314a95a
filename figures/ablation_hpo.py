"""Ablation of the glocal options on the HPO outcome (results/ablation/hpo/{axis}/, written by ``glocal ablate
hpo``): the figure ``ablation_hpo`` and the table ``ablation_hpo.md/.csv``.

Each axis (a glocal option: delay, rank, energy, record stride, window, ...) is varied alone from
``ablation.hpo.base``; every value is one glocal run of the ablation's task per seed. Shown against the value:
the final validation and test loss, the wall time of the run, and the fit fallbacks among its windows
(``fit_health`` of the run's summary.json).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import read_json, to_float

#: the column titles of the glocal options (glocal.config.ABLATION_AXES)
OPTION_TITLES = {"delay": "delay (time-delay depth d)", "rank": "rank (fixed POD rank)",
                 "energy": "energy (POD energy threshold)", "rank_rule": "rank_rule (POD rank rule)",
                 "record_stride": "record_stride k", "window": "window (steps)",
                 "update_every": "update_every (steps)", "estimator": "estimator"}
TABLE_FIELDS = ["task", "axis", "value", "n_seeds", "n_diverged", "validation loss (final)", "test loss (final)",
                "wall time (s)", "fallbacks", "windows"]


def index_paths(results: str | Path, config: Mapping[str, Any] | None = None) -> list[Path]:
    """The run indexes to read: one per axis of the config's enabled HPO ablation, else every one found."""
    root = Path(results) / "ablation" / "hpo"
    if config and config.get("tasks"):
        from glocal.config import ablation_hpo_axes

        sec = (config.get("ablation") or {}).get("hpo") or {}
        if not sec.get("enabled", False):
            return []
        return [root / axis / "index.json" for axis in ablation_hpo_axes(config)]
    return sorted(root.glob("*/index.json"))


def load(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """One record per run of the readable indexes (a missing index or run is left out): task, axis, label,
    value, seed, and the run's final losses, wall time and fit health."""
    out = []
    for p in paths:
        p = Path(p)
        index = read_json(p)
        if not index:
            continue
        for r in index.get("runs", []):
            summary = read_json(p.parent / r["path"] / "summary.json")
            if not summary:
                continue
            final = summary.get("final") or {}
            health = summary.get("fit_health") or {}
            out.append({"task": index.get("task"), "axis": r.get("axis", index.get("axis")), "label": r["label"],
                        "value": r.get("value"), "seed": int(r["seed"]),
                        "val_loss": to_float(final.get("val_loss")), "test_loss": to_float(final.get("test_loss")),
                        "wall_time": to_float((summary.get("time") or {}).get("total")),
                        "fallbacks": int(health.get("fallbacks") or 0), "windows": int(health.get("windows") or 0)})
    return out


def _value_key(value: Any) -> tuple[int, float, str]:
    """Order of the values on an axis: the task's own value (null) first, then numbers, then names."""
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def _mean(values: list[float]) -> float:
    v = [x for x in values if math.isfinite(x)]
    return float(np.mean(v)) if v else float("nan")


def summarize(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per task, axis and value: the mean over seeds of the final validation and test loss and of the
    wall time (non-finite losses, a diverged run's, left out and counted in n_diverged); fallbacks and windows
    summed over seeds. Axes in the order met, values in :func:`_value_key` order."""
    groups: dict[tuple[str, str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["task"], r["axis"], r["label"]), []).append(r)
    axis_rank: dict[str, int] = {}
    for r in records:
        axis_rank.setdefault(r["axis"], len(axis_rank))
    rows = []
    for (task, axis, label), rs in groups.items():
        rows.append({"task": task, "axis": axis, "label": label, "value": rs[0]["value"], "n_seeds": len(rs),
                     "n_diverged": sum(1 for r in rs if not (math.isfinite(r["val_loss"])
                                                            and math.isfinite(r["test_loss"]))),
                     "val_loss": _mean([r["val_loss"] for r in rs]), "test_loss": _mean([r["test_loss"] for r in rs]),
                     "wall_time": _mean([r["wall_time"] for r in rs]),
                     "fallbacks": sum(r["fallbacks"] for r in rs), "windows": sum(r["windows"] for r in rs)})
    rows.sort(key=lambda r: (r["task"], axis_rank[r["axis"]], _value_key(r["value"])))
    return rows


def _fmt_label(row: Mapping[str, Any]) -> str:
    return "task's" if row["value"] is None else row["label"]


def table_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The table's rows (:func:`summarize`, numbers formatted)."""
    return [{"task": r["task"], "axis": r["axis"], "value": _fmt_label(r), "n_seeds": r["n_seeds"],
             "n_diverged": r["n_diverged"], "validation loss (final)": style.fmt(r["val_loss"]),
             "test loss (final)": style.fmt(r["test_loss"]), "wall time (s)": style.fmt(r["wall_time"], 2),
             "fallbacks": r["fallbacks"], "windows": r["windows"]} for r in rows]


def table_markdown(rows: list[dict[str, Any]]) -> str:
    """The HPO ablation table as markdown."""
    lines = ["# Ablation of the glocal options on the HPO outcome (`glocal ablate hpo`)", "",
             "Glocal runs of one task with one option varied at a time from `ablation.hpo.base` (value \"task's\": "
             "the task's own glocal option): the final validation and test loss and the wall time of the run, mean "
             "over seeds, and the windows whose fit fell back to the local hypergradient among all windows, summed "
             "over seeds. Every row: ablation_hpo.csv.", ""]
    if not rows:
        return "\n".join(lines + ["No HPO ablation found (results/ablation/hpo/*/index.json; "
                                  "ablation.hpo.enabled is false by default).", ""])
    head = ["task", "axis", "value", "n_seeds", "n_diverged", "validation loss (final)", "test loss (final)",
            "wall time (s)", "fallbacks", "windows"]
    lines += style.markdown_table(head, rows)
    return "\n".join(lines) + "\n"


def plot_ablation_hpo(records: Sequence[Mapping[str, Any]], out_stem: str | Path) -> dict[str, Any]:
    """One column per axis: top, the final validation (solid) and test (dashed) loss against the value; bottom,
    the wall time of the run (mean over seeds). Fallbacks among the windows counted under the figure."""
    rows = summarize(records)
    axes_names = list(dict.fromkeys(r["axis"] for r in rows))
    fig, axes = style.subplots(2, max(1, len(axes_names)), w=2.2, h=2.0)
    if not rows:
        for ax in axes.ravel():
            style.empty(ax, "no results/ablation/hpo/*/index.json")
        axes[0, 0].set_ylabel("loss (final)")
        axes[1, 0].set_ylabel("wall time (s)")
        return style.save(fig, out_stem)
    tasks = sorted({r["task"] for r in rows})
    color = style.color("glocal")
    for j, axis in enumerate(axes_names):
        sel = [r for r in rows if r["axis"] == axis]
        x = list(range(len(sel)))
        top, bottom = axes[0, j], axes[1, j]
        top.set_label(f"{axis}/loss")
        bottom.set_label(f"{axis}/wall time")
        top.plot(x, [r["val_loss"] for r in sel], color=color, marker="o", lw=1.2, label="validation loss")
        top.plot(x, [r["test_loss"] for r in sel], color=color, marker="s", ls="--", mfc="none", lw=1,
                 label="test loss")
        bottom.plot(x, [r["wall_time"] for r in sel], color="k", marker="o", lw=1, label="wall time of the run")
        for ax in (top, bottom):
            ax.set_xticks(x, [_fmt_label(r) for r in sel], fontsize=7)
            ax.tick_params(axis="y", labelsize=7)
        top.set_title(OPTION_TITLES.get(axis, axis), fontsize=8)
        bottom.set_xlabel(OPTION_TITLES.get(axis, axis), fontsize=7)
    axes[0, 0].set_ylabel("loss (final)")
    axes[1, 0].set_ylabel("wall time (s)")
    seeds = sorted({r["seed"] for r in records})
    notes = [f"Task {', '.join(tasks)}; mean over seeds {', '.join(map(str, seeds))}; \"task's\": the task's own "
             "value of the option.",
             f"Windows whose fit fell back to local: {sum(r['fallbacks'] for r in rows)} of "
             f"{sum(r['windows'] for r in rows)}."]
    style.legend_below(fig, axes, ncol=3)
    style.finish(fig, bottom=0.36)
    style.footnote(fig, notes, y=0.1)
    return style.save(fig, out_stem)
