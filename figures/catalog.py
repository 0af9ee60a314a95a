"""Every figure and table with a one-line reading guide: the one source of docs/figures.md and results/README.md."""

from __future__ import annotations

#: (name pattern, module, title, how to read). "{task}" expands over the tasks found.
FIGURES: list[tuple[str, str, str, str]] = [
    ("hpo_curves_{task}", "figures.hpo_curves", "HPO curves",
     "Validation (top) and test (bottom) loss against training step (left) and wall time (right), one colour "
     "per strategy; line = mean over seeds, band = min-max; x = a diverged seed's last finite value; "
     "legend '(k/n seeds)' = seeds missing. Lower and further left is better; global's curve spans its M runs."),
    ("hyper_trajectories_{task}", "figures.hyper_trajectories", "Hyperparameter trajectories",
     "One panel per tuned hyperparameter (per-layer learning rates, weight decay, momentum; for reweight the "
     "mean weight of clean and of flipped examples) against training step; fixed stays flat, random/tpe "
     "(dashed) show their best trial's constants. For reweight, the clean curve rising above the flipped one "
     "means the weights separate the noisy labels."),
    ("reweight_weights", "figures.reweight", "Learned example weights",
     "Top: histograms of the final weights of clean (green) and flipped (orange) training examples per "
     "strategy (seeds pooled); well separated humps = label noise detected. Bottom: ROC of the weight as a "
     "score for 'clean', one curve per seed, AUC mean ± std in the legend (0.5 = chance, 1 = perfect)."),
    ("error_vs_tau", "figures.error_vs_tau", "Hypergradient error against prefix length",
     "Relative error of glocal (limit, horizon; red/orange) and local (blue) estimates of the exact h_T "
     "against the prefix length tau, per task, batch mode (rows) and window start (columns), log-log; dotted: "
     "the limit fit's model bound; dash-dot gray: the mini-batch noise floor. Glocal below local = the "
     "Koopman extrapolation helps."),
    ("koopman_spectra", "figures.spectra", "Koopman spectra",
     "Fitted DMD eigenvalues in the complex plane with the unit circle. Left: every window of a glocal HPO run "
     "(colour = window start / training steps); right: the extraction fits at fixed phi per window start. "
     "Eigenvalues inside the circle = decaying modes (a limit exists); outside = growing modes, where the "
     "limit estimate is unreliable (the guards fall back to local)."),
    ("cost", "figures.cost", "Cost",
     "Wall time per hyperparameter update (solid) and per run (dashed) against T, tau and q for global, local "
     "and glocal (log-log), dotted reference lines with the expected slopes of DESIGN.md's complexity table "
     "(fitted and expected slopes in the note). Without results/bench/cost.csv: bars of the HPO runs' "
     "time per update and per run."),
    ("theory_error_vs_tau", "figures.theory", "Theory: error against tau",
     "Quadratic problems with a known limit: glocal (rank n), plain pseudo-inverse and local error against "
     "tau; the glocal error must drop to the 1e-5 floor (dotted) at tau = n + d + 1 (dash-dot)."),
    ("theory_bound", "figures.theory", "Theory: bound",
     "||h_T - h_inf|| (solid) under the Jordan-form bound (dashed) against T, one colour per problem: the solid "
     "line must stay below its dashed line."),
    ("theory_spectrum", "figures.theory", "Theory: spectrum",
     "Exact (o) and Hankel-DMD recovered (x) Koopman eigenvalues of quadratic problems with the unit circle: "
     "each x should sit in its o."),
    ("baselines_{task}", "figures.baselines", "Baselines: best validation loss against budget",
     "Best final validation loss so far against the number of full training runs (left) and wall time "
     "(right): random/tpe step down trial by trial, global run by run, fixed/local/glocal are single points "
     "(one run). Lower-left is better; compares gradient-based HPO with black-box search at equal budget."),
]

#: (file under results/tables/, how to read)
TABLES: list[tuple[str, str]] = [
    ("summary.md / summary.csv",
     "Per task x strategy: seeds found/expected, diverged runs, full training runs, final validation/test "
     "loss and accuracy, AUC (reweight) and wall time, mean ± std (sample std) over seeds."),
    ("theory.md / theory.csv",
     "The theory checks of `glocal theory` per check: cases passed/failed, the worst measured value and its "
     "bound (see docs/theory.md)."),
    ("error_vs_tau.md",
     "The extraction analysis (`glocal analyze`): relative error per tau and estimator with the ratio to "
     "local, per task, batch mode and window start."),
    ("budget.md / budget.csv",
     "Gradient strategies against random search and TPE at equal budgets: for each gradient strategy's "
     "number of full training runs and wall time, the test loss / accuracy of the searches' best trial so far "
     "(by validation loss), mean ± std over seeds."),
]


def figure_names(tasks: list[str], include_reweight: bool | None = None) -> list[str]:
    """The concrete figure names for the given tasks (reweight_weights only with a reweight task)."""
    names: list[str] = []
    for pattern, *_ in FIGURES:
        if "{task}" in pattern:
            names += [pattern.format(task=t) for t in tasks]
        elif pattern == "reweight_weights" and not (include_reweight if include_reweight is not None
                                                     else "reweight" in tasks):
            continue
        else:
            names.append(pattern)
    return names


def guide(name: str) -> tuple[str, str]:
    """(title, how to read) of a concrete figure name."""
    for pattern, _mod, title, text in FIGURES:
        if pattern == name:
            return title, text
        if "{task}" in pattern:
            pre = pattern.split("{task}")[0]
            if name.startswith(pre):
                return f"{title} ({name[len(pre):]})", text
    raise KeyError(name)


def markdown(tasks: list[str] | None = None, figures_dir: str = "figures", tables_dir: str = "tables") -> str:
    """The figure and table list as Markdown (docs/figures.md's list, results/README.md)."""
    lines = ["## Figures", "", f"Each figure is `{figures_dir}/<name>.png` (300 dpi) and `.pdf`.", ""]
    if tasks is None:
        for pattern, mod, title, text in FIGURES:
            lines.append(f"* **`{pattern}`** — {title} (`{mod}`). {text}")
    else:
        for name in figure_names(tasks):
            title, text = guide(name)
            lines.append(f"* [`{name}`]({figures_dir}/{name}.png) — **{title}**. {text}")
    lines += ["", "## Tables", ""]
    for f, text in TABLES:
        lines.append(f"* `{tables_dir}/{f}` — {text}")
    return "\n".join(lines) + "\n"
