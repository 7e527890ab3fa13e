"""Empirical Rademacher complexity by randomization (Zhang et al. 2017, Eq. 1).

    R_n(H) = E_sigma [ sup_{h in H} (1/n) sum_i sigma_i h(x_i) ],   sigma_i uniform in {-1, +1}

For a fixed sample of n training images (stratified, seeded) and each of `draws` sign vectors
sigma, a function f is fitted to sigma and the correlation (1/n) sum_i sigma_i h(x_i) is read
off with bounded outputs. Networks: a fresh network with one output, trained with the logistic
loss on the +/-1 labels by the paper's SGD protocol, stopped once sign(f) = sigma on every
point or at max_epochs. The linear model: least squares on sigma (exact solve; the minimum-norm
interpolant when n <= d + 1, so then f = sigma), a far better maximizer than SGD, which stalls
on the small-margin separable problems a linear model has near n = d. The outputs:

- sign:  h = sign(f) in {-1, +1} (sign(0) = +1), so the correlation is 1 - 2 * (training error
  on sigma): the paper's reading, a network that fits random labels gives exactly 1;
- clip:  h = clip(f, -1, 1), a real-valued class bounded by 1; lower, as it also needs |f| >= 1.

Training approximates the supremum from below (the trained h is one member of H), so these
are lower estimates of R_n; for the networks they already reach the trivial upper bound 1.
The multiclass problem is reduced to this binary one, as the paper does (Section 2.2).

Models: any registered name (one output unit) and "linear", a linear function of the input
pixels (bias included). `pool` average-pools the whitened image to pool x pool pixels first, so
a linear model can be made tiny (pool=1: three features, the channel means).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rethink.config import RunConfig
from rethink.data.preprocess import prepare
from rethink.data.rundata import split_subset
from rethink.data.sources import RawDataset
from rethink.errors import ConfigError
from rethink.models import create_model, get_model_info, initialize, list_models
from rethink.options import integers, option
from rethink.seeds import derive_seed
from rethink.theory.protocol import sgd_epochs

LINEAR_LR = 0.01  # the paper's rate for its non-Inception models


def linear_model(*, in_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(in_shape), num_classes))


# Models only the theory experiments use; the registry's paper models are looked up there.
# "linear" is fitted by least squares, not SGD (see the module docstring).
EXTRA_MODELS: dict[str, Callable[..., nn.Module]] = {"linear": linear_model}


def build_model(name: str, in_shape: tuple[int, int, int], outputs: int) -> nn.Module:
    if name in EXTRA_MODELS:
        return EXTRA_MODELS[name](in_shape=in_shape, num_classes=outputs)
    return create_model(name, in_shape=in_shape, num_classes=outputs)


def check_model(name: str) -> None:
    if name not in EXTRA_MODELS and name not in {m.name for m in list_models()}:
        known = ", ".join([*EXTRA_MODELS, *(m.name for m in list_models())])
        raise ConfigError(f"unknown model {name!r}; known models: {known}", "pick one of the known names")


def default_lr(name: str) -> float:
    return LINEAR_LR if name in EXTRA_MODELS else get_model_info(name).default_lr


@dataclass(frozen=True)
class RademacherConfig:
    """One model's Rademacher estimate; the fields but `model` are the options of `rethink measures
    rademacher`, whose --models lists the models (one config each)."""

    model: str = option("mlp1x512", "", flag=None)
    sizes: tuple[int, ...] = option((100, 500), "comma list of sample sizes n", parse=integers)
    draws: int = option(3, "sign vectors per n")
    dataset: str = option("cifar10", "cifar10, mnist, folder:PATH or idx:PATH")
    input_size: int = option(28, "centre-crop size")
    # average-pool to pool x pool pixels (None: keep input_size)
    pool: int | None = option(None, "average-pool inputs to POOL x POOL pixels")
    max_epochs: int = option(100, "epoch budget per sign vector")
    lr: float | None = option(None, "initial learning rate (default: the model's paper value; linear: 0.01)")
    batch_size: int = option(128, "minibatch size")
    init: str = option("glorot", "weight initialization")
    seed: int = option(0, "picks the sample (subset seed), the signs and the initializations")

    def validate(self) -> RademacherConfig:
        check_model(self.model)
        if not self.sizes or any(not isinstance(n, int) or n < 2 for n in self.sizes):
            raise ConfigError(f"sizes {self.sizes} must be integers >= 2", "e.g. --sizes 100,500")
        for name in ("draws", "max_epochs", "batch_size", "input_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)} must be a positive integer",
                                  f"fix --{name.replace('_', '-')}")
        if self.pool is not None and not 1 <= self.pool <= self.input_size:
            raise ConfigError(f"pool={self.pool} must be in 1..{self.input_size}", "fix --pool")
        if self.lr is not None and not self.lr > 0:
            raise ConfigError(f"lr={self.lr} must be positive", "fix --lr")
        return self

    def protocol(self, n: int) -> RunConfig:
        """The SGD protocol for a sample of n points, as a RunConfig (data seed = this seed)."""
        return RunConfig(lr=self.lr or default_lr(self.model), batch_size=self.batch_size,
                         max_epochs=self.max_epochs, data_seed=self.seed, train_size=n)


@dataclass(frozen=True)
class Draw:
    sign: float  # (1/n) sum sigma_i sign(f(x_i))
    clip: float  # (1/n) sum sigma_i clip(f(x_i), -1, 1)
    epochs: int
    fitted: bool  # sign(f) = sigma everywhere
    seconds: float


@dataclass(frozen=True)
class RademacherPoint:
    model: str
    n: int
    draws: list[Draw] = field(default_factory=list)

    @property
    def sign_mean(self) -> float:
        return statistics.fmean(d.sign for d in self.draws)

    @property
    def sign_std(self) -> float:
        return statistics.stdev(d.sign for d in self.draws) if len(self.draws) > 1 else 0.0

    @property
    def clip_mean(self) -> float:
        return statistics.fmean(d.clip for d in self.draws)

    def to_dict(self) -> dict:
        return {"model": self.model, "n": self.n, "sign_mean": self.sign_mean, "sign_std": self.sign_std,
                "clip_mean": self.clip_mean, "draws": [asdict(d) for d in self.draws]}


def sample_inputs(raw: RawDataset, n: int, config: RademacherConfig) -> Tensor:
    """n training images (stratified, seeded), preprocessed as the paper does, optionally pooled."""
    idx = split_subset(raw.train_labels, n, config.seed, "train", raw.name)
    x = prepare(raw.train_images[idx], config.input_size)  # (n, C, size, size), whitened
    if config.pool is not None:
        x = F.adaptive_avg_pool2d(x, config.pool)  # (n, C, pool, pool)
    return x.contiguous()


def signs(n: int, seed: int, draw: int) -> Tensor:
    g = torch.Generator().manual_seed(derive_seed(seed, "rademacher-sigma", n, draw))
    return torch.randint(0, 2, (n,), generator=g).float() * 2 - 1  # (n,) in {-1, +1}


def _logistic(out: Tensor, sigma: Tensor) -> Tensor:
    return F.binary_cross_entropy_with_logits(out.squeeze(1), (sigma + 1) / 2)


@torch.no_grad()
def _outputs(model: nn.Module, x: Tensor, batch: int = 1024) -> Tensor:
    model.eval()
    return torch.cat([model(x[s : s + batch]).squeeze(1) for s in range(0, len(x), batch)])


def least_squares_outputs(x: Tensor, sigma: Tensor) -> Tensor:
    """f = X w + b with (w, b) the least-squares (minimum-norm when underdetermined) fit to sigma."""
    a = torch.cat([x.reshape(len(x), -1).double(), torch.ones(len(x), 1, dtype=torch.float64)], 1)
    w = torch.linalg.lstsq(a, sigma.double()[:, None], driver="gelsd").solution  # (d + 1, 1)
    return (a @ w).squeeze(1).float()


def correlation_draw(x: Tensor, sigma: Tensor, config: RademacherConfig, draw: int) -> Draw:
    """Fit sigma with a fresh model (see the module docstring); the bounded correlations reached."""
    n = len(sigma)
    t0 = time.perf_counter()
    if config.model == "linear":
        f, epochs = least_squares_outputs(x, sigma), 0
    else:
        torch.manual_seed(derive_seed(config.seed, "rademacher-init", n, draw))
        model = initialize(build_model(config.model, tuple(x.shape[1:]), 1), config.init)

        def fitted(_: int) -> bool:
            return bool(((_outputs(model, x) >= 0).float() * 2 - 1 == sigma).all())

        epochs = sgd_epochs(model, x, sigma, config.protocol(n), loss_fn=_logistic, on_epoch=fitted)
        f = _outputs(model, x)
    h_sign = (f >= 0).float() * 2 - 1
    return Draw(sign=float((sigma * h_sign).mean()), clip=float((sigma * f.clamp(-1, 1)).mean()),
                epochs=epochs, fitted=bool((h_sign == sigma).all()), seconds=time.perf_counter() - t0)


def rademacher(raw: RawDataset, config: RademacherConfig, *, log: Callable[[str], None] = print
               ) -> list[RademacherPoint]:
    """R_n estimates for every n in config.sizes (see the module docstring)."""
    config.validate()
    points = []
    for n in config.sizes:
        x = sample_inputs(raw, n, config)
        draws = []
        for d in range(config.draws):
            draw = correlation_draw(x, signs(n, config.seed, d), config, d)
            how = "least squares" if config.model == "linear" else f"{draw.epochs} epochs"
            log(f"  {config.model} n={n} draw {d + 1}/{config.draws}: sign {draw.sign:.3f}, "
                f"clip {draw.clip:.3f}, {'fitted' if draw.fitted else 'not fitted'} ({how}, "
                f"{draw.seconds:.1f}s)")
            draws.append(draw)
        points.append(RademacherPoint(config.model, n, draws))
    return points
