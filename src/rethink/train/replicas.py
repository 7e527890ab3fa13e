"""What differs when one run trains over several processes, behind one small interface.

The training loop calls the same five things whether it runs alone or as one rank of a torchrun
job (`rethink.train.distributed`): `wrap` the network for the SGD steps, take this process's
`batch` of a global batch, turn the batch's outputs into the `loss` to step on, `evaluate` a
whole split, and say whether this process `writes` (checkpoint, store, log). `OneProcess` is
the plain single-process version: every hook is the identity.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rethink.data.rundata import RunData
from rethink.train import distributed
from rethink.train.distributed import World
from rethink.train.evaluation import Evaluation, evaluate_rows

Loss = Callable[..., Tensor]


class Replicas(Protocol):
    writes: bool  # this process writes the checkpoint and the store rows, and logs
    can_screen: bool  # the screened train evaluation is available (it stops at a data-dependent point)
    rank_key: tuple[int, ...]  # mixed into per-process random streams (dropout masks)

    def wrap(self, net: nn.Module) -> nn.Module: ...

    def batch(self, data: RunData, idx: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]: ...

    def loss(self, loss_fn: Loss, out: Tensor, yb: Tensor, global_batch: int) -> tuple[Tensor, float]: ...

    def evaluate(self, net: nn.Module, x: Tensor, y: Tensor, precision: str, top5: bool) -> Evaluation: ...


class OneProcess:
    """A run in one process: the batch is the global batch, the split is all here."""

    writes, can_screen, rank_key = True, True, ()

    def wrap(self, net: nn.Module) -> nn.Module:
        return net

    def batch(self, data: RunData, idx: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        return data.train_batch(idx, generator), data.train_y[idx]

    def loss(self, loss_fn: Loss, out: Tensor, yb: Tensor, global_batch: int) -> tuple[Tensor, float]:
        """The batch's mean loss, to step on, and its value."""
        loss = loss_fn(out, yb)
        return loss, loss.item()

    def evaluate(self, net: nn.Module, x: Tensor, y: Tensor, precision: str, top5: bool) -> Evaluation:
        n = len(y)
        loss_sum, correct, right5 = evaluate_rows(net, x, y, precision, slice(0, n))
        return Evaluation(loss_sum / max(n, 1), correct, right5 if top5 else None)


ONE_PROCESS = OneProcess()


class DataParallel:
    """One rank of a data-parallel run: each rank steps on its shard of every global batch (DDP
    averages the gradients) and evaluates its shard of each split; sums over ranks give every rank
    the whole batch's loss and the whole split's evaluation. The screened train evaluation is
    off: its early stop depends on the examples, which would leave ranks waiting on each other."""

    can_screen = False

    def __init__(self, world: World) -> None:
        self.world = world
        self.writes = world.is_main
        self.rank_key = (world.rank,)

    def wrap(self, net: nn.Module) -> nn.Module:
        """DDP over the process group; it starts every rank from rank 0's weights (equal anyway)."""
        from torch.nn.parallel import DistributedDataParallel

        device = next(net.parameters()).device
        return DistributedDataParallel(net, device_ids=[device] if device.type == "cuda" else None)

    def batch(self, data: RunData, idx: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """This rank's shard of the global batch, augmented as one process would augment it."""
        mine = self.world.shard(len(idx))
        if data.augment:  # the whole batch's augmentation draws, then this rank's rows
            return data.train_batch(idx, generator)[mine], data.train_y[idx[mine]]
        xb = data.train_batch(idx[mine], generator)
        return xb, data.train_y[idx[mine]]

    def loss(self, loss_fn: Loss, out: Tensor, yb: Tensor, global_batch: int) -> tuple[Tensor, float]:
        """The global batch's mean loss: summed over this shard, then over the ranks. Every rank sees
        the same value, so all of them take the step or none does."""
        if loss_fn is not F.cross_entropy:
            raise ValueError("data-parallel training steps on the cross-entropy")
        loss_sum = F.cross_entropy(out, yb, reduction="sum")
        value = distributed.all_reduce_sum(loss_sum.detach().float().clone()).item() / global_batch
        return loss_sum * (self.world.size / global_batch), value  # DDP averages gradients over ranks

    def evaluate(self, net: nn.Module, x: Tensor, y: Tensor, precision: str, top5: bool) -> Evaluation:
        n = len(y)
        rows = self.world.shard(n)
        loss_sum, part, part5 = evaluate_rows(net, x, y, precision, rows)
        # each rank fills its rows of a zero vector; the sum over ranks is the whole split
        counts = torch.zeros(2, n, dtype=torch.int32, device=y.device)
        counts[0, rows], counts[1, rows] = part.int(), part5.int()
        distributed.all_reduce_sum(counts)
        total = distributed.all_reduce_sum(torch.tensor([loss_sum], dtype=torch.float64, device=y.device))
        return Evaluation(float(total) / max(n, 1), counts[0].bool(), counts[1].bool() if top5 else None)


def replicas_for(world: World | None) -> Replicas:
    return ONE_PROCESS if world is None else DataParallel(world)
