"""One run end to end: validate -> load data -> corrupt -> fit -> store.

Nothing is written before the config and the data have been checked, so bad input leaves the
output directory as it was. A run whose id is already stored as finished is skipped; one that
was interrupted resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.rundata import RunData
from rethink.data.sources import load_dataset
from rethink.errors import ConfigError, ResourceError, StoreError
from rethink.files import atomic_write
from rethink.machine import resolve_device, software_versions
from rethink.models import create_model, get_model_info
from rethink.store import DB_NAME, FINISHED_STATUSES, Store
from rethink.train import distributed
from rethink.train.distributed import World
from rethink.train.loop import CHECKPOINT, RunResult, fit, resume_state


def stored_result(store: Store, run_id: str) -> RunResult | None:
    """The stored result of a finished run, or None if it has not finished."""
    row = store.get_run(run_id)
    if row is None or row["status"] not in FINISHED_STATUSES:
        return None
    fields = RunResult.__dataclass_fields__
    return RunResult(**{k: row[k] if k != "message" else row[k] or "" for k in fields})


def run(
    config: RunConfig,
    *,
    out_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    tensorboard: bool = False,
    log: Callable[[str], None] = print,
    world: World | None = None,
) -> RunResult:
    """Run `config` to completion (or return its stored result) and return the summary.

    With `tensorboard`, each epoch's metrics also go to `out_dir/tensorboard/<run id>/`.
    With `world` (this process is one rank of a torchrun job), every rank loads the data and
    trains its shard; only rank 0 logs and writes (see `rethink.train.distributed`).
    """
    config.validate()
    torch_device = resolve_device(device)
    if world is not None:
        torch_device = distributed.init_process_group(world, torch_device)
        if not world.is_main:
            log = _silent
    out_dir = Path(out_dir)
    run_id = config.run_id
    writes = world is None or world.is_main
    if (out_dir / DB_NAME).exists():
        with Store(out_dir, readonly=not writes) as store:
            done = stored_result(store, run_id)
        if done is not None:
            log(f"run {run_id} already finished ({done.status}); skipping")
            return done

    raw = load_dataset(config.dataset, data_dir, download=download, cache_dir=cache_dir)
    fmt = torch.channels_last if get_model_info(config.model).is_conv else torch.contiguous_format
    data = build_run_data(config, raw, memory_format=fmt, device=torch_device)
    with torch.device("meta"):  # the model accepts this data (e.g. its minimum input), before any write
        create_model(config.model, in_shape=data.in_shape, num_classes=data.num_classes,
                     dropout=config.dropout)
    log(_describe(config, data))

    run_dir = out_dir / run_id
    if world is not None:
        distributed.check_batches(world, len(data.train_y), config.batch_size)
    # a checkpoint that cannot be resumed (damaged, another run's, other data) is refused before
    # anything is written; fit() loads it again under the lock
    resume_state(run_dir, run_id, data.corruption_sha256)
    if not writes:
        return fit(config, data, None, run_dir, log=log, world=world)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_claim_run_dir(run_dir))
        store = stack.enter_context(Store(out_dir))
        done = stored_result(store, run_id)  # another process may have finished it meanwhile
        if done is not None:
            log(f"run {run_id} already finished ({done.status}); skipping")
            return done
        _write_run_files(run_dir, config, data)
        versions = software_versions(torch_device)
        if world is not None:
            versions["world_size"] = world.size
        store.start_run(
            run_id,
            config.to_dict(),
            versions=versions,
            realized_rate=data.realized_rate,
            data_hash=data.data_hash,
            train_size=len(data.train_y),
            test_size=len(data.test_y),
        )
        on_epoch = None
        if tensorboard:
            writer = _tensorboard_writer(out_dir / "tensorboard" / run_id)
            stack.callback(writer.close)
            on_epoch = functools.partial(_write_scalars, writer)
        try:
            return fit(config, data, store, run_dir, log=log, on_epoch=on_epoch, world=world)
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            message = (f"out of memory training {config.model} at batch size {config.batch_size} "
                       f"({config.precision}, {torch_device})")
            store.mark_failed(run_id, config.to_dict(), f"{message}: {exc}")
            raise ResourceError(message, f"try --batch-size {max(1, config.batch_size // 2)}"
                                + (" or --precision bf16" if config.precision == "fp32" else "")
                                + "; the rerun resumes from the last epoch") from exc


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError (a RuntimeError), the CPU allocator's failure, or MemoryError."""
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(exc)


