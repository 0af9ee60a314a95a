"""Sensitivity to the starting point (results/sensitivity/{task}/{start}/, written by ``glocal sensitivity``): the
figure ``sensitivity`` and the table ``sensitivity.md/.csv``.

Every strategy ran from each starting value of a task's hyperparameters: for a task of kind lr the inner
learning rate of every layer at a multiple of the default, for kind reweight the initial example weight. Shown
against the starting value: the final test loss and the learned hyperparameters at the end of the run (the
learning rate averaged over layers in log space; the mean example weight of clean and of flipped examples).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.agg import mean_std
from figures.io import Run, load_run, read_json, to_float

TABLE_FIELDS = ["task", "start", "starting value", "strategy", "n_seeds", "n_diverged", "test loss",
                "learning rate (final)", "example weight, clean (final)", "example weight, flipped (final)"]


def index_paths(results: str | Path, config: Mapping[str, Any] | None = None) -> list[Path]:
    """The run indexes to read: those of the config's sensitivity section, else every one found."""
    root = Path(results) / "sensitivity"
    if config and config.get("tasks"):
        from glocal.config import sensitivity_starts

        return [root / s["task"] / s["start"] / "index.json" for s in sensitivity_starts(config)]
    return sorted(root.glob("*/*/index.json"))


def load(paths: Sequence[str | Path]) -> list[tuple[dict[str, Any], dict[str, dict[int, Run]]]]:
    """(index, {strategy: {seed: Run}}) per readable index (a missing one is left out)."""
    out = []
    for p in paths:
        p = Path(p)
        index = read_json(p)
        if not index:
            continue
        runs: dict[str, dict[int, Run]] = {}
        for r in index.get("runs", []):
            run = load_run(p.parent / r["path"], index["task"], r["strategy"], int(r["seed"]))
            if run is not None:
                runs.setdefault(r["strategy"], {})[int(r["seed"])] = run
        out.append((index, runs))
    return out


def _last(run: Run, col: str) -> float:
    v = np.asarray(run.metrics.get(col, []), dtype=float)
    v = v[np.isfinite(v)]
    return float(v[-1]) if v.size else float("nan")


def final_values(run: Run) -> dict[str, float]:
    """The run's final test loss and learned hyperparameters (NaN where the run has none)."""
    lrs = [_last(run, c) for c in run.metrics if c == "hp:lr" or c.startswith("hp:lr[")]
    lrs = [x for x in lrs if math.isfinite(x) and x > 0]
    test = to_float((run.summary.get("final") or {}).get("test_loss"))
    if not math.isfinite(test):
        test = _last(run, "test_loss")
    return {"test_loss": test, "lr": float(np.exp(np.mean(np.log(lrs)))) if lrs else float("nan"),
            "w_clean": _last(run, "hp:example_weight_clean_mean"),
            "w_flipped": _last(run, "hp:example_weight_flipped_mean")}


def summarize(loaded) -> list[dict[str, Any]]:
    """One row per task, start and strategy: mean and sample std over seeds of :func:`final_values`."""
    rows = []
    for index, runs in loaded:
        for strat in style.order(runs):
            rs = [runs[strat][s] for s in sorted(runs[strat])]
            vals = [final_values(r) for r in rs]
            row: dict[str, Any] = {"task": index["task"], "kind": index.get("kind"), "start": index["start"],
                                   "parameter": index.get("parameter"), "value": float(index["value"]),
                                   "initial": float(index["initial"]), "strategy": strat, "n_seeds": len(rs),
                                   "n_diverged": sum(r.diverged_step is not None for r in rs)}
            for k in ("test_loss", "lr", "w_clean", "w_flipped"):
                row[f"{k}_mean"], row[f"{k}_std"], _ = mean_std([v[k] for v in vals])
            rows.append(row)
    rows.sort(key=lambda r: (r["task"], r["value"], style.order([r["strategy"], *style.STRATEGIES]).index(r["strategy"])))
    return rows


def _pm(row: Mapping[str, Any], key: str) -> str:
    m, sd = row.get(f"{key}_mean"), row.get(f"{key}_std")
    if m is None or not math.isfinite(m):
        return "–"
    return style.fmt(m) + (f" ± {style.fmt(sd, 2)}" if sd is not None and math.isfinite(sd) and row["n_seeds"] > 1 else "")


