"""Where a sweep's runs train: here, one after another, or as tasks on a Ray cluster.

`rethink.experiments.sweep` plans a sweep (which runs, which are finished, the time budget)
and hands the runs still to do, as `Job`s, to an executor, which reports each one back through
the sweep's `Progress` (`start`, then `done` or `fail`). A user-fixable error (`RethinkError`:
missing data, a damaged checkpoint) stops the sweep with its one-line message, as in `rethink run`.

`LocalExecutor` trains in this process (one run already uses every core). `RayExecutor` makes
each run a Ray task with its own resource request; the task trains with the same
`rethink.train.runner.run` into a private temporary folder on the worker and returns the run's
row, its epoch rows and its files, which the driver writes. So the driver is the only writer of
the results database, and workers need not share its filesystem; they need rethink installed
(the driver's version) and the dataset at `data_dir` on their node (shared storage or a copy).
"""

from __future__ import annotations

import math
import os
import tempfile
import traceback
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from rethink.config import RunConfig
from rethink.errors import ConfigError, RethinkError
from rethink.files import atomic_write
from rethink.store import Store
from rethink.train.run_folder import CHECKPOINT, RunFolder

if TYPE_CHECKING:
    from rethink.metrics import RunResult



@dataclass(frozen=True)
class Job:
    """One run still to do: its place in the sweep's list, id, config, and epochs already stored."""

    index: int  # 1-based, in the order the sweep plans the runs
    run_id: str
    config: RunConfig
    stored_epochs: int  # an interrupted run resumes after these


@dataclass(frozen=True)
class RunOptions:
    """How every run of the sweep trains and where its results go (the driver's paths)."""

    out_dir: Path
    data_dir: str | Path | None = None
    cache_dir: str | Path | None = None
    download: bool = False
    device: str = "auto"
    tensorboard: bool = False


class Progress(Protocol):
    """What an executor reports to: a run started, finished or failed (the sweep's record keeps
    the counts, the ETA and the `[i/N]` lines; an executor only decides where and when runs
    train)."""

    finished: int
    failed: int

    def log(self, line: str) -> None: ...

    def prefix(self, job: Job) -> str: ...

    def start(self, job: Job) -> None: ...

    def done(self, job: Job, result: RunResult) -> None: ...

    def fail(self, job: Job, message: str, detail: str) -> None: ...


class Executor(Protocol):
    """Trains a sweep's remaining runs and reports each to `progress`."""

    def session(self, log: Callable[[str], None]) -> AbstractContextManager[None]:
        """Set up (and afterwards tear down) whatever the runs need, e.g. a Ray connection."""
        ...

    def resolve_precision(self, name: str, device: str) -> str:
        """'auto' -> fp32 or bf16 for the device the runs will train on."""
        ...

    def execute(self, jobs: list[Job], options: RunOptions, progress: Progress) -> None: ...


class LocalExecutor:
    """The runs in this process: one after another, or (`stack`: "auto" or a number of runs) the
    runs that can share a stack (`rethink.train.stacked`) as stacked models. A run that raises is
    stored as failed (with a stack, every run of it)."""

    def __init__(self, stack: str | int = "off") -> None:
        self.stack = stack

    @contextmanager
    def session(self, log: Callable[[str], None]) -> Iterator[None]:
        yield

    def resolve_precision(self, name: str, device: str) -> str:
        from rethink.machine import resolve_device, resolve_precision, warn_on_stderr

        return resolve_precision(name, resolve_device(device), warn=warn_on_stderr)

    def execute(self, jobs: list[Job], options: RunOptions, progress: Progress) -> None:
        from rethink.machine import resolve_device

        for group in plan_stacks(jobs, self.stack, resolve_device(options.device)):
            for job in group:
                progress.start(job)
            try:
                results = self._train(group, options, progress)
            except RethinkError as exc:  # a user-fixable problem (a damaged checkpoint): stop and say so
                if exc.stops_sweep:
                    raise
                _fail_group(progress, group, str(exc), "")  # e.g. out of memory: these runs only
            except Exception as exc:  # a broken run must not take the sweep down; it is stored
                _fail_group(progress, group, f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=5))
            else:
                for job, result in zip(group, results, strict=True):
                    progress.done(job, result)

    def _train(self, group: list[Job], options: RunOptions, progress: Progress) -> list[RunResult]:
        from rethink.train.runner import run, run_stack

        prefix = progress.prefix(group[0])
        if len(group) == 1:
            return [run(group[0].config, out_dir=options.out_dir, data_dir=options.data_dir,
                        cache_dir=options.cache_dir, device=options.device, tensorboard=options.tensorboard,
                        log=lambda line: progress.log(f"{prefix} {line}"))]
        progress.log(f"{prefix} stacking {len(group)} runs: {', '.join(job.run_id for job in group)}")
        return run_stack([job.config for job in group], out_dir=options.out_dir, data_dir=options.data_dir,
                         cache_dir=options.cache_dir, device=options.device, tensorboard=options.tensorboard,
                         log=lambda line: progress.log(f"{prefix} {line}"))


