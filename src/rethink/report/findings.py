"""The paper's claims, each a function of the sweep that can hold, fail, or be inconclusive.

Every claim quotes the paper, states its rule, and judges the runs with the uncertainty of
`rethink.report.stats` (95% intervals over seeds and evaluation-set sizes; one-sided tests at the
5% level). Its verdict is one of:
  holds          the evidence meets the rule;
  does not hold  the evidence contradicts it (an interval on the wrong side, a significant trend
                 the other way, a network that stalled short of fitting);
  inconclusive   the evidence is partial or too uncertain to decide (a run still learning when its
                 budget ended, one seed where the rule needs a spread, an interval straddling a
                 bound): never "holds";
  not measured   the experiment is not in the sweep, or its runs have no result.
The paper's claims and those of follow-up work (Arpit et al. 2017) are counted separately.
Tests: tests/test_findings.py builds stores on which each claim holds, fails and is inconclusive.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from rethink.data.corruption import PIXEL_CORRUPTIONS
from rethink.report import analysis, stats
from rethink.report import paper_numbers as paper
from rethink.report.collect import Cell, Outcome, SweepData
from rethink.report.document import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED, Finding, fmt_p
from rethink.report.paper_numbers import model_name

ZHANG, ARPIT = "Zhang et al. 2017", "Arpit et al. 2017"
CHANCE = paper.CHANCE_ACC  # 10% test accuracy for ten classes
CHANCE_BAND = 10.0  # "at chance" needs the interval inside chance +- this (precise enough to tell)
ABOVE_CHANCE_MARGIN = 20.0  # "generalizes": test accuracy interval above chance + this
REGULARIZER_RANGE = (-2.0, 6.0)  # Table 1's regularizer effects span -0.12 to +5.15 points
BN_GAIN_RANGE = (0.0, 10.0)  # "only 3~4%": a positive gain of a few points (Table 1: 3.03, 3.75)
EARLY_STOP_GAIN = 2.0  # "no potential benefit": best minus final test accuracy at most this
SMALL_FACTOR = 10.0  # "a small constant factor": slowdown at p = 1 at most this
STALL_WINDOW = 0.25  # a run that did not fit "stalled" if over the last quarter of its epochs
STALL_GAIN = 1.0  # ... its train accuracy rose by less than this many points
START_DROP = 0.9  # the loss "starts decreasing" at the first epoch below 90% of its initial value
CLEAN_FIRST_MARGIN = 5.0  # clean minus corrupted train accuracy early in training, points

RULES = (
    "fits: every seed reaches the run's fit threshold (train accuracy, checked after each epoch; "
    "the presets use 99%, the paper's lowest reported fit being 99.21%). A run that did not fit "
    f"'stalled' (does not hold) if its train accuracy rose by less than {STALL_GAIN:g} point over the "
    f"last {STALL_WINDOW:.0%} of its epochs, else it was 'still learning' (inconclusive).",
    f"at chance: the test accuracy's 95% interval contains {CHANCE:g}% and lies within "
    f"{CHANCE:g} ± {CHANCE_BAND:g}%; it does not hold when the interval excludes {CHANCE:g}% with at "
    "least two seeds, or lies outside that band (with one seed, an interval just off chance is "
    "inconclusive: the random labelling's own variation is not estimated).",
    f"generalizes: on runs that fitted, the test accuracy's 95% interval lies above "
    f"{CHANCE + ABOVE_CHANCE_MARGIN:g}% (chance + {ABOVE_CHANCE_MARGIN:g} points); it does not hold "
    "when the interval lies below.",
    "95% intervals: accuracies combine the Wilson interval of the evaluation-set size with Student's "
    "t over seeds (in quadrature); differences add both sides' parts; one seed has no seed part, "
    "so comparisons need at least two seeds per side.",
    "trends ('grows with p'): Kendall's tau over every (seed, p) observation, one-sided p < 0.05, and "
    "an effect from p = 0 to p = 1 larger than the measurement's resolution (one epoch of steps for "
    "steps to fit; the interval of the difference for test error).",
    "starts: the first evaluated step at which the training loss is below "
    f"{START_DROP:.0%} of the initial network's; 'starts later' needs Welch's one-sided test over "
    "seeds at p < 0.05 and a difference larger than one epoch of steps; it does not hold when the "
    "other order is significant or Welch's one-sided 95% upper bound of the difference is within "
    "one epoch (the seeds rule the effect out), and is inconclusive otherwise.",
)


@dataclass(frozen=True)
class Evidence:
    """A verdict with the words that justify it."""

    verdict: str
    measured: str


def _finding(claim: str, quote: str, rule: str, evidence: Evidence, section: str, paper_value: str = "",
             source: str = ZHANG) -> Finding:
    return Finding(claim, evidence.measured, paper_value, evidence.verdict, quote=quote, rule=rule,
                   source=source, evidence=section)


def _absent(why: str = "not in this sweep") -> Evidence:
    return Evidence(NOT_MEASURED, why)


def _pct(iv: stats.Interval | None) -> str:
    return "-" if iv is None else iv.scaled(100).text(1, "%")


def _n(cell: Cell) -> str:
    sizes = [f"{len(cell.results)} seed" + ("s" if len(cell.results) != 1 else "")]
    if cell.n_train:
        sizes.append(f"{cell.n_train:,} train")
    if cell.n_test:
        sizes.append(f"{cell.n_test:,} test")
    return "n = " + ", ".join(sizes)


# ------------------------------------------------------------------ fitting


def _stalled(rows: list[dict]) -> bool:
    """Whether a run's train accuracy stopped rising over the last STALL_WINDOW of its epochs."""
    accs = [r["train_acc"] for r in rows if r.get("epoch", 0) > 0 and r.get("train_acc") is not None]
    if len(accs) < 4:
        return False
    window = max(2, math.ceil(STALL_WINDOW * len(accs)))
    recent = accs[-window:]
    return 100 * (max(recent) - accs[-window - 1 if window < len(accs) else 0]) < STALL_GAIN


