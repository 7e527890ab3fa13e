"""Packed image datasets: an image folder decoded once into memory-mappable uint8 shards.

`rethink pack SRC --out DIR` (`pack_folder`) reads an image folder in the layouts `folder:`
accepts (`train/<class>/<image>` and `test/<class>/<image>`, or `val/` as ImageNet calls its
held-out split; a directory or a tarball) and writes

    DIR/manifest.json          format version, classes, counts, resolution, shards, hashes, stats
    DIR/train-00000.npy, ...   uint8 (n, R, R, 3) NHWC, `shard_size` images per shard
    DIR/train-labels.npy       int64 (N,), label i is classes[i]
    DIR/test-00000.npy, ...    and DIR/test-labels.npy for the test split
    DIR/corrupted/...          pixel-test copies, written on first use (`rethink.data.streaming`)

Each image is decoded once by Pillow and converted to RGB (grayscale, palette, CMYK and alpha
images all become 3 channels), resized (bilinear, antialiased) so that its shorter side is R, and
centre-cropped to R x R: the common resize-then-centre-crop evaluation transform, keeping the whole
shorter side. The paper says only that ImageNet images were resized to 299 x 299; TensorFlow's
Inception evaluation preprocessing instead crops the central 87.5% and resizes that to 299
(changing the aspect ratio). An image that already is R x R is kept pixel for pixel, so a pack of
same-size images at their own size holds exactly what `folder:` decodes, in the same order.

Packing streams: images are decoded in batches (optionally by a thread pool, `--workers`: Pillow
releases the GIL) straight into the shards (np.lib.format.open_memmap), hashed and summed on the
way, so memory stays bounded. Work
happens in `.<DIR>.packing/` beside DIR, which is renamed into place at the end; finished shards are
recorded there, so an interrupted pack resumes at the first unfinished shard.

`open_pack` (the `packed:DIR` source, registered here with `rethink.data.sources`) memory-maps the
shards (np.load(mmap_mode="r"), never pickle) and checks the manifest, each shard's header and file
size without reading pixels; `verify=True` also re-hashes them.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch
from PIL import Image

from rethink.data.formats import Arrays
from rethink.data.imagetree import CIFAR10_CLASSES, SPLITS, layout, tar_contents, walk
from rethink.data.sources import Located, register_source, resolve_path
from rethink.errors import ConfigError, DataError
from rethink.files import atomic_write

FORMAT = "rethink-pack"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CHANNELS = 3
SHARD_BYTES = 1 << 30  # default shard size: about 1 GiB of pixels (4,003 images at 299 x 299)
DECODE_BATCH = 256  # images decoded, written and hashed per step
PROGRESS_SECONDS = 5.0
_PROGRESS = "progress.json"
_LOCK = ".lock"
_HASH_CHUNK = 64  # images per read when re-hashing a shard


def shard_name(split: str, i: int) -> str:
    return f"{split}-{i:05d}.npy"


def labels_name(split: str) -> str:
    return f"{split}-labels.npy"


def _sha256_json(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


# ---------------------------------------------------------------------------- reading a pack


class ShardedImages:
    """One split's images across its shard files, read on demand.

    `read(indices)` returns a new uint8 (or float32) NHWC numpy array, reading each shard's rows in
    ascending order (for locality) and restoring the requested order; `[key]` does the same and
    returns a torch tensor. Nothing is read before it is asked for.
    """

    def __init__(self, shards: list[np.ndarray], what: str) -> None:
        if not shards:
            raise DataError(f"{what}: a split has no shards", "re-run `rethink pack`")
        self.shards = shards
        self.what = what
        self.offsets = np.cumsum([0] + [len(s) for s in shards])  # shard j holds offsets[j]:offsets[j+1]
        self.shape: tuple[int, ...] = (int(self.offsets[-1]), *shards[0].shape[1:])
        self.np_dtype = shards[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return torch.from_numpy(np.empty(0, dtype=self.np_dtype)).dtype

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows start..stop-1 (a copy), read shard by shard in order."""
        return self.read(np.arange(start, stop, dtype=np.int64))

    def read(self, indices: Iterable[int] | np.ndarray) -> np.ndarray:
        index = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.empty((len(index), *self.shape[1:]), dtype=self.np_dtype)
        if len(index) == 0:
            return out
        if index.min() < 0 or index.max() >= len(self):
            raise IndexError(f"{self.what}: index out of range 0..{len(self) - 1}")
        order = np.argsort(index, kind="stable")
        ordered = index[order]
        shard_of = np.searchsorted(self.offsets, ordered, side="right") - 1
        cuts = [0, *(np.flatnonzero(np.diff(shard_of)) + 1).tolist(), len(ordered)]
        for a, b in zip(cuts[:-1], cuts[1:], strict=True):
            s = int(shard_of[a])
            local = ordered[a:b] - self.offsets[s]
            first, last = int(local[0]), int(local[-1])
            # consecutive rows: one sequential read (a slice), not a gather
            block = self.shards[s][first : last + 1] if last - first == b - a - 1 else self.shards[s][local]
            out[order[a:b]] = block
        return out

    def __getitem__(self, key: Any) -> torch.Tensor:
        if isinstance(key, int | np.integer):
            return self[slice(int(key), int(key) + 1 if key != -1 else None)][0]
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            rows = self.read(np.arange(start, stop, step, dtype=np.int64))
        else:
            key = torch.as_tensor(key).cpu()
            if key.dtype == torch.bool:
                key = key.nonzero().squeeze(1)
            rows = self.read(key.numpy())
        return torch.from_numpy(rows)

    def chunks(self, size: int) -> Iterator[tuple[int, np.ndarray]]:
        """(start, rows) for consecutive blocks of `size` rows, in order."""
        for start in range(0, len(self), size):
            yield start, self.read_range(start, min(start + size, len(self)))

    def __repr__(self) -> str:
        return (f"ShardedImages({self.what}, shape={self.shape}, dtype={self.np_dtype}, "
                f"shards={len(self.shards)})")


