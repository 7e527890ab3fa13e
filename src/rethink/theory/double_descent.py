"""Model-wise double descent, exactly: minimum-norm least squares on N random features.

Belkin, Hsu, Ma and Mandal, "Reconciling modern machine-learning practice and the classical
bias-variance trade-off" (PNAS 2019), Section "Random Fourier features": fit n training points
with the N random Fourier features

    phi(x) = sqrt(2 / N) cos(W x / sigma + b),   W ~ N(0, I)^(N x d),  b ~ U[0, 2 pi)^N,

by the least-squares solution of minimum norm (for N < n the least-squares fit, for N >= n the
interpolant of smallest norm, the limit of SGD from 0, Section 5 of Zhang et al.). Test error and
the norm of the solution peak at the interpolation threshold N = n and fall beyond it. ReLU random
features, max(0, W x / sigma + b) / sqrt(N), are the other family they measure.

The solution is exact: `torch.linalg.lstsq` with the SVD-based driver in float64 gives the
least-squares solution of minimum norm on either side of N = n (with rank-deficient features too).
Targets are one-hot over the classes; the prediction is the argmax.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import Tensor

from rethink.config import RunConfig
from rethink.errors import ConfigError
from rethink.options import numbers, option, positive_int
from rethink.seeds import seeded_generator

FEATURES = ("rff", "relu")
KIND = "double-descent"  # its rows in the theory table


def random_features(x: Tensor, n_features: int, *, kind: str = "rff", bandwidth: float = 1.0,
                    seed: int = 0) -> tuple[Tensor, Tensor]:
    """(W, b) of `n_features` random features for inputs of dimension x.shape[1], float64, drawn
    from a stream of their own (`seeds.seeded_generator(seed, "random-features", N)`)."""
    if kind not in FEATURES:
        raise ValueError(f"unknown random features {kind!r}; choose one of {', '.join(FEATURES)}")
    g = seeded_generator(seed, "random-features", n_features)
    w = torch.randn(x.shape[1], n_features, generator=g, dtype=torch.float64) / bandwidth  # (d, N)
    if kind == "rff":
        b = torch.rand(n_features, generator=g, dtype=torch.float64) * 2 * math.pi
    else:
        b = torch.zeros(n_features, dtype=torch.float64)  # ReLU features max(0, <v, x>): no offset
    return w, b


def featurize(x: Tensor, w: Tensor, b: Tensor, kind: str = "rff") -> Tensor:
    """(n, N) features of the (n, d) inputs: sqrt(2/N) cos(xW + b), or max(0, xW + b) / sqrt(N)."""
    z = x.double() @ w + b
    n_features = w.shape[1]
    if kind == "rff":
        return torch.cos(z) * math.sqrt(2.0 / n_features)
    return torch.relu(z) / math.sqrt(n_features)


def min_norm_least_squares(phi: Tensor, y: Tensor) -> Tensor:
    """argmin ||a|| over the minimizers of ||phi a - y||: (N, K) for (n, N) features, (n, K) targets."""
    return torch.linalg.lstsq(phi.double(), y.double(), driver="gelsd").solution


@dataclass(frozen=True)
class DoubleDescentPoint:
    """One fit: N features for n training points; errors are 0-1 (argmax against the labels)."""

    n_features: int
    n_train: int
    train_error: float
    test_error: float
    train_mse: float  # mean over points of the squared error of the one-hot fit
    norm: float  # ||a||_F of the solution

    @property
    def ratio(self) -> float:
        return self.n_features / self.n_train


def fit_point(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, n_features: int, *,
              num_classes: int, kind: str = "rff", bandwidth: float = 1.0,
              seed: int = 0) -> DoubleDescentPoint:
    """Fit N random features by minimum-norm least squares and measure it."""
    w, b = random_features(train_x, n_features, kind=kind, bandwidth=bandwidth, seed=seed)
    phi = featurize(train_x, w, b, kind)
    target = torch.nn.functional.one_hot(train_y, num_classes).double()
    a = min_norm_least_squares(phi, target)
    fitted = phi @ a
    predicted = featurize(test_x, w, b, kind) @ a
    return DoubleDescentPoint(
        n_features=n_features, n_train=len(train_y),
        train_error=float((fitted.argmax(1) != train_y).double().mean()),
        test_error=float((predicted.argmax(1) != test_y).double().mean()),
        train_mse=float(((fitted - target) ** 2).sum(1).mean()),
        norm=float(a.norm()),
    )


def sweep(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, ratios: list[float], *,
          num_classes: int, kind: str = "rff", bandwidth: float = 1.0, seed: int = 0,
          log=print) -> list[DoubleDescentPoint]:
    """`fit_point` at N = round(ratio x n) for each ratio (N = n exactly at ratio 1)."""
    n = len(train_y)
    points = []
    for ratio in ratios:
        point = fit_point(train_x, train_y, test_x, test_y, max(1, round(ratio * n)),
                          num_classes=num_classes, kind=kind, bandwidth=bandwidth, seed=seed)
        log(f"N/n = {point.ratio:.2f} (N = {point.n_features}): train error "
            f"{100 * point.train_error:.2f}%, test error {100 * point.test_error:.2f}%, "
            f"norm {point.norm:.4g}")
        points.append(point)
    return points


@dataclass(frozen=True)
class DoubleDescentConfig:
    """One sweep over N/n; its fields are the command's options."""

    dataset: str = option("mnist", "mnist, cifar10, folder:PATH or idx:PATH")
    train_size: int = option(1000, "training examples n (a stratified subset)", parse=positive_int)
    test_size: int = option(2000, "test examples (a stratified subset)", parse=positive_int)
    features: str = option("rff", "random Fourier (rff) or ReLU features", choices=FEATURES)
    ratios: tuple[float, ...] = option((0.1, 0.5, 0.9, 1.0, 1.1, 2.0, 5.0, 10.0), "N/n values", parse=numbers)
    # where the bandwidth is not given: half the median distance of 1,000 training points, as
    # rethink kernel fit chooses for a dataset it has no measured bandwidth for
    bandwidth: float | None = option(None, "feature scale sigma (default: 0.5 x the median distance)")
    noise: float = option(0.0, "fraction of training labels changed to another class (0: none)")
    seed: int = option(0, "subsets, label noise and features")

    def validate(self) -> DoubleDescentConfig:
        """Check every field before any data is read."""
        if self.features not in FEATURES:
            raise ConfigError(f"unknown features {self.features!r}", f"choose one of {', '.join(FEATURES)}")
        if not self.ratios or any(not r > 0 for r in self.ratios):
            raise ConfigError(f"ratios {self.ratios} must be positive", "e.g. --ratios 0.5,1,2")
        if not 0 <= self.noise <= 1:
            raise ConfigError(f"noise={self.noise} is outside [0, 1]", "e.g. --noise 0.2")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ConfigError(f"bandwidth={self.bandwidth} must be positive", "fix --bandwidth")
        self.run_config().validate()
        return self

    def run_config(self) -> RunConfig:
        """The training path's subsets and labels (incorrect-only noise at rate `noise`)."""
        noisy = self.noise > 0
        return RunConfig(dataset=self.dataset, train_size=self.train_size, test_size=self.test_size,
                         corruption="partial" if noisy else "true", p=self.noise if noisy else None,
                         label_noise="incorrect-only", subset_seed=self.seed, corruption_seed=self.seed)


