"""Tests of the Snakemake workflow (Snakefile, workflow/, configs/, profiles/).

Every test runs snakemake in a temporary copy of the workflow files, so the repository's
results/ is never touched. Tests that execute jobs need the real `glocal` command line and
are skipped, with the reason printed, while it is not installed.
"""

from __future__ import annotations

import ast
import csv
import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
# glocal/config.py: the Snakefile runs its cross-key config checks (loaded by path, without torch)
WORKFLOW_FILES = ["Snakefile", "config.yaml", "configs", "workflow", "profiles", "glocal/config.py",
                  "glocal/config.schema.yaml"]
SMOKE = "configs/smoke.yaml"
SMOKE_TIMEOUT = 1800  # seconds: a hang guard (the smoke DAG takes a few minutes on 2 idle cores, 15 on busy ones)

# import name -> conda package name, where they differ
IMPORT_TO_PACKAGE = {
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
    "torch": "pytorch",
    "matplotlib": "matplotlib-base",
    "mpl_toolkits": "matplotlib-base",
    "PIL": "pillow",
    "cv2": "opencv",
}
# packages that provide the same modules under another name in an env file
PACKAGE_ALIASES = {"matplotlib-base": {"matplotlib-base", "matplotlib"}}
LOCAL_PACKAGES = {"glocal", "theory_checks", "figures", "benchmarks", "tests"}
# peer libraries that only benchmarks/ compares against (imported lazily there, never run by
# the workflow, installed separately for the benchmarks): not required in the rule envs
BENCHMARK_ONLY = {"higher", "torchopt", "betty", "pydmd", "jax", "jaxlib"}
SCANNED_DIRS = ["glocal", "theory_checks", "figures", "benchmarks"]


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------
def snakemake_cmd() -> list[str]:
    exe = shutil.which("snakemake", path=str(VENV_BIN))
    return [exe] if exe else [sys.executable, "-m", "snakemake"]


