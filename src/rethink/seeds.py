"""Independent random streams from one seed: each purpose gets its own seed, the first 63 bits of
sha256("seed:purpose:..."), so no two uses share (or advance) a global RNG stream."""

from __future__ import annotations

import hashlib

import torch


def derive_seed(seed: int, *keys: object) -> int:
    """An independent 63-bit seed for (seed, purpose, epoch...): no shared global RNG streams."""
    text = ":".join(str(k) for k in (seed, *keys))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seeded_generator(seed: int, *keys: object) -> torch.Generator:
    """A CPU generator seeded with `derive_seed(seed, *keys)`."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))
