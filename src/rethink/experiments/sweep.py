"""The sweep engine: expand a preset's experiments into runs and execute them, resumably.

Every run is keyed by its full config (seeds included), so a rerun of the same command skips
the finished runs, resumes the interrupted one from its checkpoint and starts the rest; a kill
loses at most the current epoch. Runs execute one after another in this process (one run
already uses every core). A run that raises is stored as `failed` with its error and the
sweep goes on; a rerun tries it again.
"""

from __future__ import annotations

import dataclasses
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rethink.config import RunConfig
from rethink.data.sources import load_dataset
from rethink.errors import ConfigError, RethinkError
from rethink.experiments.grids import EXPERIMENTS, PRESETS, Point, Preset, build_points, sweep_id
from rethink.fmt import duration
from rethink.store import FINISHED_STATUSES, Store
from rethink.train.runner import resolve_device, resolve_precision, run

# Training images per second of each model on the reference 2-core CPU, fp32, batch 128
# (docs/results/foundation.md); evaluation runs at about 3x that. Only for time estimates.
REFERENCE_THROUGHPUT = {
    "mlp1x512": 26_000.0,
    "mlp3x512": 18_600.0,
    "alexnet": 1_000.0,
    "inception": 100.0,
    "inception-nobn": 113.0,
}
EVAL_SPEEDUP = 3.0
BF16_SPEEDUP = 1.5


@dataclass(frozen=True)
class SweepResult:
    sweep_id: str
    runs: int
    skipped: int
    finished: int
    failed: int
    wall_time: float
    report: Path | None


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}", f"choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def epoch_seconds(config: RunConfig, train_size: int, test_size: int) -> float:
    """One epoch (training plus the full-train and test evaluation) on the reference CPU."""
    speed = REFERENCE_THROUGHPUT.get(config.model, 1_000.0)
    if config.precision == "bf16":
        speed *= BF16_SPEEDUP
    return train_size / speed + (train_size + test_size) / (speed * EVAL_SPEEDUP)


def unique_runs(points: list[Point]) -> dict[str, RunConfig]:
    """run id -> config, in first-appearance order (experiments share runs)."""
    runs: dict[str, RunConfig] = {}
    for point in points:
        runs.setdefault(point.run_id, point.config)
    return runs


