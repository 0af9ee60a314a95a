# Definitions of the checks beyond the paper's runs (docs/ablations.md), used by ablation.smk and sensitivity.smk:
#  * the extraction ablation: the saved exact trajectories of a task refitted with other estimator settings
#    (delay, POD rank, energy, rank rule, record stride, prefix length); no hypergradient is recomputed;
#  * the HPO ablation: glocal runs of one task with one option varied at a time (one job per axis, every value
#    and seed in it), only when ablation.hpo.enabled is true;
#  * sensitivity: every strategy of sensitivity.strategies from each starting value of a task's hyperparameters
#    (one job per task and start, every strategy and seed in it).
ABLATION_EXTRACT_TASKS = _glocal_config_checks().ablation_extract_tasks(config)
ABLATION_EXTRACT_DIR = f"{RESULTS}/ablation/extract/{{task}}"
ABLATION_HPO_AXES = list(_glocal_config_checks().ablation_hpo_axes(config)) if config["ablation"]["hpo"]["enabled"] else []
ABLATION_HPO_DIR = f"{RESULTS}/ablation/hpo/{{axis}}"
SENSITIVITY_STARTS = _glocal_config_checks().sensitivity_starts(config)
SENSITIVITY_DIR = f"{RESULTS}/sensitivity/{{task}}/{{start}}"


def ablation_files():
    """What the figures and tables read of the extraction ablation: its CSV per task."""
    return [f"{ABLATION_EXTRACT_DIR.format(task=t)}/ablation.csv" for t in ABLATION_EXTRACT_TASKS]


def ablation_hpo_files():
    """What the figures and tables read of the HPO ablation: the run index of every enabled axis."""
    return [f"{ABLATION_HPO_DIR.format(axis=a)}/index.json" for a in ABLATION_HPO_AXES]


def sensitivity_files():
    """What the figures and tables read of the sensitivity runs: the run index of every (task, start)."""
    return [f"{SENSITIVITY_DIR.format(task=s['task'], start=s['start'])}/index.json" for s in SENSITIVITY_STARTS]


def ablation_extract_key(wildcards):
    return _key({"ablation": config["ablation"]["extract"],
                 "extract": _glocal_config_checks().extract_options(config, wildcards.task)})


def ablation_hpo_key(wildcards):
    """The HPO ablation job's dependence on the config: its section, the task and the task's glocal options."""
    sec = config["ablation"]["hpo"]
    task = sec["task"]
    tcfg = {k: v for k, v in config["tasks"][task].items() if k not in RUN_LIST_KEYS}
    runs = _glocal_config_checks().ablation_hpo_axes(config)[wildcards.axis]
    return _key({**_common_part(), "task": tcfg, "seeds": sec["seeds"], "runs": runs,
                 "glocal": _glocal_config_checks().strategy_options(config, task, "glocal"),
                 "divergence": config["divergence"]})


def sensitivity_key(wildcards):
    checks = _glocal_config_checks()
    start = next(s for s in SENSITIVITY_STARTS if s["task"] == wildcards.task and s["start"] == wildcards.start)
    cfg = checks.sensitivity_config(config, start)
    sec = config["sensitivity"]
    tcfg = {k: v for k, v in cfg["tasks"][wildcards.task].items() if k not in RUN_LIST_KEYS}
    opts = {s: checks.strategy_options(cfg, wildcards.task, s) for s in sec["strategies"]}
    return _key({**_common_part(), "task": tcfg, "strategies": opts, "seeds": sec["seeds"],
                 "divergence": config["divergence"]})
