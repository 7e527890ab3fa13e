"""The one training loop every experiment uses: `fit(config, data, store, run_dir)`.

It reads as the paper's protocol. Before the first epoch the initial network is evaluated and
stored as epoch 0 (step 0), so every learning curve starts where training starts. Then each
epoch:
  1. `train_epoch`: the learning rate from `lr_at(epoch)` (x0.95 decay, see `rethink.config`),
     the epoch's data order, augmentation and dropout randomness from generators seeded by
     (seed, epoch), so a resumed run continues bit-for-bit as if never stopped; SGD steps over
     index batches of in-memory tensors; a non-finite loss stops the run with status `diverged`;
  2. `evaluate_epoch`: eval mode over the FULL training set (not the running average over the
     epoch's batches, which lags a fit) and over the test set; train accuracy split into clean
     and corrupted examples;
  3. `save_state`: checkpoint, then the epoch row in the store;
  4. stop when full-train accuracy reaches `fit_threshold` (steps_to_fit), or `epochs_past_fit`
     epochs after that (to see what early stopping could gain), or at max_epochs.

steps_to_fit is the optimizer step count at the end of the first epoch whose full-train
accuracy reaches the threshold: its resolution is one epoch.

The same loop trains one run over several processes (torchrun): what differs is behind
`rethink.train.replicas` (each rank steps on its shard of every global batch and evaluates its
shard of each split; only rank 0 writes).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rethink.config import RunConfig, lr_at
from rethink.data.rundata import RunData
from rethink.faults import failpoint
from rethink.metrics import EpochRow, RunResult
from rethink.models import create_model, get_model_info, initialize
from rethink.seeds import derive_seed, seeded_generator
from rethink.store import Store
from rethink.train.distributed import World
from rethink.train.evaluation import Evaluation, autocast_for, mean, screen_fit
from rethink.train.replicas import ONE_PROCESS, Loss, Replicas, replicas_for
from rethink.train.run_folder import RunFolder


def build_model(config: RunConfig, data: RunData, device: torch.device) -> nn.Module:
    """The model, initialized from the init seed alone, in the memory format its family wants."""
    torch.manual_seed(derive_seed(config.init_seed, "init"))
    model = create_model(config.model, in_shape=data.in_shape, num_classes=data.num_classes,
                         dropout=config.dropout, width=config.width)
    initialize(model, config.init)
    fmt = torch.channels_last if get_model_info(config.model).is_conv else torch.contiguous_format
    return model.to(device=device, memory_format=fmt)


def paper_sgd(params, config: RunConfig) -> torch.optim.SGD:
    """The paper's optimizer: SGD with the config's momentum and weight decay, at the initial
    learning rate (training loops set each epoch's rate with `lr_at`)."""
    return torch.optim.SGD(params, lr=config.effective_lr, momentum=config.momentum,
                           weight_decay=config.weight_decay)


def make_optimizer(params, config: RunConfig) -> torch.optim.Optimizer:
    """The config's optimizer: the paper's SGD, or Adam (PyTorch's betas and eps, as Nakkiran et
    al. train their width families) with the config's L2 weight decay, at the initial rate."""
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.effective_lr, weight_decay=config.weight_decay)
    return paper_sgd(params, config)


def sgd_step(model: nn.Module, optimizer: torch.optim.Optimizer, xb: Tensor, yb: Tensor, precision: str,
             *, loss_fn: Loss = F.cross_entropy, replicas: Replicas = ONE_PROCESS,
             global_batch: int = 0) -> float:
    """One optimizer step on a batch (model in train mode); returns the batch's mean loss. A
    non-finite loss takes no step. `rethink bench` times exactly this. Data-parallel, (xb, yb) is
    this rank's shard of a global batch of `global_batch` examples (`rethink.train.replicas`)."""
    with autocast_for(precision, xb.device):
        loss, value = replicas.loss(loss_fn, model(xb), yb, global_batch)
    if not math.isfinite(value):
        return value
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return value