@dataclass(frozen=True, eq=False)
class PackedDataset:
    """A pack opened for training: labels in memory, images memory-mapped (`ShardedImages`).

    Returned by `load_dataset("packed:DIR")` in place of a `RawDataset`; `build_run_data` streams
    from it (see `rethink.data.streaming`). Code that needs all pixels as one tensor does not
    accept it.
    """

    name: str  # "packed:/abs/dir"
    root: Path
    manifest: dict[str, Any]
    train_images: ShardedImages  # uint8 (N, R, R, 3)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: ShardedImages
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    source_hash: str  # sha256 over the source files' bytes (see pack_folder)
    content_hash: str  # the manifest's content_sha256: pixels, labels, classes, layout
    description: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def resolution(self) -> int:
        return int(self.manifest["resolution"])

    def pixel_stats(self, stats: str) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std of the training pixels on the [0, 1] scale: per channel (3,) or global (1,)."""
        mean = np.asarray(self.manifest["train_mean"], dtype=np.float64)
        std = np.asarray(self.manifest["train_std"], dtype=np.float64)
        if stats == "per-channel":
            return mean, std
        # channels have equal pixel counts: global moments are the averages of per-channel ones
        g_mean = mean.mean()
        g_var = (std**2 + mean**2).mean() - g_mean**2
        return np.array([g_mean]), np.array([np.sqrt(max(g_var, 0.0))])

    def __repr__(self) -> str:
        return (
            f"PackedDataset({self.name!r}, train={self.train_images.shape}, test={self.test_images.shape}, "
            f"classes={len(self.classes)}, content_hash={self.content_hash[:12]}...)"
        )


def read_manifest(d: Path, what: str, fix: str) -> dict[str, Any]:
    """The parsed manifest.json of a pack (or of a corrupted copy), else DataError."""
    path = d / MANIFEST
    if not path.is_file():
        raise DataError(f"{what}: {path} is missing", fix)
    try:
        m = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{what}: {path} is unreadable ({e})", fix) from None
    if not isinstance(m, dict):
        raise DataError(f"{what}: {path} is not a manifest", fix)
    return m


def open_shards(
    d: Path, records: list[dict[str, Any]], tail: tuple[int, ...], dtype: np.dtype, what: str, fix: str
) -> list[np.ndarray]:
    """Memory-map each shard named in `records`, checking header and file size (no pixel reads)."""
    out = []
    for rec in records:
        path = d / rec["name"]
        if not path.is_file():
            raise DataError(f"{what}: shard {path} is missing", fix)
        try:
            a = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:  # truncated below its header's size, bad header
            raise DataError(f"{what}: shard {path} is unreadable or truncated ({e})", fix) from None
        want = (int(rec["count"]), *tail)
        if a.dtype != dtype or a.shape != want:
            raise DataError(f"{what}: shard {path} holds {a.dtype} {a.shape}, expected {dtype} {want}", fix)
        size = path.stat().st_size
        if size != a.offset + a.nbytes:
            raise DataError(f"{what}: shard {path} is {size} bytes, expected {a.offset + a.nbytes}", fix)
        out.append(a)
    return out


def hash_shards(shards: list[np.ndarray]) -> list[str]:
    """sha256 of each shard's pixel bytes (reads everything: for verification)."""
    digests = []
    for a in shards:
        h = hashlib.sha256()
        for start in range(0, len(a), _HASH_CHUNK):
            h.update(np.ascontiguousarray(a[start : start + _HASH_CHUNK]))
        digests.append(h.hexdigest())
    return digests


