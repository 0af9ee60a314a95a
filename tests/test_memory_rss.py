"""Peak resident memory (RSS) of the hypergradient engines in fresh processes: opt-in, not default CI.

RSS depends on the allocator and the machine (and on what else the process did), so these checks are not
part of the default suite (tests/test_hypergrad.py checks tensor memory deterministically through the
profiler instead). They guard against heap fragmentation that tensor accounting cannot see, e.g. small
per-step tensors kept alive between large temporaries. Run them with::

    GLOCAL_RSS_TESTS=1 python -m pytest -q tests/test_memory_rss.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(os.environ.get("GLOCAL_RSS_TESTS") != "1",
                                reason="RSS-based memory checks are opt-in: set GLOCAL_RSS_TESTS=1")

_MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys
    import torch
    from torch import nn
    from glocal.dynamics import Batch, HyperBlock, HyperSpace, OptimizerConfig, TrainingDynamics
    from glocal.hypergrad import forward_trajectory, reverse_hypergradient

    torch.set_num_threads(1)
    engine = sys.argv[1]
    torch.manual_seed(0)
    d_in, hid, C = 64, 1536, 2
    model = nn.Sequential(nn.Linear(d_in, hid), nn.Tanh(), nn.Linear(hid, C)).to(torch.float64)
    hyper = HyperSpace([HyperBlock("lr", init=0.05), HyperBlock("weight_decay", init=1e-3)])
    dyn = TrainingDynamics(model, OptimizerConfig(kind="sgd"), hyper)
    phi = hyper.init_phi(torch.float64)
    state = dyn.init_state(dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, d_in, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (4,), generator=g)
    val_fn = dyn.loss_fn(x, y)

    def peak_mb():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB

    def run(tau):
        batches = [Batch(x, y, torch.arange(4), t) for t in range(tau)]
        if engine == "forward_last":
            forward_trajectory(dyn.step, val_fn, state, phi, batches, record=[tau])
        elif engine == "forward_every":
            forward_trajectory(dyn.step, val_fn, state, phi, batches)
        else:
            reverse_hypergradient(dyn.step, val_fn, state, phi, batches)

    run(3)  # warm up allocator and kernels
    out = {"P": dyn.P, "base": peak_mb()}
    run(50)
    out["tau50"] = peak_mb()
    run(500)
    out["tau500"] = peak_mb()
    print(json.dumps(out))
    """
)


def _peak_rss(engine: str) -> dict:
    """Peak RSS (MB) of a fresh process after tau=50 and then after tau=500 (peaks are cumulative)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, "-c", _MEMORY_SCRIPT, engine], capture_output=True, text=True, timeout=300, check=False, env=env
    )
    assert res.returncode == 0, res.stderr[-3000:]
    return json.loads(res.stdout.strip().splitlines()[-1])


def _extra_states_mb(P: int) -> float:
    """What keeping the 450 extra states of tau=500 (vs tau=50) would cost, in MB."""
    return 450 * P * 8 / 2**20


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss units are Linux-specific")


@linux_only
def test_forward_memory_does_not_grow_with_window_but_reverse_does():
    """Peak resident memory, fresh process per engine, peaks after tau=50 and then tau=500.

    The model has P ~ 1e5 float64 entries, so keeping all tau=500 states would cost ~ 350 MB
    more than tau=50: forward mode must stay flat, while reverse mode (which stores the states)
    must visibly grow, proving the measurement detects growth.
    """
    fwd = _peak_rss("forward_last")
    rev = _peak_rss("reverse")
    extra = _extra_states_mb(fwd["P"])
    assert extra > 300
    assert fwd["tau500"] - fwd["tau50"] < 0.1 * extra, (fwd, rev, extra)
    assert fwd["tau500"] / fwd["tau50"] < 1.2, (fwd, rev, extra)
    assert rev["tau500"] - rev["tau50"] > 0.5 * extra, (fwd, rev, extra)
    assert rev["tau500"] / rev["tau50"] > 1.5, (fwd, rev, extra)


@linux_only
# Regression: rows used to be kept as small per-step tensors, which fragmented the heap so that
# resident memory grew with tau; they now go into a preallocated (n_record, q) buffer.
def test_forward_memory_flat_when_recording_every_step():
    fwd = _peak_rss("forward_every")
    extra = _extra_states_mb(fwd["P"])
    assert fwd["tau500"] - fwd["tau50"] < 0.05 * extra, (fwd, extra)
