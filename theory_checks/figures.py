"""The three theory figures (PNG at 300 dpi + PDF) from the runner's CSV rows.

The drawing lives in ``figures.theory`` (the one plotting style of the project); these wrappers keep the
runner's call signature and return the written paths.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["plot_error_vs_tau", "plot_bound", "plot_spectrum"]


def _paths(data: dict[str, Any]) -> list[Path]:
    return [Path(p) for p in data["paths"]]


def plot_error_vs_tau(rows: Sequence[dict[str, Any]], out: Path, floor: float = 1e-5, max_cases: int = 4,
                      dpi: int = 300) -> list[Path]:
    """Relative error of glocal (rank n), plain pseudo-inverse and local against tau, one panel per case,
    with the threshold tau = n + d + 1 and the 1e-5 floor marked."""
    from figures import theory

    return _paths(theory.plot_error_vs_tau(rows, Path(out) / "theory_error_vs_tau", floor, max_cases, dpi))


def plot_bound(rows: Sequence[dict[str, Any]], out: Path, max_cases: int = 4, dpi: int = 300) -> list[Path]:
    """||h_T - h_inf|| against T under the Jordan-form bound."""
    from figures import theory

    return _paths(theory.plot_bound(rows, Path(out) / "theory_bound", max_cases, dpi))


def plot_spectrum(rows: Sequence[dict[str, Any]], out: Path, max_cases: int = 4, dpi: int = 300) -> list[Path]:
    """Recovered (x) against true (o) Koopman eigenvalues in the complex plane, unit circle drawn."""
    from figures import theory

    return _paths(theory.plot_spectrum(rows, Path(out) / "theory_spectrum", max_cases, dpi))
