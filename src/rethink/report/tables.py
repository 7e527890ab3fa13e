"""The report's tables, built from a sweep: Table 1, Table 4, the regularizer study, and the
numbers behind each figure. Our numbers sit beside the paper's where the paper has them.

Every number carries its 95% interval (`rethink.report.stats`): accuracies the Wilson interval of
the set they were measured on widened by the seeds' t interval, other numbers (steps, ratios) the
seeds' t interval alone, which one seed cannot give ("1 seed: no interval"). Every table has a
column "n (seeds / train / test)". A missing, failed or unfinished run shows as such in its cell
or in the row's notes ("not run", "failed: ...", "did not fit in 60 epochs").
"""

from __future__ import annotations

from collections.abc import Iterable

from rethink.report import analysis
from rethink.report import paper_numbers as paper
from rethink.report.collect import Cell, SweepData
from rethink.report.document import (
    NO_SEED_INTERVAL,
    Table,
    cell_sizes,
    cell_value,
    fmt_int,
    fmt_interval,
    fmt_p,
    notes_of,
)
from rethink.report.paper_numbers import model_name
from rethink.report.stats import Interval, accuracy_interval, difference_interval, mean_interval

N_HEADER = "n (seeds / train / test)"
INTERVAL_NOTE = (
    "In brackets: 95% intervals. An accuracy's is the Wilson interval of the set it was measured on "
    "(the n column) widened by the seeds' t interval; with one seed it is the Wilson interval alone "
    f"(no seed interval). Steps and ratios vary only with the seed: with one seed, '{NO_SEED_INTERVAL}'."
)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def fit_threshold_text(cells: Iterable[Cell | None]) -> str:
    """The fit threshold(s) of these cells' runs, e.g. '99%'."""
    levels = sorted({c.fit_threshold for c in cells if c is not None})
    return " or ".join(f"{100 * t:g}%" for t in levels) or "the run's threshold"


def _fitted_caption(cells: Iterable[Cell | None]) -> str:
    return (f"'fitted?': the run reached its fit threshold, {fit_threshold_text(cells)} accuracy on the "
            "full training set (checked after every epoch), within its epoch budget (status 'fitted').")


def fitted_text(cell: Cell | None) -> str:
    """'yes', 'no', or 'k of n seeds' for the fitted? column: status 'fitted', i.e. the run reached
    its own fit threshold within its budget."""
    if cell is None:
        return "not in sweep"
    done = cell.results
    if not done:
        return "-"
    k = sum(o.fitted for o in done)
    if len(done) == 1 and cell.n_seeds == 1:
        return _yes(k == 1)
    return f"{k} of {cell.n_seeds} seeds"


def seed_value(cell: Cell | None, values: list[float], *, scale: float = 1.0, digits: int = 0,
               signed: bool = False, counts: bool = False) -> str:
    """A number that varies only with the seed (steps, epochs, a gap), with its t interval, and how
    many of the cell's seeds it covers. `counts`: the values cannot be negative (steps, rates), so
    the interval is cut at 0."""
    if cell is None:
        return "not in sweep"
    iv = mean_interval(values, floor=0.0 if counts else None)
    if iv is None:
        return "-"
    text = fmt_interval(iv, scale=scale, digits=digits, signed=signed)
    return text + (f" ({iv.seeds} of {cell.n_seeds} seeds)" if iv.seeds < cell.n_seeds else "")


