"""The paper's claims, each checked against the sweep: one line per claim (and model) saying what
we measured and whether the claim holds, does not hold, or was not measured.

Every threshold is a named constant below (in percentage points) and is printed in the report.
Means over seeds are judged; a claim whose experiment is not in the sweep is "not measured", and
so is one whose runs have no result (not run, failed, diverged) unless failing is the claim.
"""

from __future__ import annotations

from collections.abc import Callable

from rethink.report import analysis
from rethink.report import paper_numbers as paper
from rethink.report.collect import Cell, SweepData
from rethink.report.document import FAILS, HOLDS, NOT_MEASURED, Finding, fmt_p
from rethink.report.paper_numbers import model_name

FIT_ACC = 99.0  # train accuracy (%) that counts as fitting; the paper's own lowest fit is 99.21
CHANCE = paper.CHANCE_ACC  # 10% for ten classes
CHANCE_TOLERANCE = 3.0  # "at chance": within this many points of 10% test acc (90% test error)
MIN_TAU = 0.0  # "grows with p": Kendall's tau between p and the quantity must exceed this
ABOVE_CHANCE_MARGIN = 20.0  # "generalizes well above chance": test acc >= chance + this
CLEAN_FIRST_MARGIN = 5.0  # clean minus corrupted train acc, early in training, at least this
BN_GAIN_MIN, BN_GAIN_MAX = 0.0, 10.0  # "BN improves test acc by a few points": gain in (min, max]
EARLY_STOP_GAIN = 2.0  # "early stopping does not help": best minus final test acc at most this

THRESHOLDS = (
    f"fits: train accuracy ≥ {FIT_ACC:g}% (the paper's own lowest fit of random labels is 99.21%)",
    f"at chance: test accuracy within ±{CHANCE_TOLERANCE:g} points of {CHANCE:g}% "
    f"(test error within ±{CHANCE_TOLERANCE:g} of {100 - CHANCE:g}%)",
    f"grows with p: Kendall's tau between p and the quantity > {MIN_TAU:g}",
    f"well above chance: test accuracy ≥ {CHANCE + ABOVE_CHANCE_MARGIN:g}% "
    f"(chance + {ABOVE_CHANCE_MARGIN:g} points)",
    f"clean before corrupted: clean minus corrupted train accuracy, averaged over the first "
    f"{analysis.EARLY_FRACTION:.0%} of the epochs, ≥ {CLEAN_FIRST_MARGIN:g} points at every p",
    f"a few points: BatchNorm's test-accuracy gain in ({BN_GAIN_MIN:g}, {BN_GAIN_MAX:g}] points",
    f"no early-stopping benefit: best minus final test accuracy ≤ {EARLY_STOP_GAIN:g} points",
)


def _verdict(ok: bool) -> str:
    return HOLDS if ok else FAILS


def _mean(cell: Cell | None, attr: str) -> float | None:
    """The cell's mean in percent, or None without a result."""
    s = None if cell is None else cell.stat(attr)
    return None if s is None else 100 * s.mean


def _seeds(cell: Cell) -> str:
    return f" (mean of {len(cell.results)} seeds)" if cell.n_seeds > 1 else ""


def _why_missing(cell: Cell | None) -> str:
    return "not in this sweep" if cell is None else "; ".join(cell.problems()) or "no result"


def _caveats(cell: Cell) -> str:
    """'; did not fit in 60 epochs' etc., so a failed claim says when the budget was the limit."""
    problems = cell.problems()
    return "; " + "; ".join(problems) if problems else ""


def _absent(claim: str, paper_text: str, what: str = "not in this sweep") -> Finding:
    return Finding(claim, what, paper_text, NOT_MEASURED)


# ------------------------------------------------------------------ the claims


def random_labels(sweep: SweepData) -> list[Finding]:
    """Each model fits random labels (train >= FIT_ACC) and tests at chance."""
    paper_row = {r.model: r for r in paper.TABLE1 if r.random_labels}
    experiment = next((e for e in ("table1", "fig1c", "fig1b") if e in sweep.experiments), None)
    if experiment is None:
        return [_absent("networks fit random labels, test at chance", "random labels: 100.0 / ~10")]
    out = []
    for model in sweep.models(experiment):
        if experiment == "table1":
            cell = sweep.cell("table1", model, "random-labels")
        else:
            cell = sweep.cell(experiment, model, "partial", 1.0)
        if cell is None:
            continue
        row = paper_row.get(model)
        paper_text = f"{paper.paper_pct(row.train_acc)} / {paper.paper_pct(row.test_acc)}" if row else ""
        claim = f"{model_name(model)} fits random labels, test at chance"
        train, test = _mean(cell, "train_acc"), _mean(cell, "test_acc")
        if train is None or test is None:
            out.append(_absent(claim, paper_text, _why_missing(cell)))
            continue
        ok = train >= FIT_ACC and abs(test - CHANCE) <= CHANCE_TOLERANCE
        out.append(Finding(claim, f"{train:.1f}% train, {test:.1f}% test{_seeds(cell)}{_caveats(cell)}",
                           paper_text, _verdict(ok)))
    return out


