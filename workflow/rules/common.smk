# Shared definitions: paths, targets, the expected figure/table lists, resources, rerun keys.
import functools
import hashlib
import importlib.util
import json
import os
import re

import yaml
from snakemake.exceptions import WorkflowError

RESULTS = "results"
LOGS = f"{RESULTS}/logs"
BENCH = f"{RESULTS}/benchmarks"

# The validated, defaults-filled, merged config (config.yaml + --configfile + --config) is
# written when the workflow is parsed, twice:
#  * RESOLVED_CONFIG, results/config/<hash of its content>.yaml: what the jobs read (via
#    --config). Its name changes with its content, so no later parse (a dry run with another
#    config while this workflow's jobs run) can change the file a job of this workflow reads.
#  * LATEST_CONFIG, results/config.resolved.yaml: the same text under a fixed name, for people
#    to read (the config of the last parse). No job reads it.
# Neither triggers reruns: the train/extract/analysis/theory/bench jobs take LATEST_CONFIG as
# an ancient() input and RESOLVED_CONFIG through a param derived from their inputs (which
# snakemake leaves out of the params rerun trigger); instead each rule has a `cfg` param holding
# only the part of the config its jobs depend on, and snakemake's `params` rerun trigger reruns
# exactly the jobs whose part changed (e.g. a new glocal window reruns only the glocal training
# runs). The figures and tables jobs take RESOLVED_CONFIG itself as their input, so they also
# rerun whenever the resolved config changes at all (they are cheap and read all of it).
# (The config is deliberately not the output of a rule: snakemake skips the needrun checks of
# jobs downstream of a rerun job even when they depend on it only through ancient() inputs.)
RESOLVED_CONFIG_DIR = f"{RESULTS}/config"
LATEST_CONFIG = f"{RESULTS}/config.resolved.yaml"


@functools.cache
def _glocal_config_checks():
    """glocal/config.py, loaded by path (once): its cross-key checks need only jsonschema and yaml (no
    torch), so they run here even where the glocal package is not installed."""
    path = os.path.join(workflow.basedir, "glocal", "config.py")
    spec = importlib.util.spec_from_file_location("_glocal_config_checks", path)
    checks = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(checks)
    return checks


# What the schema cannot express, checked before anything is written (a dry run fails too),
# naming the key: a local/glocal window shorter than its task's steps, an existing data.root.
try:
    _glocal_config_checks().check_config(config)
except ValueError as _exc:
    raise WorkflowError(f"Invalid config: {_exc}") from None

# Conda environment (paths relative to this directory). The default is the CPU build of
# PyTorch; device: cuda selects the CUDA build (see workflow/envs/*.yaml, docs/workflow.md).
CONDA_ENV = "../envs/glocal-cuda.yaml" if config["device"] == "cuda" else "../envs/glocal.yaml"

ALL_TASKS = list(config["tasks"])  # every task the schema knows (defaults filled in)
TASKS = [t for t in ALL_TASKS if config["tasks"][t].get("enabled", True)]
STRATEGIES = list(config["strategies"])
SEEDS = list(config["seeds"])
# per task: its strategies and seeds (tasks.<task>.strategies / seeds, else the top-level lists)
TASK_STRATEGIES = {t: _glocal_config_checks().task_strategies(config, t) for t in TASKS}
TASK_SEEDS = {t: _glocal_config_checks().task_seeds(config, t) for t in TASKS}
# the enabled tasks that are extracted (tasks.<task>.extract: false leaves one out)
EXTRACT_TASKS = _glocal_config_checks().extract_tasks(config)
# tasks whose training runs also write weights.csv (per-example weights): every task of kind reweight
WEIGHT_TASKS = [t for t in ALL_TASKS if (config["tasks"][t].get("kind") or t) == "reweight"]
# tasks of kind nqm (the noisy quadratic model): answer key and bias curve of their own (workflow/rules/nqm.smk)
NQM_TASKS = [t for t in ALL_TASKS if (config["tasks"][t].get("kind") or t) == "nqm"]