@dataclass
class Progress:
    """Where a run stands: steps taken, the rows so far, the fit, the best test accuracies."""

    step: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    steps_to_fit: int | None = None
    best_test: float = 0.0
    best_top5: float = 0.0
    wall_before: float = 0.0  # training time of earlier processes (a resumed run)
    status: str = "not-fitted"
    message: str = ""

    def fit_epoch(self, threshold: float) -> int:
        """The first epoch whose full-train accuracy reached the threshold (0: the initial network)."""
        return next(row["epoch"] for row in self.history
                    if row["train_acc"] is not None and row["train_acc"] >= threshold)

    def done(self, config: RunConfig, epoch: int) -> bool:
        return self.steps_to_fit is not None and config.stop_at_fit and \
            epoch >= self.fit_epoch(config.fit_threshold) + config.epochs_past_fit


def train_epoch(model: nn.Module, optimizer: torch.optim.Optimizer, config: RunConfig, epoch: int, n: int,
                batches: Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor]], *,
                loss_fn: Loss = F.cross_entropy, replicas: Replicas = ONE_PROCESS,
                on_step: Callable[[], None] | None = None) -> tuple[int, float | None]:
    """One epoch of the paper's SGD over n examples: (steps taken, the non-finite loss that stopped
    it or None). `batches(idx, generator)` gives the batch of examples `idx`."""
    lr = lr_at(config, epoch, n)  # a pure function of the epoch
    for group in optimizer.param_groups:
        group["lr"] = lr
    # this epoch's randomness, from the seeds and the epoch number only (dropout's also from the
    # rank, so that ranks do not draw the same masks)
    order = torch.randperm(n, generator=seeded_generator(config.data_seed, "order", epoch))
    augment_gen = seeded_generator(config.data_seed, "augment", epoch)
    torch.manual_seed(derive_seed(config.init_seed, "dropout", epoch, *replicas.rank_key))
    model.train()
    steps = 0
    for start in range(0, n, config.batch_size):
        idx = order[start : start + config.batch_size]
        xb, yb = batches(idx, augment_gen)
        loss = sgd_step(model, optimizer, xb, yb, config.precision, loss_fn=loss_fn, replicas=replicas,
                        global_batch=len(idx))
        if not math.isfinite(loss):
            return steps, loss
        steps += 1
        if on_step is not None:
            on_step()
    return steps, None


def evaluate_epoch(net: nn.Module, config: RunConfig, data: RunData, replicas: Replicas, *, screen: bool,
                   suspects: Tensor) -> tuple[Evaluation | None, Evaluation]:
    """(train, test) evaluations in eval mode; train is None for a screened epoch that certainly did
    not fit (see RunConfig.train_eval)."""
    top5 = data.num_classes > 5
    if screen:
        max_wrong = math.floor((1 - config.fit_threshold) * len(data.train_y) + 1e-9)
        train = screen_fit(net, data.train_x, data.train_y, config.precision, suspects, max_wrong, top5=top5)
    else:
        train = replicas.evaluate(net, data.train_x, data.train_y, config.precision, top5)
    return train, replicas.evaluate(net, data.test_x, data.test_y, config.precision, top5)


def epoch_row(epoch: int, progress: Progress, lr: float, train: Evaluation | None, test: Evaluation,
              data: RunData, *, top5: bool, wall_time: float, train_time: float,
              eval_time: float) -> EpochRow:
    """One epoch's stored metrics; the best test accuracies are over trained epochs (None at 0)."""
    clean, corrupted = ~data.changed, data.changed
    return EpochRow(
        epoch=epoch, step=progress.step, lr=lr,
        train_loss=train.loss if train is not None else None,
        train_acc=train.acc if train is not None else None,
        train_acc_clean=mean(train.correct[clean]) if train is not None else None,
        train_acc_corrupted=mean(train.correct[corrupted]) if train is not None else None,
        test_loss=test.loss, test_acc=test.acc,
        best_test_acc=progress.best_test if epoch > 0 else None,
        wall_time=wall_time, train_time=train_time, eval_time=eval_time,
        train_top5=train.top5_acc if train is not None else None,
        test_top5=test.top5_acc,
        best_test_top5=progress.best_top5 if epoch > 0 and top5 else None,
    )


