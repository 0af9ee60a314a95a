"""Every figure and table with a one-line reading guide and the quantities it shows: the one source of
docs/figures.md and results/README.md, and what the report captions (workflow/report/*.rst) are checked
against (tests/test_figures.py)."""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Quantities a caption, a reading guide or a figure may name, each with the pattern (case-insensitive,
#: on text with the mathtext markup removed) that recognizes it. A caption that names one of these must
#: list it in its figure's ``quantities``, and the figure must draw it (in an axis label, title, legend
#: entry or note). Add a quantity here when a new figure shows something new.
VOCABULARY: dict[str, str] = {
    "validation loss": r"\bval(idation)?[ _-]?loss",
    "test loss": r"\btest[ _-]?loss",
    "training loss": r"\btrain(ing)?[ _-]?loss",
    "accuracy": r"\baccurac|\bacc\b",
    "wall time": r"wall[ _-]?(clock )?time",
    "training step": r"training steps?\b|inner steps?\b",
    "meta-iteration": r"meta[- ]?iterations?",
    "trial": r"\btrials?\b",
    "training runs": r"(number of|full) training runs|\bn training runs\b",
    "cosine similarity": r"cosine",
    "relative error": r"relative error|rel\. error",
    "ratio to local": r"ratio to (the )?(plain )?local|/ ?local\b",
    "bound": r"\bbounds?\b",
    "noise floor": r"noise floor",
    "error floor": r"error floor|1e-5 floor",
    "prefix length": r"prefix length",
    "window length": r"window length",
    "window start": r"window start",
    "threshold n + d + 1": r"n ?\+ ?d ?\+ ?1",
    "training horizon": r"training horizon|horizon T\b",
    "number of hyperparameters": r"number of hyperparameters",
    "expected slope": r"\bslopes?\b",
    "eigenvalue": r"eigenvalue",
    "unit circle": r"unit circle",
    "fallback": r"f[ae]ll(s|en)? back|fallback|rejected",
    "AUC": r"\bauc\b",
    "ROC": r"\broc\b",
    "true positive rate": r"true positive rate",
    "false positive rate": r"false positive rate",
    "example weight": r"(example|learned) weights?",
    "count": r"\bcounts?\b|number of (training )?examples",
    "learning rate": r"learning rates?",
    "weight decay": r"weight decay",
    "momentum": r"momentum",
    "peak memory": r"memory",
    "diagonal": r"diagonal",
    "expected loss": r"expected (final )?loss",
    "optimum": r"\boptim(um|a)\b",
    "tuning horizon": r"tuning horizon",
    "paired difference": r"paired difference",
    "95% interval": r"95 ?% (confidence )?interval|interval 95",
    "time-delay depth": r"time[- ]delay",
    "energy threshold": r"energy thresholds?",
    "record stride": r"record strides?|\bstrides?\b",
    "recorded steps": r"recorded steps",
    "starting value": r"starting values?",
}


def normalize(text: str) -> str:
    """Text as the vocabulary patterns see it: mathtext markup and underscores removed, one line."""
    text = re.sub(r"\\(mathrm|mathbf|hat|left|right|mathit)\b", " ", text)
    text = text.replace("\\|", "|").replace("\\", "").replace("$", "")
    return re.sub(r"[_{}\s]+", " ", text)


def quantities_named(text: str) -> set[str]:
    """The vocabulary quantities that a text names."""
    t = normalize(text)
    return {q for q, pattern in VOCABULARY.items() if re.search(pattern, t, re.IGNORECASE)}


@dataclass(frozen=True)
class Figure:
    """One figure (or one per task, with "{task}" in its pattern)."""

    pattern: str
    module: str
    title: str
    guide: str  #: how to read it (docs/figures.md, results/README.md)
    quantities: tuple[str, ...]  #: VOCABULARY keys it draws; its caption names each of them and no other

    @property
    def caption_stem(self) -> str:
        """workflow/report/<stem>.rst is its report caption."""
        return self.pattern.replace("_{task}", "")


@dataclass(frozen=True)
class Table:
    """One table under results/tables/."""

    files: str
    csv: str  #: the CSV whose header the quantities are checked against (and the .html page the report shows)
    guide: str
    quantities: tuple[str, ...]
    caption_stem: str | None = None  #: workflow/report/<stem>.rst when the report shows it


FIGURES: list[Figure] = [
    Figure("hpo_curves_{task}", "figures.hpo_curves", "HPO curves",
           "The validation loss (top) and test loss (bottom) of every strategy, one colour each, against the "
           "training step of its final training run (left: global's last meta-iteration, random, TPE and CMA-ES dashed: "
           "the run of their best trial) and against the wall time the strategy has spent (right, linear), where "
           "strategies with several runs are one marker per run: global's loss at the end of each meta-iteration, "
           "the searches' best loss so far after each trial. Lines: mean over seeds, bands: min-max; x = a "
           "diverged seed's last finite value; '(k/n seeds)' = seeds missing. Lower is better, and further left "
           "is cheaper.",
           ("validation loss", "test loss", "training step", "wall time", "meta-iteration", "trial")),
    Figure("hyper_trajectories_{task}", "figures.hyper_trajectories", "Hyperparameter trajectories",
           "One panel per tuned hyperparameter against the training step of the run (the same x range in every "
           "panel): for task lr the learning rate of each named layer, weight decay and momentum; for reweight "
           "the mean example weight of clean and of flipped examples. local and glocal change them during their "
           "one run; global keeps them constant within a run, so each of its meta-iterations is a horizontal line "
           "(light = early, dark = last); fixed stays at the initial value; random, TPE and CMA-ES (dashed) show the "
           "best trial of each seed. For reweight, clean above flipped means the weights separate the noisy "
           "labels.",
           ("training step", "meta-iteration", "trial", "learning rate", "weight decay", "momentum",
            "example weight")),
    Figure("reweight_weights", "figures.reweight", "Learned example weights",
           "Top: histograms of the learned weights of clean (green) and flipped (orange) training examples, one "
           "panel per strategy, seeds pooled, counts on a log axis so that a few misweighted examples show; well "
           "separated humps = label noise detected. Bottom: ROC of the weight as a score for 'clean' (true "
           "positive rate: clean examples kept; false positive rate: flipped examples kept), one curve per seed, "
           "and a zoom on its top-left corner, "
           "the AUC (mean ± std over seeds) in the legend; the dotted diagonal is chance (AUC 0.5), where fixed "
           "lies (all its weights are equal).",
           ("example weight", "count", "ROC", "true positive rate", "false positive rate", "AUC", "diagonal")),
    Figure("error_vs_tau", "figures.error_vs_tau", "Hypergradient error against prefix length",
           "Relative error of the estimates of the exact h_T from the first tau local hypergradients of a window, "
           "against the prefix length tau (log-log): local (blue), glocal limit (red), glocal horizon (orange); "
           "dashed: the same fit with the POD rank truncated by energy; dotted: the fit (or the local value) of "
           "the mean over K batch orders (mini-batch rows only). One panel per task and batch mode (rows) and "
           "window start (columns). Black dotted with bar markers: the limit fit's model bound, drawn only where it "
           "falls inside the panel; dash-dot gray: the mini-batch noise floor; open black circles: fits that fell "
           "back to local; variants not drawn (+smoothed) are named under the figure. Below local = the Koopman "
           "extrapolation helps.",
           ("relative error", "prefix length", "window start", "bound", "noise floor", "fallback")),
    Figure("koopman_spectra", "figures.spectra", "Koopman spectra",
           "Fitted DMD eigenvalues in the complex plane with the unit circle, per task (rows). Left: every window "
           "fit of a glocal HPO run, coloured by window start / training steps; fits the guards rejected (fell "
           "back to local) as x. Middle: zoom on the region near 1, where the slow modes that decide the limit "
           "sit. Right: the extraction fits at fixed phi, one colour per window start. Inside the circle = "
           "decaying modes (a limit exists); outside = growing modes, where the guards fall back to local.",
           ("eigenvalue", "unit circle", "window start", "training step", "fallback")),
    Figure("cost", "figures.cost", "Cost",
           "Wall time per hyperparameter update (solid) and per training run (dashed) against the training "
           "horizon T, the window length tau and the number of hyperparameters q for global, local and glocal "
           "(log-log; the engine in brackets); dotted: the expected slope of the complexity table of "
           "docs/design.md through the first point, fitted and expected slopes listed under each panel. A sweep "
           "with fewer than three points of one problem is drawn as points, without a fitted slope. Without "
           "results/bench/cost.csv: bars of the HPO runs' time per update and per run.",
           ("wall time", "training horizon", "window length", "number of hyperparameters", "expected slope")),
    Figure("theory_error_vs_tau", "figures.theory", "Theory: error against window length",
           "Quadratic problems with a known limit h_inf (one panel each, titled by the system): relative error of "
           "the glocal estimate with POD rank n, of the plain pseudo-inverse fit and of the local h_tau against "
           "the window length tau; the glocal error must drop to the 1e-5 error floor (dotted) from tau = "
           "n + d + 1 (dash-dot) on.",
           ("relative error", "window length", "error floor", "threshold n + d + 1")),
    Figure("theory_bound", "figures.theory", "Theory: the error bound",
           "||h_T - h_inf|| (solid) and its Jordan-form bound (dashed, same colour) against the training horizon "
           "T, one colour per quadratic problem (named in the legend): each solid line must stay under its "
           "dashed line.",
           ("training horizon", "bound")),
    Figure("theory_spectrum", "figures.theory", "Theory: recovered spectrum",
           "Exact Koopman eigenvalues (o) of quadratic problems and the Hankel-DMD recovered ones (x), one colour "
           "per problem, with the unit circle: each x should sit in its o; a gray + is a fitted eigenvalue that "
           "matches no exact one (a spurious mode of the fit, counted in a note).",
           ("eigenvalue", "unit circle")),
    Figure("baselines_{task}", "figures.baselines", "Baselines: best loss against budget",
           "Best final validation loss so far (top) and the test loss of that run (bottom) against the number of "
           "full training runs (left) and the wall time (right, log): random, TPE and CMA-ES step down trial by trial, "
           "global run by run; fixed, local and glocal are single runs (points, spread sideways at one run so "
           "that none hides another). Mean over seeds, bars and bands min-max. Lower-left is better: "
           "gradient-based HPO against black-box search at equal budget.",
           ("validation loss", "test loss", "training runs", "wall time", "trial")),
    Figure("ablation_extract", "figures.ablation", "Ablations of the estimator on the extraction",
           "One column per setting varied alone from the extraction's: the time-delay depth d, a fixed POD rank, "
           "the POD energy threshold, the rank rule, the record stride k (the fit sees every k-th local "
           "hypergradient of the prefix) and the prefix length tau at the base setting. Rows: the relative error "
           "of the glocal (limit) estimate of h_T at the task's longest prefix (its window), mean over window "
           "starts, one row per batch mode (solid red; dotted blue: the local h_tau of the same prefix, which no "
           "setting changes except the prefix length); bottom: the cost of each setting, the wall time of the fit "
           "(and for the stride the recorded steps the fit needs, right axis). One marker per task; fits that "
           "fell back to local are counted under the figure. Below the dotted line = the setting helps.",
           ("relative error", "prefix length", "window start", "time-delay depth", "energy threshold",
            "record stride", "wall time", "recorded steps", "fallback")),
    Figure("ablation_hpo", "figures.ablation_hpo", "Ablation of the glocal options on the HPO outcome",
           "One column per glocal option of ablation.hpo.axes, varied alone from ablation.hpo.base, each value one "
           "glocal run of the ablation's task per seed ('task's': the task's own value of the option). Top: the "
           "final validation loss (solid) and test loss (dashed) of the run; bottom: its wall time; mean over "
           "seeds. The windows whose fit fell back to the local hypergradient are counted under the figure. A "
           "flat top row means the outcome does not depend on the option; the bottom row is what the option costs.",
           ("validation loss", "test loss", "wall time", "fallback")),
    Figure("sensitivity", "figures.sensitivity", "Sensitivity to the starting point",
           "One row per task: the final test loss (left) and the learned hyperparameters at the end of the run "
           "(right) against the starting value, one colour per strategy (mean over seeds). Task lr: the inner "
           "learning rate of every layer starts at a multiple of the default; right, the final learning rate "
           "(mean over layers in log space) with the dotted no-change line (learned = initial). Task reweight: "
           "the initial example weight; right, the final mean example weight of clean (solid) and flipped "
           "(dashed) examples. fixed keeps its start, so its test loss shows how bad a start is; a strategy "
           "recovers when its test loss stays flat across starting values.",
           ("test loss", "starting value", "learning rate", "example weight")),
    Figure("nqm_learned_lr", "figures.nqm_lr", "The noisy quadratic model: learned learning rate and loss",
           "One row per task of kind nqm (its mode: expected or sampled). Left: the effective learning rate "
           "lr / (1 - momentum) of the schedule each strategy trained with against the training step (mean over "
           "seeds, log scale; global: its last run, random, TPE and CMA-ES dashed: the run they selected), with the "
           "optimum of the task's answer key: the best constant learning rate (black dashed) and the best K-phase schedule "
           "(black dotted). Right: the final expected loss of that schedule over the constant optimum's against "
           "the wall time the strategy spent (log-log; mean over seeds, bars min-max; in sampled mode the expected "
           "loss of the schedule the run chose, not its noisy realized loss), with the schedule optimum (dotted) "
           "and the goal, 10% above the optimum (gray dash-dot). Lower-left is better.",
           ("learning rate", "momentum", "training step", "expected loss", "optimum", "wall time")),
    Figure("nqm_short_horizon_bias", "figures.nqm_bias", "The noisy quadratic model: short-horizon bias",
           "One row per task of kind nqm, at the momentum named in the titles (Wu et al. 2018). Left: the "
           "learning rate that tuning with a tuning horizon of tau steps selects (log-log): the constant rate "
           "minimizing the expected loss after tau steps from theta_0, and the first and last window's rate of the "
           "greedy schedule (every window of tau steps takes the rate minimizing the expected loss at its end: the "
           "ideal local tuner), against the long-horizon optimum (black dashed). Middle: the greedy schedules over "
           "the training step, one colour per tau (dark: short). Right: the final expected loss of training all T "
           "steps with them over the optimum's. Short horizons pick rates that decay far too fast.",
           ("learning rate", "tuning horizon", "optimum", "training step", "expected loss", "momentum")),
]

#: the tables under results/tables/
TABLES: list[Table] = [
    Table("summary.md / .csv / .html", "summary.csv",
          "Per task x strategy: seeds found/expected, diverged runs, full training runs, final validation loss, "
          "test loss and accuracy, AUC (reweight), wall time and peak memory, mean ± std (sample std) over seeds; "
          "for the glocal strategies the fit health summed over seeds (window fits that fell back to local, by "
          "reason, and collapsed fits).",
          ("training runs", "validation loss", "test loss", "accuracy", "AUC", "wall time", "peak memory", "fallback"),
          "table_summary"),
    Table("paired.md / .csv / .html", "paired.csv",
          "Per task: glocal (and each glocal variant) against local at the same window, global and hypergradient "
          "descent, on the same seeds: the mean paired difference of the final test loss and validation loss "
          "and its 95% interval over seeds (Student t), with a verdict.",
          ("paired difference", "95% interval", "test loss", "validation loss"), "table_paired"),
    Table("budget.md / .csv / .html", "budget.csv",
          "Gradient strategies against random search, TPE and CMA-ES at equal budgets: for each gradient strategy's "
          "number of full training runs and wall time, the test loss / accuracy of the searches' best run so far "
          "(selected on the validation set), mean ± std over seeds.",
          ("training runs", "wall time", "test loss", "accuracy"), "table_budget"),
    Table("error_vs_tau.md / .csv / .html", "error_vs_tau.csv",
          "The extraction analysis (`glocal analyze`): relative error per prefix length tau and estimator, with "
          "the ratio to local, per task, batch mode and window start; the .md adds which estimator beats, ties "
          "with or loses to local (5% margin); the noise floor of mini-batch settings.",
          ("relative error", "prefix length", "window start", "ratio to local", "noise floor"),
          "table_error_vs_tau"),
    Table("theory.md / .csv / .html", "theory.csv",
          "The theory checks of `glocal theory` per check: cases passed/failed, the worst measured value and its "
          "bound (see docs/theory.md).",
          ("bound",), "table_theory"),
    Table("ablation_extract.md / .csv / .html", "ablation_extract.csv",
          "The extraction ablation (`glocal ablate extract`) per task, batch mode, axis (the delay d, POD rank, "
          "energy or rank rule of the fit, or the recording frequency k; the base setting at every prefix length) "
          "and estimator: relative error, ratio to local, fallbacks, and the cost: recorded steps, engine ops and "
          "fit wall time.",
          ("relative error", "ratio to local", "prefix length", "fallback", "recorded steps", "wall time"),
          "table_ablation_extract"),
    Table("ablation_hpo.md / .csv / .html", "ablation_hpo.csv",
          "The HPO ablation (`glocal ablate hpo`) per axis (a glocal option of ablation.hpo.axes) and value: the "
          "final validation loss and test loss and the wall time of the run, mean over seeds, and the windows "
          "whose fit fell back to local among all windows, summed over seeds.",
          ("validation loss", "test loss", "wall time", "fallback"), "table_ablation_hpo"),
    Table("sensitivity.md / .csv / .html", "sensitivity.csv",
          "Sensitivity to the starting point (`glocal sensitivity`): per task, starting value and strategy, the "
          "final test loss and the learned learning rate or example weights, mean ± std over seeds.",
          ("test loss", "starting value", "learning rate", "example weight"), "table_sensitivity"),
    Table("nqm.md / .csv / .html", "nqm.csv",
          "The noisy quadratic model, per task (mode) x strategy: the expected final loss of the schedule each "
          "run trained with over the optimum of the answer key (the best constant learning rate and the best "
          "K-phase schedule), the learned effective learning rate lr / (1 - momentum) (mean over training and "
          "final), CPU time, wall time and training steps relative to global, and for glocal the fraction of "
          "window fits that fell back to local and the median cosine similarity of its estimates to the local "
          "hypergradient; mean ± std over seeds, and per glocal strategy whether it lands within 10% of the "
          "optimum at no more than 1/5 of global's CPU time.",
          ("expected loss", "optimum", "learning rate", "momentum", "wall time", "training step", "fallback",
           "cosine similarity"),
          "table_nqm"),
]


#: figures drawn only when a task of kind nqm is enabled
NQM_FIGURES = ("nqm_learned_lr", "nqm_short_horizon_bias")


def figure_names(tasks: list[str], include_reweight: bool | None = None, nqm_tasks: list[str] | None = None
                 ) -> list[str]:
    """The concrete figure names for the given tasks (reweight_weights only with a reweight task; the NQM
    figures only with a task of kind nqm among ``nqm_tasks``, by default the tasks named nqm or nqm_*)."""
    if nqm_tasks is None:
        nqm_tasks = [t for t in tasks if t == "nqm" or t.startswith("nqm_")]
    names: list[str] = []
    for f in FIGURES:
        if "{task}" in f.pattern:
            names += [f.pattern.format(task=t) for t in tasks]
        elif f.pattern == "reweight_weights" and not (include_reweight if include_reweight is not None
                                                       else "reweight" in tasks):
            continue
        elif f.pattern in NQM_FIGURES and not any(t in tasks for t in nqm_tasks):
            continue
        else:
            names.append(f.pattern)
    return names


def spec(name: str) -> Figure:
    """The catalog entry of a concrete figure name."""
    for f in FIGURES:
        if f.pattern == name or ("{task}" in f.pattern and name.startswith(f.pattern.split("{task}")[0])):
            return f
    raise KeyError(name)


def guide(name: str) -> tuple[str, str]:
    """(title, how to read) of a concrete figure name."""
    f = spec(name)
    if "{task}" in f.pattern:
        return f"{f.title} ({name[len(f.pattern.split('{task}')[0]):]})", f.guide
    return f.title, f.guide


def markdown(tasks: list[str] | None = None, figures_dir: str = "figures", tables_dir: str = "tables",
             nqm_tasks: list[str] | None = None) -> str:
    """The figure and table list as Markdown (docs/figures.md's list, results/README.md)."""
    lines = ["## Figures", "", f"Each figure is `{figures_dir}/<name>.png` (300 dpi) and `.pdf`.", ""]
    if tasks is None:
        for f in FIGURES:
            lines.append(f"* **`{f.pattern}`** — {f.title} (`{f.module}`). {f.guide}")
    else:
        for name in figure_names(tasks, nqm_tasks=nqm_tasks):
            title, text = guide(name)
            lines.append(f"* [`{name}`]({figures_dir}/{name}.png) — **{title}**. {text}")
    lines += ["", "## Tables", ""]
    for t in TABLES:
        lines.append(f"* `{tables_dir}/{t.files}` — {t.guide}")
    return "\n".join(lines) + "\n"
