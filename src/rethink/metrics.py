"""What a run measures, defined once: each epoch's row and the run's result.

The store's `epochs` table and the result columns of its `runs` table are generated from these
dataclasses' fields (`rethink.store`), the training loop fills them (`rethink.train.loop`), and
checkpoints keep epoch rows as plain dicts (`EpochRow(...).as_dict()`). Adding a metric is a
field here and the line of the loop that measures it; a store made before the field existed
gains the column when it is opened.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class EpochRow:
    """One epoch's metrics. train_* are measured in eval mode over the full training set after the
    epoch (None for a screened epoch that certainly did not fit); *_clean / *_corrupted split
    train accuracy by whether the example's label was changed. Epoch 0 is the initial network."""

    epoch: int
    step: int
    lr: float | None
    train_loss: float | None
    train_acc: float | None
    train_acc_clean: float | None
    train_acc_corrupted: float | None
    test_loss: float | None
    test_acc: float | None
    best_test_acc: float | None  # over trained epochs; None at epoch 0
    wall_time: float | None
    train_time: float | None  # the SGD steps alone: throughput = n / train_time
    eval_time: float | None
    # top-5 accuracy (label among the five largest logits), recorded when there are more than
    # five classes: the paper's ImageNet table (Table 2) reports it beside top-1
    train_top5: float | None
    test_top5: float | None
    best_test_top5: float | None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class RunResult:
    """A finished run: its status and the summary stored in its `runs` row."""

    run_id: str
    status: str  # fitted | not-fitted | diverged
    epochs: int
    steps: int
    steps_to_fit: int | None
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    best_test_acc: float
    wall_time: float
    message: str = ""

    def summary(self) -> dict[str, Any]:
        """The stored summary: every field but the run id and status."""
        return {k: getattr(self, k) for k in SUMMARY_COLUMNS}


EPOCH_COLUMNS = tuple(f.name for f in dataclasses.fields(EpochRow))
SUMMARY_COLUMNS = tuple(f.name for f in dataclasses.fields(RunResult) if f.name not in ("run_id", "status"))

_SQL_TYPES = {int: "INTEGER", float: "REAL", str: "TEXT"}


def sql_columns(cls: type, names: tuple[str, ...], *, nullable: bool = False) -> str:
    """`name TYPE [NOT NULL], ...` for the given fields of `cls`: NOT NULL unless the field may be
    None (or `nullable`: a run's row exists before its result does)."""
    hints = typing.get_type_hints(cls)
    columns = []
    for name in names:
        args = typing.get_args(hints[name])
        optional = type(None) in args
        base = next((a for a in args if a is not type(None)), hints[name])
        columns.append(f"{name} {_SQL_TYPES[base]}" + ("" if optional or nullable else " NOT NULL"))
    return ", ".join(columns)
