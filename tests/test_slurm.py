"""The smoke workflow through a real SLURM cluster (profiles/slurm).

Needs a running cluster with an idle node: on a Debian machine, as root,
`.ci/slurm-up.sh` brings up a single-node one. Skipped, with the reason printed, when
`sinfo` is missing, no node is idle, or the `glocal` command line is not there yet.
Checks that every job went through sbatch and that the results equal a local run's.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest


def _load_workflow_helpers():
    """tests/test_workflow.py's helpers, loaded by path (works with or without tests/__init__.py)."""
    spec = importlib.util.spec_from_file_location("_workflow_helpers", Path(__file__).with_name("test_workflow.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_wf = _load_workflow_helpers()
SMOKE, copy_workflow, glocal_missing_reason = _wf.SMOKE, _wf.copy_workflow, _wf.glocal_missing_reason
job_stats, output_of, snakemake = _wf.job_stats, _wf.output_of, _wf.snakemake

SLURM_TIMEOUT = 1500  # seconds; each job waits for scheduling and status polls
# table columns that measure the machine rather than the result
VOLATILE = re.compile(r"time|wall|memory|mem_|peak|seconds|duration|date|host", re.I)


def slurm_missing_reason() -> str | None:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "SLURM is not installed (no sinfo/sbatch); run .ci/slurm-up.sh as root"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo timed out (slurmctld not answering); run .ci/slurm-up.sh as root"
    states = proc.stdout.split()
    if proc.returncode != 0 or not any(s in ("idle", "mix") for s in states):
        return f"no idle SLURM node (sinfo: {proc.stdout.strip() or proc.stderr.strip()!r}); run .ci/slurm-up.sh as root"
    return None


@pytest.fixture
def requirements():
    for reason in (slurm_missing_reason(), glocal_missing_reason()):
        if reason:
            print(f"SKIP: {reason}")
            pytest.skip(reason)


def _finals(wf: Path) -> dict[str, dict]:
    out = {}
    for path in sorted((wf / "results/runs").glob("*/*/seed*/summary.json")):
        out[str(path.relative_to(wf))] = json.loads(path.read_text())["final"]
    return out


def _table(wf: Path) -> list[dict]:
    with open(wf / "results/tables/summary.csv") as f:
        return [{k: v for k, v in row.items() if not VOLATILE.search(k)} for row in csv.DictReader(f)]


def _close(a, b) -> bool:
    try:
        fa, fb = float(a), float(b)
    except (TypeError, ValueError):
        return a == b
    if math.isnan(fa) and math.isnan(fb):
        return True
    return math.isclose(fa, fb, rel_tol=1e-6, abs_tol=1e-9)


def test_smoke_on_slurm_matches_local(tmp_path: Path, requirements):
    local = copy_workflow(tmp_path / "local")
    cluster = copy_workflow(tmp_path / "slurm")

    proc = snakemake(local, "--cores", "2", "--configfile", SMOKE, timeout=SLURM_TIMEOUT)
    assert proc.returncode == 0, output_of(proc)[-6000:]

    # jobs that must go through sbatch: every job but the local rules (`all`, `runs_index`)
    dry = snakemake(cluster, "-n", "--configfile", SMOKE)
    assert dry.returncode == 0, output_of(dry)
    stats = job_stats(output_of(dry))
    local_rules = {"all", "runs_index"}
    n_remote = sum(n for rule, n in stats.items() if rule not in local_rules)

    proc = snakemake(
        cluster,
        "--profile", "profiles/slurm",
        "--configfile", SMOKE,
        "--slurm-no-account",
        "--slurm-status-command", "squeue",
        "--default-resources", "slurm_partition=debug",
        "--slurm-keep-successful-logs",
        "--slurm-init-seconds-before-status-checks", "5",
        "--seconds-between-status-checks", "5",
        "--jobs", "4",
        timeout=SLURM_TIMEOUT,
    )  # fmt: skip
    out = output_of(proc)
    assert proc.returncode == 0, out[-6000:]

    # every job was submitted with sbatch and has its SLURM log <jobid>.log
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+)", out)
    assert len(submitted) == n_remote, out[-6000:]
    logs = list((cluster / ".snakemake/slurm_logs").glob("rule_*/**/*.log"))
    log_ids = sorted(p.stem for p in logs if p.stem.isdigit())
    assert sorted(submitted) == log_ids
    assert {p.relative_to(cluster / ".snakemake/slurm_logs").parts[0] for p in logs} == {
        f"rule_{rule}" for rule in stats if rule not in local_rules
    }

    # same results as the local run
    finals_local, finals_cluster = _finals(local), _finals(cluster)
    assert finals_local and finals_local.keys() == finals_cluster.keys()
    for key, expected in finals_local.items():
        got = finals_cluster[key]
        assert expected.keys() == got.keys(), key
        for metric in expected:
            assert _close(expected[metric], got[metric]), (key, metric, expected[metric], got[metric])
    table_local, table_cluster = _table(local), _table(cluster)
    assert len(table_local) == len(table_cluster) > 0
    for row_l, row_c in zip(table_local, table_cluster):
        assert row_l.keys() == row_c.keys()
        for col in row_l:
            assert _close(row_l[col], row_c[col]), (col, row_l[col], row_c[col])