def table1(sweep: SweepData) -> Table:
    models = set(sweep.models("table1"))
    rows, cells = [], []
    for r in paper.TABLE1:
        if r.model not in models:
            continue
        reg = paper.table1_regularizer(r.crop, r.weight_decay)
        cell = sweep.cell("table1", r.model, "random-labels" if r.random_labels else "true", None, reg)
        cells.append(cell)
        name = model_name(r.model) + (" (fitting random labels)" if r.random_labels else "")
        rows.append([
            name, fmt_int(paper.PARAMS.get(r.model)), _yes(r.crop), _yes(r.weight_decay), cell_sizes(cell),
            cell_value(cell, "train_acc"), fitted_text(cell), paper.paper_pct(r.train_acc),
            cell_value(cell, "test_acc"), paper.paper_pct(r.test_acc), notes_of(cell),
        ])
    return Table(
        ["model", "# params (paper)", "random crop", "weight decay", N_HEADER, "train acc (ours)", "fitted?",
         "train acc (paper)", "test acc (ours)", "test acc (paper)", "notes"],
        rows,
        caption="Table 1: training and test accuracy (%) on CIFAR-10, with and without random crop "
        "and weight decay; the random-label rows use neither. " + _fitted_caption(cells),
        notes=(INTERVAL_NOTE,),
    )


def table4(sweep: SweepData) -> Table:
    models = set(sweep.models("table4"))
    rows, cells = [], []
    for r in paper.TABLE4:
        if r.model not in models:
            continue
        cell = sweep.cell("table4", r.model, "random-labels", None, r.regularizer)
        cells.append(cell)
        rows.append([
            model_name(r.model), paper.REGULARIZER_NAMES.get(r.regularizer, r.regularizer), cell_sizes(cell),
            cell_value(cell, "train_acc"), fitted_text(cell), r.text, cell_value(cell, "test_acc"),
            notes_of(cell),
        ])
    return Table(
        ["model", "regularizer", N_HEADER, "train acc (ours)", "fitted?", "train acc (paper)",
         "test acc (ours)", "notes"],
        rows,
        caption="Table 4: fitting random labels with one explicit regularizer on (accuracy, %). "
        + _fitted_caption(cells),
        notes=(INTERVAL_NOTE,),
    )


def _final_interval(sweep: SweepData, cell: Cell, key: str) -> Interval | None:
    """A number of each seed's last epoch row (e.g. test_top5), as an accuracy with its interval."""
    values = [(sweep.curve(o.run_id) or [{}])[-1].get(key) for o in cell.results]
    n_eval = cell.n_train if key.startswith("train") else cell.n_test
    return accuracy_interval([v for v in values if v is not None], n_eval)


def _final_epoch(sweep: SweepData, cell: Cell | None, key: str) -> str:
    if cell is None:
        return "not in sweep"
    return fmt_interval(_final_interval(sweep, cell, key))


def _with_best(sweep: SweepData, cell: Cell | None, key: str, best_key: str) -> str:
    """'final (best so far)': the paper's Table 2 notation for what early stopping could keep."""
    final = _final_epoch(sweep, cell, key)
    best = _final_epoch(sweep, cell, best_key)
    return final if best in ("-", final) or cell is None else f"{final} (best {best})"


def table2(sweep: SweepData) -> Table:
    rows = []
    for r in paper.TABLE2:
        cell = sweep.cell("table2", "inception-v3", r.corruption, None, r.regularizer)
        regs = r.regularizer.split("+")
        rows.append([
            "random labels" if r.corruption == "random-labels" else "true labels",
            _yes("aug" in regs), _yes("dropout" in regs), _yes("wd" in regs), cell_sizes(cell),
            _final_epoch(sweep, cell, "train_acc"), r.train_top1,
            _final_epoch(sweep, cell, "train_top5"), r.train_top5,
            _with_best(sweep, cell, "test_acc", "best_test_acc"), r.test_top1,
            _with_best(sweep, cell, "test_top5", "best_test_top5"), r.test_top5,
            notes_of(cell),
        ])
    return Table(
        ["labels", "data aug", "dropout", "weight decay", N_HEADER, "top-1 train (ours)", "(paper)",
         "top-5 train (ours)", "(paper)", "top-1 test (ours)", "(paper)", "top-5 test (ours)", "(paper)",
         "notes"],
        rows,
        caption="Table 2: Inception V3 on ImageNet(-like) data, top-1 / top-5 accuracy (%); 'best': the "
        "best test accuracy during training (what early stopping could keep), the paper's numbers in "
        "parentheses. '?' marks paper cells only secondary sources give.",
        notes=(INTERVAL_NOTE,),
    )


