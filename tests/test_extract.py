"""Tests of ``glocal extract`` and ``glocal analyze`` on tiny configurations."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from glocal.analysis import ERROR_COLUMNS
from glocal.cli import main
from glocal.config import load_config
from glocal.extract import (
    ESTIMATE_COLUMNS,
    NOISE_COLUMNS,
    SPECTRA_COLUMNS,
    extract_engine,
    modal_tail_bound,
    moving_average,
    run_extract,
)
from glocal.hypergrad import reverse_hypergradient, unroll
from glocal.tasks import build_task

T = 24
TINY = {
    "data": {"n_train": 150},
    "tasks": {
        "lr": {"steps": 24, "batch_size": 32, "model": {"kind": "mlp", "hidden": [8]}},
        "reweight": {"steps": 24},
    },
    "extract": {"steps": T, "window_starts": [0.0, 0.5], "taus": [6, 12, T], "batch_sizes": [None, 32],
                "n_batch_orders": 2, "dtype": "float64",
                "estimators": ["limit", "horizon", "robust", "auto", "local"]},
}


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _header(path):
    with open(path, newline="") as fh:
        return next(csv.reader(fh))


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    cfg = load_config(None, TINY)
    root = tmp_path_factory.mktemp("extract")
    metas = {t: run_extract(cfg, t, root / t) for t in ("lr", "reweight")}
    return cfg, root, metas


def test_outputs_and_columns(extracted):
    cfg, root, metas = extracted
    assert metas["lr"]["engine"] == "forward"
    assert metas["reweight"]["engine"] == "reverse"
    for t in ("lr", "reweight"):
        d = root / t
        assert _header(d / "estimates.csv") == ESTIMATE_COLUMNS
        assert _header(d / "spectra.csv") == SPECTRA_COLUMNS
        assert _header(d / "noise_floor.csv") == NOISE_COLUMNS
        meta = json.loads((d / "meta.json").read_text())
        for k in ("config", "task", "seed", "engine", "timings", "versions", "device", "dtype"):
            assert k in meta
        assert meta["dtype"] == "float64"
        rows = _rows(d / "estimates.csv")
        ests = {r["estimator"] for r in rows}
        assert {"limit", "horizon", "local", "limit+smoothed", "limit+averaged", "local+averaged"} <= ests
        assert {r["batch_size"] for r in rows} == {"full", "32"}
        assert all(np.isfinite(float(r["rel_error"])) for r in rows)
        z = np.load(d / "trajectory.npz")
        for s in meta["window_starts"]:
            assert z[f"h__full__s{s}"].shape[0] == 1
            assert z[f"h__bs32__s{s}"].shape[0] == 2
            assert z[f"steps__full__s{s}"][-1] == T
            assert z[f"h__full__s{s}"].shape[2] == meta["q"]
        assert len(_rows(d / "noise_floor.csv")) == len(meta["window_starts"])


def test_robust_and_auto_rows(extracted):
    """robust and auto rows carry their shrinkage, rate and choice; the rank-only and PyDMD variants skip robust."""
    _, root, _ = extracted
    for t in ("lr", "reweight"):
        rows = _rows(root / t / "estimates.csv")
        ests = {r["estimator"] for r in rows}
        assert {"robust", "auto", "robust+smoothed", "robust+averaged", "auto+truncated"} <= ests
        assert not any(e.startswith("robust+truncated") or e.startswith(("robust+pydmd", "auto+pydmd")) for e in ests)
        for r in rows:
            if r["estimator"] in ("robust", "auto"):
                assert 0.0 <= float(r["kappa"]) <= 1.0 and 0.0 < float(r["rate"]) < 1.0
                assert r["choice"] in (("horizon", "robust") if r["estimator"] == "auto" else ("",))
            elif r["estimator"] in ("limit", "horizon", "local"):
                assert r["kappa"] == r["rate"] == r["choice"] == ""


def test_local_at_tau_T_is_exact(extracted):
    _, root, _ = extracted
    for t in ("lr", "reweight"):
        rows = [r for r in _rows(root / t / "estimates.csv")
                if r["estimator"] == "local" and int(r["tau"]) == T and r["setting"] == "full"]
        assert rows
        for r in rows:
            assert float(r["rel_error"]) == 0.0


@pytest.mark.parametrize("task", ["lr", "reweight"])
def test_last_row_matches_reverse(extracted, task):
    cfg, root, meta = extracted[0], extracted[1], extracted[2][task]
    tk = build_task(cfg, task, meta["seed"], torch.device("cpu"), torch.float64)
    tk.batch_size = None
    s = meta["window_starts"][-1]
    phi = tk.init_phi()
    state = unroll(tk.dynamics.step, tk.init_state(), phi, tk.batches(0, s))
    ref = reverse_hypergradient(tk.dynamics.step, tk.val_fn(), state, phi, tk.batches(s, s + T)).h
    h = torch.as_tensor(np.load(root / task / "trajectory.npz")[f"h__full__s{s}"][0, -1])
    # the extraction's engine (forward for lr, reverse window for reweight) against reverse mode, float64
    assert float((h - ref).norm() / ref.norm()) <= 1e-12


def test_glocal_beats_local_full_batch_reweight(extracted):
    """docs/design.md section 6: on full-batch logistic-regression reweighting glocal is closer to h_T than local."""
    _, root, _ = extracted
    rows = [r for r in _rows(root / "reweight" / "estimates.csv") if r["setting"] == "full" and int(r["tau"]) == 12]
    err = {(int(r["window_start"]), r["estimator"]): float(r["rel_error"]) for r in rows}
    for s in {k[0] for k in err}:
        assert err[(s, "horizon")] < 0.5 * err[(s, "local")], err
        assert min(err[(s, "limit")], err[(s, "horizon")]) < err[(s, "local")], err


def test_analyze_table(extracted, tmp_path):
    _, root, _ = extracted
    out = tmp_path / "an"
    assert main(["analyze", "--extract", str(root / "lr"), str(root / "reweight"), "--out", str(out)]) == 0
    assert _header(out / "error_vs_tau.csv") == ERROR_COLUMNS
    md = (out / "summary.md").read_text()
    assert "## Task `lr`" in md and "## Task `reweight`" in md
    assert "| tau |" in md and "beats local" in md
    s = json.loads((out / "summary.json").read_text())
    assert set(s["tasks"]) == {"lr", "reweight"}
    rows = _rows(out / "error_vs_tau.csv")
    loc = [r for r in rows if r["estimator"] == "local"]
    assert all(float(r["ratio_to_local"]) == 1.0 for r in loc if float(r["rel_error"]) > 0)


def test_bad_task_exits_nonzero(tmp_path, capsys):
    assert main(["extract", "--task", "nope", "--out", str(tmp_path / "x")]) == 2
    assert "--task" in capsys.readouterr().err
    assert main(["analyze", "--extract", str(tmp_path / "missing"), "--out", str(tmp_path / "y")]) == 2


def test_bad_config_key_names_it(tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("extract: {stepz: 3}\n")
    assert main(["extract", "--config", str(cfg), "--task", "lr", "--out", str(tmp_path / "x")]) == 2
    assert "extract" in capsys.readouterr().err


def test_helpers():
    assert extract_engine("auto", 5, 300, list(range(1, 101)) + [300]) == "forward"
    assert extract_engine("auto", 1000, 300, list(range(1, 101)) + [300]) == "reverse"
    x = torch.arange(10.0)[:, None].repeat(1, 2)
    assert torch.allclose(moving_average(x, 3)[:, 0], torch.arange(1.0, 9.0))
    # Exactly modal trajectory: h_t = 1 + 0.5^t (scalar); limit 1, tail = 0.5^(t_last + n).
    t = torch.arange(1, 21, dtype=torch.float64)
    traj = (1 + 0.5**t)[:, None]
    b = modal_tail_bound(traj, 5)
    assert b == pytest.approx(0.5 ** (20 + 5), rel=1e-6)


def test_analyze_counts_ties_within_the_margin(tmp_path):
    """An error ratio to local of 0.98-1.0 is a tie, not a win: the verdict uses TIE_MARGIN and says so."""
    from glocal.analysis import TIE_MARGIN, analyze, verdict

    d = tmp_path / "ex"
    d.mkdir()
    fields = ["task", "setting", "batch_size", "window_start", "tau", "estimator", "rel_error", "cosine", "bound",
              "fallback"]
    errors = {5: {"local": 1.0, "limit": 0.99}, 10: {"local": 1.0, "limit": 0.5}, 20: {"local": 1.0, "limit": 1.5}}
    with open(d / "estimates.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for tau, by_est in errors.items():
            for est, e in by_est.items():
                w.writerow({"task": "t", "setting": "full", "batch_size": "full", "window_start": 0, "tau": tau,
                            "estimator": est, "rel_error": e, "cosine": 1.0, "bound": "", "fallback": 0})
    s = analyze([d], tmp_path / "an")
    (item,) = s["tasks"]["t"]
    assert item["beats_local_at"] == [10] and item["ties_at"] == [5] and item["loses_at"] == [20]
    md = (tmp_path / "an" / "summary.md").read_text()
    assert "`limit` beats local at tau in {10}, ties at tau in {5} and loses at tau in {20}" in md
    assert f"{1 - TIE_MARGIN:g}" in md  # the margin is stated
    rows = {r["tau"]: r for r in _rows(tmp_path / "an" / "error_vs_tau.csv") if r["estimator"] == "limit"}
    assert (rows["5"]["beats_local"], rows["5"]["verdict"]) == ("0", "tie")
    assert verdict(0.99) == "tie" and verdict(0.9) == "better" and verdict(1.2) == "worse" and verdict(math.nan) == ""