def run_sweep(
    preset_name: str,
    *,
    experiments: tuple[str, ...] | None = None,
    models: tuple[str, ...] | None = None,
    seeds: int = 1,
    dataset: str | None = None,
    out_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    precision: str | None = None,
    report: bool = True,
    tensorboard: bool = False,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Run every point of a preset's experiments that is not finished yet.

    `precision` ("auto", "fp32", "bf16") overrides the preset's for every run; None keeps it."""
    preset = get_preset(preset_name)
    if precision is not None:
        preset = dataclasses.replace(preset, precision=resolve_precision(precision, resolve_device(device)))
    if dataset is not None:
        preset = _with_dataset(preset, dataset)
    points = build_points(preset, experiments, models, seeds)
    options = {
        "preset": preset.to_dict(),
        "experiments": list(experiments or preset.experiments or EXPERIMENTS),
        "models": list(models or preset.models),
        "seeds": seeds,
    }
    sid = sweep_id(preset, options)
    runs = unique_runs(points)

    # Check the data before writing anything: a missing dataset fails here, in one line.
    raw = load_dataset(preset.dataset, data_dir, download=download, cache_dir=cache_dir)
    n_train, n_test = len(raw.train_labels), len(raw.test_labels)
    _check_sizes(runs.values(), n_train, n_test, preset)
    per_epoch = {
        rid: epoch_seconds(c, c.train_size or n_train, c.test_size or n_test) for rid, c in runs.items()
    }

    out_dir = Path(out_dir)
    with Store(out_dir) as store:
        store.register_sweep(
            sid,
            preset.name,
            options,
            [
                {"experiment": p.experiment, "labels": p.labels, "run_id": p.run_id,
                 "config": p.config.to_dict()}
                for p in points
            ],
        )
        done = {rid for rid in runs if _finished(store, rid)}
        todo = [rid for rid in runs if rid not in done]
        stored = {rid: len(store.epochs(rid)) for rid in todo}  # an interrupted run resumes after these
    left = {rid: runs[rid].max_epochs - stored[rid] for rid in todo}  # epochs still to train
    budget = sum(per_epoch[rid] * left[rid] for rid in todo)
    log(
        f"sweep {sid}: preset {preset.name}, {len(points)} points over {len(runs)} runs "
        f"({len(done)} already finished); at most {duration(budget)} on the reference 2-core CPU "
        f"(every remaining run to its epoch budget; runs that fit stop earlier)"
    )

    t0 = time.perf_counter()
    trained_estimate, finished, failed = 0.0, 0, 0
    for i, rid in enumerate(todo, 1):
        config = runs[rid]
        elapsed = time.perf_counter() - t0
        remaining = sum(per_epoch[r] * left[r] for r in todo[i - 1 :])
        # this machine's speed relative to the reference, from the epochs trained so far; the
        # bound stays an upper bound because runs that fit stop before their budget
        pace = elapsed / trained_estimate if trained_estimate > 0 else 1.0
        eta = f", ETA <= {duration(remaining * pace)}" if i > 1 else ""
        prefix = f"[{i}/{len(todo)}]"
        log(f"{prefix} {_describe_point(points, rid)}{eta}")
        try:
            result = run(config, out_dir=out_dir, data_dir=data_dir, cache_dir=cache_dir, device=device,
                         tensorboard=tensorboard, log=lambda line, prefix=prefix: log(f"{prefix} {line}"))
            finished += 1
            trained_estimate += per_epoch[rid] * (result.epochs - stored[rid])
            log(f"{prefix} {result.status}: train {100 * result.train_acc:.2f}%, test "
                f"{100 * result.test_acc:.2f}%, {result.steps} steps, {result.wall_time:.0f} s")
        except RethinkError:  # a user-fixable problem (e.g. a damaged checkpoint): stop and say so
            raise
        except Exception as exc:  # a broken run must not take the sweep down; it is stored
            failed += 1
            message = f"{type(exc).__name__}: {exc}"
            log(f"{prefix} failed: {message}")
            with Store(out_dir) as store:
                store.mark_failed(rid, config.to_dict(), message + "\n" + traceback.format_exc(limit=5))

    report_path = None
    if report:
        from rethink.report import write_report  # late: matplotlib is only needed here

        report_path = write_report(out_dir, sweep_id=sid)
    wall = time.perf_counter() - t0
    log(f"sweep {sid} done: {finished} trained, {len(done)} skipped, {failed} failed, "
        f"{duration(wall)}" + (f"; report: {report_path}" if report_path else ""))
    return SweepResult(sid, len(runs), len(done), finished, failed, wall, report_path)


def _check_sizes(configs, n_train: int, n_test: int, preset: Preset) -> None:
    for config in configs:
        for size, have, split in ((config.train_size, n_train, "train"), (config.test_size, n_test, "test")):
            if size is not None and size > have:
                raise ConfigError(
                    f"preset {preset.name} wants {size} {split} images of {preset.dataset}, "
                    f"which has {have}",
                    "use a smaller preset or another dataset",
                )


def _finished(store: Store, run_id: str) -> bool:
    row = store.get_run(run_id)
    return row is not None and row["status"] in FINISHED_STATUSES


def _with_dataset(preset: Preset, dataset: str) -> Preset:
    return dataclasses.replace(preset, dataset=dataset)


def _describe_point(points: list[Point], run_id: str) -> str:
    point = next(p for p in points if p.run_id == run_id)
    experiments = sorted({p.experiment for p in points if p.run_id == run_id})
    lab = point.labels
    what = lab["corruption"] + (f" p={lab['p']:g}" if lab["p"] is not None else "")
    return (f"{lab['model']} {what} reg={lab['regularizer']} seed={lab['seed']} "
            f"({', '.join(experiments)}) run {run_id}")

