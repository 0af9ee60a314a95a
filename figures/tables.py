"""``glocal tables --results results --out results/tables``: summary.md/.csv (final metrics, wall time and
peak memory, mean +- std over seeds, per task x strategy), theory.md/.csv, error_vs_tau.md/.csv, budget.md/.csv
(gradient strategies against black-box search at equal runs and equal wall time), nqm.md/.csv (the noisy
quadratic model's strategies against its answer key, figures.nqm_table), each .md also as .html (for
the report), and results/README.md.
The runs read are those of the run indexes (--runs) or of the config (figures.io.select_runs)."""

from __future__ import annotations

import argparse
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

from figures import catalog, style
from figures.agg import mean_std
from figures.io import Run, expected_seeds, load_runs, read_csv, read_json, select_runs, to_float

METRICS = ["val_loss", "test_loss", "val_acc", "test_acc"]
SUMMARY_FIELDS = (["task", "strategy", "n_seeds", "n_expected_seeds", "missing_seeds", "n_diverged",
                   "n_training_runs"]
                  + [f"{m}_{s}" for m in METRICS + ["auc", "wall_time"] for s in ("mean", "std")]
                  + ["wall_time_per_update_mean", "peak_memory_mb_mean", "peak_memory_mb_std", "engine"]
                  + ["fit_windows", "fit_fallbacks", "fit_fallbacks_by_reason", "fit_degenerate", "fit_growing",
                     "fit_median_rank", "fit_median_spectral_radius"])


#: the Markdown tables also written as HTML pages (for the report): name -> page title
HTML_TABLES = {"summary": "Summary", "paired": "Paired differences", "budget": "Equal budgets",
               "error_vs_tau": "Error against prefix length", "theory": "Theory checks",
               "nqm": "The noisy quadratic model", "ablation_extract": "Ablations: extraction",
               "ablation_hpo": "Ablations: HPO outcome",
               "sensitivity": "Sensitivity to the starting point"}


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--results", default="results", help="results directory (default: results)")
    p.add_argument("--out", default=None, help="table directory (default: RESULTS/tables)")
    p.add_argument("--config", default=None, help="experiment YAML (expected seeds and tasks); optional")
    p.add_argument("--readme", default=None, help="README path (default: RESULTS/README.md)")
    from figures.cli import RUNS_HELP

    p.add_argument("--runs", nargs="+", default=None, metavar="INDEX", help=RUNS_HELP)


def _final(run: Run, metric: str) -> float:
    v = to_float(run.summary.get("final", {}).get(metric)) if run.summary else math.nan
    if not math.isfinite(v) and run.metrics.get(metric) is not None and len(run.metrics[metric]):
        v = float(run.metrics[metric][-1])
    return v


def summary_rows(runs: dict[str, dict[str, dict[int, Run]]], config: dict[str, Any] | None = None
                 ) -> list[dict[str, Any]]:
    """One row per task x strategy: mean and sample std over seeds (non-finite values, e.g. a diverged
    run's losses, are left out of the mean and counted in n_diverged)."""
    rows = []
    for task in sorted(runs):
        seeds = expected_seeds(runs[task], config, task)
        for strat in style.order(runs[task]):
            by_seed = runs[task][strat]
            rs = [by_seed[s] for s in sorted(by_seed)]
            row: dict[str, Any] = {"task": task, "strategy": strat, "n_seeds": len(rs),
                                   "n_expected_seeds": len(seeds),
                                   "missing_seeds": " ".join(str(s) for s in seeds if s not in by_seed),
                                   "n_diverged": sum(r.diverged_step is not None for r in rs)}
            ntr = [to_float(r.summary.get("n_training_runs")) for r in rs]
            ntr = [x for x in ntr if math.isfinite(x)]
            row["n_training_runs"] = int(max(ntr)) if ntr else (1 if rs else "")
            for m in METRICS:
                row[f"{m}_mean"], row[f"{m}_std"], _ = mean_std([_final(r, m) for r in rs])
            row["auc_mean"], row["auc_std"], _ = mean_std([to_float(r.summary.get("auc")) for r in rs])
            row["wall_time_mean"], row["wall_time_std"], _ = mean_std(
                [to_float(r.summary.get("time", {}).get("total")) for r in rs])
            per = [to_float(r.summary.get("time", {}).get("total")) / to_float(r.summary.get("n_hyper_updates"))
                   for r in rs if to_float(r.summary.get("n_hyper_updates")) > 0]
            row["wall_time_per_update_mean"] = mean_std(per)[0]
            row["peak_memory_mb_mean"], row["peak_memory_mb_std"], _ = mean_std(
                [to_float(r.summary.get("peak_memory_mb")) for r in rs])
            row["engine"] = " ".join(sorted({str(r.summary.get("engine")) for r in rs if r.summary.get("engine")}))
            row.update(fit_health_totals([r.summary.get("fit_health") for r in rs]))
            rows.append(row)
    return rows