def _content_fields(m: dict[str, Any]) -> dict[str, Any]:
    """What the content hash covers: everything that changes what a run trains on."""
    keys = ("format", "format_version", "resolution", "classes", "splits", "train_mean", "train_std")
    return {k: m.get(k) for k in keys}


def open_pack(path: str | Path, *, verify: bool = False) -> PackedDataset:
    """Open the pack in directory `path` (memory-mapped); DataError naming the file if it is damaged."""
    d = Path(path).expanduser().resolve()
    what = f"packed:{d}"
    generic_fix = f"delete {d} and re-run `rethink pack SRC --out {d}`"
    m = read_manifest(d, what, generic_fix)
    try:
        if m["format"] != FORMAT:
            raise DataError(f"{what}: {d / MANIFEST} is not a rethink pack manifest", generic_fix)
        if m["format_version"] != FORMAT_VERSION:
            raise DataError(
                f"{what}: pack format version {m['format_version']}, this rethink reads {FORMAT_VERSION}",
                f"re-run `rethink pack {m.get('source', 'SRC')} --out {d}` with this version",
            )
        fix = f"re-run `rethink pack {m['source']} --out {d}` to rebuild it"
        res, classes = int(m["resolution"]), tuple(str(c) for c in m["classes"])
        if m["content_sha256"] != _sha256_json(_content_fields(m)):
            raise DataError(f"{what}: {d / MANIFEST} does not match its content hash (edited?)", fix)
        images, labels = {}, {}
        for split in SPLITS:
            spec = m["splits"][split]
            shards = open_shards(d, spec["shards"], (res, res, CHANNELS), np.dtype(np.uint8), what, fix)
            if sum(len(s) for s in shards) != spec["count"]:
                raise DataError(f"{what}: {split} shards do not add up to {spec['count']} images", fix)
            images[split] = ShardedImages(shards, f"{what} {split}")
            labels[split] = _load_labels(d / spec["labels"], spec["count"], len(classes), what, fix)
            if verify:
                _verify_split(d, spec, shards, labels[split], what, fix)
    except (KeyError, TypeError, ValueError) as e:
        why = f"{type(e).__name__}: {e}"
        raise DataError(f"{what}: {d / MANIFEST} is malformed ({why})", generic_fix) from None
    counts = f"{len(labels['train']):,} train / {len(labels['test']):,} test"
    return PackedDataset(
        name=what,
        root=d,
        manifest=m,
        train_images=images["train"],
        train_labels=torch.from_numpy(labels["train"]),
        test_images=images["test"],
        test_labels=torch.from_numpy(labels["test"]),
        classes=classes,
        source_hash=str(m["source_sha256"]),
        content_hash=str(m["content_sha256"]),
        description=f"pack {d} ({counts} images at {res}x{res}, {len(classes)} classes; "
        f"memory-mapped, packed from {m['source']} with Pillow {m.get('pillow', '?')})",
    )


