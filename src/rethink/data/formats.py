"""File formats of the dataset sources: bytes in, uint8 NHWC arrays out; no paths are searched.

CIFAR-10's official python batches are pickles, read by a restricted unpickler that admits numpy
arrays and nothing else (`safe_unpickle`); MNIST-style IDX files are parsed directly
(`parse_idx`, `idx_arrays`); image-folder trees are decoded by Pillow (`decode_tree`). Which files
make up a dataset is `rethink.data.sources`' business, their checksums `rethink.data.downloads`'.
"""

from __future__ import annotations

import gzip
import importlib
import io
import pickle
import struct
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from rethink.data.imagetree import CIFAR10_CLASSES, SPLITS, Tree
from rethink.errors import DataError

Arrays = dict[str, np.ndarray]  # the four arrays named in cache.ARRAY_NAMES


# ---------------------------------------------------------------------------- CIFAR-10 batches


def _numpy_attr(modules: Sequence[str], attr: str) -> Any:
    for mod in modules:  # numpy 2 moved numpy.core to numpy._core; try the new home first
        try:
            return getattr(importlib.import_module(mod), attr)
        except (ImportError, AttributeError):
            continue
    return None


def _safe_globals() -> dict[tuple[str, str], Any]:
    """The only globals a CIFAR batch may name: what rebuilding numpy arrays needs."""
    import codecs

    multiarray = ("numpy._core.multiarray", "numpy.core.multiarray")
    numeric = ("numpy._core.numeric", "numpy.core.numeric")
    table = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,  # how Python 3 protocol-2 pickles store bytes
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = _numpy_attr(multiarray, "_reconstruct")
        table[(mod, "scalar")] = _numpy_attr(multiarray, "scalar")
    for mod in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(mod, "_frombuffer")] = _numpy_attr(numeric, "_frombuffer")  # protocol 5
    return {k: v for k, v in table.items() if v is not None}


class _RefusedGlobal(pickle.UnpicklingError):
    pass


class SafeUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, numbers, strings and numpy arrays; refuses every other global.

    A pickle can only run code through globals it names (find_class); refusing all but the
    numpy array constructors means no attacker-chosen callable is ever reached.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if SafeUnpickler._allowed is None:
            SafeUnpickler._allowed = _safe_globals()
        target = SafeUnpickler._allowed.get((module, name))
        if target is None:
            raise _RefusedGlobal(f"{module}.{name}")
        return target


def safe_unpickle(data: bytes, what: str) -> Any:
    """Load a pickle that may hold only plain containers and numpy arrays, else DataError."""
    try:
        # encoding="bytes": CIFAR's batches were pickled by Python 2; keys come back as bytes
        return SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except _RefusedGlobal as e:
        raise DataError(
            f"{what}: refused to unpickle {e}: a CIFAR batch may only contain numpy arrays",
            "this is not an official CIFAR-10 batch file; delete it and download it again",
        ) from None
    except Exception as e:  # any malformed pickle: truncated, wrong type, bad opcode
        raise DataError(
            f"{what}: not a readable CIFAR batch ({type(e).__name__}: {e})",
            "the file is corrupt; delete it and download it again",
        ) from None


