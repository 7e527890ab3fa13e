"""The report's tables, built from a sweep: Table 1, Table 4, the regularizer study, and the
numbers behind each figure. Our numbers sit beside the paper's where the paper has them.

Every cell is a formatted string; a missing, failed or unfinished run shows as such in its cell
or in the row's notes ("not run", "failed: ...", "did not fit in 60 epochs").
"""

from __future__ import annotations

from rethink.report import analysis
from rethink.report import paper_numbers as paper
from rethink.report.collect import Cell, SweepData, stat
from rethink.report.document import (
    Table,
    cell_value,
    fmt_int,
    fmt_p,
    fmt_stat,
    notes_of,
    pct,
)
from rethink.report.paper_numbers import model_name

FIT_LEVEL = 0.99  # "fits" in the memorization-order table: accuracy >= 99% on that subset


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def fitted_text(cell: Cell | None) -> str:
    """'yes', 'no', or 'k of n seeds' for the fitted? column."""
    if cell is None:
        return "not in sweep"
    done = cell.results
    if not done:
        return "-"
    k = sum(o.fitted for o in done)
    if len(done) == 1 and cell.n_seeds == 1:
        return _yes(k == 1)
    return f"{k} of {cell.n_seeds} seeds"


def table1(sweep: SweepData) -> Table:
    models = set(sweep.models("table1"))
    rows = []
    for r in paper.TABLE1:
        if r.model not in models:
            continue
        reg = paper.table1_regularizer(r.crop, r.weight_decay)
        cell = sweep.cell("table1", r.model, "random-labels" if r.random_labels else "true", None, reg)
        name = model_name(r.model) + (" (fitting random labels)" if r.random_labels else "")
        rows.append([
            name, fmt_int(paper.PARAMS.get(r.model)), _yes(r.crop), _yes(r.weight_decay),
            cell_value(cell, "train_acc"), paper.paper_pct(r.train_acc),
            cell_value(cell, "test_acc"), paper.paper_pct(r.test_acc),
            notes_of(cell),
        ])
    return Table(
        ["model", "# params (paper)", "random crop", "weight decay", "train acc (ours)",
         "train acc (paper)", "test acc (ours)", "test acc (paper)", "notes"],
        rows,
        caption="Table 1: training and test accuracy (%) on CIFAR-10, with and without random crop "
        "and weight decay; the random-label rows use neither.",
    )


def table4(sweep: SweepData) -> Table:
    models = set(sweep.models("table4"))
    rows = []
    for r in paper.TABLE4:
        if r.model not in models:
            continue
        cell = sweep.cell("table4", r.model, "random-labels", None, r.regularizer)
        rows.append([
            model_name(r.model), paper.REGULARIZER_NAMES.get(r.regularizer, r.regularizer),
            cell_value(cell, "train_acc"), fitted_text(cell), cell_value(cell, "test_acc"), r.text,
            notes_of(cell),
        ])
    return Table(
        ["model", "regularizer", "train acc (ours)", "fitted?", "test acc (ours)", "train acc (paper)",
         "notes"],
        rows,
        caption="Table 4: fitting random labels with one explicit regularizer on (training accuracy, %).",
    )


def _final_epoch(sweep: SweepData, cell: Cell | None, key: str) -> str:
    """A number of each seed's last epoch row (e.g. test_top5), as a cell: mean (± std)."""
    if cell is None:
        return "not in sweep"
    values = [(sweep.curve(o.run_id) or [{}])[-1].get(key) for o in cell.results]
    return fmt_stat(stat(values), cell.n_seeds)


def _with_best(sweep: SweepData, cell: Cell | None, key: str, best_key: str) -> str:
    """'final (best so far)': the paper's Table 2 notation for what early stopping could keep."""
    final = _final_epoch(sweep, cell, key)
    best = _final_epoch(sweep, cell, best_key)
    return final if best in ("-", final) or cell is None else f"{final} ({best})"