def _load_labels(path: Path, count: int, k: int, what: str, fix: str) -> np.ndarray:
    if not path.is_file():
        raise DataError(f"{what}: labels file {path} is missing", fix)
    try:
        y = np.load(path, allow_pickle=False)  # 8 bytes per image: read into memory
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{what}: labels file {path} is unreadable or truncated ({e})", fix) from None
    if y.dtype != np.int64 or y.shape != (count,):
        raise DataError(f"{what}: labels file {path} holds {y.dtype} {y.shape}, not int64 ({count},)", fix)
    if count and (y.min() < 0 or y.max() >= k):
        raise DataError(f"{what}: labels in {path} are outside 0..{k - 1}", fix)
    return np.ascontiguousarray(y)


def _verify_split(d: Path, spec: dict[str, Any], shards: list[np.ndarray], y: np.ndarray, what: str,
                  fix: str) -> None:
    for rec, digest in zip(spec["shards"], hash_shards(shards), strict=True):
        if digest != rec["sha256"]:
            raise DataError(f"{what}: shard {d / rec['name']} does not match its sha256 (corrupt)", fix)
    if hashlib.sha256(y).hexdigest() != spec["labels_sha256"]:
        raise DataError(f"{what}: labels file {d / spec['labels']} does not match its sha256", fix)


@register_source("packed:")
def _packed(arg: str, data_dir: Path, _download: bool) -> Located:
    d = resolve_path(arg, data_dir, "packed:")

    def not_decoded() -> tuple[Arrays, tuple[str, ...]]:
        raise AssertionError("a pack is served memory-mapped, never decoded into the cache")

    return Located(f"packed:{d}", (), d, not_decoded, f"pack {d}",
                   serve=lambda verify: open_pack(d, verify=verify))


# ---------------------------------------------------------------------------- decoding one image


def decode_resized(blob: bytes, resolution: int) -> np.ndarray | str:
    """(R, R, 3) uint8: RGB, shorter side resized to R (bilinear, antialiased), centre crop; or why not."""
    try:
        with Image.open(io.BytesIO(blob)) as im:
            im.load()
            rgb = im.convert("RGB") if im.mode != "RGB" else im
            w, h = rgb.size
            if min(w, h) != resolution:
                scale = resolution / min(w, h)
                size = (max(resolution, round(w * scale)), max(resolution, round(h * scale)))
                rgb = rgb.resize(size, Image.Resampling.BILINEAR)
                w, h = size
            left, top = (w - resolution) // 2, (h - resolution) // 2  # as preprocess.center_crop
            if (w, h) != (resolution, resolution):
                rgb = rgb.crop((left, top, left + resolution, top + resolution))
            return np.asarray(rgb, dtype=np.uint8).reshape(resolution, resolution, CHANNELS)
    except Exception as e:  # Pillow raises many types for bad files; all mean "not an image"
        return f"{type(e).__name__}: {e}"


def _load_job(job: tuple[str | bytes, int]) -> tuple[str, np.ndarray | str, np.ndarray | None]:
    """Worker: (sha256 of the file's bytes, decoded image or why there is none, (3, 256) histogram).

    The per-channel histogram gives exact pixel sums and sums of squares ten times faster than
    summing the image in int64.
    """
    src, resolution = job
    try:
        blob = src if isinstance(src, bytes) else Path(src).read_bytes()
    except OSError as e:
        return "", f"cannot read it ({e.strerror or e})", None
    img = decode_resized(blob, resolution)
    if isinstance(img, str):
        return "", img, None
    hist = np.stack([np.bincount(img[..., c].ravel(), minlength=256) for c in range(CHANNELS)])
    return hashlib.sha256(blob).hexdigest(), img, hist.astype(np.int64)


