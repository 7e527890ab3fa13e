"""Beyond the paper: the report's double-descent and memorization sections and their verdicts.

Each published claim is checked by the same machinery as the paper's: a rule stated here (`RULES`),
95% intervals from the test-set size (Wilson) and the seeds, and a verdict that can fail.
- Belkin et al. 2019 (random features): `theory.double_descent_verdict`, per recorded sweep.
- Nakkiran et al. 2020 (trained widths): the test-error peak lies near the interpolation width, and
  is more prominent with more label noise.
- Feldman and Zhang 2020 (memorization): examples with changed labels rank above clean ones, and
  removing the most memorized examples costs more test accuracy than removing random ones.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from rethink.report import figures, theory
from rethink.report.collect import Cell, SweepData, theory_created
from rethink.report.document import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    FigureSpec,
    Finding,
    Section,
    Table,
)
from rethink.report.stats import Interval, difference_interval, wilson
from rethink.theory import double_descent as rff_estimator
from rethink.theory import memorization as memorization_estimator

BELKIN, NAKKIRAN, FELDMAN = "Belkin et al. 2019", "Nakkiran et al. 2020", "Feldman & Zhang 2020"
SOURCES = (BELKIN, NAKKIRAN, FELDMAN)
NEAR_FACTOR = 2.0  # "near the interpolation width": within this factor of it
AUC_WELL_ABOVE = 0.75  # "well above 0.5"

Q_RFF = ("Random Fourier features on MNIST subsets (Belkin et al. 2019, Figure 2): the test error and "
         "the norm of the minimum-norm solution peak at the interpolation threshold N = n and decrease "
         "beyond it")
Q_PEAK = ("Model-wise double descent (Nakkiran et al. 2020, Section 5, Figures 1 and 4): the test-error "
          "peak occurs around the interpolation threshold, where the models are just large enough to "
          "fit the training set")
Q_NOISE = "Nakkiran et al. 2020, Figure 4: label noise makes the test-error peak more prominent"
Q_AUC = ("Feldman & Zhang 2020, Section 3: examples with high memorization scores are atypical or "
         "mislabeled; with labels changed at random, those are the examples that must be memorized")
Q_REMOVAL = ("Feldman & Zhang 2020, Figure 3: removing the examples with the highest memorization "
             "scores lowers test accuracy more than removing as many random examples")

RULES = (
    f"Trained widths, peak: the interpolation width is the smallest width whose final training accuracy "
    f"reaches the fit threshold; near it (within a factor {NEAR_FACTOR:g}, with a smaller and a larger "
    "width beside it) a width's rise and fall is its test error minus the larger of the lowest error at a "
    "smaller width and the error at the largest width (the Wilson half-widths in quadrature). Holds "
    "when the largest rise and fall has its 95% interval above 0 (the error rose to a peak near the "
    "threshold and fell beyond it; the smallest widths, which underfit, may err more); does not hold "
    "when at every width near the threshold the error lies below every smaller width's (intervals "
    "apart: no peak, a plain descent); inconclusive otherwise (no width fits, a width without a "
    "result, or overlapping intervals). Judged at each noise level above 0.",
    "Trained widths, noise: holds when the rise and fall at the largest noise exceeds that at noise 0 "
    "with the 95% interval of the difference above 0; does not hold when it lies below 0; "
    "inconclusive otherwise.",
    f"Memorization ranking: the AUC of the changed-label mask ranked by memorization score (ties "
    f"1/2), with Hanley and McNeil's 95% interval; holds when the interval lies above {AUC_WELL_ABOVE:g} "
    f"('well above 0.5'), does not hold when it lies below, inconclusive otherwise.",
    "Removal: the test accuracy after removing the most memorized examples, against removing as many "
    "random ones (seeds and test-set binomial in quadrature); holds when random removal keeps more "
    "accuracy with the interval of the difference above 0, does not hold when below 0, inconclusive "
    "otherwise.",
)

_VERDICT = {theory.AGREES: HOLDS, theory.DIFFERS: FAILS, theory.INCONCLUSIVE: INCONCLUSIVE,
            theory.NO_NUMBER: NOT_MEASURED}


def _verdict_word(text: str) -> str:
    return _VERDICT.get(text.split(":")[0], INCONCLUSIVE)


def _pct_iv(iv: Interval | None) -> str:
    return "-" if iv is None else iv.scaled(100).text(1, "%")


# ---------------------------------------------------------------- random features


def rff_rows(sweep: SweepData) -> list[dict[str, Any]]:
    """The recorded random-feature sweeps, oldest first (`collect.latest_theory` kept one per setting)."""
    return sorted((r for r in sweep.theory if r["kind"] == rff_estimator.KIND), key=theory_created)


def _rff_label(row: dict[str, Any]) -> str:
    c = row["config"]
    return (f"{c.get('dataset')} {c.get('features')}, n = {int(c.get('train_size') or 0):,}, "
            f"{100 * float(c.get('noise') or 0):g}% noise")


def rff_findings(sweep: SweepData) -> list[Finding]:
    out = []
    for row in rff_rows(sweep):
        ours, claim, verdict = theory.double_descent_verdict(row)
        out.append(Finding(f"Random features peak at N = n and descend beyond ({_rff_label(row)})", ours,
                           claim, _verdict_word(verdict), quote=Q_RFF, rule=theory.DOUBLE_DESCENT_RULE,
                           source=BELKIN, evidence="double-descent-rff"))
    return out


def section_rff(sweep: SweepData) -> Section:
    rows = rff_rows(sweep)
    section = Section("double-descent-rff", "Beyond the paper: double descent with random features")
    section.add("Minimum-norm least squares on N random Fourier (or ReLU) features of n training images "
                "(one-hot targets, exact SVD solve in float64), swept over N/n; label noise changes a "
                "fraction of the training labels to another class. No training runs: the fits are "
                "recorded in the store's theory table (`rethink double-descent`, or this sweep).")
    if not rows:
        return section.add("No random-feature sweep is recorded in this store.")
    errors, norms = {}, {}
    for row in rows:
        m = int(row["config"].get("test_size") or 0)
        pts = row["result"]["points"]
        errors[_rff_label(row)] = [figures.WidthPoint(p["ratio"], 100 * p["test_error"],
                                                      *(100 * v for v in wilson(p["test_error"], m)))
                                   for p in pts]
        norms[_rff_label(row)] = [figures.WidthPoint(p["ratio"], p["norm"], p["norm"], p["norm"])
                                  for p in pts]
    section.add(FigureSpec("double_descent_rff", "Test error against N/n; the dashed line is the "
                           "interpolation threshold N = n.",
                           figures.double_descent(errors, xlabel="features per training example N/n",
                                                  threshold=1.0, threshold_label="N = n",
                                                  title="Random features: test error")),
                FigureSpec("double_descent_rff_norm", "The norm of the minimum-norm solution against N/n.",
                           figures.double_descent(norms, xlabel="features per training example N/n",
                                                  threshold=1.0, threshold_label="N = n",
                                                  ylabel="solution norm", log_y=True, bars=False,
                                                  title="Random features: norm of the solution")))
    return section.add(*rff_findings(sweep))


# ---------------------------------------------------------------- trained widths


def _width_cells(sweep: SweepData) -> dict[tuple[str, float], list[Cell]]:
    """(model, noise) -> its cells by width."""
    out: dict[tuple[str, float], list[Cell]] = {}
    for cell in sweep.cells_of("double-descent-width"):
        out.setdefault((cell.model, float(cell.p or 0.0)), []).append(cell)
    return {k: sorted(v, key=lambda c: c.width or 0) for k, v in sorted(out.items())}


def _error(cell: Cell) -> Interval | None:
    """Test error (a fraction) with its 95% interval."""
    iv = cell.interval("test_acc")
    return None if iv is None else Interval(1 - iv.estimate, 1 - iv.hi, 1 - iv.lo, iv.seeds, iv.n_eval)


def interpolation_width(cells: Sequence[Cell]) -> int | None:
    """The smallest width whose every seed ends with training accuracy at the fit threshold."""
    for cell in cells:
        accs = cell.values("train_acc")
        if accs and len(accs) == cell.n_seeds and min(accs) >= cell.fit_threshold:
            return cell.width
    return None


def _widths_with_errors(cells: Sequence[Cell]) -> list[tuple[int, Interval]]:
    return [(c.width, e) for c in cells if c.width is not None and (e := _error(c)) is not None]


def _band(k0: int, errs: list[tuple[int, Interval]]) -> list[int]:
    """The widths near the interpolation width that have a smaller and a larger width beside them."""
    widths = [k for k, _ in errs]
    return [k for k in widths[1:-1] if k0 / NEAR_FACTOR <= k <= k0 * NEAR_FACTOR]


def bump(errs: list[tuple[int, Interval]], k0: int) -> tuple[int, Interval] | None:
    """The largest rise and fall of the test error near the interpolation width k0: at width k, its
    error minus the larger of (the lowest error at a smaller width, the error at the largest width),
    with the two Wilson half-widths in quadrature. None when no width qualifies (`_band`)."""
    by_width, last = dict(errs), errs[-1][1]
    best = None
    for k in _band(k0, errs):
        dip = min((e for j, e in errs if j < k), key=lambda e: e.estimate)
        ref = max(dip, last, key=lambda e: e.estimate)
        d = by_width[k].estimate - ref.estimate
        h = math.hypot(by_width[k].half_width, ref.half_width)
        if best is None or d > best[1].estimate:
            best = (k, Interval(d, d - h, d + h))
    return best


def peak_evidence(cells: Sequence[Cell]) -> tuple[str, str]:
    """(verdict, measured) of 'the test error peaks near the interpolation width' for one noise level."""
    errs = _widths_with_errors(cells)
    if len(errs) < 3:
        return NOT_MEASURED, "fewer than 3 widths with a result"
    k0 = interpolation_width(cells)
    curve = ", ".join(f"k = {k}: {100 * e.estimate:.1f}%" for k, e in errs)
    measured = f"test error {curve}; interpolation width " + (f"k = {k0}" if k0 else "none (no width fits)")
    missing = [str(c.width) for c in cells if not c.results]
    if missing:  # a width still to train could hold the peak
        return INCONCLUSIVE, measured + f"; no result yet at k = {', '.join(missing)}"
    found = bump(errs, k0) if k0 else None
    if found is None:
        return INCONCLUSIVE, measured + "; no width near the interpolation width between two others"
    k, rise = found
    measured += f"; largest rise and fall near it: {_pct_iv(rise)} at k = {k}"
    if rise.lo > 0:
        return HOLDS, measured
    by_width = dict(errs)
    falling = all(by_width[b].hi < min(e.lo for j, e in errs if j < b) for b in _band(k0, errs))
    return (FAILS if falling else INCONCLUSIVE), measured


def prominence(cells: Sequence[Cell]) -> Interval | None:
    """The peak's `bump` at one noise level (its rise and fall around the interpolation width)."""
    errs, k0 = _widths_with_errors(cells), interpolation_width(cells)
    found = bump(errs, k0) if k0 and len(errs) >= 3 else None
    return None if found is None else found[1]


