"""Error against trajectory length, from extract outputs: ``glocal analyze``.

Reads ``estimates.csv`` (and ``noise_floor.csv``) of one or more ``glocal extract`` directories
and writes

* ``error_vs_tau.csv`` — per task, setting, batch size, window start, tau and estimator: the
  mean relative error and cosine over the batch-order realizations, the ratio of the error to
  the plain ``local`` error of the same group, the mean relative bound, the fallback fraction
  and the noise floor (mini-batch settings);
* ``summary.md`` — per task a table for every (batch mode, window start): rows tau, columns
  estimators (cells: relative error, and the ratio to local in parentheses), and one computed
  sentence per estimator saying at which tau it beats local, at which it ties (error ratio
  within ``TIE_MARGIN`` of 1) and at which it loses;
* ``summary.json`` — the same verdicts in machine-readable form;
* ``pydmd_comparison.csv`` — when the extraction ran the PyDMD peer: our default fit against the
  best fixed PyDMD setting, row by row (and a section of ``summary.md`` saying where ours is worse).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

from glocal.utils import atomic_write_csv, atomic_write_json, atomic_write_text

__all__ = ["analyze", "ERROR_COLUMNS", "TIE_MARGIN", "verdict"]

ERROR_COLUMNS = [
    "task", "setting", "batch_size", "window_start", "tau", "estimator", "n", "rel_error", "rel_error_std",
    "cosine", "ratio_to_local", "beats_local", "verdict", "ratio_to_local_same_data", "bound", "fallback_fraction",
    "noise_floor",
]

#: an estimator beats local only when its error is below (1 - TIE_MARGIN) x local's, loses when above
#: (1 + TIE_MARGIN) x; in between the two are tied (a 2% difference is no win).
TIE_MARGIN = 0.05


def verdict(ratio_to_local: float, margin: float = TIE_MARGIN) -> str:
    """'better', 'tie' or 'worse' than local for an error ratio to local ('' when it is not finite)."""
    if not math.isfinite(ratio_to_local):
        return ""
    if ratio_to_local < 1.0 - margin:
        return "better"
    if ratio_to_local > 1.0 + margin:
        return "worse"
    return "tie"


def _f(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return float("nan")
    return v


def _mean(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    return sum(xs) / len(xs) if xs else float("nan")


def _std(xs: list[float]) -> float:
    xs = [x for x in xs if math.isfinite(x)]
    if len(xs) < 2:
        return 0.0 if xs else float("nan")
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _fmt(x: float, digits: int = 3) -> str:
    if not math.isfinite(x):
        return "—"
    return f"{x:.{digits}g}"


def _taus_phrase(taus: list[int]) -> str:
    return "{" + ", ".join(str(t) for t in taus) + "}"


def analyze(extract_dirs: list[str | Path], out: str | Path, *, config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Aggregate the extract directories into ``out``; return the summary dict."""
    rows: list[dict[str, str]] = []
    noise: dict[tuple, float] = {}
    for d in extract_dirs:
        d = Path(d)
        est = d / "estimates.csv"
        if not est.is_file():
            raise FileNotFoundError(f"--extract: {str(d)!r} has no estimates.csv (is it a glocal extract directory?)")
        rows.extend(_read_csv(est))
        nf = d / "noise_floor.csv"
        if nf.is_file():
            for r in _read_csv(nf):
                noise[(r["task"], r["setting"], r["window_start"])] = _f(r["rel_spread_rms"])
    if not rows:
        raise ValueError("--extract: the estimates.csv files hold no rows")

    groups: dict[tuple, list[dict[str, str]]] = defaultdict(list)
    for r in rows:
        key = (r["task"], r["setting"], r["batch_size"], int(r["window_start"]), int(r["tau"]), r["estimator"])
        groups[key].append(r)
    agg: dict[tuple, dict[str, Any]] = {}
    for key, rs in groups.items():
        errs = [_f(r["rel_error"]) for r in rs]
        agg[key] = {
            "task": key[0], "setting": key[1], "batch_size": key[2], "window_start": key[3], "tau": key[4],
            "estimator": key[5], "n": len(rs), "rel_error": _mean(errs), "rel_error_std": _std(errs),
            "cosine": _mean([_f(r["cosine"]) for r in rs]), "bound": _mean([_f(r["bound"]) for r in rs]),
            "fallback_fraction": _mean([_f(r["fallback"]) for r in rs]),
            "noise_floor": noise.get((key[0], key[1], str(key[3])), float("nan")),
        }
    for key, a in agg.items():
        loc = agg.get(key[:5] + ("local",))
        le = loc["rel_error"] if loc else float("nan")
        a["ratio_to_local"] = a["rel_error"] / le if le and math.isfinite(le) and le > 0 else float("nan")
        same = agg.get(key[:5] + ("local+averaged",)) if key[5].endswith("+averaged") else loc
        se = same["rel_error"] if same else float("nan")
        a["ratio_to_local_same_data"] = a["rel_error"] / se if math.isfinite(se) and se > 0 else float("nan")
        a["verdict"] = verdict(a["ratio_to_local"])
        a["beats_local"] = int(a["verdict"] == "better") if a["verdict"] else ""
    ordered = sorted(agg.values(), key=lambda a: (a["task"], a["setting"] != "full", a["setting"], a["window_start"],
                                                   a["tau"], a["estimator"]))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_csv(out / "error_vs_tau.csv", ordered, ERROR_COLUMNS)

    # ---------------------------------------------------------------- verdicts and markdown
    summary: dict[str, Any] = {"tasks": {}}
    md: list[str] = ["# Error against trajectory length", "",
                     "Relative error ||estimate - h_T|| / ||h_T|| (mean over batch orders under mini-batches, "
                     "where h_T is the mean over the K orders); in parentheses the ratio to the plain local "
                     f"error at the same tau. An estimator beats local where that ratio is below {1 - TIE_MARGIN:g}, "
                     f"loses where it is above {1 + TIE_MARGIN:g}, and ties in between (a margin of "
                     f"{TIE_MARGIN:.0%}). `*` marks estimates that fell back to local in at least one realization.",
                     ""]
    by_setting: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for a in ordered:
        by_setting[(a["task"], a["setting"], a["batch_size"], a["window_start"])].append(a)
    for task in sorted({k[0] for k in by_setting}):
        md += [f"## Task `{task}`", ""]
        tsum: list[dict[str, Any]] = []
        for key in [k for k in by_setting if k[0] == task]:
            _, setting, bs, s = key
            items = by_setting[key]
            taus = sorted({a["tau"] for a in items})
            ests = sorted({a["estimator"] for a in items}, key=lambda e: (e != "local", e))
            cell = {(a["tau"], a["estimator"]): a for a in items}
            mode = "full batch" if bs == "full" else f"batch size {bs}"
            floor = items[0]["noise_floor"]
            md += [f"### {mode}, window start s = {s}" + (f" (noise floor {_fmt(floor)})" if math.isfinite(floor)
                                                          else ""), ""]
            md.append("| tau | " + " | ".join(ests) + " |")
            md.append("|---:|" + "---:|" * len(ests))
            for tau in taus:
                cells = []
                for e in ests:
                    a = cell.get((tau, e))
                    if a is None:
                        cells.append("")
                        continue
                    txt = _fmt(a["rel_error"])
                    if e != "local" and math.isfinite(a["ratio_to_local"]):
                        txt += f" ({_fmt(a['ratio_to_local'], 2)})"
                    if a["fallback_fraction"] and a["fallback_fraction"] > 0:
                        txt += "*"
                    cells.append(txt)
                md.append(f"| {tau} | " + " | ".join(cells) + " |")
            md.append("")
            sentences = []
            for e in ests:
                if e == "local":
                    continue
                win = [t for t in taus if (t, e) in cell and cell[(t, e)]["verdict"] == "better"]
                tie = [t for t in taus if (t, e) in cell and cell[(t, e)]["verdict"] == "tie"]
                lose = [t for t in taus if (t, e) in cell and cell[(t, e)]["verdict"] == "worse"]
                ratios = [cell[(t, e)]["ratio_to_local"] for t in taus if (t, e) in cell]
                ratios = [r for r in ratios if math.isfinite(r)]
                parts = [f"{word} at tau in {_taus_phrase(ts)}" for word, ts in
                         (("beats local", win), ("ties", tie), ("loses", lose)) if ts]
                n_given = sum(bool(ts) for ts in (win, tie, lose))
                if n_given == 1:
                    word = "beats local" if win else "ties with local" if tie else "loses to local"
                    sent = f"`{e}` {word} at every tau {_taus_phrase(win or tie or lose)}"
                elif parts:
                    sent = f"`{e}` " + ", ".join(parts[:-1]) + " and " + parts[-1]
                else:
                    sent = f"`{e}`: no finite error ratio"
                if ratios:
                    sent += f" (error ratio to local {_fmt(min(ratios), 2)}–{_fmt(max(ratios), 2)})"
                sentences.append(sent + ".")
                tsum.append({"setting": setting, "batch_size": bs, "window_start": s, "estimator": e,
                             "beats_local_at": win, "ties_at": tie, "loses_at": lose, "not_at": tie + lose,
                             "tie_margin": TIE_MARGIN,
                             "ratio_to_local": {str(t): cell[(t, e)]["ratio_to_local"] for t in taus if (t, e) in cell},
                             "rel_error": {str(t): cell[(t, e)]["rel_error"] for t in taus if (t, e) in cell}})
            if math.isfinite(floor):
                loc_err = [cell[(t, "local")]["rel_error"] for t in taus if (t, "local") in cell]
                below = [t for t in taus if (t, "local") in cell and cell[(t, "local")]["rel_error"] < floor]
                sentences.append(f"Noise floor (RMS spread of the K realizations of h_T around their mean) is "
                                 f"{_fmt(floor)}; local error ranges {_fmt(min(loc_err))}–{_fmt(max(loc_err))} and is "
                                 + (f"below the floor at tau in {_taus_phrase(below)}." if below
                                  else "above the floor at every tau."))
            md += [f"In this setting ({mode}, s = {s}): " + " ".join(sentences), ""]
        summary["tasks"][task] = tsum
    peer_rows, peer_md, peer_summary = _peer_comparison(agg)
    if peer_rows:
        atomic_write_csv(out / "pydmd_comparison.csv", peer_rows, PEER_COLUMNS)
        md += peer_md
        summary["pydmd"] = peer_summary
    atomic_write_text(out / "summary.md", "\n".join(md) + "\n")
    summary["n_rows"] = len(rows)
    summary["extract_dirs"] = [str(d) for d in extract_dirs]
    if config is not None:
        summary["config"] = config
    atomic_write_json(out / "summary.json", summary)
    return summary


