"""What a benchmark ran on: CPU, cores, torch build, precision support, GPU."""

from __future__ import annotations

import os
from typing import Any

import torch

from rethink.machine import cpu_flags, native_bf16, software_versions


def describe_machine(device: torch.device | None = None) -> dict[str, Any]:
    flags = cpu_flags()
    info = software_versions(device)
    info.update(
        logical_cpus=os.cpu_count(),
        usable_cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        simd=sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"}),
        bf16_native=native_bf16(device or torch.device("cpu")),
        mkl=torch.backends.mkl.is_available(),
        mkldnn=torch.backends.mkldnn.is_available(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),  # the ATen kernels in use, e.g. AVX512
        memory_gb=round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
    )
    return info
