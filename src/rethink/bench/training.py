"""Training benchmarks: throughput (ours vs the idiom), utilization, epoch anatomy, time to fit.

Every figure is measured on real images (a stratified CIFAR-10 subset) with the paper's model
and optimizer, batch 128. "Ours" is `sgd_step` on batches `RunData.train_batch` indexes from
in-memory tensors, the model in the memory format `build_model` gives it: what `rethink run`
executes. The idiom is `rethink.bench.idiom`, starting from the same initial weights.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from rethink.bench.idiom import idiom_evaluate, idiom_loader, idiom_step, with_stock_lrn
from rethink.bench.timing import time_reps
from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.rundata import RunData
from rethink.data.sources import RawDataset
from rethink.models import create_model, get_model_info
from rethink.store import Store
from rethink.train.loop import build_model, paper_sgd, sgd_step
from rethink.train.runner import run

BATCH = 128


@dataclass(frozen=True)
class Setup:
    """One model on one subset: the data as our trainer sees it and the config that built it."""

    config: RunConfig
    data: RunData
    raw_train: torch.Tensor  # the subset's uint8 images, for the idiom's Dataset
    raw_test: torch.Tensor


def setup(
    raw: RawDataset,
    model: str,
    precision: str,
    train_size: int,
    *,
    corruption: str = "true",
    max_epochs: int = 3,
    device: str = "cpu",
) -> Setup:
    config = RunConfig(
        model=model,
        train_size=train_size,
        test_size=min(1000, len(raw.test_labels)),
        corruption=corruption,
        precision=precision,
        max_epochs=max_epochs,
    )
    fmt = torch.channels_last if get_model_info(model).is_conv else torch.contiguous_format
    data = build_run_data(config, raw, memory_format=fmt, device=device)  # resident on the device
    test = raw.test_images if config.test_size is None else raw.test_images[: config.test_size]
    return Setup(config, data, raw.train_images[data.subset], test)


def _idiom_model(s: Setup) -> torch.nn.Module:
    """The config's model as the idiom builds it: the stock LRN, default (NCHW) memory format."""
    return with_stock_lrn(create_model(s.config.model, in_shape=s.data.in_shape,
                                       num_classes=s.data.num_classes, dropout=s.config.dropout))


def _cycle(loader, device: torch.device) -> Iterator:
    while True:
        for xb, yb in loader:
            yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


def _synced(fn, device: torch.device):
    """fn, then wait for the device: wall time on a GPU then covers the queued kernels."""
    if device.type != "cuda":
        return fn

    def run_and_sync() -> None:
        fn()
        torch.cuda.synchronize(device)

    return run_and_sync