def table2(sweep: SweepData) -> Table:
    rows = []
    for r in paper.TABLE2:
        cell = sweep.cell("table2", "inception-v3", r.corruption, None, r.regularizer)
        regs = r.regularizer.split("+")
        rows.append([
            "random labels" if r.corruption == "random-labels" else "true labels",
            _yes("aug" in regs), _yes("dropout" in regs), _yes("wd" in regs),
            _final_epoch(sweep, cell, "train_acc"), r.train_top1,
            _final_epoch(sweep, cell, "train_top5"), r.train_top5,
            _with_best(sweep, cell, "test_acc", "best_test_acc"), r.test_top1,
            _with_best(sweep, cell, "test_top5", "best_test_top5"), r.test_top5,
            notes_of(cell),
        ])
    return Table(
        ["labels", "data aug", "dropout", "weight decay", "top-1 train (ours)", "(paper)",
         "top-5 train (ours)", "(paper)", "top-1 test (ours)", "(paper)", "top-5 test (ours)", "(paper)",
         "notes"],
        rows,
        caption="Table 2: Inception V3 on ImageNet(-like) data, top-1 / top-5 accuracy (%); in "
        "parentheses the best test accuracy during training (what early stopping could keep). "
        "'?' marks paper cells only secondary sources give.",
    )


def regularizers(sweep: SweepData) -> Table:
    rows = []
    for model in sweep.models("regularizers"):
        for cell in (c for c in sweep.cells_of("regularizers") if c.model == model):
            gap = stat([o.train_acc - o.test_acc for o in cell.results
                        if o.train_acc is not None and o.test_acc is not None])
            rows.append([
                model_name(model), paper.REGULARIZER_NAMES.get(cell.regularizer, cell.regularizer),
                cell_value(cell, "train_acc"), cell_value(cell, "test_acc"),
                fmt_stat(gap, cell.n_seeds), notes_of(cell),
            ])
    return Table(
        ["model", "regularizer", "train acc", "test acc", "gap (train - test)", "notes"],
        rows,
        caption="Each explicit regularizer alone, true labels (accuracy and gap in %).",
    )


def fig1a(sweep: SweepData) -> Table:
    rows = []
    for cell in sweep.cells_of("fig1a"):
        steps = stat([o.steps_to_fit for o in cell.results if o.fitted])
        rows.append([
            model_name(cell.model), paper.CORRUPTION_NAMES.get(cell.corruption, cell.corruption),
            cell_value(cell, "train_acc"), fmt_stat(steps, cell.n_seeds, scale=1, digits=0),
            cell_value(cell, "test_acc"), notes_of(cell),
        ])
    return Table(["model", "randomization", "train acc", "steps to fit", "test acc", "notes"], rows,
                 caption="The runs of Figure 1a at the end of training (accuracy in %).")


def _ratio_text(q: analysis.RatioPoint | None, n_seeds: int) -> str:
    if q is None:
        return "-"
    text = ("≥ " if q.lower_bound else "") + f"{q.value:.2f}"
    if n_seeds > 1:
        text += f" (range {q.lo:.2f}-{q.hi:.2f})"
    return text


def fig1b(sweep: SweepData) -> Table:
    rows = []
    for model in sweep.models("fig1b"):
        base = analysis.baseline_steps(sweep, "fig1b", model)
        for cell in analysis.partial_cells(sweep, "fig1b", model):
            fitted = stat([o.steps_to_fit for o in cell.results if o.fitted])
            budget = stat([o.steps for o in cell.results if not o.fitted])
            steps = fmt_stat(fitted, 1, scale=1, digits=0) if fitted else (
                f"≥ {fmt_int(budget.mean)}" if budget else "-")
            ratio = analysis.ratio_point(cell, base) if base else None
            notes = notes_of(cell)
            if not base and cell.p:
                notes = "; ".join(filter(None, [notes, "no fitted p = 0 run to compare with"]))
            rows.append([
                model_name(model), fmt_p(cell.p), cell_value(cell, "realized_rate", scale=1, digits=3),
                steps, _ratio_text(ratio, cell.n_seeds), notes,
            ])
    return Table(["model", "p", "labels changed (fraction)", "steps to fit", "relative to p = 0", "notes"],
                 rows, caption="Figure 1b's numbers: SGD steps until 100% training accuracy (resolution "
                 "one epoch). A run that did not fit counts its budget, a lower bound (≥).")