def fit_state(sweep: SweepData, cell: Cell) -> str:
    """'fitted' (every seed), 'stalled' (a seed stopped short of fitting), 'learning' (a seed ran out
    of budget while still improving), 'partial' (the seeds with a result fitted, others have none
    yet) or 'missing' (no seed has a result)."""
    if not cell.outcomes or not cell.results:
        return "missing"
    unfitted = [o for o in cell.results if not o.fitted]
    if any(_stalled(sweep.curve(o.run_id)) for o in unfitted):
        return "stalled"
    if unfitted:
        return "learning"
    return "partial" if len(cell.results) < len(cell.outcomes) else "fitted"


def _train_text(cell: Cell) -> str:
    return f"{_pct(cell.interval('train_acc'))} train"


def _fit_evidence(sweep: SweepData, cells: Sequence[tuple[str, Cell | None]]) -> Evidence:
    """Do all these cells fit? Names each cell's train accuracy and state."""
    parts, states = [], []
    for name, cell in cells:
        if cell is None:
            parts.append(f"{name}: not in this sweep")
            states.append("missing")
            continue
        state = fit_state(sweep, cell)
        states.append(state)
        what = {"fitted": "fitted", "stalled": "stalled short of fitting",
                "learning": f"still learning at its budget ({'; '.join(cell.problems())})",
                "partial": f"fitted so far ({'; '.join(cell.problems())})",
                "missing": "; ".join(cell.problems()) or "no result"}[state]
        parts.append(f"{name}: " + ", ".join(filter(None, [_train_text(cell) if cell.results else "", what])))
    measured = "; ".join(parts)
    if all(s == "missing" for s in states):
        return _absent(measured)
    if "stalled" in states:
        return Evidence(FAILS, measured)
    if all(s == "fitted" for s in states):
        return Evidence(HOLDS, measured)
    return Evidence(INCONCLUSIVE, measured)


# ------------------------------------------------------------------ intervals against bounds


def _chance_evidence(cell: Cell) -> tuple[str, str]:
    """(verdict, text) for 'the test accuracy is at chance'."""
    iv = cell.interval("test_acc")
    if iv is None:
        return NOT_MEASURED, "no test accuracy"
    iv = iv.scaled(100)
    text = f"{iv.text(1, '%')} test ({_n(cell)})"
    if not iv.contains(CHANCE):
        # A finite random labelling correlates with the true classes by chance, and a network can
        # learn that correlation: its test accuracy varies with the corruption seed beyond the test
        # set's binomial interval. One seed does not estimate that, so it cannot refute chance.
        if len(cell.results) < 2 and iv.inside(CHANCE - CHANCE_BAND, CHANCE + CHANCE_BAND):
            return INCONCLUSIVE, text + ("; one seed: the labelling draw's own variation is not "
                                         "estimated")
        return FAILS, text
    if not iv.inside(CHANCE - CHANCE_BAND, CHANCE + CHANCE_BAND):
        return INCONCLUSIVE, text + ", too wide to tell"
    return HOLDS, text


def _against_range(iv: stats.Interval, lo: float, hi: float) -> str:
    """holds inside [lo, hi], does not hold when disjoint from it, inconclusive when straddling."""
    if iv.inside(lo, hi):
        return HOLDS
    if iv.hi < lo or iv.lo > hi:
        return FAILS
    return INCONCLUSIVE


def _difference(a: Cell, b: Cell, attr: str = "test_acc") -> stats.Interval | None:
    iv = stats.difference_interval(a.values(attr), a.n_test, b.values(attr), b.n_test)
    return None if iv is None else iv.scaled(100)


def _seeds_problem(*cells: Cell) -> str | None:
    few = [c for c in cells if len(c.results) < 2]
    if few:
        return "one seed on a side: the seeds' spread is not estimated, so no comparison is judged"
    return None


