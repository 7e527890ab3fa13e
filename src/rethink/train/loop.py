"""The one training loop every experiment uses: `fit(config, data, store, run_dir)`.

Each epoch runs the same steps in the same order:
  1. set the learning rate from `lr_at(epoch)` (x0.95 decay, see `rethink.config`);
  2. draw the epoch's data order, augmentation and dropout randomness from generators seeded
     by (seed, epoch), so a resumed run continues bit-for-bit as if never stopped;
  3. SGD steps over index batches of in-memory tensors; a non-finite loss stops the run
     with status `diverged`;
  4. evaluate in eval mode over the FULL training set (not the running average over the
     epoch's batches, which lags a fit) and over the test set; split train accuracy into
     clean and corrupted examples;
  5. checkpoint, then write the epoch row to the store;
  6. stop when full-train accuracy reaches `fit_threshold` (steps_to_fit), or `epochs_past_fit`
     epochs after that (to see what early stopping could gain), or at max_epochs.

Before the first epoch the initial network is evaluated the same way and stored as epoch 0
(step 0), so every learning curve starts where training starts.

The same loop trains one run over several processes (torchrun, `rethink.train.distributed`):
each rank steps on its shard of every global batch and evaluates its shard of each split.

steps_to_fit is the optimizer step count at the end of the first epoch whose full-train
accuracy reaches the threshold: its resolution is one epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rethink.config import RunConfig, lr_at
from rethink.data.rundata import RunData
from rethink.errors import CheckpointError
from rethink.faults import failpoint
from rethink.models import create_model, get_model_info, initialize
from rethink.seeds import derive_seed, seeded_generator
from rethink.store import Store
from rethink.train import distributed
from rethink.train.checkpoint import load_checkpoint, save_checkpoint
from rethink.train.distributed import World

EVAL_BATCH = 1024
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class RunResult:
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
        return {k: getattr(self, k) for k in self.__dataclass_fields__ if k not in ("run_id", "status")}


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build_model(config: RunConfig, data: RunData, device: torch.device) -> nn.Module:
    """The model, initialized from the init seed alone, in the memory format its family wants."""
    torch.manual_seed(derive_seed(config.init_seed, "init"))
    model = create_model(
        config.model, in_shape=data.in_shape, num_classes=data.num_classes, dropout=config.dropout
    )
    initialize(model, config.init)
    fmt = torch.channels_last if get_model_info(config.model).is_conv else torch.contiguous_format
    return model.to(device=device, memory_format=fmt)


def paper_sgd(params, config: RunConfig) -> torch.optim.SGD:
    """The paper's optimizer: SGD with the config's momentum and weight decay, at the initial
    learning rate (training loops set each epoch's rate with `lr_at`)."""
    return torch.optim.SGD(params, lr=config.effective_lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, xb: torch.Tensor, yb: torch.Tensor,
             precision: str, *, world: World | None = None, global_batch: int = 0) -> float:
    """One optimizer step on a batch (model in train mode); returns the batch's mean loss. A
    non-finite loss takes no step. `rethink bench` times exactly this.

    Data-parallel (`world`): (xb, yb) is this rank's shard of a global batch of `global_batch`
    examples; the loss summed over ranks is the global batch mean (see `rethink.train.distributed`),
    and every rank sees the same value, so all of them take the step or none does.
    """
    with autocast_for(precision, xb.device):
        if world is None:
            loss = F.cross_entropy(model(xb), yb)
        else:
            loss_sum = F.cross_entropy(model(xb), yb, reduction="sum")
    if world is None:
        value = loss.item()
    else:
        value = distributed.all_reduce_sum(loss_sum.detach().float().clone()).item() / global_batch
        loss = loss_sum * (world.size / global_batch)  # DDP averages gradients over the ranks
    if not math.isfinite(value):
        return value
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


@dataclass(frozen=True)
class Evaluation:
    """One eval-mode pass over a split."""

    loss: float  # mean cross-entropy
    correct: torch.Tensor  # bool per example: the argmax is the label (top-1)
    top5: torch.Tensor | None  # bool per example: the label is among the 5 largest logits; None
    # with 5 classes or fewer, where it is always true

    @property
    def acc(self) -> float | None:
        return _mean(self.correct)

    @property
    def top5_acc(self) -> float | None:
        return _mean(self.top5) if self.top5 is not None else None


def in_top5(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per example: the target is among the five largest logits."""
    return (logits.topk(5, dim=1).indices == target[:, None]).any(1)


@torch.no_grad()
def _evaluate_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
                   rows: slice) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Summed cross-entropy, top-1 and top-5 correctness of the examples in `rows`.

    `x` is only ever sliced, so it may be a lazy view that loads and prepares each chunk."""
    model.eval()
    n = rows.stop - rows.start
    loss_sum = 0.0
    correct = torch.zeros(n, dtype=torch.bool, device=y.device)
    top5 = torch.zeros(n, dtype=torch.bool, device=y.device)
    with autocast_for(precision, y.device):
        for start in range(rows.start, rows.stop, EVAL_BATCH):
            stop = min(start + EVAL_BATCH, rows.stop)
            logits, target = model(x[start:stop]).float(), y[start:stop]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            correct[start - rows.start : stop - rows.start] = logits.argmax(1) == target
            if logits.shape[1] > 5:
                top5[start - rows.start : stop - rows.start] = in_top5(logits, target)
    return loss_sum, correct, top5


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, *, top5: bool = False,
             world: World | None = None) -> Evaluation:
    """Mean cross-entropy and per-example top-1 (and, with `top5`, top-5) correctness over all of
    (x, y), in eval mode.

    Data-parallel (`world`): each rank evaluates its shard and the results are summed over ranks,
    so every rank gets the same whole-split Evaluation.
    """
    n = len(y)
    if world is None:
        loss_sum, correct, right5 = _evaluate_rows(model, x, y, precision, slice(0, n))
        return Evaluation(loss_sum / max(n, 1), correct, right5 if top5 else None)
    rows = world.shard(n)
    loss_sum, part, part5 = _evaluate_rows(model, x, y, precision, rows)
    # each rank fills its rows of a zero vector; the sum over ranks is the whole split
    counts = torch.zeros(2, n, dtype=torch.int32, device=y.device)
    counts[0, rows], counts[1, rows] = part.int(), part5.int()
    distributed.all_reduce_sum(counts)
    total = distributed.all_reduce_sum(torch.tensor([loss_sum], dtype=torch.float64, device=y.device))
    return Evaluation(float(total) / max(n, 1), counts[0].bool(), counts[1].bool() if top5 else None)


@torch.no_grad()
def screen_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, suspects: torch.Tensor,
               max_wrong: int, *, top5: bool = False) -> Evaluation | None:
    """`evaluate` over (x, y), suspects first, stopping early once more than `max_wrong` examples
    are wrong: None then (the accuracy is certainly below 1 - max_wrong / n), else the full result.

    `suspects` (bool, per example) is updated in place with what was seen: wrong examples stay
    first in line for the next epoch. Chunks hold other examples than `evaluate`'s batches, which
    can change float rounding in the last bits, not which examples are evaluated.
    """
    model.eval()
    order = torch.cat([suspects.nonzero().squeeze(1), (~suspects).nonzero().squeeze(1)])
    loss_sum, wrong = 0.0, 0
    correct = torch.empty(len(y), dtype=torch.bool, device=y.device)
    right5 = torch.zeros(len(y), dtype=torch.bool, device=y.device)
    with autocast_for(precision, y.device):
        for start in range(0, len(y), EVAL_BATCH):
            idx = order[start : start + EVAL_BATCH]
            logits, target = model(x[idx]).float(), y[idx]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            right = logits.argmax(1) == target
            correct[idx], suspects[idx] = right, ~right
            if top5:
                right5[idx] = in_top5(logits, target)
            wrong += int((~right).sum())
            if wrong > max_wrong:
                return None
    return Evaluation(loss_sum / max(len(y), 1), correct, right5 if top5 else None)


