"""The paper's SGD protocol over in-memory tensors, for the theory experiments.

The training loop's own epoch (`rethink.train.loop.train_epoch`): momentum SGD at
`lr_at(config, epoch, n)`, each epoch's order from `derive_seed(data_seed, "order", epoch)`,
mini-batches by slicing that order. What fit adds (store rows, checkpoints, resume,
augmentation, dropout, steps_to_fit) is left out; the loss is a parameter, so Rademacher's
+/-1 problems can use the logistic loss. A test checks that cross-entropy on a RunData gives
fit's weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from rethink.config import RunConfig
from rethink.train.loop import paper_sgd, train_epoch

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

    `on_epoch(epoch)` (1-based) runs after each epoch; returning True stops training. A non-finite
    loss ends the epoch without stepping on it, as in fit.
    """
    if config.augment or config.dropout:
        raise ValueError("sgd_epochs runs the plain protocol: no augmentation or dropout")
    optimizer = paper_sgd(model.parameters(), config)

    def batch(idx: Tensor, _generator: object) -> tuple[Tensor, Tensor]:
        idx = idx.to(y.device)
        return x[idx], y[idx]

    for epoch in range(config.max_epochs):
        train_epoch(model, optimizer, config, epoch, len(y), batch, loss_fn=loss_fn)
        if on_epoch is not None and on_epoch(epoch + 1):
            return epoch + 1
    return config.max_epochs