def throughput(s: Setup, *, steps: int, reps: int) -> dict[str, Any]:
    """Images/s of `steps` optimizer steps, ours and the idiom's, from the same initial weights;
    plus the FLOPs of one step and a bare step on batches gathered beforehand (no data handling)."""
    config, data = s.config, s.data
    device = data.train_y.device
    ours = build_model(config, data, device)
    initial = copy.deepcopy(ours.state_dict())
    opt = paper_sgd(ours.parameters(), config)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(data.train_y), generator=gen)
    cursor = {"at": 0}

    def our_steps() -> None:
        for _ in range(steps):
            at = cursor["at"] % max(len(order) - BATCH + 1, 1)
            idx = order[at : at + BATCH].to(device)
            cursor["at"] += BATCH
            sgd_step(ours, opt, data.train_batch(idx, gen), data.train_y[idx], config.precision)

    # the bare step: the same step on batches gathered beforehand (no indexing, no augmentation),
    # from its own copy of the initial weights; several batches, since fitting one batch over and
    # over drives the gradients into denormal numbers, which are slow on a CPU
    bare = build_model(config, data, device)
    bare_opt = paper_sgd(bare.parameters(), config)
    fixed = [
        (data.train_x[i : i + BATCH].clone(), data.train_y[i : i + BATCH]) for i in range(0, 8 * BATCH, BATCH)
    ]
    fixed = [(x, y) for x, y in fixed if len(y) == BATCH] or [(data.train_x[:BATCH], data.train_y[:BATCH])]

    def bare_steps() -> None:
        for k in range(steps):
            xb, yb = fixed[k % len(fixed)]
            sgd_step(bare, bare_opt, xb, yb, config.precision)

    ours.train()
    t_ours = time_reps(_synced(our_steps, device), warmup=1, reps=reps)
    bare.train()
    t_bare = time_reps(_synced(bare_steps, device), warmup=1, reps=reps)
    with FlopCounterMode(display=False) as counter:
        sgd_step(bare, bare_opt, *fixed[0], config.precision)
    flops = counter.get_total_flops()

    idiom = _idiom_model(s)
    idiom.load_state_dict(initial)
    idiom.to(device).train()
    idiom_opt = paper_sgd(idiom.parameters(), config)
    loader = idiom_loader(s.raw_train, data.train_y.cpu(), batch_size=BATCH, size=config.input_size)
    batches = _cycle(loader, device)

    def idiom_steps() -> None:
        for _ in range(steps):
            xi, yi = next(batches)
            idiom_step(idiom, idiom_opt, xi, yi, config.precision)

    t_idiom = time_reps(_synced(idiom_steps, device), warmup=1, reps=reps)
    batches.close()
    images = steps * BATCH
    return {
        "ours": t_ours.rate(images),
        "idiom": t_idiom.rate(images),
        "bare_step": t_bare.rate(images),
        "ratio": t_idiom.median / t_ours.median,
        "flops_per_step": flops,
        "steps": steps,
        "reps": reps,
        "achieved_flops": flops * steps / t_ours.median,
    }


def anatomy(
    s: Setup,
    *,
    epochs: int,
    bare_images_per_s: float,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
    train_eval: str = "full",
) -> dict[str, Any]:
    """Where an epoch of `rethink run` goes: the SGD compute (n images at the bare-step rate) against
    the whole epoch (batching, augmentation, full-train-set and test evaluation, checkpoint, database)."""
    config = s.config.replace(max_epochs=epochs + 1, stop_at_fit=False, train_eval=train_eval)
    with tempfile.TemporaryDirectory() as tmp:
        run(
            config,
            out_dir=tmp,
            data_dir=data_dir,
            cache_dir=cache_dir,
            device=str(s.data.train_y.device),
            log=lambda _: None,
        )
        with Store(tmp) as store:
            rows = store.epochs(config.run_id)
    # the first epoch pays one-off warm-up costs, the last always evaluates fully: both left out
    later = rows[1:-1]
    epoch = statistics.median(b["wall_time"] - a["wall_time"] for a, b in zip(rows, rows[1:-1], strict=False))
    compute = len(s.data.train_y) / bare_images_per_s
    return {
        "epoch_s": epoch,
        "compute_s": compute,
        "train_s": statistics.median(r["train_time"] for r in later),
        "eval_s": statistics.median(r["eval_time"] for r in later),
        "outside_share": max(0.0, 1.0 - compute / epoch),
        "epochs": epochs,
        "n": len(s.data.train_y),
        "train_eval": train_eval,
    }