def fit_health_totals(healths: list[dict[str, Any] | None]) -> dict[str, Any]:
    """The glocal fit health of a strategy's runs, summed over seeds (windows, fallbacks and their
    reasons, degenerate and growing fits) with the median over seeds of each run's median rank and
    spectral radius; empty strings for strategies that fit nothing (no ``fit_health`` in summary.json)."""
    hs = [h for h in healths if isinstance(h, dict) and h.get("windows")]
    if not hs:
        return {k: "" for k in SUMMARY_FIELDS if k.startswith("fit_")}
    reasons: dict[str, int] = {}
    for h in hs:
        for k, n in (h.get("fallbacks_by_reason") or {}).items():
            reasons[k] = reasons.get(k, 0) + int(n)

    def median_of(key):
        xs = [x for x in (to_float(h.get(key)) for h in hs) if math.isfinite(x)]
        return statistics.median(xs) if xs else math.nan

    return {"fit_windows": sum(int(h["windows"]) for h in hs),
            "fit_fallbacks": sum(int(h.get("fallbacks") or 0) for h in hs),
            "fit_fallbacks_by_reason": " ".join(f"{k}={n}" for k, n in sorted(reasons.items())),
            "fit_degenerate": sum(int(h.get("degenerate") or 0) for h in hs),
            "fit_growing": sum(int(h.get("growing") or 0) for h in hs),
            "fit_median_rank": median_of("median_rank"),
            "fit_median_spectral_radius": median_of("median_spectral_radius")}


def fit_health_cell(r: dict[str, Any]) -> str:
    """'fallbacks/windows (reason=n ...), degenerate d' for a strategy that fits, '-' otherwise."""
    if not r.get("fit_windows"):
        return "-"
    why = f" ({r['fit_fallbacks_by_reason']})" if r["fit_fallbacks_by_reason"] else ""
    return f"{r['fit_fallbacks']}/{r['fit_windows']}{why}; degenerate {r['fit_degenerate']}"


def pm(mean: float, std: float, digits: int = 4) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    return f"{mean:.{digits}g} ± {std:.2g}" if math.isfinite(std) else f"{mean:.{digits}g}"