def save_state(folder: RunFolder, net: nn.Module, optimizer: torch.optim.Optimizer, progress: Progress,
               data: RunData) -> None:
    """The checkpoint after an epoch: the source of truth a resume rebuilds the store from."""
    last = progress.history[-1]
    folder.save_state({"epoch": last["epoch"], "step": progress.step, "wall_time": last["wall_time"],
                       "model": net.state_dict(), "optimizer": optimizer.state_dict(),
                       "history": progress.history, "corruption_sha256": data.corruption_sha256})


def resume(folder: RunFolder, net: nn.Module, optimizer: torch.optim.Optimizer, data: RunData,
           config: RunConfig) -> tuple[Progress, int]:
    """The progress stored in the run's checkpoint (and the epoch to continue from), or a fresh start."""
    state = folder.load_state(data.corruption_sha256)
    if state is None:
        return Progress(), 0
    net.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    history = list(state["history"])
    trained = [row for row in history if row["epoch"] > 0]
    progress = Progress(
        step=state["step"], history=history, wall_before=state["wall_time"],
        steps_to_fit=next((row["step"] for row in history if row["train_acc"] is not None
                           and row["train_acc"] >= config.fit_threshold), None),
        best_test=max((row["test_acc"] for row in trained), default=0.0),
        best_top5=max((row.get("test_top5") or 0.0 for row in trained), default=0.0),
    )
    return progress, state["epoch"]


