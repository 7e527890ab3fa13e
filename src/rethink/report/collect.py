"""Read one sweep out of the results store into plain, report-ready values.

A *cell* is every seed of one table cell or figure point: the points of one experiment whose
labels agree except for the seed. Each seed's run becomes an `Outcome`; a cell summarises its
finished outcomes as a `Stat` (mean, sample std, min, max, n) and says, in words, what is wrong
with the others ("not run", "failed: ...", "did not fit in 60 epochs").
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rethink.errors import StoreError
from rethink.report.paper_numbers import CORRUPTION_NAMES, DATASET_SIZES, MODEL_NAMES, REGULARIZER_NAMES
from rethink.report.stats import Interval, accuracy_interval, mean_interval
from rethink.store import DB_NAME, Store

# The report's section order (the grids' experiment names).
EXPERIMENT_ORDER = ("table1", "fig1a", "fig1b", "fig1c", "memorization-order", "fig2b", "table4",
                    "regularizers", "table2", "double-descent-rff", "double-descent-width", "memorization",
                    "memorization-removal")
NOT_RUN = "not run"
# Statuses whose final numbers are a result (diverged and failed runs have none).
RESULT_STATUSES = ("fitted", "not-fitted")
# Canonical orders for rows and legends (unknown names go last, alphabetically).
MODEL_ORDER = tuple(MODEL_NAMES)
CORRUPTION_ORDER = tuple(CORRUPTION_NAMES)
REGULARIZER_ORDER = tuple(REGULARIZER_NAMES)


@dataclass(frozen=True)
class Outcome:
    """One seed's run, reduced to what the report shows."""

    run_id: str
    seed: int
    status: str  # NOT_RUN, running, fitted, not-fitted, diverged, failed
    max_epochs: int | None
    train_acc: float | None = None  # fractions in [0, 1]
    test_acc: float | None = None
    best_test_acc: float | None = None
    steps_to_fit: int | None = None
    steps: int | None = None
    epochs: int | None = None
    realized_rate: float | None = None
    wall_time: float | None = None
    message: str = ""
    n_train: int | None = None  # examples the train accuracy was measured on (the training set)
    n_test: int | None = None  # examples the test accuracy was measured on
    fit_threshold: float = 1.0  # the run's own "fitted" level (a fraction)
    steps_per_epoch: int | None = None  # steps_to_fit's resolution: it is checked once per epoch

    @property
    def has_result(self) -> bool:
        return self.status in RESULT_STATUSES

    @property
    def fitted(self) -> bool:
        return self.status == "fitted"

    def problem(self) -> str | None:
        """What keeps this outcome from being a clean result, in words; None if nothing."""
        if self.status == "fitted":
            return None
        if self.status == "not-fitted":
            return f"did not fit in {self.epochs or self.max_epochs} epochs"
        if self.status in ("failed", "diverged"):
            return f"{self.status}: {self.message}" if self.message else self.status
        if self.status == "running":
            return "still running"
        return NOT_RUN


@dataclass(frozen=True)
class Stat:
    mean: float
    std: float  # sample standard deviation over seeds; 0 for one value
    lo: float
    hi: float
    n: int


def stat(values: list[float]) -> Stat | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return Stat(statistics.fmean(values), std, min(values), max(values), len(values))


@dataclass(frozen=True)
class Cell:
    """Every seed of one point of one experiment."""

    experiment: str
    model: str
    corruption: str
    p: float | None
    regularizer: str
    width: int | None  # the k of a width-family model (double descent); None elsewhere
    outcomes: tuple[Outcome, ...]

    @property
    def n_seeds(self) -> int:
        return len(self.outcomes)

    @property
    def results(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.has_result]

    def stat(self, attr: str) -> Stat | None:
        """Mean and spread of a final number over the seeds that have a result."""
        return stat([getattr(o, attr) for o in self.results])

    def values(self, attr: str) -> list[float]:
        """One final number per seed that has a result (None and non-finite left out)."""
        return [v for v in (getattr(o, attr) for o in self.results) if v is not None and math.isfinite(v)]

    def interval(self, attr: str) -> Interval | None:
        """The 95% interval of a final number (see `rethink.report.stats`): accuracies with the
        binomial interval of the set they were measured on and the seeds' spread; other numbers
        (steps, epochs) with the seeds' spread alone."""
        values = self.values(attr)
        n_eval = {"train_acc": self.n_train, "test_acc": self.n_test, "best_test_acc": self.n_test}
        if attr in n_eval:
            return accuracy_interval(values, n_eval[attr])
        return mean_interval(values)

    @property
    def n_train(self) -> int | None:
        return next((o.n_train for o in self.outcomes if o.n_train), None)

    @property
    def n_test(self) -> int | None:
        return next((o.n_test for o in self.outcomes if o.n_test), None)

    @property
    def fit_threshold(self) -> float:
        return next((o.fit_threshold for o in self.outcomes), 1.0)

    @property
    def steps_per_epoch(self) -> int | None:
        return next((o.steps_per_epoch for o in self.outcomes if o.steps_per_epoch), None)

    @property
    def all_fitted(self) -> bool:
        return bool(self.outcomes) and all(o.fitted for o in self.outcomes)

    def problems(self) -> list[str]:
        """Each distinct problem once, with how many seeds have it when there are several."""
        counts: dict[str, int] = {}
        for o in self.outcomes:
            text = o.problem()
            if text is not None:
                counts[text] = counts.get(text, 0) + 1
        if self.n_seeds == 1:
            return list(counts)
        return [f"{k} of {self.n_seeds} seeds: {text}" for text, k in counts.items()]

    @property
    def max_epochs(self) -> int | None:
        return next((o.max_epochs for o in self.outcomes if o.max_epochs), None)


