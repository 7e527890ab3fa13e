"""Training from a pack (`packed:DIR`) with the in-memory path's randomization-test semantics.

`build_packed_run_data` returns the same `RunData` as `build_run_data` does for in-memory data,
except that `train_x`, `test_x` and `train_full` are lazy views (`PreparedView`, `FullView`): an
index (a slice or an index tensor) reads just those images from the memory-mapped shards and
returns what the in-memory tensor would hold there (centre-cropped, whitened float32 NCHW on the
device in the run's memory format; or the uncropped NHWC image for crop augmentation). The loop's
`data.train_x[start:end]`, `data.train_x[idx]` and `data.train_batch(idx, gen)` work unchanged.

The same as in memory:
- the stratified --train-size / --test-size subsets (subset seed);
- label tests: `corrupt()` itself draws the labels from the corruption seed over the subset's true
  labels, so corrupted labels, the changed mask and the realized rate are identical;
- centre crop, per-image whitening, crop-augmentation padding; test labels stay true.

Different, and why:
- Pixel tests are computed ONCE over the whole pack (train and test) and stored beside it as
  corrupted shards, DIR/corrupted/<test>-seed<S>-<crop|full>[-<stats>]/, reused by every later run
  with the same test, seed, crop and statistics: recomputing them per run would rewrite the whole
  dataset (hundreds of GB for ImageNet) each time. So they are applied before the --train-size
  subset, not after it: an image's corrupted version does not depend on the subset.
- The corrupted images are drawn chunk by chunk (CHUNK images) with generators seeded by (seed,
  test, split, chunk index), so they are not the images the in-memory path draws from the same
  seed (same distribution, other draws). Exception: shuffled pixels use randperm(H*W) from the
  corruption stream (`seeded_generator(seed, "corruption")`), exactly the in-memory permutation,
  for every train and test image.
- As in memory, pixel tests apply to the centre crop at the input size (stored at that size), or
  to the whole pack-resolution image with --corrupt-before-crop.
- Gaussian: the moments are those of the whole training split (per channel or global), taken at
  the resolution the noise is stored at: the manifest's statistics when that is the pack's
  resolution, else one pass over the cropped training images. In memory they are the subset's.
  Noise is stored as float32 (4 bytes per value, 4x the pack) so nothing is rounded or clipped.
- data_hash is the pack's content hash and corruption_sha256 hashes the pack's and the corrupted
  shards' content hashes with the subset and the training labels: hashing pixels would read the
  whole pack at every start.
- Reads are synchronous, one batch when the loop asks for it; consecutive slices (evaluation
  passes) are read one batch ahead on a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rethink.config import RunConfig
from rethink.data.corruption import PIXEL_CORRUPTIONS, corrupt, random_pixels, shuffle_pixels
from rethink.data.imagetree import SPLITS
from rethink.data.packed import (
    MANIFEST,
    PackedDataset,
    ShardedImages,
    open_shards,
    read_manifest,
    shard_name,
)
from rethink.data.preprocess import prepare
from rethink.data.rundata import CROP_SLACK, RunData, needs_full_images, split_subset
from rethink.errors import ConfigError, DataError
from rethink.files import atomic_write
from rethink.seeds import seeded_generator

CORRUPTED = "corrupted"
CORRUPTED_FORMAT = "rethink-pack-corruption"
CORRUPTED_VERSION = 1
CHUNK = 64  # images per generator; part of the corrupted shards' identity


# ---------------------------------------------------------------------------- lazy views


def _center_crop_rows(rows: np.ndarray, size: int) -> np.ndarray:
    h, w = rows.shape[1:3]
    if h < size or w < size:
        raise ConfigError(f"cannot crop {h}x{w} images to {size}x{size}",
                          "choose an input size <= the image size")
    top, left = (h - size) // 2, (w - size) // 2  # as preprocess.center_crop
    return rows[:, top : top + size, left : left + size]


class _View:
    """Rows `index` of `images`, read on demand; subclasses say what a batch becomes."""

    _pool: ThreadPoolExecutor | None = None  # the read-ahead thread, started on the first slice

    def __init__(self, images: ShardedImages, index: torch.Tensor, device: torch.device) -> None:
        self.images = images
        self.index = index.cpu().to(torch.int64)
        self.device = torch.device(device)
        # an unsubsetted split: read slices as slices of the shards
        self._contiguous = bool(len(index) == 0 or (index == index[0] + torch.arange(len(index))).all())
        self._ahead: tuple[int, int, Future] | None = None

    def __len__(self) -> int:
        return len(self.index)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        if self._contiguous and len(self.index):
            base = int(self.index[0])
            return self.images.read_range(base + start, base + stop)
        return self.images.read(self.index[start:stop].numpy())

    def _slice_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows of a consecutive slice; the next slice of the same length is read meanwhile."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[:2] == (start, stop):
            rows = ahead[2].result()
        else:
            if ahead is not None:
                ahead[2].cancel()
            rows = self._rows(start, stop)
        nxt = min(stop + (stop - start), len(self))
        if stop < nxt:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="rethink-readahead")
            self._ahead = (stop, nxt, self._pool.submit(self._rows, stop, nxt))
        return rows

    def _select(self, key: Any) -> np.ndarray:
        if isinstance(key, int | np.integer):
            k = int(key) + (len(self) if key < 0 else 0)
            return self._rows(k, k + 1)
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step == 1:
                return self._slice_rows(start, max(start, stop))
            return self.images.read(self.index[start:stop:step].numpy())
        key = torch.as_tensor(key).cpu()
        if key.dtype == torch.bool:
            key = key.nonzero().squeeze(1)
        return self.images.read(self.index[key].numpy())

    def __del__(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class PreparedView(_View):
    """The eval-mode images: centre crop + per-image whitening, float32 NCHW on the device.

    Stands in for RunData.train_x / test_x: `view[a:b]` and `view[idx]` equal the in-memory
    tensor's `[a:b]` and `[idx]` (up to float rounding).
    """

    def __init__(self, images: ShardedImages, index: torch.Tensor, size: int, device: torch.device,
                 memory_format: torch.memory_format) -> None:
        super().__init__(images, index, device)
        self.size = size
        self.memory_format = memory_format
        self.channels = images.shape[3]
        self.shape = torch.Size((len(index), self.channels, size, size))
        self.dtype = torch.float32

    def __getitem__(self, key: Any) -> torch.Tensor:
        rows = self._select(key)
        # crop the uint8 rows before converting: less to copy and to move to the device
        x = torch.from_numpy(np.ascontiguousarray(_center_crop_rows(rows, self.size))).to(self.device)
        x = prepare(x, self.size).contiguous(memory_format=self.memory_format)
        return x[0] if isinstance(key, int | np.integer) else x


class FullView(_View):
    """Stands in for RunData.train_full: uncropped NHWC images (uint8, or float32 noise) on the device."""

    def __init__(self, images: ShardedImages, index: torch.Tensor, device: torch.device) -> None:
        super().__init__(images, index, device)
        self.shape = torch.Size((len(index), *images.shape[1:]))
        self.dtype = images.dtype

    def __getitem__(self, key: Any) -> torch.Tensor:
        x = torch.from_numpy(self._select(key)).to(self.device)
        return x[0] if isinstance(key, int | np.integer) else x


# ---------------------------------------------------------------------------- run data


def build_packed_run_data(
    config: RunConfig,
    ds: PackedDataset,
    *,
    memory_format: torch.memory_format = torch.contiguous_format,
    device: str | torch.device = "cpu",
    log: Callable[[str], None] = print,
) -> RunData:
    """`build_run_data` for a pack: same subsets and labels, images streamed (module docstring)."""
    device = torch.device(device)
    size = config.input_size
    if config.train_fraction < 1 or config.exclude:
        raise ConfigError(f"{ds.name}: --train-fraction and --exclude are not available for packs",
                          "use --train-size for a subset of a pack")
    if size > ds.resolution:
        raise ConfigError(f"--input-size {size} is larger than the {ds.resolution}x{ds.resolution} images "
                          f"of {ds.name}", f"pass at most {ds.resolution}, or pack at a higher --resolution")
    train_labels, test_labels = ds.train_labels, ds.test_labels
    subset = torch.arange(len(train_labels))
    test_idx = torch.arange(len(test_labels))
    if config.train_size is not None:
        subset = split_subset(train_labels, config.train_size, config.subset_seed, "train", ds.name)
    if config.test_size is not None:
        test_idx = split_subset(test_labels, config.test_size, config.subset_seed, "test", ds.name)
    train_y, test_y = train_labels[subset], test_labels[test_idx]

    # The labels come from corrupt() itself, on 1x1 stand-in images: label tests never look at
    # pixels, so the draws (and the checks of p and the convention) are the in-memory path's.
    def stand_in(n: int) -> torch.Tensor:
        return torch.zeros((1, 1, 1, 3), dtype=torch.uint8).expand(n, 1, 1, 3)

    labels = corrupt(config.corruption, stand_in(len(train_y)), train_y, stand_in(len(test_y)), test_y,
                     num_classes=ds.num_classes, seed=config.corruption_seed, p=config.p,
                     label_noise=config.label_noise, gaussian_stats=config.gaussian_stats)
    if len(labels.train_labels) and (int(labels.train_labels.max()) >= ds.num_classes
                                     or int(labels.train_labels.min()) < 0):
        raise ConfigError(f"{ds.name}: labels outside 0..{ds.num_classes - 1}", "check the dataset")

    train_images, test_images, images_hash = ds.train_images, ds.test_images, "clean"
    if config.corruption in PIXEL_CORRUPTIONS:
        stored = ds.resolution if config.corrupt_before_crop else size
        train_images, test_images, images_hash = corrupted_images(
            ds, config.corruption, config.corruption_seed, stored, config.gaussian_stats, log=log
        )

    train_full, padding = None, 0
    if needs_full_images(config, 3, ds.name):
        train_full = FullView(train_images, subset, device)
        padding = max(0, math.ceil((size + CROP_SLACK - train_images.shape[1]) / 2))

    identity = hashlib.sha256()
    for part in ("packed", ds.content_hash, images_hash):
        identity.update(f"{part}\n".encode())
    identity.update(subset.numpy().tobytes())
    identity.update(labels.train_labels.contiguous().numpy().tobytes())
    return RunData(
        train_x=PreparedView(train_images, subset, size, device, memory_format),  # type: ignore[arg-type]
        train_y=labels.train_labels.to(device),
        test_x=PreparedView(test_images, test_idx, size, device, memory_format),  # type: ignore[arg-type]
        test_y=labels.test_labels.to(device),
        changed=labels.changed.to(device),
        realized_rate=labels.realized_rate,
        subset=subset,
        classes=tuple(ds.classes),
        input_size=size,
        augment=config.augment,
        memory_format=memory_format,
        train_full=train_full,  # type: ignore[arg-type]
        crop_padding=padding,
        corruption_sha256=identity.hexdigest(),
        data_hash=ds.content_hash,
    )


# ---------------------------------------------------------------------------- corrupted shards


def corruption_dir(ds: PackedDataset, kind: str, seed: int, resolution: int, stats: str) -> Path:
    crop = "full" if resolution == ds.resolution else f"crop{resolution}"
    name = f"{kind}-seed{seed}-{crop}" + (f"-{stats}" if kind == "gaussian" else "")
    return ds.root / CORRUPTED / name


def corrupted_images(
    ds: PackedDataset, kind: str, seed: int, resolution: int, stats: str, *,
    log: Callable[[str], None] = print,
) -> tuple[ShardedImages, ShardedImages, str]:
    """(train, test, content hash) of the pixel test `kind` on the whole pack, written on first use."""
    d = corruption_dir(ds, kind, seed, resolution, stats)
    spec = {"kind": kind, "seed": seed, "resolution": resolution,
            "gaussian_stats": stats if kind == "gaussian" else None, "chunk": CHUNK,
            "pack_content_sha256": ds.content_hash,
            "streams": "derived"}  # shuffled pixels' permutation: the derived corruption stream
    opened = _open_corrupted(d, spec, ds)  # no lock needed to read (the pack may be read-only)
    if opened is not None:
        return opened
    # One writer: the ranks of a data-parallel run (or runs started together) wait for it and
    # then read its shards, instead of each writing the whole corrupted dataset again.
    with _write_lock(d, ds):
        opened = _open_corrupted(d, spec, ds)
        if opened is not None:
            return opened
        if d.exists():
            log(f"{ds.name}: {d} does not match this pack or is damaged; rewriting it")
        _write_corrupted(ds, d, spec, log)
        opened = _open_corrupted(d, spec, ds)
    if opened is None:
        raise DataError(f"{ds.name}: cannot read back {d}", f"delete {d} and rerun")
    return opened


@contextlib.contextmanager
def _write_lock(d: Path, ds: PackedDataset) -> Iterator[None]:
    import fcntl

    try:
        d.parent.mkdir(parents=True, exist_ok=True)
        f = open(d.parent / f".{d.name}.lock", "w")  # noqa: SIM115 (held for the whole block)
    except OSError as e:
        raise DataError(f"{ds.name}: cannot write corrupted shards in {d.parent} ({e.strerror})",
                        f"make {ds.root} writable, or copy the pack somewhere writable") from None
    with f:
        fcntl.flock(f, fcntl.LOCK_EX)  # blocks while another process writes the same shards
        yield


def _open_corrupted(d: Path, spec: dict[str, Any], ds: PackedDataset
                    ) -> tuple[ShardedImages, ShardedImages, str] | None:
    """The corrupted shards at `d` if they are complete and were made from this pack, else None."""
    if not (d / MANIFEST).is_file():
        return None
    try:
        m = read_manifest(d, ds.name, "")
        if m.get("format") != CORRUPTED_FORMAT or m.get("format_version") != CORRUPTED_VERSION \
                or any(m.get(k) != v for k, v in spec.items()):
            return None
        r, dtype = spec["resolution"], np.dtype(m["dtype"])
        views = []
        for split in SPLITS:
            shards = open_shards(d, m["splits"][split]["shards"], (r, r, 3), dtype, ds.name, "")
            if sum(len(s) for s in shards) != len(ds.train_images if split == "train" else ds.test_images):
                return None
            views.append(ShardedImages(shards, f"{ds.name} {d.name} {split}"))
        return views[0], views[1], str(m["content_sha256"])
    except (DataError, KeyError, TypeError, ValueError):
        return None  # derived data: a damaged copy is rewritten, not an error


def _gaussian_moments(ds: PackedDataset, resolution: int, stats: str) -> tuple[torch.Tensor, torch.Tensor]:
    if resolution == ds.resolution:
        mean, std = ds.pixel_stats(stats)
    else:  # the statistics of the cropped training images: one pass over them
        total = np.zeros(3, dtype=np.int64)
        squares = np.zeros(3, dtype=np.int64)
        for _, rows in ds.train_images.chunks(CHUNK):
            flat = _center_crop_rows(rows, resolution).reshape(-1, 3).astype(np.int64)
            total += flat.sum(0)
            squares += (flat * flat).sum(0)
        n = len(ds.train_images) * resolution * resolution
        if stats == "global":
            total, squares, n = total.sum(keepdims=True), squares.sum(keepdims=True), 3 * n
        m = total / n
        mean, std = m / 255.0, np.sqrt(np.maximum(squares / n - m * m, 0.0)) / 255.0
    return torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)


def _write_corrupted(ds: PackedDataset, d: Path, spec: dict[str, Any], log: Callable[[str], None]) -> None:
    """Apply the pixel test chunk by chunk into temp shards, then rename the folder into place."""
    kind, seed, r = spec["kind"], spec["seed"], spec["resolution"]
    dtype = np.dtype(np.float32 if kind == "gaussian" else np.uint8)
    mean = std = None
    if kind == "gaussian":
        mean, std = _gaussian_moments(ds, r, spec["gaussian_stats"])

    def apply(rows: np.ndarray, split: str, chunk: int) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(_center_crop_rows(rows, r)))
        if kind == "shuffled-pixels":  # a fresh generator each time: the in-memory path's permutation
            return shuffle_pixels(x, x[:0], seeded_generator(seed, "corruption"))[0].numpy()
        gen = seeded_generator(seed, kind, split, chunk)
        if kind == "random-pixels":
            return random_pixels(x, gen).numpy()
        # corruption.gaussian_pixels' noise, with the whole training split's moments
        z = torch.randn(x.shape, generator=gen, dtype=torch.float32)
        return z.mul_(std).add_(mean).numpy()

    try:
        tmp = d.parent / f".{d.name}.{os.getpid()}-{time.monotonic_ns()}.tmp"
        tmp.mkdir()
    except OSError as e:
        raise DataError(f"{ds.name}: cannot write corrupted shards in {d.parent} ({e.strerror})",
                        f"make {ds.root} writable, or copy the pack somewhere writable") from None
    total = len(ds.train_images) + len(ds.test_images)
    log(f"{ds.name}: writing the {kind} images once ({total:,} images at {r}x{r}, {dtype}) to {d}")
    t0 = time.perf_counter()
    try:
        splits = {}
        for split, images in (("train", ds.train_images), ("test", ds.test_images)):
            counts = [len(s) for s in images.shards]  # same shard sizes as the pack
            shards = [np.lib.format.open_memmap(tmp / shard_name(split, j), mode="w+", dtype=dtype,
                                                shape=(c, r, r, 3)) for j, c in enumerate(counts)]
            hashes = [hashlib.sha256() for _ in shards]
            out = ShardedImages(shards, str(tmp))  # only for its offsets
            for chunk, (start, rows) in enumerate(images.chunks(CHUNK)):
                block = apply(rows, split, chunk)
                for j in range(len(shards)):  # a chunk may straddle two shards
                    a, b = max(start, out.offsets[j]), min(start + len(block), out.offsets[j + 1])
                    if a < b:
                        part = block[a - start : b - start]
                        shards[j][a - out.offsets[j] : b - out.offsets[j]] = part
                        hashes[j].update(np.ascontiguousarray(part))
            for s in shards:
                s.flush()
            splits[split] = {"count": len(images), "shards": [
                {"name": shard_name(split, j), "count": c, "sha256": h.hexdigest()}
                for j, (c, h) in enumerate(zip(counts, hashes, strict=True))]}
            del shards, out
        m = {"format": CORRUPTED_FORMAT, "format_version": CORRUPTED_VERSION, **spec, "dtype": dtype.str,
             "splits": splits, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        if mean is not None:
            m["mean"], m["std"] = mean.tolist(), std.tolist()
        m["content_sha256"] = hashlib.sha256(json.dumps({k: v for k, v in m.items() if k != "created"},
                                                        sort_keys=True).encode()).hexdigest()
        atomic_write(tmp / MANIFEST, json.dumps(m, indent=1).encode())
        if d.exists():  # damaged or from another pack: move it aside first
            aside = d.parent / f".{d.name}.old-{os.getpid()}-{time.monotonic_ns()}"
            os.replace(d, aside)
            shutil.rmtree(aside, ignore_errors=True)
        os.replace(tmp, d)
    except OSError as e:
        raise DataError(f"{ds.name}: cannot write corrupted shards to {d} ({e.strerror or e})",
                        "free some space, or make the pack folder writable") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log(f"{ds.name}: wrote {d.name} in {time.perf_counter() - t0:.0f}s; later runs reuse it")
