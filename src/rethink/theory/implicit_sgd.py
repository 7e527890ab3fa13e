"""SGD's implicit regularization on a linear model: Section 5 of Zhang et al. (2017).

For an underdetermined least-squares problem X w = y (X: n x d real data with d > n and rank n)
the SGD update w <- w - eta (w.x_i - y_i) x_i never leaves w_0 + span(x_1, ..., x_n). Started at
w_0 = 0 it can only converge to the interpolant in the row space, which is the minimum-norm
solution w* = X^T (X X^T)^-1 y (the paper's Eq. 3). Started anywhere else it converges to
w* + (I - P) w_0 (P the projector on the row space): another interpolant, with norm
sqrt(|w*|^2 + |(I - P) w_0|^2) > |w*|. `run_sgd` shows both, printing the relative distance to
w* as it trains. `min_norm_comparison` shows the paper's other point: the minimum norm does not
predict generalization (a feature map can give a larger norm and a lower test error).

Targets are one-hot {0, 1} rows (Y: n x classes, W: d x classes); errors are argmax errors.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from rethink.errors import ConfigError
from rethink.seeds import seeded_generator

Tensor = torch.Tensor


@dataclass(frozen=True)
class SGDConfig:
    epochs: int = 1000
    lr: float | None = None  # default: 1 / max_i |x_i|^2 (each step at most projects onto x_i's fit)
    init_scale: float = 0.05  # std of the random start's entries
    seed: int = 0
    log_every: int = 100  # epochs between progress lines


@dataclass
class SGDRun:
    start: str  # "zero" or "random"
    history: list[dict[str, float]] = field(default_factory=list)  # epoch, loss, norm, distance
    weights: Tensor | None = None
    norm: float = 0.0
    distance: float = 0.0  # |W - W*| / |W*|
    train_loss: float = 0.0
    train_error: float = 0.0
    test_error: float = 0.0
    predicted_distance: float = 0.0  # |W - (W* + (I - P) W0)| / |W*|: 0 if SGD went where theory says


def min_norm_solution(x: Tensor, y: Tensor) -> Tensor:
    """W* = X^T (X X^T)^-1 Y in float64; refuses rank-deficient X (no exact interpolation)."""
    x, y = x.double(), y.double()
    n, d = x.shape
    rank = int(torch.linalg.matrix_rank(x))
    if d <= n or rank < n:
        raise ConfigError(f"X is {n} x {d} with rank {rank}: X w = y has no unique min-norm interpolant",
                          "use fewer examples than features (and distinct examples)")
    return x.T @ torch.linalg.solve(x @ x.T, y)


def argmax_error(scores: Tensor, labels: Tensor) -> float:
    return float((scores.argmax(1) != labels).double().mean())


def sgd(x: Tensor, y: Tensor, w0: Tensor, config: SGDConfig,
        on_epoch: Callable[[int, Tensor], None] | None = None) -> Tensor:
    """Plain SGD on (1/2) |x_i.W - y_i|^2, one example per step, a fresh permutation per epoch."""
    # The steps are tiny (d x classes); numpy's per-call overhead is a fraction of torch's, and
    # torch's thread pool only adds waiting on a shared machine. w is a view of the returned tensor.
    x_np, y_np = x.double().numpy(), y.double().numpy()
    w = w0.double().clone()
    w_np = w.numpy()
    lr = config.lr if config.lr is not None else 1.0 / float((x_np * x_np).sum(1).max())
    g = seeded_generator(config.seed, "sgd-order")
    for epoch in range(1, config.epochs + 1):
        for i in torch.randperm(len(x_np), generator=g).tolist():
            xi = x_np[i]
            e = xi @ w_np - y_np[i]  # (classes,)
            w_np -= lr * np.outer(xi, e)
        if on_epoch:
            on_epoch(epoch, w)
    return w


def run_sgd(x: Tensor, labels: Tensor, x_test: Tensor, labels_test: Tensor, config: SGDConfig = SGDConfig(),
            log: Callable[[str], None] | None = None) -> tuple[Tensor, list[SGDRun]]:
    """SGD from W = 0 and from a random W0 on the least-squares fit of one-hot labels.

    Returns W* and the two runs. Each progress line gives the epoch, the training loss, |W| and
    the relative distance |W - W*| / |W*|.
    """
    if config.epochs < 1 or config.init_scale <= 0 or config.log_every < 1:
        raise ConfigError(f"bad SGD config {config}", "epochs, log_every >= 1 and init_scale > 0")
    x, x_test = x.double(), x_test.double()
    classes = int(max(labels.max(), labels_test.max())) + 1
    y = torch.nn.functional.one_hot(labels, classes).double()
    w_star = min_norm_solution(x, y)
    star_norm = float(w_star.norm())
    projector_q = torch.linalg.qr(x.T).Q  # (d, n): orthonormal basis of the row space
    g = seeded_generator(config.seed, "sgd-start")
    starts = {"zero": torch.zeros_like(w_star),
              "random": torch.randn(w_star.shape, generator=g, dtype=torch.float64) * config.init_scale}
    runs = []
    for name, w0 in starts.items():
        run, t0 = SGDRun(start=name), time.time()

        def on_epoch(epoch: int, w: Tensor, run: SGDRun = run, t0: float = t0, name: str = name) -> None:
            if epoch % config.log_every and epoch != config.epochs:
                return
            row = {"epoch": epoch, "loss": float(((x @ w - y) ** 2).sum(1).mean() / 2),
                   "norm": float(w.norm()), "distance": float((w - w_star).norm()) / star_norm}
            run.history.append(row)
            if log:
                log(f"sgd from {name}: epoch {epoch}, train loss {row['loss']:.2e}, |W| {row['norm']:.4f}, "
                    f"|W - W*|/|W*| {row['distance']:.2e} ({time.time() - t0:.0f} s)")

        w = sgd(x, y, w0, config, on_epoch)
        predicted = w_star + w0 - projector_q @ (projector_q.T @ w0)  # W* + (I - P) W0
        run.weights, run.norm = w, float(w.norm())
        run.distance = float((w - w_star).norm()) / star_norm
        run.predicted_distance = float((w - predicted).norm()) / star_norm
        run.train_loss = float(((x @ w - y) ** 2).sum(1).mean() / 2)
        run.train_error = argmax_error(x @ w, labels)
        run.test_error = argmax_error(x_test @ w, labels_test)
        runs.append(run)
    return w_star, runs


def min_norm_comparison(feature_sets: dict[str, tuple[Tensor, Tensor]], labels: Tensor,
                        labels_test: Tensor) -> list[dict[str, float | str]]:
    """For each named (train features, test features): the min-norm linear interpolant's norm,
    train error and test error (the paper: norm is "not predictive of generalization")."""
    classes = int(max(labels.max(), labels_test.max())) + 1
    y = torch.nn.functional.one_hot(labels, classes).double()
    rows: list[dict[str, float | str]] = []
    for name, (x, x_test) in feature_sets.items():
        w = min_norm_solution(x, y)
        rows.append({"features": name, "dim": x.shape[1], "norm": float(w.norm()),
                     "train_error": argmax_error(x.double() @ w, labels),
                     "test_error": argmax_error(x_test.double() @ w, labels_test),
                     "feature_rms": float(x.double().pow(2).mean().sqrt())})
    return rows

