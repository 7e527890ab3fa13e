"""Derived quantities shared by the tables, figures and findings.

Relative steps to fit (Figure 1b) and test error against p (Figure 1c), each with its 95%
interval; the clean-vs-corrupted gap early in training (memorization order); Kendall's tau for
"grows with p".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rethink.report.collect import Cell, SweepData, stat
from rethink.report.figures import ErrorPoint, RatioPoint, Series
from rethink.report.stats import Interval, mean_interval

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


def baseline_values(sweep: SweepData, experiment: str, model: str) -> list[float]:
    """Steps to fit of the model's fitted p = 0 seeds (empty when none fitted)."""
    base = sweep.cell(experiment, model, "partial", 0.0)
    if base is None:
        return []
    return [float(o.steps_to_fit) for o in base.outcomes if o.fitted and o.steps_to_fit is not None]


def baseline_steps(sweep: SweepData, experiment: str, model: str) -> float | None:
    """Mean steps to fit of the model's fitted p = 0 runs; None when none fitted."""
    values = baseline_values(sweep, experiment, model)
    return sum(values) / len(values) if values else None


def ratio_point(cell: Cell, base_values: Sequence[float]) -> RatioPoint | None:
    """Mean steps to fit over the seeds relative to the p = 0 runs' (`base_values`), with its 95%
    interval: each mean's t interval over its seeds, widened by one epoch of steps (a fit is only
    seen at an epoch's end), then the ratio's extremes (low over high, high over low).
    A seed that did not fit counts its budget, so the point is a lower bound."""
    values = [float(o.steps_to_fit if o.fitted else o.steps) for o in cell.results
              if (o.steps_to_fit if o.fitted else o.steps)]
    base, top = mean_interval(base_values), mean_interval(values)
    if base is None or top is None or not base.estimate:
        return None
    value = top.estimate / base.estimate
    lo = hi = value  # the baseline itself: 1 by definition
    if cell.p != 0:
        epoch = cell.steps_per_epoch or 0
        lo = max(0.0, top.lo - epoch) / (base.hi + epoch)
        hi = (top.hi + epoch) / max(base.lo - epoch, 1.0)
    return RatioPoint(cell.p, value, lo, hi, any(not o.fitted for o in cell.results),
                      max(len(values), len(base_values)))


def slowdown_points(sweep: SweepData, experiment: str, model: str) -> list[RatioPoint]:
    base_values = baseline_values(sweep, experiment, model)
    points = [ratio_point(c, base_values) for c in partial_cells(sweep, experiment, model)]
    return [q for q in points if q is not None]


def error_points(sweep: SweepData, experiment: str, model: str) -> list[ErrorPoint]:
    """Test error in percent, per p, with its 95% interval (Wilson of the test set and the seeds)."""
    out = []
    for c in partial_cells(sweep, experiment, model):
        err = error_interval(c.interval("test_acc"))
        if err is not None:
            err = err.scaled(100)
            out.append(ErrorPoint(c.p, err.estimate, err.lo, err.hi, err.seeds, err.n_eval))
    return out


def error_interval(iv: Interval | None) -> Interval | None:
    """An accuracy's interval as the error's (1 - accuracy), same units."""
    if iv is None:
        return None
    return Interval(1 - iv.estimate, 1 - iv.hi, 1 - iv.lo, iv.seeds, iv.n_eval)


def series(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> Series:
    """(steps, values) of one epoch column, skipping epochs where it is missing."""
    pts = [(r["step"], scale * r[key]) for r in rows
           if r.get(key) is not None and math.isfinite(r[key]) and r.get("step") is not None]
    return [x for x, _ in pts], [y for _, y in pts]


def first_epoch_at(rows: list[dict[str, Any]], key: str, threshold: float) -> int | None:
    """The first epoch whose `key` accuracy (fraction) reaches `threshold` (fraction)."""
    return next((r["epoch"] for r in rows if r.get(key) is not None and r[key] >= threshold), None)


def early_gap(rows: list[dict[str, Any]], fraction: float = EARLY_FRACTION) -> float | None:
    """Mean of clean minus corrupted train accuracy (points) over the run's early epochs of training
    (epoch 0, the untrained network, is left out: its gap is chance against chance)."""
    split = [r for r in rows if r.get("train_acc_clean") is not None
             and r.get("train_acc_corrupted") is not None and r.get("epoch") != 0]
    if not split:
        return None
    early = split[: max(1, math.ceil(fraction * len(split)))]
    return 100 * sum(r["train_acc_clean"] - r["train_acc_corrupted"] for r in early) / len(early)


def cell_early_gap(sweep: SweepData, cell: Cell) -> float | None:
    """early_gap averaged over the cell's seeds that have a curve."""
    s = stat([early_gap(sweep.curve(o.run_id)) for o in cell.outcomes if sweep.curve(o.run_id)])
    return None if s is None else s.mean


def early_gap_interval(sweep: SweepData, cell: Cell) -> Interval | None:
    """early_gap over the cell's seeds that have a curve, with the seeds' t interval (points)."""
    gaps = [early_gap(sweep.curve(o.run_id)) for o in cell.outcomes]
    return mean_interval([g for g in gaps if g is not None])
