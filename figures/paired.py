"""Paired differences between strategies over seeds: ``tables/paired.md`` / ``.csv``.

The same seed gives every strategy the same data split, initial parameters and batch order, so
the difference of two strategies' final losses on one seed is a paired sample. Per task and
comparison (glocal against local at the same window, against global, against hypergradient
descent; every glocal variant likewise) the table gives the mean paired difference and its 95%
Student-t interval over the seeds both strategies finished, and a verdict: the interval below
zero (the first strategy lower), above zero, or containing zero (no difference shown at 95%).
"""

from __future__ import annotations

import math
from typing import Any

from figures.io import Run, to_float

#: comparisons (first minus second): glocal against the paper's local baseline, the global method and HD
PAIRS = [("glocal", "local"), ("glocal", "global"), ("glocal", "hd")]
METRICS = ["test_loss", "val_loss"]
PAIRED_FIELDS = ["task", "first", "second", "n_pairs"] + [
    f"{m}_{c}" for m in METRICS for c in ("paired_difference", "interval_95_low", "interval_95_high", "first_mean",
                                          "second_mean", "verdict")]


def t_interval(diffs: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high) of the Student-t interval of the mean of ``diffs`` (NaN bounds for fewer than 2)."""
    n = len(diffs)
    if n == 0:
        return math.nan, math.nan, math.nan
    m = sum(diffs) / n
    if n < 2:
        return m, math.nan, math.nan
    from scipy import stats

    sd = math.sqrt(sum((d - m) ** 2 for d in diffs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return m, m - half, m + half


def _final(run: Run, metric: str) -> float:
    return to_float((run.summary or {}).get("final", {}).get(metric))


def comparisons(strategies: list[str]) -> list[tuple[str, str]]:
    """The pairs present: glocal and every ``glocal*`` variant against local, global and hd."""
    firsts = [s for s in strategies if s == "glocal" or s.startswith("glocal_")]
    return [(a, b) for a in firsts for _, b in PAIRS if b in strategies]


def paired_rows(runs: dict[str, dict[str, dict[int, Run]]]) -> list[dict[str, Any]]:
    """One row per task x comparison, one group of columns per metric (see the module docstring)."""
    rows = []
    for task in sorted(runs):
        by = runs[task]
        for first, second in comparisons(list(by)):
            seeds = sorted(set(by[first]) & set(by[second]))
            row: dict[str, Any] = {"task": task, "first": first, "second": second}
            for metric in METRICS:
                pairs = [(_final(by[first][s], metric), _final(by[second][s], metric)) for s in seeds]
                pairs = [(a, b) for a, b in pairs if math.isfinite(a) and math.isfinite(b)]
                m, lo, hi = t_interval([a - b for a, b in pairs])
                verdict = ("no pairs" if not pairs else "n < 2" if not math.isfinite(lo)
                           else f"{first} lower" if hi < 0 else f"{first} higher" if lo > 0
                           else "no difference at 95%")
                row["n_pairs"] = len(pairs)
                row.update({f"{metric}_paired_difference": m, f"{metric}_interval_95_low": lo,
                            f"{metric}_interval_95_high": hi,
                            f"{metric}_first_mean": sum(a for a, _ in pairs) / len(pairs) if pairs else math.nan,
                            f"{metric}_second_mean": sum(b for _, b in pairs) / len(pairs) if pairs else math.nan,
                            f"{metric}_verdict": verdict})
            rows.append(row)
    return rows


def _g(x: float) -> str:
    return f"{x:+.3g}" if math.isfinite(x) else "n/a"


def paired_markdown(rows: list[dict[str, Any]]) -> str:
    """The table as Markdown, one section per task."""
    out = ["# Paired differences between strategies", "",
           "Final test loss and validation loss of the first strategy minus the second on the same seed (same "
           "data, initial parameters and batch order): mean paired difference over seeds and its 95% interval "
           "(Student t). Negative: the first strategy ends lower. `local` uses glocal's window (the paper's local "
           "baseline), `hd` is hypergradient descent (window 1).", ""]
    for task in sorted({r["task"] for r in rows}):
        out += [f"## task `{task}`", "",
                "| comparison | metric | seeds | mean paired difference | 95% interval | means | verdict |",
                "|---|---|---:|---:|---|---|---|"]
        for r in (r for r in rows if r["task"] == task):
            for m in METRICS:
                metric = m.replace("val_loss", "validation loss").replace("test_loss", "test loss")
                fm, sm = r[f"{m}_first_mean"], r[f"{m}_second_mean"]
                means = f"{fm:.4g} vs {sm:.4g}" if math.isfinite(fm) else "n/a"
                out.append(f"| {r['first']} − {r['second']} | {metric} | {r['n_pairs']} | "
                           f"{_g(r[f'{m}_paired_difference'])} | [{_g(r[f'{m}_interval_95_low'])}, "
                           f"{_g(r[f'{m}_interval_95_high'])}] | {means} | {r[f'{m}_verdict']} |")
        out.append("")
    if not rows:
        out.append("No pair of strategies to compare (needs glocal and one of local, global, hd).")
    return "\n".join(out) + "\n"