def noise_evidence(levels: dict[float, Sequence[Cell]]) -> tuple[str, str]:
    if len(levels) < 2 or 0.0 not in levels:
        return NOT_MEASURED, "needs noise 0 and a higher level"
    top = max(levels)
    if any(not c.results for c in (*levels[top], *levels[0.0])):
        return INCONCLUSIVE, "some widths have no result yet"
    hi, lo = prominence(levels[top]), prominence(levels[0.0])
    if hi is None or lo is None:
        return INCONCLUSIVE, "a level has no width near its interpolation width between two others"
    h = math.hypot(hi.half_width, lo.half_width)
    d = Interval(hi.estimate - lo.estimate, hi.estimate - lo.estimate - h, hi.estimate - lo.estimate + h)
    measured = f"rise and fall {_pct_iv(hi)} at noise {top:g} vs {_pct_iv(lo)} at 0; difference {_pct_iv(d)}"
    return (HOLDS if d.lo > 0 else FAILS if d.hi < 0 else INCONCLUSIVE), measured


def width_findings(sweep: SweepData) -> list[Finding]:
    out = []
    by_model: dict[str, dict[float, list[Cell]]] = {}
    for (model, p), cells in _width_cells(sweep).items():
        by_model.setdefault(model, {})[p] = cells
        if p > 0:
            verdict, measured = peak_evidence(cells)
            out.append(Finding(f"{model}: the test-error peak lies near the interpolation width "
                               f"({100 * p:g}% noise)", measured, "peak around the interpolation threshold",
                               verdict, quote=Q_PEAK, rule=RULES[0], source=NAKKIRAN,
                               evidence="double-descent-width"))
    for model, levels in by_model.items():
        verdict, measured = noise_evidence(levels)
        out.append(Finding(f"{model}: label noise makes the peak more prominent", measured,
                           "more prominent with more noise", verdict, quote=Q_NOISE, rule=RULES[1],
                           source=NAKKIRAN, evidence="double-descent-width"))
    return out