def run_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(workdir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    cmd = ["timeout", "-k", "30", str(int(timeout))] + snakemake_cmd() + list(args)
    return subprocess.run(cmd, cwd=workdir, env=run_env(), capture_output=True, text=True, timeout=timeout + 60)


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def copy_workflow(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for name in WORKFLOW_FILES:
        src = REPO / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def job_stats(text: str) -> dict[str, int]:
    """Parse the 'Job stats' table of a snakemake (dry-)run: {rule: count}."""
    if "Nothing to be done" in text:
        return {}
    m = re.search(r"Job stats:\n.*?\n-+\s+-+\n(.*?)\ntotal\s+\d+", text, re.S)
    assert m, f"no job stats in output:\n{text[-3000:]}"
    stats = {}
    for line in m.group(1).strip().splitlines():
        rule, count = line.split()
        stats[rule] = int(count)
    return stats


def expected_outputs(workdir: Path) -> list[str]:
    """Figures (png+pdf), tables and README that `rule all` lists for the smoke config."""
    proc = snakemake(workdir, "--configfile", SMOKE, "-n", "--forceall", "all")
    assert proc.returncode == 0, output_of(proc)
    m = re.search(r"rule all:\n\s+input: (.*)\n", output_of(proc))
    assert m, output_of(proc)
    return [p.strip() for p in m.group(1).split(",")]


GLOCAL_COMMANDS = ["train", "extract", "analyze", "theory", "figures", "tables"]


def glocal_missing_reason() -> str | None:
    """Why the real `glocal` command line cannot run the workflow yet (None: it can)."""
    if importlib.util.find_spec("glocal") is None:
        return "the glocal package is not importable (the command line has not landed yet)"
    exe = shutil.which("glocal", path=run_env()["PATH"])
    if exe is None:
        return "the `glocal` command is not on PATH (pip install -e . creates it)"
    proc = subprocess.run([exe, "--help"], capture_output=True, text=True, env=run_env())
    missing = [cmd for cmd in GLOCAL_COMMANDS if not re.search(rf"\b{cmd}\b", proc.stdout)]
    if missing:
        return f"`glocal` lacks the subcommands {missing} that the workflow calls"
    return None


def require_glocal():
    reason = glocal_missing_reason()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)


# ------------------------------------------------------------------------------------------
# static checks: lint, dry runs, config validation
# ------------------------------------------------------------------------------------------
@pytest.fixture
def wf(tmp_path: Path) -> Path:
    return copy_workflow(tmp_path / "wf")


def test_lint_clean(wf: Path):
    proc = snakemake(wf, "--lint")
    out = output_of(proc)
    assert proc.returncode == 0, out
    assert "Lints for" not in out, out


@pytest.mark.parametrize("configfile", [None, SMOKE])
def test_dry_run(wf: Path, configfile: str | None):
    args = ["-n"] + (["--configfile", configfile] if configfile else [])
    proc = snakemake(wf, *args)
    out = output_of(proc)
    assert proc.returncode == 0, out
    stats = job_stats(out)
    cfg = yaml.safe_load((wf / "results/config.resolved.yaml").read_text())
    tasks = [t for t, c in cfg["tasks"].items() if c["enabled"]]
    # per task: its own strategies and seeds (tasks.<task>.strategies / seeds) or the top-level lists
    runs = {t: len(cfg["tasks"][t].get("strategies") or cfg["strategies"])
            * len(cfg["tasks"][t].get("seeds") or cfg["seeds"]) for t in tasks}
    n_runs = sum(runs.values())
    assert stats.get("train", 0) + stats.get("train_weights", 0) + stats.get("train_nqm", 0) == n_runs
    nqm_tasks = [t for t in tasks if (cfg["tasks"][t].get("kind") or t) == "nqm"]
    assert stats.get("train_nqm", 0) == sum(runs[t] for t in nqm_tasks)
    if configfile is None:  # config.yaml: the deterministic expected mode runs one seed, sampled mode two
        assert [len(cfg["tasks"][t]["seeds"]) for t in ("nqm", "nqm_sampled")] == [1, 2] < [len(cfg["seeds"])] * 2
    for rule in ("nqm_key", "nqm_bias"):  # once per NQM task
        assert stats.get(rule, 0) == len(nqm_tasks), stats
    extracted = [t for t in tasks if cfg["tasks"][t].get("extract", True) is not False]
    assert stats["extract"] == len(extracted) and stats["runs_index"] == len(tasks)
    chosen = cfg["ablation"]["extract"]["tasks"]  # null: every extracted task
    ablated = [t for t in extracted if chosen is None or t in chosen]
    assert stats["ablation_extract"] == len(ablated)  # the (chosen) extracted tasks' trajectories refitted
    starts = sum(len(spec.get("lr_factors") or spec.get("init_weights") or []) for t, spec
                 in cfg["sensitivity"]["tasks"].items() if t in tasks)
    assert starts and stats["sensitivity"] == starts  # one job per task and starting value
    hpo = cfg["ablation"]["hpo"]  # one job per axis, only when enabled (both configs enable it)
    assert hpo["enabled"] and stats["ablation_hpo"] == len(hpo["axes"])
    for rule in ("analysis", "theory", "figures", "tables", "all"):
        assert stats[rule] == 1, stats
    # a readable log: no line lists every file of every run (figures and tables depend on the runs through
    # the run indexes, `all` on one summary per run); before, single lines had 5 paths per run, 9-10k characters
    per_line = max(line.count("results/runs/") for line in out.splitlines())
    assert per_line <= n_runs + len(tasks), per_line
    # (`all` must name every run's summary.json and every figure: Snakemake redoes a missing file only
    # when a target asks for it, not when its consumers are up to date; so its "reason" line lists them once)


def test_resolved_config_has_defaults_and_merges(wf: Path):
    """--configfile is merged over config.yaml, the schema fills in defaults, and the
    result is what every command reads."""
    proc = snakemake(wf, "-n", "--configfile", SMOKE)
    assert proc.returncode == 0, output_of(proc)
    cfg = yaml.safe_load((wf / "results/config.resolved.yaml").read_text())
    smoke = yaml.safe_load((wf / SMOKE).read_text())
    assert cfg["seeds"] == smoke["seeds"]
    assert cfg["tasks"]["lr"]["steps"] == smoke["tasks"]["lr"]["steps"]
    assert cfg["data"]["val_fraction"] == 0.2  # schema default
    assert cfg["strategy_options"]["glocal"]["estimator"] == "limit"  # config.yaml / default
    base = yaml.safe_load((wf / "config.yaml").read_text())
    assert cfg["tasks"]["lr"]["strategy_options"] == base["tasks"]["lr"]["strategy_options"]  # config.yaml, kept
    # every job reads the content-addressed copy of the same text (never the fixed name)
    paths = set(re.findall(r"glocal \w+ --config (\S+)", output_of(snakemake(wf, "-n", "-p", "--configfile", SMOKE))))
    assert len(paths) == 1 and re.fullmatch(r"results/config/[0-9a-f]{16}\.yaml", paths.pop())


BAD_CONFIGS = {
    "wrong_type": ("tasks:\n  lr:\n    steps: many\n", ["steps", "'many' is not of type 'integer'"]),
    "unknown_strategy": ("strategies: [fixed, gloca]\n", ["strategies", "gloca"]),
    "misspelt_key": ("strategy_optoins: {}\n", ["strategy_optoins"]),
    "bad_estimator": (
        "strategy_options:\n  glocal: {estimator: magic}\n",
        ["estimator", "magic"],
    ),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_bad_config_fails_before_any_job(wf: Path, name: str):
    text, needles = BAD_CONFIGS[name]
    (wf / "bad.yaml").write_text(text)
    proc = snakemake(wf, "--cores", "1", "--configfile", "bad.yaml")
    out = output_of(proc)
    assert proc.returncode != 0, out
    # the schema's message, or that of the checks across keys (a strategy name is checked against the variants)
    assert "Error validating config file" in out or "Invalid config" in out, out
    for needle in needles:
        assert needle in out, out
    assert "rule train" not in out and "localrule" not in out, out
    assert not (wf / "results").exists(), "a job or the resolved config was written"


CROSS_KEY_ERRORS = {
    "window": ("tasks:\n  lr: {steps: 10}\nstrategy_options:\n  local: {window: 50}\n",
               ["strategy_options.local.window", "tasks.lr.steps = 10"]),
    "data_root": ("data: {name: mnist, root: /nonexistent/mnist}\n", ["data.root", "/nonexistent/mnist"]),
}


@pytest.mark.parametrize("name", sorted(CROSS_KEY_ERRORS))
def test_cross_key_config_errors_fail_a_dry_run(wf: Path, name: str):
    """What the schema cannot express (a window as long as the run, a missing data directory) fails
    `snakemake -n` naming the key, instead of passing it and failing (or silently misleading) in a job."""
    text, needles = CROSS_KEY_ERRORS[name]
    (wf / "bad.yaml").write_text(text)
    proc = snakemake(wf, "-n", "--configfile", "bad.yaml")
    out = output_of(proc)
    assert proc.returncode != 0, out
    for needle in needles:
        assert needle in out, out
    assert not (wf / "results").exists(), "the resolved config was written"


def test_dry_run_with_another_config_leaves_the_jobs_config_alone(wf: Path):
    """A dry run with another config while jobs run must not change the file those jobs read."""
    proc = snakemake(wf, "-n", "-p", "--configfile", SMOKE)
    assert proc.returncode == 0, output_of(proc)
    (path,) = set(re.findall(r"glocal train --config (\S+)", output_of(proc)))
    before = (wf / path).read_text()
    assert yaml.safe_load(before)["tasks"]["lr"]["steps"] == 30
    (wf / "other.yaml").write_text("tasks:\n  lr: {steps: 40}\n")
    proc = snakemake(wf, "-n", "-p", "--configfile", SMOKE, "other.yaml")
    assert proc.returncode == 0, output_of(proc)
    (other,) = set(re.findall(r"glocal train --config (\S+)", output_of(proc)))
    assert other != path and yaml.safe_load((wf / other).read_text())["tasks"]["lr"]["steps"] == 40
    assert (wf / path).read_text() == before  # what the first workflow's jobs read is unchanged
    latest = yaml.safe_load((wf / "results/config.resolved.yaml").read_text())
    assert latest["tasks"]["lr"]["steps"] == 40  # the human-readable copy follows the last parse


def test_slurm_profile_keeps_successful_job_logs():
    """The executor deletes the log of every successful job unless told to keep them (docs/workflow.md)."""
    import dataclasses

    from snakemake_executor_plugin_slurm import ExecutorSettings

    assert "keep_successful_logs" in {f.name for f in dataclasses.fields(ExecutorSettings)}
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert profile.get("slurm-keep-successful-logs") is True
    assert "slurm-keep-successful-logs" in (REPO / "docs/workflow.md").read_text()


def test_gpu_requested_only_for_cuda(wf: Path):
    (wf / "cuda.yaml").write_text("device: cuda\n")
    for extra, gpus in (([], "0"), (["--configfile", "cuda.yaml"], "1")):
        proc = snakemake(wf, "-n", *extra)
        out = output_of(proc)
        assert proc.returncode == 0, out
        blocks = re.findall(r"\nrule (\w+):\n(.*?)\n\n", out, re.S)
        seen = set()
        for rule, body in blocks:
            m = re.search(r"resources: (.*)", body)
            res = dict(kv.split("=", 1) for kv in m.group(1).split(", ")) if m else {}
            if rule in ("train", "train_weights", "train_nqm", "extract", "bench", "sensitivity", "ablation_hpo"):  # runs
                assert res.get("gpu", "0") == gpus, (rule, res)
                seen.add(rule)
            else:
                assert res.get("gpu", "0") == "0", (rule, res)
        assert seen == {"train", "train_weights", "train_nqm", "extract", "bench", "sensitivity", "ablation_hpo"}


def test_expected_figures_listed_once(wf: Path):
    """The figure list lives in common.smk; every figure has a caption file."""
    outputs = expected_outputs(wf)
    figures = sorted({Path(p).stem for p in outputs if p.startswith("results/figures/")})
    for stem in figures:
        assert f"results/figures/{stem}.png" in outputs and f"results/figures/{stem}.pdf" in outputs
    base = {
        "hpo_curves", "hyper_trajectories", "reweight_weights", "error_vs_tau",
        "koopman_spectra", "cost", "theory_error_vs_tau", "theory_bound", "theory_spectrum",
    }  # fmt: skip
    for name in base:
        assert (wf / "workflow/report" / f"{name}.rst").is_file(), name
    assert {"hpo_curves_lr", "hpo_curves_reweight", "reweight_weights", "theory_bound"} <= set(figures)
    for t in ("summary.csv", "summary.md", "theory.md"):
        assert f"results/tables/{t}" in outputs
    assert "results/README.md" in outputs


def test_run_index_lists_the_runs_of_the_current_config(wf: Path):
    """Issue 15: figures and tables read the run indexes, which list the runs the current config asks for. After
    the smoke config (fixed, local, glocal, global, ...) and one with [fixed, local], the index (and so every
    table and figure) lists only fixed and local, although the old run directories are still there."""
    smoke = yaml.safe_load((wf / SMOKE).read_text())
    strategies, seeds = smoke["strategies"], smoke["seeds"]
    assert {"fixed", "local", "glocal", "global"} <= set(strategies) and seeds == [0]
    for strategy in strategies:
        d = wf / "results/runs/lr" / strategy / "seed0"
        d.mkdir(parents=True)
        for name in ("summary.json", "metrics.csv", "hypergrads.jsonl", "config.json"):
            (d / name).write_text("{}\n")
    index = wf / "results/runs/lr/index.json"
    proc = snakemake(wf, "results/runs/lr/index.json", "--cores", "1", "--configfile", SMOKE)
    assert proc.returncode == 0, output_of(proc)
    assert [r["strategy"] for r in json.loads(index.read_text())["runs"]] == strategies
    (wf / "two.yaml").write_text("strategies: [fixed, local]\n")
    proc = snakemake(wf, "results/runs/lr/index.json", "--cores", "1", "--configfile", SMOKE, "two.yaml")
    assert proc.returncode == 0, output_of(proc)
    assert json.loads(index.read_text())["runs"] == [{"strategy": "fixed", "seed": 0, "path": "fixed/seed0"},
                                                     {"strategy": "local", "seed": 0, "path": "local/seed0"}]
    assert "train" not in job_stats(output_of(proc))  # the runs themselves were not redone
    # the figures and tables jobs read exactly these indexes
    proc = snakemake(wf, "-n", "-p", "--configfile", SMOKE, "two.yaml", "--forcerun", "figures", "tables")
    out = output_of(proc)
    assert proc.returncode == 0, out
    for cmd in ("glocal figures", "glocal tables"):
        line = next(ln for ln in out.splitlines() if cmd in ln)
        assert "--runs results/runs/lr/index.json results/runs/reweight/index.json" in line, line


def test_profiles_parse():
    import yte

    default = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert default["keep-going"] is False and default["rerun-incomplete"] is True
    text = (REPO / "profiles/slurm/config.yaml").read_text()
    old = {k: os.environ.pop(k, None) for k in ("SLURM_PARTITION", "SLURM_ACCOUNT")}
    try:
        cfg = yte.process_yaml(io.StringIO(text), require_use_yte=True)
        assert cfg["executor"] == "slurm"
        assert cfg["default-resources"]["slurm_partition"] == "debug"
        assert "slurm_account" not in cfg["default-resources"]
        os.environ.update(SLURM_PARTITION="gpu", SLURM_ACCOUNT="proj")
        cfg = yte.process_yaml(io.StringIO(text), require_use_yte=True)
        assert cfg["default-resources"]["slurm_partition"] == "gpu"
        assert cfg["default-resources"]["slurm_account"] == "proj"
    finally:
        for k, v in old.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v


def test_schema_is_the_packaged_schema():
    packaged = REPO / "glocal" / "config.schema.yaml"
    if not packaged.exists():
        reason = "glocal/config.schema.yaml does not exist yet"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    ours = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert yaml.safe_load(packaged.read_text()) == ours


def test_config_yaml_sets_only_schema_keys():
    """config.yaml and every configs/*.yaml pass the schema on their own."""
    import jsonschema

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    for path in [REPO / "config.yaml", *sorted((REPO / "configs").glob("*.yaml"))]:
        jsonschema.Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))