# ------------------------------------------------------------------ starts (Figure 1a)


def start_step(rows: list[dict]) -> int | None:
    """The first evaluated step whose training loss is below START_DROP x the initial loss."""
    initial = next((r for r in rows if r.get("epoch") == 0 and r.get("train_loss") is not None), None)
    if initial is None:
        return None
    return next((r["step"] for r in rows if r.get("epoch", 0) > 0 and r.get("train_loss") is not None
                 and r["train_loss"] < START_DROP * initial["train_loss"]), None)


def _starts(sweep: SweepData, cell: Cell) -> list[float] | None:
    steps = [start_step(sweep.curve(o.run_id)) for o in cell.results]
    return None if not steps or any(s is None for s in steps) else [float(s) for s in steps]


def _later(sweep: SweepData, late: Cell, early: Cell, late_name: str, early_name: str) -> Evidence:
    """Does `late` start decreasing its loss later than `early`?"""
    a, b = _starts(sweep, late), _starts(sweep, early)
    if a is None or b is None:
        missing = [n for n, s in ((late_name, a), (early_name, b)) if s is None]
        return _absent(f"no start for {', '.join(missing)} (no epoch-0 row, or the loss never fell "
                       f"below {START_DROP:.0%} of its initial value)")
    resolution = max(late.steps_per_epoch or 1, early.steps_per_epoch or 1)
    diff = sum(a) / len(a) - sum(b) / len(b)
    p = stats.greater(a, b)
    p_back = stats.greater(b, a)
    measured = (f"starts at step {_mean_text(a)} ({late_name}) vs {_mean_text(b)} ({early_name}): "
                f"{diff:+,.0f} steps, resolution {resolution:,} steps (one epoch)")
    if p is None:
        return Evidence(INCONCLUSIVE, measured + "; fewer than 2 seeds on a side: no test")
    measured += f"; one-sided Welch p = {p:.3f} ({len(a)} vs {len(b)} seeds)"
    if p < stats.ALPHA and diff > resolution:
        return Evidence(HOLDS, measured)
    upper = stats.difference_upper(a, b)
    measured += f"; 95% upper bound of the difference {upper:+,.0f} steps"
    # does not hold only where the data rule the claimed effect out: the other way round, or
    # every difference the seeds allow within one epoch
    if (p_back is not None and p_back < stats.ALPHA) or upper <= resolution:
        return Evidence(FAILS, measured)
    return Evidence(INCONCLUSIVE, measured)


def _mean_text(values: Sequence[float]) -> str:
    """Mean of non-negative values (steps, error %) with its t interval over seeds, cut at 0."""
    iv = stats.mean_interval(values, floor=0.0)
    if iv is None:
        return "-"
    if iv.seeds < 2:
        return f"{iv.estimate:,.0f}"
    return f"{iv.estimate:,.0f} [{iv.lo:,.0f}, {iv.hi:,.0f}]"


# ------------------------------------------------------------------ the claims

Q_RANDOM = ("Deep neural networks easily fit random labels. [...] the training error reaches zero; "
            "the test error is no better than random chance")
Q_TABLE1_FIT = "Table 1: every configuration reaches 99.8-100% training accuracy on the true labels"
Q_NOT_NECESSARY = ("Explicit regularization may improve generalization performance, but is neither "
                   "necessary nor by itself sufficient for controlling generalization error.")
Q_AWD = "AlexNet with weight decay fails to converge on random labels (Section 3; Table 4)"
Q_TABLE4 = ("both Inception and MLPs still fit perfectly the random training set with weight decay "
            "turned on (Section 3; Table 4 also: random crop, flip + rotation)")
Q_PIXELS = ("the networks converge to (over)fit the training set perfectly with shuffled pixels, "
            "random pixels and Gaussian inputs (Figure 1a)")
Q_LATER = "on random labels the loss takes longer to start decreasing (Figure 1a)"
Q_FASTER = ("'random pixels' and 'Gaussian' start converging faster than 'random labels' "
            "(Figure 1a: the inputs are more separated)")
Q_SLOWDOWN = "time to overfit grows with the label corruption ratio (Figure 1b, 'convergence slowdown')"
Q_FACTOR = "the slowdown is only a small constant factor (Figure 1b)"
Q_ERROR = ("test error (also the generalization error since training error is 0) [...] grows "
           "steadily with the label corruption (Figure 1c)")
Q_CHANCE = "at corruption 1 the test error reaches 90%, random guessing (Figure 1c)"
Q_EARLY = "on the CIFAR10 dataset, we do not observe any potential benefit of early stopping (Figure 2b)"
Q_BN = ("batch normalization [...] helps stablize the learning dynamics, but the impact on the "
        "generalization performance is only 3~4% (Section 3.1; Figure 2b)")
