"""Figure 7: the quadratic-system theory figures (error against the window length, the error bound, the
recovered spectrum), from the CSVs of ``glocal theory`` (results/theory/). ``theory_checks.figures``, which
the theory runner calls, draws them with these functions."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import read_csv, to_float

NAMES = ["theory_error_vs_tau", "theory_bound", "theory_spectrum"]
_TEXT = {"case", "which", "fallback"}
#: what each kind of quadratic problem of theory_checks/quadratic.py is
KIND_TEXT = {
    "spd_decay": "SPD quadratic, weight decay tuned",
    "ridge_weights": "ridge regression, example weights tuned",
    "step_size": "SPD quadratic, step size tuned",
}
_CASE = re.compile(r"^(?P<kind>[a-z_]+)-p(?P<p>\d+)-q(?P<q>\d+)-k(?P<k>[^-]+)-a(?P<a>[^-]+)-s(?P<s>\d+)$")
FLOOR = 1e-5


def describe(case: str, short: bool = False) -> str:
    """A reader's name for a theory case id such as ``spd_decay-p1-q1-k3-a0.5-s0``: what the system is, its
    size p, hyperparameters q, condition number kappa and step alpha (as a fraction of 1/L)."""
    m = _CASE.match(case)
    if not m:
        return case
    what = KIND_TEXT.get(m["kind"], m["kind"].replace("_", " "))
    size = f"p={m['p']}, q={m['q']}, κ={m['k']}, α={m['a']}/L"
    return what if short else f"{what} ({size})"


def _numeric(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{k: (v if k in _TEXT else to_float(v)) for k, v in r.items()} for r in rows]


def _group(rows: Sequence[dict[str, Any]], max_cases: int) -> dict[str, list[dict[str, Any]]]:
    g: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["case"] in g or len(g) < max_cases:
            g[r["case"]].append(r)
    return g


def _pos(x: float) -> float:
    return max(float(x), 1e-18)


def _sci(x: float) -> str:
    """1e-5 rather than Python's 1e-05."""
    m, e = f"{x:.0e}".split("e")
    return f"{m}e{int(e)}"


def _wrap(text: str, width: int = 34) -> str:
    words, lines, cur = text.split(" "), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return "\n".join(lines + [cur])


def plot_error_vs_tau(rows: Sequence[dict[str, Any]], out_stem: str | Path, floor: float = FLOOR,
                      max_cases: int = 4, dpi: int | None = None) -> dict[str, Any]:
    """Relative error of glocal (POD rank n), the plain pseudo-inverse fit and local against the window length
    tau, one panel per problem, with the threshold tau = n + d + 1 and the error floor marked."""
    groups = _group(rows, max_cases)
    k = max(1, len(groups))
    fig, axes = style.subplots(1, k, w=3.3, h=3.8, sharey=True)
    data: dict[str, Any] = {"cases": list(groups)}
    if not groups:
        style.empty(axes[0, 0], "no theory results: run `glocal theory`")
    for ax, (case, rs) in zip(axes[0], groups.items()):
        ax.set_label(case)
        rs = sorted(rs, key=lambda r: int(r["tau"]))
        tau = [int(r["tau"]) for r in rs]
        ax.semilogy(tau, [_pos(r["glocal_error"]) for r in rs], "o-", ms=3, color=style.COLORS["glocal"],
                    label="glocal limit, POD rank n")
        ax.semilogy(tau, [_pos(r["plain_error"]) for r in rs], "s:", ms=3, color="#ff7f0e",
                    label="glocal limit, plain pseudo-inverse")
        ax.semilogy(tau, [_pos(r["local_error"]) for r in rs], "^--", ms=3, color=style.COLORS["local"],
                    label=r"local $h_\tau$")
        thr = int(rs[0]["threshold"])
        ax.axvline(thr, color="k", lw=0.8, ls="-.", label=r"threshold $\tau$ = n + d + 1")
        ax.axhline(floor, color="gray", lw=0.8, ls=":", label=f"{_sci(floor)} error floor")
        ax.set_title(_wrap(f"{describe(case)}; n={int(rs[0]['n'])}, d={int(rs[0]['d'])}, n+d+1={thr}"), fontsize=8)
        ax.set_xlabel(r"window length $\tau$ (steps)")
    axes[0, 0].set_ylabel(r"relative error $\|\hat h - h_\infty\| / \|h_\infty\|$")
    fig.suptitle("Quadratic problems with a known limit: glocal reaches the error floor from τ = n + d + 1 on",
                 fontsize=10)
    style.finish(fig)
    style.legend_below(fig, axes, ncol=3)
    fig.subplots_adjust(bottom=0.26, top=0.76)
    data.update(style.save(fig, out_stem, dpi))
    return data


def plot_bound(rows: Sequence[dict[str, Any]], out_stem: str | Path, max_cases: int = 4,
               dpi: int | None = None) -> dict[str, Any]:
    """||h_T - h_inf|| (solid) against T under its Jordan-form bound (dashed, same colour), one colour per
    problem, named in the legend (outside the axes, so it covers no curve)."""
    groups = _group(rows, max_cases)
    fig, axes = style.subplots(1, 1, w=5.0, h=3.4)
    ax = axes[0, 0]
    ax.set_label("bound")
    data: dict[str, Any] = {"cases": list(groups)}
    if not groups:
        style.empty(ax, "no theory results: run `glocal theory`")
    for case, rs in groups.items():
        rs = sorted(rs, key=lambda r: int(r["T"]))
        T = [int(r["T"]) for r in rs]
        line = ax.semilogy(T, [_pos(r["error"]) for r in rs], "-", lw=1.3, label=describe(case))[0]
        ax.semilogy(T, [_pos(r["bound"]) for r in rs], "--", lw=1.0, color=line.get_color(),
                    label=f"_bound {case}")
    ax.set_xlabel("training horizon T (steps)")
    ax.set_ylabel(r"$\|h_T - h_\infty\|$ (solid), bound (dashed)")
    ax.set_title("The error stays under its Jordan-form bound at every T", fontsize=9)
    ax.plot([], [], "k-", label=r"$\|h_T - h_\infty\|$")
    ax.plot([], [], "k--", label="its bound")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8, title="problem")
    style.finish(fig)
    data.update(style.save(fig, out_stem, dpi))
    return data


