"""The sweep engine: expand a preset's experiments into runs and execute them, resumably.

Every run is keyed by its full config (seeds included), so a rerun of the same command skips
the finished runs, resumes the interrupted one from its checkpoint and starts the rest; a kill
loses at most the current epoch. Planning (which runs, which are done, the time budget) and
reporting are shared; an executor (`rethink.experiments.executors`) trains the remaining runs:
by default one after another in this process (one run already uses every core), or as tasks
on a Ray cluster. A run that raises is stored as `failed` with its error and the sweep goes on;
a rerun tries it again.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from rethink.config import RunConfig
from rethink.data.sources import load_dataset
from rethink.errors import ConfigError
from rethink.experiments import beyond
from rethink.experiments.executors import Executor, Job, LocalExecutor, RunOptions
from rethink.experiments.grids import DEFAULT_EXPERIMENTS, PRESETS, Point, Preset, build_points, sweep_id
from rethink.fmt import duration
from rethink.metrics import RunResult
from rethink.store import Store

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


class SweepProgress:
    """The sweep's record of what its executor reports (`executors.Progress`): keeps the counts
    and the ETA, prints the `[i/N]` lines, and stores failed runs."""

    def __init__(self, points: list[Point], todo: list[Job], per_epoch: dict[str, float],
                 left: dict[str, int], out_dir: Path, log: Callable[[str], None]) -> None:
        self.points, self.todo, self.out_dir, self.log = points, todo, out_dir, log
        self.per_epoch, self.left = per_epoch, left
        self.finished, self.failed = 0, 0
        self.trained_estimate = 0.0  # reference-CPU seconds of the epochs trained so far
        self.completed: set[str] = set()
        self.t0 = time.perf_counter()

    def prefix(self, job: Job) -> str:
        return f"[{job.index}/{len(self.todo)}]"

    def start(self, job: Job) -> None:
        elapsed = time.perf_counter() - self.t0
        remaining = sum(self.per_epoch[j.run_id] * self.left[j.run_id]
                        for j in self.todo if j.run_id not in self.completed)
        # this machine's speed relative to the reference, from the epochs trained so far; the
        # bound stays an upper bound because runs that fit stop before their budget
        pace = elapsed / self.trained_estimate if self.trained_estimate > 0 else 1.0
        eta = f", ETA <= {duration(remaining * pace)}" if job.index > 1 else ""
        self.log(f"{self.prefix(job)} {_describe_point(self.points, job.run_id)}{eta}")

    def done(self, job: Job, result: RunResult) -> None:
        self.finished += 1
        self.completed.add(job.run_id)
        self.trained_estimate += self.per_epoch[job.run_id] * (result.epochs - job.stored_epochs)
        self.log(f"{self.prefix(job)} {result.status}: train {100 * result.train_acc:.2f}%, test "
                 f"{100 * result.test_acc:.2f}%, {result.steps} steps, {result.wall_time:.0f} s")

    def absorb(self, later: SweepProgress) -> None:
        """Count a later batch of the same sweep's runs (the removal test's) in this record."""
        self.finished += later.finished
        self.failed += later.failed
        self.todo = self.todo + later.todo

    def fail(self, job: Job, message: str, detail: str) -> None:
        """Store the run as failed (`message` one line, `detail` e.g. the traceback)."""
        self.failed += 1
        self.completed.add(job.run_id)
        self.log(f"{self.prefix(job)} failed: {message}")
        with Store(self.out_dir) as store:
            store.mark_failed(job.run_id, job.config.to_dict(), message + "\n" + detail)


def run_sweep(
    preset_name: str,
    *,
    experiments: tuple[str, ...] | None = None,
    models: tuple[str, ...] | None = None,
    seeds: int | None = None,
    dataset: str | None = None,
    out_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    precision: str | None = None,
    report: bool = True,
    tensorboard: bool = False,
    executor: Executor | None = None,
    log: Callable[[str], None] = print,
) -> SweepResult:
    """Run every point of a preset's experiments that is not finished yet.

    `precision` ("auto", "fp32", "bf16") overrides the preset's for every run; None keeps it.
    `executor` trains the remaining runs (default: `LocalExecutor`, one after another here)."""
    preset = get_preset(preset_name)
    executor = executor or LocalExecutor()
    with executor.session(log):
        sid, skipped, progress = _plan_and_execute(
            preset, executor, experiments=experiments, models=models, seeds=seeds, dataset=dataset,
            options=RunOptions(out_dir=Path(out_dir), data_dir=data_dir, cache_dir=cache_dir,
                               download=download, device=device, tensorboard=tensorboard),
            precision=precision, log=log)
    report_path = None
    if report:
        from rethink.report import write_report  # late: matplotlib is only needed here

        report_path = write_report(out_dir, sweep_id=sid)
    wall = time.perf_counter() - progress.t0
    log(f"sweep {sid} done: {progress.finished} trained, {skipped} skipped, {progress.failed} failed, "
        f"{duration(wall)}" + (f"; report: {report_path}" if report_path else ""))
    return SweepResult(sid, skipped + len(progress.todo), skipped, progress.finished, progress.failed, wall,
                       report_path)


def _plan_and_execute(
    preset: Preset,
    executor: Executor,
    *,
    experiments: tuple[str, ...] | None,
    models: tuple[str, ...] | None,
    seeds: int | None,
    dataset: str | None,
    options: RunOptions,
    precision: str | None,
    log: Callable[[str], None],
) -> tuple[str, int, SweepProgress]:
    """Expand, check, register and skip, then hand the runs still to do to the executor; then the
    beyond-the-paper parts that follow training (`rethink.experiments.beyond`), whose removal
    runs are trained the same way.

    Returns the sweep id, the number of runs skipped as finished, and the progress record."""
    if precision is not None:
        preset = dataclasses.replace(preset, precision=executor.resolve_precision(precision, options.device))
    if dataset is not None:
        preset = _with_dataset(preset, dataset)
    points = build_points(preset, experiments, models, seeds)
    chosen = experiments or preset.experiments or DEFAULT_EXPERIMENTS
    sweep_options = {
        "preset": preset.to_dict(),
        "experiments": list(chosen),
        "models": list(models or preset.models),
        "seeds": seeds,
    }
    sid = sweep_id(preset, sweep_options)
    skipped, progress = _execute(preset, sid, sweep_options, points, executor, options, log)
    if "double-descent-rff" in chosen:
        beyond.random_features(preset, options.out_dir, options.data_dir, options.cache_dir, log)
    if "memorization" in chosen:
        levels = beyond.memorization_scores(preset, sid, options.out_dir, options.data_dir,
                                            options.cache_dir, log, options.device)
        if 0.0 in levels:
            removal = beyond.removal_points(preset, levels[0.0])
            _, later = _execute(preset, sid, sweep_options, points + removal, executor, options, log)
            progress.absorb(later)
    return sid, skipped, progress


def _execute(preset: Preset, sid: str, sweep_options: dict, points: list[Point], executor: Executor,
             options: RunOptions, log: Callable[[str], None]) -> tuple[int, SweepProgress]:
    """Register the sweep's points and train those not finished: (runs skipped, progress)."""
    runs = unique_runs(points)

    # Check the data before writing anything: a missing dataset fails here, in one line.
    raw = load_dataset(preset.dataset, options.data_dir, download=options.download,
                       cache_dir=options.cache_dir)
    n_train, n_test = len(raw.train_labels), len(raw.test_labels)
    _check_sizes(runs.values(), n_train, n_test, preset)
    per_epoch = {
        rid: epoch_seconds(c, c.train_size or n_train, c.test_size or n_test) for rid, c in runs.items()
    }

    out_dir = options.out_dir
    with Store(out_dir) as store:
        store.register_sweep(
            sid,
            preset.name,
            sweep_options,
            [
                {"experiment": p.experiment, "labels": p.labels, "run_id": p.run_id,
                 "config": p.config.to_dict()}
                for p in points
            ],
        )
        done = {rid for rid in runs if store.finished_result(rid) is not None}
        todo = [rid for rid in runs if rid not in done]
        stored = {rid: len(store.epochs(rid)) for rid in todo}  # an interrupted run resumes after these
    left = {rid: runs[rid].max_epochs - stored[rid] for rid in todo}  # epochs still to train
    budget = sum(per_epoch[rid] * left[rid] for rid in todo)
    log(
        f"sweep {sid}: preset {preset.name}, {len(points)} points over {len(runs)} runs "
        f"({len(done)} already finished); at most {duration(budget)} on the reference 2-core CPU "
        f"(every remaining run to its epoch budget; runs that fit stop earlier)"
    )
    jobs = [Job(i, rid, runs[rid], stored[rid]) for i, rid in enumerate(todo, 1)]
    progress = SweepProgress(points, jobs, per_epoch, left, out_dir, log)
    executor.execute(jobs, options, progress)
    return len(done), progress


def _check_sizes(configs: Iterable[RunConfig], n_train: int, n_test: int, preset: Preset) -> None:
    for config in configs:
        for size, have, split in ((config.train_size, n_train, "train"), (config.test_size, n_test, "test")):
            if size is not None and size > have:
                raise ConfigError(
                    f"preset {preset.name} wants {size} {split} images of {preset.dataset}, "
                    f"which has {have}",
                    "use a smaller preset or another dataset",
                )


def _with_dataset(preset: Preset, dataset: str) -> Preset:
    return dataclasses.replace(preset, dataset=dataset)


def _describe_point(points: list[Point], run_id: str) -> str:
    point = next(p for p in points if p.run_id == run_id)
    experiments = sorted({p.experiment for p in points if p.run_id == run_id})
    lab = point.labels
    what = lab["corruption"] + (f" p={lab['p']:g}" if lab["p"] is not None else "")
    return (f"{lab['model']} {what} reg={lab['regularizer']} seed={lab['seed']} "
            f"({', '.join(experiments)}) run {run_id}")
