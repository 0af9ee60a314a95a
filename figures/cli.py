"""``glocal figures --config FILE --results results --out results/figures``: every figure (PNG + PDF).

Layout read: results/runs/{task}/{strategy}/seed{seed}/, results/extract/{task}/, results/analysis/,
results/theory/, results/bench/cost.csv, results/nqm/{task}/ (tasks of kind nqm), results/ablation/extract/{task}/,
results/ablation/hpo/{axis}/, results/sensitivity/{task}/{start}/. A figure whose inputs are missing is still written,
saying so; a figure that fails to draw is replaced by one showing the error and the exit status becomes 1.
"""

from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path
from typing import Any

from figures import catalog, style
from figures.io import expected_seeds, load_runs, read_csv, read_json, select_runs

RUNS_HELP = ("run indexes (results/runs/{task}/index.json, written by the workflow): read exactly these runs; "
             "default: the runs the --config asks for (tasks x strategies x seeds), or without --config every "
             "run directory under RESULTS/runs")


def configure_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="experiment YAML (tasks, seeds, figures.dpi/style)")
    p.add_argument("--results", default="results", help="results directory (default: results)")
    p.add_argument("--out", default=None, help="output directory (default: RESULTS/figures)")
    p.add_argument("--runs", nargs="+", default=None, metavar="INDEX", help=RUNS_HELP)
    p.add_argument("--only", nargs="*", default=None, metavar="NAME", help="draw only these figures")
    p.add_argument("--dpi", type=int, default=None, help="PNG dpi (default: config figures.dpi, else 300)")


def _config(path: str | None) -> dict[str, Any]:
    if not path:
        return {}
    from glocal.config import load_config

    return load_config(path)


def tasks_of(config: dict[str, Any], runs: dict, results: Path) -> list[str]:
    if config.get("tasks"):
        return [t for t, c in config["tasks"].items() if (c or {}).get("enabled", True)]
    found = set(runs)
    ex = results / "extract"
    if ex.is_dir():
        found |= {p.name for p in ex.iterdir() if p.is_dir()}
    return sorted(found)


def ablation_rows(results: Path, config: dict[str, Any], tasks: list[str]) -> list[dict[str, str]]:
    """The rows of results/ablation/extract/{task}/ablation.csv of the config's ablated tasks (without a config,
    of the tasks found)."""
    if config.get("tasks"):
        from glocal.config import ablation_extract_tasks

        wanted = ablation_extract_tasks(config)
    else:
        wanted = tasks
    return [r for t in wanted for r in read_csv(results / "ablation" / "extract" / t / "ablation.csv")]


def nqm_tasks_of(config: dict[str, Any], runs: dict, tasks: list[str]) -> list[str]:
    """The tasks of kind nqm among ``tasks``: by the config's kinds, else by their runs' summaries."""
    if config.get("tasks"):
        return [t for t in tasks if ((config["tasks"].get(t) or {}).get("kind") or t) == "nqm"]
    return [t for t in tasks if any(r.summary.get("task_kind") == "nqm" or r.summary.get("nqm")
                                    for by_seed in runs.get(t, {}).values() for r in by_seed.values())]


def _error_figure(name: str, out: Path, exc: BaseException) -> None:
    fig, axes = style.subplots(1, 1, w=5, h=2.5)
    style.empty(axes[0, 0], f"figure {name} failed:\n{type(exc).__name__}: {str(exc)[:200]}")
    style.save(fig, out / name)