RUN_DIR = f"{RESULTS}/runs/{{task}}/{{strategy}}/seed{{seed}}"
RUN_FILES = ["summary.json", "metrics.csv", "hypergrads.jsonl", "config.json"]
RUN_WEIGHT_FILES = ["weights.csv"]
# per task: the runs this config asks for (rule runs_index); what figures and tables read
RUN_INDEX = f"{RESULTS}/runs/{{task}}/index.json"
# an NQM task's answer key and short-horizon-bias curve (workflow/rules/nqm.smk)
NQM_DIR = f"{RESULTS}/nqm/{{task}}"
NQM_KEY = f"{NQM_DIR}/answer_key.json"
NQM_BIAS = f"{NQM_DIR}/short_horizon_bias"
EXTRACT_DIR = f"{RESULTS}/extract/{{task}}"
EXTRACT_FILES = ["trajectory.npz", "estimates.csv", "spectra.csv", "meta.json"]
ANALYSIS_FILES = ["error_vs_tau.csv", "summary.md"]
THEORY_FILES = ["checks.csv"]
TABLE_FILES = ["summary.csv", "summary.md", "paired.csv", "paired.md", "theory.md", "theory.csv", "error_vs_tau.md",
               "error_vs_tau.csv", "budget.md", "budget.csv", "summary.html", "paired.html", "budget.html",
               "error_vs_tau.html", "theory.html", "nqm.md", "nqm.csv", "nqm.html"]
BENCH_FILES = ["cost.csv", "bench.json"]
RESULTS_README = f"{RESULTS}/README.md"


# ----------------------------------------------------------------------------------------
# THE list of expected figures -- edit here. Each entry: (name, report category, condition).
# "{task}" in a name expands over the enabled tasks. Each figure is written as
# results/figures/<name>.png and .pdf by `glocal figures`; its report caption is
# workflow/report/<name without "_{task}">.rst.
# ----------------------------------------------------------------------------------------
FIGURE_SPECS = [
    ("hpo_curves_{task}", "Hyperparameter optimization", lambda: True),
    ("hyper_trajectories_{task}", "Hyperparameter optimization", lambda: True),
    ("reweight_weights", "Hyperparameter optimization", lambda: "reweight" in TASKS),
    ("error_vs_tau", "Hypergradient extraction", lambda: bool(EXTRACT_TASKS)),
    ("koopman_spectra", "Hypergradient extraction", lambda: bool(TASKS)),
    ("cost", "Cost", lambda: bool(TASKS)),
    ("theory_error_vs_tau", "Theory", lambda: True),
    ("theory_bound", "Theory", lambda: True),
    ("theory_spectrum", "Theory", lambda: True),
    ("baselines_{task}", "Baselines", lambda: True),
    ("ablation_extract", "Ablations", lambda: bool(ABLATION_EXTRACT_TASKS)),
    ("ablation_hpo", "Ablations", lambda: bool(ABLATION_HPO_AXES)),
    ("sensitivity", "Sensitivity", lambda: bool(SENSITIVITY_STARTS)),
    ("nqm_learned_lr", "Noisy quadratic model", lambda: any(t in NQM_TASKS for t in TASKS)),
    ("nqm_short_horizon_bias", "Noisy quadratic model", lambda: any(t in NQM_TASKS for t in TASKS)),
]
FIGURE_FORMATS = ["png", "pdf"]


def expected_figures():
    """[(name, caption stem, category, task or None)] of every figure this config makes."""
    figures = []
    for pattern, category, condition in FIGURE_SPECS:
        if not condition():
            continue
        stem = pattern.replace("_{task}", "")
        if "{task}" in pattern:
            figures += [(pattern.format(task=t), stem, category, t) for t in TASKS]
        else:
            figures.append((pattern, stem, category, None))
    return figures


def figure_paths(fmt):
    return [f"{RESULTS}/figures/{name}.{fmt}" for name, *_ in expected_figures()]


def caption(stem):
    return os.path.join(workflow.basedir, "workflow", "report", f"{stem}.rst")