def _imap(pool: Executor | None, fn: Callable[[Any], Any], jobs: list[Any], window: int) -> Iterator[Any]:
    """map(fn, jobs) in order, with at most `window` jobs in flight (bounded memory)."""
    if pool is None:
        yield from map(fn, jobs)
        return
    pending: deque = deque()
    it = iter(jobs)
    for job in it:
        pending.append(pool.submit(fn, job))
        if len(pending) >= window:
            break
    while pending:
        result = pending.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            pending.append(pool.submit(fn, nxt))
        yield result


# ---------------------------------------------------------------------------- planning a pack


@dataclass(frozen=True)
class _Item:
    src: str | bytes  # a file path, or a tar member's bytes
    rel: str  # path relative to the source, as found (val/ stays val/)
    stamp: str  # size (and mtime) identifying the file's version without reading it
    label: int


@dataclass(frozen=True)
class _Shard:
    split: str
    name: str
    items: list[_Item]
    listing: str  # sha256 over the items' (path, stamp, label): a finished shard is reused iff equal


@dataclass(frozen=True)
class _Plan:
    source: Path
    what: str
    classes: tuple[str, ...]
    resolution: int
    shard_size: int
    counts: dict[str, int]
    shards: list[_Shard]
    base: str  # sha256 of the settings and layout shared by all shards
    identity: str  # sha256 of base and every shard listing: the same pack iff equal


def _val_as_test(paths: list[str]) -> dict[str, str]:
    """{path as `layout` should see it: original} with `val/` read as `test/` (ImageNet's name).

    Renamed at the top level, or one level down when everything sits in one enclosing folder, and
    only where there is no `test/` beside it.
    """
    split = [p.split("/") for p in paths]
    for depth in (0, 1):
        level = {ps[depth] for ps in split if len(ps) > depth + 1}
        if depth == 1 and len({ps[0] for ps in split if len(ps) > 1}) != 1:
            break
        if "val" in level and "test" not in level:
            return {
                "/".join([*ps[:depth], "test", *ps[depth + 1 :]]) if len(ps) > depth and ps[depth] == "val"
                else p: p
                for p, ps in zip(paths, split, strict=True)
            }
    return {p: p for p in paths}


