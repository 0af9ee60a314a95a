# Helpers of the figures, tables and runs_index rules (workflow/rules/figures.smk): the run indexes,
# the report's tables and the job parameters shown in the report.
import json
import os


def write_run_index(path, task, runs, log):
    """Write the run index of a task (what `glocal figures/tables --runs` read) through a temporary file and a
    rename (mode from the umask), and one line to the log. ``runs``: "strategy/seedN ..." (indexed_runs)."""
    runs = [dict(zip(("strategy", "seed"), os.path.split(r)), path=r) for r in runs.split()]
    runs = [dict(r, seed=int(r["seed"][len("seed") :])) for r in runs]
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump({"task": task, "runs": runs}, f, indent=1)
        f.write("\n")
    os.replace(tmp, path)
    with open(log, "w") as f:
        f.write(f"{len(runs)} runs of task {task} -> {path}\n")


def report_params():
    """The figures/tables jobs' dependence on the config, readable in the report's "Job parameters"."""
    options = " ".join(f"{k}={v}" for k, v in sorted(config["figures"].items()))
    return {"options": options, "figures": " ".join(name for name, *_ in expected_figures())}


# the tables shown in the report (section "Tables"; HTML, which the report shows in place, where it offers
# CSV files only as downloads): file, caption (workflow/report/<caption>.rst), label
REPORT_TABLES = [
    ("summary.html", "table_summary", "summary"),
    ("paired.html", "table_paired", "paired differences"),
    ("budget.html", "table_budget", "equal budget"),
    ("error_vs_tau.html", "table_error_vs_tau", "error against tau"),
    ("theory.html", "table_theory", "theory checks"),
    ("ablation_extract.html", "table_ablation_extract", "ablation: extraction"),
    ("ablation_hpo.html", "table_ablation_hpo", "ablation: HPO"),
    ("sensitivity.html", "table_sensitivity", "sensitivity"),
    ("nqm.html", "table_nqm", "noisy quadratic model"),
]


def table_outputs():
    """Named outputs of the tables rule (summary.md -> summary_md); the report's tables with their captions."""
    shown = {name: (stem, label) for name, stem, label in REPORT_TABLES}
    out = {}
    for name in table_files():
        path = f"{RESULTS}/tables/{name}"
        if name in shown:
            stem, label = shown[name]
            path = report(path, caption=caption(stem), category="Tables", labels={"table": label})
        out[name.replace(".", "_")] = path
    return out


def indexed_runs(wildcards):
    """The runs of a task this config asks for, as "strategy/seedN ..." (run directories under results/runs/TASK)."""
    task = wildcards.task
    return " ".join(f"{s}/seed{n}" for s in TASK_STRATEGIES[task] for n in TASK_SEEDS[task])