def figure_outputs(fmt):
    """Output list of the figures rule; PNGs are report() items with their caption."""
    out = []
    for name, stem, category, task in expected_figures():
        path = f"{RESULTS}/figures/{name}.{fmt}"
        if fmt == "png":  # the report shows the PNG of each figure; the PDF is for papers
            labels = {"figure": name, "task": task or "all"}
            path = report(path, caption=caption(stem), category=category, labels=labels)
        out.append(path)
    return out


# tables written only when their part of the pipeline runs: (stem, condition); each as .md, .csv and .html
OPTIONAL_TABLE_SPECS = [
    ("ablation_extract", lambda: bool(ABLATION_EXTRACT_TASKS)),
    ("ablation_hpo", lambda: bool(ABLATION_HPO_AXES)),
    ("sensitivity", lambda: bool(SENSITIVITY_STARTS)),
]


def table_files():
    return TABLE_FILES + [f"{stem}.{ext}" for stem, condition in OPTIONAL_TABLE_SPECS if condition()
                          for ext in ("md", "csv", "html")]


def table_paths():
    return [f"{RESULTS}/tables/{name}" for name in table_files()]


# ----------------------------------------------------------------------------------------
# per-job file lists
# ----------------------------------------------------------------------------------------
def run_files(task, strategy, seed):
    names = RUN_FILES + (RUN_WEIGHT_FILES if task in WEIGHT_TASKS else [])
    d = RUN_DIR.format(task=task, strategy=strategy, seed=seed)
    return [f"{d}/{n}" for n in names]


def task_seeds(task):
    """The seeds of a task's runs: its own `seeds` (NQM tasks may set them), else the top-level ones."""
    return list(config["tasks"][task].get("seeds") or SEEDS)


def all_run_files():
    return [f for t in TASKS for s in TASK_STRATEGIES[t] for seed in TASK_SEEDS[t] for f in run_files(t, s, seed)]


def all_run_summaries():
    """One file per run (written last by a run): as targets, a deleted run is redone."""
    return [f"{RUN_DIR.format(task=t, strategy=s, seed=n)}/summary.json"
            for t in TASKS for s in TASK_STRATEGIES[t] for n in TASK_SEEDS[t]]


def run_index_files():
    return [RUN_INDEX.format(task=t) for t in TASKS]


def extract_files(task):
    return [f"{EXTRACT_DIR.format(task=task)}/{n}" for n in EXTRACT_FILES]


def all_extract_files():
    return [f for t in EXTRACT_TASKS for f in extract_files(t)]


def analysis_files():
    return [f"{RESULTS}/analysis/{n}" for n in ANALYSIS_FILES] if EXTRACT_TASKS else []


def theory_files():
    return [f"{RESULTS}/theory/{n}" for n in THEORY_FILES]


def bench_files():
    return [f"{RESULTS}/bench/{n}" for n in BENCH_FILES]


def nqm_figure_files():
    """The short-horizon-bias curves the figures read (one per enabled NQM task)."""
    return [f"{NQM_BIAS.format(task=t)}.json" for t in TASKS if t in NQM_TASKS]


def all_targets():
    return (
        all_run_summaries()  # one file per run (not all five): keeps this rule's log lines short
        + run_index_files()
        + all_extract_files()
        + analysis_files()
        + theory_files()
        + bench_files()
        + ablation_files()
        + ablation_hpo_files()
        + sensitivity_files()
        + figure_paths("png")
        + figure_paths("pdf")
        + table_paths()
        + [RESULTS_README]
    )


# ----------------------------------------------------------------------------------------
# resources
# ----------------------------------------------------------------------------------------
_RESOURCE_FALLBACK = {"threads": 1, "mem_mb": 2000, "runtime": 60}


def res(group, key):
    """config["resources"][group][key], or a fallback when the config leaves it out."""
    return config["resources"].get(group, {}).get(key, _RESOURCE_FALLBACK[key])


def gpu_request(wildcards):
    """GPUs per train/extract job: 1 only with device: cuda (honoured locally only with
    --resources gpu=N; on SLURM it becomes --gpus=1). device: auto requests none."""
    return 1 if config["device"] == "cuda" else 0


