"""Figure 4: relative error of glocal and local hypergradient estimates against the exact h_T, as a
function of the prefix length tau, per task, batch mode and window start, with the fitted bound."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from figures import style
from figures.io import to_float

ESTIMATORS = ["limit", "horizon", "local", "limit+averaged", "local+averaged"]
YMAX = 1e3  # errors / bounds above this are drawn at the top edge with a note
YMIN = 1e-6  # bounds below this leave the panel, with a note


def _key(r):
    return (r["task"], r["setting"], r.get("batch_size", ""), int(to_float(r["window_start"])))


def plot_error_vs_tau(rows: Sequence[dict[str, Any]], out_stem: str | Path,
                      estimators: Sequence[str] = ESTIMATORS) -> dict[str, Any]:
    """``rows``: analysis/error_vs_tau.csv. One panel per (task, setting, window start); lines per
    estimator (mean over realizations), the limit fit's bound dotted, the noise floor of
    mini-batch settings as a gray line."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_key(r), []).append(r)
    tasks = sorted({k[0] for k in groups})
    row_keys = sorted({(k[0], k[1], k[2]) for k in groups}, key=lambda k: (k[0], k[1] != "full", k[1]))
    starts = sorted({k[3] for k in groups})
    nr, nc = max(1, len(row_keys)), max(1, len(starts))
    fig, axes = style.subplots(nr, nc, w=3.0, h=2.4, sharex=True)
    data: dict[str, Any] = {"panels": {}}
    if not groups:
        style.empty(axes[0, 0], "no extraction analysis (analysis/error_vs_tau.csv missing or empty)")
    for i, (task, setting, bs) in enumerate(row_keys):
        for j, s in enumerate(starts):
            ax = axes[i, j]
            ax.set_label(f"{task}/{setting}/s{s}")
            rs = groups.get((task, setting, bs, s), [])
            mode = "full batch" if setting == "full" else f"batch size {bs}"
            ax.set_title(f"{task}, {mode}, window start s={s}")
            if not rs:
                style.empty(ax, "no rows")
                continue
            clipped: list[str] = []
            lows: list[float] = []
            for est in estimators:
                er = sorted((r for r in rs if r["estimator"] == est), key=lambda r: to_float(r["tau"]))
                if not er:
                    continue
                st = style.ESTIMATOR_STYLE[est]
                tau = np.array([to_float(r["tau"]) for r in er])
                e = np.array([to_float(r["rel_error"]) for r in er])
                sd = np.nan_to_num(np.array([to_float(r.get("rel_error_std")) for r in er]))
                ax.plot(tau, np.minimum(e, YMAX), color=st["color"], ls=st["ls"], marker=st["marker"],
                        ms=3, label=st["label"])
                del sd  # the spread over realizations is in analysis/error_vs_tau.csv (rel_error_std)
                lows.append(np.nanmin(e[e > 0]) if np.any(e > 0) else np.nan)
                fb = np.array([to_float(r.get("fallback_fraction")) for r in er])
                if np.any(fb > 0) and est in ("limit", "horizon"):
                    ax.plot(tau[fb > 0], np.minimum(e[fb > 0], YMAX), "o", mfc="none", mec="k", ms=6,
                            label="fit fell back to local (guard)")
                if np.any(e > YMAX):
                    clipped.append(f"{est} error > {YMAX:g}")
                data["panels"][(task, setting, s, est)] = (tau.tolist(), e.tolist())
                if est == "limit":
                    b = np.array([to_float(r.get("bound")) for r in er])
                    m = np.isfinite(b)
                    if m.any():
                        ax.plot(tau[m], np.minimum(b[m], YMAX), ":", color=st["color"], lw=1.0,
                                label="bound of the limit fit (model tail)")
                        if np.any(b[m] < YMIN):
                            clipped.append(f"bound < {YMIN:g} at tau="
                                           f"{','.join(str(int(t)) for t in tau[m][b[m] < YMIN])}")
                        if np.any(b[m] > YMAX):
                            clipped.append(f"bound > {YMAX:g} at tau={','.join(str(int(t)) for t in tau[m][b[m] > YMAX])}")
                        data["panels"][(task, setting, s, "bound")] = (tau[m].tolist(), b[m].tolist())
            nf = np.array([to_float(r.get("noise_floor")) for r in rs])
            if np.any(np.isfinite(nf)):
                ax.axhline(float(np.nanmean(nf)), color="0.4", ls="-.", lw=0.9, label="noise floor (spread of $h_T$)")
            ax.set_xscale("log")
            ax.set_yscale("log")
            lo = np.nanmin(lows) if np.any(np.isfinite(lows)) else 1e-3
            ax.set_ylim(max(YMIN, lo / 3), YMAX * 2)
            if clipped:
                style.note(ax, "off scale (drawn at the edge):\n" + "\n".join(clipped), loc="bottom")
            if i == nr - 1:
                ax.set_xlabel(r"prefix length $\tau$ (steps)")
            if j == 0:
                ax.set_ylabel(r"rel. error $\|\hat h - h_T\| / \|h_T\|$")
    style.finish(fig)
    style.legend_below(fig, axes, ncol=4)
    fig.subplots_adjust(bottom=0.05 + 0.25 / max(1, nr), top=1 - 0.22 / max(1, nr))
    fig.suptitle(f"Hypergradient error against prefix length (tasks: {', '.join(tasks) or 'none'}; "
                 "target: exact h_T; mini-batch: mean over K batch orders)", fontsize=9)
    data.update(style.save(fig, out_stem))
    return data
