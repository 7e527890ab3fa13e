"""The sweep's numbers as CSV, for analysis outside the report.

- `epochs.csv`: one row per run per evaluated epoch (epoch 0 is the initial network), with the
  run's experiments, labels and seed, and every epoch column of the store;
- `runs.csv`: one row per sweep point (a run shared by several experiments appears once per
  experiment), with its labels, run id, status, final metrics and the sizes behind them.

Accuracies are fractions in [0, 1], as stored; an empty field is a missing value.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from typing import Any

from rethink.metrics import EPOCH_COLUMNS
from rethink.report.collect import NOT_RUN, SweepData

EPOCHS_CSV, RUNS_CSV = "epochs.csv", "runs.csv"
LABELS = ("model", "corruption", "p", "regularizer", "seed")
EPOCH_HEADER = ("run_id", "experiments", *LABELS, *EPOCH_COLUMNS)
RUN_METRICS = ("epochs", "steps", "steps_to_fit", "train_loss", "train_acc", "test_loss", "test_acc",
               "best_test_acc", "realized_rate", "wall_time")
RUNS_HEADER = ("experiment", *LABELS, "run_id", "status", *RUN_METRICS, "train_size", "test_size",
               "fit_threshold", "max_epochs", "epochs_past_fit", "dataset", "message")


def _csv(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if v is None else v for v in row])
    return buf.getvalue().encode("utf-8")


def _joined(values: Iterable[Any]) -> str:
    """Distinct values in first-seen order, ';'-joined (a run shared by experiments whose labels
    differ, e.g. p = 0 of Figure 1b and the true-label row of Table 1)."""
    return ";".join(str(v) for v in dict.fromkeys("" if v is None else v for v in values))


def epoch_rows(sweep: SweepData) -> list[list[Any]]:
    """One row per run per epoch, in the sweep's point order; runs never started have none."""
    by_run: dict[str, list[dict[str, Any]]] = {}
    for point in sweep.points:
        by_run.setdefault(point["run_id"], []).append(point)
    out = []
    for run_id, points in by_run.items():
        config = points[0]["config"]
        experiments = _joined(p["experiment"] for p in points)
        labels = [config.get("model"), config.get("corruption"), config.get("p"),
                  _joined(p["labels"].get("regularizer") or "none" for p in points),
                  _joined(p["labels"].get("seed") for p in points)]
        for row in sweep.curve(run_id):
            out.append([run_id, experiments, *labels, *(row.get(k) for k in EPOCH_COLUMNS)])
    return out


def run_rows(sweep: SweepData) -> list[list[Any]]:
    """One row per sweep point: its labels and its run's status, final numbers and sizes."""
    out = []
    for point in sweep.points:
        run, config, labels = point["run"] or {}, point["config"], point["labels"]
        message = (run.get("message") or "").strip().splitlines()
        out.append([
            point["experiment"], *(labels.get(k) for k in LABELS[:3]), labels.get("regularizer") or "none",
            labels.get("seed"), point["run_id"], run.get("status") or NOT_RUN,
            *(run.get(k) for k in RUN_METRICS),
            run.get("train_size") or config.get("train_size"),
            run.get("test_size") or config.get("test_size"),
            config.get("fit_threshold"), config.get("max_epochs"), config.get("epochs_past_fit"),
            config.get("dataset"), message[0] if message else "",
        ])
    return out


def epochs_csv(sweep: SweepData) -> bytes:
    return _csv(EPOCH_HEADER, epoch_rows(sweep))


def runs_csv(sweep: SweepData) -> bytes:
    return _csv(RUNS_HEADER, run_rows(sweep))