def pixels(sweep: SweepData) -> list[Finding]:
    """Shuffled pixels, random pixels and Gaussian inputs are fitted too (Figure 1a)."""
    claim = "pixel randomizations are fitted too (shuffled, random pixels, Gaussian)"
    paper_text = "all converge to zero training loss (Figure 1a)"
    cells = [c for c in sweep.cells_of("fig1a") if c.corruption not in ("true", "random-labels")]
    if not cells:
        return [_absent(claim, paper_text)]
    parts, oks, missing = [], [], []
    for c in cells:
        train = _mean(c, "train_acc")
        name = paper.CORRUPTION_NAMES.get(c.corruption, c.corruption)
        if train is None:
            missing.append(f"{name}: {_why_missing(c)}")
        else:
            late = "" if c.all_fitted else f" ({'; '.join(c.problems())})"
            parts.append(f"{name} {train:.1f}%{late}")
            oks.append(train >= FIT_ACC)
    if not oks:
        return [_absent(claim, paper_text, "; ".join(missing))]
    model = model_name(cells[0].model)
    measured = f"{model}: " + ", ".join(parts) + " train" + "".join(f"; {m}" for m in missing)
    return [Finding(claim, measured, paper_text, _verdict(all(oks)))]


def slowdown(sweep: SweepData) -> list[Finding]:
    """Figure 1b: steps to fit grow with label corruption p."""
    if "fig1b" not in sweep.experiments:
        return [_absent("steps to fit grow with label corruption p", paper.FIG1B_CLAIM)]
    out = []
    for model in sweep.models("fig1b"):
        claim = f"{model_name(model)}: steps to fit grow with label corruption p"
        base = sweep.cell("fig1b", model, "partial", 0.0)
        if analysis.baseline_steps(sweep, "fig1b", model) is None:
            why = _why_missing(base) if base is None or not base.results else "the p = 0 run did not fit"
            out.append(_absent(claim, paper.FIG1B_CLAIM, f"no baseline: {why}"))
            continue
        pts = analysis.slowdown_points(sweep, "fig1b", model)
        if len(pts) < 2:
            out.append(_absent(claim, paper.FIG1B_CLAIM, "fewer than two values of p have a result"))
            continue
        tau = analysis.kendall_tau([q.p for q in pts], [q.value for q in pts])
        last = pts[-1]
        values = ", ".join(("≥" if q.lower_bound else "") + f"{q.value:.2f}" for q in pts)
        measured = (f"relative steps {values} at p = {', '.join(fmt_p(q.p) for q in pts)} "
                    f"(Kendall tau {tau:+.2f})")
        if any(q.lower_bound for q in pts):
            measured += "; ≥: did not fit, its budget is a lower bound"
        ok = tau is not None and tau > MIN_TAU and last.value > 1
        out.append(Finding(claim, measured, paper.FIG1B_CLAIM, _verdict(ok)))
    return out


def error_growth(sweep: SweepData) -> list[Finding]:
    """Figure 1c: test error grows with p, to chance (90%) at p = 1."""
    paper_text = f"grows steadily to ~{paper.FIG1C_TEST_ERROR_AT_P1:g}% at p = 1"
    if "fig1c" not in sweep.experiments:
        return [_absent("test error grows with p to ~90% at p = 1", paper_text)]
    out = []
    for model in sweep.models("fig1c"):
        claim = f"{model_name(model)}: test error grows with p to ~90% at p = 1"
        pts = analysis.error_points(sweep, "fig1c", model)
        at_one = next((q for q in pts if q.p == 1), None)
        if len(pts) < 2 or at_one is None:
            cell = sweep.cell("fig1c", model, "partial", 1.0)
            why = _why_missing(cell) if at_one is None else "fewer than two values of p have a result"
            out.append(_absent(claim, paper_text, why))
            continue
        tau = analysis.kendall_tau([q.p for q in pts], [q.value for q in pts])
        values = ", ".join(f"{q.value:.1f}" for q in pts)
        measured = (f"test error {values}% at p = {', '.join(fmt_p(q.p) for q in pts)} "
                    f"(Kendall tau {tau:+.2f})")
        ok = tau is not None and tau > MIN_TAU and abs(at_one.value - (100 - CHANCE)) <= CHANCE_TOLERANCE
        out.append(Finding(claim, measured, paper_text, _verdict(ok)))
    return out