def render_all(results: Path, out: Path, config: dict[str, Any] | None = None,
               only: list[str] | None = None, run_indexes: list[str] | None = None) -> dict[str, Any]:
    """Draw every figure; {name: returned data or the exception}. Runs read: ``select_runs``."""
    from figures import (
        baselines,
        cost,
        error_vs_tau,
        hpo_curves,
        hyper_trajectories,
        nqm_bias,
        nqm_lr,
        reweight,
        spectra,
        theory,
    )

    config = config or {}
    runs = load_runs(results, select_runs(results, config, run_indexes))
    tasks = tasks_of(config, runs, results)
    nqm = nqm_tasks_of(config, runs, tasks)
    names = catalog.figure_names(tasks, nqm_tasks=nqm)
    if only:
        names = [n for n in names if n in only]
    done: dict[str, Any] = {}
    strat_cfg = config.get("strategies")

    def draw(name, fn, *a):
        try:
            done[name] = fn(*a)
        except Exception as exc:  # noqa: BLE001 - one figure's failure must not lose the others
            traceback.print_exc()
            _error_figure(name, out, exc)
            done[name] = exc

    for task in tasks:
        tr = runs.get(task, {})
        seeds = expected_seeds(tr, config, task)
        own = ((config.get("tasks") or {}).get(task) or {}).get("strategies")
        strategies = list(own or strat_cfg or tr)
        if f"hpo_curves_{task}" in names:
            draw(f"hpo_curves_{task}", hpo_curves.plot_hpo_curves,
                 {s: tr.get(s, {}) for s in strategies}, task, out / f"hpo_curves_{task}", seeds, strategies)
        if f"hyper_trajectories_{task}" in names:
            draw(f"hyper_trajectories_{task}", hyper_trajectories.plot_hyper_trajectories,
                 tr, task, out / f"hyper_trajectories_{task}", seeds)
        if f"baselines_{task}" in names:
            draw(f"baselines_{task}", baselines.plot_baselines, tr, task, out / f"baselines_{task}", seeds)
    if "reweight_weights" in names:
        tr = runs.get("reweight", {})
        draw("reweight_weights", lambda: reweight.plot_reweight_weights(
            tr, out / "reweight_weights", expected_seeds(tr, config, "reweight")))
    if "error_vs_tau" in names:
        draw("error_vs_tau", lambda: error_vs_tau.plot_error_vs_tau(
            [r for r in read_csv(results / "analysis" / "error_vs_tau.csv") if r.get("task") in tasks],
            out / "error_vs_tau"))
    if "koopman_spectra" in names:
        def _spectra():
            windows, steps, ext = {}, {}, {}
            for task in tasks:
                gl = runs.get(task, {}).get("glocal", {})
                if gl:
                    r = gl[min(gl)]
                    windows[task] = spectra.windows_from_hypergrads(r.hypergrads())
                    steps[task] = int(r.summary.get("steps") or 0) or None
                rows = read_csv(results / "extract" / task / "spectra.csv")
                if rows:
                    ext[task] = rows
            return spectra.plot_koopman_spectra(windows, ext, out / "koopman_spectra", steps)
        draw("koopman_spectra", _spectra)
    if "cost" in names:
        bench = read_csv(results / "bench" / "cost.csv")
        draw("cost", lambda: cost.plot_cost(bench, out / "cost", {t: runs.get(t, {}) for t in tasks}))
    if "ablation_extract" in names:
        from figures import ablation

        draw("ablation_extract", lambda: ablation.plot_ablation_extract(
            ablation_rows(results, config, tasks), out / "ablation_extract"))
    if "ablation_hpo" in names:
        from figures import ablation_hpo

        draw("ablation_hpo", lambda: ablation_hpo.plot_ablation_hpo(
            ablation_hpo.load(ablation_hpo.index_paths(results, config)), out / "ablation_hpo"))
    if "sensitivity" in names:
        from figures import sensitivity

        draw("sensitivity", lambda: sensitivity.plot_sensitivity(
            sensitivity.load(sensitivity.index_paths(results, config)), out / "sensitivity"))
    if "nqm_learned_lr" in names:
        draw("nqm_learned_lr", lambda: nqm_lr.plot_nqm_learned_lr(
            {t: runs.get(t, {}) for t in nqm}, nqm, out / "nqm_learned_lr",
            {t: expected_seeds(runs.get(t, {}), config, t) for t in nqm}, strat_cfg))
    if "nqm_short_horizon_bias" in names:
        draw("nqm_short_horizon_bias", lambda: nqm_bias.plot_nqm_short_horizon_bias(
            {t: read_json(results / "nqm" / t / "short_horizon_bias.json") for t in nqm}, nqm,
            out / "nqm_short_horizon_bias"))
    th = [n for n in theory.NAMES if n in names]
    if th:
        try:
            drawn = theory.plot_theory(results / "theory", out, dpi=style._state["dpi"])
            done.update({n: drawn[n] for n in th})
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc()
            for n in th:
                _error_figure(n, out, exc)
                done[n] = exc
    done["_names"] = names
    return done


def run(args: argparse.Namespace) -> int:
    config = _config(args.config)
    fcfg = config.get("figures", {}) if config else {}
    style.apply(fcfg.get("style"), args.dpi or fcfg.get("dpi") or style.DPI)
    results = Path(args.results)
    out = Path(args.out) if args.out else results / "figures"
    out.mkdir(parents=True, exist_ok=True)
    done = render_all(results, out, config, args.only, args.runs)
    names = done.pop("_names")
    failed = [n for n, v in done.items() if isinstance(v, BaseException)]
    missing = [f"{n}.{ext}" for n in names for ext in ("png", "pdf") if not (out / f"{n}.{ext}").is_file()]
    print(f"glocal figures: {len(names)} figures in {out}" + (f"; failed: {', '.join(failed)}" if failed else "")
          + (f"; not written: {', '.join(missing)}" if missing else ""), file=sys.stderr)
    return 1 if failed or missing else 0