Q_CLEAN = ("networks learn simple patterns first: clean examples are fitted before the noisy ones "
           "(Arpit et al. 2017, not a claim of Zhang et al.)")


def random_labels(sweep: SweepData) -> list[Finding]:
    """Table 1's random-label rows: each model fits them, and tests at chance."""
    rule = "fits, and at chance (see the rules)"
    paper_rows = {r.model: r for r in paper.TABLE1 if r.random_labels}
    if "table1" not in sweep.experiments:
        return [_finding("networks fit random labels and test at chance", Q_RANDOM, rule, _absent(),
                         "table1")]
    out = []
    for model in sweep.models("table1"):
        cell = sweep.cell("table1", model, "random-labels")
        if cell is None:
            continue
        row = paper_rows.get(model)
        paper_value = f"{paper.paper_pct(row.train_acc)} / {paper.paper_pct(row.test_acc)}" if row else ""
        fit = _fit_evidence(sweep, [("random labels", cell)])
        verdict, text = _chance_evidence(cell) if cell.results else (NOT_MEASURED, "")
        verdicts = {fit.verdict, verdict}
        if fit.verdict == NOT_MEASURED:
            combined = NOT_MEASURED
        elif FAILS in verdicts:
            combined = FAILS
        elif verdicts == {HOLDS}:
            combined = HOLDS
        else:
            combined = INCONCLUSIVE
        measured = fit.measured + (f"; {text}" if text else "")
        out.append(_finding(f"{model_name(model)} fits random labels and tests at chance", Q_RANDOM, rule,
                            Evidence(combined, measured), "table1", paper_value))
    return out


def table1_fits(sweep: SweepData) -> list[Finding]:
    """Table 1's true-label rows all fit their training set."""
    rule = "fits (every Table 1 row of the model with true labels)"
    if "table1" not in sweep.experiments:
        return [_finding("every Table 1 configuration fits its training set", Q_TABLE1_FIT, rule,
                         _absent(), "table1")]
    out = []
    for model in sweep.models("table1"):
        cells = [(paper.REGULARIZER_NAMES.get(c.regularizer, c.regularizer), c)
                 for c in sweep.cells_of("table1") if c.model == model and c.corruption == "true"]
        if cells:
            out.append(_finding(f"{model_name(model)}: every Table 1 configuration fits its training set",
                                Q_TABLE1_FIT, rule, _fit_evidence(sweep, cells), "table1", "99.80-100.0"))
    return out


def no_regularizer(sweep: SweepData) -> list[Finding]:
    """Without any explicit regularizer the models generalize far above chance."""
    rule = "generalizes (see the rules), on a run that fitted its training set"
    paper_test = {r.model: r.test_acc for r in paper.TABLE1
                  if not (r.crop or r.weight_decay or r.random_labels)}
    if "table1" not in sweep.experiments:
        return [_finding("without explicit regularizers the models generalize", Q_NOT_NECESSARY, rule,
                         _absent(), "table1")]
    out = []
    for model in sweep.models("table1"):
        cell = sweep.cell("table1", model)
        if cell is None:
            continue
        claim = f"{model_name(model)} generalizes without explicit regularizers"
        paper_value = f"{paper_test[model]:.2f}% test" if model in paper_test else ""
        iv = cell.interval("test_acc")
        if iv is None:
            out.append(_finding(claim, Q_NOT_NECESSARY, rule, _absent("; ".join(cell.problems())), "table1",
                                paper_value))
            continue
        iv = iv.scaled(100)
        measured = f"{iv.text(1, '%')} test ({_n(cell)})"
        state = fit_state(sweep, cell)
        if state != "fitted":  # the claim is about networks that fit their training set
            why = "not every seed has finished" if state in ("missing", "partial") else "did not fit"
            verdict, measured = INCONCLUSIVE, measured + f"; {why} ({'; '.join(cell.problems())})"
        elif iv.below(CHANCE + ABOVE_CHANCE_MARGIN):
            verdict = FAILS
        else:
            verdict = HOLDS if iv.above(CHANCE + ABOVE_CHANCE_MARGIN) else INCONCLUSIVE
        out.append(_finding(claim, Q_NOT_NECESSARY, rule, Evidence(verdict, measured), "table1", paper_value))
    return out


def _paper_effect(model: str, regularizer: str) -> float | None:
    rows = {paper.table1_regularizer(r.crop, r.weight_decay): r.test_acc for r in paper.TABLE1
            if r.model == model and not r.random_labels}
    if regularizer in rows and "none" in rows:
        return rows[regularizer] - rows["none"]
    return None