PEER_COLUMNS = ["task", "estimator", "setting", "window_start", "tau", "ours", "peer_setting", "peer", "ratio",
                "ours_worse"]
#: Ours counts as worse than the peer only beyond this relative margin (ties are not losses).
PEER_MARGIN = 0.02


def _peer_comparison(agg: dict[tuple, dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str], dict[str, Any]]:
    """Our default fit against the best *fixed* PyDMD setting, row by row (``<estimator>+pydmd*`` rows).

    For each task and estimator the PyDMD setting with the lowest mean log relative error over
    all rows (batch modes, window starts, tau) is the peer; a row counts against us when our
    error exceeds the peer's by more than ``PEER_MARGIN``.
    """
    out_rows: list[dict[str, Any]] = []
    md: list[str] = []
    summary: dict[str, Any] = {}
    keys = {(k[0], k[5].split("+")[0]) for k in agg if "+pydmd" in k[5]}
    for task, est in sorted(keys):
        peers = sorted({k[5] for k in agg if k[0] == task and k[5].startswith(est + "+pydmd")})
        rows = sorted({k[:5] for k in agg if k[0] == task and k[5] == est})

        def mean_log(name: str, rows: list[tuple] = rows) -> float:
            vals = [agg[r + (name,)]["rel_error"] for r in rows if r + (name,) in agg]
            vals = [math.log(max(v, 1e-300)) for v in vals if math.isfinite(v)]
            return sum(vals) / len(vals) if vals else float("inf")

        best = min(peers, key=mean_log)
        worse = []
        for r in rows:
            if r + (best,) not in agg:
                continue
            ours, peer = agg[r + (est,)]["rel_error"], agg[r + (best,)]["rel_error"]
            ratio = ours / peer if peer > 0 else float("nan")
            bad = bool(math.isfinite(ratio) and ratio > 1 + PEER_MARGIN)
            out_rows.append({"task": task, "estimator": est, "setting": r[1], "window_start": r[3], "tau": r[4],
                             "ours": ours, "peer_setting": best.split("+", 1)[1], "peer": peer, "ratio": ratio,
                             "ours_worse": int(bad)})
            if bad:
                worse.append((r[1], r[3], r[4], ours, peer))
        n = sum(1 for x in out_rows if x["task"] == task and x["estimator"] == est)
        summary.setdefault(task, {})[est] = {"peer_setting": best.split("+", 1)[1], "rows": n,
                                             "ours_worse_rows": len(worse),
                                             "geo_mean_ratio": math.exp(mean_log(est) - mean_log(best))}
        if not md:
            md += ["## Against PyDMD (DMDc with a constant input)", "",
                   f"Our default fit (`{est}`) against the best fixed PyDMD setting (lowest mean log error over "
                   f"the task's rows), row by row; a row counts against us when our error is more than "
                   f"{PEER_MARGIN:.0%} above the peer's.", ""]
        line = (f"- `{task}`, `{est}`: peer `{best.split('+', 1)[1]}`; geometric-mean error ratio ours/peer "
                f"{_fmt(summary[task][est]['geo_mean_ratio'], 3)}; ours at least as good on {n - len(worse)} of {n} rows")
        if worse:
            line += "; worse on " + ", ".join(f"{st} s={s0} tau={t} ({_fmt(o)} vs {_fmt(p_)})"
                                              for st, s0, t, o, p_ in worse)
        md.append(line + ".")
    if md:
        md.append("")
    return out_rows, md, summary


def configure_parser(p: argparse.ArgumentParser) -> None:
    """Arguments of ``glocal analyze``."""
    p.add_argument("--extract", nargs="+", required=True, metavar="DIR", help="glocal extract output directories")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--config", help="experiment YAML (optional; validated and recorded in summary.json)")


def run(args: argparse.Namespace) -> int:
    """``glocal analyze``."""
    config = None
    if getattr(args, "config", None):
        from glocal.config import load_config

        config = load_config(args.config)
    s = analyze(args.extract, args.out, config=config)
    print(f"analyze: {s['n_rows']} estimates from {len(args.extract)} directories -> {args.out}")
    return 0
