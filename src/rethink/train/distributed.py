"""Data-parallel training of one run over several processes (torchrun / DistributedDataParallel).

`torchrun --nproc-per-node N -m rethink run ...` (or `rethink run --nproc N`, which launches
exactly that) starts N processes. Each one loads the same data and computes the same corruption
from the seed, builds the same initial model, and draws the same epoch order; every global batch
of `batch_size` indices is then split into N contiguous shards, one per rank. The loss of a shard
is its cross-entropy sum divided by the GLOBAL batch length (times N, because DDP averages the
gradients over ranks), so the averaged gradient is exactly the single-process batch mean even
when the last batch splits unevenly. The learning-rate schedule is the single-process one, so
weights and metrics match a single-process run with the same global batch up to float rounding.

What differs from one process (documented, not hidden):
  * BatchNorm normalizes with each rank's local batch statistics (standard DDP behaviour);
  * dropout masks come from a per-rank seed, so they differ from the single-process masks;
  * augmentation is drawn for the whole global batch on every rank (identical to one process),
    then sliced: it costs N times the augmentation work, not the model's;
  * the per-epoch evaluation is sharded over ranks and summed; `--train-eval screen` falls back
    to the full pass (screening stops early at a point that depends on the whole set).
Only rank 0 writes the results database, run files and checkpoints, and prints.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import torch
import torch.distributed as dist

from rethink.errors import ConfigError


@dataclass(frozen=True)
class World:
    """This process's place among the ranks of one data-parallel run."""

    rank: int
    size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous share of n items (sizes differ by at most one)."""
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))


def world_from_env() -> World | None:
    """The World torchrun describes in the environment, or None for a single process."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return None
    return World(int(os.environ["RANK"]), size, int(os.environ.get("LOCAL_RANK", "0")))


def init_process_group(world: World, device: torch.device) -> torch.device:
    """Join the process group (NCCL on GPUs, gloo on CPUs); return this rank's device."""
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=world.rank, world_size=world.size)
    return device


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def exit_worker(code: int) -> NoReturn:
    """End this torchrun worker with `code` once its run is finished, skipping interpreter teardown.

    A DistributedDataParallel reducer keeps the gloo process group alive past
    destroy_process_group (a reference cycle inside torch), so a gloo worker thread can still be
    releasing a finished collective's tensors while Python finalizes; it then aborts the process
    ("terminate called without an active exception") although the run is complete and stored.
    Everything the run writes is closed by now; only the output streams need flushing.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum of `t` over ranks (in place, also returned)."""
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def check_batches(world: World, n: int, batch_size: int) -> None:
    """Every rank needs at least one example of every batch (DDP waits for all of them)."""
    last = n % batch_size or batch_size
    if min(batch_size, last) < world.size:
        raise ConfigError(
            f"a batch of {min(batch_size, last)} examples (training set {n}, batch size {batch_size}) "
            f"cannot be split over {world.size} processes",
            "use fewer processes, or a batch size / training size leaving at least one example per process",
        )


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """The torchrun command line that runs `rethink <argv>` in `nproc` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "rethink", *argv]


def launch(nproc: int, argv: Sequence[str]) -> int:
    """Run `rethink <argv>` under torchrun with `nproc` processes; return its exit status.

    Unless `--threads` is among the arguments, each process gets an equal share of the usable
    CPU cores, so N processes on one CPU do not oversubscribe it.
    """
    env = dict(os.environ)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    env.setdefault("OMP_NUM_THREADS", str(max(1, cores // nproc)))
    return subprocess.call(torchrun_command(nproc, argv), env=env)
