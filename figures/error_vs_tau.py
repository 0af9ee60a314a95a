"""Figure 4: relative error of glocal and local hypergradient estimates against the exact h_T, as a
function of the prefix length tau, per task, batch mode and window start, with the fitted model's bound
(where it falls inside the panel) and the mini-batch noise floor.

Every estimator of analysis/error_vs_tau.csv is drawn: the colour says the base estimator (local blue,
limit red, horizon orange, an unknown one gray), the line style the variant (plain solid, ``+truncated``
dashed, ``+averaged`` dotted, ``+smoothed`` dash-dot), so estimators added later show up on their own.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import to_float

BASES = {"local": style.COLORS["local"], "limit": style.COLORS["glocal"], "horizon": "#ff7f0e",
         "robust": "#e377c2", "auto": "#bcbd22"}
VARIANTS = {"": "-", "truncated": "--", "averaged": ":", "smoothed": "-."}
MARKERS = {"local": "^", "limit": "o", "horizon": "s", "robust": "D", "auto": "v"}
VARIANT_TEXT = {"truncated": "POD rank by energy", "averaged": "fit of the mean of K orders",
                "smoothed": "moving-average prefix"}
YMAX = 1e3  # errors above this are drawn at the top edge, with a note
#: variants left out of the figure by default (named in a note; their numbers are in tables/error_vs_tau.csv),
#: so that a panel keeps to the estimators the results discuss; any other estimator is drawn
NOT_DRAWN = ("smoothed",)


def estimator_style(est: str) -> dict[str, Any]:
    """Colour, line style, marker and legend label of an estimator name ``base[+variant]``."""
    base, _, variant = est.partition("+")
    name = {"local": r"local $h_{s\to s+\tau}$", "limit": "glocal (limit)", "horizon": "glocal (horizon)",
            "robust": "glocal (robust)", "auto": "glocal (auto)"}.get(base, base)
    if variant:
        name += f" + {variant}" + (f" ({VARIANT_TEXT[variant]})" if variant in VARIANT_TEXT else "")
    return {"color": BASES.get(base, "#7f7f7f"), "ls": VARIANTS.get(variant, (0, (1, 3))),
            "marker": MARKERS.get(base, "x"), "label": name}


def _order(est: str) -> tuple:
    base, _, variant = est.partition("+")
    return (list(BASES).index(base) if base in BASES else len(BASES), base,
            list(VARIANTS).index(variant) if variant in VARIANTS else len(VARIANTS), variant)


def _key(r):
    return (r["task"], r["setting"], r.get("batch_size", ""), int(to_float(r["window_start"])))


def plot_error_vs_tau(rows: Sequence[dict[str, Any]], out_stem: str | Path,
                      estimators: Sequence[str] | None = None) -> dict[str, Any]:
    """``rows``: analysis/error_vs_tau.csv. One panel per (task, setting, window start); one line per estimator
    (mean over realizations); the limit fit's bound (dotted) only at the tau where it lies inside the panel's
    range; the noise floor of mini-batch settings as a gray dash-dot line; fallbacks as open circles."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    found = {r["estimator"] for r in rows}
    if estimators is None:
        left_out = sorted((e for e in found if e.partition("+")[2] in NOT_DRAWN), key=_order)
        estimators = found - set(left_out)
    else:
        left_out = sorted(found - set(estimators), key=_order)
    ests = sorted(estimators, key=_order)
    tasks = sorted({k[0] for k in groups})
    row_keys = sorted({(k[0], k[1], k[2]) for k in groups}, key=lambda k: (k[0], k[1] != "full", k[1]))
    # columns: the first, second, ... window start of each row (tasks extract at different steps)
    row_starts = {rk: sorted({k[3] for k in groups if k[:3] == rk}) for rk in row_keys}
    nr, nc = max(1, len(row_keys)), max([1] + [len(v) for v in row_starts.values()])
    fig, axes = style.subplots(nr, nc, w=3.4, h=2.7, sharex=True)
    data: dict[str, Any] = {"panels": {}, "bound_hidden": []}
    notes: list[str] = []
    hidden_bounds: list[str] = []
    clipped: list[str] = []
    if not groups:
        style.empty(axes[0, 0], "no extraction analysis (analysis/error_vs_tau.csv missing or empty)")
    for i, (task, setting, bs) in enumerate(row_keys):
        for j in range(nc):
            ax = axes[i, j]
            if j >= len(row_starts[(task, setting, bs)]):
                ax.set_visible(False)
                continue
            s = row_starts[(task, setting, bs)][j]
            ax.set_label(f"{task}/{setting}/s{s}")
            rs = groups.get((task, setting, bs, s), [])
            mode = "full batch" if setting == "full" else f"batch size {bs}"
            ax.set_title(f"{task}, {mode}, window start {s}")
            if not rs:
                style.empty(ax, "no rows")
                continue
            values: list[float] = []
            limit_rows = []
            for est in ests:
                er = sorted((r for r in rs if r["estimator"] == est), key=lambda r: to_float(r["tau"]))
                if not er:
                    continue
                st = estimator_style(est)
                tau = np.array([to_float(r["tau"]) for r in er])
                e = np.array([to_float(r["rel_error"]) for r in er])
                ax.plot(tau, np.minimum(e, YMAX), color=st["color"], ls=st["ls"], marker=st["marker"], ms=3,
                        lw=1.1, label=st["label"])
                values += [v for v in e if np.isfinite(v) and v > 0]
                fb = np.array([to_float(r.get("fallback_fraction")) for r in er])
                if np.any(fb > 0) and est != "local":
                    ax.plot(tau[fb > 0], np.minimum(e[fb > 0], YMAX), "o", mfc="none", mec="k", ms=7, mew=0.8,
                            label="fit fell back to local (guard)")
                if np.any(e > YMAX):
                    clipped.append(f"{task}, {mode}, s={s}: {est} error above {YMAX:g} at tau="
                                   f"{','.join(str(int(t)) for t in tau[e > YMAX])} (drawn at the top edge)")
                data["panels"][(task, setting, s, est)] = (tau.tolist(), e.tolist())
                if est == "limit":
                    limit_rows = er
            nf = np.array([to_float(r.get("noise_floor")) for r in rs])
            if np.any(np.isfinite(nf)):
                floor = float(np.nanmean(nf))
                ax.axhline(floor, color="0.4", ls="-.", lw=0.9, label="noise floor (spread of $h_T$ over orders)")
                values.append(floor)
            ax.set_xscale("log")
            ax.set_yscale("log")
            style.plain_log_labels(ax.yaxis)
            lo = min(values) if values else 1e-3
            hi = min(max(values), YMAX) if values else 1.0
            ylim = (lo / 3, hi * 3)
            ax.set_ylim(*ylim)
            if limit_rows:
                tau = np.array([to_float(r["tau"]) for r in limit_rows])
                b = np.array([to_float(r.get("bound")) for r in limit_rows])
                inside = np.isfinite(b) & (b >= ylim[0]) & (b <= ylim[1])
                if inside.any():
                    ax.plot(tau[inside], b[inside], ls=(0, (1, 1)), color="k", lw=0.8, marker="_", ms=8, mew=1.2,
                            label="bound of the limit fit (model tail), where inside the panel")
                    data["panels"][(task, setting, s, "bound")] = (tau[inside].tolist(), b[inside].tolist())
                if np.isfinite(b).any() and not inside.all():
                    out = b[np.isfinite(b) & ~inside]
                    if len(out):
                        hidden_bounds.append(f"{task}/{mode}/s={s}")
                        data["bound_hidden"].append(((task, setting, s), out.tolist()))
            style.ticks_at(ax, [to_float(r["tau"]) for r in rows])
            if i == nr - 1 or j >= len(row_starts.get(row_keys[i + 1], [])):
                ax.set_xlabel(r"prefix length $\tau$ (steps)")
                ax.tick_params(labelbottom=True)
            if j == 0:
                ax.set_ylabel(r"relative error $\|\hat h - h_T\| / \|h_T\|$")
    n_panels = sum(1 for k in groups)
    if hidden_bounds:
        vals = np.concatenate([np.asarray(v) for _, v in data["bound_hidden"]])
        notes.append(f"The limit fit's bound lies outside the plotted range at some tau in {len(hidden_bounds)} of "
                     f"{n_panels} panels (those values range {vals.min():.1e} to {vals.max():.1e}; "
                     "column 'bound' of analysis/error_vs_tau.csv): drawn only where it is informative.")
    notes += clipped
    if left_out:
        notes.append(f"Not drawn (see tables/error_vs_tau.csv): {', '.join(left_out)}.")
    data["left_out"] = left_out
    style.finish(fig)
    style.legend_below(fig, axes, ncol=3)
    fig.subplots_adjust(bottom=0.05 + 0.5 / max(1, nr) ** 0.5 * 0.35, top=1 - 0.32 / max(1, nr))
    fig.suptitle(f"Hypergradient error against prefix length (tasks: {', '.join(tasks) or 'none'}; "
                 "target: exact h_T; mini-batch: the mean of h_T over K batch orders)", fontsize=10)
    style.footnote(fig, notes)
    data.update(style.save(fig, out_stem))
    data["notes"] = notes
    return data
