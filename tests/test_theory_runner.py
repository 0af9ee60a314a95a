"""``glocal theory``: every output file, checks.csv with a pass column, and zero failed checks at every scale
the pipeline and the docs use (``--scale small``, the smoke config, the default config's ``theory:``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from glocal.cli import main

REPO = Path(__file__).resolve().parents[1]
OUTPUTS = ["checks.csv", "checks.json", "error_vs_tau.csv", "bound_vs_T.csv", "spectrum.csv", "noise.csv",
           "complexity.csv", "summary.json", "theory_error_vs_tau.png", "theory_error_vs_tau.pdf", "theory_bound.png",
           "theory_bound.pdf", "theory_spectrum.png", "theory_spectrum.pdf"]
CHECKS = {"engines_forward", "engines_reverse", "engines_fd", "floor", "beats_local", "spectrum", "bound", "noise",
          "rank_choice", "complexity_forward_trajectory_tau", "complexity_forward_trajectory_q",
          "complexity_reverse_hypergradient_T"}


def _failed(rows: list[dict[str, str]]) -> list[str]:
    return [f"{r['check']} {r['case']}: measured {r['measured']} vs bound {r['bound']}" for r in rows
            if r["passed"] != "True"]


def test_theory_runner_small(tmp_path):
    """The quick profile: all outputs, every kind of check present, none failed; wall times are reported
    beside the (deterministic) operation counts of the complexity checks."""
    out = tmp_path / "theory"
    assert main(["theory", "--out", str(out), "--scale", "small"]) == 0
    for name in OUTPUTS:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / "checks.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"check", "case", "inputs", "measured", "bound", "passed"}
    assert {r["check"] for r in rows} == CHECKS
    json.loads(rows[0]["inputs"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_checks"] == len(rows) and summary["passed"] == len(rows)
    assert summary["failed"] == 0, _failed(rows)
    assert 0 < summary["max_error_to_bound_ratio"] <= 1
    with open(out / "complexity.csv") as f:
        comp = list(csv.DictReader(f))
    assert {r["check"] for r in comp} == {c for c in CHECKS if c.startswith("complexity_")}
    assert all(int(r["operations"]) > 0 for r in comp)
    timed = [r for r in comp if r["time_median_s"]]
    assert timed and all(float(r["time_min_s"]) <= float(r["time_median_s"]) <= float(r["time_max_s"])
                         for r in timed)
    assert len(summary["timing"]) == 3 and all(t["slope"] is not None for t in summary["timing"])


@pytest.mark.parametrize("config", ["configs/smoke.yaml", "config.yaml"])
def test_theory_runner_pipeline_configs_pass(tmp_path, config):
    """The `theory` rule's call (`glocal theory --config ...`) with the smoke and the default config's sizes:
    zero failed checks (wall-time sweeps skipped: they are reported, never checked)."""
    out = tmp_path / "theory"
    assert main(["theory", "--config", str(REPO / config), "--out", str(out), "--no-timing"]) == 0
    with open(out / "checks.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["check"] for r in rows} == CHECKS
    assert not _failed(rows), _failed(rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == 0 and summary["passed"] == len(rows) and summary["timing"] == []


def test_theory_runner_reads_config(tmp_path):
    from theory_checks.runner import resolve_settings

    cfg = tmp_path / "c.yaml"
    cfg.write_text("theory:\n  n_cases: 2\n  steps: 30\n")
    s = resolve_settings(str(cfg), None)
    assert s["n_cases"] == 2 and s["steps"] == 30 and s["koopman_dims"] == [1, 2]