def _epoch_errors(sweep: SweepData, cell: Cell) -> figures.Series:
    rows = [r for r in sweep.curve(cell.outcomes[0].run_id) if r.get("test_acc") is not None]
    return [r["epoch"] for r in rows], [100 * (1 - r["test_acc"]) for r in rows]


def section_width(sweep: SweepData) -> Section:
    section = Section("double-descent-width", "Beyond the paper: double descent of trained widths")
    groups = _width_cells(sweep)
    if not groups:
        return section.add("No width runs in this sweep.")
    any_cell = next(iter(groups.values()))[0]
    config = next((p["config"] for p in sweep.points if p["run_id"] == any_cell.outcomes[0].run_id), {})
    section.add(
        f"Nakkiran et al.'s width families trained with {config.get('optimizer', 'adam')} at a constant "
        f"rate {config.get('lr')} for {config.get('max_epochs')} epochs (no stopping at the fit), batch "
        f"{config.get('batch_size')}, augmentation {'+'.join(config.get('augment') or []) or 'none'}, on "
        f"{any_cell.n_train or 'all'} training and {any_cell.n_test or 'all'} test images; label noise "
        "changes that fraction of the training labels to another class. Test error with its 95% Wilson "
        "interval; training error dashed.")
    rows = []
    for (model, p), cells in groups.items():
        lines: dict[str, list[figures.WidthPoint]] = {}
        for c in cells:
            e = _error(c)
            if e is not None:
                lines.setdefault(f"test, {100 * p:g}% noise", []).append(
                    figures.WidthPoint(c.width, 100 * e.estimate, 100 * e.lo, 100 * e.hi))
            train = c.values("train_acc")
            if train:
                err = 100 * (1 - sum(train) / len(train))
                lines.setdefault(f"train, {100 * p:g}% noise", []).append(
                    figures.WidthPoint(c.width, err, err, err))
            rows.append([model, f"{100 * p:g}%", str(c.width), _pct_iv(e),
                         f"{100 * (1 - sum(train) / len(train)):.1f}%" if train else "-"])
        k0 = interpolation_width(cells)
        section.add(FigureSpec(
            f"double_descent_width_{model}_{int(round(100 * p))}",
            f"{model}, {100 * p:g}% label noise: test and train error against width"
            + (f"; dashed line: the interpolation width k = {k0}" if k0 else ""),
            figures.double_descent(lines, xlabel="width k", threshold=k0,
                                   threshold_label="interpolation width",
                                   title=f"{model}, {100 * p:g}% noise",
                                   dashed=[n for n in lines if n.startswith("train")])))
        if p == max(q for m, q in groups if m == model):
            curves = {f"k = {c.width}": _epoch_errors(sweep, c) for c in cells if c.results}
            section.add(FigureSpec(f"double_descent_epochs_{model}", f"Epoch-wise: test error against "
                                   f"epochs for each width, {100 * p:g}% noise.",
                                   figures.epoch_curves(curves, f"{model}, {100 * p:g}% noise: epoch-wise")))
    return section.add(Table(["model", "noise", "width", "test error (95%)", "train error"], rows),
                       *width_findings(sweep))


