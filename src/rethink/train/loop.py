"""The one training loop every experiment uses: `fit(config, data, store, run_dir)`.

Each epoch runs the same steps in the same order:
  1. set the learning rate from `lr_at(epoch)` (x0.95 decay, see `rethink.config`);
  2. draw the epoch's data order, augmentation and dropout randomness from generators seeded
     by (seed, epoch), so a resumed run continues bit-for-bit as if never stopped;
  3. SGD steps over index batches of in-memory tensors; a non-finite loss stops the run
     with status `diverged`;
  4. evaluate in eval mode over the FULL training set (not a running average, pitfall 9) and
     over the test set; split train accuracy into clean and corrupted examples;
  5. checkpoint, then write the epoch row to the store;
  6. stop when full-train accuracy reaches `fit_threshold` (steps_to_fit) or at max_epochs.

steps_to_fit is the optimizer step count at the end of the first epoch whose full-train
accuracy reaches the threshold: its resolution is one epoch.
"""

from __future__ import annotations

import contextlib
import hashlib
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
from rethink.data.pipeline import RunData
from rethink.errors import CheckpointError
from rethink.models import create_model, get_model_info, initialize
from rethink.store import Store
from rethink.train.checkpoint import load_checkpoint, save_checkpoint

EVAL_BATCH = 1024


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


def derive_seed(seed: int, *keys: object) -> int:
    """An independent 63-bit seed for (seed, purpose, epoch...): no shared global RNG streams."""
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


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
             precision: str) -> float:
    """One optimizer step on a batch (model in train mode); returns the loss. A non-finite loss
    takes no step. `rethink bench` times exactly this."""
    with autocast_for(precision, xb.device):
        loss = F.cross_entropy(model(xb), yb)
    value = loss.item()
    if not math.isfinite(value):
        return value
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


@torch.no_grad()
def evaluate(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str
) -> tuple[float, torch.Tensor]:
    """Mean cross-entropy and the per-example correctness (bool) over all of (x, y), eval mode."""
    model.eval()
    loss_sum = 0.0
    correct = torch.empty(len(y), dtype=torch.bool, device=y.device)
    with autocast_for(precision, x.device):
        for start in range(0, len(y), EVAL_BATCH):
            logits = model(x[start : start + EVAL_BATCH]).float()
            target = y[start : start + EVAL_BATCH]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            correct[start : start + EVAL_BATCH] = logits.argmax(1) == target
    return loss_sum / max(len(y), 1), correct


@torch.no_grad()
def screen_fit(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str, suspects: torch.Tensor,
               max_wrong: int) -> tuple[float, torch.Tensor] | None:
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
    with autocast_for(precision, x.device):
        for start in range(0, len(y), EVAL_BATCH):
            idx = order[start : start + EVAL_BATCH]
            logits, target = model(x[idx]).float(), y[idx]
            loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
            right = logits.argmax(1) == target
            correct[idx], suspects[idx] = right, ~right
            wrong += int((~right).sum())
            if wrong > max_wrong:
                return None
    return loss_sum / max(len(y), 1), correct


def _mean(mask: torch.Tensor) -> float | None:
    return float(mask.float().mean()) if mask.numel() else None