# ------------------------------------------------------------------ the regularizer study


def paper_true_label_test(model: str, regularizer: str) -> float | None:
    """The paper's Table 1 test accuracy (%) of `model` on true labels with `regularizer`
    ('none', 'crop', 'wd' or 'crop+wd'); None where Table 1 has no such row."""
    return next((r.test_acc for r in paper.TABLE1 if r.model == model and not r.random_labels
                 and paper.table1_regularizer(r.crop, r.weight_decay) == regularizer), None)


def _paper_change(model: str, regularizer: str) -> str:
    ours, none = paper_true_label_test(model, regularizer), paper_true_label_test(model, "none")
    if regularizer == "none":
        return "(reference)" if none is not None else "-"
    if ours is None or none is None:
        return "-"
    return f"{ours - none:+.2f}"


def change_vs_none(cell: Cell, none: Cell | None) -> str:
    """Test accuracy with the regularizer minus without (points) with its 95% interval, only when
    both fitted their training set: otherwise the regularizer's effect is mixed with underfitting."""
    if cell.regularizer == "none":
        return "(reference)"
    if none is None:
        return "no run without regularizers"
    unfitted = [c for c in (cell, none) if c.results and not c.all_fitted]
    if unfitted:
        who = ["did not fit" if c is cell else "the run without regularizers did not fit" for c in unfitted]
        return "; ".join(who)
    diff = difference_interval(cell.values("test_acc"), cell.n_test, none.values("test_acc"), none.n_test)
    return "-" if diff is None else fmt_interval(diff, signed=True)


def regularizers(sweep: SweepData) -> Table:
    rows, cells = [], []
    for model in sweep.models("regularizers"):
        none = sweep.cell("regularizers", model)
        for cell in (c for c in sweep.cells_of("regularizers") if c.model == model):
            cells.append(cell)
            paper_test = paper_true_label_test(model, cell.regularizer)
            rows.append([
                model_name(model), paper.REGULARIZER_NAMES.get(cell.regularizer, cell.regularizer),
                cell_sizes(cell), cell_value(cell, "train_acc"), fitted_text(cell),
                cell_value(cell, "test_acc"), change_vs_none(cell, none), paper.paper_pct(paper_test),
                _paper_change(model, cell.regularizer), notes_of(cell),
            ])
    return Table(
        ["model", "regularizer", N_HEADER, "train acc", "fitted?", "test acc", "change vs none (points)",
         "test acc (paper, Table 1)", "change vs none (paper)", "notes"],
        rows,
        caption="Each explicit regularizer alone, true labels (accuracy in %). 'change vs none': test "
        "accuracy minus that of the same model without regularizers, with the 95% interval of the "
        "difference (both sides' seeds and test sets, in quadrature: conservative, as both are scored on "
        "the same test images); given only when both runs fitted. The paper's numbers are Table 1's "
        "(random crop, weight decay); it gives none for dropout on CIFAR-10. " + _fitted_caption(cells),
        notes=(INTERVAL_NOTE,),
    )


# ------------------------------------------------------------------ the figures' numbers


def _steps_caption(cells: Iterable[Cell]) -> str:
    per_epoch = sorted({c.steps_per_epoch for c in cells if c.steps_per_epoch})
    if not per_epoch:
        return "resolution one epoch"
    return f"resolution one epoch = {' or '.join(fmt_int(s) for s in per_epoch)} steps"