def summary_markdown(rows: list[dict[str, Any]]) -> str:
    out = ["# Summary: final metrics per task and strategy", "",
           "Mean ± sample standard deviation over seeds (final values after the last step; for random/tpe the "
           "best trial; a single seed shows no ±). `runs` = full training runs used; `wall time` = whole run "
           "(s); `memory` = peak memory of the run (MB); diverged runs are counted and left out of the means. "
           "`fit fallbacks` (glocal strategies): windows whose Koopman fit fell back to the local hypergradient, "
           "of all windows of all seeds, by reason (growing: spectral radius above 1 in too large a share of "
           "the modes; cond, norm: the limit's guards), and fits that collapsed (every eigenvalue ~0).", ""]
    for task in sorted({r["task"] for r in rows}):
        rs = [r for r in rows if r["task"] == task]
        has_auc = any(math.isfinite(r["auc_mean"]) for r in rs)
        head = ["strategy", "seeds", "runs", "val loss", "test loss", "test acc"] + (["AUC"] if has_auc else []) \
            + ["wall time (s)", "s / update", "memory (MB)", "diverged", "engine"]
        has_fit = any(r.get("fit_windows") for r in rs)
        head += ["fit fallbacks"] if has_fit else []
        out += [f"## task `{task}`", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for r in rs:
            seeds = f"{r['n_seeds']}/{r['n_expected_seeds']}" + (f" (missing {r['missing_seeds']})"
                                                                  if r["missing_seeds"] else "")
            cells = [r["strategy"], seeds, str(r["n_training_runs"]), pm(r["val_loss_mean"], r["val_loss_std"]),
                     pm(r["test_loss_mean"], r["test_loss_std"]), pm(r["test_acc_mean"], r["test_acc_std"])]
            if has_auc:
                cells.append(pm(r["auc_mean"], r["auc_std"]))
            cells += [pm(r["wall_time_mean"], r["wall_time_std"], 3), style.fmt(r["wall_time_per_update_mean"]),
                      style.fmt(r["peak_memory_mb_mean"], 4), str(r["n_diverged"]), r["engine"] or "-"]
            cells += [fit_health_cell(r)] if has_fit else []
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    if not rows:
        out.append("No run directories found.")
    return "\n".join(out) + "\n"


def theory_rows(theory_dir: Path) -> list[dict[str, Any]]:
    """Per check: cases, passed, failed, worst measured value (largest measured/bound) and its bound."""
    by: dict[str, list[dict[str, str]]] = {}
    for r in read_csv(theory_dir / "checks.csv"):
        by.setdefault(r["check"], []).append(r)
    rows = []
    for check, rs in by.items():
        passed = sum(str(r["passed"]).lower() in ("true", "1") for r in rs)

        def ratio(r):
            m, b = to_float(r["measured"]), to_float(r["bound"])
            return m / b if b and math.isfinite(m) and math.isfinite(b) else math.inf

        worst = max(rs, key=ratio)
        rows.append({"check": check, "cases": len(rs), "passed": passed, "failed": len(rs) - passed,
                     "worst_measured": to_float(worst["measured"]), "bound": to_float(worst["bound"]),
                     "worst_case": worst["case"]})
    return rows


def theory_markdown(rows: list[dict[str, Any]], summary: dict[str, Any]) -> str:
    out = ["# Theory checks (quadratic problems, `glocal theory`)", ""]
    if summary:
        out += [f"{summary.get('passed', '?')} of {summary.get('n_checks', '?')} checks passed "
                f"({summary.get('failed', '?')} failed).", ""]
    out += ["| check | cases | passed | failed | worst measured | bound | worst case |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['check']} | {r['cases']} | {r['passed']} | {r['failed']} | {style.fmt(r['worst_measured'])} "
                   f"| {style.fmt(r['bound'])} | `{r['worst_case']}` |")
    if not rows:
        out.append("| (no results/theory/checks.csv) | | | | | | |")
    out += ["", "Meaning of each check: docs/theory.md."]
    return "\n".join(out) + "\n"


def error_markdown(analysis: Path) -> str:
    md = analysis / "summary.md"
    head = ("# Hypergradient error against prefix length (`glocal analyze`)\n\n"
            "For every task, batch mode and window start: the relative error of each estimator against h_T per "
            "prefix length tau, the ratio to local, and under mini-batches the noise floor "
            "(the same numbers, one row per setting and tau: error_vs_tau.csv).\n\n")
    if md.is_file():  # its own title gives way to ours
        return head + re.sub(r"\A# [^\n]*\n+", "", md.read_text())
    rows = read_csv(analysis / "error_vs_tau.csv")
    if not rows:
        return head + "No extraction analysis found (results/analysis/error_vs_tau.csv).\n"
    lines = ["| task | setting | window start | tau | estimator | rel. error | ratio to local |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['task']} | {r['setting']} | {r['window_start']} | {r['tau']} | {r['estimator']} | "
                     f"{style.fmt(to_float(r['rel_error']))} | {style.fmt(to_float(r['ratio_to_local']))} |")
    return head + "\n".join(lines) + "\n"


def error_table(rows: list[dict[str, str]], tasks: list[str] | None = None) -> tuple[list[dict[str, Any]], list[str]]:
    """analysis/error_vs_tau.csv as one row per task, batch mode, window start and prefix length: the relative
    error of every estimator and, for the non-local ones, the ratio to local; (rows, columns)."""
    from figures.error_vs_tau import _order

    rows = [r for r in rows if tasks is None or r.get("task") in tasks]
    ests = sorted({r["estimator"] for r in rows}, key=_order)
    cols = ["task", "batch mode", "window start", "prefix length tau", "noise floor"]
    cols += [f"relative error: {e}" for e in ests]
    cols += [f"ratio to local: {e}" for e in ests if e != "local"]
    table: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        key = (r["task"], r["setting"] != "full", r["setting"], int(to_float(r["window_start"])),
               int(to_float(r["tau"])))
        mode = "full batch" if r["setting"] == "full" else f"batch size {r.get('batch_size', r['setting'])}"
        row = table.setdefault(key, {"task": r["task"], "batch mode": mode, "window start": key[3],
                                     "prefix length tau": key[4], "noise floor": style.fmt(to_float(r.get("noise_floor")))})
        row[f"relative error: {r['estimator']}"] = style.fmt(to_float(r["rel_error"]))
        if r["estimator"] != "local":
            row[f"ratio to local: {r['estimator']}"] = style.fmt(to_float(r.get("ratio_to_local")), 2)
    return [table[k] for k in sorted(table)], cols


def readme(tasks: list[str], nqm_tasks: list[str] | None = None) -> str:
    return ("# Results\n\nGenerated by `glocal tables` (do not edit): what every figure and table shows and how "
            "to read it. Layout: `runs/{task}/{strategy}/seed{seed}/`, `extract/{task}/`, `analysis/`, `theory/`, "
            "`bench/`, `nqm/{task}/`, `figures/`, `tables/`.\n\n" + catalog.markdown(tasks, nqm_tasks=nqm_tasks))


def run(args: argparse.Namespace) -> int:
    from glocal.utils import atomic_write_csv, atomic_write_text

    results = Path(args.results)
    out = Path(args.out) if args.out else results / "tables"
    out.mkdir(parents=True, exist_ok=True)
    config = {}
    if args.config:
        from glocal.config import load_config
        config = load_config(args.config)
    runs = load_runs(results, select_runs(results, config, args.runs))
    rows = summary_rows(runs, config)
    atomic_write_csv(out / "summary.csv", rows, SUMMARY_FIELDS)
    atomic_write_text(out / "summary.md", summary_markdown(rows))
    th = theory_rows(results / "theory")
    atomic_write_csv(out / "theory.csv", th, ["check", "cases", "passed", "failed", "worst_measured", "bound",
                                             "worst_case"])
    atomic_write_text(out / "theory.md", theory_markdown(th, read_json(results / "theory" / "summary.json")))
    atomic_write_text(out / "error_vs_tau.md", error_markdown(results / "analysis"))
    from figures.cli import tasks_of

    tasks = tasks_of(config, runs, results)
    erows, ecols = error_table(read_csv(results / "analysis" / "error_vs_tau.csv"), tasks)
    atomic_write_csv(out / "error_vs_tau.csv", erows, ecols)
    from figures.paired import PAIRED_FIELDS, paired_markdown, paired_rows

    prows = paired_rows(runs)
    atomic_write_csv(out / "paired.csv", prows, PAIRED_FIELDS)
    atomic_write_text(out / "paired.md", paired_markdown(prows))
    from figures.budget import BUDGET_FIELDS, budget_markdown, budget_rows

    brows = budget_rows(runs)
    atomic_write_csv(out / "budget.csv", brows, BUDGET_FIELDS)
    atomic_write_text(out / "budget.md", budget_markdown(brows))
    from figures import ablation, sensitivity
    from figures.cli import ablation_rows

    arows = ablation.table_rows(ablation_rows(results, config, tasks))
    atomic_write_csv(out / "ablation_extract.csv", arows, ablation.TABLE_FIELDS)
    atomic_write_text(out / "ablation_extract.md", ablation.table_markdown(arows))
    from figures import ablation_hpo

    hrows = ablation_hpo.table_rows(ablation_hpo.summarize(ablation_hpo.load(ablation_hpo.index_paths(results, config))))
    atomic_write_csv(out / "ablation_hpo.csv", hrows, ablation_hpo.TABLE_FIELDS)
    atomic_write_text(out / "ablation_hpo.md", ablation_hpo.table_markdown(hrows))
    srows = sensitivity.table_rows(sensitivity.summarize(sensitivity.load(sensitivity.index_paths(results, config))))
    atomic_write_csv(out / "sensitivity.csv", srows, sensitivity.TABLE_FIELDS)
    atomic_write_text(out / "sensitivity.md", sensitivity.table_markdown(srows))
    from figures.nqm_table import NQM_FIELDS, nqm_markdown, nqm_rows

    nrows = nqm_rows(runs, config)
    atomic_write_csv(out / "nqm.csv", nrows, NQM_FIELDS)
    atomic_write_text(out / "nqm.md", nqm_markdown(nrows))
    from figures.html import markdown_to_html

    for name, title in HTML_TABLES.items():  # what the Snakemake report shows (it offers CSVs only as downloads)
        atomic_write_text(out / f"{name}.html", markdown_to_html((out / f"{name}.md").read_text(), title))
    from figures.cli import nqm_tasks_of

    atomic_write_text(Path(args.readme) if args.readme else results / "README.md",
                      readme(tasks, nqm_tasks_of(config, runs, tasks)))
    print(f"glocal tables: {len(rows)} summary rows, {len(th)} theory checks -> {out}", file=sys.stderr)
    return 0