def _fail_group(progress: Progress, group: list[Job], message: str, detail: str) -> None:
    """Every run of a group failed together (one process or task trained them)."""
    for job in group:
        progress.fail(job, message, detail)


def plan_stacks(jobs: list[Job], stack: str | int, device: Any) -> list[list[Job]]:
    """The jobs in groups to train together, in the sweep's order of each group's first run: runs
    with one stack key, at most `stack_size` per group; a run that cannot be stacked alone."""
    from rethink.train.stacked import stack_key, stack_size

    groups: list[list[Job]] = []
    open_groups: dict[tuple, list[Job]] = {}
    for job in jobs:
        key = stack_key(job.config)
        size = stack_size(stack, job.config.model, device)
        if key is None or size <= 1:
            groups.append([job])
            continue
        group = open_groups.get(key)
        if group is None or len(group) >= size:
            group = open_groups[key] = []
            groups.append(group)
        group.append(job)
    return groups


class RayExecutor:
    """Each run a Ray task asking for `cpus_per_run` CPUs and `gpus_per_run` GPUs.

    At most as many tasks are in flight as the cluster's resources hold (recomputed as tasks
    finish, so an autoscaling cluster gets more). A task whose worker or node dies, or that
    raises, is retried up to `max_retries` times by Ray, then stored as failed; a user-fixable
    error is not retried: the sweep stops submitting, waits for the runs in flight, and raises it.

    `address` None starts a local Ray instance (shut down at the end) unless this process is
    already connected; "auto" or HOST:PORT connects to a running cluster. `runtime_env` is
    passed to `ray.init` (e.g. {"working_dir": ...} when the nodes lack rethink). With `stack`
    ("auto" or a number), a task trains a group of compatible runs as one stack (`plan_stacks`)
    with the resources of one run, and returns each run's results.
    """

    def __init__(self, address: str | None = None, *, cpus_per_run: int = 1, gpus_per_run: float = 0.0,
                 max_retries: int = 2, runtime_env: dict[str, Any] | None = None,
                 stack: str | int = "off") -> None:
        try:
            import ray
        except ImportError as exc:
            raise ConfigError("--executor ray needs Ray", "pip install 'rethink[ray]'") from exc
        if cpus_per_run < 1:
            raise ConfigError(f"--cpus-per-run {cpus_per_run} must be at least 1", "pass --cpus-per-run 1")
        if gpus_per_run < 0:
            raise ConfigError(f"--gpus-per-run {gpus_per_run:g} must be >= 0", "pass 0 or a positive number")
        if max_retries < 0:
            raise ConfigError(f"--max-retries {max_retries} must be >= 0", "pass 0 to never retry")
        self._ray = ray
        self.address, self.runtime_env = address, runtime_env
        self.cpus_per_run, self.gpus_per_run, self.max_retries = cpus_per_run, gpus_per_run, max_retries
        self.stack = stack
        self.log: Callable[[str], None] = print

    # ------------------------------------------------------------------ connection

    @contextmanager
    def session(self, log: Callable[[str], None]) -> Iterator[None]:
        ray = self._ray
        self.log = log
        # already connected (a notebook, the tests): use that connection and leave it open
        connected_here = not ray.is_initialized()
        # ray.init() starts a new local instance unless an address is given (argument or $RAY_ADDRESS)
        started = connected_here and self.address is None and not os.environ.get("RAY_ADDRESS")
        if connected_here and self.address not in (None, "auto"):
            _check_reachable(self.address)
        if connected_here:
            kwargs: dict[str, Any] = {"runtime_env": self.runtime_env} if self.runtime_env else {}
            try:
                if self.address is None:
                    ray.init(include_dashboard=False, **kwargs)
                else:
                    ray.init(address=self.address, **kwargs)
            except (ConnectionError, TimeoutError, ValueError) as exc:
                reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise _cannot_connect(self.address or "$RAY_ADDRESS", reason) from exc
        try:
            self._check_fits(started)
            yield
        finally:
            if connected_here:  # stops the instance we started; only disconnects from a cluster
                ray.shutdown()

    def _resources(self) -> tuple[float, float]:
        resources = self._ray.cluster_resources()
        return resources.get("CPU", 0.0), resources.get("GPU", 0.0)

    def slots(self) -> int:
        """How many runs the cluster's resources hold at once (0: not even one)."""
        cpus, gpus = self._resources()
        # the epsilon keeps e.g. 1 GPU / 0.1 per run at 10 despite float rounding
        slots = math.floor(cpus / self.cpus_per_run + 1e-9)
        if self.gpus_per_run > 0:
            slots = min(slots, math.floor(gpus / self.gpus_per_run + 1e-9))
        return slots

    def _check_fits(self, started: bool) -> None:
        cpus, gpus = self._resources()
        slots = self.slots()
        ask = f"{self.cpus_per_run} CPU, {self.gpus_per_run:g} GPU per run"
        if slots > 0:
            self.log(f"ray: {cpus:g} CPUs, {gpus:g} GPUs: {slots} runs at a time ({ask})")
            return
        what = f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs, less than one run asks for ({ask})"
        if started:  # our own instance will never grow
            raise ConfigError(what, "lower --cpus-per-run / --gpus-per-run, or pass --ray-address of a "
                                    "cluster that has them")
        self.log(f"ray: warning: {what}; the runs wait until the cluster has them (autoscaling)")

    def _options(self, name: str) -> dict[str, Any]:
        return {"num_cpus": self.cpus_per_run, "num_gpus": self.gpus_per_run, "name": name}

    def resolve_precision(self, name: str, device: str) -> str:
        # asked on a worker with the runs' resources: the driver may have no GPU (or another one)
        probe = self._ray.remote(_probe_precision).options(**self._options("rethink-probe"), max_retries=1)
        precision, error = self._ray.get(probe.remote(name, device))
        if error is not None:
            raise _rebuild(error)
        return precision

    # ------------------------------------------------------------------ the runs

    def execute(self, jobs: list[Job], options: RunOptions, progress: Progress) -> None:
        if not jobs:
            return
        import torch

        ray = self._ray
        task = ray.remote(_train_task)
        # where the runs train decides `--stack auto`: a GPU when the tasks ask for one
        device = torch.device("cuda") if self.gpus_per_run > 0 else torch.device("cpu")
        queued = deque(plan_stacks(jobs, self.stack, device))
        running: dict[Any, list[Job]] = {}  # ObjectRef -> its runs: submitted, results not fetched yet
        user_error: RethinkError | None = None
        try:
            while queued or running:
                # submit while the cluster has room; recomputed each time, clusters can grow
                limit = max(self.slots(), 1)
                while queued and user_error is None and len(running) < limit:
                    group = queued.popleft()
                    for job in group:
                        progress.start(job)
                    if len(group) > 1:
                        progress.log(f"{progress.prefix(group[0])} stacking {len(group)} runs in one task: "
                                     f"{', '.join(job.run_id for job in group)}")
                    running[self._submit(task, group, options, progress.prefix(group[0]))] = group
                if not running:
                    break
                # the state after refilling the free slots, before waiting for the next run to return
                progress.log(f"ray: {len(queued)} queued / {len(running)} running / {progress.finished} done "
                             f"/ {progress.failed} failed")
                [ref], _ = ray.wait(list(running), num_returns=1)
                group = running.pop(ref)
                error = self._collect(ref, group, options, progress)
                if error is not None and user_error is None:
                    user_error = error
                    progress.log(f"{progress.prefix(group[0])} error: {error}; stopping after the "
                                 f"{len(running)} tasks in flight")
        except BaseException:  # Ctrl-C or a driver error: do not leave our tasks running
            for ref in running:
                ray.cancel(ref)
            raise
        progress.log(f"ray: {len(queued)} queued / 0 running / {progress.finished} done "
                     f"/ {progress.failed} failed")
        if user_error is not None:
            raise user_error

    def _submit(self, task: Any, group: list[Job], options: RunOptions, prefix: str) -> Any:
        # an interrupted run resumes on the worker from the driver's last checkpoint
        checkpoints = [RunFolder.of(options.out_dir, job.run_id).checkpoint_bytes() for job in group]
        worker_options = {
            "data_dir": None if options.data_dir is None else str(options.data_dir),
            "cache_dir": None if options.cache_dir is None else str(options.cache_dir),
            "download": options.download,
            "device": options.device,
            "tensorboard": options.tensorboard,
        }
        name = f"rethink-run-{group[0].run_id}" + (f"-stack-{len(group)}" if len(group) > 1 else "")
        return task.options(**self._options(name), max_retries=self.max_retries,
                            retry_exceptions=True).remote([job.config for job in group], checkpoints,
                                                          worker_options, self.cpus_per_run, prefix)

    def _collect(self, ref: Any, group: list[Job], options: RunOptions,
                 progress: Progress) -> RethinkError | None:
        """Store one finished task's runs (or their failure); return a user error to raise."""
        ray = self._ray
        tries = f"(tried {self.max_retries + 1} times)"
        try:
            payload = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:  # the task raised on every try
            cause = exc.cause if isinstance(getattr(exc, "cause", None), BaseException) else exc
            _fail_group(progress, group, f"{type(cause).__name__}: {cause}", f"{tries}\n{exc}")
            return None
        except ray.exceptions.RayError as exc:  # its worker or node died on every try
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            _fail_group(progress, group, f"{type(exc).__name__}: {first}", f"{tries}\n{exc}")
            return None
        if "user_error" in payload:
            cls, message, hint = payload["user_error"]
            # name the driver's run folder, not the worker's temporary copy of it
            workdir, here = payload["workdir"], str(options.out_dir)
            error = cls(message.replace(workdir, here), hint.replace(workdir, here))
            if error.stops_sweep:
                return error
            _fail_group(progress, group, str(error), "")  # e.g. out of memory: these runs only
            return None
        with Store(options.out_dir) as store:
            for job, run in zip(group, payload["runs"], strict=True):
                # files first, then the database: a kill in between leaves a checkpoint the rerun resumes
                RunFolder.of(options.out_dir, job.run_id).put_files(run["files"])
                for rel, data in run["tensorboard"].items():
                    atomic_write(options.out_dir / "tensorboard" / job.run_id / rel, data)
                store.import_run(run["row"], run["epochs"])
                progress.done(job, run["result"])
        return None


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail in seconds when nothing listens at HOST:PORT: ray.init would retry for minutes."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # not HOST:PORT: ray.init reports the malformed address itself
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise _cannot_connect(address, exc.strerror or str(exc)) from None


