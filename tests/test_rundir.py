"""The run directory (glocal/rundir.py): lock, file modes, stale temporary files, checkpoint safety,
clear errors on unwritable or full disks, and the module structure (no import circle)."""

from __future__ import annotations

import ast
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from glocal.cli import main
from glocal.config import load_config
from glocal.train import StopRequested, run_experiment

REPO = Path(__file__).resolve().parents[1]
TINY = {
    "seeds": [0],
    "data": {"n_train": 120},
    "tasks": {
        "lr": {"steps": 12, "batch_size": 40, "model": {"kind": "mlp", "hidden": [8]}},
        "reweight": {"steps": 12, "batch_size": None},
    },
    "strategy_options": {
        "local": {"window": 2, "checkpoint_every": 1},
        "glocal": {"window": 4, "delay": 1},
        "random": {"n_trials": 2},
        "tpe": {"n_trials": 2},
    },
}


def _cfg_file(tmp_path: Path, cfg: dict = TINY) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _train(tmp_path: Path, out: Path, *extra: str, task: str = "lr", strategy: str = "local") -> int:
    return main(["train", "--config", str(_cfg_file(tmp_path)), "--task", task, "--strategy", strategy,
                 "--seed", "0", "--out", str(out), "--no-progress", *extra])


# ------------------------------------------------------------------------------ the lock
@pytest.mark.parametrize("strategy", ["local", "tpe"])
def test_second_process_refuses_naming_the_holder(tmp_path: Path, capsys, strategy: str) -> None:
    """Two runs into one --out: the second refuses (exit 2), naming pid, host, task, strategy, seed of the first."""
    from glocal.rundir import RunDirectory

    out = tmp_path / "run"
    with RunDirectory(out, task="reweight", strategy="glocal", seed=3):  # another run holds it
        assert _train(tmp_path, out, strategy=strategy) == 2
        err = capsys.readouterr().err
        for needle in (str(out), f"pid {os.getpid()}", socket.gethostname(), "task reweight", "strategy glocal",
                       "seed 3", "choose another --out"):
            assert needle in err, (needle, err)
        assert "[Errno" not in err and "Traceback" not in err
        assert not (out / "config.json").exists() and not (out / "study.db").exists()
    # once the holder is gone, the run goes through and leaves no lock behind
    assert _train(tmp_path, out, strategy=strategy) == 0
    assert (out / "summary.json").is_file() and not (out / RunDirectory.LOCK).exists()


def test_stale_lock_of_a_dead_process_is_taken_over(tmp_path: Path, capsys) -> None:
    from glocal.rundir import RunDirectory, RunLockedError

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    info = {"pid": dead.pid, "host": socket.gethostname(), "task": "lr", "strategy": "local", "seed": 0}
    (out / RunDirectory.LOCK).write_text(json.dumps(info))
    with RunDirectory(out, task="lr", strategy="fixed", seed=1) as rd:
        assert rd.locked
        held = json.loads((out / RunDirectory.LOCK).read_text())
        assert held["pid"] == os.getpid() and held["strategy"] == "fixed"
        with pytest.raises(RunLockedError, match=rf"pid {os.getpid()}.*strategy fixed, seed 1"):
            RunDirectory(out, task="lr", strategy="local", seed=0).open()
    assert f"pid {dead.pid}" in capsys.readouterr().err and "no longer running" in rd.notes[0]


# ------------------------------------------------------------------------------ files
@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_output_files_respect_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        assert _train(tmp_path, tmp_path / "run", task="reweight") == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "run").iterdir() if p.is_file()]
    assert {p.name for p in files} >= {"config.json", "metrics.csv", "summary.json", "weights.csv"}
    for p in files:
        assert stat.S_IMODE(p.stat().st_mode) == 0o666 & ~umask, p


def test_stale_temp_files_removed_on_next_start(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    (out / "trials" / "trial_000").mkdir(parents=True)
    stale = [out / ".summary.json.k2j3h4.tmp", out / "trials" / "trial_000" / ".metrics.csv.x1y2z3.tmp"]
    for p in stale:
        p.write_text("half a file")
    keep = out / "notes.tmp"  # not one of ours: not hidden
    keep.write_text("user file")
    assert _train(tmp_path, out) == 0
    assert not any(p.exists() for p in stale) and keep.exists()
    assert "interrupted write" in capsys.readouterr().err


def test_write_summary_takes_extra_sections(tmp_path: Path) -> None:
    from glocal.rundir import RunDirectory

    with RunDirectory(tmp_path / "run", task="lr", strategy="local", seed=0) as rd:
        written = rd.write_summary({"task": "lr"}, fit_health={"collapsed": 2})
        with pytest.raises(ValueError, match="task"):
            rd.write_summary({"task": "lr"}, task="again")
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == written == {
        "task": "lr", "fit_health": {"collapsed": 2}}


def _unshare_available() -> str | None:
    if shutil.which("unshare") is None:
        return "the unshare command is not installed"
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True, text=True)
    return None if proc.returncode == 0 else f"user and mount namespaces are unavailable: {proc.stderr.strip()}"