def _mean(mask: torch.Tensor) -> float | None:
    return float(mask.float().mean()) if mask.numel() else None


def resume_state(run_dir: Path, run_id: str, corruption_sha256: str) -> dict[str, Any] | None:
    """The run's checkpoint, checked (checksum, run id, and the corrupted data it was trained on),
    or None when there is none yet. Raises CheckpointError for one that cannot be resumed."""
    path = run_dir / CHECKPOINT
    if not path.exists():
        return None
    state = load_checkpoint(path, run_id)
    if state["corruption_sha256"] != corruption_sha256:
        raise CheckpointError(f"checkpoint {path} was trained on other data than this corruption seed gives",
                              "delete the run folder to restart it")
    return state


def fit(
    config: RunConfig,
    data: RunData,
    store: Store | None,
    run_dir: Path,
    *,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    world: World | None = None,
) -> RunResult:
    """Train one run to fit or to max_epochs, checkpointing every epoch; resume if possible.

    `on_epoch(row)` is called with each epoch's metrics once they are stored (e.g. TensorBoard).
    With `world` (data-parallel, see `rethink.train.distributed`) every rank calls this; only the
    main rank writes: the others pass `store=None` and never touch the checkpoint.
    """
    run_id = config.run_id
    device = data.train_y.device
    n = len(data.train_y)
    writes = world is None or world.is_main
    net = build_model(config, data, device)  # the module itself: evaluated, checkpointed
    model = net if world is None else _data_parallel(net, device)  # what the SGD steps run
    optimizer = paper_sgd(model.parameters(), config)
    top5 = data.num_classes > 5

    history: list[dict[str, Any]] = []
    start_epoch, step, wall_before = 0, 0, 0.0
    state = resume_state(run_dir, run_id, data.corruption_sha256)
    if state is not None:
        net.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, step = list(state["history"]), state["epoch"], state["step"]
        wall_before = state["wall_time"]
        if store is not None:
            store.replace_epochs(run_id, history)
        log(f"resuming run {run_id} after epoch {start_epoch} (step {step})")

    steps_to_fit = next(
        (row["step"] for row in history
         if row["train_acc"] is not None and row["train_acc"] >= config.fit_threshold), None
    )
    suspects = torch.ones(n, dtype=torch.bool, device=device)  # for screened evaluation
    max_wrong = math.floor((1 - config.fit_threshold) * n + 1e-9)
    trained = [row for row in history if row["epoch"] > 0]
    best_test = max((row["test_acc"] for row in trained), default=0.0)
    best_top5 = max((row.get("test_top5") or 0.0 for row in trained), default=0.0)
    clean, corrupted = ~data.changed, data.changed
    t_start = time.perf_counter()
    status, message = "not-fitted", ""

    def elapsed() -> float:
        return wall_before + time.perf_counter() - t_start

    if not history:  # epoch 0: the initial network, so that every curve starts at step 0
        lr0 = lr_at(config, 0, n)
        train = evaluate(net, data.train_x, data.train_y, config.precision, top5=top5, world=world)
        test = evaluate(net, data.test_x, data.test_y, config.precision, top5=top5, world=world)
        # no best test accuracy yet: the cumulative best (early stopping's gain) is over trained epochs
        row = _epoch_row(0, 0, lr0, train, test, None, None, clean, corrupted,
                         wall_time=elapsed(), train_time=0.0, eval_time=time.perf_counter() - t_start)
        history.append(row)
        if store is not None:
            store.write_epoch(run_id, row)  # not checkpointed: a run killed now starts afresh
        if on_epoch is not None:
            on_epoch(row)
        log(_epoch_line(row, config.max_epochs, data.changed.any().item()))
        if row["train_acc"] >= config.fit_threshold:
            steps_to_fit = 0

    for epoch in range(start_epoch, config.max_epochs):
        if steps_to_fit is not None and config.stop_at_fit and \
                epoch >= _fit_epoch(history, config.fit_threshold) + config.epochs_past_fit:
            break
        # 1. learning rate, a pure function of the epoch
        lr = lr_at(config, epoch, n)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # 2. this epoch's randomness, derived from the seeds and the epoch number only (dropout's
        # also from the rank, so that ranks do not draw the same masks)
        order = torch.randperm(n, generator=seeded_generator(config.data_seed, "order", epoch))
        augment_gen = seeded_generator(config.data_seed, "augment", epoch)
        rank_key = () if world is None else (world.rank,)
        torch.manual_seed(derive_seed(config.init_seed, "dropout", epoch, *rank_key))
        # 3. the SGD steps
        model.train()
        t_epoch = time.perf_counter()
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size].to(device)
            if world is None:
                xb, yb = data.train_batch(idx, augment_gen), data.train_y[idx]
            else:  # this rank's shard of the global batch (augmented as one process would)
                mine = world.shard(len(idx))
                xb = data.train_batch(idx, augment_gen)[mine] if data.augment else \
                    data.train_batch(idx[mine], augment_gen)
                yb = data.train_y[idx[mine]]
            loss = sgd_step(model, optimizer, xb, yb, config.precision, world=world, global_batch=len(idx))
            if not math.isfinite(loss):
                status, message = "diverged", f"loss became {loss} at step {step + 1}"
                break
            step += 1
            failpoint("step")
        if status == "diverged":
            break
        # 4. full-train-set (or screened, see RunConfig.train_eval) and test evaluation, eval mode
        t_eval = time.perf_counter()
        if config.train_eval == "screen" and epoch + 1 < config.max_epochs and world is None:
            train = screen_fit(net, data.train_x, data.train_y, config.precision, suspects, max_wrong,
                               top5=top5)
        else:
            train = evaluate(net, data.train_x, data.train_y, config.precision, top5=top5, world=world)
        test = evaluate(net, data.test_x, data.test_y, config.precision, top5=top5, world=world)
        t_done = time.perf_counter()
        train_acc = train.acc if train is not None else None
        best_test = max(best_test, test.acc)
        if top5:
            best_top5 = max(best_top5, test.top5_acc)
        if steps_to_fit is None and train_acc is not None and train_acc >= config.fit_threshold:
            steps_to_fit = step
        row = _epoch_row(epoch + 1, step, lr, train, test, best_test, best_top5 if top5 else None,
                         clean, corrupted, wall_time=elapsed(), train_time=t_eval - t_epoch,
                         eval_time=t_done - t_eval)
        history.append(row)
        # 5. checkpoint first: it is the source of truth a resume rebuilds the store from
        if writes:
            save_checkpoint(
                run_dir / CHECKPOINT,
                {
                    "run_id": run_id,
                    "epoch": epoch + 1,
                    "step": step,
                    "wall_time": row["wall_time"],
                    "model": net.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "history": history,
                    "corruption_sha256": data.corruption_sha256,
                },
            )
        if store is not None:
            store.write_epoch(run_id, row)
            failpoint("epoch-stored")
        if on_epoch is not None:
            on_epoch(row)
        log(_epoch_line(row, config.max_epochs, data.changed.any().item()))
        if row["train_loss"] is not None and not math.isfinite(row["train_loss"]):
            status, message = "diverged", f"train loss became {row['train_loss']} after step {step}"
            break

    if status != "diverged":
        status = "fitted" if steps_to_fit is not None else "not-fitted"
    last = history[-1] if history else {}
    result = RunResult(
        run_id=run_id,
        status=status,
        epochs=sum(1 for row in history if row["epoch"] > 0),
        steps=step,
        steps_to_fit=steps_to_fit,
        train_loss=last.get("train_loss", math.nan),
        train_acc=last.get("train_acc", math.nan),
        test_loss=last.get("test_loss", math.nan),
        test_acc=last.get("test_acc", math.nan),
        best_test_acc=best_test,
        wall_time=elapsed(),
        message=message,
    )
    if store is not None:
        store.finish_run(run_id, status, result.summary())
    return result