def fig1a(sweep: SweepData) -> Table:
    rows, cells = [], sweep.cells_of("fig1a")
    for cell in cells:
        rows.append([
            model_name(cell.model), paper.CORRUPTION_NAMES.get(cell.corruption, cell.corruption),
            cell_sizes(cell), cell_value(cell, "train_acc"), fitted_text(cell),
            seed_value(cell, [float(o.steps_to_fit) for o in cell.results if o.fitted and o.steps_to_fit],
                       counts=True),
            cell_value(cell, "test_acc"), notes_of(cell),
        ])
    return Table(
        ["model", "randomization", N_HEADER, "train acc", "fitted?", "steps to fit", "test acc", "notes"],
        rows,
        caption=f"The runs of Figure 1a at the end of training (accuracy in %); steps to fit over the seeds "
        f"that fitted ({_steps_caption(cells)}). " + _fitted_caption(cells),
        notes=(INTERVAL_NOTE,))


def ratio_text(q: analysis.RatioPoint | None) -> str:
    """'1.52 [1.31, 1.73]', '≥ 2.10 [...]' when a seed did not fit, or a one-seed value."""
    if q is None:
        return "-"
    if q.p == 0:
        return "1 (reference)"
    iv = Interval(q.value, q.lo, q.hi, q.seeds)
    return ("≥ " if q.lower_bound else "") + fmt_interval(iv, scale=1, digits=2)


def fig1b(sweep: SweepData) -> Table:
    rows, all_cells = [], []
    for model in sweep.models("fig1b"):
        base_values = analysis.baseline_values(sweep, "fig1b", model)
        for cell in analysis.partial_cells(sweep, "fig1b", model):
            all_cells.append(cell)
            fitted = [float(o.steps_to_fit) for o in cell.results if o.fitted and o.steps_to_fit]
            budget = [float(o.steps) for o in cell.results if not o.fitted and o.steps]
            steps = (seed_value(cell, fitted, counts=True) if fitted
                     else f"≥ {fmt_int(max(budget))}" if budget else "-")
            ratio = analysis.ratio_point(cell, base_values)
            notes = notes_of(cell)
            if not base_values and cell.p:
                notes = "; ".join(filter(None, [notes, "no fitted p = 0 run to compare with"]))
            rows.append([
                model_name(model), fmt_p(cell.p), cell_sizes(cell),
                seed_value(cell, cell.values("realized_rate"), digits=3, counts=True), steps,
                ratio_text(ratio), notes,
            ])
    return Table(["model", "p", N_HEADER, "labels changed (fraction)", "steps to fit", "relative to p = 0",
                  "notes"], rows,
                 caption="Figure 1b's numbers: SGD steps until the run fits its training set "
                 f"({fit_threshold_text(all_cells)} training accuracy; {_steps_caption(all_cells)}), over "
                 "the seeds that fitted. A run that did not fit counts its budget, a lower bound (≥). The "
                 "ratio's interval takes the seeds' t interval of each side, widened by one epoch of steps "
                 "(a fit is seen at an epoch's end), low over high and high over low.",
                 notes=(INTERVAL_NOTE,))


def paper_test_error_at_zero(model: str) -> float | None:
    """The paper's Table 1 test error (%) of `model` on true labels without regularizers (p = 0)."""
    acc = paper_true_label_test(model, "none")
    return None if acc is None else 100 - acc


def fig1c(sweep: SweepData) -> Table:
    rows = []
    for model in sweep.models("fig1c"):
        for cell in analysis.partial_cells(sweep, "fig1c", model):
            err = analysis.error_interval(cell.interval("test_acc"))
            at_zero = paper_test_error_at_zero(model)
            paper_err = (f"{paper.FIG1C_TEST_ERROR_AT_P1:g} (chance)" if cell.p == 1 else
                         f"{at_zero:.2f} (Table 1)" if cell.p == 0 and at_zero is not None else "")
            rows.append([
                model_name(model), fmt_p(cell.p), cell_sizes(cell),
                seed_value(cell, cell.values("realized_rate"), digits=3, counts=True),
                cell_value(cell, "train_acc"), cell_value(cell, "test_acc"),
                "-" if err is None else fmt_interval(err), paper_err, notes_of(cell),
            ])
    return Table(["model", "p", N_HEADER, "labels changed (fraction)", "train acc", "test acc", "test error",
                  "test error (paper)", "notes"], rows,
                 caption="Figure 1c's numbers (%). The paper prints no values on the figure except chance, "
                 "90%, at p = 1; at p = 0 its Table 1 gives each model's test error (true labels, no "
                 "regularizers).", notes=(INTERVAL_NOTE,))


