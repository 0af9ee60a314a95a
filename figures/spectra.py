"""Figure 5: fitted Koopman eigenvalues in the complex plane with the unit circle, per window, coloured by
training progress (glocal HPO runs) and by window start (extraction at fixed phi), each with a zoom on the
region near 1; fits that the guards rejected (fell back to local) are drawn as x."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from figures import style
from figures.io import to_float

FULL = 1.6  #: the full panels show [-FULL, FULL]^2
ZOOM = ((0.8, 1.05), (-0.125, 0.125))  #: the zoom panels: Re, Im ranges around 1
#: marker per fit status: accepted fits (o), rejected by the guards (x), flagged degenerate (+)
STATUS_MARKER = {"accepted": "o", "fallback": "x", "degenerate": "+"}
STATUS_TEXT = {"accepted": "accepted fit", "fallback": "fit rejected by the guards (fell back to local)",
               "degenerate": "degenerate fit (flagged by the estimator)"}


class Window(NamedTuple):
    """One glocal window of an HPO run: its start step, the fitted eigenvalues and the fit's status."""

    step: int
    eigenvalues: np.ndarray
    status: str


def fit_status(record: Mapping[str, Any]) -> str:
    """'fallback' when the guards rejected the fit, 'degenerate' when the estimator flagged it, else 'accepted'."""
    if record.get("fallback"):
        return "fallback"
    if record.get("degenerate"):
        return "degenerate"
    return "accepted"


def windows_from_hypergrads(records: Sequence[dict[str, Any]]) -> list[Window]:
    """The windows of a glocal run's hypergrads.jsonl that have eigenvalues (a fallback before the fit has
    none and is skipped; a fit rejected after it keeps its eigenvalues, with status 'fallback')."""
    out = []
    for r in records:
        ev = r.get("eigenvalues")
        if not ev:
            continue
        z = np.array([complex(float(a), float(b)) for a, b in ev])
        out.append(Window(int(r.get("step", 0)), z, fit_status(r)))
    return out


def _circle(ax, zoom: bool = False):
    th = np.linspace(0, 2 * np.pi, 3601)
    ax.plot(np.cos(th), np.sin(th), color="k", lw=0.7, label="unit circle")
    ax.axhline(0, color="0.7", lw=0.4)
    ax.axvline(0 if not zoom else 1, color="0.7", lw=0.4)
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(r"Re $\lambda$ (eigenvalue)")
    ax.set_ylabel(r"Im $\lambda$")
    if zoom:
        ax.set_xlim(*ZOOM[0])
        ax.set_ylim(*ZOOM[1])
    else:
        ax.set_xlim(-FULL, FULL)
        ax.set_ylim(-FULL, FULL)


def _outside(z: np.ndarray, zoom: bool) -> int:
    if zoom:
        return int(np.sum((z.real < ZOOM[0][0]) | (z.real > ZOOM[0][1]) | (z.imag < ZOOM[1][0])
                          | (z.imag > ZOOM[1][1])))
    return int(np.sum((np.abs(z.real) > FULL) | (np.abs(z.imag) > FULL)))


def _view_note(z: np.ndarray, zoom: bool) -> str:
    out = _outside(z, zoom)
    if not len(z):
        return ""
    if zoom:
        return f"{len(z) - out} of {len(z)} eigenvalues inside"
    return f"{out} of {len(z)} eigenvalues off the plot (max |λ| = {np.abs(z).max():.3g})" if out else ""