# ------------------------------------------------------------------------------------------
# conda environments cover the imports
# ------------------------------------------------------------------------------------------
def _env_packages(path: Path) -> set[str]:
    env = yaml.safe_load(path.read_text())
    names = set()
    for dep in env["dependencies"]:
        if isinstance(dep, str):
            names.add(re.split(r"[=<>! ]", dep, maxsplit=1)[0].lower())
    return names


def _optional_import_nodes(tree: ast.AST) -> set[int]:
    """ids of import nodes inside `try: ... except ImportError/ModuleNotFoundError`."""
    optional = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            caught = set()
            for h in node.handlers:
                t = h.type
                elts = t.elts if isinstance(t, ast.Tuple) else [t]
                caught |= {e.id for e in elts if isinstance(e, ast.Name)}
            if caught & {"ImportError", "ModuleNotFoundError"}:
                for stmt in node.body:
                    optional |= {id(n) for n in ast.walk(stmt)}
    return optional


def third_party_imports() -> dict[str, set[str]]:
    """{top-level module: {files}} imported (not optionally) by the project's packages."""
    stdlib = set(sys.stdlib_module_names)
    found: dict[str, set[str]] = {}
    for d in SCANNED_DIRS:
        for py in sorted((REPO / d).rglob("*.py")) if (REPO / d).is_dir() else []:
            tree = ast.parse(py.read_text(), filename=str(py))
            optional = _optional_import_nodes(tree)
            for node in ast.walk(tree):
                if id(node) in optional:
                    continue
                if isinstance(node, ast.Import):
                    mods = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods = [node.module]
                else:
                    continue
                for mod in mods:
                    top = mod.split(".")[0]
                    if top not in stdlib and top not in LOCAL_PACKAGES and top != "__future__":
                        found.setdefault(top, set()).add(str(py.relative_to(REPO)))
    return found


