"""HPO runs (`glocal train`): every task x strategy end to end, resume, determinism, divergence, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml

from glocal.cli import main
from glocal.config import load_config
from glocal.train import OuterOptimizer, StopRequested, choose_engine, run_experiment

TINY = {
    "seeds": [0],
    "tasks": {
        "lr": {"steps": 24, "batch_size": 64, "model": {"kind": "mlp", "hidden": [16]}},
        "reweight": {"steps": 24, "batch_size": None},
    },
    "data": {"n_train": 200},
    "strategy_options": {
        "local": {"window": 2},
        "glocal": {"window": 8, "delay": 2},
        "global": {"meta_iterations": 3},
    },
}


def _write_cfg(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _read_metrics(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _without_wall(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


@pytest.mark.parametrize("task", ["lr", "reweight"])
@pytest.mark.parametrize("strategy", ["fixed", "local", "glocal", "global"])
def test_every_task_and_strategy_runs(tmp_path: Path, task: str, strategy: str) -> None:
    cfg = _write_cfg(tmp_path, TINY)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--task", task, "--strategy", strategy, "--seed", "0",
                 "--out", str(out), "--no-progress"]) == 0
    for name in ("config.json", "metrics.csv", "hypergrads.jsonl", "summary.json"):
        assert (out / name).is_file(), name
    assert not (out / "checkpoint.pt").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task and summary["strategy"] == strategy
    assert summary["diverged_step"] is None
    assert set(summary["time"]) >= {"total", "training", "hypergradient", "dmd"}
    assert summary["versions"]["torch"] == torch.__version__
    assert summary["device"] == "cpu" and summary["dtype"] == "float32"
    rows = _read_metrics(out / "metrics.csv")
    assert rows and all(r["val_loss"] != "" for r in rows)
    hyper = [json.loads(line) for line in (out / "hypergrads.jsonl").read_text().splitlines()]
    if strategy == "fixed":
        assert hyper == [] and summary["n_hyper_updates"] == 0
        # phi never changes
        hp_cols = [c for c in rows[0] if c.startswith("hp:")]
        assert all(r[c] == rows[0][c] for r in rows for c in hp_cols)
    else:
        assert summary["n_hyper_updates"] > 0 and len(hyper) == summary["n_hyper_updates"]
    if strategy == "glocal":
        assert all("eigenvalues" in h and "fallback" in h and "condition_number" in h for h in hyper)
    if strategy == "global":
        assert summary["n_training_runs"] == 3
        assert {r["run"] for r in rows} == {"0", "1", "2"}
    if task == "reweight":
        assert (out / "weights.csv").is_file()
        assert summary["auc"] is not None and 0.0 <= summary["auc"] <= 1.0


@pytest.mark.parametrize("strategy", ["glocal", "global"])
def test_resume_equals_uninterrupted(tmp_path: Path, strategy: str) -> None:
    cfg = load_config(None, {**TINY, "strategy_options": {**TINY["strategy_options"],
                                                           "glocal": {"window": 4, "delay": 1}}})
    cfg_ck = json.loads(json.dumps(cfg))
    full = run_experiment(cfg, "lr", strategy, 0, tmp_path / "full", progress=False)
    # Checkpoint after every outer step, stop (as a kill would) after two, then start again.
    import glocal.train as train_mod

    orig = train_mod._Run.__init__

    def patched(self, *a, **k):
        orig(self, *a, **k)
        self.checkpoint_every = 1

    train_mod._Run.__init__ = patched
    try:
        with pytest.raises(StopRequested):
            run_experiment(cfg_ck, "lr", strategy, 0, tmp_path / "resumed", progress=False, stop_after=2)
        assert (tmp_path / "resumed" / "checkpoint.pt").exists()
        assert not (tmp_path / "resumed" / "summary.json").exists()
        resumed = run_experiment(cfg_ck, "lr", strategy, 0, tmp_path / "resumed", progress=False)
    finally:
        train_mod._Run.__init__ = orig
    assert resumed["resumed"] is True
    assert resumed["final"] == full["final"]
    assert _without_wall(_read_metrics(tmp_path / "resumed" / "metrics.csv")) == _without_wall(
        _read_metrics(tmp_path / "full" / "metrics.csv")
    )


def test_same_seed_same_metrics(tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    a = run_experiment(cfg, "reweight", "glocal", 1, tmp_path / "a", progress=False)
    b = run_experiment(cfg, "reweight", "glocal", 1, tmp_path / "b", progress=False)
    assert a["final"] == b["final"]
    assert _without_wall(_read_metrics(tmp_path / "a" / "metrics.csv")) == _without_wall(
        _read_metrics(tmp_path / "b" / "metrics.csv")
    )
    c = run_experiment(cfg, "reweight", "glocal", 2, tmp_path / "c", progress=False)
    assert c["final"] != a["final"]


def test_divergence_is_a_result(tmp_path: Path) -> None:
    cfg = load_config(None, {**TINY, "tasks": {"lr": {**TINY["tasks"]["lr"],
                                                      "optimizer": {"kind": "momentum", "lr": 1e4,
                                                                    "momentum": 0.9, "weight_decay": 1e-4}}}})
    s = run_experiment(cfg, "lr", "local", 0, tmp_path / "div", progress=False)
    assert isinstance(s["diverged_step"], int) and 0 < s["diverged_step"] <= 24
    saved = json.loads((tmp_path / "div" / "summary.json").read_text())
    assert saved["diverged_step"] == s["diverged_step"]


@pytest.mark.parametrize(
    "cfg, args, needle",
    [
        ({}, ["--task", "nope", "--strategy", "fixed"], "task"),
        ({}, ["--task", "lr", "--strategy", "bogus"], "strategy"),
        ({"strategy_options": {"local": {"window": -1}}}, ["--task", "lr", "--strategy", "local"], "window"),
        ({"data": {"name": "mnist", "root": "/nonexistent/mnist"}}, ["--task", "lr", "--strategy", "fixed"], "data.root"),
        ({"tasks": {"lr": {"stepz": 3}}}, ["--task", "lr", "--strategy", "fixed"], "stepz"),
        ({"dtype": 32}, ["--task", "lr", "--strategy", "fixed"], "dtype"),
    ],
)
def test_bad_config_names_the_key(tmp_path: Path, capsys, cfg: dict, args: list[str], needle: str) -> None:
    p = _write_cfg(tmp_path, cfg)
    code = main(["train", "--config", str(p), *args, "--out", str(tmp_path / "x"), "--no-progress"])
    assert code != 0
    assert needle in capsys.readouterr().err


def test_missing_config_file(tmp_path: Path, capsys) -> None:
    code = main(["train", "--config", str(tmp_path / "absent.yaml"), "--task", "lr", "--strategy", "fixed",
                 "--out", str(tmp_path / "x")])
    assert code == 2 and "absent.yaml" in capsys.readouterr().err


def test_outer_optimizer_clip_and_sgd() -> None:
    phi = torch.zeros(3)
    h = torch.tensor([3.0, 4.0, 0.0])
    sgd = OuterOptimizer("sgd", lr=0.1, clip=1.0)
    torch.testing.assert_close(sgd.step(phi, h), -0.1 * h / 5.0)
    adam = OuterOptimizer("adam", lr=0.1)
    # Adam's first step moves every coordinate with a nonzero gradient by about lr.
    step = adam.step(phi, h)
    torch.testing.assert_close(step[:2], torch.tensor([-0.1, -0.1]), atol=1e-6, rtol=0)
    assert step[2] == 0


def test_engine_choice_follows_cost() -> None:
    assert choose_engine("auto", q=3, tau=20, trajectory=True) == "forward"
    assert choose_engine("auto", q=300, tau=20, trajectory=True) == "reverse"
    assert choose_engine("auto", q=5, tau=1, trajectory=False) == "reverse"
    assert choose_engine("forward", q=300, tau=1, trajectory=False) == "forward"
    # A strided window records fewer steps: reverse chains for offsets 4, 8, ..., 20 (60 products)
    # beat 4 x 20 forward products; every step recorded (210 products) does not.
    assert choose_engine("auto", q=4, tau=20, trajectory=True) == "forward"
    assert choose_engine("auto", q=4, tau=20, trajectory=True, record_stride=4) == "reverse"
    assert choose_engine("auto", q=4, tau=20, trajectory=True, record_stride=100) == "reverse"  # capped at tau


def test_outer_settings_most_specific_wins() -> None:
    from glocal.config import strategy_options

    cfg = load_config(None, {
        "strategy_options": {"outer": {"lr": 0.05, "clip": 2.0}, "glocal": {"outer": {"lr": 0.2}}},
        "tasks": {"lr": {"strategy_options": {"outer": {"lr": 0.07}, "global": {"outer": {"optimizer": "sgd"}}}}},
    })
    assert strategy_options(cfg, "lr", "local")["outer"] == {"optimizer": "adam", "lr": 0.07, "clip": 2.0}
    assert strategy_options(cfg, "lr", "glocal")["outer"]["lr"] == 0.2
    assert strategy_options(cfg, "lr", "global")["outer"] == {"optimizer": "sgd", "lr": 0.07, "clip": 2.0}
    assert strategy_options(cfg, "reweight", "global")["outer"] == {"optimizer": "adam", "lr": 0.05, "clip": 2.0}


def test_metrics_logged_when_a_window_crosses_an_evaluation_point(tmp_path: Path) -> None:
    cfg = load_config(None, {**TINY, "strategy_options": {"local": {"window": 2, "eval_every": 5}}})
    run_experiment(cfg, "lr", "local", 0, tmp_path / "run", progress=False)
    steps = [int(r["step"]) for r in _read_metrics(tmp_path / "run" / "metrics.csv")]
    assert steps == [0, 6, 10, 16, 20, 24]


def test_strided_reverse_window_records_equally_spaced_steps(tmp_path: Path) -> None:
    """record_stride: the reverse engine records every k-th step ending at the window's end, and the
    horizon estimate extrapolates in units of k steps (a run with stride 1 and one with stride 3 both work)."""
    import glocal.train as train_mod

    seen: list[list[int]] = []
    orig = train_mod.reverse_window_hypergradients

    def spy(*a, **k):
        seen.append(list(a[5]))
        return orig(*a, **k)

    train_mod.reverse_window_hypergradients = spy
    try:
        opts = {"window": 8, "engine": "reverse", "record_stride": 3, "estimator": "horizon"}
        cfg = load_config(None, {**TINY, "strategy_options": {"glocal": opts}})
        s = run_experiment(cfg, "reweight", "glocal", 0, tmp_path / "run", progress=False)
    finally:
        train_mod.reverse_window_hypergradients = orig
    assert seen and all(rec == [2, 5, 8] for rec in seen)
    assert s["n_hyper_updates"] == 3 and s["diverged_step"] is None
