"""Exact hypergradients of a validation loss through unrolled inner training.

Every engine takes the same two pure functions:

* ``step_fn(state, phi, batch) -> state`` — one inner step (see :class:`glocal.TrainingDynamics`);
* ``val_fn(state, phi) -> scalar`` — the meta objective,

plus a start state ``state`` (theta_s, any point of training), the hyperparameters ``phi`` and
the window's batches. The hypergradient over the window s -> t is
``h_{s->t} = d val_fn(theta_t, phi) / d phi`` with theta_s held fixed.

* :func:`forward_trajectory` — forward-mode accumulation ``Z_{t+1} = A_t Z_t + B_t``; all
  h_{s->t} of the window in one pass, memory O(p q) independent of the window length.
* :func:`reverse_hypergradient` — unrolled reverse mode for one h_{s->T}; memory O(T p), or
  O(sqrt(T) p) with checkpointing.
* :func:`reverse_window_hypergradients` — reverse mode for a chosen subset of the h_{s->t},
  one backward chain per recorded step (cheap when q is large).
* :func:`finite_difference_hypergradient` — central differences, for checks.

Forward mode differentiates the step with ``torch.func`` (``jvp`` under ``vmap``); the reverse
engines use plain ``torch.autograd`` (``grad``, second order where the step needs it), whose
per-call overhead is about half that of the ``torch.func`` transforms on a small model.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.func import jvp, vmap

__all__ = [
    "ForwardTrajectory",
    "ReverseResult",
    "forward_trajectory",
    "reverse_hypergradient",
    "reverse_window_hypergradients",
    "finite_difference_hypergradient",
    "unroll",
]

StepFn = Callable[[torch.Tensor, torch.Tensor, Any], torch.Tensor]
ValFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class ForwardTrajectory:
    """Result of :func:`forward_trajectory`.

    ``h[k]`` is the hypergradient h_{s -> s + steps[k]}; ``final_state`` is theta at the end of
    the window; ``Z`` (q x P) the final state-tangent matrix d theta_t / d phi.
    """

    h: torch.Tensor
    steps: list[int]
    final_state: torch.Tensor
    Z: torch.Tensor
    val_losses: torch.Tensor

    @property
    def local(self) -> torch.Tensor:
        """The local hypergradient h_{s->s+tau} (last recorded entry)."""
        return self.h[-1]


@dataclass
class ReverseResult:
    """Result of :func:`reverse_hypergradient`: h_{s->T}, theta_T and the validation loss at T."""

    h: torch.Tensor
    final_state: torch.Tensor
    val_loss: float


def _check_inputs(state: torch.Tensor, phi: torch.Tensor, batches: Sequence[Any]) -> None:
    if not isinstance(state, torch.Tensor) or state.ndim != 1:
        raise ValueError(f"state must be a 1-D tensor (the flat inner state), got shape {tuple(state.shape)}")
    if not isinstance(phi, torch.Tensor) or phi.ndim != 1:
        raise ValueError(f"phi must be a 1-D tensor of hyperparameters, got shape {tuple(phi.shape)}")
    if len(batches) == 0:
        raise ValueError("batches is empty: a hypergradient needs at least one inner step")


def _val_grads(val_fn: ValFn, state: torch.Tensor, phi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(d val / d state, d val / d phi, val) at (state, phi), by plain autograd."""
    with torch.enable_grad():
        s = state.detach().requires_grad_(True)
        p = phi.detach().requires_grad_(True)
        v = val_fn(s, p)
        gs, gp = torch.autograd.grad(v, (s, p), allow_unused=True)
    gs = torch.zeros_like(s) if gs is None else gs
    gp = torch.zeros_like(p) if gp is None else gp
    return gs, gp, v.detach()