def clean_first(sweep: SweepData) -> list[Finding]:
    """Memorization order: clean examples are fitted before the corrupted ones."""
    paper_text = "not stated by Zhang et al.; Arpit et al. 2017 ('simple patterns first')"
    if "memorization-order" not in sweep.experiments:
        return [_absent("networks fit clean examples before corrupted ones", paper_text)]
    out = []
    for model in sweep.models("memorization-order"):
        claim = f"{model_name(model)} fits clean examples before corrupted ones"
        gaps = [(c.p, analysis.cell_early_gap(sweep, c))
                for c in analysis.partial_cells(sweep, "memorization-order", model)]
        gaps = [(p, g) for p, g in gaps if g is not None]
        if not gaps:
            out.append(_absent(claim, paper_text, "no run with both clean and corrupted examples"))
            continue
        measured = "early clean - corrupted train acc " + ", ".join(
            f"{g:+.1f} points at p = {fmt_p(p)}" for p, g in gaps)
        out.append(Finding(claim, measured, paper_text, _verdict(all(g >= CLEAN_FIRST_MARGIN
                                                                      for _, g in gaps))))
    return out


def no_regularizer(sweep: SweepData) -> list[Finding]:
    """Explicit regularization is not necessary: without it test accuracy is well above chance."""
    paper_test = {r.model: r.test_acc for r in paper.TABLE1
                  if not (r.crop or r.weight_decay or r.random_labels)}
    experiment = next((e for e in ("regularizers", "table1") if e in sweep.experiments), None)
    if experiment is None:
        return [_absent("without explicit regularizers the models still generalize", "Table 1")]
    out = []
    for model in sweep.models(experiment):
        cell = sweep.cell(experiment, model)
        if cell is None:
            continue
        claim = f"{model_name(model)} generalizes well above chance without explicit regularizers"
        paper_text = f"{paper_test[model]:.2f}% test" if model in paper_test else ""
        test = _mean(cell, "test_acc")
        if test is None:
            out.append(_absent(claim, paper_text, _why_missing(cell)))
            continue
        out.append(Finding(claim, f"{test:.1f}% test{_seeds(cell)}{_caveats(cell)}", paper_text,
                           _verdict(test >= CHANCE + ABOVE_CHANCE_MARGIN)))
    return out


def alexnet_weight_decay(sweep: SweepData) -> list[Finding]:
    """Table 4 / section 3: AlexNet with weight decay fails to converge on random labels."""
    claim = "AlexNet + weight decay fails to fit random labels"
    paper_text = "failed to converge"
    cell = sweep.cell("table4", "alexnet", "random-labels", None, "wd")
    if cell is None:
        return [_absent(claim, paper_text)]
    judged = [o for o in cell.outcomes if o.has_result or o.status == "diverged"]
    if not judged:
        return [_absent(claim, paper_text, _why_missing(cell))]
    train = _mean(cell, "train_acc")
    measured = "; ".join(filter(None, [
        f"{train:.1f}% train{_seeds(cell)}" if train is not None else "",
        "; ".join(cell.problems()) or "fitted"]))
    if any(o.fitted for o in judged):
        return [Finding(claim, measured, paper_text, FAILS)]
    # Failing only means something if AlexNet fits random labels without weight decay (the control).
    control = next((c for c in (sweep.cell("table1", "alexnet", "random-labels"),
                                sweep.cell("fig1b", "alexnet", "partial", 1.0),
                                sweep.cell("fig1c", "alexnet", "partial", 1.0)) if c is not None), None)
    if control is None:
        return [Finding(claim, measured + " (no control run without weight decay)", paper_text, HOLDS)]
    if not control.all_fitted:
        return [_absent(claim, paper_text, f"inconclusive: {measured}, but without weight decay it did not "
                        f"fit random labels either ({'; '.join(control.problems()) or 'no result'})")]
    return [Finding(claim, measured + "; without weight decay it fits", paper_text, HOLDS)]


