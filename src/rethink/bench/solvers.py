"""Benchmarks of the theory code and the data layer: kernel interpolation against n (ours, scipy,
scikit-learn, the FLOP floor), Theorem 1's construction against n, cold and warm dataset loads.

Each kernel fit runs in its own process so its peak memory (ru_maxrss) is its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from typing import Any

import torch

from rethink.data.sources import load_dataset
from rethink.store import Store


def _failure(proc: subprocess.CompletedProcess) -> str | None:
    """Why a subprocess failed (its signal, or its last stderr line), or None if it succeeded."""
    if proc.returncode < 0:
        return f"killed by signal {-proc.returncode}"
    if proc.returncode != 0:
        return (proc.stderr.strip().splitlines() or ["failed"])[-1]
    return None


def _python(code: str, *args: str) -> dict[str, Any]:
    """Run `code` in a fresh interpreter; it prints one JSON object as its last line."""
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    error = _failure(proc)
    return {"error": error} if error else json.loads(proc.stdout.strip().splitlines()[-1])


def kernel_fit(
    n: int, *, data_dir: str | None, cache_dir: str | None, test_size: int = 1000
) -> dict[str, Any]:
    """`rethink kernel fit` on n MNIST digits (RBF, sigma 5) in a subprocess: time by phase, peak."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "rethink",
            "kernel",
            "fit",
            "--dataset",
            "mnist",
            "--bandwidth",
            "5",
            "--train-size",
            str(n),
            "--test-size",
            str(test_size),
            "--out",
            tmp,
        ]
        cmd += ["--data-dir", str(data_dir)] if data_dir else []
        cmd += ["--cache-dir", str(cache_dir)] if cache_dir else []
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        error = _failure(proc)
        if error:
            return {"n": n, "error": error}
        with Store(tmp, readonly=True) as store:
            result = store.theory("kernel")[-1]["result"]
    t = result["time_s"]
    return {
        "n": n,
        "seconds": t["total"],
        "fit_s": t["kernel"] + t["factorization"] + t["solve"],
        "phases": t,
        "peak_gb": result["peak_memory_bytes"] / 1e9,
        "test_error": result["test_error"],
        "residual": result["residual"],
        "d": result["dim"],
    }


def kernel_floor(n: int, d: int, peak_flops: float) -> float:
    """Seconds of the fit's unavoidable arithmetic at the measured fp32 matmul peak: the Cholesky
    (n^3 / 3) and the kernel matrix's lower triangle (n^2 d)."""
    return (n**3 / 3 + n**2 * d) / peak_flops


_REFERENCE = """
import json, resource, sys, time, torch
from rethink.data.sources import load_dataset
from rethink.theory.kernels import kernel_matrix
method, n, data_dir, cache_dir = sys.argv[1], int(sys.argv[2]), sys.argv[3] or None, sys.argv[4] or None
raw = load_dataset("mnist", data_dir, cache_dir=cache_dir)
x = (raw.train_images[:n].reshape(n, -1).double() / 255)
y = torch.nn.functional.one_hot(raw.train_labels[:n], 10).double().numpy()
t = time.perf_counter()
if method == "scipy":
    import scipy.linalg
    k = kernel_matrix(x, kernel="rbf", bandwidth=5.0).numpy()
    alpha = scipy.linalg.solve(k, y, assume_a="pos")
else:
    from sklearn.kernel_ridge import KernelRidge
    KernelRidge(alpha=1e-10, kernel="rbf", gamma=1 / (2 * 5.0**2)).fit(x.numpy(), y)
print(json.dumps({"seconds": time.perf_counter() - t,
                  "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9}))
"""


def reference_fit(method: str, n: int, *, data_dir: str | None, cache_dir: str | None) -> dict[str, Any]:
    """A float64 dense solve of the same RBF system with scipy.linalg.solve or scikit-learn's
    KernelRidge (alpha 1e-10: it needs a positive ridge), in a subprocess; 'not installed' if absent."""
    module = {"scipy": "scipy", "sklearn": "sklearn"}[method]
    probe = subprocess.run([sys.executable, "-c", f"import {module}"], capture_output=True, check=False)
    if probe.returncode != 0:
        return {"n": n, "error": f"{module} not installed (pip install 'rethink[bench]')"}
    return {"n": n, **_python(_REFERENCE, method, str(n), str(data_dir or ""), str(cache_dir or ""))}


def theorem1_construction(raw_train: torch.Tensor, sizes: list[int]) -> list[dict[str, Any]]:
    """Seconds to construct Theorem 1's 2n+d network for the first n images, random labels."""
    from rethink.theory.expressivity import fit_two_layer

    g = torch.Generator().manual_seed(0)
    rows = []
    for n in sizes:
        x = raw_train[:n].reshape(n, -1).double()
        y = torch.randint(0, 10, (n,), generator=g).double()
        t = time.perf_counter()
        model = fit_two_layer(x, y)
        rows.append(
            {
                "n": n,
                "d": x.shape[1],
                "seconds": time.perf_counter() - t,
                "weights": sum(p.numel() for p in model.parameters()),
            }
        )
    return rows


def data_loading(name: str, data_dir: str | None) -> dict[str, Any]:
    """Cold (decode the source files into a fresh cache) and warm (cached uint8 arrays) load times."""
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter()
        raw = load_dataset(name, data_dir, cache_dir=cache)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        load_dataset(name, data_dir, cache_dir=cache)
        warm = time.perf_counter() - t
    return {
        "dataset": name,
        "cold_s": cold,
        "warm_s": warm,
        "images": len(raw.train_labels) + len(raw.test_labels),
        "description": raw.description,
    }
