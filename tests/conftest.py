"""Shared fixtures. Tests never write outside pytest's temporary directories.

Real data is found at $RETHINK_DATA, else ../shared/data beside the repository; tests that need
it are marked `realdata` and skipped when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Tests marked `bf16` train or compute in bf16: skipped where bf16 is emulated (a CPU with AVX2
    alone runs a bf16 matmul ~20-100x slower than fp32, so they would take minutes, not seconds).
    RETHINK_BF16_NATIVE=0 takes that path on any machine."""
    if item.get_closest_marker("bf16") is not None:
        import torch

        from rethink.machine import bf16_support

        native, why = bf16_support(torch.device("cpu"))
        if not native:
            pytest.skip(f"bf16 is {why}: emulated, too slow for a test")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--soak", type=int, default=0, metavar="N",
                     help="tests/test_faults.py: N extra runs killed at random points until they finish")


@pytest.fixture(scope="session", autouse=True)
def _isolated_array_cache(tmp_path_factory: pytest.TempPathFactory):
    """Point the decoded-array cache at a per-session temp dir, so CIFAR decodes once per run."""
    old = os.environ.get("RETHINK_CACHE")
    os.environ["RETHINK_CACHE"] = str(tmp_path_factory.mktemp("rethink-arrays"))
    yield Path(os.environ["RETHINK_CACHE"])
    if old is None:
        os.environ.pop("RETHINK_CACHE", None)
    else:
        os.environ["RETHINK_CACHE"] = old


@pytest.fixture
def one_torch_thread():
    """Small tensor problems: on a shared 2-core CPU a second thread only adds thread-pool waits."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real datasets (read-only); skips the test when they are absent."""
    d = Path(os.environ.get("RETHINK_DATA") or SHARED_DATA)
    if not (d / "cifar-10-images.tar.xz").is_file() or not (d / "mnist").is_dir():
        pytest.skip(f"real data not found in {d} (set RETHINK_DATA or provide ../shared/data)")
    return d


@pytest.fixture(scope="session")
def real_cifar10(shared_data_dir: Path):
    """CIFAR-10 from the shared JPEG copy, decoded once per session into the temp cache."""
    from rethink.data import load_dataset

    return load_dataset("cifar10", shared_data_dir)


@pytest.fixture(scope="session")
def real_mnist(shared_data_dir: Path):
    from rethink.data import load_dataset

    return load_dataset("mnist", shared_data_dir)
