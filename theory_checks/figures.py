"""The three theory figures (matplotlib Agg; PNG at 300 dpi + PDF), drawn from the runner's CSV rows."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_error_vs_tau", "plot_bound", "plot_spectrum", "save"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save(fig, out: Path, name: str, dpi: int = 300) -> list[Path]:
    """Write ``name``.png (``dpi``) and ``name``.pdf under ``out``; close the figure."""
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{name}.png", out / f"{name}.pdf"]
    fig.savefig(paths[0], dpi=dpi, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    _plt().close(fig)
    return paths


def _group(rows: Sequence[dict[str, Any]], max_cases: int) -> dict[str, list[dict[str, Any]]]:
    g: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["case"] in g or len(g) < max_cases:
            g[r["case"]].append(r)
    return g


def _pos(x: float) -> float:
    return max(float(x), 1e-18)


def plot_error_vs_tau(rows: Sequence[dict[str, Any]], out: Path, floor: float = 1e-5, max_cases: int = 4,
                      dpi: int = 300) -> list[Path]:
    """Relative error of glocal (rank n), plain pseudo-inverse and local against tau, one panel per case,
    with the threshold tau = n + d + 1 and the 1e-5 floor marked."""
    plt = _plt()
    groups = _group(rows, max_cases)
    k = max(1, len(groups))
    fig, axes = plt.subplots(1, k, figsize=(3.2 * k, 2.9), squeeze=False, sharey=True)
    for ax, (case, rs) in zip(axes[0], groups.items()):
        rs = sorted(rs, key=lambda r: int(r["tau"]))
        tau = [int(r["tau"]) for r in rs]
        ax.semilogy(tau, [_pos(r["glocal_error"]) for r in rs], "o-", ms=3, label="glocal (r = n)")
        ax.semilogy(tau, [_pos(r["plain_error"]) for r in rs], "s:", ms=3, label="plain pinv")
        ax.semilogy(tau, [_pos(r["local_error"]) for r in rs], "^--", ms=3, label="local $h_\\tau$")
        thr = int(rs[0]["threshold"])
        ax.axvline(thr, color="k", lw=0.8, ls="-.")
        ax.text(thr, 1.0, f" n+d+1={thr}", fontsize=7, va="top")
        ax.axhline(floor, color="gray", lw=0.6, ls=":")
        ax.set_title(f"{case}\n(n={rs[0]['n']}, d={rs[0]['d']})", fontsize=7)
        ax.set_xlabel(r"window length $\tau$")
    axes[0][0].set_ylabel(r"$\|h - h_\infty\| / \|h_\infty\|$")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return save(fig, out, "theory_error_vs_tau", dpi)


def plot_bound(rows: Sequence[dict[str, Any]], out: Path, max_cases: int = 4, dpi: int = 300) -> list[Path]:
    """||h_T - h_inf|| against T under the Jordan-form bound."""
    plt = _plt()
    groups = _group(rows, max_cases)
    fig, ax = plt.subplots(figsize=(4.5, 3.2))
    for case, rs in groups.items():
        rs = sorted(rs, key=lambda r: int(r["T"]))
        T = [int(r["T"]) for r in rs]
        line = ax.semilogy(T, [_pos(r["error"]) for r in rs], "-", lw=1.2, label=case)[0]
        ax.semilogy(T, [_pos(r["bound"]) for r in rs], "--", lw=0.9, color=line.get_color())
    ax.set_xlabel("T")
    ax.set_ylabel(r"$\|h_T - h_\infty\|$ (solid), bound (dashed)")
    ax.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, out, "theory_bound", dpi)


def plot_spectrum(rows: Sequence[dict[str, Any]], out: Path, max_cases: int = 4, dpi: int = 300) -> list[Path]:
    """Recovered (x) against true (o) Koopman eigenvalues in the complex plane, unit circle drawn."""
    import numpy as np

    plt = _plt()
    groups = _group(rows, max_cases)
    fig, ax = plt.subplots(figsize=(4.0, 4.0))
    th = np.linspace(0, 2 * np.pi, 400)
    ax.plot(np.cos(th), np.sin(th), color="gray", lw=0.6)
    for case, rs in groups.items():
        tr = [r for r in rs if r["which"] == "true"]
        ft = [r for r in rs if r["which"] == "fitted"]
        line = ax.plot([r["re"] for r in tr], [r["im"] for r in tr], "o", mfc="none", ms=7, label=f"{case} true")[0]
        ax.plot([r["re"] for r in ft], [r["im"] for r in ft], "x", ms=5, color=line.get_color())
    ax.set_aspect("equal")
    ax.set_xlabel("Re $\\mu$")
    ax.set_ylabel("Im $\\mu$")
    ax.set_title("o: exact, x: Hankel-DMD fit", fontsize=8)
    ax.legend(fontsize=5, loc="lower left")
    fig.tight_layout()
    return save(fig, out, "theory_spectrum", dpi)
