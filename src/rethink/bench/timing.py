"""Repeated timing (median, min, max after warm-up) and the machine's matmul peak."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch

PRECISION_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Timing:
    """Seconds per repetition: median, min and max over `reps` timed repetitions."""

    median: float
    low: float
    high: float
    reps: int

    @classmethod
    def of(cls, samples: list[float]) -> Timing:
        return cls(statistics.median(samples), min(samples), max(samples), len(samples))

    def rate(self, work: float) -> dict[str, float]:
        """`work` per second (e.g. images/s): median, and min/max from the slowest/fastest rep."""
        return {"median": work / self.median, "low": work / self.high, "high": work / self.low}

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_reps(fn: Callable[[], Any], *, warmup: int = 1, reps: int = 5) -> Timing:
    """Call fn `warmup` times untimed, then `reps` times, each timed on its own."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t)
    return Timing.of(samples)


def matmul_peak(precision: str, *, size: int = 2048, reps: int = 5, device: str = "cpu") -> dict[str, float]:
    """FLOP/s of a square matmul at `precision` (2 size^3 flops): the machine's practical peak."""
    dtype = PRECISION_DTYPES[precision]
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(size, size, generator=g).to(device=device, dtype=dtype) for _ in range(2))

    def product() -> None:
        a @ b
        if a.is_cuda:
            torch.cuda.synchronize()

    timing = time_reps(product, warmup=2, reps=reps)
    return {**timing.rate(2.0 * size**3), "size": size}
