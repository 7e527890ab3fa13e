"""Derived quantities shared by the tables, figures and findings.

Relative steps to fit (Figure 1b), test error against p (Figure 1c), the clean-vs-corrupted
gap early in training (memorization order), and Kendall's tau for "grows with p".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rethink.report.collect import Cell, SweepData, stat
from rethink.report.figures import ErrorPoint, RatioPoint, Series

# Early in training = the first half of a run's recorded epochs (at least one).
EARLY_FRACTION = 0.5


def kendall_tau(xs: Sequence[float], ys: Sequence[float]) -> float | None:
    """Kendall's tau-a over the pairs with distinct x: +1 when y strictly grows with x."""
    def sign(v: float) -> int:
        return (v > 0) - (v < 0)

    num, pairs = 0, 0
    for i in range(len(xs)):
        for j in range(i + 1, len(xs)):
            if xs[j] != xs[i]:
                pairs += 1
                num += sign(xs[j] - xs[i]) * sign(ys[j] - ys[i])
    return num / pairs if pairs else None


def partial_cells(sweep: SweepData, experiment: str, model: str) -> list[Cell]:
    """The model's label-corruption cells of an experiment, by increasing p."""
    cells = [c for c in sweep.cells_of(experiment) if c.model == model and c.p is not None]
    return sorted(cells, key=lambda c: c.p)


def baseline_steps(sweep: SweepData, experiment: str, model: str) -> float | None:
    """Mean steps to fit of the model's fitted p = 0 runs; None when none fitted."""
    base = sweep.cell(experiment, model, "partial", 0.0)
    if base is None:
        return None
    s = stat([o.steps_to_fit for o in base.outcomes if o.fitted])
    return None if s is None else s.mean


def ratio_point(cell: Cell, base: float) -> RatioPoint | None:
    """Steps to fit / base over the seeds; a seed that did not fit counts its budget (a bound)."""
    values = [(o.steps_to_fit if o.fitted else o.steps) for o in cell.results]
    values = [v / base for v in values if v]
    s = stat(values)
    if s is None:
        return None
    return RatioPoint(cell.p, s.mean, s.lo, s.hi, any(not o.fitted for o in cell.results))


def slowdown_points(sweep: SweepData, experiment: str, model: str) -> list[RatioPoint]:
    base = baseline_steps(sweep, experiment, model)
    if not base:
        return []
    points = [ratio_point(c, base) for c in partial_cells(sweep, experiment, model)]
    return [q for q in points if q is not None]


def error_points(sweep: SweepData, experiment: str, model: str) -> list[ErrorPoint]:
    """Test error in percent, per p, with its min-max over seeds."""
    out = []
    for c in partial_cells(sweep, experiment, model):
        s = c.stat("test_acc")
        if s is not None:
            out.append(ErrorPoint(c.p, 100 * (1 - s.mean), 100 * (1 - s.hi), 100 * (1 - s.lo)))
    return out


def series(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> Series:
    """(steps, values) of one epoch column, skipping epochs where it is missing."""
    pts = [(r["step"], scale * r[key]) for r in rows
           if r.get(key) is not None and math.isfinite(r[key]) and r.get("step") is not None]
    return [x for x, _ in pts], [y for _, y in pts]


def first_epoch_at(rows: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    """The first epoch whose `key` accuracy (fraction) reaches `threshold` (fraction)."""
    return next((r["epoch"] for r in rows if r.get(key) is not None and r[key] >= threshold), None)


def early_gap(rows: list[dict[str, Any]], fraction: float = EARLY_FRACTION) -> float | None:
    """Mean of clean minus corrupted train accuracy (points) over the run's early epochs."""
    split = [r for r in rows if r.get("train_acc_clean") is not None
             and r.get("train_acc_corrupted") is not None]
    if not split:
        return None
    early = split[: max(1, math.ceil(fraction * len(split)))]
    return 100 * sum(r["train_acc_clean"] - r["train_acc_corrupted"] for r in early) / len(early)


def cell_early_gap(sweep: SweepData, cell: Cell) -> float | None:
    """early_gap averaged over the cell's seeds that have a curve."""
    s = stat([early_gap(sweep.curve(o.run_id)) for o in cell.outcomes if sweep.curve(o.run_id)])
    return None if s is None else s.mean