@pytest.mark.parametrize("env_file", ["glocal.yaml", "glocal-cuda.yaml"])
def test_env_covers_third_party_imports(env_file: str):
    packages = _env_packages(REPO / "workflow/envs" / env_file)
    assert {"python", "pytorch", "numpy", "scipy", "pip"} <= packages
    if not any((REPO / d).is_dir() for d in SCANNED_DIRS):
        reason = f"none of {SCANNED_DIRS} exists yet"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    missing = {}
    for module, files in third_party_imports().items():
        if module in BENCHMARK_ONLY and all(f.startswith("benchmarks/") for f in files):
            continue
        pkg = IMPORT_TO_PACKAGE.get(module, module).lower().replace("_", "-")
        if not (PACKAGE_ALIASES.get(pkg, {pkg}) & packages):
            missing[module] = sorted(files)
    assert not missing, f"imports without a package in workflow/envs/{env_file}: {missing}"


def test_cuda_env_matches_cpu_env():
    """The two envs pin the same packages; only the PyTorch build differs."""

    def pins(name):
        env = yaml.safe_load((REPO / "workflow/envs" / name).read_text())
        return {d for d in env["dependencies"] if isinstance(d, str) and not d.startswith(("pytorch", "cuda-version"))}

    assert pins("glocal.yaml") == pins("glocal-cuda.yaml")


