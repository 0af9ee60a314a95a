"""The one plotting style: matplotlib Agg, fixed colour per strategy, PNG at 300 dpi + PDF."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

DPI = 300

#: strategy order in legends and tables
STRATEGIES = ["fixed", "hd", "local", "glocal", "global", "random", "tpe", "cmaes"]

#: one fixed colour per strategy, the same in every figure
COLORS = {
    "fixed": "#7f7f7f",   # gray
    "hd": "#17becf",      # cyan (hypergradient descent: local with a window of 1)
    "local": "#1f77b4",   # blue
    "glocal": "#d62728",  # red
    "global": "#2ca02c",  # green
    "random": "#9467bd",  # purple
    "tpe": "#8c564b",     # brown
    "cmaes": "#000000",   # black (CMA-ES)
}
MARKERS = {"fixed": "s", "hd": "X", "local": "o", "glocal": "D", "global": "^", "random": "v", "tpe": "P", "cmaes": "*"}

#: estimators of the extraction: glocal ones in the glocal colour family, local in the local colour
ESTIMATOR_STYLE = {
    "limit": {"color": COLORS["glocal"], "ls": "-", "marker": "o", "label": "glocal (limit)"},
    "horizon": {"color": "#ff7f0e", "ls": "-", "marker": "s", "label": "glocal (horizon)"},
    "local": {"color": COLORS["local"], "ls": "-", "marker": "^", "label": r"local $h_{s\to s+\tau}$"},
    "limit+averaged": {"color": COLORS["glocal"], "ls": "--", "marker": "o", "label": "glocal (limit) on mean of K"},
    "local+averaged": {"color": COLORS["local"], "ls": "--", "marker": "^", "label": "local, mean of K"},
}

RC = {
    "font.size": 9,
    "axes.titlesize": 9,
    "axes.labelsize": 9,
    "legend.fontsize": 8,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "lines.linewidth": 1.3,
    "lines.markersize": 4,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "grid.linewidth": 0.5,
    "savefig.bbox": "tight",
    "pdf.fonttype": 42,
}

_state = {"dpi": DPI}


def apply(style: str | None = None, dpi: int | None = None) -> None:
    """Activate the shared style (optionally on top of a named matplotlib style) and the PNG dpi."""
    if style and style != "default":
        plt.style.use(style)
    plt.rcParams.update(RC)
    if dpi:
        _state["dpi"] = int(dpi)


apply()


#: colours of strategies without a fixed one (variants such as glocal_robust), assigned by name
EXTRA_COLORS = ["#ff7f0e", "#e377c2", "#bcbd22", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]


def color(strategy: str) -> str:
    """The strategy's fixed colour; a variant gets a stable colour from its name (same in every figure)."""
    if strategy in COLORS:
        return COLORS[strategy]
    import zlib

    return EXTRA_COLORS[zlib.crc32(strategy.encode()) % len(EXTRA_COLORS)]


def order(strategies: Iterable[str]) -> list[str]:
    """Strategies in the canonical order (unknown ones last, alphabetically)."""
    s = list(dict.fromkeys(strategies))
    return sorted(s, key=lambda x: (STRATEGIES.index(x) if x in STRATEGIES else len(STRATEGIES), x))


def subplots(nrows: int = 1, ncols: int = 1, *, w: float = 3.3, h: float = 2.6, **kw):
    """A figure of nrows x ncols panels of w x h inches each; axes always a 2-D array."""
    kw.setdefault("squeeze", False)
    fig, axes = plt.subplots(nrows, ncols, figsize=(w * ncols, h * nrows), **kw)
    return fig, axes


def note(ax, text: str, loc: str = "top") -> None:
    """A visible note inside a panel (missing inputs, diverged runs, fallbacks)."""
    y, va = (0.98, "top") if loc == "top" else (0.02, "bottom")
    ax.text(0.02, y, text, transform=ax.transAxes, fontsize=6, va=va, ha="left", color="#444444",
            bbox={"boxstyle": "round,pad=0.25", "fc": "#fff8dc", "ec": "#c8b560", "lw": 0.5, "alpha": 0.7}, zorder=0.5)