def _cifar_batch(obj: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N,32,32,3), labels int64) from an unpickled CIFAR-10 batch dict."""
    if not isinstance(obj, dict):
        raise DataError(
            f"{what}: expected a dict, found {type(obj).__name__}", "the file is corrupt"
        )
    get = lambda k: obj.get(k.encode(), obj.get(k))  # noqa: E731 (keys are bytes or str)
    data, labels = get("data"), get("labels")
    if not (
        isinstance(data, np.ndarray)
        and data.dtype == np.uint8
        and data.ndim == 2
        and data.shape[1] == 3072
    ):
        raise DataError(f"{what}: 'data' is not an N x 3072 uint8 array", "the file is corrupt")
    if not isinstance(labels, list | np.ndarray) or len(labels) != len(data):
        raise DataError(f"{what}: 'labels' does not match 'data' in length", "the file is corrupt")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        raise DataError(f"{what}: 'labels' are not integers", "the file is corrupt") from None
    # rows are channel-major: 1024 red, then green, then blue values, each plane row-major
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), y


def decode_cifar_batches(blobs: dict[str, bytes], where: str) -> tuple[Arrays, tuple[str, ...]]:
    """Arrays from the raw bytes of data_batch_1..5, test_batch and (optional) batches.meta."""
    train = [
        _cifar_batch(
            safe_unpickle(blobs[f"data_batch_{i}"], f"{where}/data_batch_{i}"),
            f"{where}/data_batch_{i}",
        )
        for i in range(1, 6)
    ]
    test_x, test_y = _cifar_batch(
        safe_unpickle(blobs["test_batch"], f"{where}/test_batch"), f"{where}/test_batch"
    )
    classes = CIFAR10_CLASSES
    if "batches.meta" in blobs:
        meta = safe_unpickle(blobs["batches.meta"], f"{where}/batches.meta")
        names = (
            meta.get(b"label_names", meta.get("label_names")) if isinstance(meta, dict) else None
        )
        if names is not None:
            names = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
            if names != CIFAR10_CLASSES:
                raise DataError(
                    f"{where}/batches.meta: classes {names} are not CIFAR-10's",
                    "this is not CIFAR-10; load it under another name",
                )
    arrays = {
        "train_images": np.concatenate([x for x, _ in train]),
        "train_labels": np.concatenate([y for _, y in train]),
        "test_images": test_x,
        "test_labels": test_y,
    }
    return arrays, classes


# ---------------------------------------------------------------------------- IDX files


_IDX_TYPES = {0x08: np.uint8}  # the only element type MNIST-style datasets use


def parse_idx(data: bytes, what: str, ndim: int | tuple[int, ...]) -> np.ndarray:
    """Parse IDX bytes: two zero bytes, a type code, the number of dims, big-endian uint32 dims."""
    ndims = (ndim,) if isinstance(ndim, int) else ndim
    if len(data) < 4 or data[:2] != b"\0\0":
        raise DataError(f"{what}: not an IDX file (bad magic number)", "check the file")
    code, nd = data[2], data[3]
    if code not in _IDX_TYPES:
        raise DataError(
            f"{what}: unsupported IDX element type 0x{code:02x}",
            "only unsigned-byte (0x08) IDX files are supported",
        )
    if nd not in ndims:
        raise DataError(
            f"{what}: IDX magic 0x{code:06x}{nd:02x} has {nd} dims, expected "
            f"{' or '.join(map(str, ndims))}",
            "check that images and labels are not swapped",
        )
    header = 4 + 4 * nd
    if len(data) < header:
        raise DataError(f"{what}: truncated IDX header", "the file is incomplete; copy it again")
    dims = struct.unpack(f">{nd}I", data[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        raise DataError(
            f"{what}: {len(data)} bytes but dims {dims} need {expected}",
            "the file is truncated or corrupt; copy it again",
        )
    return np.frombuffer(data, dtype=_IDX_TYPES[code], offset=header).reshape(dims)


def gunzip_if_needed(data: bytes, what: str) -> bytes:
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(
            f"{what}: corrupt gzip ({e})", "the file is incomplete; copy it again"
        ) from None



def idx_arrays(raws: dict[str, bytes], paths: dict[str, Path], what: str) -> Arrays:
    """Parse the four IDX byte strings keyed by role or MNIST stem, in train/test order."""
    keys = list(raws)  # train images, train labels, test images, test labels
    arrays: Arrays = {}
    for split, (ki, kl) in zip(SPLITS, (keys[0:2], keys[2:4]), strict=True):
        x = parse_idx(raws[ki], str(paths[ki]), (3, 4))
        y = parse_idx(raws[kl], str(paths[kl]), 1)
        if len(x) != len(y):
            raise DataError(
                f"{what}: {paths[ki].name} has {len(x)} images but {paths[kl].name} "
                f"has {len(y)} labels",
                "the two files are from different datasets",
            )
        arrays[f"{split}_images"] = np.ascontiguousarray(x[..., None] if x.ndim == 3 else x)
        arrays[f"{split}_labels"] = y.astype(np.int64)
    return arrays


# ---------------------------------------------------------------------------- images


def _decode_one(blob: bytes) -> np.ndarray | str:
    """HxWxC uint8 (C=1 for grayscale, else 3), or the reason the bytes are no image."""
    try:
        with Image.open(io.BytesIO(blob)) as im:
            if im.mode in ("1", "LA", "L"):
                im = im.convert("L") if im.mode != "L" else im
                c = 1
            else:
                im = im.convert("RGB") if im.mode != "RGB" else im
                c = 3
            w, h = im.size
            return np.frombuffer(im.tobytes(), dtype=np.uint8).reshape(h, w, c)
    except Exception as e:  # PIL raises many types for bad files; all mean "not an image"
        return f"{type(e).__name__}: {e}"


def decode_tree(tree: Tree, read: Callable[[str], bytes], what: str) -> Arrays:
    """Decode every image of `tree` into uint8 NHWC arrays; all images must share one size."""
    index = {c: i for i, c in enumerate(tree.classes)}
    order = [
        (split, c, path)
        for split in SPLITS
        for c in tree.classes
        for _, path in tree.groups.get((split, c), [])
    ]
    # Serial on purpose: a fork pool of 2 saved only 1.3 s of 9 s on 2 cores (the xz stream and
    # Pillow's per-file header parsing dominate), and forking a process that already runs
    # torch's threads risks deadlocks (Python 3.12 warns). The decode happens once per machine.
    images = [_decode_one(read(path)) for _, _, path in order]
    first = order[0][2]
    for (_, _, path), img in zip(order, images, strict=True):
        if isinstance(img, str):
            raise DataError(
                f"{what}: {path} is not a readable image ({img})",
                "remove it or replace it with a valid image",
            )
        if img.shape[:2] != images[0].shape[:2]:
            (h, w), (h0, w0) = img.shape[:2], images[0].shape[:2]
            raise DataError(
                f"{what}: {path} is {w}x{h} but {first} is {w0}x{h0}",
                "resize all images to one size",
            )
    if any(img.shape[2] == 1 for img in images) and any(img.shape[2] == 3 for img in images):
        # some grayscale among colour images: L -> RGB replicates the plane, as PIL does
        images = [np.repeat(i, 3, axis=2) if i.shape[2] == 1 else i for i in images]
    out: Arrays = {}
    for split in SPLITS:
        pick = [i for i, (s, _, _) in enumerate(order) if s == split]
        out[f"{split}_images"] = np.stack([images[i] for i in pick])
        out[f"{split}_labels"] = np.array([index[order[i][1]] for i in pick], dtype=np.int64)
    return out