# ------------------------------------------------------------------------------------------
# end to end with the real glocal command line (smoke config)
# ------------------------------------------------------------------------------------------
def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def check_smoke_numbers(wf: Path, scratch: Path) -> None:
    """Values of a finished smoke run against the library called directly with the same resolved config
    (CPU, float64, one thread: the same numbers to the last bit)."""
    import json

    import numpy as np
    import torch

    from glocal.cli import main as glocal_main
    from glocal.config import load_config
    from glocal.hypergrad import reverse_hypergradient, unroll
    from glocal.tasks import build_task
    from theory_checks import properties as pr
    from theory_checks.quadratic import make_problem

    resolved = wf / "results/config.resolved.yaml"
    cfg = load_config(str(resolved))
    assert cfg["dtype"] == "float64" and cfg["device"] == "cpu"

    # training: a direct `glocal train` of the same config and seed gives the same summary numbers and metrics
    for task, strategy in (("lr", "glocal"), ("reweight", "global")):
        run = wf / f"results/runs/{task}/{strategy}/seed0"
        out = scratch / task / strategy
        assert glocal_main(["train", "--config", str(resolved), "--task", task, "--strategy", strategy,
                            "--seed", "0", "--out", str(out), "--no-progress"]) == 0
        piped, direct = (json.loads((d / "summary.json").read_text()) for d in (run, out))
        assert piped["final"] == direct["final"], (task, strategy, piped["final"], direct["final"])
        assert piped["hyperparameters"] == direct["hyperparameters"]
        assert piped["n_hyper_updates"] == direct["n_hyper_updates"] > 0
        assert piped.get("auc") == direct.get("auc")
        strip = [{k: v for k, v in r.items() if k != "wall_time"} for r in _rows(run / "metrics.csv")]
        assert strip == [{k: v for k, v in r.items() if k != "wall_time"} for r in _rows(out / "metrics.csv")]

    # extraction: the recorded exact trajectory's last row is the reverse-mode hypergradient of the same window
    for task in ("lr", "reweight"):
        ext = wf / f"results/extract/{task}"
        meta = json.loads((ext / "meta.json").read_text())
        dtype = getattr(torch, meta["dtype"])
        tk = build_task(cfg, task, meta["seed"], torch.device("cpu"), dtype)
        tk.batch_size = None
        s = meta["window_starts"][-1]
        phi = tk.init_phi()
        state = unroll(tk.dynamics.step, tk.init_state(), phi, tk.batches(0, s))
        steps = cfg["extract"]["steps"]
        ref = reverse_hypergradient(tk.dynamics.step, tk.val_fn(), state, phi, tk.batches(s, s + steps)).h
        h = torch.as_tensor(np.load(ext / "trajectory.npz")[f"h__full__s{s}"][0, -1])
        rel = float((h - ref).norm() / ref.norm())
        assert rel <= (1e-12 if dtype == torch.float64 else 1e-5), (task, rel)

    # theory: no check failed; an engine check and the complexity counts equal direct computations
    th = wf / "results/theory"
    summary = json.loads((th / "summary.json").read_text())
    assert summary["failed"] == 0, summary["by_check"]
    rows = _rows(th / "checks.csv")
    fd_row = next(r for r in rows if r["check"] == "engines_fd")
    inp = json.loads(fd_row["inputs"])
    P = make_problem(inp["kind"], p=inp["p"], q_or_n=inp["q"], kappa=inp["kappa"],
                     alpha_fraction=inp["alpha_fraction"], seed=inp["seed"])
    direct = {r.check: r.measured for r in pr.check_engines(P, inp["T"], fd_eps=inp["fd_eps"])}
    assert float(fd_row["measured"]) == direct["engines_fd"]
    fwd_row = next(r for r in rows if r["check"] == "engines_forward" and r["case"] == fd_row["case"])
    assert float(fwd_row["measured"]) == direct["engines_forward"]
    comp = [r for r in _rows(th / "complexity.csv") if r["check"] == "complexity_forward_trajectory_q" and r["operations"]]
    sizes, counts = [int(r["size"]) for r in comp], [int(r["operations"]) for r in comp]
    assert counts == pr.count_forward_q(sizes, tau=min(cfg["theory"]["complexity_sizes"]))


