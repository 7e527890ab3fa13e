"""One run end to end: validate -> load data -> corrupt -> fit -> store.

Nothing is written before the config and the data have been checked, so bad input leaves the
output directory as it was. A run whose id is already stored as finished is skipped; one that
was interrupted resumes from its checkpoint.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.rundata import RunData
from rethink.data.sources import load_dataset
from rethink.errors import ConfigError, ResourceError
from rethink.machine import resolve_device, software_versions
from rethink.metrics import RunResult
from rethink.models import create_model, get_model_info
from rethink.store import DB_NAME, Store
from rethink.train import distributed
from rethink.train.distributed import World
from rethink.train.loop import fit
from rethink.train.run_folder import RunFolder


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
    out_dir, writes = Path(out_dir), world is None or world.is_main
    done = _finished(out_dir, config.run_id, readonly=not writes)
    if done is not None:
        log(f"run {config.run_id} already finished ({done.status}); skipping")
        return done

    raw = load_dataset(config.dataset, data_dir, download=download, cache_dir=cache_dir)
    data = _prepare(config, raw, torch_device, world)
    log(_describe(config, data))
    folder = RunFolder.of(out_dir, config.run_id)
    # a checkpoint that cannot be resumed (damaged, another run's, other data) is refused before
    # anything is written; fit() loads it again under the lock
    folder.load_state(data.corruption_sha256)
    if not writes:
        return fit(config, data, None, folder.path, log=log, world=world)
    with contextlib.ExitStack() as stack:
        stack.enter_context(folder.claim())
        store = stack.enter_context(Store(out_dir))
        done = store.finished_result(config.run_id)  # another process may have finished it meanwhile
        if done is not None:
            log(f"run {config.run_id} already finished ({done.status}); skipping")
            return done
        folder.write_record(config, data)
        _start(store, config, data, torch_device, world)
        on_epoch = _epoch_writer(stack, out_dir, config.run_id) if tensorboard else None
        try:
            return fit(config, data, store, folder.path, log=log, on_epoch=on_epoch, world=world)
        except (MemoryError, RuntimeError) as exc:
            if not _out_of_memory(exc):
                raise
            raise _resource_error(store, config, torch_device, exc) from exc


def run_stack(
    configs: list[RunConfig],
    *,
    out_dir: str | Path = "runs",
    data_dir: str | Path | None = None,
    cache_dir: str | Path | None = None,
    download: bool = False,
    device: str = "auto",
    tensorboard: bool = False,
    log: Callable[[str], None] = print,
) -> list[RunResult]:
    """Train runs that share a stack key (`rethink.train.stacked.stack_key`) as one stacked model;
    each is stored exactly as `run` stores it, and finished ones are returned from the store."""
    from rethink.train.loop import RunState
    from rethink.train.stacked import fit_stack, stack_key

    for config in configs:
        config.validate()
    if len({stack_key(c) for c in configs}) != 1 or stack_key(configs[0]) is None:
        raise ConfigError("these runs cannot train in one stack", "stack runs of one model, dataset, "
                          "size, batch size and precision, without dropout")
    out_dir, torch_device = Path(out_dir), resolve_device(device)
    results: dict[str, RunResult] = {}
    if (out_dir / DB_NAME).exists():
        with Store(out_dir) as store:
            for config in configs:
                done = store.finished_result(config.run_id)
                if done is not None:
                    log(f"run {config.run_id} already finished ({done.status}); skipping")
                    results[config.run_id] = done
    todo = [c for c in configs if c.run_id not in results]
    if todo:
        raw = load_dataset(todo[0].dataset, data_dir, download=download, cache_dir=cache_dir)
        datas = [_prepare(c, raw, torch_device, None) for c in todo]
        folders = [RunFolder.of(out_dir, c.run_id) for c in todo]
        for config, data, folder in zip(todo, datas, folders, strict=True):
            folder.load_state(data.corruption_sha256)  # refuse a foreign checkpoint before writing
            log(_describe(config, data))
        with contextlib.ExitStack() as stack:
            for folder in folders:
                stack.enter_context(folder.claim())
            store = stack.enter_context(Store(out_dir))
            states = []
            for config, data, folder in zip(todo, datas, folders, strict=True):
                folder.write_record(config, data)
                _start(store, config, data, torch_device, None)
                prefix = f"[{config.run_id[:8]}]"
                on_epoch = _epoch_writer(stack, out_dir, config.run_id) if tensorboard else None
                states.append(RunState.start(config, data, store, folder.path, on_epoch=on_epoch,
                                             log=lambda line, prefix=prefix: log(f"{prefix} {line}"))[0])
            fit_stack(states)
            results.update({s.config.run_id: s.finish() for s in states})
    return [results[c.run_id] for c in configs]


def _finished(out_dir: Path, run_id: str, *, readonly: bool) -> RunResult | None:
    if not (out_dir / DB_NAME).exists():
        return None
    with Store(out_dir, readonly=readonly) as store:
        return store.finished_result(run_id)


def _prepare(config: RunConfig, raw: Any, device: torch.device, world: World | None) -> RunData:
    """The run's data from the loaded dataset `raw`, on its device, checked against the model and the
    processes before any write."""
    fmt = torch.channels_last if get_model_info(config.model).is_conv else torch.contiguous_format
    data = build_run_data(config, raw, memory_format=fmt, device=device)
    with torch.device("meta"):  # the model accepts this data (e.g. its minimum input)
        create_model(config.model, in_shape=data.in_shape, num_classes=data.num_classes,
                     dropout=config.dropout, width=config.width)
    if world is not None:
        distributed.check_batches(world, len(data.train_y), config.batch_size)
    return data


def _start(store: Store, config: RunConfig, data: RunData, device: torch.device, world: World | None) -> None:
    versions = software_versions(device)
    if world is not None:
        versions["world_size"] = world.size
    store.start_run(config.run_id, config.to_dict(), versions=versions, realized_rate=data.realized_rate,
                    data_hash=data.data_hash, train_size=len(data.train_y), test_size=len(data.test_y))


def _resource_error(store: Store, config: RunConfig, device: torch.device,
                    exc: BaseException) -> ResourceError:
    """Store the run as failed and say what to change."""
    message = (f"out of memory training {config.model} at batch size {config.batch_size} "
               f"({config.precision}, {device})")
    store.mark_failed(config.run_id, config.to_dict(), f"{message}: {exc}")
    return ResourceError(message, f"try --batch-size {max(1, config.batch_size // 2)}"
                         + (" or --precision bf16" if config.precision == "fp32" else "")
                         + "; the rerun resumes from the last epoch")


def _out_of_memory(exc: BaseException) -> bool:
    """CUDA's OutOfMemoryError (a RuntimeError), the CPU allocator's failure, or MemoryError."""
    return isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(exc)


def _silent(_: str) -> None:
    """The log of ranks other than 0: one voice per run."""


TENSORBOARD_SCALARS = ("train_loss", "train_acc", "train_acc_clean", "train_acc_corrupted", "test_loss",
                       "test_acc", "best_test_acc", "lr")


def _epoch_writer(stack: contextlib.ExitStack, out_dir: Path,
                  run_id: str) -> Callable[[dict[str, Any]], None]:
    """The `on_epoch` that writes a run's epoch rows as TensorBoard scalars; closed with `stack`."""
    writer = _tensorboard_writer(out_dir / "tensorboard" / run_id)
    stack.callback(writer.close)
    return functools.partial(_write_scalars, writer)


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


def _describe(config: RunConfig, data: RunData) -> str:
    what = config.corruption + (f" p={config.p:g}" if config.p is not None else "")
    regs = [f"wd={config.weight_decay:g}"] if config.weight_decay else []
    regs += [f"aug={'+'.join(config.augment)}"] if config.augment else []
    regs += [f"dropout={config.dropout:g}"] if config.dropout else []
    width = f" k={config.width}" if config.width else ""
    return (
        f"run {config.run_id}: {config.model}{width} on {config.dataset} "
        f"({len(data.train_y)} train / {len(data.test_y)} test, {data.in_shape[1]}x{data.in_shape[2]}"
        f"x{data.in_shape[0]}), {what}, changed labels {100 * data.realized_rate:.1f}%, "
        f"{config.optimizer} lr {config.effective_lr:g}, batch {config.batch_size}, {config.precision}, "
        f"regularizers: {', '.join(regs) or 'none'}"
    )