# ---------------------------------------------------------------- memorization


def memorization_rows(sweep: SweepData) -> dict[float, dict[str, Any]]:
    """Noise level -> its recorded scores, for this sweep."""
    sid = sweep.sweep.get("sweep_id")
    rows = [r for r in sweep.theory
            if r["kind"] == memorization_estimator.KIND and r["config"].get("sweep_id") == sid]
    return {float(r["config"]["p"]): r["result"] for r in sorted(rows, key=theory_created)}


def auc_evidence(result: dict[str, Any]) -> tuple[str, str]:
    auc, (lo, hi) = result.get("auc"), result.get("auc_interval") or (math.nan, math.nan)
    if auc is None or not math.isfinite(auc) or not math.isfinite(lo):
        return NOT_MEASURED, "no changed labels"
    changed = sum(result["changed"])
    measured = (f"AUC {auc:.3f} [{lo:.3f}, {hi:.3f}] ({changed:,} changed of {result['n']:,}; "
                f"{result['runs']} models)")
    return (HOLDS if lo > AUC_WELL_ABOVE else FAILS if hi < AUC_WELL_ABOVE else INCONCLUSIVE), measured


def removal_evidence(sweep: SweepData) -> tuple[str, str]:
    cells = {c.regularizer: c for c in sweep.cells_of("memorization-removal")}
    top, rand = cells.get("remove-memorized"), cells.get("remove-random")
    if top is None or rand is None or not top.results or not rand.results:
        return NOT_MEASURED, "the removal runs have no result"
    d = difference_interval(rand.values("test_acc"), rand.n_test, top.values("test_acc"), top.n_test)
    if d is None:
        return NOT_MEASURED, "no test accuracy"
    base = cells.get("none")
    measured = (f"test accuracy removing random {_pct_iv(rand.interval('test_acc'))}, removing the most "
                f"memorized {_pct_iv(top.interval('test_acc'))}"
                + (f", removing none {_pct_iv(base.interval('test_acc'))}" if base and base.results else "")
                + f"; difference {_pct_iv(d)} ({len(top.results)} seeds)")
    return (HOLDS if d.lo > 0 else FAILS if d.hi < 0 else INCONCLUSIVE), measured


