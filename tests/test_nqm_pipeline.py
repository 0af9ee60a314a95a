"""The noisy quadratic model through the pipeline: the task kind in the config and build_task, every strategy
through run_experiment with the answer key next to the run, the search space, the answer key and the
short-horizon-bias commands, and the extraction on both modes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from glocal.config import ConfigError, load_config
from glocal.hypergrad import reverse_hypergradient, unroll
from glocal.nqm import NQM_DEFAULTS, NQMTask, build_nqm_task
from glocal.nqm_runs import answer_key_document, read_answer_key, run_record, used_schedule
from glocal.tasks import build_task
from glocal.train import run_experiment

REPO = Path(__file__).resolve().parents[1]

TINY_NQM = {"kind": "nqm", "dim": 30, "steps": 24, "batch_size": 4.0, "optimizer": {"lr": 0.3, "momentum": 0.5},
            "answer_key": {"schedule_phases": 3}, "short_horizon_bias": {"taus": [1, 4, 24, 100]}}
TINY = {
    "device": "cpu", "dtype": "float64", "seeds": [0],
    "tasks": {"lr": {"enabled": False}, "reweight": {"enabled": False},
              "nqm": {**TINY_NQM, "mode": "expected"}, "nqm_s": {**TINY_NQM, "mode": "sampled"}},
    "strategy_variants": {"glocal_robust": {"strategy": "glocal", "options": {"estimator": "robust"}}},
    "strategy_options": {"glocal": {"window": 6}, "global": {"meta_iterations": 2}, "random": {"n_trials": 2},
                         "tpe": {"n_trials": 2}, "outer": {"lr": 0.2}},
}


@pytest.fixture(scope="module")
def cfg() -> dict:
    return load_config(None, TINY)


@pytest.fixture(scope="module")
def keys(cfg, tmp_path_factory) -> dict[str, Path]:
    """The answer key of each tiny task, written as the workflow's nqm_key rule does."""
    out = {}
    for task in ("nqm", "nqm_s"):
        path = tmp_path_factory.mktemp("key") / "answer_key.json"
        path.write_text(json.dumps(answer_key_document(cfg, task)))
        out[task] = path
    return out


# ------------------------------------------------------------------------------------ config and task
def test_schema_defaults_are_the_tasks_defaults():
    """The schema's nqm_task defaults equal glocal.nqm.NQM_DEFAULTS (one problem, whoever builds it)."""
    c = load_config(None, {"tasks": {"q": {"kind": "nqm"}}})["tasks"]["q"]
    for key, value in NQM_DEFAULTS.items():
        assert c[key] == value, key
    for copy in ("workflow/schemas/config.schema.yaml", "glocal/config.schema.yaml"):
        defs = yaml.safe_load((REPO / copy).read_text())["$defs"]
        assert "nqm" in defs["extra_task"]["properties"]["kind"]["enum"]


def test_build_task_dispatches_on_the_kind(cfg):
    t = build_task(cfg, "nqm_s", 3, torch.device("cpu"), torch.float64)
    assert isinstance(t, NQMTask) and t.name == "nqm_s" and t.kind == "nqm" and t.mode == "sampled"
    assert t.seed == 3 and t.steps == 24 and t.problem.dim == 30 and t.hyper.q == 2


