"""The paper's SGD protocol over in-memory tensors, for the theory experiments.

The same steps, in the same order, with the same seeds as `rethink.train.loop.fit`: momentum
SGD at `lr_at(config, epoch, n)`, each epoch's order from `derive_seed(data_seed, "order",
epoch)`, mini-batches by slicing that order. What fit adds (store rows, checkpoints, resume,
augmentation, dropout, steps_to_fit) is left out; the loss is a parameter, so Rademacher's
+/-1 problems can use the logistic loss. A test checks that cross-entropy on a RunData gives
fit's weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rethink.config import RunConfig, lr_at
from rethink.train.loop import derive_seed, paper_sgd

Loss = Callable[[Tensor, Tensor], Tensor]


def sgd_epochs(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: RunConfig,
    *,
    loss_fn: Loss = F.cross_entropy,
    on_epoch: Callable[[int], bool | None] | None = None,
) -> int:
    """Train `model` in place for up to config.max_epochs; return the epochs run.

    `on_epoch(epoch)` (1-based) runs after each epoch; returning True stops training.
    """
    if config.augment or config.dropout:
        raise ValueError("sgd_epochs runs the plain protocol: no augmentation or dropout")
    n = len(y)
    optimizer = paper_sgd(model.parameters(), config)
    for epoch in range(config.max_epochs):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(config, epoch, n)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(
            derive_seed(config.data_seed, "order", epoch)))
        model.train()
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size].to(y.device)
            loss = loss_fn(model(x[idx]), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if on_epoch is not None and on_epoch(epoch + 1):
            return epoch + 1
    return config.max_epochs
