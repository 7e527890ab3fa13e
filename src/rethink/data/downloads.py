"""The official dataset files: where to download them, their checksums, and the download itself.

`download_file` fetches into a temporary file beside the destination, checks it and renames it
into place, trying mirrors in turn; a file that fails its checksum is deleted, never kept.
`rethink.data.sources` decides which files a dataset needs and where they go.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rethink.errors import DataError

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
)
# stem -> (md5 of the official .gz, md5 of the uncompressed IDX bytes). Copies re-compressed
# with other settings (like shared/data/mnist) match only the second; both are accepted.
MNIST_FILES = {
    "train-images-idx3-ubyte": (
        "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "6bbc9ace898e44ae57da46a324031adb",
    ),
    "train-labels-idx1-ubyte": (
        "d53e105ee54ea40749a09fcbcd1e9432",
        "a25bea736e30d166cdddb491f175f624",
    ),
    "t10k-images-idx3-ubyte": (
        "9fb629c4189551a2d022fa330f9573f3",
        "2646ac647ad5339dbf082846283269ea",
    ),
    "t10k-labels-idx1-ubyte": (
        "ec29112dd5afa0611ce80d1b7f02629c",
        "27ae3e4e09519cfbb04c329615203637",
    ),
}


# ---------------------------------------------------------------------------- checksums


def md5(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def cifar10_archive_ok(raw: bytes) -> bool:
    """Whether `raw` is the official cifar-10-python.tar.gz, by md5."""
    return md5(raw) == CIFAR10_MD5


def mnist_checksum_ok(path: Path, raw: bytes) -> bool:
    """Whether the MNIST file at `path` (uncompressed bytes `raw`) is official, by either md5."""
    gz_md5, raw_md5 = MNIST_FILES[path.name.removesuffix(".gz")]
    return md5(raw) == raw_md5 or md5(path.read_bytes()) == gz_md5


def _mnist_download_ok(stem: str) -> Callable[[Path], bool]:
    gz_md5, raw_md5 = MNIST_FILES[stem]

    def accept(path: Path) -> bool:
        data = path.read_bytes()
        try:
            return md5(data) == gz_md5 or md5(gzip.decompress(data)) == raw_md5
        except (OSError, EOFError, zlib.error):
            return False

    return accept


# ---------------------------------------------------------------------------- downloads


def _copy_with_progress(resp: Any, out: Any, label: str) -> None:
    length = resp.headers.get("Content-Length") if resp.headers else None
    total = int(length) if length and length.isdigit() else None
    # tqdm's disable=None turns the bar off when stderr is not a terminal (tests, logs)
    with tqdm(total=total, unit="B", unit_scale=True, desc=label, disable=None) as bar:
        while chunk := resp.read(1 << 20):
            out.write(chunk)
            bar.update(len(chunk))


def download_file(
    urls: Sequence[str], dest: Path, accept: Callable[[Path], bool], what: str
) -> Path:
    """Fetch the first URL that works into `dest`: temp file in the same dir, check, rename.

    `accept(tmp_path)` verifies the bytes (checksums); a file that fails is deleted and the
    next URL is tried. `dest` is never left half-written.
    """
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(
            f"{what}: cannot create {dest.parent} ({e.strerror})", "pass a writable --data-dir"
        ) from None
    reasons = []
    for url in urls:
        try:
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        except OSError as e:
            raise DataError(
                f"{what}: cannot write to {dest.parent} ({e.strerror})",
                "pass a writable --data-dir",
            ) from None
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                _copy_with_progress(resp, out, dest.name)
            if accept(Path(tmp)):
                os.replace(tmp, dest)
                return dest
            reasons.append(f"{url}: checksum mismatch")
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
            reasons.append(f"{url}: {getattr(e, 'reason', e)}")
        finally:
            Path(tmp).unlink(missing_ok=True)
    raise DataError(
        f"{what}: could not download {dest.name} ({'; '.join(reasons)})",
        f"check the network, or place {dest.name} in {dest.parent} by hand",
    )


def download_cifar10(dest: Path) -> Path:
    """The official CIFAR-10 archive into `dest` (cifar-10-python.tar.gz), md5-checked."""
    return download_file([CIFAR10_URL], dest, lambda p: cifar10_archive_ok(p.read_bytes()), "cifar10")


def download_mnist(stem: str, dest: Path) -> Path:
    """MNIST's `stem`.gz into `dest` from the first mirror that has it, md5-checked."""
    urls = [m + f"{stem}.gz" for m in MNIST_MIRRORS]
    return download_file(urls, dest, _mnist_download_ok(stem), "mnist")