def measure(config: DoubleDescentConfig, raw: Any, log: Callable[[str], None] = print
            ) -> tuple[DoubleDescentConfig, dict[str, Any]]:
    """The sweep of `config` on the loaded dataset `raw`: the config with its bandwidth filled in,
    and the result (points, summary, realized noise) as the theory table stores it."""
    from rethink.data.pipeline import randomized_split  # late: theory's data path is the runs'
    from rethink.theory.features import pixel_features
    from rethink.theory.kernel_runs import median_bandwidth

    data, _ = randomized_split(config.run_config(), raw)
    x, xt = pixel_features(data.train_images).double(), pixel_features(data.test_images).double()
    if config.bandwidth is None:
        config = replace(config, bandwidth=median_bandwidth(x))
    log(f"{raw.name}: n = {len(x):,} training and {len(xt):,} test images, {config.features} features, "
        f"bandwidth {config.bandwidth:.3g}, {100 * data.realized_rate:.1f}% of training labels changed")
    points = sweep(x, data.train_labels, xt, data.test_labels, list(config.ratios),
                   num_classes=raw.num_classes, kind=config.features, bandwidth=config.bandwidth,
                   seed=config.seed)
    peak = max(points, key=lambda p: p.test_error)
    summary = (f"{config.features} features on {len(x):,} {raw.name} images ({100 * config.noise:.0f}% label "
               f"noise): test error peaks at N/n = {peak.ratio:.2f} ({100 * peak.test_error:.1f}%), "
               + ", ".join(f"{p.ratio:g}: {100 * p.test_error:.1f}%" for p in points))
    return config, {"points": [{**asdict(p), "ratio": p.ratio} for p in points], "summary": summary,
                    "realized_noise": data.realized_rate}


def measure_and_record(config: DoubleDescentConfig, raw: Any, store: Any,
                       log: Callable[[str], None] = print) -> tuple[str, dict[str, Any]]:
    """`measure`, then record the result in the store's theory table (kind "double-descent");
    returns its key and the result."""
    from rethink.machine import software_versions

    config, result = measure(config, raw, log)
    return store.record_theory(KIND, asdict(config), result, software_versions()), result
