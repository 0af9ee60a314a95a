"""Tests of the benchmark harness (no timing asserts) and of the peers' agreement with glocal."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from benchmarks.peers import PEERS, peer_status
from benchmarks.run import COST_COLUMNS, make_task
from glocal.hypergrad import reverse_hypergradient


def _reference(task, T):
    s0, phi = task.init_state(), task.init_phi()
    # move phi off its initial value so every coordinate matters
    phi = phi + 0.1 * torch.arange(phi.numel(), dtype=phi.dtype)
    batches = task.batches(0, T)
    h = reverse_hypergradient(task.dynamics.step, task.val_fn(), s0, phi, batches).h
    return s0, phi, batches, h


@pytest.mark.parametrize("peer", PEERS)
# float64: engine against engine, round-off level (measured ~3e-16); float32: 8 steps of float32 round-off
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-4)])
def test_peer_agrees_with_reverse_hypergradient(peer, dtype, tol):
    status = peer_status()[peer]
    if not status["available"]:
        print(f"{peer} not available: {status['reason']}")
        pytest.skip(f"{peer} not installed or does not load: {status['reason']} "
                    f"(pip install -e '.[bench]')")
    from benchmarks import peers

    task = make_task("lr_wd", torch.device("cpu"), dtype)
    s0, phi, batches, h = _reference(task, 8)
    fn = getattr(peers, f"{peer}_hypergradient")
    hp = fn(task.dynamics, s0, phi, batches, task.data.x_val, task.data.y_val)
    assert hp.shape == h.shape == (4,)
    assert torch.all(h != 0)
    rel = float(torch.linalg.norm(hp - h) / torch.linalg.norm(h))
    assert rel < tol, f"{peer}: relative error {rel:.3e} against reverse_hypergradient"


def test_peer_disagreement_would_be_caught():
    """The agreement check compares numbers: a wrong phi gives a clearly different hypergradient."""
    status = peer_status()["higher"]
    if not status["available"]:
        pytest.skip(f"higher not available: {status['reason']}")
    from benchmarks.peers import higher_hypergradient

    task = make_task("lr_wd", torch.device("cpu"), torch.float64)
    s0, phi, batches, h = _reference(task, 8)
    wrong = higher_hypergradient(task.dynamics, s0, phi + 0.5, batches, task.data.x_val, task.data.y_val)
    assert float(torch.linalg.norm(wrong - h) / torch.linalg.norm(h)) > 1e-3


@pytest.mark.parametrize("problem,q", [("lr_wd", None), ("weights", 30)])
def test_reverse_graph_equals_default(problem, q):
    task = make_task(problem, torch.device("cpu"), torch.float64, q=q)
    s0, phi, batches, h = _reference(task, 7)
    g = reverse_hypergradient(task.dynamics.step, task.val_fn(), s0, phi, batches, checkpoint="graph")
    d = reverse_hypergradient(task.dynamics.step, task.val_fn(), s0, phi, batches)
    assert float((g.h - h).norm() / h.norm()) <= 1e-12
    assert float((g.final_state - d.final_state).norm() / d.final_state.norm()) <= 1e-12
    assert g.val_loss == pytest.approx(d.val_loss, rel=1e-12)


def test_glocal_bench_small_writes_json_and_csv(tmp_path, capsys):
    from glocal.cli import main

    out = tmp_path / "bench"
    assert main(["bench", "--scale", "small", "--device", "cpu", "--out", str(out)]) == 0
    res = json.loads((out / "bench.json").read_text())
    for key in ("hypergradient", "q_sweep", "updates", "hpo", "targets", "versions", "peers", "machine", "date"):
        assert key in res, key
    row = res["hypergradient"][0]
    for name in ("floor", "reverse", "reverse_graph", "forward"):
        assert row["methods"][name]["median_s"] > 0
        assert "ratio_to_floor" in row["methods"][name]
    assert row["methods"]["floor"]["peak_memory"]["peak_mb"] is not None
    for peer, st in res["peers"].items():
        entry = row["methods"][peer]
        if st["available"]:
            assert entry["agrees"] and entry["rel_err_vs_reverse"] < 1e-3
        else:
            assert entry["skipped"]
    with open(out / "cost.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == COST_COLUMNS
    assert {r["method"] for r in rows} == {"train", "global", "local", "glocal"}
    assert {r["variable"] for r in rows} == {"T", "tau", "q"}
    assert all(float(r["seconds_per_run"]) > 0 for r in rows)
    assert {r["engine"] for r in rows} <= {"forward", "reverse", "none"}
    assert "wrote" in capsys.readouterr().out