@dataclass
class SweepData:
    """One sweep: its record, its points grouped into cells, and the curves the report draws."""

    out_dir: Path
    sweep: dict[str, Any]
    points: list[dict[str, Any]]
    cells: dict[tuple[Any, ...], Cell]
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # run id -> epochs
    theory: list[dict[str, Any]] = field(default_factory=list)  # the store's theory results

    @property
    def experiments(self) -> list[str]:
        return sorted({p["experiment"] for p in self.points}, key=experiment_rank)

    def cell(self, experiment: str, model: str, corruption: str = "true", p: float | None = None,
             regularizer: str = "none", width: int | None = None) -> Cell | None:
        return self.cells.get(_key(experiment, model, corruption, p, regularizer, width))

    def cells_of(self, experiment: str) -> list[Cell]:
        """The experiment's cells by model, corruption, p and regularizer (the paper's orders)."""
        cells = [c for c in self.cells.values() if c.experiment == experiment]
        return sorted(cells, key=lambda c: (
            _rank(MODEL_ORDER, c.model), _rank(CORRUPTION_ORDER, c.corruption),
            -1.0 if c.p is None else c.p, _rank(REGULARIZER_ORDER, c.regularizer), c.width or 0))

    def models(self, experiment: str | None = None) -> list[str]:
        """The models of the sweep (or of one experiment), in the paper's order."""
        names = {p["labels"]["model"] for p in self.points
                 if experiment is None or p["experiment"] == experiment}
        return sorted(names, key=lambda m: _rank(MODEL_ORDER, m))

    def runs(self) -> dict[str, dict[str, Any] | None]:
        """Distinct run id -> its runs row (None if never started)."""
        out: dict[str, dict[str, Any] | None] = {}
        for p in self.points:
            out.setdefault(p["run_id"], p["run"])
        return out

    def configs(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for p in self.points:
            out.setdefault(p["run_id"], p["config"])
        return out

    def curve(self, run_id: str) -> list[dict[str, Any]]:
        return self.curves.get(run_id, [])


def experiment_rank(name: str) -> tuple[int, str]:
    """An experiment's place in the report (unknown ones last, alphabetically)."""
    return _rank(EXPERIMENT_ORDER, name)


def _rank(order: tuple[str, ...], name: str) -> tuple[int, str]:
    return (order.index(name), "") if name in order else (len(order), name)


def _key(experiment: str, model: str, corruption: str, p: float | None, regularizer: str,
         width: int | None = None) -> tuple:
    return (experiment, model, corruption, None if p is None else round(float(p), 6), regularizer, width)


def _outcome(point: dict[str, Any]) -> Outcome:
    run, config = point["run"], point["config"]
    seed = int(point["labels"].get("seed") or 0)
    max_epochs = config.get("max_epochs")
    if run is None:  # the sizes and threshold it will have (no size: the whole split of its data set)
        full_train, full_test = DATASET_SIZES.get(config.get("dataset"), (None, None))
        return Outcome(point["run_id"], seed, NOT_RUN, max_epochs,
                       n_train=config.get("train_size") or full_train,
                       n_test=config.get("test_size") or full_test,
                       fit_threshold=float(config.get("fit_threshold", 1.0)))
    message = (run.get("message") or "").strip().splitlines()
    return Outcome(
        run_id=point["run_id"],
        seed=seed,
        status=run.get("status") or NOT_RUN,
        max_epochs=max_epochs,
        train_acc=_finite(run.get("train_acc")),
        test_acc=_finite(run.get("test_acc")),
        best_test_acc=_finite(run.get("best_test_acc")),
        steps_to_fit=run.get("steps_to_fit"),
        steps=run.get("steps"),
        epochs=run.get("epochs"),
        realized_rate=_finite(run.get("realized_rate")),
        wall_time=_finite(run.get("wall_time")),
        message=_shorten(message[0]) if message else "",
        n_train=run.get("train_size") or config.get("train_size"),
        n_test=run.get("test_size") or config.get("test_size"),
        fit_threshold=float(config.get("fit_threshold", 1.0)),
        steps_per_epoch=_steps_per_epoch(run.get("train_size") or config.get("train_size"),
                                         config.get("batch_size")),
    )


def _steps_per_epoch(n: int | None, batch: int | None) -> int | None:
    return -(-n // batch) if n and batch else None


def _finite(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


def _shorten(text: str, limit: int = 140) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def pick_sweep(store: Store, out_dir: Path, sweep_id: str | None) -> dict[str, Any]:
    sweeps = store.sweeps()
    if not sweeps:
        raise StoreError(f"no sweep in {out_dir / DB_NAME}", "run `rethink reproduce` first")
    if sweep_id is None:
        return sweeps[-1]
    for s in sweeps:
        if s["sweep_id"] == sweep_id:
            return s
    known = ", ".join(s["sweep_id"] for s in sweeps[-5:])
    raise StoreError(f"no sweep {sweep_id} in {out_dir / DB_NAME}", f"known sweeps: {known}")


def load_sweep(out_dir: str | Path, sweep_id: str | None = None,
               theory_dirs: Sequence[str | Path] = ()) -> SweepData:
    """The chosen sweep (default: the most recent) with its cells and learning curves, and the theory
    results of its store followed by those of `theory_dirs` (other results directories)."""
    out_dir = Path(out_dir)
    if not (out_dir / DB_NAME).is_file():  # Store() would create an empty database
        raise StoreError(f"no sweep in {out_dir / DB_NAME}", "run `rethink reproduce` first")
    with Store(out_dir, readonly=True) as store:
        sweep = pick_sweep(store, out_dir, sweep_id)
        points = store.sweep_points(sweep["sweep_id"])
        grouped: dict[tuple, list[Outcome]] = {}
        for point in points:
            lab = point["labels"]
            key = _key(point["experiment"], lab["model"], lab["corruption"], lab.get("p"),
                       lab.get("regularizer") or "none", lab.get("width"))
            grouped.setdefault(key, []).append(_outcome(point))
        cells = {
            key: Cell(*key, outcomes=tuple(sorted(outs, key=lambda o: o.seed)))
            for key, outs in grouped.items()
        }
        curves = {
            p["run_id"]: store.epochs(p["run_id"])
            for p in points
            if p["run"] is not None  # every run's: verdicts read curves (starts, stalls) too
        }
        theory = store.theory()
    for extra in theory_dirs:
        theory += load_theory(extra)
    return SweepData(out_dir, sweep, points, cells, curves, latest_theory(theory))


# Theory config fields that change between measurements of the same thing: a summary over more
# runs, or a run measured again after it was resumed, replaces the earlier row.
THEORY_VOLATILE = {"measures": ("runs", "steps", "finished_at")}


def theory_created(row: dict[str, Any]) -> datetime:
    """When a theory row was recorded, comparable across time zones (unparsable: the earliest)."""
    try:
        return datetime.strptime(str(row.get("created_at")), "%Y-%m-%dT%H:%M:%S%z")
    except ValueError:
        return datetime.min.replace(tzinfo=timezone.utc)


def theory_identity(row: dict[str, Any]) -> tuple[str, str]:
    """What a theory row measured: its kind and its config without the THEORY_VOLATILE fields (the
    store's key hashes the whole config)."""
    config = row.get("config") or {}
    if isinstance(config, dict):
        skip = THEORY_VOLATILE.get(row["kind"], ())
        config = {k: v for k, v in config.items() if k not in skip}
    return row["kind"], json.dumps(config, sort_keys=True, default=str)


def latest_theory(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measured thing (`theory_identity`), the most recently recorded; on a tie the later
    in `rows` (a rerun in a later --theory directory replaces). Oldest first."""
    keep: dict[tuple[str, str], tuple[datetime, int, dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        key, when = theory_identity(row), theory_created(row)
        if key not in keep or (when, i) >= keep[key][:2]:
            keep[key] = (when, i, row)
    return [row for _, _, row in sorted(keep.values(), key=lambda t: t[:2])]


def load_theory(out_dir: str | Path) -> list[dict[str, Any]]:
    """The theory results stored in another results directory (`rethink report --theory DIR`)."""
    if not (Path(out_dir) / DB_NAME).is_file():
        raise StoreError(f"no results database in {out_dir}/ (given with --theory)",
                         "pass the --out directory of a `rethink expressivity|kernel|measures` run")
    with Store(out_dir, readonly=True) as store:
        return store.theory()


def versions_of(run: dict[str, Any] | None) -> dict[str, Any]:
    if not run or not run.get("versions"):
        return {}
    try:
        value = json.loads(run["versions"])
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
