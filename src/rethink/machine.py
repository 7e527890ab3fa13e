"""Facts about the machine a run trains on: its device, whether it computes bf16 natively, and
the software and hardware versions stored with every run and benchmark."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rethink
from rethink.errors import ConfigError


def resolve_device(name: str) -> torch.device:
    """'auto' is the first CUDA device when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {name!r}", "pass auto, cpu, cuda or cuda:N") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r} requested but CUDA is not available", "pass --device cpu")
    return device


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo on Linux; empty elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# "0" or "1" overrides the detection below: 0 makes bf16 count as emulated (the fp32-only path of a
# CPU with AVX2 alone, testable on any machine), 1 as native.
BF16_NATIVE_ENV = "RETHINK_BF16_NATIVE"
# oneDNN ISA caps below AVX512_CORE_BF16: with one of these set, bf16 matmuls run emulated (~1 GFLOP/s)
_ONEDNN_NO_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX512_CORE", "AVX512_CORE_VNNI"}


def bf16_support(device: torch.device) -> tuple[bool, str]:
    """(native, why): whether the device computes bf16 natively, and in a few words why or why not.

    Native: AVX512-BF16 or AMX on a CPU, compute capability 8 (Ampere) or later or ROCm on a GPU.
    Elsewhere bf16 runs emulated: on a CPU with AVX2 alone a bf16 matmul is ~20-100x slower than
    fp32. $RETHINK_BF16_NATIVE=0/1 overrides the detection."""
    forced = os.environ.get(BF16_NATIVE_ENV, "")
    if forced in ("0", "1"):
        return forced == "1", f"{'native' if forced == '1' else 'not native'} ({BF16_NATIVE_ENV}={forced})"
    if forced:
        raise ConfigError(f"{BF16_NATIVE_ENV}={forced!r} is neither 0 nor 1",
                          f"set {BF16_NATIVE_ENV}=0 (bf16 emulated) or 1 (native), or unset it to detect")
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
        if torch.version.hip or torch.cuda.get_device_capability(device)[0] >= 8:
            return True, f"native on {name}"
        return False, f"not native on {name} (needs compute capability 8.0)"
    flags = cpu_flags()
    cap = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if flags & {"avx512_bf16", "amx_bf16"} and cap in _ONEDNN_NO_BF16:
        return False, f"not native: ONEDNN_MAX_CPU_ISA={cap} disables this CPU's bf16 instructions"
    if "amx_bf16" in flags:
        return True, "native on this CPU (AMX)"
    if "avx512_bf16" in flags:
        return True, "native on this CPU (AVX512-BF16)"
    simd = "AVX-512 without BF16" if "avx512f" in flags else "AVX2 only" if "avx2" in flags else "no AVX2"
    return False, f"not native on this CPU ({simd})"


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bf16 natively (see `bf16_support`): the one test for it."""
    return bf16_support(device)[0]


def emulated_bf16_warning(precision: str, device: torch.device) -> str | None:
    """One line when `precision` is bf16 on a device without native bf16, else None."""
    if precision != "bf16":
        return None
    native, why = bf16_support(device)
    if native:
        return None
    return f"bf16 is {why}, so it runs emulated, far slower than fp32 (--precision auto picks fp32 here)"


def resolve_precision(name: str, device: torch.device, *, warn: Callable[[str], None] | None = None) -> str:
    """'auto' is bf16 autocast where the device has native bf16 (validated against fp32 in
    docs/results/bf16.md: same conclusions), else fp32. An explicit 'bf16' is kept even where it is
    emulated; `warn` (if given) then gets a one-line warning."""
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    line = emulated_bf16_warning(name, device) if warn is not None else None
    if line:
        warn(line)
    return name


def warn_on_stderr(line: str) -> None:
    """How the CLI warns: one line on stderr, beside its one-line errors."""
    print(f"rethink: warning: {line}", file=sys.stderr, flush=True)


def software_versions(device: torch.device | None = None) -> dict[str, Any]:
    """What produced a result: stored with every run."""
    return {
        "rethink": rethink.__version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "device": str(device) if device is not None else None,
        "device_name": torch.cuda.get_device_name(device)
        if device is not None and device.type == "cuda"
        else None,
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(rethink.__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