def _fit_epoch(history: list[dict[str, Any]], threshold: float) -> int:
    """The first epoch whose full-train accuracy reached the threshold (0: the initial network)."""
    return next(row["epoch"] for row in history
                if row["train_acc"] is not None and row["train_acc"] >= threshold)


def _epoch_row(epoch: int, step: int, lr: float, train: Any, test: Any, best_test: float | None,
               best_top5: float | None, clean: torch.Tensor, corrupted: torch.Tensor, *,
               wall_time: float, train_time: float, eval_time: float) -> dict[str, Any]:
    """One epoch's stored metrics; `train` is None for a screened epoch that certainly did not fit."""
    return {
        "epoch": epoch,
        "step": step,
        "lr": lr,
        "train_loss": train.loss if train is not None else None,
        "train_acc": train.acc if train is not None else None,
        "train_acc_clean": _mean(train.correct[clean]) if train is not None else None,
        "train_acc_corrupted": _mean(train.correct[corrupted]) if train is not None else None,
        "test_loss": test.loss,
        "test_acc": test.acc,
        "best_test_acc": best_test,
        "wall_time": wall_time,
        "train_time": train_time,  # the SGD steps alone: throughput = n / train_time
        "eval_time": eval_time,
        "train_top5": train.top5_acc if train is not None else None,
        "test_top5": test.top5_acc,
        "best_test_top5": best_top5,
    }


def _data_parallel(net: nn.Module, device: torch.device) -> nn.Module:
    """DDP over the process group; it starts every rank from rank 0's weights (equal anyway)."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)


def _epoch_line(row: dict[str, Any], max_epochs: int, split: bool) -> str:
    train = (f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:6.2f}%"
             if row["train_acc"] is not None else "train: not fitted (screened)          ")
    line = (
        f"epoch {row['epoch']:>3}/{max_epochs}  step {row['step']:>6}  lr {row['lr']:.2e}  {train}  "
        f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:6.2f}%"
    )
    if row.get("test_top5") is not None:
        line += f" (top-5 {100 * row['test_top5']:.2f}%)"
    if split and row["train_acc_clean"] is not None:
        line += (
            f"  [clean {100 * row['train_acc_clean']:.1f}% / "
            f"corrupted {100 * row['train_acc_corrupted']:.1f}%]"
        )
    return line + f"  {row['wall_time']:.0f}s"