@pytest.mark.parametrize("bad, needle", [
    ({"mode": "exact"}, "tasks.q.mode"),
    ({"tune": ["momentum"]}, "tasks.q.tune"),
    ({"dimension": 3}, "tasks.q"),
    ({"optimizer": {"beta": 0.9}}, "tasks.q.optimizer"),
    ({"answer_key": {"phases": 3}}, "tasks.q.answer_key"),
    ({"seeds": []}, "tasks.q.seeds"),
    ({"seeds": [0, 0]}, "tasks.q.seeds"),
])
def test_bad_nqm_config_names_the_key(bad, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        load_config(None, {"tasks": {"q": {"kind": "nqm", **bad}}})


def test_a_task_may_run_its_own_seeds():
    """tasks.<nqm task>.seeds replaces the top-level seeds for that task (null: those); the task built is the
    same problem whatever its seeds."""
    c = load_config(None, {"seeds": [0, 1, 2], "tasks": {"q": {"kind": "nqm", "seeds": [4]}, "r": {"kind": "nqm"}}})
    assert c["tasks"]["q"]["seeds"] == [4] and c["tasks"]["r"]["seeds"] is None
    a = build_task(c, "q", 4, torch.device("cpu"), torch.float64)
    b = build_task(c, "r", 4, torch.device("cpu"), torch.float64)
    assert a.answer_key().loss == b.answer_key().loss


def test_task_errors_name_the_task():
    with pytest.raises(ConfigError, match=r"tasks\.mine\.phases"):
        build_nqm_task({"kind": "nqm", "phases": 0}, 0, name="mine")


# ------------------------------------------------------------------------------------ runs
STRATEGIES = ["fixed", "hd", "local", "glocal", "global", "random", "tpe", "glocal_robust"]


@pytest.mark.parametrize("task", ["nqm", "nqm_s"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_every_strategy_runs_with_the_answer_key(cfg, keys, tmp_path, task, strategy):
    """Every strategy runs on both modes; its summary holds the nqm section against the task's key: the
    expected final loss of the schedule it trained with (expected mode: its own final loss), its ratio to both
    optima, the learned learning rate, the cost; the schedule is the phi the run logged."""
    s = run_experiment(cfg, task, strategy, 0, tmp_path / "run", progress=False, answer_key=keys[task])
    n = s["nqm"]
    key = json.loads(keys[task].read_text())
    assert s["diverged_step"] is None and not n["diverged"]
    assert n["optimum_constant_loss"] == key["constant"]["loss"] and n["optimum_schedule_phases"] == 3
    assert n["ratio_to_constant_optimum"] == pytest.approx(n["expected_final_loss"] / key["constant"]["loss"])
    assert n["ratio_to_schedule_optimum"] == pytest.approx(n["expected_final_loss"] / key["schedule"]["loss"])
    # no schedule beats the K-phase optimum by much (3 phases here), none is below the noise-free floor 0
    assert n["ratio_to_schedule_optimum"] > 0.9
    assert n["final_effective_lr"][0] == pytest.approx(n["final_lr"][0] / (1 - n["final_momentum"]))
    assert s["hyperparameters"]["hp:lr"] == pytest.approx(n["final_lr"][0])
    assert n["training_steps"] == 24 * s["n_training_runs"] and n["cpu_time"] > 0 and s["time"]["cpu"] > 0
    sched = n["effective_lr_schedule"]
    assert sched[0][0] == 0 and sched[-1][1] == 24 and all(a[1] == b[0] for a, b in zip(sched, sched[1:]))
    if task == "nqm":  # expected mode: the meta objective is the expected loss itself
        assert n["expected_final_loss"] == pytest.approx(s["final"]["val_loss"], rel=1e-10)
    if strategy in ("hd", "local", "glocal", "glocal_robust"):
        # the schedule the record used is the phi the run logged at the end of every window (metrics.csv)
        rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
        eff = {int(r["step"]): float(r["hp:lr"]) / (1 - float(r["hp:momentum"])) for r in rows}
        per_step = [v for a, b, v in sched for _ in range(a, b)]
        window = 1 if strategy == "hd" else 6
        for step, value in eff.items():
            if 0 < step < 24 and step % window == 0:
                assert per_step[step] == pytest.approx(value, rel=1e-12), step
        assert len({round(v, 12) for v in per_step}) > 1  # it did tune
    if strategy == "glocal":
        assert s["fit_health"]["windows"] == 4


def test_answer_key_is_computed_without_the_file_and_checked_with_it(cfg, keys, tmp_path):
    """Without --answer-key the run computes the key itself (same section); a key of another problem is refused
    before the run directory is touched."""
    a = run_experiment(cfg, "nqm", "local", 0, tmp_path / "a", progress=False, answer_key=keys["nqm"])
    b = run_experiment(cfg, "nqm", "local", 0, tmp_path / "b", progress=False)
    for k in ("expected_final_loss", "ratio_to_constant_optimum", "ratio_to_schedule_optimum", "final_lr"):
        assert a["nqm"][k] == b["nqm"][k], k
    other = load_config(None, {**TINY, "tasks": {**TINY["tasks"], "nqm": {**TINY["tasks"]["nqm"], "dim": 31}}})
    with pytest.raises(ValueError, match="answer_key.json.*another problem"):
        run_experiment(other, "nqm", "local", 0, tmp_path / "c", progress=False, answer_key=keys["nqm"])
    assert not (tmp_path / "c").exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not an NQM answer key"):
        read_answer_key(bad)
    with pytest.raises(ConfigError, match="not of kind nqm"):
        run_experiment(load_config(None, {"seeds": [0]}), "lr", "fixed", 0, tmp_path / "d", answer_key=bad)


def test_run_record_of_a_diverged_run_and_of_a_gap(cfg, keys):
    task = build_task(cfg, "nqm", 0, torch.device("cpu"), torch.float64)
    key = json.loads(keys["nqm"].read_text())
    phi = task.init_phi()
    rec = run_record(task, "fixed", [], phi, key, diverged_step=12)
    assert rec["diverged"] and rec["expected_final_loss"] is None and rec["ratio_to_constant_optimum"] is None
    assert rec["effective_lr_schedule"][-1][1] == 24  # a constant phi, whatever the run reached
    log = [{"step": 0, "tau": 6, "phi": [0.0, 0.0]}, {"step": 12, "tau": 6, "phi": [0.0, 0.0]}]
    with pytest.raises(ValueError, match="window at step 12"):
        used_schedule(task, "local", log, phi)
    segs = used_schedule(task, "local", log[:1], phi)  # the last update's phi is used up to the end
    assert [(a, b) for a, b, _ in segs] == [(0, 6), (6, 24)] and torch.equal(segs[1][2], torch.zeros(2,
                                                                                                  dtype=torch.float64))


# ------------------------------------------------------------------------------------ search space
def test_search_space_is_log_lr_per_phase_and_momentum(cfg):
    from glocal.search import DEFAULT_SPACE, _phi_from_params, _space_names

    t = build_task(cfg, "nqm", 0, torch.device("cpu"), torch.float64)
    assert _space_names(t) == [("lr", "lr"), ("momentum", "momentum")]
    sched = build_nqm_task({**TINY_NQM, "phases": 3}, 0, name="nqm")
    assert [n for n, _ in _space_names(sched)] == ["lr[0]", "lr[1]", "lr[2]", "momentum"]
    fixed = build_nqm_task({**TINY_NQM, "tune": ["lr"]}, 0, name="nqm")
    assert _space_names(fixed) == [("lr", "lr")]
    params = {"lr[0]": 0.7, "lr[1]": 0.2, "lr[2]": 0.01, "momentum": 0.9}
    assert sched.hyper_values(_phi_from_params(sched, params)) == pytest.approx(
        {"hp:lr[0]": 0.7, "hp:lr[1]": 0.2, "hp:lr[2]": 0.01, "hp:momentum": 0.9}, rel=1e-12)
    assert DEFAULT_SPACE["lr"]["log"] and not DEFAULT_SPACE["momentum"]["log"]
    # the default ranges hold the answer key of the default task (n = 1000, T = 300)
    key = build_nqm_task({}, 0).answer_key()
    assert DEFAULT_SPACE["lr"]["low"] < key.lr[0] < DEFAULT_SPACE["lr"]["high"]
    assert DEFAULT_SPACE["momentum"]["low"] < key.momentum < DEFAULT_SPACE["momentum"]["high"]


# ------------------------------------------------------------------------------------ commands
def test_key_and_bias_commands(cfg, tmp_path):
    from glocal.cli import main

    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(TINY))
    assert main(["nqm", "key", "--config", str(path), "--task", "nqm_s", "--out", str(tmp_path / "k.json")]) == 0
    key = read_answer_key(tmp_path / "k.json", build_task(cfg, "nqm_s", 0, torch.device("cpu"), torch.float64))
    assert key["schedule"]["phases"] == 3 and key["schedule"]["loss"] <= key["constant"]["loss"] < key["initial_loss"]
    assert key["config"]["mode"] == "sampled" and key["problem"]["dim"] == 30
    assert main(["nqm", "bias", "--config", str(path), "--task", "nqm", "--out", str(tmp_path / "b.json")]) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    rows = list(csv.DictReader((tmp_path / "b.csv").open()))
    assert [int(r["tau"]) for r in rows] == [1, 4, 24] and doc["taus_dropped"] == [100]
    assert doc["momentum"] == 0.0  # momentum is tuned: the curve is plain SGD's
    last = rows[-1]  # tau = T: the long-horizon optimum itself
    assert float(last["horizon_lr"]) == pytest.approx(float(last["optimum_lr"]), rel=1e-5)
    assert float(last["greedy_ratio"]) == pytest.approx(1.0, abs=1e-8)
    assert main(["nqm", "key", "--config", str(path), "--task", "lr", "--out", str(tmp_path / "x.json")]) == 2


# ------------------------------------------------------------------------------------ extraction
@pytest.mark.parametrize("task", ["nqm", "nqm_s"])
def test_extraction_on_both_modes(cfg, tmp_path, task):
    """Expected mode is one deterministic setting whose recorded h_T is the reverse-mode hypergradient of the
    window; sampled mode draws K independent noise streams (the batch orders) and has a noise floor."""
    from glocal.analysis import analyze
    from glocal.extract import run_extract

    c = load_config(None, {**TINY, "extract": {"steps": 12, "window_starts": [0.0, 0.5], "taus": [3, 6],
                                               "estimators": ["limit", "robust", "local"], "variants": ["averaged"],
                                               "n_batch_orders": 3}})
    meta = run_extract(c, task, tmp_path / "x")
    rows = list(csv.DictReader((tmp_path / "x" / "estimates.csv").open()))
    settings = {(r["setting"], r["batch_size"]) for r in rows}
    noise = list(csv.DictReader((tmp_path / "x" / "noise_floor.csv").open()))
    if task == "nqm":
        assert settings == {("full", "full")} and not noise
        t = build_task(c, task, 0, torch.device("cpu"), torch.float64)
        phi = t.init_phi()
        s = unroll(t.dynamics.step, t.init_state(), phi, t.batches(0, 12))
        ref = reverse_hypergradient(t.dynamics.step, t.val_fn(), s, phi, t.batches(12, 24)).h
        import numpy as np

        h = torch.as_tensor(np.load(tmp_path / "x" / "trajectory.npz")["h__full__s12"][0, -1])
        assert float((h - ref).norm() / ref.norm()) < 1e-12
    else:
        assert settings == {("sampled", "4")} and len(noise) == 2
        assert {r["realization"] for r in rows} == {"0", "1", "2", "mean"}
        assert all(float(r["rel_spread_rms"]) > 0 for r in noise)
    assert {r["estimator"] for r in rows} >= {"limit", "robust", "local"}
    assert meta["n_train"] is None and meta["q"] == 2
    summary = analyze([tmp_path / "x"], tmp_path / "a")
    assert summary["tasks"][task]


def test_phase_a_defaults_unchanged():
    """The phase-A default problem (n = 1000, h_i = 1/i, B = 10, T = 300) keeps its key, which docs/nqm.md and
    config.yaml describe: the constant optimum's effective learning rate is about 1.25, the 10-phase schedule's
    loss about half the constant's."""
    t = build_nqm_task({}, 0)
    key = t.answer_key()
    assert key.effective_lr[0] == pytest.approx(1.25, rel=0.01)
    assert math.isclose(t.answer_key(phases=10).loss / key.loss, 0.53, rel_tol=0.02)