def memorization_findings(sweep: SweepData) -> list[Finding]:
    out = []
    for p, result in memorization_rows(sweep).items():
        if p > 0:
            verdict, measured = auc_evidence(result)
            out.append(Finding(f"Changed labels carry the highest memorization scores ({100 * p:g}% noise)",
                               measured, "AUC well above 0.5", verdict, quote=Q_AUC, rule=RULES[2],
                               source=FELDMAN, evidence="memorization"))
    if sweep.cells_of("memorization-removal"):
        verdict, measured = removal_evidence(sweep)
        out.append(Finding("Removing the most memorized examples costs more test accuracy than random "
                           "removal",
                           measured, "more than random", verdict, quote=Q_REMOVAL, rule=RULES[3],
                           source=FELDMAN, evidence="memorization"))
    return out


def _grid_figure(result: dict[str, Any]) -> figures.Figure:
    grid = result["grid"]
    shape = grid["shape"]
    pixels = np.frombuffer(base64.b64decode(grid["pixels"]), dtype=np.uint8).reshape(shape)
    if shape[-1] == 1:
        pixels = pixels[..., 0]
    chosen = [i for row in grid["most"] + grid["least"] for i in row]
    at = {i: pixels[j] for j, i in enumerate(chosen)}
    rows = []
    for c, name in enumerate(grid["classes"]):
        images = [(at[i], f"{grid['scores'][str(i)]:.2f}") for i in grid["most"][c]]
        images += [(at[i], f"{grid['scores'][str(i)]:.2f}") for i in grid["least"][c]]
        rows.append((name, images))
    k = len(grid["most"][0]) if grid["most"] else 0
    return figures.image_grid(rows, f"left {k}: most memorized; right {k}: least memorized "
                                    "(score below each)")