# ----------------------------------------------------------------------------------------
# rerun keys: the part of the config each job depends on (a `cfg` param of every rule)
# ----------------------------------------------------------------------------------------
def _key(obj):
    return json.dumps(obj, sort_keys=True)


def _common_part():
    return {k: config[k] for k in ("device", "dtype", "data")}


def job_config(wildcards, input):
    """--config of a job: RESOLVED_CONFIG, the content-addressed config of this parse. It takes
    `input` so that snakemake counts it as derived from the inputs and leaves it out of the params
    rerun trigger (its name changes with every config change; the `cfg` keys decide reruns)."""
    return RESOLVED_CONFIG


#: keys of tasks.<task> that say which runs and extractions exist, not how a run trains
RUN_LIST_KEYS = ("strategy_options", "strategies", "seeds", "extract")


def train_key(wildcards):
    task, strategy = wildcards.task, wildcards.strategy
    tcfg = config["tasks"][task]
    # The strategy's resolved options (outer settings merged in; local's window is glocal's unless set).
    opts = _glocal_config_checks().strategy_options(config, task, strategy)
    tcfg = {k: v for k, v in tcfg.items() if k not in RUN_LIST_KEYS}
    return _key({**_common_part(), "task": tcfg, "strategy": opts, "seed": int(wildcards.seed),
                 "divergence": config["divergence"]})


def _nqm_problem(task):
    """The task's config without what its answer key and its runs do not depend on."""
    return {k: v for k, v in config["tasks"][task].items() if k not in ("seeds", "strategy_options", "short_horizon_bias")}


def nqm_key_key(wildcards):
    return _key({"task": _nqm_problem(wildcards.task)})


def nqm_bias_key(wildcards):
    return _key({"task": _nqm_problem(wildcards.task), "bias": config["tasks"][wildcards.task]["short_horizon_bias"]})


def nqm_train_key(wildcards):
    """As train_key, without the short-horizon-bias settings (they do not change a run)."""
    opts = _glocal_config_checks().strategy_options(config, wildcards.task, wildcards.strategy)
    return _key({**_common_part(), "task": _nqm_problem(wildcards.task), "strategy": opts,
                 "seed": int(wildcards.seed), "divergence": config["divergence"]})


def extract_key(wildcards):
    task = wildcards.task
    tcfg = {k: v for k, v in config["tasks"][task].items() if k not in ("strategies", "seeds", "extract")}
    return _key({**_common_part(), "task": tcfg, "extract": _glocal_config_checks().extract_options(config, task)})


def analysis_key():
    extract = {t: _glocal_config_checks().extract_options(config, t) for t in EXTRACT_TASKS}
    return _key({"extract": extract, "tasks": EXTRACT_TASKS})


def theory_key():
    return _key({"dtype": config["dtype"], "device": config["device"], "theory": config["theory"]})


def bench_key():
    return _key({"device": config["device"], "bench": config["bench"]})


def figures_key():
    return _key({"figures": config["figures"], "expected": expected_figures()})


def _regex(names):
    return "|".join(re.escape(n) for n in names) or "(?!)"


wildcard_constraints:
    task=_regex(ALL_TASKS),
    strategy=_regex(list(_glocal_config_checks().BUILTIN_STRATEGIES) + list(config.get("strategy_variants") or {})),
    seed=r"\d+",


class _NoAliasDumper(yaml.SafeDumper):
    def ignore_aliases(self, data):
        return True


def resolved_config_text():
    return yaml.dump(dict(config), Dumper=_NoAliasDumper, sort_keys=False)


def write_if_changed(path, text):
    """Write `text` to `path` atomically (with the umask's mode), unless it already holds it."""
    try:
        with open(path) as f:
            if f.read() == text:
                return
    except FileNotFoundError:
        pass
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


_RESOLVED_TEXT = resolved_config_text()
RESOLVED_CONFIG = f"{RESOLVED_CONFIG_DIR}/{hashlib.sha256(_RESOLVED_TEXT.encode()).hexdigest()[:16]}.yaml"
write_if_changed(RESOLVED_CONFIG, _RESOLVED_TEXT)
write_if_changed(LATEST_CONFIG, _RESOLVED_TEXT)