def plot_spectrum(rows: Sequence[dict[str, Any]], out_stem: str | Path, max_cases: int = 4,
                  dpi: int | None = None, match_tol: float = 1e-3) -> dict[str, Any]:
    """Recovered (x) against exact (o) Koopman eigenvalues, one colour per problem, unit circle drawn. A fitted
    eigenvalue with no exact one within ``match_tol`` (a spurious mode of the fit, typically near 0) is drawn
    as a gray + and counted in a note, so that no x stands without its o unexplained."""
    groups = _group(rows, max_cases)
    fig, axes = style.subplots(1, 1, w=4.2, h=4.2)
    ax = axes[0, 0]
    ax.set_label("spectrum")
    th = np.linspace(0, 2 * np.pi, 721)
    ax.plot(np.cos(th), np.sin(th), color="gray", lw=0.6, label="unit circle")
    notes: list[str] = []
    spurious: list[complex] = []
    data: dict[str, Any] = {"cases": list(groups)}
    for case, rs in groups.items():
        tr = np.array([complex(r["re"], r["im"]) for r in rs if r["which"] == "true"])
        ft = np.array([complex(r["re"], r["im"]) for r in rs if r["which"] == "fitted"])
        matched = np.array([len(tr) > 0 and np.min(np.abs(tr - z)) <= match_tol for z in ft], dtype=bool)
        spurious += ft[~matched].tolist()
        line = ax.plot(tr.real, tr.imag, "o", mfc="none", ms=8, label=describe(case))[0]
        ax.plot(ft[matched].real, ft[matched].imag, "x", ms=6, mew=1.2, color=line.get_color(), label=f"_fit {case}")
    ax.plot([], [], "ko", mfc="none", label="exact eigenvalue (o)")
    ax.plot([], [], "kx", label="Hankel-DMD fit (x)")
    if spurious:
        z = np.array(spurious)
        ax.plot(z.real, z.imag, "+", color="0.35", ms=8, mew=1.2,
                label=f"fitted eigenvalue without an exact one ({len(z)})")
        at = ", ".join(f"{v:.2g}" for v in sorted(np.abs(z))[:6]) + (", ..." if len(z) > 6 else "")
        one = ("; |λ| = 1 is the fit's constant observable, in a problem whose exact spectrum has no eigenvalue 1"
               if np.any(np.abs(np.abs(z) - 1) < match_tol) else "")
        notes.append(f"+: {len(z)} fitted eigenvalue(s) match no exact eigenvalue within {match_tol:g}, at |λ| = {at}: "
                     f"modes of the fit outside the spectrum check{one}")
    data["spurious"] = len(spurious)
    ax.set_aspect("equal")
    ax.set_xlabel(r"Re $\mu$ (eigenvalue)")
    ax.set_ylabel(r"Im $\mu$")
    ax.set_title("Exact (o) and Hankel-DMD recovered (x) eigenvalues", fontsize=9)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=8, title="problem")
    style.finish(fig)
    style.footnote(fig, notes)
    data.update(style.save(fig, out_stem, dpi))
    data["notes"] = notes
    return data


def read_theory(theory_dir: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of results/theory/{error_vs_tau,bound_vs_T,spectrum}.csv, numbers parsed."""
    theory_dir = Path(theory_dir)
    tau = _numeric(read_csv(theory_dir / "error_vs_tau.csv"))
    bound = _numeric(read_csv(theory_dir / "bound_vs_T.csv"))
    spec = _numeric(read_csv(theory_dir / "spectrum.csv"))
    for r in tau:
        r["tau"], r["threshold"], r["n"], r["d"] = (int(r[k]) for k in ("tau", "threshold", "n", "d"))
    for r in bound:
        r["T"] = int(r["T"])
    return {"theory_error_vs_tau": tau, "theory_bound": bound, "theory_spectrum": spec}


def plot_theory(theory_dir: str | Path, out_dir: str | Path, dpi: int = 300) -> dict[str, Any]:
    """Write theory_error_vs_tau, theory_bound, theory_spectrum (.png/.pdf) into ``out_dir`` from
    ``theory_dir``/{error_vs_tau,bound_vs_T,spectrum}.csv; a missing CSV gives a figure saying so.
    Returns {name: the figure's data} plus 'paths' and 'rows'."""
    from theory_checks.runner import _pick

    theory_dir, out_dir = Path(theory_dir), Path(out_dir)
    rows = read_theory(theory_dir)
    out: dict[str, Any] = {"paths": [], "rows": {k: len(v) for k, v in rows.items()}}
    for name, fn, sel in (("theory_error_vs_tau", plot_error_vs_tau, _pick), ("theory_bound", plot_bound, None),
                          ("theory_spectrum", plot_spectrum, None)):
        r = rows[name]
        if r:
            d = fn(sel(r) if sel else r, out_dir / name, dpi=dpi)
        else:
            fig, axes = style.subplots(1, 1, w=4, h=3)
            style.empty(axes[0, 0], f"no theory results ({theory_dir}): run `glocal theory`")
            d = style.save(fig, out_dir / name, dpi=dpi)
        out[name] = d
        out["paths"] += d["paths"]
    return out
