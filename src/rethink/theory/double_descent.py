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
from dataclasses import dataclass

import torch
from torch import Tensor

from rethink.seeds import seeded_generator

FEATURES = ("rff", "relu")


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
