"""Eval-mode passes over a split: loss, top-1 and top-5 correctness per example.

`evaluate_rows` is the pass itself (over a slice of rows, so a data-parallel rank can take its
shard); `screen_fit` is the cheaper pass of `--train-eval screen` that stops once an epoch
certainly did not fit.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

EVAL_BATCH = 1024


def autocast_for(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@dataclass(frozen=True)
class Evaluation:
    """One eval-mode pass over a split."""

    loss: float  # mean cross-entropy
    correct: torch.Tensor  # bool per example: the argmax is the label (top-1)
    top5: torch.Tensor | None  # bool per example: the label is among the 5 largest logits; None
    # with 5 classes or fewer, where it is always true

    @property
    def acc(self) -> float | None:
        return mean(self.correct)

    @property
    def top5_acc(self) -> float | None:
        return mean(self.top5) if self.top5 is not None else None


def in_top5(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per example: the target is among the five largest logits."""
    return (logits.topk(5, dim=1).indices == target[:, None]).any(1)


@torch.no_grad()
def evaluate_rows(model: nn.Module, x: torch.Tensor, y: torch.Tensor, precision: str,
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


def mean(mask: torch.Tensor) -> float | None:
    return float(mask.float().mean()) if mask.numel() else None