def _plan(src: Path, resolution: int, shard_size: int | None) -> _Plan:
    what = f"pack {src}"
    if not src.exists():
        raise DataError(f"{what}: no such file or directory", "give an image-folder directory or tarball")
    if src.is_file():
        contents, dirs = tar_contents(src, what)
        st = src.stat()
        container = f"tar {st.st_size} {st.st_mtime_ns}"
        stamps = {p: str(len(b)) for p, b in contents.items()}
    else:
        files, dirs = walk(src)
        contents, container, stamps = None, "dir", {}
    names = list(contents) if contents is not None else files
    files_map = _val_as_test(names)
    dirs_map = _val_as_test(dirs)
    tree = layout(list(files_map), list(dirs_map), what, CIFAR10_CLASSES)  # same order as folder:
    index = {c: i for i, c in enumerate(tree.classes)}
    per_image = resolution * resolution * CHANNELS
    size = shard_size or max(1, SHARD_BYTES // per_image)
    counts: dict[str, int] = {}
    shards: list[_Shard] = []
    for split in SPLITS:
        items = []
        for c in tree.classes:
            for _, mapped in tree.groups.get((split, c), []):
                rel = files_map[mapped]
                if contents is not None:
                    items.append(_Item(contents[rel], rel, stamps[rel], index[c]))
                else:
                    path = src / rel
                    try:
                        st = path.stat()
                    except OSError as e:
                        raise DataError(f"{what}: cannot read {path} ({e.strerror})",
                                        "check permissions") from None
                    items.append(_Item(str(path), rel, f"{st.st_size} {st.st_mtime_ns}", index[c]))
        counts[split] = len(items)
        for j, start in enumerate(range(0, len(items), size)):
            chunk = items[start : start + size]
            listing = hashlib.sha256(
                "".join(f"{it.rel}\0{it.stamp}\0{it.label}\n" for it in chunk).encode()
            ).hexdigest()
            shards.append(_Shard(split, shard_name(split, j), chunk, listing))
    base = _sha256_json({"format_version": FORMAT_VERSION, "resolution": resolution, "shard_size": size,
                         "classes": list(tree.classes), "counts": counts, "container": container,
                         "pillow": PIL.__version__})
    identity = hashlib.sha256((base + "".join(s.listing for s in shards)).encode()).hexdigest()
    return _Plan(src, what, tree.classes, resolution, size, counts, shards, base, identity)


# ---------------------------------------------------------------------------- writing a pack


class _Progress:
    """Images per second and time left, logged every PROGRESS_SECONDS."""

    def __init__(self, total: int, log: Callable[[str], None]) -> None:
        self.total, self.log, self.done = total, log, 0
        self.t0 = self.last = time.perf_counter()

    def add(self, n: int, where: str) -> None:
        self.done += n
        now = time.perf_counter()
        if now - self.last >= PROGRESS_SECONDS or self.done == self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            left = (self.total - self.done) / rate if rate > 0 else 0.0
            self.log(f"pack: {self.done:,}/{self.total:,} images ({where}), {rate:,.0f} images/s, "
                     f"about {left / 60:.1f} min left")


def _write_shard(tmp: Path, shard: _Shard, plan: _Plan, pool: Executor | None, window: int,
                 progress: _Progress) -> dict[str, Any]:
    """Decode, write, hash and sum one shard; returns its progress record."""
    r = plan.resolution
    part = tmp / f"{shard.name}.part"
    mm = np.lib.format.open_memmap(part, mode="w+", dtype=np.uint8, shape=(len(shard.items), r, r, CHANNELS))
    pixels, sources = hashlib.sha256(), hashlib.sha256()
    hist = np.zeros((CHANNELS, 256), dtype=np.int64)
    try:
        for start in range(0, len(shard.items), DECODE_BATCH):
            batch = shard.items[start : start + DECODE_BATCH]
            results = _imap(pool, _load_job, [(it.src, r) for it in batch], window)
            for i, (item, (digest, img, counts)) in enumerate(zip(batch, results, strict=True)):
                if isinstance(img, str):
                    raise DataError(
                        f"{plan.what}: {item.rel} is not a readable image ({img})",
                        "remove or replace it and rerun: finished shards are kept",
                    )
                mm[start + i] = img
                pixels.update(img)
                sources.update(f"{item.rel}\0{digest}\n".encode())
                hist += counts
            mm.flush()
            progress.add(len(batch), shard.name)
    finally:
        del mm
    os.replace(part, tmp / shard.name)
    values = np.arange(256, dtype=np.int64)
    total, squares = hist @ values, hist @ (values * values)  # exact integer moments
    return {"listing": shard.listing, "count": len(shard.items), "sha256": pixels.hexdigest(),
            "bytes": (tmp / shard.name).stat().st_size, "source_sha256": sources.hexdigest(),
            "sum": total.tolist(), "sumsq": squares.tolist()}


def _existing_pack(out: Path, plan: _Plan, log: Callable[[str], None]) -> dict[str, Any] | None:
    """The manifest if `out` already holds this very pack intact; None if it may be (re)written."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise DataError(f"pack: {out} exists and is not a directory", "choose another --out")
    if not any(out.iterdir()):
        return None
    fix = f"choose another --out, or delete {out} to pack there"
    m = read_manifest(out, f"pack: {out}", f"{out} is not a pack; {fix}")
    if m.get("format") != FORMAT:
        raise DataError(f"pack: {out} holds something else than a rethink pack", fix)
    if m.get("source_listing_sha256") != plan.identity:
        if m.get("resolution") != plan.resolution:
            why = f"resolution {m.get('resolution')}, not {plan.resolution}"
        elif m.get("shard_size") != plan.shard_size:
            why = f"shard size {m.get('shard_size')}, not {plan.shard_size}"
        elif m.get("pillow") != PIL.__version__:  # another decoder may give other pixels
            why = f"decoded by Pillow {m.get('pillow')}, this is Pillow {PIL.__version__}"
        else:
            why = f"packed from {m.get('source')}, other files or file sizes/dates"
        raise DataError(f"pack: {out} already holds a different pack ({why})", fix)
    try:
        open_pack(out)
    except DataError as e:
        log(f"pack: {out} holds this pack but it is damaged ({e.message}); rebuilding it")
        return None
    return m


@contextlib.contextmanager
def _locked(tmp: Path, out: Path) -> Iterator[None]:
    """One packer per output: a second one fails at once instead of writing the same files."""
    import fcntl

    with open(tmp / _LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"pack: another `rethink pack` is writing {out}",
                            "wait for it to finish") from None
        yield


def pack_folder(
    src: str | Path,
    out: str | Path,
    *,
    resolution: int = 299,
    shard_size: int | None = None,
    workers: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Pack the image folder `src` into `out` (see the module docstring); returns the manifest.

    `shard_size` images per shard (default: about 1 GiB each). `workers` > 1 decodes in that many
    processes. Rerunning on a finished pack of the same files and settings does nothing; a pack of
    anything else in `out` is refused; an interrupted pack resumes.
    """
    if resolution < 1:
        raise ConfigError(f"--resolution {resolution} must be positive", "pass e.g. --resolution 299")
    if shard_size is not None and shard_size < 1:
        raise ConfigError(f"--shard-size {shard_size} must be positive", "pass a positive number of images")
    src, out = Path(src).expanduser().resolve(), Path(out).expanduser().resolve()
    if out == src or src in out.parents:
        raise ConfigError(f"pack: --out {out} is inside the source {src}", "write the pack somewhere else")
    plan = _plan(src, resolution, shard_size)
    done_manifest = _existing_pack(out, plan, log)
    if done_manifest is not None:
        log(f"pack: {out} already holds this pack; nothing to do")
        return done_manifest
    tmp = out.parent / f".{out.name}.packing"
    fresh = not tmp.exists()
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"pack: cannot write to {out.parent} ({e.strerror})",
                        "pass a writable --out") from None
    with _locked(tmp, out):
        try:
            return _pack(plan, tmp, out, workers, log)
        except BaseException:
            # failed before finishing a shard (e.g. the first bad image): nothing to resume, no trace
            if fresh and not (tmp / _PROGRESS).exists():
                shutil.rmtree(tmp, ignore_errors=True)
            raise


