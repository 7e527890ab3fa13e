"""Many runs at once: K runs of one architecture trained as one stacked model.

The paper's experiments are grids of small, independent runs of one architecture (seeds x
corruptions x p x regularizers). Stacked, their parameters and buffers gain a leading run axis
(`torch.func.stack_module_state`) and one `vmap`-ed forward computes every run's batch, so a
device runs K small models with the kernel launches of one. Each run keeps everything that makes
it that run: its own initialization, data order and augmentation draws, corrupted data, learning
rate, momentum and weight decay, and its own batch-norm statistics. A step is exactly K plain
steps of momentum SGD (`torch.optim.SGD`'s update, written on the stacked tensors):

    d = g + wd * p;   buf = momentum * buf + d;   p = p - lr * buf        (per run)

Evaluation, checkpoints and store rows go through each run's own `RunState` (rethink.train.loop),
so a stacked run is stored exactly as a plain run (same run id, rows, checkpoint files), a killed
stack resumes every run, and a plain run can resume a stacked one's checkpoint and vice versa.
After each epoch the runs that fitted (or diverged, or reached their budget) leave the stack; a
run whose loss becomes non-finite leaves at that step without its update, as a plain run would.

What cannot be stacked is trained plainly: runs with Adam, runs with dropout (a vmapped dropout
draws other masks than the plain run), and runs that differ in anything the stacked forward
shares (`stack_key`).
Floats: a stacked step computes the same sums as K plain steps, but vmapped kernels may add them
in another order, so weights agree to float rounding (tests state the tolerance), not bit for bit.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rethink.config import RunConfig, lr_at
from rethink.data.rundata import training_size_key
from rethink.faults import failpoint
from rethink.seeds import seeded_generator
from rethink.train.evaluation import autocast_for
from rethink.train.loop import RunState

# `--stack auto`: how many runs of each model to stack, by device type. On the 2-core Xeon
# (`rethink bench --parts stacked`, docs/benchmarks-stacked.md) every stack was slower than the
# same runs one after another, for every paper model, k and precision (0.09x-0.84x; the vmapped
# convolutions leave oneDNN's fast paths, bf16 most of all), so auto stacks nothing on CPUs. On a
# GPU each small model alone is launch-bound; 16 is the starting point until a GPU measurement
# (scripts/gpu.sh times the same table) says otherwise.
AUTO_STACK = {"cpu": {}, "cuda": {"default": 16}}


def stack_size(stack: str | int, model: str, device: torch.device) -> int:
    """Runs per stack for `--stack` (off, auto or a number) and a model on a device; 1 = plain."""
    if stack == "off":
        return 1
    if stack == "auto":
        table = AUTO_STACK.get(device.type, {})
        return table.get(model, table.get("default", 1))
    return int(stack)


def stack_key(config: RunConfig) -> tuple | None:
    """Runs with equal keys can train in one stack; None for a run that trains only plainly."""
    if config.dropout > 0 or config.optimizer != "sgd":  # the stack's update is momentum SGD
        return None
    return (config.model, config.width, config.dataset, config.train_size, config.test_size,
            config.input_size, config.batch_size, config.precision, training_size_key(config))


class Member(Protocol):
    """What a stack needs of a run (a `RunState` has it): its network, optimizer and config."""

    net: nn.Module
    optimizer: torch.optim.Optimizer
    config: RunConfig


class Stack:
    """The stacked parameters, buffers and momentum of some runs, and one SGD step over all."""

    def __init__(self, runs: Sequence[Member], epoch: int, n: int) -> None:
        """`runs` at (0-based) `epoch` of a training set of `n` examples (their learning rates)."""
        from torch.func import stack_module_state

        self.runs = list(runs)
        nets = [r.net.train() for r in self.runs]  # the stacked step trains (and stacking wants one mode)
        params, self.buffers = stack_module_state(nets)
        self.params = {name: p.detach().requires_grad_() for name, p in params.items()}
        momenta = [_momentum_buffers(r) for r in self.runs]
        self.momentum = {name: torch.stack([m[name] for m in momenta]) for name in self.params}
        # the architecture without weights, in train mode (batch-norm statistics of the batch)
        self.base = copy.deepcopy(nets[0]).to("meta")
        self.lr = [lr_at(r.config, epoch, n) for r in self.runs]
        self._hyper = self._hyper_tensors(next(iter(self.params.values())))

    def _hyper_tensors(self, like: Tensor) -> dict[str, Tensor]:
        """Per-run learning rate, momentum and weight decay, in the parameters' dtype and device."""
        def column(values: list[float]) -> Tensor:
            return torch.tensor(values, dtype=like.dtype, device=like.device)

        return {"lr": column(self.lr), "momentum": column([r.config.momentum for r in self.runs]),
                "weight_decay": column([r.config.weight_decay for r in self.runs])}

    def _forward(self, params: dict[str, Tensor], buffers: dict[str, Tensor], x: Tensor) -> Tensor:
        from torch.func import functional_call

        return functional_call(self.base, (params, buffers), (x,))

    def step(self, xb: Tensor, yb: Tensor) -> list[float]:
        """xb (K, B, ...), yb (K, B): run k steps on its batch (xb[k], yb[k]). Returns each run's
        mean loss; a run whose loss is not finite takes no step (the caller drops it)."""
        from torch.func import vmap

        precision = self.runs[0].config.precision
        with autocast_for(precision, xb.device):
            logits = vmap(self._forward)(self.params, self.buffers, xb)  # (K, B, classes)
            losses = F.cross_entropy(logits.flatten(0, 1), yb.flatten(), reduction="none")
            losses = losses.view(yb.shape).mean(1)  # (K,): each run's own mean loss
        for p in self.params.values():
            p.grad = None
        losses.sum().backward()  # run k's parameters only see run k's loss
        values = losses.detach().tolist()
        ok = [math.isfinite(v) for v in values]
        self._update(None if all(ok) else torch.tensor(ok, device=xb.device))
        return values

    @torch.no_grad()
    def _update(self, ok: Tensor | None) -> None:
        """torch.optim.SGD's momentum step (dampening 0, no Nesterov), per run; runs where `ok` is
        False keep their parameters and momentum."""
        for name, p in self.params.items():
            shape = (-1,) + (1,) * (p.dim() - 1)
            lr, momentum, wd = (self._hyper[k].view(shape) for k in ("lr", "momentum", "weight_decay"))
            d = p.grad + wd * p
            buf = self.momentum[name] * momentum + d
            if ok is not None:
                keep = ok.view(shape)
                buf = torch.where(keep, buf, self.momentum[name])
                lr = lr * keep
            self.momentum[name] = buf
            p.sub_(lr * buf)

    def keep(self, indices: list[int]) -> None:
        """Only these runs stay in the stack (the others diverged)."""
        index = torch.tensor(indices, device=next(iter(self.params.values())).device)
        self.params = {k: v.detach()[index].requires_grad_() for k, v in self.params.items()}
        self.buffers = {k: v[index] for k, v in self.buffers.items()}
        self.momentum = {k: v[index] for k, v in self.momentum.items()}
        self.runs = [self.runs[i] for i in indices]
        self.lr = [self.lr[i] for i in indices]
        self._hyper = {k: v[index] for k, v in self._hyper.items()}

    @torch.no_grad()
    def write_back(self) -> None:
        """Each run's network and optimizer as a plain run would hold them after these steps."""
        for i, run in enumerate(self.runs):
            for name, p in run.net.named_parameters():
                p.copy_(self.params[name][i])
                run.optimizer.state[p]["momentum_buffer"] = self.momentum[name][i].clone()
            for name, b in run.net.named_buffers():
                b.copy_(self.buffers[name][i])
            for group in run.optimizer.param_groups:
                group["lr"] = self.lr[i]