def plot_koopman_spectra(windows: Mapping[str, Sequence[Window | tuple]],
                         extract_rows: Mapping[str, Sequence[dict[str, Any]]], out_stem: str | Path,
                         steps: Mapping[str, int] | None = None) -> dict[str, Any]:
    """``windows``: {task: [Window(start step, eigenvalues, status)]} of a glocal run; ``extract_rows``: {task:
    spectra.csv rows} — full batch, realization 0, the largest tau, the limit fit, one colour per window start.
    Columns: HPO windows, their zoom near 1, extraction fits, their zoom near 1."""
    tasks = sorted(set(windows) | set(extract_rows))
    fig, axes = style.subplots(max(1, len(tasks)), 4, w=3.3, h=3.3)
    data: dict[str, Any] = {"hpo": {}, "extract": {}, "status": {}}
    notes: list[str] = []
    if not tasks:
        style.empty(axes[0, 0], "no glocal runs and no extraction spectra")
        for ax in axes[0, 1:]:
            style.empty(ax, "")
    cmap = style.plt.get_cmap("viridis")
    for i, task in enumerate(tasks):
        ws = [Window(*w) if len(w) == 3 else Window(w[0], w[1], "accepted") for w in windows.get(task, [])]
        T = (steps or {}).get(task) or (max((w.step for w in ws), default=0) or 1)
        for zoom, ax in ((False, axes[i, 0]), (True, axes[i, 1])):
            ax.set_label(f"hpo/{task}" + ("/zoom" if zoom else ""))
            _circle(ax, zoom)
            if not ws:
                style.empty(ax, f"{task}: no glocal run with eigenvalues")
                continue
            sc = None
            for status in STATUS_MARKER:
                sel = [w for w in ws if w.status == status and len(w.eigenvalues)]
                if not sel:
                    continue
                z = np.concatenate([w.eigenvalues for w in sel])
                c = np.concatenate([np.full(len(w.eigenvalues), w.step / T) for w in sel])
                kw = {"edgecolors": "k", "lw": 0.2} if status == "accepted" else {"lw": 1.0}
                sc = ax.scatter(z.real, z.imag, c=c, cmap=cmap, vmin=0, vmax=1, s=14 if zoom else 9,
                                marker=STATUS_MARKER[status], label=f"{STATUS_TEXT[status]} ({len(sel)} windows)",
                                zorder=3, **kw)
                # the same points as an invisible line, so the plotted data can be read back
                ax.plot(z.real, z.imag, ls="none", marker="none", label=f"_data {status}")
                if not zoom:
                    data["status"][(task, status)] = len(sel)
                    if status == "accepted":
                        data["hpo"][task] = (z.real.tolist(), z.imag.tolist(), c.tolist())
            allz = np.concatenate([w.eigenvalues for w in ws])
            if not zoom:
                ax.legend(loc="lower left", fontsize=7, framealpha=0.9, handletextpad=0.3)
            if zoom and sc is not None:
                cb = fig.colorbar(sc, ax=ax, shrink=0.75)
                cb.set_label("window start / training steps")
            note = _view_note(allz, zoom)
            n_bad = sum(w.status != "accepted" for w in ws)
            if zoom:
                ax.set_title(f"{task}: HPO run, zoom near 1\n({note})", fontsize=8)
            else:
                ax.set_title(f"{task}: glocal HPO run\n{len(ws)} window fits"
                             + (f", {n_bad} rejected" if n_bad else ", none rejected"), fontsize=8)
                if note:
                    notes.append(f"{task}, HPO run: {note}")
                n0 = sum(bool(len(w.eigenvalues)) and float(np.abs(w.eigenvalues).max()) < 1e-3 for w in ws)
                if n0:
                    notes.append(f"{task}, HPO run: {n0} of {len(ws)} windows have every |λ| < 1e-3 (at the origin)")
        rows = [r for r in extract_rows.get(task, []) if r.get("setting") == "full"
                and str(r.get("realization")) == "0" and r.get("estimator") == "limit"]
        for zoom, ax in ((False, axes[i, 2]), (True, axes[i, 3])):
            ax.set_label(f"extract/{task}" + ("/zoom" if zoom else ""))
            _circle(ax, zoom)
            if not rows:
                style.empty(ax, f"{task}: no full-batch extraction spectra")
                continue
            tau = max(to_float(r["tau"]) for r in rows)
            sel = [r for r in rows if to_float(r["tau"]) == tau]
            starts = sorted({int(to_float(r["window_start"])) for r in sel})
            vmax = max(starts) or 1
            allz = []
            for s in starts:
                rs = [r for r in sel if int(to_float(r["window_start"])) == s]
                z = np.array([complex(to_float(r["re"]), to_float(r["im"])) for r in rs])
                allz.append(z)
                ax.scatter(z.real, z.imag, color=cmap(s / vmax), s=16 if zoom else 12, lw=0.3, edgecolors="k",
                           label=f"window start {s}", zorder=3)
                ax.plot(z.real, z.imag, ls="none", marker="none", label=f"_data s={s}")
                if not zoom:
                    data["extract"][(task, s)] = (z.real.tolist(), z.imag.tolist())
            note = _view_note(np.concatenate(allz), zoom)
            if zoom:
                ax.set_title(f"{task}: extraction, zoom near 1\n({note})", fontsize=8)
                ax.legend(loc="upper left", fontsize=7, framealpha=0.9)
            else:
                ax.set_title(f"{task}: extraction at fixed φ\nfull batch, τ={int(tau)}", fontsize=8)
                if note:
                    notes.append(f"{task}, extraction: {note}")
    fig.suptitle("Fitted Koopman eigenvalues of the hypergradient trajectories (DMD of each window); "
                 "o: accepted fit, x: rejected by the guards (fell back to local)", fontsize=10)
    style.finish(fig)
    style.footnote(fig, notes)
    data.update(style.save(fig, out_stem))
    return data