def table_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"task": r["task"], "start": r["start"], "starting value": style.fmt(r["initial"]), "strategy": r["strategy"],
             "n_seeds": r["n_seeds"], "n_diverged": r["n_diverged"], "test loss": _pm(r, "test_loss"),
             "learning rate (final)": _pm(r, "lr"), "example weight, clean (final)": _pm(r, "w_clean"),
             "example weight, flipped (final)": _pm(r, "w_flipped")} for r in rows]


def table_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# Sensitivity to the starting point (`glocal sensitivity`)", "",
             "Every strategy from each starting value of the hyperparameters (lr: the inner learning rate of every "
             "layer at a multiple of the default; reweight: the initial example weight): the final test loss and "
             "the learned hyperparameters at the end of the run (the learning rate averaged over layers in log "
             "space; the mean example weight of clean and flipped examples), mean ± std over seeds. fixed keeps "
             "the start: it shows how good the start is untuned.", ""]
    if not rows:
        return "\n".join(lines + ["No sensitivity runs found (results/sensitivity/*/*/index.json).", ""])
    for task in sorted({r["task"] for r in rows}):
        rs = [r for r in rows if r["task"] == task]
        reweight = any(r["example weight, clean (final)"] != "–" for r in rs)
        head = ["start", "starting value", "strategy", "n_seeds", "n_diverged", "test loss"] + (
            ["example weight, clean (final)", "example weight, flipped (final)"] if reweight
            else ["learning rate (final)"])
        lines += [f"## task `{task}`", ""] + style.markdown_table(head, rs)
        lines.append("")
    return "\n".join(lines)


def plot_sensitivity(loaded, out_stem: str | Path) -> dict[str, Any]:
    """One row per task: the final test loss (left) and the learned hyperparameter (right) against the starting
    value, one colour per strategy (mean over seeds, bars min-max)."""
    rows = summarize(loaded)
    tasks = sorted({r["task"] for r in rows})
    fig, axes = style.subplots(max(1, len(tasks)), 2, w=3.6, h=2.6)
    if not rows:
        for ax in axes.ravel():
            style.empty(ax, "no results/sensitivity/*/*/index.json")
        axes[0, 0].set_ylabel("test loss (final)")
        axes[0, 1].set_ylabel("learning rate / example weight (final)")
        return style.save(fig, out_stem)
    notes = []
    for i, task in enumerate(tasks):
        rs = [r for r in rows if r["task"] == task]
        reweight = rs[0]["parameter"] == "init_weight"
        xlabel = "starting value: example weight" if reweight else "starting value: learning rate (every layer)"
        for ax, what in ((axes[i, 0], "loss"), (axes[i, 1], "hyper")):
            ax.set_label(f"{task}/{what}")
            ax.set_xlabel(xlabel)
            if not reweight:
                ax.set_xscale("log")
            ax.set_title(f"task {task}", fontsize=8)
        for strat in style.order({r["strategy"] for r in rs}):
            sr = sorted((r for r in rs if r["strategy"] == strat), key=lambda r: r["initial"])
            x = [r["initial"] for r in sr]
            kw = {"color": style.color(strat), "marker": style.MARKERS.get(strat, "o"), "ms": 4, "lw": 1.2}
            axes[i, 0].plot(x, [r["test_loss_mean"] for r in sr], label=strat, **kw)
            if reweight:
                axes[i, 1].plot(x, [r["w_clean_mean"] for r in sr], label=strat, **kw)
                axes[i, 1].plot(x, [r["w_flipped_mean"] for r in sr], ls="--", mfc="none", **{**kw, "lw": 1})
            else:
                axes[i, 1].plot(x, [r["lr_mean"] for r in sr], label=strat, **kw)
            bad = [r["start"] for r in sr if r["n_diverged"]]
            if bad:
                notes.append(f"{task}, {strat}: diverged from {', '.join(bad)}")
        axes[i, 0].set_ylabel("test loss (final)")
        if reweight:
            axes[i, 1].set_ylabel("mean example weight (final)\nsolid: clean, dashed: flipped")
        else:
            xs = sorted({r["initial"] for r in rs})
            axes[i, 1].plot(xs, xs, color="#999999", ls=":", lw=1, label="no change (learned = initial)")
            axes[i, 1].set_yscale("log")
            axes[i, 1].set_ylabel("learning rate (final, mean over layers)")
    style.legend_below(fig, axes, ncol=6)
    style.finish(fig, bottom=0.16 if len(tasks) > 1 else 0.25)
    style.footnote(fig, notes, y=0.05)
    return style.save(fig, out_stem)
