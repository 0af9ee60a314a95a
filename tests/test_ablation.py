"""Per-task run lists, the extraction ablation (a synthetic trajectory with a known answer) and the expansion of
the sensitivity section; bad keys of the new config sections get errors that name them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from glocal.ablation import ablate_trajectory, ablation_settings, run_ablate_extract, stride_offsets
from glocal.config import (
    ConfigError,
    check_config,
    extract_options,
    extract_tasks,
    sensitivity_config,
    sensitivity_starts,
    task_seeds,
    task_strategies,
    validate_config,
)

LAM, T = 0.8, 60
C = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)


def geometric(steps):
    """h_t = c (1 - lam^t): affine dynamics with the limit c; h_T is c up to lam^T."""
    return torch.stack([C * (1 - LAM ** t) for t in steps])


def test_stride_offsets_end_at_tau():
    assert stride_offsets(10, 1) == list(range(1, 11))
    assert stride_offsets(10, 3) == [1, 4, 7, 10]
    assert stride_offsets(10, 4) == [2, 6, 10]
    assert stride_offsets(5, 8) == [5]  # a stride past the prefix keeps its last step only


def test_ablation_settings_vary_one_axis_at_a_time():
    base = {"delay": 2, "rank": None, "energy": 0.9, "rank_rule": "oht"}
    got = ablation_settings({"delays": [1, 4], "ranks": [3], "energies": [0.99], "rank_rules": ["full"],
                             "strides": [2]}, base)
    assert [(a, v) for a, v, _ in got] == [("tau", None), ("delay", 1), ("delay", 4), ("rank", 3), ("energy", 0.99),
                                           ("rank_rule", "full"), ("stride", 2)]
    opts = {(a, v): o for a, v, o in got}
    assert opts[("tau", None)] == {"delay": 2, "rank": None, "energy": 0.9, "rank_rule": "oht", "stride": 1}
    assert opts[("rank", 3)]["energy"] is None and opts[("rank", 3)]["delay"] == 2  # a fixed rank drops the energy
    assert opts[("rank_rule", "full")]["energy"] is None and opts[("stride", 2)]["stride"] == 2


def test_ablation_on_a_geometric_trajectory_has_the_known_errors():
    """Closed forms: local's error is (lam^tau - lam^T) / (1 - lam^T); the limit estimate is c, off h_T by
    lam^T / (1 - lam^T); the horizon estimate is h_T itself, also from every k-th row (a stride k extrapolates in
    units of k steps, so it lands on h_{tau + k ceil((T - tau) / k)}). Cost: the rows a stride keeps, and reverse
    mode's vector-Jacobian products (sum of offsets)."""
    steps = list(range(1, 21)) + [T]
    settings = ablation_settings({"delays": [1, 2], "ranks": [1], "strides": [1, 2, 4]},
                                 {"delay": 1, "rank": None, "energy": None, "rank_rule": "full"})
    rows = ablate_trajectory(geometric(steps), steps, geometric([T])[0], T, [10, 20], settings, ["limit", "horizon"],
                             engine="reverse")
    assert len(rows) == 2 * len(settings) * 2
    for r in rows:
        tau = r["tau"]
        assert r["local_rel_error"] == pytest.approx((LAM ** tau - LAM ** T) / (1 - LAM ** T), rel=1e-10)
        k = r["value"] if r["axis"] == "stride" else 1
        landed = tau + k * -(-(T - tau) // k)
        want = LAM ** T / (1 - LAM ** T) if r["estimator"] == "limit" else (LAM ** T - LAM ** landed) / (1 - LAM ** T)
        assert r["rel_error"] == pytest.approx(want, rel=1e-4, abs=1e-9), r
        assert r["fallback"] == 0
        offsets = stride_offsets(tau, k)
        assert r["n_recorded"] == len(offsets) and r["engine_ops"] == sum(offsets)
        assert r["ratio_to_local"] == pytest.approx(r["rel_error"] / r["local_rel_error"])
    fwd = ablate_trajectory(geometric(steps), steps, geometric([T])[0], T, [10], settings[:1], ["limit"])
    assert fwd[0]["engine_ops"] == 10 * 3  # forward mode: tau x q JVPs whatever the stride


def test_ablation_skips_a_prefix_that_was_not_recorded():
    steps = [1, 2, 3, 5, T]  # step 4 missing: tau = 5 cannot be refitted
    rows = ablate_trajectory(geometric(steps), steps, geometric([T])[0], T, [3, 5],
                             [("tau", None, {"delay": 1, "rank": None, "energy": None, "rank_rule": "full", "stride": 1})],
                             ["limit"])
    assert [r["tau"] for r in rows] == [3]


def test_run_ablate_extract_reads_the_extraction_files(tmp_path):
    """The command's reading of trajectory.npz / meta.json (layout of glocal extract) and its CSV."""
    steps = np.array(list(range(1, 11)) + [T])
    H = geometric(steps.tolist()).numpy()[None]  # one realization
    ext = tmp_path / "extract"
    ext.mkdir()
    np.savez(ext / "trajectory.npz", **{"h__full__s0": H, "steps__full__s0": steps})
    (ext / "meta.json").write_text(json.dumps({"T": T, "taus": [5, 10], "engine": "forward", "q": 3, "settings": [
        {"setting": "full", "window_start": 0, "batch_size": None}]}))
    cfg = validate_config({"tasks": {"lr": {}}, "ablation": {"extract": {"delays": [1, 2], "ranks": [], "energies": [],
                                                                         "rank_rules": [], "strides": [2]}}})
    info = run_ablate_extract(cfg, "lr", ext, tmp_path / "out")
    import csv

    rows = list(csv.DictReader((tmp_path / "out" / "ablation.csv").open()))
    assert info["n_rows"] == len(rows) == 2 * 4 * 2  # taus x (tau, delay 1, delay 2, stride 2) x estimators
    assert {r["axis"] for r in rows} == {"tau", "delay", "stride"}
    assert json.loads((tmp_path / "out" / "meta.json").read_text())["engine"] == "forward"
    with pytest.raises(FileNotFoundError, match="no meta.json"):
        run_ablate_extract(cfg, "lr", tmp_path / "nowhere", tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_task_overrides_of_strategies_seeds_and_extract():
    cfg = validate_config({"seeds": [0, 1], "strategies": ["fixed", "glocal", "tpe"], "tasks": {
        "lr": {}, "lr_gru": {"kind": "lr", "model": {"kind": "gru", "hidden_size": 4}, "strategies": ["glocal"],
                             "seeds": [3], "extract": {"taus": [2, 3]}},
        "reweight": {"extract": False}}})
    assert task_strategies(cfg, "lr") == ["fixed", "glocal", "tpe"] and task_strategies(cfg, "lr_gru") == ["glocal"]
    assert task_seeds(cfg, "lr") == [0, 1] and task_seeds(cfg, "lr_gru") == [3]
    assert extract_tasks(cfg) == ["lr", "lr_gru"]
    assert extract_options(cfg, "lr_gru")["taus"] == [2, 3]
    assert extract_options(cfg, "lr_gru")["steps"] == extract_options(cfg, "lr")["steps"]  # the rest inherited
    assert extract_options(cfg, "reweight") is None


@pytest.mark.parametrize("raw, needle", [
    ({"tasks": {"lr": {"strategies": ["glocal", "nope"]}}}, "tasks.lr.strategies"),
    ({"tasks": {"lr": {"extract": {"taus": [2], "bogus": 1}}}}, "bogus"),
    ({"ablation": {"extract": {"delay": [1]}}}, "delay"),
    ({"ablation": {"extract": {"strides": [0]}}}, "ablation.extract.strides"),
    ({"sensitivity": {"tasks": {"lr": {"lr_factor": [1]}}}}, "lr_factor"),
    ({"sensitivity": {"tasks": {"reweight": {"init_weights": [1.5]}}}}, "sensitivity.tasks.reweight.init_weights"),
    ({"sensitivity": {"strategies": ["glocal", "nope"]}}, "sensitivity.strategies"),
    ({"strategy_options": {"cmaes": {"popsize": 0}}}, "strategy_options.cmaes.popsize"),
])
def test_bad_keys_of_the_new_sections_are_named(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        check_config(validate_config(raw))


@pytest.mark.parametrize("raw, needle", [
    ({"sensitivity": {"tasks": {"nope": {"lr_factors": [1]}}}}, "sensitivity.tasks.nope"),
    ({"sensitivity": {"tasks": {"lr": {"init_weights": [0.5]}}}}, "sensitivity.tasks.lr.init_weights"),
    ({"sensitivity": {"strategies": ["tpe"]}}, "sensitivity.strategies"),
    ({"ablation": {"extract": {"tasks": ["nope"]}}}, "ablation.extract.tasks"),
])
def test_sections_name_unknown_tasks_and_wrong_kinds(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        check_config(validate_config({"tasks": {"lr": {}, "reweight": {}}, **raw}))


def test_sensitivity_expands_to_one_start_per_value():
    cfg = validate_config({"tasks": {"lr": {"optimizer": {"kind": "sgd", "lr": 0.05}}, "reweight": {},
                                     "lr_gru": {"kind": "lr", "model": {"kind": "gru"}, "enabled": False}},
                           "sensitivity": {"tasks": {"lr": {"lr_factors": [0.1, 3]}, "reweight": {"init_weights": [0.9]},
                                                     "lr_gru": {"lr_factors": [2]}}}})
    starts = sensitivity_starts(cfg)  # the disabled task has none
    assert [(s["task"], s["start"], s["initial"]) for s in starts] == [
        ("lr", "lr_x0.1", pytest.approx(0.005)), ("lr", "lr_x3", pytest.approx(0.15)), ("reweight", "w0.9", 0.9)]
    moved = sensitivity_config(cfg, starts[1])
    assert moved["tasks"]["lr"]["optimizer"] == {**cfg["tasks"]["lr"]["optimizer"], "lr": pytest.approx(0.15)}
    assert cfg["tasks"]["lr"]["optimizer"]["lr"] == 0.05  # the config itself is untouched
    assert sensitivity_config(cfg, starts[2])["tasks"]["reweight"]["init_weight"] == 0.9
    assert sensitivity_starts(validate_config({**cfg, "sensitivity": {**cfg["sensitivity"], "enabled": False}})) == []


TINY = {"seeds": [0], "data": {"n_train": 150},
        "tasks": {"lr": {"steps": 12, "batch_size": 50, "model": {"kind": "mlp", "hidden": [4]}},
                  "reweight": {"steps": 12, "batch_size": None}},
        "strategy_options": {"glocal": {"window": 3}}}


def test_update_every_updates_phi_once_per_period(tmp_path):
    """update_every = P: one window of hypergradients per P steps, ending each period (P = window is the default)."""
    from glocal.train import run_experiment

    cfg = validate_config(TINY)
    every = run_experiment(cfg, "reweight", "glocal", 0, tmp_path / "w", progress=False)
    same = run_experiment(validate_config({**TINY, "strategy_options": {"glocal": {"window": 3, "update_every": 3}}}),
                          "reweight", "glocal", 0, tmp_path / "same", progress=False)
    sparse = run_experiment(validate_config({**TINY, "strategy_options": {"glocal": {"window": 3, "update_every": 6}}}),
                            "reweight", "glocal", 0, tmp_path / "sparse", progress=False)
    assert every["n_hyper_updates"] == 4 and sparse["n_hyper_updates"] == 2
    assert same["final"] == every["final"]
    assert sparse["final"]["val_loss"] != every["final"]["val_loss"]
    for bad, needle in ((2, "at least the window"), (12, "shorter than the run")):
        with pytest.raises(ConfigError, match=needle):
            check_config(validate_config({**TINY, "strategy_options": {"glocal": {"window": 3, "update_every": bad}}}))


def test_hpo_ablation_runs_each_value_as_a_glocal_variant_and_reuses_finished_runs(tmp_path):
    """glocal ablate hpo (command line only): one glocal run per axis value and seed, each a strategy variant with
    the base options and that value; a second call reuses the finished runs."""
    from glocal.ablation import run_ablate_hpo
    from glocal.config import ablation_hpo_axes

    cfg = validate_config({**TINY, "ablation": {"hpo": {"enabled": True, "task": "reweight", "base": {"window": 3},
                                                        "axes": [{"option": "delay", "values": [1, 2]}]}}})
    check_config(cfg)
    runs = ablation_hpo_axes(cfg)["delay"]
    assert [(r["label"], r["options"]) for r in runs] == [("1", {"window": 3, "delay": 1}), ("2", {"window": 3, "delay": 2})]
    index = run_ablate_hpo(cfg, "delay", tmp_path / "abl")
    assert [(e["label"], e["seed"]) for e in index["runs"]] == [("1", 0), ("2", 0)]
    summary = json.loads((tmp_path / "abl" / "2" / "seed0" / "summary.json").read_text())
    assert summary["strategy"] == "ablation_delay_1" and summary["n_hyper_updates"] == 4
    stamp = (tmp_path / "abl" / "2" / "seed0" / "summary.json").stat().st_mtime_ns
    run_ablate_hpo(cfg, "delay", tmp_path / "abl")
    assert (tmp_path / "abl" / "2" / "seed0" / "summary.json").stat().st_mtime_ns == stamp
    with pytest.raises(ConfigError, match="--axis"):
        run_ablate_hpo(cfg, "rank", tmp_path / "abl")
    with pytest.raises(ConfigError, match="ablation.hpo.axes"):
        check_config(validate_config({**TINY, "ablation": {"hpo": {"enabled": True, "axes": [
            {"option": "delay", "values": [0]}]}}}))


def test_sensitivity_start_runs_every_strategy_from_it(tmp_path):
    """glocal sensitivity: every strategy and seed from one start; fixed keeps the initial weight, glocal moves it;
    the figure module reads back what ran; an unknown start is an error naming the defined ones."""
    from figures.sensitivity import final_values, load, summarize
    from glocal.sensitivity import run_start

    cfg = validate_config({**TINY, "sensitivity": {"strategies": ["fixed", "glocal"],
                                                   "tasks": {"reweight": {"init_weights": [0.9]}}}})
    check_config(cfg)
    index = run_start(cfg, "reweight", "w0.9", tmp_path / "s")
    assert index["initial"] == 0.9 and [r["strategy"] for r in index["runs"]] == ["fixed", "glocal"]
    (_, runs), = load([tmp_path / "s" / "index.json"])
    fixed, glocal = final_values(runs["fixed"][0]), final_values(runs["glocal"][0])
    assert fixed["w_clean"] == pytest.approx(0.9) and fixed["w_flipped"] == pytest.approx(0.9)
    assert glocal["w_clean"] != pytest.approx(0.9)
    rows = summarize(load([tmp_path / "s" / "index.json"]))
    assert [(r["strategy"], r["initial"]) for r in rows] == [("fixed", 0.9), ("glocal", 0.9)]
    with pytest.raises(ConfigError, match=r"reweight/w0\.9"):
        run_start(cfg, "reweight", "w0.5", tmp_path / "t")
