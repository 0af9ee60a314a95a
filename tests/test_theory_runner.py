"""``glocal theory`` at the small scale: every output file, and checks.csv with a pass column."""

from __future__ import annotations

import csv
import json

from glocal.cli import main


def test_theory_runner_small(tmp_path):
    out = tmp_path / "theory"
    assert main(["theory", "--out", str(out), "--scale", "small"]) == 0
    for name in ["checks.csv", "checks.json", "error_vs_tau.csv", "bound_vs_T.csv", "spectrum.csv", "summary.json",
                 "theory_error_vs_tau.png", "theory_error_vs_tau.pdf", "theory_bound.png", "theory_bound.pdf",
                 "theory_spectrum.png", "theory_spectrum.pdf"]:
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    with open(out / "checks.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and set(rows[0]) == {"check", "case", "inputs", "measured", "bound", "passed"}
    assert {r["passed"] for r in rows} <= {"True", "False"}
    checks = {r["check"] for r in rows}
    assert {"engines_forward", "floor", "beats_local", "spectrum", "bound", "noise", "rank_choice"} <= checks
    json.loads(rows[0]["inputs"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_checks"] == len(rows) and summary["passed"] + summary["failed"] == len(rows)
    assert summary["max_error_to_bound_ratio"] is not None


def test_theory_runner_reads_config(tmp_path):
    from theory_checks.runner import resolve_settings

    cfg = tmp_path / "c.yaml"
    cfg.write_text("theory:\n  n_cases: 2\n  steps: 30\n")
    s = resolve_settings(str(cfg), None)
    assert s["n_cases"] == 2 and s["steps"] == 30 and s["koopman_dims"] == [1, 2]