def idiom_anatomy(s: Setup, *, bare_images_per_s: float) -> dict[str, Any]:
    """One idiom epoch: SGD through its loader, then the full training set and the test set through
    loaders (as our epoch evaluates both). The second of two epochs is the one measured."""
    config, data = s.config, s.data
    device = data.train_y.device
    model = _idiom_model(s)
    model.to(device).train()
    opt = paper_sgd(model.parameters(), config)
    train_y = data.train_y.cpu()
    train = idiom_loader(s.raw_train, train_y, batch_size=BATCH, size=config.input_size)
    full = idiom_loader(s.raw_train, train_y, batch_size=1024, shuffle=False, size=config.input_size)
    test = idiom_loader(s.raw_test, data.test_y.cpu(), batch_size=1024, shuffle=False, size=config.input_size)
    walls = []
    for _ in range(2):
        t = time.perf_counter()
        for xb, yb in train:
            idiom_step(model, opt, xb.to(device), yb.to(device), config.precision)
        idiom_evaluate(model, full, config.precision)
        idiom_evaluate(model, test, config.precision)
        walls.append(time.perf_counter() - t)
    compute = len(train_y) / bare_images_per_s
    return {
        "epoch_s": walls[-1],
        "compute_s": compute,
        "outside_share": max(0.0, 1 - compute / walls[-1]),
        "n": len(train_y),
    }


def time_to_fit(
    model: str,
    train_size: int,
    *,
    data_dir: str | Path | None,
    cache_dir: str | Path | None,
    precision: str = "fp32",
    max_epochs: int = 100,
    device: str = "cpu",
) -> dict[str, Any]:
    """Wall time and steps of a real `rethink run` on random labels (stops at 100% train accuracy)."""
    config = RunConfig(
        model=model,
        train_size=train_size,
        test_size=1000,
        corruption="random-labels",
        precision=precision,
        max_epochs=max_epochs,
    )
    with tempfile.TemporaryDirectory() as tmp:
        result = run(
            config, out_dir=tmp, data_dir=data_dir, cache_dir=cache_dir, device=device, log=lambda _: None
        )
    return {
        "model": model,
        "n": train_size,
        "precision": precision,
        "status": result.status,
        "steps_to_fit": result.steps_to_fit,
        "epochs": result.epochs,
        "wall_s": result.wall_time,
        "train_acc": result.train_acc,
        "test_acc": result.test_acc,
    }


@dataclass
class _Member:
    """A run as a stack sees it (rethink.train.stacked.Member)."""

    net: torch.nn.Module
    optimizer: torch.optim.Optimizer
    config: RunConfig


def stacked_runs(s: Setup, *, k: int, steps: int, reps: int, peak_flops: float) -> dict[str, Any]:
    """k runs of one model (different initializations, each its own batches) trained one after
    another with `sgd_step`, beside the same k runs as one stack (`rethink.train.stacked.Stack`, what
    `--stack` trains); images/s summed over the k runs, and the stack's FLOP utilization."""
    from rethink.train.stacked import Stack

    config, data = s.config, s.data
    device = data.train_y.device
    members = []
    for i in range(k):
        net = build_model(config.replace(init_seed=i), data, device)
        members.append(_Member(net, paper_sgd(net.parameters(), config), config))
    gen = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, len(data.train_y), (k, BATCH), generator=gen).to(device)
               for _ in range(steps)]

    def one_after_another() -> None:
        for idx in batches:
            for m, i in zip(members, idx, strict=True):
                sgd_step(m.net, m.optimizer, data.train_x[i], data.train_y[i], config.precision)

    for m in members:
        m.net.train()
    t_seq = time_reps(_synced(one_after_another, device), warmup=1, reps=reps)
    stack = Stack(members, 0, len(data.train_y))

    def stacked() -> None:
        for idx in batches:
            stack.step(data.train_x[idx], data.train_y[idx])

    t_stack = time_reps(_synced(stacked, device), warmup=1, reps=reps)
    with FlopCounterMode(display=False) as counter:
        first = batches[0][0]
        sgd_step(members[0].net, members[0].optimizer, data.train_x[first], data.train_y[first],
                 config.precision)
    flops = counter.get_total_flops()  # one run's step
    return {
        "model": config.model,
        "precision": config.precision,
        "k": k,
        "sequential": t_seq.rate(k * steps * BATCH),
        "stacked": t_stack.rate(k * steps * BATCH),
        "speedup": t_seq.median / t_stack.median,
        "utilization": k * flops * steps / t_stack.median / peak_flops,
    }