def regularizer_effects(sweep: SweepData) -> list[Finding]:
    """Table 1: each explicit regularizer changes test accuracy by a few points at most."""
    lo, hi = REGULARIZER_RANGE
    rule = (f"the 95% interval of (with - without) test accuracy lies inside [{lo:+g}, {hi:+g}] points, "
            "the paper's Table 1 range (-0.12 to +5.15); both runs fitted; at least 2 seeds per side")
    if "table1" not in sweep.experiments:
        return [_finding("explicit regularizers change test accuracy by a few points at most",
                         Q_NOT_NECESSARY, rule, _absent(), "table1")]
    out = []
    for model in sweep.models("table1"):
        base = sweep.cell("table1", model)
        for cell in sweep.cells_of("table1"):
            if cell.model != model or cell.corruption != "true" or cell.regularizer == "none":
                continue
            name = paper.REGULARIZER_NAMES.get(cell.regularizer, cell.regularizer)
            claim = f"{model_name(model)}: {name} changes test accuracy by a few points at most"
            effect = _paper_effect(model, cell.regularizer)
            paper_value = f"{effect:+.2f} points" if effect is not None else ""
            out.append(_finding(claim, Q_NOT_NECESSARY, rule, _effect_evidence(sweep, cell, base, lo, hi),
                                "table1", paper_value))
    return out


def _effect_evidence(sweep: SweepData, cell: Cell, base: Cell | None, lo: float, hi: float) -> Evidence:
    if base is None:
        return _absent("no run without regularizers")
    diff = _difference(cell, base)
    if diff is None:
        return _absent("; ".join(cell.problems() + base.problems()) or "no result")
    measured = (f"{diff.text(1)} points ({_pct(cell.interval('test_acc'))} vs "
                f"{_pct(base.interval('test_acc'))}; {_n(cell)})")
    unfitted = [c for c in (cell, base) if fit_state(sweep, c) != "fitted"]
    if unfitted:
        return Evidence(INCONCLUSIVE, measured + "; a run did not fit: " + "; ".join(
            f"{paper.REGULARIZER_NAMES.get(c.regularizer, c.regularizer)}: {'; '.join(c.problems())}"
            for c in unfitted))
    problem = _seeds_problem(cell, base)
    if problem:
        return Evidence(INCONCLUSIVE, measured + "; " + problem)
    return Evidence(_against_range(diff, lo, hi), measured)


def alexnet_weight_decay(sweep: SweepData) -> list[Finding]:
    """AlexNet + weight decay fails to converge on random labels; judged against a control that fits."""
    rule = ("the weight-decay run stalled short of fitting while the control (AlexNet on random labels "
            "without weight decay, same budget) fits; a fit with weight decay does not hold")
    claim = "AlexNet + weight decay fails to fit random labels"
    cell = sweep.cell("table4", "alexnet", "random-labels", None, "wd")
    control = next((c for c in (sweep.cell("table1", "alexnet", "random-labels"),
                                sweep.cell("fig1b", "alexnet", "partial", 1.0)) if c is not None), None)
    if cell is None:
        return [_finding(claim, Q_AWD, rule, _absent(), "table4", "failed to converge")]
    state = fit_state(sweep, cell)
    measured = f"with weight decay: {_train_text(cell) if cell.results else '; '.join(cell.problems())}"
    if state == "missing":
        return [_finding(claim, Q_AWD, rule, _absent(measured), "table4", "failed to converge")]
    if any(o.fitted for o in cell.results):
        return [_finding(claim, Q_AWD, rule, Evidence(FAILS, measured + ", fitted"), "table4",
                         "failed to converge")]
    measured += ", stalled" if state == "stalled" else ", still learning at its budget"
    control_state = fit_state(sweep, control) if control is not None else "missing"
    measured += "; control without weight decay: " + (
        {"fitted": "fits", "stalled": "stalled too", "learning": "did not fit either (still learning)",
         "partial": "fits so far (not every seed finished)", "missing": "no result"}[control_state])
    verdict = HOLDS if state == "stalled" and control_state == "fitted" else INCONCLUSIVE
    return [_finding(claim, Q_AWD, rule, Evidence(verdict, measured), "table4", "failed to converge")]


def regularized_random_fit(sweep: SweepData) -> list[Finding]:
    """Table 4: Inception and the MLPs still fit random labels with one regularizer on."""
    rule = "fits, for every Table 4 row of the model; a missing row makes it inconclusive"
    if "table4" not in sweep.experiments:
        return [_finding("with a regularizer on, Inception and the MLPs still fit random labels", Q_TABLE4,
                         rule, _absent(), "table4")]
    out = []
    for model in sweep.models("table4"):
        if model == "alexnet":
            continue
        rows = [r for r in paper.TABLE4 if r.model == model]
        cells = [(paper.REGULARIZER_NAMES[r.regularizer], sweep.cell("table4", model, "random-labels", None,
                                                                       r.regularizer)) for r in rows]
        paper_value = ", ".join(f"{paper.REGULARIZER_NAMES[r.regularizer]} {r.text}" for r in rows)
        out.append(_finding(f"{model_name(model)} still fits random labels with a regularizer on", Q_TABLE4,
                            rule, _fit_evidence(sweep, cells), "table4", paper_value))
    return out