def _step_vjp(
    step_fn: StepFn, state: torch.Tensor, phi: torch.Tensor, batch: Any, cotangent: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(cotangent^T d step / d state, cotangent^T d step / d phi) at (state, phi), by plain autograd.

    ``phi`` must be a leaf that requires grad (one per engine call, shared by every step).
    ``torch.func.vjp`` would give the same numbers at about twice the cost on a small model:
    its per-call transform overhead, not the arithmetic, dominates there.
    """
    with torch.enable_grad():
        s = state.detach().requires_grad_(True)
        out = step_fn(s, phi, batch)
        ds, dp = torch.autograd.grad(out, (s, phi), cotangent, allow_unused=True)
    ds = torch.zeros_like(s) if ds is None else ds
    dp = torch.zeros_like(phi) if dp is None else dp
    return ds.detach(), dp.detach()


def unroll(step_fn: StepFn, state: torch.Tensor, phi: torch.Tensor, batches: Iterable[Any]) -> torch.Tensor:
    """Run the inner steps without recording derivatives; return the final state."""
    with torch.no_grad():
        for batch in batches:
            state = step_fn(state, phi, batch)
    return state


def forward_trajectory(
    step_fn: StepFn,
    val_fn: ValFn,
    state: torch.Tensor,
    phi: torch.Tensor,
    batches: Sequence[Any],
    *,
    chunk_size: int | None = None,
    record: Iterable[int] | None = None,
    Z0: torch.Tensor | None = None,
) -> ForwardTrajectory:
    """Exact h_{s->t} for every step t of a window, by forward-mode accumulation.

    ``Z_{t+1} = A_t Z_t + B_t`` with ``A_t = d step / d state`` and ``B_t = d step / d phi``;
    each column of Z is pushed through the step as a Jacobian-vector product, ``vmap``-ed over
    the q hyperparameter directions (``chunk_size`` columns at a time bounds the extra memory
    for q in the thousands). Then ``h_{s->t} = Z_t^T grad val(theta_t) + d val / d phi``.

    Parameters
    ----------
    record:
        1-based window offsets t - s at which to record h (default: every step). Recording
        costs one gradient of ``val_fn``; the Z recursion runs every step regardless.
    Z0:
        Initial tangent matrix (q x P); zero by default, i.e. theta_s held fixed.

    Returns
    -------
    ForwardTrajectory
        with ``h`` of shape (number of recorded steps, q). Memory does not grow with the
        window length beyond the (steps x q) output.
    """
    _check_inputs(state, phi, batches)
    q, P = phi.numel(), state.numel()
    record_set = None if record is None else {int(r) for r in record}
    if record_set is not None and not record_set:
        raise ValueError("record is empty: nothing to return")
    Z = torch.zeros(q, P, dtype=state.dtype, device=state.device) if Z0 is None else Z0
    if Z.shape != (q, P):
        raise ValueError(f"Z0 must have shape (q, P) = ({q}, {P}), got {tuple(Z.shape)}")
    eye = torch.eye(q, dtype=phi.dtype, device=phi.device)
    if record_set is not None:
        missing = sorted(r for r in record_set if r < 1 or r > len(batches))
        if missing:
            raise ValueError(f"record offsets {missing} lie outside the window 1..{len(batches)}")
    steps = [k for k in range(1, len(batches) + 1) if record_set is None or k in record_set]
    # Preallocated outputs: small per-step tensors kept alive between the large temporaries of
    # each step fragment the heap, and resident memory then grows with the window length.
    H = torch.empty(len(steps), q, dtype=phi.dtype, device=phi.device)
    vals = torch.empty(len(steps), dtype=state.dtype, device=state.device)
    row = 0
    state = state.detach()
    phi = phi.detach()
    for k, batch in enumerate(batches, start=1):

        def f(s: torch.Tensor, p: torch.Tensor, _batch: Any = batch) -> torch.Tensor:
            return step_fn(s, p, _batch)

        def push(z: torch.Tensor, e: torch.Tensor, _s: torch.Tensor = state) -> tuple[torch.Tensor, torch.Tensor]:
            return jvp(f, (_s, phi), (z, e))

        new_state, Z = vmap(push, chunk_size=chunk_size)(Z, eye)
        state = new_state[0].detach()
        Z = Z.detach()
        if record_set is None or k in record_set:
            gs, gp, v = _val_grads(val_fn, state, phi)
            torch.addmv(gp, Z, gs, out=H[row])
            vals[row] = v
            row += 1
    return ForwardTrajectory(h=H, steps=steps, final_state=state, Z=Z, val_losses=vals)


def _checkpoint_interval(checkpoint: None | str | int, T: int) -> int:
    if checkpoint is None:
        return 1
    if checkpoint == "sqrt":
        return max(1, math.ceil(math.sqrt(T)))
    if isinstance(checkpoint, int) and checkpoint >= 1:
        return checkpoint
    raise ValueError(f"checkpoint: expected None, 'sqrt' or a positive int, got {checkpoint!r}")


def reverse_hypergradient(
    step_fn: StepFn,
    val_fn: ValFn,
    state: torch.Tensor,
    phi: torch.Tensor,
    batches: Sequence[Any],
    *,
    checkpoint: None | str | int = None,
) -> ReverseResult:
    """Exact h_{s->T} by unrolled reverse mode (one backward chain of vector-Jacobian products).

    The forward pass stores the inner states (every one by default: memory O(T p)); with
    ``checkpoint='sqrt'`` (or an int k) it stores every k-th state and recomputes each segment
    during the backward pass: memory O((T/k + k) p) = O(sqrt(T) p), at the price of one more
    forward pass. The backward pass recomputes each step's graph from its stored state, so the
    autograd graph of only one step is alive at a time.

    ``checkpoint='graph'`` instead keeps the autograd graph of the whole forward pass (as
    ``higher`` and ``torchopt`` do) and runs one backward pass through it: no recomputation,
    about 0.6x the time of the default, but the memory of every step's activations and
    double-backward buffers, O(T (p + activations)).
    """
    _check_inputs(state, phi, batches)
    if checkpoint == "graph":
        return _reverse_through_graph(step_fn, val_fn, state, phi, batches)
    T = len(batches)
    k = _checkpoint_interval(checkpoint, T)
    phi = phi.detach()
    saved: dict[int, torch.Tensor] = {0: state.detach()}
    s = state.detach()
    with torch.no_grad():
        for t, batch in enumerate(batches):
            s = step_fn(s, phi, batch)
            if (t + 1) % k == 0 and t + 1 < T:
                saved[t + 1] = s
    final_state = s
    lam, g_phi, v = _val_grads(val_fn, final_state, phi)
    g_phi = g_phi.clone()
    leaf_phi = phi.detach().requires_grad_(True)  # one leaf for every step's vector-Jacobian product
    # Walk the segments backwards; inside a segment recompute its states from the checkpoint.
    seg_starts = sorted(saved)
    for seg_start in reversed(seg_starts):
        seg_end = min(seg_start + k, T)
        states = [saved[seg_start]]
        with torch.no_grad():
            for t in range(seg_start, seg_end - 1):
                states.append(step_fn(states[-1], phi, batches[t]))
        for t in range(seg_end - 1, seg_start - 1, -1):
            lam, dphi = _step_vjp(step_fn, states[t - seg_start], leaf_phi, batches[t], lam)
            g_phi += dphi
        del states
    return ReverseResult(h=g_phi.detach(), final_state=final_state, val_loss=float(v))


def _reverse_through_graph(
    step_fn: StepFn, val_fn: ValFn, state: torch.Tensor, phi: torch.Tensor, batches: Sequence[Any]
) -> ReverseResult:
    """``reverse_hypergradient(..., checkpoint='graph')``: backward through the recorded forward graph."""
    p = phi.detach().requires_grad_(True)
    s = state.detach()
    with torch.enable_grad():
        for batch in batches:
            s = step_fn(s, p, batch)
        v = val_fn(s, p)
        # phi may never enter the graph (a step and meta objective that ignore it): then h = 0
        h = torch.autograd.grad(v, p, allow_unused=True)[0] if v.requires_grad else None
    h = torch.zeros_like(p) if h is None else h
    return ReverseResult(h=h.detach(), final_state=s.detach(), val_loss=float(v.detach()))


def reverse_window_hypergradients(
    step_fn: StepFn,
    val_fn: ValFn,
    state: torch.Tensor,
    phi: torch.Tensor,
    batches: Sequence[Any],
    record_steps: Iterable[int] | None = None,
    *,
    chunk_size: int | None = None,
    checkpoint: None | str = None,
) -> ForwardTrajectory:
    """h_{s->t} for the recorded window offsets t, by reverse mode: one backward chain per recorded step.

    The chains cost the sum of the recorded offsets in vector-Jacobian products (tau(tau+1)/2
    when every step is recorded). By default the forward pass stores the window's states,
    O(tau p), and each step's graph is recomputed in the backward pass, where every chain alive
    at that step goes through it together (``is_grads_batched``, ``chunk_size`` chains at a
    time). ``checkpoint='graph'`` keeps the forward pass's graph instead (no recomputation,
    memory O(tau (p + activations))) and runs one backward pass per recorded step through it,
    which measured faster than batching the chains (benchmarks/README.md).
    The result has the same layout as :func:`forward_trajectory` (``Z`` is empty).
    """
    _check_inputs(state, phi, batches)
    if checkpoint not in (None, "graph"):
        raise ValueError(f"checkpoint: expected None or 'graph' for the window engine, got {checkpoint!r}")
    T = len(batches)
    rec = list(range(1, T + 1)) if record_steps is None else sorted({int(r) for r in record_steps})
    if not rec:
        raise ValueError("record_steps is empty: nothing to return")
    if rec[0] < 1 or rec[-1] > T:
        raise ValueError(f"record_steps must lie in 1..{T}, got {rec[0]}..{rec[-1]}")
    if checkpoint == "graph":
        return _window_through_graph(step_fn, val_fn, state, phi, batches, rec)
    phi = phi.detach()
    states = [state.detach()]
    with torch.no_grad():
        for batch in batches:
            states.append(step_fn(states[-1], phi, batch))
    q = phi.numel()
    order: list[int] = []
    vals: dict[int, torch.Tensor] = {}
    rec_set = set(rec)
    Lam = torch.zeros(0, state.numel(), dtype=state.dtype, device=state.device)
    G = torch.zeros(0, q, dtype=phi.dtype, device=phi.device)
    for t in range(rec[-1], 0, -1):  # no chain reaches past the last recorded step
        if t in rec_set:
            lam, gp, v = _val_grads(val_fn, states[t], phi)
            order.append(t)
            vals[t] = v
            Lam = torch.cat([Lam, lam[None]])
            G = torch.cat([G, gp[None]])
        dS, dP = _batched_vjp(_step_graph(step_fn, states[t - 1], phi, batches[t - 1]), Lam, chunk_size)
        Lam = dS
        G = G + dP
    # ``order`` is descending in t; return ascending like forward_trajectory.
    idx = torch.tensor(list(reversed(range(len(order)))), device=G.device)
    steps = list(reversed(order))
    return ForwardTrajectory(
        h=G[idx],
        steps=steps,
        final_state=states[-1],
        Z=torch.zeros(0, dtype=state.dtype, device=state.device),
        val_losses=torch.stack([vals[t] for t in steps]),
    )


def _window_through_graph(
    step_fn: StepFn, val_fn: ValFn, state: torch.Tensor, phi: torch.Tensor, batches: Sequence[Any], rec: list[int]
) -> ForwardTrajectory:
    """``reverse_window_hypergradients(..., checkpoint='graph')``: one backward pass per recorded step."""
    p = phi.detach().requires_grad_(True)
    s = state.detach()
    vals = []
    with torch.enable_grad():
        for t, batch in enumerate(batches[: rec[-1]], start=1):
            s = step_fn(s, p, batch)
            if t == rec[len(vals)]:
                vals.append(val_fn(s, p))
        # Shortest chain first; the last (longest) backward pass frees the graph. phi may never
        # enter the graph (a step and meta objective that ignore it): then h = 0.
        grads = [torch.autograd.grad(v, p, retain_graph=k + 1 < len(vals), allow_unused=True)[0]
                 if v.requires_grad else None for k, v in enumerate(vals)]
    s = s.detach()
    with torch.no_grad():
        for batch in batches[rec[-1] :]:
            s = step_fn(s, phi.detach(), batch)
    h = torch.stack([torch.zeros_like(p) if g is None else g for g in grads]).detach()
    return ForwardTrajectory(
        h=h,
        steps=rec,
        final_state=s,
        Z=torch.zeros(0, dtype=state.dtype, device=state.device),
        val_losses=torch.stack([v.detach() for v in vals]),
    )


def _step_graph(
    step_fn: StepFn, state: torch.Tensor, phi: torch.Tensor, batch: Any
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(state leaf, phi leaf, output) of one step, recorded for a backward pass."""
    with torch.enable_grad():
        s = state.detach().requires_grad_(True)
        p = phi.detach().requires_grad_(True)
        return s, p, step_fn(s, p, batch)


