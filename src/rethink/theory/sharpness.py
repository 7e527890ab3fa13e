"""PAC-Bayes sharpness: how much Gaussian weight noise a trained network tolerates.

sigma* is the largest sigma such that perturbing every parameter with u ~ N(0, sigma^2 I)
raises the training error by at most `target` (0.1, i.e. ten points, as in Jiang et al. 2020;
we bound the *increase* over the unperturbed error so that runs that did not fit are measured
on the same scale). The expectation over u is a Monte Carlo mean over `draws` draws on a fixed,
seeded subsample of the training set. The search is a bisection in log sigma over [lo, hi]:
`steps` halvings, so sigma* is one of 2^steps + 1 grid points (a union bound over the grid
costs ln(2^steps + 1) in the PAC-Bayes bound below). Batch norm uses its running statistics.

From sigma* and the initial weights theta_0 (a data-independent prior mean):
- pacbayes_flatness = 1 / sigma*^2 (Jiang et al.'s "pacbayes.flatness");
- pacbayes_init = ||theta - theta_0||^2 / (4 sigma*^2) + ln(n / sigma*) + 10 (their "pacbayes.init");
- pacbayes_bound: McAllester/Maurer's bound on the error of the *stochastic* network
  Q = N(theta, sigma*^2 I) with prior P = N(theta_0, sigma*^2 I):
      err(Q) <= err_S(Q) + sqrt((KL + ln(2 sqrt(n) / delta) + ln(2^steps + 1)) / (2 n)),
  KL = ||theta - theta_0||^2 / (2 sigma*^2), err_S(Q) the Monte Carlo estimate at sigma*.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rethink.seeds import seeded_generator


@dataclass(frozen=True)
class SharpnessConfig:
    target: float = 0.1  # allowed increase of the training error (fraction)
    draws: int = 5  # Monte Carlo draws of u per sigma
    examples: int = 1000  # training subsample the error is measured on
    lo: float = 1e-4  # search interval for sigma
    hi: float = 1.0
    steps: int = 10  # bisection halvings of [log lo, log hi]
    seed: int = 0


@dataclass(frozen=True)
class Sharpness:
    sigma: float  # sigma*
    base_error: float  # error of the unperturbed network on the subsample
    perturbed_error: float  # Monte Carlo E_u error at sigma*
    at_edge: str | None  # "lo"/"hi" when sigma* is the end of the search interval


@torch.no_grad()
def _error(model: nn.Module, x: Tensor, y: Tensor, batch: int = 1024) -> float:
    wrong = 0
    for start in range(0, len(y), batch):
        wrong += int((model(x[start : start + batch]).argmax(1) != y[start : start + batch]).sum())
    return wrong / len(y)


@torch.no_grad()
def perturbed_error(model: nn.Module, x: Tensor, y: Tensor, sigma: float, draws: int,
                    generator: torch.Generator) -> float:
    """Mean training error over `draws` copies of `model` with N(0, sigma^2) added to every parameter."""
    noisy = copy.deepcopy(model).eval()
    params = [(p, p.detach().clone()) for p in noisy.parameters()]
    total = 0.0
    for _ in range(draws):
        for p, p0 in params:
            p.copy_(p0 + sigma * torch.randn(p0.shape, generator=generator, dtype=p0.dtype))
        total += _error(noisy, x, y)
    return total / draws


def sharpness_sigma(model: nn.Module, x: Tensor, y: Tensor, config: SharpnessConfig = SharpnessConfig()
                    ) -> Sharpness:
    """Bisection for sigma* (see the module docstring) on a seeded subsample of (x, y)."""
    g = seeded_generator(config.seed, "sharpness-examples")
    if len(y) > config.examples:
        idx = torch.randperm(len(y), generator=g)[: config.examples].sort().values
        x, y = x[idx.to(x.device)], y[idx.to(y.device)]
    model = model.eval()
    base = _error(model, x, y)

    def ok(sigma: float) -> tuple[bool, float]:
        # the same noise stream for every sigma: a monotone, less noisy search
        noise = seeded_generator(config.seed, "sharpness-noise")
        err = perturbed_error(model, x, y, sigma, config.draws, noise)
        return err - base <= config.target, err

    lo, hi = math.log(config.lo), math.log(config.hi)
    good_hi, err_hi = ok(config.hi)
    if good_hi:
        return Sharpness(config.hi, base, err_hi, "hi")
    good_lo, err_lo = ok(config.lo)
    if not good_lo:
        return Sharpness(config.lo, base, err_lo, "lo")
    for _ in range(config.steps):
        mid = (lo + hi) / 2
        good, err = ok(math.exp(mid))
        if good:
            lo, err_lo = mid, err
        else:
            hi = mid
    return Sharpness(math.exp(lo), base, err_lo, None)


def pacbayes_bound(s: Sharpness, dist_sq: float, n: int, *, delta: float = 0.05, steps: int = 10) -> float:
    """The bound on the stochastic network's error; see the module docstring."""
    kl = dist_sq / (2 * s.sigma**2)
    slack = kl + math.log(2 * math.sqrt(n) / delta) + math.log(2**steps + 1)
    return s.perturbed_error + math.sqrt(slack / (2 * n))