def pixels(sweep: SweepData) -> list[Finding]:
    """Figure 1a: every randomization of the inputs is fitted too."""
    rule = "fits, for shuffled pixels, random pixels and Gaussian inputs"
    claim = "shuffled pixels, random pixels and Gaussian inputs are fitted too"
    cells = [(paper.CORRUPTION_NAMES[k], sweep.cell("fig1a", _fig1a_model(sweep), k))
             for k in PIXEL_CORRUPTIONS]
    if "fig1a" not in sweep.experiments:
        return [_finding(claim, Q_PIXELS, rule, _absent(), "fig1a")]
    return [_finding(f"{model_name(_fig1a_model(sweep))}: {claim}", Q_PIXELS, rule,
                     _fit_evidence(sweep, cells), "fig1a", "all fitted")]


def _fig1a_model(sweep: SweepData) -> str:
    return next(iter(sweep.models("fig1a")), "?")


def starts(sweep: SweepData) -> list[Finding]:
    """Figure 1a: random labels start later than true labels; random and Gaussian pixels earlier
    than random labels."""
    rule = "starts (see the rules)"
    if "fig1a" not in sweep.experiments:
        return [_finding("random labels start decreasing their loss later than true labels", Q_LATER, rule,
                         _absent(), "fig1a")]
    model = _fig1a_model(sweep)
    cell = {k: sweep.cell("fig1a", model, k) for k in ("true", "random-labels", "random-pixels", "gaussian")}
    out = []
    pairs = [
        ("random-labels", "true", Q_LATER, "random labels start decreasing the loss later than true labels"),
        ("random-labels", "random-pixels", Q_FASTER, "random pixels start converging before random labels"),
        ("random-labels", "gaussian", Q_FASTER, "Gaussian inputs start converging before random labels"),
    ]
    for late, early, quote, claim in pairs:
        if cell[late] is None or cell[early] is None:
            evidence = _absent()
        else:
            evidence = _later(sweep, cell[late], cell[early], paper.CORRUPTION_NAMES[late],
                              paper.CORRUPTION_NAMES[early])
        out.append(_finding(f"{model_name(model)}: {claim}", quote, rule, evidence, "fig1a"))
    return out


def _observations(sweep: SweepData, experiment: str, model: str, value: Callable[[Outcome], float | None]
                  ) -> tuple[list[float], list[float], bool]:
    """(p, value) over every seed of every p, and whether all of them are exact (fitted)."""
    xs, ys, exact = [], [], True
    for c in analysis.partial_cells(sweep, experiment, model):
        for o in c.results:
            v = value(o)
            if v is not None:
                xs.append(c.p)
                ys.append(v)
                exact = exact and o.fitted
    return xs, ys, exact


def slowdown(sweep: SweepData) -> list[Finding]:
    """Figure 1b: steps to fit grow with p, by a small constant factor."""
    rule_trend = "trends (see the rules), on steps to fit; a point that did not fit makes it inconclusive"
    rule_factor = (f"the 95% interval of steps(p = 1) / steps(p = 0) lies within [1, {SMALL_FACTOR:g}] "
                   "(over seeds, and one epoch of resolution on each)")
    if "fig1b" not in sweep.experiments:
        return [_finding("steps to fit grow with label corruption p", Q_SLOWDOWN, rule_trend, _absent(),
                         "fig1b", paper.FIG1B_CLAIM)]
    out = []
    for model in sweep.models("fig1b"):
        xs, ys, exact = _observations(sweep, "fig1b", model,
                                      lambda o: float(o.steps_to_fit if o.fitted else o.steps or 0) or None)
        cells = analysis.partial_cells(sweep, "fig1b", model)
        resolution = next((c.steps_per_epoch for c in cells if c.steps_per_epoch), 1)
        out.append(_finding(f"{model_name(model)}: steps to fit grow with label corruption p", Q_SLOWDOWN,
                            rule_trend, _trend_evidence(xs, ys, exact, resolution, "steps"), "fig1b",
                            paper.FIG1B_CLAIM))
        out.append(_finding(f"{model_name(model)}: the slowdown at p = 1 is a small constant factor",
                            Q_FACTOR, rule_factor, _factor_evidence(sweep, model), "fig1b",
                            "small"))
    return out