def _cannot_connect(address: str, reason: str) -> ConfigError:
    return ConfigError(f"cannot connect to the Ray cluster at {address}: {reason}",
                       "start it with `ray start --head`, or check --ray-address")


# ---------------------------------------------------------------------- on the workers


def _user_error(exc: RethinkError) -> tuple[type[RethinkError], str, str]:
    """A RethinkError as plain values: exceptions with extra init arguments pickle badly."""
    return type(exc), exc.message, exc.hint


def _rebuild(error: tuple[type[RethinkError], str, str]) -> RethinkError:
    cls, message, hint = error
    return cls(message, hint)


def _probe_precision(name: str, device: str) -> tuple[str | None, tuple | None]:
    from rethink.machine import resolve_device, resolve_precision, warn_on_stderr

    try:  # an emulated-bf16 warning reaches the driver with the worker's stderr
        return resolve_precision(name, resolve_device(device), warn=warn_on_stderr), None
    except RethinkError as exc:
        return None, _user_error(exc)


def _train_task(configs: list[RunConfig], checkpoints: list[bytes | None], options: dict[str, Any],
                threads: int, prefix: str) -> dict[str, Any]:
    """A Ray task: train one run (or a stack of them) in a private folder and return everything the
    driver stores.

    Returns {"runs": [{"row", "epochs", "files", "tensorboard", "result"}, ...]}, or {"user_error",
    "workdir"} for a RethinkError (returned, not raised, so Ray does not retry what a retry cannot fix).
    """
    import torch

    from rethink.train.runner import run, run_stack

    torch.set_num_threads(threads)  # the CPUs Ray gave this task, not the node's
    with tempfile.TemporaryDirectory(prefix="rethink-ray-") as tmp:
        out = Path(tmp)
        for config, checkpoint in zip(configs, checkpoints, strict=True):
            if checkpoint is not None:
                RunFolder.of(out, config.run_id).put_files({CHECKPOINT: checkpoint})

        def log(line: str) -> None:  # printed lines reach the driver's terminal through Ray's log forwarding
            print(f"{prefix} {line}", flush=True)

        try:
            if len(configs) == 1:
                results = [run(configs[0], out_dir=out, **options, log=log)]
            else:
                results = run_stack(configs, out_dir=out, **options, log=log)
        except RethinkError as exc:
            return {"user_error": _user_error(exc), "workdir": tmp}
        return {"runs": [_run_payload(out, config, result) for config, result in zip(configs, results,
                                                                                    strict=True)]}


def _run_payload(out: Path, config: RunConfig, result: RunResult) -> dict[str, Any]:
    """One trained run as the driver stores it: its row, epochs, folder files and event files."""
    with Store(out) as store:
        row, epochs = store.get_run(config.run_id), store.epochs(config.run_id)
    files = RunFolder.of(out, config.run_id).files()  # config.json, corruption.npz, checkpoint.pt
    events = out / "tensorboard" / config.run_id
    tensorboard = ({str(p.relative_to(events)): p.read_bytes() for p in events.rglob("*") if p.is_file()}
                   if events.is_dir() else {})
    return {"row": row, "epochs": epochs, "files": files, "tensorboard": tensorboard, "result": result}
