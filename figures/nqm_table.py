"""The noisy quadratic model's table (results/tables/nqm.md / .csv / .html): every strategy of every NQM task
against the task's answer key.

Per task (mode) x strategy, mean ± sample std over seeds, from the runs' summaries (section ``nqm``): the
expected final loss of the schedule the run trained with over the constant optimum and over the K-phase
schedule optimum, the learned effective learning rate lr / (1 - momentum) (mean over training, and final),
CPU time, wall time and training steps relative to global, and for glocal and its variants the health of the
fits (fallbacks, collapsed fits, median spectral radius) and how far their estimates differ from the local
hypergradient (median cosine similarity and norm ratio). The Markdown adds, per glocal strategy, whether the
goal is met: within 10% of the optimum's expected loss at no more than 1/5 of global's CPU time.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from figures import style
from figures.agg import mean_std
from figures.io import Run, expected_seeds, to_float

GOAL_RATIO = 1.1  #: within 10% of the optimum's loss
GOAL_COST = 0.2  #: at no more than 1/5 of global's wall time

NQM_FIELDS = ["task", "mode", "strategy", "base_strategy", "n_seeds", "n_expected_seeds", "n_diverged",
              "expected_final_loss_mean", "expected_final_loss_std",
              "ratio_to_constant_optimum_mean", "ratio_to_constant_optimum_std",
              "ratio_to_schedule_optimum_mean", "ratio_to_schedule_optimum_std",
              "mean_effective_learning_rate_mean", "final_effective_learning_rate_mean",
              "final_effective_learning_rate_std", "final_momentum_mean", "optimum_constant_effective_learning_rate",
              "optimum_constant_expected_loss", "optimum_schedule_expected_loss", "optimum_schedule_phases",
              "cpu_time_mean", "cpu_time_std", "cpu_time_relative_to_global", "wall_time_mean", "wall_time_std",
              "wall_time_relative_to_global", "training_steps", "training_steps_relative_to_global", "fit_windows",
              "fallback_fraction", "degenerate_fraction", "median_spectral_radius", "median_cosine_to_local",
              "median_norm_ratio_to_local"]


def is_nqm(by_strategy: dict[str, dict[int, Run]]) -> bool:
    """Whether a task's runs are NQM runs (their summaries carry the section ``nqm``)."""
    return any(r.summary.get("nqm") for by_seed in by_strategy.values() for r in by_seed.values())


def _m(values: list[float]) -> tuple[float, float]:
    m, s, _ = mean_std(values)
    return m, s