def empty(ax, text: str) -> None:
    """Mark a panel with no data (instead of failing)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="#666666",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def legend_below(fig, axes, ncol: int | None = None, extra: list | None = None) -> int:
    """One legend for the whole figure, below the panels (hides no data), deduplicated by label; returns its
    number of rows."""
    handles, labels = [], []
    for ax in np.ravel(axes):
        for hd, lb in zip(*ax.get_legend_handles_labels()):
            if lb and not lb.startswith("_") and lb not in labels:
                handles.append(hd)
                labels.append(lb)
    for hd in extra or []:
        if hd.get_label() not in labels:
            handles.append(hd)
            labels.append(hd.get_label())
    heads = [re.split(r"[ :,]", lb)[0] for lb in labels]
    if handles and any(h in COLORS for h in heads):  # strategies in their canonical order, the rest after
        rank = {h: i for i, h in enumerate(order([h for h in heads if h in COLORS]))}
        key = [(rank.get(h, len(rank)), i) for i, h in enumerate(heads)]
        handles, labels = zip(*[(h, lb) for _, h, lb in sorted(zip(key, handles, labels), key=lambda t: t[0])])
    if handles:
        ncol = ncol or min(len(labels), 4)
        fig.legend(handles, labels, loc="lower center", ncol=ncol, frameon=False, bbox_to_anchor=(0.5, 0.0))
        return -(-len(labels) // ncol)
    return 0


def room_below(fig, legend_rows: int, extra: float = 0.07) -> None:
    """Leave room under the panels for ``legend_rows`` rows of legend and the x labels above it."""
    row = 0.21 / fig.get_figheight()  # one legend row of 9-point text, as a fraction of the height
    fig.subplots_adjust(bottom=extra + row * legend_rows + 0.45 / fig.get_figheight())


def finish(fig, bottom: float | None = None) -> None:
    fig.tight_layout()
    if bottom:
        fig.subplots_adjust(bottom=bottom)


def line_data(fig) -> dict[str, dict[str, tuple[list[float], list[float]]]]:
    """Every labelled line of every panel: {panel key: {label: (x, y)}}; panel key = title or 'ax<i>'."""
    out: dict[str, dict[str, tuple[list[float], list[float]]]] = {}
    for i, ax in enumerate(fig.axes):
        key = ax.get_label() if ax.get_label() and not ax.get_label().startswith("<") else f"ax{i}"
        d = out.setdefault(key, {})
        for ln in ax.get_lines():
            lb = ln.get_label()
            if lb.startswith("_child"):
                continue
            d[lb] = ([float(v) for v in np.asarray(ln.get_xdata(), dtype=float)],
                     [float(v) for v in np.asarray(ln.get_ydata(), dtype=float)])
    return out


def figure_text(fig) -> str:
    """Every visible text of a figure (titles, axis labels, legend entries, notes, colorbar labels; tick labels
    left out), one per line: what a reader can read in it, which the captions are checked against."""
    from matplotlib.text import Text

    fig.canvas.draw()  # lay out legends and tick labels
    ticks = {id(t) for ax in fig.axes for t in ax.get_xticklabels() + ax.get_yticklabels()}
    seen: list[str] = []
    for t in fig.findobj(Text):
        s = t.get_text().strip()
        if s and t.get_visible() and id(t) not in ticks and s not in seen:
            seen.append(s)
    return "\n".join(seen)


def footnote(fig, lines: list[str], y: float = 0.0) -> None:
    """Notes under the panels (missing seeds, values off scale): outside every axis, so no line crosses them;
    each wrapped to the figure's width."""
    if lines:
        import textwrap

        width = max(60, int(fig.get_figwidth() * 17))  # characters of 7-pt text across the figure
        text = "\n".join(w for line in lines for w in textwrap.wrap(line, width, subsequent_indent="  "))
        fig.text(0.01, y, text, ha="left", va="top", fontsize=7, color="#444444")


def save(fig, out_stem: str | Path, dpi: int | None = None) -> dict[str, Any]:
    """Read back the line data and the text, write out_stem.png (300 dpi) and .pdf, close;
    return {'lines', 'text', 'paths'}."""
    out_stem = Path(out_stem)
    out_stem.parent.mkdir(parents=True, exist_ok=True)
    data = line_data(fig)
    text = figure_text(fig)
    paths = [out_stem.with_name(out_stem.name + ".png"), out_stem.with_name(out_stem.name + ".pdf")]
    fig.savefig(paths[0], dpi=dpi or _state["dpi"])
    fig.savefig(paths[1])
    plt.close(fig)
    return {"lines": data, "text": text, "paths": [str(p) for p in paths]}


def plain_log_labels(axis) -> None:
    """Tick labels of a log axis written plainly ('0.3', '20') instead of '3x10^-1'."""
    from matplotlib.ticker import FuncFormatter

    def minor(v, _):  # only 2x and 5x, and only on an axis of at most two decades: labels never collide
        lo, hi = sorted(axis.get_view_interval())
        if lo <= 0 or math.log10(hi / lo) > 2:
            return ""
        mantissa = round(v / 10 ** math.floor(math.log10(v) + 1e-9), 6)
        return f"{v:g}" if mantissa in (2.0, 5.0) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def ticks_at(ax, values) -> None:
    """x ticks of a log axis at the measured values, plainly labelled (no colliding '3x10^0 4x10^0' labels)."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    vals = sorted({float(v) for v in values if np.isfinite(v) and v > 0})
    if vals:
        ax.xaxis.set_major_locator(FixedLocator(vals))
        ax.set_xticklabels([f"{v:g}" for v in vals])
        ax.xaxis.set_minor_locator(NullLocator())
        ax.xaxis.set_minor_formatter(NullFormatter())


def finite(a) -> np.ndarray:
    a = np.asarray(a, dtype=float)
    return a[np.isfinite(a)]


def markdown_table(head: list[str], rows: list[dict]) -> list[str]:
    """A Markdown table: the header, its rule and one line per row (the row's values under ``head``)."""
    return (["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            + ["| " + " | ".join(str(r[h]) for h in head) + " |" for r in rows])


def fmt(x: float, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    return f"{x:.{digits}g}"