@dataclass
class RunState:
    """One run while it trains: its data, network, optimizer and progress, and where it writes.

    `fit` trains one RunState epoch by epoch; `rethink.train.stacked` trains several at once and
    hands each its epoch's evaluation and record through the same methods, so a stacked run is
    stored exactly as a plain one."""

    config: RunConfig
    data: RunData
    store: Store | None
    folder: RunFolder
    net: nn.Module  # the module itself: evaluated, checkpointed
    optimizer: torch.optim.Optimizer
    replicas: Replicas
    progress: Progress
    next_epoch: int  # the (0-based) epoch it trains next
    log: Callable[[str], None]
    on_epoch: Callable[[dict[str, Any]], None] | None
    suspects: Tensor  # for the screened evaluation
    t_start: float = field(default_factory=time.perf_counter)

    @classmethod
    def start(cls, config: RunConfig, data: RunData, store: Store | None, run_dir: Path, *,
              log: Callable[[str], None] = print, on_epoch: Callable[[dict[str, Any]], None] | None = None,
              replicas: Replicas = ONE_PROCESS) -> tuple[RunState, nn.Module]:
        """The run resumed from its checkpoint (or fresh, with epoch 0 recorded), and the module
        the SGD steps run (the network, or its data-parallel wrapper)."""
        folder, device = RunFolder(Path(run_dir)), data.train_y.device
        net = build_model(config, data, device)
        model = replicas.wrap(net)
        optimizer = make_optimizer(model.parameters(), config)
        progress, start_epoch = resume(folder, net, optimizer, data, config)
        if start_epoch:
            if store is not None:
                store.replace_epochs(config.run_id, progress.history)
            log(f"resuming run {config.run_id} after epoch {start_epoch} (step {progress.step})")
        state = cls(config, data, store, folder, net, optimizer, replicas, progress, start_epoch, log,
                    on_epoch, torch.ones(len(data.train_y), dtype=torch.bool, device=device))
        if not progress.history:  # epoch 0: the initial network (not checkpointed: a kill now starts afresh)
            train, test = evaluate_epoch(net, config, data, replicas, screen=False, suspects=state.suspects)
            now = time.perf_counter()
            state.record(epoch_row(0, progress, lr_at(config, 0, len(data.train_y)), train, test, data,
                                   top5=data.num_classes > 5, train_time=0.0, eval_time=now - state.t_start,
                                   wall_time=progress.wall_before + now - state.t_start), checkpoint=False)
            if train.acc >= config.fit_threshold:
                progress.steps_to_fit = 0
        return state, model

    @property
    def active(self) -> bool:
        """Whether it trains another epoch: within budget, not diverged, not stopped at its fit."""
        return (self.next_epoch < self.config.max_epochs and self.progress.status != "diverged"
                and not self.progress.done(self.config, self.next_epoch))

    def diverge(self, loss: float) -> None:
        self.progress.status = "diverged"
        self.progress.message = f"loss became {loss} at step {self.progress.step + 1}"

    def end_epoch(self, steps: int, train_time: float) -> None:
        """After `steps` SGD steps of epoch `next_epoch`: evaluate, update the fit, record."""
        config, data, progress, epoch = self.config, self.data, self.progress, self.next_epoch
        progress.step += steps
        t_eval = time.perf_counter()
        screen = config.train_eval == "screen" and epoch + 1 < config.max_epochs and self.replicas.can_screen
        train, test = evaluate_epoch(self.net, config, data, self.replicas, screen=screen,
                                     suspects=self.suspects)
        t_done = time.perf_counter()
        top5 = data.num_classes > 5
        progress.best_test = max(progress.best_test, test.acc)
        if top5:
            progress.best_top5 = max(progress.best_top5, test.top5_acc)
        if progress.steps_to_fit is None and train is not None and train.acc >= config.fit_threshold:
            progress.steps_to_fit = progress.step
        row = epoch_row(epoch + 1, progress, lr_at(config, epoch, len(data.train_y)), train, test, data,
                        top5=top5, wall_time=progress.wall_before + t_done - self.t_start,
                        train_time=train_time, eval_time=t_done - t_eval)
        self.record(row, checkpoint=True)
        self.next_epoch += 1
        if row.train_loss is not None and not math.isfinite(row.train_loss):
            progress.status = "diverged"
            progress.message = f"train loss became {row.train_loss} after step {progress.step}"

    def record(self, row: EpochRow, *, checkpoint: bool) -> None:
        """Checkpoint first (the source of truth a resume rebuilds the store from), then the row."""
        self.progress.history.append(row.as_dict())
        if checkpoint and self.replicas.writes:
            save_state(self.folder, self.net, self.optimizer, self.progress, self.data)
        if self.store is not None:
            self.store.write_epoch(self.config.run_id, self.progress.history[-1])
            if checkpoint:
                failpoint("epoch-stored")
        if self.on_epoch is not None:
            self.on_epoch(self.progress.history[-1])
        self.log(_epoch_line(self.progress.history[-1], self.config.max_epochs,
                             self.data.changed.any().item()))

    def finish(self) -> RunResult:
        progress, config = self.progress, self.config
        if progress.status != "diverged":
            progress.status = "fitted" if progress.steps_to_fit is not None else "not-fitted"
        last = progress.history[-1] if progress.history else {}
        result = RunResult(
            run_id=config.run_id, status=progress.status,
            epochs=sum(1 for row in progress.history if row["epoch"] > 0), steps=progress.step,
            steps_to_fit=progress.steps_to_fit,
            train_loss=last.get("train_loss", math.nan), train_acc=last.get("train_acc", math.nan),
            test_loss=last.get("test_loss", math.nan), test_acc=last.get("test_acc", math.nan),
            best_test_acc=progress.best_test,
            wall_time=progress.wall_before + time.perf_counter() - self.t_start, message=progress.message,
        )
        if self.store is not None:
            self.store.finish_run(config.run_id, progress.status, result.summary())
        return result


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
    replicas = replicas_for(world)
    run, model = RunState.start(config, data, store, run_dir, log=log, on_epoch=on_epoch, replicas=replicas)
    device = data.train_y.device
    while run.active:
        t_epoch = time.perf_counter()
        steps, bad_loss = train_epoch(model, run.optimizer, config, run.next_epoch, len(data.train_y),
                                      lambda idx, gen: replicas.batch(data, idx.to(device), gen),
                                      replicas=replicas, on_step=lambda: failpoint("step"))
        if bad_loss is not None:
            run.progress.step += steps
            run.diverge(bad_loss)
            break
        run.end_epoch(steps, time.perf_counter() - t_epoch)
    return run.finish()


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