def _pack(plan: _Plan, tmp: Path, out: Path, workers: int, log: Callable[[str], None]) -> dict[str, Any]:
    progress_path = tmp / _PROGRESS
    try:
        state = json.loads(progress_path.read_text())
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict) or state.get("base") != plan.base:
        state = {"base": plan.base, "shards": {}}  # other settings or layout: start over
    records: dict[str, dict[str, Any]] = {}
    for shard in plan.shards:  # finished shards whose files and bytes are as recorded are kept
        rec = state["shards"].get(shard.name)
        path = tmp / shard.name
        if isinstance(rec, dict) and rec.get("listing") == shard.listing and path.is_file() \
                and path.stat().st_size == rec.get("bytes"):
            records[shard.name] = rec
    for leftover in tmp.iterdir():  # partial shards, and shards of another layout
        if leftover.name not in records and leftover.name not in (_LOCK, _PROGRESS):
            if leftover.is_dir():
                shutil.rmtree(leftover)
            else:
                leftover.unlink()
    todo = [s for s in plan.shards if s.name not in records]
    _check_space(tmp, plan, todo)
    n_todo = sum(len(s.items) for s in todo)
    if records:
        log(f"pack: resuming {plan.source}: {len(records)} of {len(plan.shards)} shards already written")
    log(f"pack: {plan.source} -> {out}: {plan.counts['train']:,} train / {plan.counts['test']:,} test, "
        f"{len(plan.classes)} classes, {plan.resolution}x{plan.resolution}, {len(plan.shards)} shards, "
        f"{workers} worker(s)")
    progress = _Progress(n_todo, log)
    pool = None
    if workers > 1 and n_todo:
        # Threads, not processes: Pillow releases the GIL while decoding and resizing, and hashlib
        # while hashing, so threads scale; processes would need spawn (forking a process that runs
        # torch's threads can deadlock), which re-runs an unguarded __main__ such as `python -m`.
        pool = ThreadPoolExecutor(workers, thread_name_prefix="rethink-pack")
    try:
        for shard in todo:
            records[shard.name] = _write_shard(tmp, shard, plan, pool, 4 * workers, progress)
            state["shards"][shard.name] = records[shard.name]
            atomic_write(progress_path, json.dumps(state).encode())
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    manifest = _finish(plan, tmp, records)
    _install(tmp, out)
    size = sum(r["bytes"] for r in records.values())
    log(f"pack: wrote {out} ({size / 1e9:.2f} GB); train with --dataset packed:{out}")
    return manifest


