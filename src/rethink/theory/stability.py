"""Empirical stability: retrain with one training example replaced and watch the loss move.

Uniform stability (Bousquet & Elisseeff 2002) bounds sup_z |l(A_S, z) - l(A_S', z)| over
training sets S, S' that differ in one example. Here, for one seeded training set S of n
CIFAR-10 images and `replacements` choices of (i, z'):

- A = the network trained on S, B = the network trained on S with example i replaced by an
  image z' from outside S, with every seed equal (initialization, data order: z' takes i's
  place in every batch), by the paper's protocol (`rethink.theory.protocol.sgd_epochs`);
- at report epochs, on `holdout` held-out test images: the mean and the max over z of
  |l(A, z) - l(B, z)| (cross-entropy), the loss change on the removed example i itself
  (l(B, z_i) - l(A, z_i): what memorizing z_i was worth), and ||theta_A - theta_B||.

Labels follow the training distribution: with "true" the held-out points and z' keep their
true labels; with "random-labels" they get uniform random labels too (seeded), so that the
held-out loss is that of the same (random) distribution. Minimum, mean and max over the
replacements are reported; the sup over all S and z of the definition is not reachable, so
these are lower estimates of the uniform stability constant.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.preprocess import prepare
from rethink.data.sources import RawDataset
from rethink.errors import ConfigError
from rethink.options import option
from rethink.seeds import derive_seed
from rethink.theory.protocol import sgd_epochs
from rethink.train.loop import build_model

STABILITY_CORRUPTIONS = ("true", "random-labels")


@dataclass(frozen=True)
class StabilityConfig:
    """One `rethink measures stability`; its fields are the command's options."""

    model: str = option("mlp1x512", "see `rethink models`")
    dataset: str = option("cifar10", "cifar10, mnist, folder:PATH or idx:PATH")
    train_size: int = option(1000, "training examples n")
    holdout: int = option(1000, "held-out test images")
    corruption: str = option("true", "the labels", choices=STABILITY_CORRUPTIONS)
    epochs: int = option(20, "epochs of the paper's SGD protocol")
    replacements: int = option(3, "examples replaced, one at a time")
    lr: float | None = option(None, "initial learning rate (default: the model's paper value)")
    batch_size: int = option(128, "minibatch size")
    init: str = option("glorot", "weight initialization")
    seed: int = option(0, "every seed of the runs, and the choice of replacements")

    def run_config(self) -> RunConfig:
        return RunConfig(dataset=self.dataset, train_size=self.train_size, test_size=self.holdout,
                         corruption=self.corruption, model=self.model, init=self.init, lr=self.lr,
                         batch_size=self.batch_size, max_epochs=self.epochs, stop_at_fit=False,
                         corruption_seed=self.seed, init_seed=self.seed, data_seed=self.seed,
                         subset_seed=self.seed)

    def validate(self) -> StabilityConfig:
        if self.corruption not in STABILITY_CORRUPTIONS:
            raise ConfigError(f"stability supports corruption {', '.join(STABILITY_CORRUPTIONS)}, "
                              f"not {self.corruption!r}", "pass --corruption true or random-labels")
        if not isinstance(self.replacements, int) or self.replacements < 1:
            raise ConfigError(f"replacements={self.replacements} must be a positive integer",
                              "fix --replacements")
        self.run_config().validate()
        return self


def report_epochs(epochs: int) -> list[int]:
    """1, 2, 5, 10, 20, 50, ... up to `epochs`, and `epochs` itself."""
    marks = {e for k in range(8) for e in (10**k, 2 * 10**k, 5 * 10**k) if e <= epochs}
    return sorted(marks | {epochs})


@dataclass(frozen=True)
class StabilityRow:
    epoch: int
    train_acc: float  # A's training accuracy
    heldout_loss: float  # A's mean held-out loss
    mean_abs: float  # mean over replacements of mean_z |l(A,z) - l(B,z)|
    max_abs: float  # max over replacements and z
    removed_gain: float  # mean over replacements of l(B, z_i) - l(A, z_i)
    param_dist: float  # mean over replacements of ||theta_A - theta_B||


