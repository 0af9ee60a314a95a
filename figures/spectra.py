"""Figure 5: fitted Koopman eigenvalues in the complex plane with the unit circle, per window, coloured by
training progress (glocal HPO runs) and by window start (extraction at fixed phi)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import to_float


def windows_from_hypergrads(records: Sequence[dict[str, Any]]) -> list[tuple[int, np.ndarray]]:
    """[(window start step, complex eigenvalues)] of a glocal run's hypergrads.jsonl (records with
    eigenvalues; fallback windows without a fit are skipped)."""
    out = []
    for r in records:
        ev = r.get("eigenvalues")
        if not ev:
            continue
        z = np.array([complex(float(a), float(b)) for a, b in ev])
        out.append((int(r.get("step", 0)), z))
    return out


def _circle(ax):
    th = np.linspace(0, 2 * np.pi, 361)
    ax.plot(np.cos(th), np.sin(th), color="k", lw=0.7, label="unit circle")
    ax.axhline(0, color="0.7", lw=0.4)
    ax.axvline(0, color="0.7", lw=0.4)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(r"Re $\lambda$")
    ax.set_ylabel(r"Im $\lambda$")


def _scatter(ax, z, c, cmap, vmin, vmax, label):
    sc = ax.scatter(z.real, z.imag, c=c, cmap=cmap, vmin=vmin, vmax=vmax, s=9, lw=0.2, edgecolors="k",
                    label=label)
    # the same points as an invisible line, so the plotted data can be read back
    ax.plot(z.real, z.imag, ls="none", marker="none", label=f"_data {label}")
    return sc


def _view(ax, z: np.ndarray, lim: float = 1.6) -> list[str]:
    """Zoom to [-lim, lim]^2 (the unit circle region); count eigenvalues outside."""
    ax.set_xlim(-lim, lim)
    ax.set_ylim(-lim, lim)
    out = int(np.sum(np.abs(z) > lim * 1.0)) if len(z) else 0
    return [f"{out} eigenvalue(s) with |λ| > {lim} off the plot (max |λ| = {np.abs(z).max():.3g})"] if out else []


def plot_koopman_spectra(windows: Mapping[str, Sequence[tuple[int, np.ndarray]]],
                         extract_rows: Mapping[str, Sequence[dict[str, Any]]], out_stem: str | Path,
                         steps: Mapping[str, int] | None = None) -> dict[str, Any]:
    """``windows``: {task: [(window start step, eigenvalues)]} from a glocal run (seed shown in the title
    by the caller via ``steps``' keys); ``extract_rows``: {task: spectra.csv rows} — full batch,
    realization 0, the largest tau, the limit fit, one colour per window start."""
    tasks = sorted(set(windows) | set(extract_rows))
    fig, axes = style.subplots(max(1, len(tasks)), 2, w=3.4, h=3.2)
    data: dict[str, Any] = {"hpo": {}, "extract": {}}
    if not tasks:
        style.empty(axes[0, 0], "no glocal runs and no extraction spectra")
        style.empty(axes[0, 1], "")
    for i, task in enumerate(tasks):
        ax = axes[i, 0]
        ax.set_label(f"hpo/{task}")
        _circle(ax)
        ws = windows.get(task, [])
        T = (steps or {}).get(task) or (max((s for s, _ in ws), default=0) or 1)
        if ws:
            z = np.concatenate([w for _, w in ws])
            c = np.concatenate([np.full(len(w), s / T) for s, w in ws])
            sc = _scatter(ax, z, c, "viridis", 0, 1, f"{len(ws)} windows")
            cb = fig.colorbar(sc, ax=ax, shrink=0.8)
            cb.set_label("window start / training steps")
            notes = _view(ax, z)
            n0 = sum(bool(len(w)) and float(np.abs(w).max()) < 1e-3 for _, w in ws)
            if n0:
                notes.append(f"{n0} of {len(ws)} windows: all |λ| < 1e-3 (at the origin)")
            if notes:
                style.note(ax, "\n".join(notes), loc="bottom")
            data["hpo"][task] = (z.real.tolist(), z.imag.tolist(), c.tolist())
            ax.set_title(f"{task}: glocal HPO run, every window fit ({len(ws)})")
        else:
            style.empty(ax, f"{task}: no glocal run with eigenvalues")
        ax = axes[i, 1]
        ax.set_label(f"extract/{task}")
        _circle(ax)
        rows = [r for r in extract_rows.get(task, []) if r.get("setting") == "full"
                and str(r.get("realization")) == "0" and r.get("estimator") == "limit"]
        if rows:
            tau = max(to_float(r["tau"]) for r in rows)
            rows = [r for r in rows if to_float(r["tau"]) == tau]
            starts = sorted({int(to_float(r["window_start"])) for r in rows})
            vmax = max(starts) or 1
            allz = []
            for s in starts:
                rs = [r for r in rows if int(to_float(r["window_start"])) == s]
                z = np.array([complex(to_float(r["re"]), to_float(r["im"])) for r in rs])
                allz.append(z)
                ax.scatter(z.real, z.imag, color=style.plt.get_cmap("viridis")(s / vmax), s=12, lw=0.3,
                           edgecolors="k", label=f"window start s={s}")
                ax.plot(z.real, z.imag, ls="none", marker="none", label=f"_data s={s}")
                data["extract"][(task, s)] = (z.real.tolist(), z.imag.tolist())
            notes = _view(ax, np.concatenate(allz))
            if notes:
                style.note(ax, "\n".join(notes), loc="bottom")
            ax.set_title(f"{task}: extraction at fixed φ, full batch, τ={int(tau)}")
            ax.legend(loc="upper left", fontsize=6)
        else:
            style.empty(ax, f"{task}: no full-batch extraction spectra")
    fig.suptitle("Fitted Koopman eigenvalues of the hypergradient trajectories (DMD of each window)", fontsize=9)
    fig.tight_layout()
    data.update(style.save(fig, out_stem))
    return data
