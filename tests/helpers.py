"""Helpers the test modules share: small datasets on disk and in memory, store dumps, process
trees. One place, imported as `from helpers import ...` (pytest puts tests/ on the path)."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import sqlite3
import struct
import tarfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from rethink.data.imagetree import CIFAR10_CLASSES
from rethink.data.sources import RawDataset


def descendants(root: int) -> dict[int, bytes]:
    """pid -> command line of every process below `root`, from /proc (torchrun starts its ranks
    in their own sessions; Ray's workers are the raylet's children)."""
    parents: dict[int, list[int]] = {}
    cmdlines: dict[int, bytes] = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()  # after "(comm)"
            cmdlines[int(proc.name)] = (proc / "cmdline").read_bytes()
        except OSError:  # exited meanwhile
            continue
        parents.setdefault(int(fields[1]), []).append(int(proc.name))
    found, todo = [], [root]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return {pid: cmdlines[pid] for pid in found}


CLASSES = tuple(f"c{i}" for i in range(10))


def make_raw(n_train: int = 200, n_test: int = 100, size: int = 10, seed: int = 0) -> RawDataset:
    """Ten classes of 10x10 RGB images, each class a noisy version of its own template."""
    g = torch.Generator().manual_seed(seed)
    templates = torch.randint(0, 256, (10, size, size, 3), generator=g).float()

    def split(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        labels = torch.arange(n) % 10
        noise = torch.randn(n, size, size, 3, generator=g) * 30
        return (templates[labels] + noise).clamp(0, 255).to(torch.uint8), labels

    (xtr, ytr), (xte, yte) = split(n_train), split(n_test)
    return RawDataset(
        name="synthetic",
        train_images=xtr,
        train_labels=ytr,
        test_images=xte,
        test_labels=yte,
        classes=CLASSES,
        source_hash="s",
        content_hash="c",
        description="synthetic test data",
    )


SMALL = dict(dataset="synthetic", input_size=8, batch_size=32, lr=0.05, max_epochs=30)


def make_image_folder(root: Path, n_train: int = 12, n_test: int = 10, size: int = 32) -> Path:
    """Ten classes of small RGB PNGs, each class its own colour pattern plus noise."""
    rng = np.random.default_rng(0)
    for split, count in (("train", n_train), ("test", n_test)):
        for k in range(10):
            folder = root / split / f"class{k}"
            folder.mkdir(parents=True)
            base = rng.integers(0, 256, (size, size, 3))
            for i in range(count):
                img = np.clip(base + rng.normal(0, 40, base.shape), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    return root


TIMINGS = ("wall_time", "train_time", "eval_time", "started_at", "finished_at", "versions")


def dump_store(db_path: Path) -> tuple[list, list, list]:
    db = sqlite3.connect(db_path)
    db.row_factory = sqlite3.Row
    runs = [
        {k: r[k] for k in r.keys() if k not in TIMINGS}  # noqa: SIM118 (Row iterates values)
        for r in db.execute("SELECT * FROM runs ORDER BY run_id")
    ]
    epochs = [
        {k: r[k] for k in r.keys() if k not in TIMINGS}  # noqa: SIM118
        for r in db.execute("SELECT * FROM epochs ORDER BY run_id, epoch")
    ]
    points = [tuple(r) for r in db.execute("SELECT * FROM sweep_points ORDER BY experiment, labels")]
    return runs, epochs, points


class Py2Pickler(pickle._Pickler):
    """Writes pickles the way Python 2's cPickle wrote CIFAR's batches: str as byte strings,
    numpy's array constructor under its old module name `numpy.core.multiarray`."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2str(self, obj):
        b = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(b) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(b)]) + b)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(b)) + b)
        self.memoize(obj)

    def save_global(self, obj, name=None):
        module = {"numpy._core.multiarray": "numpy.core.multiarray"}.get(obj.__module__, obj.__module__)
        self.write(pickle.GLOBAL + f"{module}\n{obj.__name__}\n".encode())
        self.memoize(obj)

    dispatch[str] = save_py2str
    dispatch[bytes] = save_py2str
    dispatch[type] = save_global


def py2_dumps(obj) -> bytes:
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def fake_cifar_batches(d: Path, per_batch: int = 4, seed: int = 0) -> dict[str, np.ndarray]:
    """Tiny official-format batches; returns the expected decoded arrays."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    imgs, labs = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=per_batch)]
        (d / name).write_bytes(py2_dumps({b"batch_label": b"x", b"data": data, b"labels": labels}))
        imgs[name], labs[name] = data, labels
    names = [n.encode() for n in CIFAR10_CLASSES]
    (d / "batches.meta").write_bytes(py2_dumps({b"label_names": names, b"num_vis": 3072}))

    def nhwc(rows):
        return rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    train = [f"data_batch_{i}" for i in range(1, 6)]
    return {
        "train_images": np.concatenate([nhwc(imgs[n]) for n in train]),
        "train_labels": np.concatenate([labs[n] for n in train]).astype(np.int64),
        "test_images": nhwc(imgs["test_batch"]),
        "test_labels": np.array(labs["test_batch"], dtype=np.int64),
    }


def write_image(path: Path, array: np.ndarray, fmt: str = "PNG") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = "L" if array.ndim == 2 else "RGB"
    Image.fromarray(array, mode).save(path, format=fmt)


def make_tree(root: Path, classes=("b", "a", "c"), n=(3, 2), size=(6, 5), gray=False, seed=0):
    """{train,test}/<class>/<i>.png with random pixels; returns {(split, class, i): array}."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if gray else (size[1], size[0], 3)
    out = {}
    for split, count in zip(("train", "test"), n, strict=True):
        for c in classes:
            for i in range(count):
                a = rng.integers(0, 256, size=shape, dtype=np.uint8)
                write_image(root / split / c / f"{i}.png", a)
                out[(split, c, i)] = a
    return out


def tar_dir(src: Path, dest: Path, mode: str, arcname: str | None = None) -> Path:
    with tarfile.open(dest, mode) as tf:
        tf.add(src, arcname=arcname or src.name)
    return dest


def idx_bytes(a: np.ndarray) -> bytes:
    return struct.pack(">BBBB", 0, 0, 0x08, a.ndim) + struct.pack(f">{a.ndim}I", *a.shape) + a.tobytes()


def write_idx_dir(d: Path, n=(12, 5), gz=True, test_prefix="t10k", seed=0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for split, prefix, count in (("train", "train", n[0]), ("test", test_prefix, n[1])):
        x = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        y = (np.arange(count) % 10).astype(np.uint8)
        for kind, a in (("images-idx3-ubyte", x), ("labels-idx1-ubyte", y)):
            raw = idx_bytes(a)
            name = f"{prefix}-{kind}"
            if gz:
                (d / f"{name}.gz").write_bytes(gzip.compress(raw))
            else:
                (d / name).write_bytes(raw)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x[..., None], y.astype(np.int64)
    return arrays


class EvilPickle:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))