def fit(
    config: RunConfig,
    data: RunData,
    store: Store,
    run_dir: Path,
    *,
    log: Callable[[str], None] = print,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> RunResult:
    """Train one run to fit or to max_epochs, checkpointing every epoch; resume if possible.

    `on_epoch(row)` is called with each epoch's metrics once they are stored (e.g. TensorBoard).
    """
    run_id = config.run_id
    device = data.train_y.device
    n = len(data.train_y)
    model = build_model(config, data, device)
    optimizer = paper_sgd(model.parameters(), config)

    history: list[dict[str, Any]] = []
    start_epoch, step, wall_before = 0, 0, 0.0
    ckpt_path = run_dir / "checkpoint.pt"
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path, run_id)
        if state["corruption_sha256"] != data.corruption_sha256:
            raise CheckpointError(
                f"checkpoint {ckpt_path} was trained on other data than this corruption seed gives",
                "delete the run folder to restart it",
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        history, start_epoch, step = list(state["history"]), state["epoch"], state["step"]
        wall_before = state["wall_time"]
        store.replace_epochs(run_id, history)
        log(f"resuming run {run_id} after epoch {start_epoch} (step {step})")

    steps_to_fit = next(
        (row["step"] for row in history
         if row["train_acc"] is not None and row["train_acc"] >= config.fit_threshold), None
    )
    suspects = torch.ones(n, dtype=torch.bool, device=device)  # for screened evaluation
    max_wrong = math.floor((1 - config.fit_threshold) * n + 1e-9)
    best_test = max((row["test_acc"] for row in history), default=0.0)
    clean, corrupted = ~data.changed, data.changed
    t_start = time.perf_counter()
    status, message = "not-fitted", ""

    def elapsed() -> float:
        return wall_before + time.perf_counter() - t_start

    for epoch in range(start_epoch, config.max_epochs):
        if steps_to_fit is not None and config.stop_at_fit:
            break
        # 1. learning rate, a pure function of the epoch
        lr = lr_at(config, epoch, n)
        for group in optimizer.param_groups:
            group["lr"] = lr
        # 2. this epoch's randomness, derived from the seeds and the epoch number only
        order = torch.randperm(n, generator=_generator(config.data_seed, "order", epoch))
        augment_gen = _generator(config.data_seed, "augment", epoch)
        torch.manual_seed(derive_seed(config.init_seed, "dropout", epoch))
        # 3. the SGD steps
        model.train()
        t_epoch = time.perf_counter()
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size].to(device)
            loss = sgd_step(model, optimizer, data.train_batch(idx, augment_gen), data.train_y[idx],
                            config.precision)
            if not math.isfinite(loss):
                status, message = "diverged", f"loss became {loss} at step {step + 1}"
                break
            step += 1
        if status == "diverged":
            break
        # 4. full-train-set (or screened, see RunConfig.train_eval) and test evaluation, eval mode
        t_eval = time.perf_counter()
        if config.train_eval == "screen" and epoch + 1 < config.max_epochs:
            train = screen_fit(model, data.train_x, data.train_y, config.precision, suspects, max_wrong)
        else:
            train = evaluate(model, data.train_x, data.train_y, config.precision)
        test_loss, test_correct = evaluate(model, data.test_x, data.test_y, config.precision)
        test_acc = _mean(test_correct)
        t_done = time.perf_counter()
        train_loss, train_correct = train if train is not None else (None, None)
        train_acc = _mean(train_correct) if train_correct is not None else None
        best_test = max(best_test, test_acc)
        if steps_to_fit is None and train_acc is not None and train_acc >= config.fit_threshold:
            steps_to_fit = step
        row = {
            "epoch": epoch + 1,
            "step": step,
            "lr": lr,
            "train_loss": train_loss,  # None: a screened epoch that certainly did not fit
            "train_acc": train_acc,
            "train_acc_clean": _mean(train_correct[clean]) if train_correct is not None else None,
            "train_acc_corrupted": _mean(train_correct[corrupted]) if train_correct is not None else None,
            "test_loss": test_loss,
            "test_acc": test_acc,
            "best_test_acc": best_test,
            "wall_time": elapsed(),
            "train_time": t_eval - t_epoch,  # the SGD steps alone: throughput = n / train_time
            "eval_time": t_done - t_eval,
        }
        history.append(row)
        # 5. checkpoint first: it is the source of truth a resume rebuilds the store from
        save_checkpoint(
            ckpt_path,
            {
                "run_id": run_id,
                "epoch": epoch + 1,
                "step": step,
                "wall_time": row["wall_time"],
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "history": history,
                "corruption_sha256": data.corruption_sha256,
            },
        )
        store.write_epoch(run_id, row)
        if on_epoch is not None:
            on_epoch(row)
        log(_epoch_line(row, config.max_epochs, data.changed.any().item()))
        if train_loss is not None and not math.isfinite(train_loss):
            status, message = "diverged", f"train loss became {train_loss} after step {step}"
            break

    if status != "diverged":
        status = "fitted" if steps_to_fit is not None else "not-fitted"
    last = history[-1] if history else {}
    result = RunResult(
        run_id=run_id,
        status=status,
        epochs=len(history),
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
    store.finish_run(run_id, status, result.summary())
    return result


def _generator(seed: int, *keys: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


def _epoch_line(row: dict[str, Any], max_epochs: int, split: bool) -> str:
    train = (f"train loss {row['train_loss']:.4f} acc {100 * row['train_acc']:6.2f}%"
             if row["train_acc"] is not None else "train: not fitted (screened)          ")
    line = (
        f"epoch {row['epoch']:>3}/{max_epochs}  step {row['step']:>6}  lr {row['lr']:.2e}  {train}  "
        f"test loss {row['test_loss']:.4f} acc {100 * row['test_acc']:6.2f}%"
    )
    if split and row["train_acc_clean"] is not None:
        line += (
            f"  [clean {100 * row['train_acc_clean']:.1f}% / "
            f"corrupted {100 * row['train_acc_corrupted']:.1f}%]"
        )
    return line + f"  {row['wall_time']:.0f}s"
