"""Tests of the benchmark harness (no timing asserts) and of the peers' agreement with glocal."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from benchmarks.peers import PEERS, peer_status
from benchmarks.run import COST_COLUMNS, interleaved, make_task, paired_ratio, summarize
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
                    f"(install the bench extra: see the README's set-up)")
    from benchmarks import peers

    task = make_task("lr_wd", torch.device("cpu"), dtype)
    s0, phi, batches, h = _reference(task, 8)
    fn = getattr(peers, f"{peer}_hypergradient")
    hp = fn(task.dynamics, s0, phi, batches, task.data.x_val, task.data.y_val)
    assert hp.shape == h.shape == (4,)
    assert torch.all(h != 0)
    rel = float(torch.linalg.norm(hp - h) / torch.linalg.norm(h))
    assert rel < tol, f"{peer}: relative error {rel:.3e} against reverse_hypergradient"


def test_peers_agree_on_the_compute_bound_cnn():
    """The compute-bound problem (CNN with GroupNorm, five layer groups) gives the peers and glocal
    the same hypergradient in float64."""
    status = peer_status()
    missing = [p for p in PEERS if not status[p]["available"]]
    if missing:
        pytest.skip(f"{missing} not available (install the bench extra: see the README's set-up)")
    from benchmarks import peers

    task = make_task("cnn", torch.device("cpu"), torch.float64)
    assert task.hyper.q == 6 and task.batch_size == 256
    s0, phi, batches, h = _reference(task, 3)
    for peer in PEERS:
        hp = getattr(peers, f"{peer}_hypergradient")(task.dynamics, s0, phi, batches, task.data.x_val, task.data.y_val)
        rel = float(torch.linalg.norm(hp - h) / torch.linalg.norm(h))
        assert rel < 1e-8, f"{peer}: relative error {rel:.3e}"


def test_interleaved_rounds_rotate_and_ratios_are_paired():
    """Each round calls every method once, in a rotated order; ratios are taken within a round."""
    calls = []
    fns = {name: (lambda n=name: calls.append(n)) for name in ("floor", "a", "b")}
    times = interleaved(fns, 3, torch.device("cpu"), "cpu", warmup=1)
    assert calls[:3] == ["floor", "a", "b"]  # warm-up
    assert calls[3:] == ["floor", "a", "b", "a", "b", "floor", "b", "floor", "a"]
    assert {k: len(v) for k, v in times.items()} == {"floor": 3, "a": 3, "b": 3}
    # Synthetic times: a slow round slows every method alike; the paired ratio sees through it.
    times = {"floor": [1.0, 10.0, 1.0, 1.0], "a": [2.0, 20.0, 2.0, 2.0], "b": [3.0, 3.0, 3.0, 30.0]}
    s = summarize(times)
    assert s["a"]["ratio_to_floor"] == 2.0 and s["a"]["ratio_p25"] == 2.0 and s["a"]["ratio_p75"] == 2.0
    assert s["floor"]["median_s"] == 1.0 and s["b"]["median_s"] == 3.0
    assert paired_ratio(times, "a", "floor")["median"] == 2.0
    assert "ratio_to_floor" not in summarize(times, floor=None)["a"]


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
            assert row["ratios"][f"{peer}/reverse_graph"]["median"] > 0
        else:
            assert entry["skipped"]
    assert res["clock"] == "cpu"  # one torch thread on a CPU: the thread's CPU time
    assert len(row["methods"]["floor"]["times_s"]) == res["settings"]["repeats"]
    assert row["methods"]["forward"]["per_direction"] > 0
    hpo = res["hpo"][0]
    assert set(hpo["strategies"]) == {"fixed", "local", "global", "glocal/1"}
    assert hpo["ratios"]["1"]["glocal_over_local"]["median"] > 0
    targets = {t["target"] for t in res["targets"]}
    if res["peers"]["torchopt"]["available"]:
        assert "reverse (checkpoint='graph') >= 1.25x faster than torchopt" in targets
    assert "pure step (unroll) within 1.2x of torch.optim" in targets
    assert "Hypergradient over T steps, `lr_wd`" in (out / "bench.md").read_text()
    with open(out / "cost.csv") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        assert reader.fieldnames == COST_COLUMNS
    assert {r["method"] for r in rows} == {"train", "global", "local", "glocal"}
    assert {r["variable"] for r in rows} == {"T", "tau", "q"}
    assert all(float(r["seconds_per_run"]) > 0 for r in rows)
    assert {r["engine"] for r in rows} <= {"forward", "reverse", "none"}
    assert "wrote" in capsys.readouterr().out
