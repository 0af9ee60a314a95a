"""Figure 7: the quadratic-system theory figures, drawn by ``theory_checks.figures`` from results/theory CSVs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from figures.io import read_csv, to_float

NAMES = ["theory_error_vs_tau", "theory_bound", "theory_spectrum"]
_TEXT = {"case", "which", "fallback"}


def _numeric(rows: list[dict[str, str]]) -> list[dict[str, Any]]:
    return [{k: (v if k in _TEXT else to_float(v)) for k, v in r.items()} for r in rows]


def plot_theory(theory_dir: str | Path, out_dir: str | Path, dpi: int = 300) -> dict[str, Any]:
    """Write theory_error_vs_tau, theory_bound, theory_spectrum (.png/.pdf) into ``out_dir`` from
    ``theory_dir``/{error_vs_tau,bound_vs_T,spectrum}.csv; a missing CSV gives a figure saying so."""
    from figures import style
    from theory_checks import figures as tf

    theory_dir, out_dir = Path(theory_dir), Path(out_dir)
    out: dict[str, Any] = {"paths": [], "rows": {}}
    tau = _numeric(read_csv(theory_dir / "error_vs_tau.csv"))
    bound = _numeric(read_csv(theory_dir / "bound_vs_T.csv"))
    spec = _numeric(read_csv(theory_dir / "spectrum.csv"))
    for r in tau:
        r["tau"], r["threshold"], r["n"], r["d"] = (int(r[k]) for k in ("tau", "threshold", "n", "d"))
    for r in bound:
        r["T"] = int(r["T"])
    out["rows"] = {"theory_error_vs_tau": len(tau), "theory_bound": len(bound), "theory_spectrum": len(spec)}
    try:
        from theory_checks.runner import _pick
        tau_sel = _pick(tau)
    except ImportError:  # pragma: no cover
        tau_sel = tau
    for name, rows, fn in (("theory_error_vs_tau", tau_sel, tf.plot_error_vs_tau),
                           ("theory_bound", bound, tf.plot_bound), ("theory_spectrum", spec, tf.plot_spectrum)):
        if rows:
            out["paths"] += [str(p) for p in fn(rows, out_dir, dpi=dpi)]
        else:
            fig, axes = style.subplots(1, 1, w=4, h=3)
            style.empty(axes[0, 0], f"no theory results ({theory_dir}): run `glocal theory`")
            out["paths"] += style.save(fig, out_dir / name, dpi=dpi)["paths"]
    return out