_FULL_AND_READ_ONLY = """
import contextlib, io, json, sys
from glocal.cli import main
cfg, results = sys.argv[1], {}
for kind, out in (("read-only", sys.argv[2]), ("full", sys.argv[3])):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["train", "--config", cfg, "--task", "lr", "--strategy", "fixed", "--out", out, "--no-progress"])
    results[kind] = [rc, err.getvalue()]
print(json.dumps(results))
"""


def test_unwritable_or_full_disk_names_the_path(tmp_path: Path) -> None:
    """A real read-only and a real full file system (tmpfs in a private mount namespace): exit 2 and
    one line naming the path and the remedy, no traceback."""
    reason = _unshare_available()
    if reason:
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    ro, full = tmp_path / "ro", tmp_path / "full"
    ro.mkdir(), full.mkdir()
    outs = {"read-only": ro / "run", "full": full / "run"}
    # 4 KiB: the lock file fits, config.json does not
    cmd = (f"mount -t tmpfs -o ro,size=64k glocal-ro {ro} && mount -t tmpfs -o size=4k glocal-full {full} && "
           f'exec {sys.executable} -c "$0" "$@"')
    proc = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", cmd, _FULL_AND_READ_ONLY,
                           str(_cfg_file(tmp_path)), str(outs["read-only"]), str(outs["full"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    for kind, needle in (("read-only", "read-only file system"), ("full", "the disk holding it is full")):
        rc, err = results[kind]
        lines = err.strip().splitlines()
        assert rc == 2 and len(lines) == 1 and "Traceback" not in err, (kind, err)
        assert str(outs[kind]) in lines[0] and needle in lines[0] and "[Errno" not in lines[0], (kind, lines[0])


# ------------------------------------------------------------------------------ checkpoints
def _interrupted(tmp_path: Path, out: Path) -> dict:
    """A local run stopped (as a kill would) right after its first checkpoint; returns the checkpoint."""
    with pytest.raises(StopRequested):
        run_experiment(load_config(None, TINY), "lr", "local", 0, out, progress=False, stop_after=1)
    return torch.load(out / "checkpoint.pt", weights_only=True)


class _Evil:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_unsafe_checkpoint_refused_without_torchs_advice(tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    ck = _interrupted(tmp_path, out)
    marker = tmp_path / "pwned"
    torch.save({**ck, "evil": _Evil(marker)}, out / "checkpoint.pt")
    assert _train(tmp_path, out) == 2
    err = capsys.readouterr().err
    assert str(out / "checkpoint.pt") in err and "refused as unsafe" in err and "system" in err
    assert "weights_only" not in err and "trusted source" not in err, err
    assert not marker.exists() and (out / "checkpoint.pt").exists()
    from glocal.rundir import read_checkpoint

    with pytest.raises(ValueError, match="refused as unsafe") as ei:
        read_checkpoint(out / "checkpoint.pt")
    assert ei.value.__cause__ is None and ei.value.__suppress_context__  # torch's advice not chained either


@pytest.mark.parametrize("damage", ["truncated", "garbage", "wrong_size"])
def test_damaged_checkpoint_moved_aside_and_run_starts_afresh(tmp_path: Path, capsys, damage: str) -> None:
    out = tmp_path / "run"
    ck = _interrupted(tmp_path, out)
    path = out / "checkpoint.pt"
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "garbage":
        path.write_bytes(b"\x00not a checkpoint" * 64)
    else:  # the right fingerprint, a state of the wrong size
        torch.save({**ck, "state": torch.zeros(ck["state"].numel() + 3)}, path)
    damaged = path.read_bytes()
    capsys.readouterr()
    assert _train(tmp_path, out) == 0
    err = capsys.readouterr().err
    aside = list(out.glob("checkpoint.pt.corrupt-*"))
    assert len(aside) == 1 and aside[0].read_bytes() == damaged  # kept, untouched
    assert "moved it to" in err and "starting the run afresh" in err and str(path) in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["resumed"] is False and not path.exists()
    fresh = run_experiment(load_config(None, TINY), "lr", "local", 0, tmp_path / "fresh", progress=False)
    assert summary["final"] == fresh["final"]


# ------------------------------------------------------------------------------ structure
def test_no_private_imports_between_modules_and_no_circle() -> None:
    """search.py used five private helpers of train.py while train.py imported search.py."""
    offenders = []
    for py in sorted((REPO / "glocal").glob("*.py")):
        tree = ast.parse(py.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("glocal"):
                offenders += [f"{py.name}: {node.module}.{a.name}" for a in node.names
                              if a.name.startswith("_") and not a.name.endswith("__")]
                if py.name == "search.py" and node.module == "glocal.train":
                    offenders.append("search.py imports glocal.train")
    assert not offenders, offenders