@contextlib.contextmanager
def _claim_run_dir(run_dir: Path) -> Iterator[None]:
    """Create the run folder and hold its lock while training.

    A second process training the same run into the same --out is refused in one line (two
    writers would interleave checkpoints); other runs in the same folder train concurrently (the
    database takes concurrent writers). An unwritable folder is one line too, and a folder this
    call created is removed again if anything fails before training starts.
    """
    created = not run_dir.exists()
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        lock = open(run_dir / ".lock", "a+")  # noqa: SIM115 - held open for the whole run
    except OSError as exc:
        raise _unwritable(run_dir, exc) from exc
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise StoreError(f"run {run_dir.name} is being trained by another rethink process "
                             f"(pid {holder}) in {run_dir.parent}",
                             "wait for it to finish, or use another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        for stale in run_dir.glob(".*.tmp"):  # a killed writer's temp file; we hold the lock now
            stale.unlink(missing_ok=True)
        yield
    except BaseException as exc:
        if created and not (run_dir / CHECKPOINT).exists():
            shutil.rmtree(run_dir, ignore_errors=True)  # nothing of this run was kept: leave no folder
        if isinstance(exc, OSError):
            raise _unwritable(run_dir, exc) from exc
        raise
    finally:
        lock.close()


def _unwritable(run_dir: Path, exc: OSError) -> StoreError:
    return StoreError(f"cannot write to the output directory {run_dir.parent}: {exc.strerror or exc}",
                      "pass a writable --out with free space")


def _silent(_: str) -> None:
    """The log of ranks other than 0: one voice per run."""


TENSORBOARD_SCALARS = ("train_loss", "train_acc", "train_acc_clean", "train_acc_corrupted", "test_loss",
                       "test_acc", "best_test_acc", "lr")


def _tensorboard_writer(log_dir: Path):  # -> torch.utils.tensorboard.SummaryWriter
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ConfigError("--tensorboard needs the tensorboard package",
                          "pip install 'rethink[tensorboard]'") from exc
    return SummaryWriter(log_dir=str(log_dir))


def _write_scalars(writer, row: dict[str, Any]) -> None:
    for key in TENSORBOARD_SCALARS:
        if row.get(key) is not None:
            writer.add_scalar(key.replace("_", "/", 1), row[key], global_step=row["step"])
    writer.flush()


def _write_run_files(run_dir: Path, config: RunConfig, data: RunData) -> None:
    """config.json and the corruption record (mask, labels, subset) beside the checkpoint."""
    atomic_write(run_dir / "config.json", json.dumps(config.to_dict(), indent=2, sort_keys=True).encode())
    record = io.BytesIO()
    np.savez_compressed(
        record,
        changed=data.changed.cpu().numpy(),
        train_labels=data.train_y.cpu().numpy(),
        subset=data.subset.numpy(),
        realized_rate=np.float64(data.realized_rate),
    )
    atomic_write(run_dir / "corruption.npz", record.getvalue())


def _describe(config: RunConfig, data: RunData) -> str:
    what = config.corruption + (f" p={config.p:g}" if config.p is not None else "")
    regs = [f"wd={config.weight_decay:g}"] if config.weight_decay else []
    regs += [f"aug={'+'.join(config.augment)}"] if config.augment else []
    regs += [f"dropout={config.dropout:g}"] if config.dropout else []
    return (
        f"run {config.run_id}: {config.model} on {config.dataset} "
        f"({len(data.train_y)} train / {len(data.test_y)} test, {data.in_shape[1]}x{data.in_shape[2]}"
        f"x{data.in_shape[0]}), {what}, changed labels {100 * data.realized_rate:.1f}%, "
        f"lr {config.effective_lr:g}, batch {config.batch_size}, {config.precision}, "
        f"regularizers: {', '.join(regs) or 'none'}"
    )