def _batched_vjp(
    graph: tuple[torch.Tensor, torch.Tensor, torch.Tensor], cotangents: torch.Tensor, chunk_size: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(C d step / d state, C d step / d phi) for the rows of C through one recorded step graph.

    The rows go through the backward pass together (``is_grads_batched``: a vmap over the
    backward graph), ``chunk_size`` rows at a time.
    """
    s, p, out = graph
    k = cotangents.shape[0]
    size = k if chunk_size is None else max(1, int(chunk_size))
    parts_s, parts_p = [], []
    for lo in range(0, k, size):
        block = cotangents[lo : lo + size]
        ds, dp = torch.autograd.grad(
            out, (s, p), block, retain_graph=lo + size < k, is_grads_batched=True, allow_unused=True
        )
        parts_s.append(torch.zeros_like(block) if ds is None else ds.detach())
        parts_p.append(block.new_zeros(block.shape[0], p.numel()) if dp is None else dp.detach())
    return torch.cat(parts_s), torch.cat(parts_p)


def finite_difference_hypergradient(
    step_fn: StepFn,
    val_fn: ValFn,
    state: torch.Tensor,
    phi: torch.Tensor,
    batches: Sequence[Any],
    *,
    eps: float = 1e-5,
    indices: Iterable[int] | None = None,
) -> torch.Tensor:
    """Central finite differences of val(theta_T(phi)) in each coordinate of phi (for checks).

    Costs 2 q unrolls; use float64. ``indices`` restricts the coordinates (others are NaN).
    """
    _check_inputs(state, phi, batches)
    phi = phi.detach()
    out = torch.full_like(phi, float("nan"))
    idx = range(phi.numel()) if indices is None else indices
    with torch.no_grad():
        for j in idx:
            e = torch.zeros_like(phi)
            e[j] = eps
            plus = val_fn(unroll(step_fn, state, phi + e, batches), phi + e)
            minus = val_fn(unroll(step_fn, state, phi - e, batches), phi - e)
            out[j] = (plus - minus) / (2 * eps)
    return out