def _trend_evidence(xs: list[float], ys: list[float], exact: bool, resolution: float, what: str,
                    effect: stats.Interval | None = None) -> Evidence:
    if len(set(xs)) < 3:
        return _absent(f"fewer than three values of p have a result ({len(set(xs))})")
    test = stats.trend(xs, ys)
    at = {p: [y for x, y in zip(xs, ys, strict=True) if x == p] for p in (min(xs), max(xs))}
    delta = sum(at[max(xs)]) / len(at[max(xs)]) - sum(at[min(xs)]) / len(at[min(xs)])
    seeds = len(xs) / len(set(xs))
    ps = sorted(set(xs))
    per_p = [_mean_text([y for x, y in zip(xs, ys, strict=True) if x == p]) for p in ps]
    measured = f"{what} {', '.join(per_p)} at p = {', '.join(fmt_p(p) for p in ps)}; "
    if test is None:
        return Evidence(FAILS if exact else INCONCLUSIVE, measured + "no variation")
    measured += (f"Kendall tau {test.tau:+.2f}, one-sided p = {test.p_value:.3f} over {test.n} observations "
                 f"({seeds:g} per p); change from p = {fmt_p(min(xs))} to {fmt_p(max(xs))}: ")
    if effect is not None:
        measured += f"{effect.text(1)} points"
        big = effect.lo > 0
    else:
        measured += f"{delta:+,.0f} (resolution {resolution:,.0f})"
        big = delta > resolution
    if not exact:
        return Evidence(INCONCLUSIVE, measured + "; some runs did not fit (their value is a lower bound)")
    if test.significant and big:
        return Evidence(HOLDS, measured)
    return Evidence(FAILS, measured)


def _factor_evidence(sweep: SweepData, model: str) -> Evidence:
    top = sweep.cell("fig1b", model, "partial", 1.0)
    base = sweep.cell("fig1b", model, "partial", 0.0)
    if base is None or top is None or not base.results or not top.results:
        return _absent("no result at p = 0 or p = 1")
    if fit_state(sweep, base) != "fitted" or fit_state(sweep, top) != "fitted":
        return Evidence(INCONCLUSIVE, "p = 0 or p = 1 did not fit: the ratio is a bound")
    b = analysis.baseline_values(sweep, "fig1b", model)
    ratio = analysis.ratio_point(top, b)
    iv = stats.Interval(ratio.value, ratio.lo, ratio.hi, ratio.seeds)
    steps = [float(o.steps_to_fit) for o in top.results]
    measured = f"ratio {iv.text(2)} ({_mean_text(steps)} vs {_mean_text(b)} steps)"
    return Evidence(_against_range(iv, 1.0, SMALL_FACTOR), measured)


def error_growth(sweep: SweepData) -> list[Finding]:
    """Figure 1c: test error grows with p, to chance at p = 1."""
    rule_trend = ("trends (see the rules), on test error, with the 95% interval of error(p = 1) - "
                  "error(p = 0) above 0")
    rule_chance = (f"at chance at p = 1 (test error's interval contains {100 - CHANCE:g}%, "
                   f"within ± {CHANCE_BAND:g})")
    if "fig1c" not in sweep.experiments:
        return [_finding("test error grows with p", Q_ERROR, rule_trend, _absent(), "fig1c")]
    out = []
    for model in sweep.models("fig1c"):
        xs, ys, exact = _observations(sweep, "fig1c", model,
                                      lambda o: None if o.test_acc is None else 100 * (1 - o.test_acc))
        cells = analysis.partial_cells(sweep, "fig1c", model)
        effect = None
        if len(cells) >= 2:
            effect = _difference(cells[0], cells[-1])  # acc(low p) - acc(high p) = error growth
        out.append(_finding(f"{model_name(model)}: test error grows with label corruption p", Q_ERROR,
                            rule_trend, _trend_evidence(xs, ys, exact, 0.0, "test error %", effect), "fig1c",
                            "grows steadily"))
        top = sweep.cell("fig1c", model, "partial", 1.0)
        if top is None or not top.results:
            evidence = _absent("no result at p = 1")
        else:
            verdict, text = _chance_evidence(top)
            evidence = Evidence(verdict, "test accuracy at p = 1: " + text)
        out.append(_finding(f"{model_name(model)}: test error reaches chance at p = 1", Q_CHANCE, rule_chance,
                            evidence, "fig1c", f"{paper.FIG1C_TEST_ERROR_AT_P1:g}% error"))
    return out