@torch.no_grad()
def _losses(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    model.eval()
    return torch.cat([F.cross_entropy(model(x[s : s + 1024]), y[s : s + 1024], reduction="none")
                      for s in range(0, len(y), 1024)])


def _flat(model: nn.Module) -> Tensor:
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()]).clone()


def stability(raw: RawDataset, config: StabilityConfig, *, log: Callable[[str], None] = print
              ) -> list[StabilityRow]:
    config.validate()
    rc = config.run_config()
    data = build_run_data(rc, raw)
    x, y = data.train_x, data.train_y
    n, k = len(y), data.num_classes
    g = torch.Generator().manual_seed(derive_seed(config.seed, "stability"))
    xh, yh = data.test_x, data.test_y
    if config.corruption == "random-labels":
        yh = torch.randint(0, k, yh.shape, generator=g)
    outside = torch.ones(len(raw.train_labels), dtype=torch.bool)
    outside[data.subset] = False
    pool = outside.nonzero().squeeze(1)
    if len(pool) < config.replacements:
        raise ConfigError(f"only {len(pool)} training images are left outside the subset",
                          "use a smaller --train-size or fewer --replacements")
    removed = torch.randperm(n, generator=g)[: config.replacements]
    newcomers = pool[torch.randperm(len(pool), generator=g)[: config.replacements]]
    x_new = prepare(raw.train_images[newcomers], rc.input_size)  # (R, C, H, W)
    y_new = raw.train_labels[newcomers].clone()
    if config.corruption == "random-labels":
        y_new = torch.randint(0, k, y_new.shape, generator=g)
    marks = report_epochs(config.epochs)

    def train(xs: Tensor, ys: Tensor, what: str) -> dict[int, tuple[Tensor, Tensor, Tensor, float]]:
        """Per report epoch: held-out losses, removed examples' losses, params, train accuracy."""
        model = build_model(rc, data, torch.device("cpu"))
        seen: dict[int, tuple[Tensor, Tensor, Tensor, float]] = {}

        def record(epoch: int) -> None:
            if epoch in marks:
                with torch.no_grad():
                    model.eval()
                    acc = float((model(xs).argmax(1) == ys).float().mean())
                held, gone = _losses(model, xh, yh), _losses(model, x[removed], y[removed])
                seen[epoch] = (held, gone, _flat(model), acc)

        sgd_epochs(model, xs, ys, rc, on_epoch=record)
        log(f"  {what}: train acc {100 * seen[marks[-1]][3]:.2f}% after {config.epochs} epochs")
        return seen

    base = train(x, y, f"A (n={n}, {config.corruption})")
    others = []
    for r in range(config.replacements):
        xs, ys = x.clone(), y.clone()
        i = int(removed[r])
        xs[i], ys[i] = x_new[r], y_new[r]
        others.append(train(xs, ys, f"B{r + 1} (example {i} replaced by image {int(newcomers[r])})"))

    rows = []
    for e in marks:
        held_a, rem_a, theta_a, acc = base[e]
        diffs = [(held_a - o[e][0]).abs() for o in others]
        rows.append(StabilityRow(
            epoch=e, train_acc=acc, heldout_loss=float(held_a.mean()),
            mean_abs=statistics.fmean(float(d.mean()) for d in diffs),
            max_abs=max(float(d.max()) for d in diffs),
            removed_gain=statistics.fmean(float(o[e][1][r] - rem_a[r]) for r, o in enumerate(others)),
            param_dist=statistics.fmean(float((theta_a - o[e][2]).norm()) for o in others),
        ))
    return rows


def rows_to_dicts(rows: list[StabilityRow]) -> list[dict]:
    return [{k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in asdict(r).items()}
            for r in rows]