def fig1c(sweep: SweepData) -> Table:
    rows = []
    for model in sweep.models("fig1c"):
        for cell in analysis.partial_cells(sweep, "fig1c", model):
            s = cell.stat("test_acc")
            err = "-" if s is None else f"{100 * (1 - s.mean):.2f}"
            paper_err = f"~{paper.FIG1C_TEST_ERROR_AT_P1:g}" if cell.p == 1 else ""
            rows.append([
                model_name(model), fmt_p(cell.p), cell_value(cell, "realized_rate", scale=1, digits=3),
                cell_value(cell, "train_acc"), cell_value(cell, "test_acc"), err, paper_err,
                notes_of(cell),
            ])
    return Table(["model", "p", "labels changed (fraction)", "train acc", "test acc", "test error",
                  "test error (paper)", "notes"], rows,
                 caption="Figure 1c's numbers (%). The paper prints no values except chance, 90%, at p = 1.")


def memorization_order(sweep: SweepData) -> Table:
    rows = []
    for model in sweep.models("memorization-order"):
        for cell in analysis.partial_cells(sweep, "memorization-order", model):
            curves = [sweep.curve(o.run_id) for o in cell.outcomes]
            curves = [c for c in curves if c]
            gap = analysis.cell_early_gap(sweep, cell)
            clean = [analysis.first_epoch_at(c, "train_acc_clean", FIT_LEVEL) for c in curves]
            corrupted = [analysis.first_epoch_at(c, "train_acc_corrupted", FIT_LEVEL) for c in curves]
            rows.append([
                model_name(model), fmt_p(cell.p), cell_value(cell, "realized_rate", scale=1, digits=3),
                "-" if gap is None else f"{gap:+.1f}", _epochs_text(clean), _epochs_text(corrupted),
                notes_of(cell),
            ])
    return Table(
        ["model", "p", "labels changed (fraction)", "clean - corrupted train acc, early (points)",
         f"first epoch clean ≥ {pct(FIT_LEVEL, 0)}%", f"first epoch corrupted ≥ {pct(FIT_LEVEL, 0)}%",
         "notes"],
        rows,
        caption=f"Early = the first {analysis.EARLY_FRACTION:.0%} of each run's epochs. "
        "'never' = not within the run.",
    )


def _epochs_text(epochs: list[int | None]) -> str:
    if not epochs:
        return "-"
    return ", ".join("never" if e is None else str(e) for e in epochs)


def fig2b(sweep: SweepData) -> Table:
    paper_test = {r.model: r.test_acc for r in paper.TABLE1
                  if not r.crop and not r.weight_decay and not r.random_labels}
    rows = []
    for cell in sweep.cells_of("fig2b"):
        gain = stat([o.best_test_acc - o.test_acc for o in cell.results
                     if o.best_test_acc is not None and o.test_acc is not None])
        rows.append([
            model_name(cell.model), cell_value(cell, "train_acc"), cell_value(cell, "test_acc"),
            cell_value(cell, "best_test_acc"), fmt_stat(gain, cell.n_seeds),
            paper.paper_pct(paper_test.get(cell.model)), notes_of(cell),
        ])
    return Table(["model", "train acc", "final test acc", "best test acc", "best - final",
                  "test acc (paper, Table 1)", "notes"], rows,
                 caption="Figure 2b's runs at the end of training (%): 'best - final' is what early "
                 "stopping could have gained.")