def test_smoke_end_to_end(tmp_path: Path):
    """The smoke config runs end to end; one test (not a fixture shared by several) so that
    pytest-xdist never runs the DAG twice."""
    require_glocal()
    wf = copy_workflow(tmp_path / "wf")
    proc = snakemake(wf, "--cores", "2", "--configfile", SMOKE, timeout=SMOKE_TIMEOUT)
    assert proc.returncode == 0, output_of(proc)[-6000:]

    # every expected figure (png + pdf), table and the results README
    outputs = expected_outputs(wf)
    assert any(p.startswith("results/figures/") for p in outputs)
    for rel in outputs:
        path = wf / rel
        # a run that tunes nothing (fixed, random, tpe) has an empty hypergradient log
        may_be_empty = rel.endswith("hypergrads.jsonl") and any(f"/{s}/" in rel for s in ("fixed", "random", "tpe"))
        assert path.is_file() and (may_be_empty or path.stat().st_size > 0), rel
        if rel.endswith(".png"):
            assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", rel
        if rel.endswith(".pdf"):
            assert path.read_bytes()[:5] == b"%PDF-", rel
    with open(wf / "results/tables/summary.csv") as f:
        assert list(csv.DictReader(f)), "empty summary table"

    # the numbers, not only the files: the pipeline's results equal direct calls of the library
    check_smoke_numbers(wf, tmp_path / "direct")

    # the HTML report shows the figures with their captions
    proc = snakemake(wf, "--configfile", SMOKE, "--report", "results/report.html")
    assert proc.returncode == 0, output_of(proc)
    html = (wf / "results/report.html").read_text(errors="replace")
    for caption in ("Learned per-example weights", "its Jordan-form bound", "Equal budgets"):  # figures, a table
        assert caption in html

    # a second invocation has nothing to do
    proc = snakemake(wf, "-n", "--configfile", SMOKE)
    assert proc.returncode == 0, output_of(proc)
    assert "Nothing to be done" in output_of(proc), output_of(proc)

    # deleting one run's output rebuilds that run and its dependents only
    victim = wf / "results/runs/lr/glocal/seed0/summary.json"
    backup = tmp_path / "summary.json"
    shutil.copy2(victim, backup)
    victim.unlink()
    proc = snakemake(wf, "-n", "--configfile", SMOKE)
    assert proc.returncode == 0, output_of(proc)
    assert job_stats(output_of(proc)) == {"train": 1, "runs_index": 1, "figures": 1, "tables": 1, "all": 1}
    assert "task=lr, strategy=glocal, seed=0" in output_of(proc)
    shutil.copy2(backup, victim)
    assert "Nothing to be done" in output_of(snakemake(wf, "-n", "--configfile", SMOKE))

    # a deleted figure or table is redone by its rule alone
    for rel in (sorted(p for p in outputs if p.endswith(".pdf"))[-1], "results/tables/paired.html"):
        victim, backup = wf / rel, tmp_path / Path(rel).name
        shutil.copy2(victim, backup)
        victim.unlink()
        proc = snakemake(wf, "-n", "--configfile", SMOKE)
        assert proc.returncode == 0, output_of(proc)
        rule = "figures" if rel.endswith(".pdf") else "tables"
        assert job_stats(output_of(proc)) == {rule: 1, "all": 1}, (rel, output_of(proc))
        shutil.copy2(backup, victim)
    assert "Nothing to be done" in output_of(snakemake(wf, "-n", "--configfile", SMOKE))

    # changing one strategy's option reruns only the runs that depend on it (params trigger):
    # glocal's window is also local's (the paper's local baseline uses glocal's window)
    (wf / "window.yaml").write_text("strategy_options:\n  glocal: {window: 7}\n")
    proc = snakemake(wf, "-n", "--configfile", SMOKE, "window.yaml")
    out = output_of(proc)
    assert proc.returncode == 0, out
    # lr and reweight: glocal and local; lr_gru: glocal; the sensitivity starts run glocal (one job per start);
    # the HPO ablation's record_stride axis runs glocal with the task's window;
    # the two NQM tasks: their answer keys and bias curves do not depend on the window
    assert job_stats(out) == {"train": 3, "train_weights": 2, "train_nqm": 4, "runs_index": 5, "sensitivity": 2,
                              "ablation_hpo": 1, "figures": 1,
                              "tables": 1, "all": 1}
    assert set(re.findall(r"strategy=(\w+)", out)) == {"glocal", "local"}
    # (the dry run above wrote another results/config/<hash>.yaml; the smoke config's is unchanged)
    proc = snakemake(wf, "-n", "--configfile", SMOKE)
    assert "Nothing to be done" in output_of(proc), output_of(proc)