def early_stopping(sweep: SweepData) -> list[Finding]:
    """Figure 2b: on CIFAR-10 the best test accuracy during training is no better than the final one,
    on runs that trained past their fit."""
    rule = (f"the 95% interval of best - final test accuracy lies below {EARLY_STOP_GAIN:g} points "
            "(does not hold when it lies above); only runs that fitted and then trained a stated number "
            "of epochs past the fit")
    claim = "early stopping brings no benefit on CIFAR-10"
    if "fig2b" not in sweep.experiments:
        return [_finding(claim, Q_EARLY, rule, _absent(), "fig2b", paper.EARLY_STOPPING_CIFAR10)]
    out = []
    for cell in sweep.cells_of("fig2b"):
        name = f"{model_name(cell.model)}: {claim}"
        past = {sweep.configs().get(o.run_id, {}).get("epochs_past_fit", 0) for o in cell.outcomes}
        diff = stats.difference_interval(cell.values("best_test_acc"), cell.n_test, cell.values("test_acc"),
                                          cell.n_test)
        if diff is None:
            evidence = _absent("; ".join(cell.problems()) or "no result")
        elif not any(past):
            evidence = Evidence(INCONCLUSIVE,
                                "the runs stopped at their fit: best - final is ~0 by construction")
        else:
            diff = diff.scaled(100)
            measured = (f"best - final {diff.text(1)} points ({_pct(cell.interval('best_test_acc'))} best "
                        f"vs {_pct(cell.interval('test_acc'))} final, {max(past)} epochs past the fit; "
                        f"{_n(cell)})")
            if fit_state(sweep, cell) != "fitted":
                evidence = Evidence(INCONCLUSIVE, measured + f"; did not fit ({'; '.join(cell.problems())})")
            elif diff.lo > EARLY_STOP_GAIN:
                evidence = Evidence(FAILS, measured)
            elif diff.hi <= EARLY_STOP_GAIN:
                evidence = Evidence(HOLDS, measured)
            else:
                evidence = Evidence(INCONCLUSIVE, measured)
        out.append(_finding(name, Q_EARLY, rule, evidence, "fig2b", paper.EARLY_STOPPING_CIFAR10))
    return out


def batchnorm(sweep: SweepData) -> list[Finding]:
    """Section 3.1: batch norm's gain in test accuracy is a few points."""
    lo, hi = BN_GAIN_RANGE
    rule = (f"the 95% interval of Inception - Inception w/o BatchNorm test accuracy lies inside "
            f"({lo:g}, {hi:g}] points; both fitted; at least 2 seeds per side")
    claim = "BatchNorm improves test accuracy by only a few points"
    paper_value = f"+{paper.BN_EFFECT[1]:.2f} without, +{paper.BN_EFFECT[0]:.2f} with weight decay"
    experiment = next((e for e in ("fig2b", "table1") if e in sweep.experiments), None)
    with_bn = sweep.cell(experiment, "inception") if experiment else None
    without = sweep.cell(experiment, "inception-nobn") if experiment else None
    if with_bn is None or without is None:
        return [_finding(claim, Q_BN, rule, _absent(), "fig2b", paper_value)]
    evidence = _effect_evidence(sweep, with_bn, without, lo, hi)
    if evidence.verdict == HOLDS and _difference(with_bn, without).lo <= lo:
        evidence = Evidence(INCONCLUSIVE, evidence.measured)
    return [_finding(claim, Q_BN, rule, evidence, experiment, paper_value)]


def clean_first(sweep: SweepData) -> list[Finding]:
    """Arpit et al.: clean examples are fitted before the corrupted ones."""
    rule = (f"clean minus corrupted train accuracy, averaged over the first {analysis.EARLY_FRACTION:.0%} "
            f"of the epochs and over seeds, is at least {CLEAN_FIRST_MARGIN:g} points at every p (holds), "
            "at most 0 at some p (does not hold)")
    claim = "networks fit clean examples before corrupted ones"
    if "memorization-order" not in sweep.experiments:
        return [_finding(claim, Q_CLEAN, rule, _absent(), "memorization-order", source=ARPIT)]
    out = []
    for model in sweep.models("memorization-order"):
        gaps = [(c.p, analysis.cell_early_gap(sweep, c))
                for c in analysis.partial_cells(sweep, "memorization-order", model)]
        gaps = [(p, g) for p, g in gaps if g is not None]
        if not gaps:
            evidence = _absent("no run with both clean and corrupted examples")
        else:
            measured = "early clean - corrupted train accuracy " + ", ".join(
                f"{g:+.1f} points at p = {fmt_p(p)}" for p, g in gaps)
            if all(g >= CLEAN_FIRST_MARGIN for _, g in gaps):
                evidence = Evidence(HOLDS, measured)
            elif any(g <= 0 for _, g in gaps):
                evidence = Evidence(FAILS, measured)
            else:
                evidence = Evidence(INCONCLUSIVE, measured)
        out.append(_finding(f"{model_name(model)}: {claim}", Q_CLEAN, rule, evidence, "memorization-order",
                            source=ARPIT))
    return out


CLAIMS: tuple[Callable[[SweepData], list[Finding]], ...] = (
    random_labels,
    table1_fits,
    no_regularizer,
    regularizer_effects,
    pixels,
    starts,
    slowdown,
    error_growth,
    batchnorm,
    early_stopping,
    alexnet_weight_decay,
    regularized_random_fit,
    clean_first,
)

# Stated by the paper about its figures, but with no measure we could check against.
NOT_CHECKED = (
    "'once the fitting starts, it converges quickly' (Figure 1a): the paper gives no measure of quickly",
    "'batch normalization stablizes the training process' (Figure 2b): no measure of stability is given",
)


def findings(sweep: SweepData) -> list[Finding]:
    """Every claim, in the paper's order of argument; Arpit et al.'s last."""
    return [f for claim in CLAIMS for f in claim(sweep)]