def section_memorization(sweep: SweepData) -> Section:
    section = Section("memorization", "Beyond the paper: which examples are memorized")
    levels = memorization_rows(sweep)
    cells = sweep.cells_of("memorization")
    config = next((p["config"] for p in sweep.points if p["experiment"] == "memorization"), {})
    section.add(
        f"Feldman and Zhang's estimator: m models of {config.get('model')}, each trained (the paper's "
        f"protocol, to its fit) on its own random {config.get('train_fraction')} of the training split "
        "with the same labels; an example's memorization is P(correct | in the subset) - P(correct | "
        "not in it), the influence of training example i on test example j is the same difference for "
        "j. Standard errors are those of a difference of two proportions.")
    if not levels:
        done = sum(len(c.results) for c in cells)
        return section.add(f"No scores recorded yet ({done} subset runs have a result); rerun the sweep to "
                           "compute them once every subset run is finished.")
    panels, rows = {}, []
    for p, r in levels.items():
        scores, changed = np.array(r["scores"], dtype=float), np.array(r["changed"], dtype=bool)
        panels[f"{100 * p:g}% noise"] = {"clean": scores[~changed & np.isfinite(scores)],
                                         "changed labels": scores[changed & np.isfinite(scores)]}
        se = np.nanmedian(np.array(r["stderr"], dtype=float))
        rows.append([f"{100 * p:g}%", str(r["runs"]), f"{r['n']:,}", f"{100 * r['in_subset_train_acc']:.1f}%",
                     f"{100 * r['out_subset_train_acc']:.1f}%", f"{np.nanmean(scores):.3f}", f"{se:.3f}",
                     auc_evidence(r)[1] if p > 0 else "-"])
    section.add(FigureSpec("memorization_scores", "Memorization scores of clean examples and of examples "
                           "whose labels were changed, per noise level.", figures.score_histograms(panels)))
    section.add(Table(["noise", "models", "examples", "accuracy in subset", "out of subset", "mean score",
                       "median s.e.", "ranking of changed labels"], rows))
    clean = levels.get(0.0) or next(iter(levels.values()))
    section.add(FigureSpec("memorization_grid", "The most and least memorized training images of each class "
                           "(by the label trained on), lowest noise level.", _grid_figure(clean)))
    pairs = [[str(q["train"]), str(q["test"]), f"{q['influence']:.3f} ± {1.96 * q['stderr']:.3f}"]
             for q in clean["influence_pairs"]]
    section.add(Table(["training example", "test example", "influence (95%)"], pairs,
                      caption="The highest-influence pairs (indices into the run's training split and "
                              f"test set), the largest of {clean['n'] * clean['test']:,} estimates: chosen "
                              "for their size, so biased upward; candidates to check, not findings."))
    removal = sweep.cells_of("memorization-removal")
    if removal:
        section.add(Table(["removed", "n removed", "seeds", "test accuracy (95%)"],
                          [[c.regularizer, str(_removed(sweep, c)), str(len(c.results)),
                            _pct_iv(c.interval("test_acc"))] for c in removal],
                          caption="The removal test: the whole training split less the most memorized "
                                  "examples of the clean level, or as many random ones."))
    return section.add(*memorization_findings(sweep))


def _removed(sweep: SweepData, cell: Cell) -> int:
    point = next(p for p in sweep.points if p["run_id"] == cell.outcomes[0].run_id)
    return int(point["labels"].get("removed", 0))


def findings(sweep: SweepData) -> list[Finding]:
    return [*rff_findings(sweep), *width_findings(sweep), *memorization_findings(sweep)]


# the experiments with sections here; random features have no runs, so theirs is shown whenever the
# store holds a random-feature sweep (`rff_rows`)
SECTIONS = {
    "double-descent-width": section_width,
    "memorization": section_memorization,
}
# theory kinds with a section here, so not listed in the theory table
OWN_SECTION_KINDS = (rff_estimator.KIND, memorization_estimator.KIND)
