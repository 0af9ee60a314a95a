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