def memorization_order(sweep: SweepData) -> Table:
    rows, all_cells = [], []
    for model in sweep.models("memorization-order"):
        for cell in analysis.partial_cells(sweep, "memorization-order", model):
            all_cells.append(cell)
            curves = [c for c in (sweep.curve(o.run_id) for o in cell.outcomes) if c]
            gap = analysis.early_gap_interval(sweep, cell)
            level = cell.fit_threshold
            clean = [analysis.first_epoch_at(c, "train_acc_clean", level) for c in curves]
            corrupted = [analysis.first_epoch_at(c, "train_acc_corrupted", level) for c in curves]
            rows.append([
                model_name(model), fmt_p(cell.p), cell_sizes(cell),
                seed_value(cell, cell.values("realized_rate"), digits=3, counts=True),
                "-" if gap is None else fmt_interval(gap, scale=1, digits=1, signed=True),
                _epochs_text(clean), _epochs_text(corrupted), notes_of(cell),
            ])
    level = fit_threshold_text(all_cells)
    return Table(
        ["model", "p", N_HEADER, "labels changed (fraction)", "clean - corrupted train acc, early (points)",
         f"first epoch clean ≥ {level} (per seed)", f"first epoch corrupted ≥ {level} (per seed)", "notes"],
        rows,
        caption=f"Early = the first {analysis.EARLY_FRACTION:.0%} of each run's epochs; the gap's interval "
        f"is the seeds' t interval. {level} is the runs' fit threshold. 'never' = not within the run.",
        notes=(INTERVAL_NOTE,),
    )


def _epochs_text(epochs: list[int | None]) -> str:
    if not epochs:
        return "-"
    return ", ".join("never" if e is None else str(e) for e in epochs)


def _past_fit(sweep: SweepData, cells: Iterable[Cell]) -> str:
    past = sorted({int(sweep.configs().get(o.run_id, {}).get("epochs_past_fit") or 0)
                   for c in cells for o in c.outcomes})
    if not past or past == [0]:
        return "The runs stop once they fit, so best - final is about 0 by construction."
    return f"The runs train {' or '.join(map(str, past))} epochs past their fit."


def fig2b(sweep: SweepData) -> Table:
    rows, cells = [], sweep.cells_of("fig2b")
    for cell in cells:
        gain = difference_interval(cell.values("best_test_acc"), cell.n_test, cell.values("test_acc"),
                                   cell.n_test)
        paper_test = paper_true_label_test(cell.model, "none")
        rows.append([
            model_name(cell.model), cell_sizes(cell), cell_value(cell, "train_acc"), fitted_text(cell),
            cell_value(cell, "test_acc"), cell_value(cell, "best_test_acc"),
            "-" if gain is None else fmt_interval(gain, signed=True),
            paper.paper_pct(paper_test), notes_of(cell),
        ])
    return Table(["model", N_HEADER, "train acc", "fitted?", "final test acc", "best test acc",
                  "best - final", "test acc (paper, Table 1)", "notes"], rows,
                 caption="Figure 2b's runs at the end of training (%): 'best - final' is what early stopping "
                 "could have gained, its interval both accuracies' in quadrature (conservative: they share "
                 f"the test set). {_past_fit(sweep, cells)} " + _fitted_caption(cells),
                 notes=(INTERVAL_NOTE,))