def nqm_rows(runs: dict[str, dict[str, dict[int, Run]]], config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """One row per NQM task x strategy (tasks whose runs carry the ``nqm`` section)."""
    rows: list[dict[str, Any]] = []
    for task in sorted(runs):
        by_strategy = runs[task]
        if not is_nqm(by_strategy):
            continue
        seeds = expected_seeds(by_strategy, config, task)
        glob_runs = list(by_strategy.get("global", {}).values())
        glob_wall = mean_std([to_float((r.summary.get("time") or {}).get("total")) for r in glob_runs])[0]
        glob_cpu = mean_std([to_float((r.summary.get("time") or {}).get("cpu")) for r in glob_runs])[0]
        glob_steps_m = mean_std([to_float((r.summary.get("nqm") or {}).get("training_steps")) for r in glob_runs])[0]
        for strat in style.order(by_strategy):
            rs = [r for r in by_strategy[strat].values() if r.summary.get("nqm")]
            if not rs:
                continue
            n = [r.summary["nqm"] for r in rs]
            row: dict[str, Any] = {"task": task, "mode": n[0].get("mode"), "strategy": strat,
                                   "base_strategy": rs[0].summary.get("base_strategy") or strat,
                                   "n_seeds": len(rs), "n_expected_seeds": len(seeds),
                                   "n_diverged": sum(bool(x.get("diverged")) for x in n)}
            for col, src in (("expected_final_loss", "expected_final_loss"),
                             ("ratio_to_constant_optimum", "ratio_to_constant_optimum"),
                             ("ratio_to_schedule_optimum", "ratio_to_schedule_optimum"),
                             ("final_effective_learning_rate", None)):
                vals = [to_float(x.get(src)) if src else to_float((x.get("final_effective_lr") or [math.nan])[0])
                        for x in n]
                row[f"{col}_mean"], row[f"{col}_std"] = _m(vals)
            row["mean_effective_learning_rate_mean"] = _m([to_float(x.get("mean_effective_lr")) for x in n])[0]
            row["final_momentum_mean"] = _m([to_float(x.get("final_momentum")) for x in n])[0]
            row["optimum_constant_effective_learning_rate"] = to_float(n[0].get("optimum_constant_effective_lr"))
            row["optimum_constant_expected_loss"] = to_float(n[0].get("optimum_constant_loss"))
            row["optimum_schedule_expected_loss"] = to_float(n[0].get("optimum_schedule_loss"))
            row["optimum_schedule_phases"] = n[0].get("optimum_schedule_phases")
            for col, key, ref in (("wall_time", "total", glob_wall), ("cpu_time", "cpu", glob_cpu)):
                row[f"{col}_mean"], row[f"{col}_std"] = _m([to_float((r.summary.get("time") or {}).get(key))
                                                            for r in rs])
                row[f"{col}_relative_to_global"] = (row[f"{col}_mean"] / ref if math.isfinite(ref) and ref > 0
                                                    else math.nan)
            row["training_steps"] = _m([to_float(x.get("training_steps")) for x in n])[0]
            row["training_steps_relative_to_global"] = (row["training_steps"] / glob_steps_m
                                                        if math.isfinite(glob_steps_m) and glob_steps_m > 0
                                                        else math.nan)
            health = [r.summary.get("fit_health") for r in rs if r.summary.get("fit_health")]
            if health:
                windows = sum(int(h.get("windows") or 0) for h in health)
                row["fit_windows"] = windows
                row["fallback_fraction"] = (sum(int(h.get("fallbacks") or 0) for h in health) / windows
                                            if windows else math.nan)
                row["degenerate_fraction"] = (sum(int(h.get("degenerate") or 0) for h in health) / windows
                                              if windows else math.nan)
                row["median_spectral_radius"] = _m([to_float(h.get("median_spectral_radius")) for h in health])[0]
                row.update(_agreement(rs))
            else:
                row.update({"fit_windows": "", "fallback_fraction": math.nan, "degenerate_fraction": math.nan,
                            "median_spectral_radius": math.nan, "median_cosine_to_local": math.nan,
                            "median_norm_ratio_to_local": math.nan})
            rows.append(row)
    return rows


def _agreement(rs: list[Run]) -> dict[str, float]:
    """Median cosine similarity of the glocal estimates to the local hypergradients of the same windows, and
    of their norm ratio (every window of every seed; hypergrads.jsonl): near 1 and 1, glocal updates as local."""
    cos, ratio = [], []
    for r in rs:
        for h in r.hypergrads():
            if isinstance(h.get("cosine_to_local"), (int, float)):
                cos.append(float(h["cosine_to_local"]))
            if to_float(h.get("local_norm")) > 0 and math.isfinite(to_float(h.get("norm"))):
                ratio.append(to_float(h["norm"]) / to_float(h["local_norm"]))
    return {"median_cosine_to_local": statistics.median(cos) if cos else math.nan,
            "median_norm_ratio_to_local": statistics.median(ratio) if ratio else math.nan}


def _pm(m: float, s: float, digits: int = 3) -> str:
    if m is None or not math.isfinite(m):
        return "n/a"
    if math.isfinite(s) and s <= 1e-9 * abs(m):  # identical runs (expected mode is deterministic)
        return f"{m:.{digits}g} ± 0"
    return f"{m:.{digits}g} ± {s:.2g}" if math.isfinite(s) else f"{m:.{digits}g}"


def _f(x: Any, digits: int = 3) -> str:
    return style.fmt(to_float(x), digits)


def goal_sentences(rows: list[dict[str, Any]]) -> list[str]:
    """Per glocal strategy (and variant) of a task: where it lands against local (same window), global and the
    optima, and whether the goal (within 10% of the optimum at <= 1/5 of global's wall time) is met."""
    by = {r["strategy"]: r for r in rows}
    out = []
    for r in rows:
        if r["base_strategy"] != "glocal":
            continue
        rc, rs = r["ratio_to_constant_optimum_mean"], r["ratio_to_schedule_optimum_mean"]
        cost = r["cpu_time_relative_to_global"]
        if not math.isfinite(cost):
            cost = r["wall_time_relative_to_global"]
        parts = [f"`{r['strategy']}` ends at {_f(rc)}x the constant optimum's expected loss and {_f(rs)}x the "
                 f"{r['optimum_schedule_phases']}-phase schedule optimum's"]
        for other in ("local", "global", "hd"):
            if other in by:
                parts.append(f"{other} {_f(by[other]['ratio_to_constant_optimum_mean'])}x")
        sent = parts[0] + (" (" + ", ".join(parts[1:]) + ")" if len(parts) > 1 else "")
        sent += f", at {_f(cost)} of global's CPU time."
        if math.isfinite(cost) and math.isfinite(rc):
            cheap = cost <= GOAL_COST
            for name, ratio in (("constant", rc), ("schedule", rs)):
                reasons = ([] if ratio <= GOAL_RATIO else [f"loss {_f(ratio)}x > {GOAL_RATIO:g}x"]) + (
                    [] if cheap else [f"CPU time {_f(cost)} > {GOAL_COST:g} of global's"])
                sent += f" Goal against the {name} optimum: " + (
                    "met." if not reasons else f"not met ({'; '.join(reasons)}).")
        if math.isfinite(to_float(r.get("fallback_fraction"))):
            sent += (f" Fit health: {_f(r['fallback_fraction'], 2)} of {r['fit_windows']} window fits fell back to "
                     f"local, {_f(r['degenerate_fraction'], 2)} collapsed, median spectral radius "
                     f"{_f(r['median_spectral_radius'])}; the estimates' median cosine similarity to the local "
                     f"hypergradient {_f(r['median_cosine_to_local'])}, norm ratio {_f(r['median_norm_ratio_to_local'])}.")
        out.append(sent)
    return out


def nqm_markdown(rows: list[dict[str, Any]]) -> str:
    out = ["# The noisy quadratic model: every strategy against the answer key", "",
           "Expected final loss E[L(theta_T)] of the schedule each run trained with (sampled mode: the expected loss "
           "of the schedule the run chose, not its noisy realized loss) over the optimum of the task's answer key: "
           "the best constant learning rate (and momentum) and the best K-phase schedule. Mean ± sample std over "
           "seeds (expected mode is deterministic: seeds differ only for random and tpe). `lr eff.` = effective "
           "learning rate lr / (1 - momentum) (lr and momentum trade off along it): mean over training and final "
           "value; `CPU` = CPU time of the whole strategy (s; process CPU time, which a busy machine inflates less "
           "than wall time), `/ global` = relative to global's; `wall` = its wall time (s); `steps` = training "
           "steps run (cost independent of the machine); fit health (glocal): fraction of window fits that fell "
           "back to local / collapsed, median spectral radius rho, median cosine similarity of the estimate to the "
           "local hypergradient of its window. The goal: within 10% of the optimum's loss at no more than 1/5 of "
           "global's CPU time.", ""]
    if not rows:
        out.append("No NQM task (no run with an `nqm` section in its summary).")
        return "\n".join(out) + "\n"
    for task in sorted({r["task"] for r in rows}):
        rs = [r for r in rows if r["task"] == task]
        r0 = rs[0]
        out += [f"## task `{task}` ({r0['mode']} mode)", "",
                f"Answer key: constant optimum E[L_T] = {_f(r0['optimum_constant_expected_loss'], 4)} (effective "
                f"learning rate {_f(r0['optimum_constant_effective_learning_rate'])}); "
                f"{r0['optimum_schedule_phases']}-phase schedule optimum "
                f"{_f(r0['optimum_schedule_expected_loss'], 4)} "
                f"({_f(r0['optimum_schedule_expected_loss'] / r0['optimum_constant_expected_loss'])}x the constant).",
                "",
                "| strategy | seeds | E[L_T] / optimum (constant) | E[L_T] / optimum (schedule) | lr eff. (mean) | "
                "lr eff. (final) | CPU (s) | / global | wall (s) | steps | fit health |",
                "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rs:
            seeds = f"{r['n_seeds']}/{r['n_expected_seeds']}" + (f" ({r['n_diverged']} diverged)"
                                                                  if r["n_diverged"] else "")
            health = "-"
            if math.isfinite(to_float(r["fallback_fraction"])):
                health = (f"{_f(r['fallback_fraction'], 2)} / {_f(r['degenerate_fraction'], 2)}, "
                          f"rho {_f(r['median_spectral_radius'], 2)}, cos {_f(r['median_cosine_to_local'], 2)}")
            out.append(f"| {r['strategy']} | {seeds} | "
                       f"{_pm(r['ratio_to_constant_optimum_mean'], r['ratio_to_constant_optimum_std'])} | "
                       f"{_pm(r['ratio_to_schedule_optimum_mean'], r['ratio_to_schedule_optimum_std'])} | "
                       f"{_f(r['mean_effective_learning_rate_mean'])} | "
                       f"{_pm(r['final_effective_learning_rate_mean'], r['final_effective_learning_rate_std'])} | "
                       f"{_pm(r['cpu_time_mean'], r['cpu_time_std'])} | {_f(r['cpu_time_relative_to_global'], 2)} | "
                       f"{_pm(r['wall_time_mean'], r['wall_time_std'])} | {_f(r['training_steps'], 4)} | {health} |")
        out.append("")
        sentences = goal_sentences(rs)
        if sentences:
            out += [" ".join(sentences), ""]
    return "\n".join(out) + "\n"