def _check_space(tmp: Path, plan: _Plan, todo: list[_Shard]) -> None:
    need = sum(len(s.items) for s in todo) * plan.resolution**2 * CHANNELS
    free = shutil.disk_usage(tmp).free
    if need > free:
        raise DataError(f"pack: needs {need / 1e9:.1f} GB more but {tmp.parent} has {free / 1e9:.1f} GB free",
                        "free some space or pass another --out")


def _finish(plan: _Plan, tmp: Path, records: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Labels, pixel statistics and the manifest, written into `tmp`."""
    splits: dict[str, Any] = {}
    total = np.zeros(CHANNELS, dtype=np.int64)
    squares = np.zeros(CHANNELS, dtype=np.int64)
    for split in SPLITS:
        shards = [s for s in plan.shards if s.split == split]
        y = np.array([it.label for s in shards for it in s.items], dtype=np.int64)
        np.save(tmp / labels_name(split), y, allow_pickle=False)
        splits[split] = {
            "count": plan.counts[split],
            "labels": labels_name(split),
            "labels_sha256": hashlib.sha256(y).hexdigest(),
            "shards": [{"name": s.name, "count": records[s.name]["count"], "bytes": records[s.name]["bytes"],
                        "sha256": records[s.name]["sha256"]} for s in shards],
        }
        if split == "train":
            for s in shards:
                total += np.array(records[s.name]["sum"], dtype=np.int64)
                squares += np.array(records[s.name]["sumsq"], dtype=np.int64)
    n = plan.counts["train"] * plan.resolution**2  # pixels per channel
    mean = total / n
    var = np.maximum(squares / n - mean**2, 0.0)  # population variance, from exact integer sums
    m: dict[str, Any] = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "source": str(plan.source),
        "source_listing_sha256": plan.identity,
        # sha256 over the per-shard sha256s of "<relative path>\0<sha256 of the file>\n" lines, in order
        "source_sha256": hashlib.sha256("".join(records[s.name]["source_sha256"] for s in plan.shards)
                                        .encode()).hexdigest(),
        "resolution": plan.resolution,
        "shard_size": plan.shard_size,
        "transform": f"Pillow RGB; shorter side resized to {plan.resolution} (bilinear, antialiased); "
                     f"centre crop {plan.resolution}x{plan.resolution}",
        "classes": list(plan.classes),
        "splits": splits,
        # on the [0, 1] scale, per channel, population std: the Gaussian test's moments
        "train_mean": (mean / 255.0).tolist(),
        "train_std": (np.sqrt(var) / 255.0).tolist(),
        "pillow": PIL.__version__,
        "numpy": np.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    m["content_sha256"] = _sha256_json(_content_fields(m))
    atomic_write(tmp / MANIFEST, json.dumps(m, indent=1).encode())
    return m


def _install(tmp: Path, out: Path) -> None:
    """Rename the finished pack into place, moving aside what was there (empty or damaged)."""
    (tmp / _PROGRESS).unlink(missing_ok=True)
    aside = None
    if out.exists():
        aside = out.with_name(f".{out.name}.old-{os.getpid()}-{time.monotonic_ns()}")
        os.replace(out, aside)
    (tmp / _LOCK).unlink(missing_ok=True)  # still held through the open descriptor until the rename
    os.replace(tmp, out)
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
