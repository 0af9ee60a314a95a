"""Black-box baselines (`glocal train --strategy random|tpe`): both tasks, resume, determinism, bad spaces."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from sklearn.metrics import roc_auc_score

from glocal.cli import main
from glocal.config import ConfigError, load_config, schema_path
from glocal.search import run_search
from glocal.train import METRIC_COLUMNS, StopRequested

TINY = {
    "seeds": [0],
    "data": {"n_train": 150},
    "tasks": {
        "lr": {"steps": 10, "batch_size": 50, "model": {"kind": "mlp", "hidden": [8]}},
        "reweight": {"steps": 10, "batch_size": None},
    },
    "strategy_options": {"random": {"n_trials": 3}, "tpe": {"n_trials": 3}},
}
WALL = ("wall_time", "cumulative_wall_time")



def _write_cfg(tmp_path: Path, cfg: dict) -> Path:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def _without_wall(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in r.items() if k not in WALL} for r in rows]


def _schema_has_space() -> bool:
    schema = yaml.safe_load(schema_path().read_text())
    props = schema["properties"]["strategy_options"]["properties"]["tpe"].get("properties", {})
    return "space" in props


@pytest.mark.parametrize("task", ["lr", "reweight"])
@pytest.mark.parametrize("strategy", ["random", "tpe"])
def test_every_task_and_search_strategy_runs(tmp_path: Path, task: str, strategy: str) -> None:
    cfg = _write_cfg(tmp_path, TINY)
    out = tmp_path / "run"
    assert main(["train", "--config", str(cfg), "--task", task, "--strategy", strategy, "--seed", "0",
                 "--out", str(out), "--no-progress"]) == 0
    for name in ("config.json", "metrics.csv", "summary.json", "trials.csv", "study.db"):
        assert (out / name).is_file(), name
    for k in range(3):
        for name in ("metrics.csv", "summary.json"):
            assert (out / "trials" / f"trial_{k:03d}" / name).is_file()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"] == task and summary["strategy"] == strategy
    assert summary["n_training_runs"] == 3
    assert {"final", "best_val_loss", "time", "peak_memory_mb", "versions", "diverged_step"} <= set(summary)
    metrics = _rows(out / "metrics.csv")
    assert list(metrics[0])[: len(METRIC_COLUMNS)] == METRIC_COLUMNS
    assert int(metrics[-1]["step"]) == 10
    trials = _rows(out / "trials.csv")
    assert [int(r["trial"]) for r in trials] == [0, 1, 2]
    best = [float(r["best_so_far_val_loss"]) for r in trials]
    assert best == sorted(best, reverse=True)
    assert min(float(r["val_loss"]) for r in trials) == pytest.approx(best[-1])
    assert float(metrics[-1]["val_loss"]) == pytest.approx(best[-1])
    cum = [float(r["cumulative_wall_time"]) for r in trials]
    assert cum == sorted(cum) and summary["time"]["total"] == pytest.approx(cum[-1])
    assert summary["final"]["test_loss"] == pytest.approx(float(trials[summary["search"]["best_trial"]]["test_loss"]))
    if task == "reweight":
        assert {"slope", "offset"} <= set(trials[0])
        assert (out / "weights.csv").is_file()
        # the rule w_i = sigmoid(slope (loss_i - mean) + offset) with slope < 0 down-weights high-loss examples,
        # which the flipped ones are: every trial's weights separate them better than chance (0.5);
        # measured 0.74-0.92 on this config. The summary reports the best trial's AUC.
        aucs = [float(r["auc"]) for r in trials]
        assert all(a > 0.6 for a in aucs), aucs
        assert summary["auc"] == pytest.approx(aucs[summary["search"]["best_trial"]])
        w = _rows(out / "weights.csv")
        assert summary["auc"] == pytest.approx(
            roc_auc_score([1 - int(r["flipped"]) for r in w], [float(r["weight"]) for r in w]), abs=1e-12)
        assert "hp:slope" in metrics[0] and "hp:example_weight_mean" in metrics[0]
    else:
        assert {"lr[0]", "lr[1]", "weight_decay", "momentum"} <= set(trials[0])
        assert "hp:lr[0]" in metrics[0]
        for r in trials:
            assert 1e-3 <= float(r["lr[0]"]) <= 1.0 and 0.0 <= float(r["momentum"]) <= 0.99


def test_resume_after_kill_continues_the_study(tmp_path: Path) -> None:
    import optuna

    cfg = load_config(None, TINY)
    cfg["strategy_options"]["tpe"] = {"n_trials": 4, "n_startup_trials": 2}
    ref = tmp_path / "ref"
    run_search(cfg, "reweight", "tpe", 1, ref, progress=False)
    out = tmp_path / "killed"
    with pytest.raises(StopRequested):
        run_search(cfg, "reweight", "tpe", 1, out, progress=False, stop_after=2)
    # A kill in the middle of the third trial leaves it RUNNING in the study.
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / 'study.db').resolve()}")
    study = optuna.load_study(study_name="reweight/tpe/seed1", storage=storage)
    assert len(study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))) == 2
    study.ask()
    storage.engine.dispose()
    summary = run_search(cfg, "reweight", "tpe", 1, out, progress=False)
    assert summary["resumed"] and summary["search"]["n_failed_attempts"] == 1
    assert summary["n_training_runs"] == 4
    assert _without_wall(_rows(out / "trials.csv")) == _without_wall(_rows(ref / "trials.csv"))
    # Raising n_trials extends the finished study instead of starting afresh.
    cfg["strategy_options"]["tpe"]["n_trials"] = 5
    summary = run_search(cfg, "reweight", "tpe", 1, out, progress=False)
    assert summary["n_training_runs"] == 5 and len(_rows(out / "trials.csv")) == 5


def test_same_seed_same_trials(tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    cfg["strategy_options"]["random"]["n_trials"] = 2
    a = run_search(cfg, "lr", "random", 3, tmp_path / "a", progress=False)
    b = run_search(cfg, "lr", "random", 3, tmp_path / "b", progress=False)
    ra, rb = _rows(tmp_path / "a" / "trials.csv"), _rows(tmp_path / "b" / "trials.csv")
    assert _without_wall(ra) == _without_wall(rb)
    assert a["final"] == b["final"]
    # Trials differ only in their hyperparameters: theta_0 and the batch order are the run seed's.
    m0 = _rows(tmp_path / "a" / "trials" / "trial_000" / "metrics.csv")[0]
    m1 = _rows(tmp_path / "a" / "trials" / "trial_001" / "metrics.csv")[0]
    assert m0["val_loss"] == m1["val_loss"] and m0["hp:lr[0]"] != m1["hp:lr[0]"]
    c = run_search(cfg, "lr", "random", 4, tmp_path / "c", progress=False)
    assert c["search"]["best_params"] != a["search"]["best_params"]


@pytest.mark.parametrize(
    "space, key",
    [
        ({"lrr": {"low": 1e-3, "high": 1.0}}, "strategy_options.tpe.space.lrr"),
        ({"lr": {"lo": 1e-3}}, "strategy_options.tpe.space.lr.lo"),
        ({"weight_decay": {"low": 0.0, "high": 1.0, "log": True}}, "strategy_options.tpe.space.weight_decay"),
        ({"momentum": {"high": 1.5}}, "strategy_options.tpe.space.momentum"),
    ],
)
def test_search_space_errors_name_the_key(tmp_path: Path, space: dict, key: str) -> None:
    cfg = load_config(None, TINY)
    cfg["strategy_options"]["tpe"]["space"] = space
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        run_search(cfg, "lr", "tpe", 0, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "study.db").exists()


def test_task_override_space_error_names_the_task_key(tmp_path: Path) -> None:
    cfg = load_config(None, TINY)
    cfg["tasks"]["reweight"]["strategy_options"] = {"random": {"space": {"slop": {"low": -1.0, "high": 0.0}}}}
    with pytest.raises(ConfigError, match=r"tasks\.reweight\.strategy_options\.random\.space\.slop"):
        run_search(cfg, "reweight", "random", 0, tmp_path / "run", progress=False)


@pytest.mark.parametrize("where", ["n_trails", "space"])
def test_cli_typo_fails_naming_the_key(tmp_path: Path, capsys, where: str) -> None:
    if where == "space" and not _schema_has_space():
        pytest.skip("the config schema does not list strategy_options.tpe.space yet")
    cfg = {**TINY, "strategy_options": {"tpe": {"n_trials": 2}}}
    typo = "n_trails" if where == "n_trails" else "learning_rate"
    if where == "n_trails":
        cfg["strategy_options"]["tpe"]["n_trails"] = 3
    else:
        cfg["strategy_options"]["tpe"]["space"] = {"learning_rate": {"low": 1e-4, "high": 1.0}}
    p = _write_cfg(tmp_path, cfg)
    rc = main(["train", "--config", str(p), "--task", "lr", "--strategy", "tpe", "--out", str(tmp_path / "run"),
               "--no-progress"])
    assert rc == 2
    assert typo in capsys.readouterr().err


def test_cmaes_runs_seeded_and_resumes_like_the_uninterrupted_search(tmp_path: Path) -> None:
    """CMA-ES (Optuna's CmaEsSampler): one random trial, then generations of popsize trials; the same seed gives
    the same trials, another seed others, and a search killed after 3 trials resumes to exactly the trials of the
    uninterrupted one (the sampler's random numbers follow the trial's index, not Optuna's attempt number)."""
    import optuna

    cfg = load_config(None, {**TINY, "strategy_options": {"cmaes": {"n_trials": 6, "popsize": 4}}})
    a = run_search(cfg, "lr", "cmaes", 2, tmp_path / "a", progress=False)
    b = run_search(cfg, "lr", "cmaes", 2, tmp_path / "b", progress=False)
    ra = _rows(tmp_path / "a" / "trials.csv")
    assert a["search"]["sampler"] == "CmaEsSampler" and a["n_training_runs"] == len(ra) == 6
    assert _without_wall(ra) == _without_wall(_rows(tmp_path / "b" / "trials.csv")) and a["final"] == b["final"]
    assert len({r["lr[0]"] for r in ra}) == 6  # six distinct points of the search space
    c = run_search(cfg, "lr", "cmaes", 3, tmp_path / "c", progress=False)
    assert c["search"]["best_params"] != a["search"]["best_params"]
    out = tmp_path / "killed"
    with pytest.raises(StopRequested):
        run_search(cfg, "lr", "cmaes", 2, out, progress=False, stop_after=3)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / 'study.db').resolve()}")
    study = optuna.load_study(study_name="lr/cmaes/seed2", storage=storage)
    study.ask()  # the kill interrupted the fourth trial: it stays RUNNING and its number is used up
    storage.engine.dispose()
    resumed = run_search(cfg, "lr", "cmaes", 2, out, progress=False)
    assert resumed["resumed"] and resumed["search"]["n_failed_attempts"] == 1
    assert _without_wall(_rows(out / "trials.csv")) == _without_wall(ra)