def regularized_random_fit(sweep: SweepData) -> list[Finding]:
    """Table 4: Inception and the MLPs still fit random labels with one regularizer on."""
    if "table4" not in sweep.experiments:
        return [_absent("with a regularizer on, Inception and the MLPs still fit random labels",
                        "Table 4: 99.21-100%")]
    out = []
    for model in sweep.models("table4"):
        if model == "alexnet":
            continue
        rows = [r for r in paper.TABLE4 if r.model == model]
        claim = f"{model_name(model)} still fits random labels with a regularizer on"
        paper_text = ", ".join(f"{paper.REGULARIZER_NAMES[r.regularizer]} {r.text}" for r in rows)
        parts, oks = [], []
        for r in rows:
            cell = sweep.cell("table4", model, "random-labels", None, r.regularizer)
            train = _mean(cell, "train_acc")
            name = paper.REGULARIZER_NAMES[r.regularizer]
            if train is None:
                parts.append(f"{name}: {_why_missing(cell)}")
            else:
                late = "" if cell.all_fitted else f" ({'; '.join(cell.problems())})"
                parts.append(f"{name} {train:.1f}%{late}")
            if train is not None:
                oks.append(train >= FIT_ACC)
        if not oks:
            out.append(_absent(claim, paper_text, "; ".join(parts)))
        else:
            out.append(Finding(claim, ", ".join(parts) + " train", paper_text, _verdict(all(oks))))
    return out


def _bn_cells(sweep: SweepData) -> tuple[Cell | None, Cell | None]:
    for experiment in ("fig2b", "table1"):
        if experiment in sweep.experiments:
            return sweep.cell(experiment, "inception"), sweep.cell(experiment, "inception-nobn")
    return None, None


def batchnorm(sweep: SweepData) -> list[Finding]:
    """Section 3.1: BatchNorm improves test accuracy, but only by 3-4 points."""
    claim = "BatchNorm improves test accuracy by only a few points"
    paper_text = f"+{paper.BN_EFFECT[1]:.2f} without, +{paper.BN_EFFECT[0]:.2f} with weight decay"
    with_bn, without = _bn_cells(sweep)
    if with_bn is None or without is None:
        return [_absent(claim, paper_text)]
    a, b = _mean(with_bn, "test_acc"), _mean(without, "test_acc")
    if a is None or b is None:
        why = "; ".join(f"{model_name(c.model)}: {_why_missing(c)}" for c in (with_bn, without)
                        if _mean(c, "test_acc") is None)
        return [_absent(claim, paper_text, why)]
    gain = a - b
    measured = f"{a:.1f}% with vs {b:.1f}% without BatchNorm: {gain:+.1f} points"
    # the paper compares networks that fit their training set; one that ran out of budget
    # is still learning, and its test accuracy says nothing about batch norm
    train = {c.model: _mean(c, "train_acc") for c in (with_bn, without)}
    unfitted = {m: t for m, t in train.items() if t is not None and t < FIT_ACC}
    if unfitted:
        why = "; ".join(f"{model_name(m)} reached only {t:.1f}% train accuracy" for m, t in unfitted.items())
        return [_absent(claim, paper_text, f"inconclusive: {measured}, but {why} in its budget")]
    return [Finding(claim, measured, paper_text, _verdict(BN_GAIN_MIN < gain <= BN_GAIN_MAX))]


def early_stopping(sweep: SweepData) -> list[Finding]:
    """Section 3.1 / Figure 2b: on CIFAR-10 early stopping brings no potential benefit."""
    claim = "early stopping brings little on CIFAR-10"
    if "fig2b" not in sweep.experiments:
        return [_absent(claim, paper.EARLY_STOPPING_CIFAR10)]
    out = []
    for cell in sweep.cells_of("fig2b"):
        best, final = _mean(cell, "best_test_acc"), _mean(cell, "test_acc")
        c = f"{model_name(cell.model)}: {claim}"
        if best is None or final is None:
            out.append(_absent(c, paper.EARLY_STOPPING_CIFAR10, _why_missing(cell)))
            continue
        out.append(Finding(c, f"best {best:.1f}% vs final {final:.1f}% test: {best - final:+.1f} points",
                           paper.EARLY_STOPPING_CIFAR10, _verdict(best - final <= EARLY_STOP_GAIN)))
    return out


CLAIMS: tuple[Callable[[SweepData], list[Finding]], ...] = (
    random_labels,
    pixels,
    slowdown,
    error_growth,
    clean_first,
    no_regularizer,
    alexnet_weight_decay,
    regularized_random_fit,
    batchnorm,
    early_stopping,
)


def findings(sweep: SweepData) -> list[Finding]:
    """Every claim, in the paper's order of argument."""
    return [f for claim in CLAIMS for f in claim(sweep)]