def _momentum_buffers(run: Member) -> dict[str, Tensor]:
    """The run's momentum per parameter name; zeros before its first step (momentum x 0 + d is
    exactly d, torch's first-step buffer)."""
    out = {}
    for name, p in run.net.named_parameters():
        buf = run.optimizer.state.get(p, {}).get("momentum_buffer")
        out[name] = torch.zeros_like(p) if buf is None else buf
    return out


def train_stacked_epoch(runs: Sequence[RunState], epoch: int) -> None:
    """One epoch of every run in `runs` (all at `epoch`, one stack key), then each run's evaluation
    and record. A run whose loss becomes non-finite leaves at that step, diverged."""
    first = runs[0]
    n, batch, device = len(first.data.train_y), first.config.batch_size, first.data.train_y.device
    t_epoch = time.perf_counter()
    stack = Stack(runs, epoch, n)
    orders = {id(r): torch.randperm(n, generator=seeded_generator(r.config.data_seed, "order", epoch))
              for r in runs}
    augment = {id(r): seeded_generator(r.config.data_seed, "augment", epoch) for r in runs}
    steps = 0
    for start in range(0, n, batch):
        batches = [r.replicas.batch(r.data, orders[id(r)][start : start + batch].to(device), augment[id(r)])
                   for r in stack.runs]
        losses = stack.step(torch.stack([x for x, _ in batches]), torch.stack([y for _, y in batches]))
        bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
        for i in bad:
            stack.runs[i].progress.step += steps
            stack.runs[i].diverge(losses[i])
        if bad:
            stack.keep([i for i in range(len(stack.runs)) if i not in bad])
            if not stack.runs:
                return
        steps += 1
        failpoint("step")
    stack.write_back()
    train_time = time.perf_counter() - t_epoch
    for run in stack.runs:
        run.end_epoch(steps, train_time)


def fit_stack(runs: Sequence[RunState]) -> None:
    """Train every run to its fit or budget, the runs at the same epoch stacked together (runs
    resumed at different epochs catch up first). Each run's rows and checkpoints are written as
    it goes; `RunState.finish` gives the results."""
    keys = {stack_key(r.config) for r in runs}
    if len(keys) != 1 or None in keys:
        raise ValueError(f"runs that cannot share a stack: {sorted(map(str, keys))}")
    while any(r.active for r in runs):
        epoch = min(r.next_epoch for r in runs if r.active)
        train_stacked_epoch([r for r in runs if r.active and r.next_epoch == epoch], epoch)
