"""Dataset sources: one registry from a name to a loader that finds, verifies and decodes files.

Names: `cifar10`, `mnist`, `folder:PATH` (an image-folder tree or tarball laid out
`{train,test}/<class>/<image>`) and `idx:PATH` (a directory of IDX files). `load_dataset`
returns uint8 NHWC tensors, decoded once and then served from `rethink.data.cache`.
`packed:DIR` (a pack written by `rethink pack`, too big for memory) bypasses the cache:
`load_dataset` returns a memory-mapped `rethink.data.packed.PackedDataset` instead. That source
is registered by `rethink.data.packed` itself (imported by the package's `__init__`), so this
module never imports the pack code.

CIFAR-10 comes either as the official pickled batches (read by a restricted unpickler that
admits numpy arrays and nothing else) or as an image folder of JPEGs (lossy; see
shared/data/README.md). The official form wins when both are present. The bytes of each format
are parsed in `rethink.data.formats`; the official URLs, checksums and downloads are in
`rethink.data.downloads`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL
import torch

from rethink.data import cache, downloads
from rethink.data.formats import Arrays, decode_cifar_batches, decode_tree, gunzip_if_needed, idx_arrays
from rethink.data.imagetree import CIFAR10_CLASSES, SPLITS, layout, tar_contents, walk
from rethink.errors import ConfigError, DataError, RethinkError

MNIST_CLASSES = tuple(str(i) for i in range(10))


# ---------------------------------------------------------------------------- the dataset


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A decoded dataset: uint8 NHWC images, int64 labels, in the source's own order."""

    name: str
    train_images: torch.Tensor  # uint8 (N, H, W, C)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor  # uint8 (M, H, W, C)
    test_labels: torch.Tensor  # int64 (M,)
    classes: tuple[str, ...]  # official names and order; label i is classes[i]
    source_hash: str  # sha256 identifying the source files
    content_hash: str  # sha256 of the decoded arrays, so a decoder change is noticed
    description: str  # one line: which files, exact or lossy

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __repr__(self) -> str:
        return (
            f"RawDataset({self.name!r}, train={tuple(self.train_images.shape)}, "
            f"test={tuple(self.test_images.shape)}, classes={len(self.classes)}, "
            f"content_hash={self.content_hash[:12]}...)"
        )


def _cache_home() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rethink"


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """`data_dir`, else $RETHINK_DATA, else `$XDG_CACHE_HOME/rethink/data` (~/.cache/...)."""
    chosen = data_dir or os.environ.get("RETHINK_DATA") or _cache_home() / "data"
    return Path(chosen).expanduser()


def resolve_cache_dir(cache_dir: str | Path | None = None) -> Path:
    """`cache_dir`, else $RETHINK_CACHE, else `$XDG_CACHE_HOME/rethink/arrays`.

    Separate from the data dir because data dirs may be read-only (like shared/data).
    """
    chosen = cache_dir or os.environ.get("RETHINK_CACHE") or _cache_home() / "arrays"
    return Path(chosen).expanduser()


# ---------------------------------------------------------------------------- registry


# What a `serve` source returns in place of a RawDataset: for packed:, a memory-mapped
# rethink.data.packed.PackedDataset. Loosely typed: the registry does not import the pack code.
ServedDataset = Any


@dataclass(frozen=True)
class Located:
    """What a loader found: the files identifying the source, and how to decode them."""

    name: str  # the dataset's recorded name, e.g. "cifar10" or "folder:/abs/path"
    files: tuple[Path, ...]  # hashed to key the cache
    root: Path  # `files` are named relative to it in the source hash
    decode: Callable[[], tuple[Arrays, tuple[str, ...]]]
    description: str
    # Sources that serve their own memory-mapped files (packed:) set this instead of decoding:
    # load_dataset returns serve(verify), skipping the array cache, which would copy them.
    serve: Callable[[bool], ServedDataset] | None = None


# A loader takes (argument after the prefix or "", data dir, download) and returns Located.
Loader = Callable[[str, Path, bool], Located]
_SOURCES: dict[str, Loader] = {}


def register_source(name: str) -> Callable[[Loader], Loader]:
    """File a loader under `name`; a name ending in ':' is a prefix taking a path argument."""

    def deco(fn: Loader) -> Loader:
        if name in _SOURCES:
            raise ValueError(f"dataset source {name!r} registered twice")
        _SOURCES[name] = fn
        return fn

    return deco


def list_sources() -> list[str]:
    """Registered names; prefix sources are shown with their argument, e.g. 'folder:PATH'."""
    return [n + "PATH" if n.endswith(":") else n for n in _SOURCES]


def _lookup(name: str) -> tuple[Loader, str]:
    prefix, sep, arg = name.partition(":")
    key = prefix.lower() + sep
    if sep and key in _SOURCES:
        if not arg:
            raise ConfigError(f"dataset {name!r} has no path", f"write it as {key}PATH")
        return _SOURCES[key], arg
    if not sep and key in _SOURCES:
        return _SOURCES[key], ""
    raise ConfigError(f"unknown dataset {name!r}", f"known: {', '.join(list_sources())}")


# ---------------------------------------------------------------------------- load


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    *,
    download: bool = False,
    cache_dir: str | Path | None = None,
    verify: bool = False,
) -> RawDataset | ServedDataset:
    """Find, verify and decode dataset `name`, or load it from the array cache.

    Cached arrays are always re-hashed against their recorded content hash (~0.15 s for
    CIFAR-10): a truncated or altered cache entry is decoded again, never used. A `packed:` name
    gives a memory-mapped PackedDataset; `verify` re-hashes its shards (hundreds of GB for
    ImageNet, so only on request; their sizes and headers are always checked).
    """
    loader, arg = _lookup(name)
    data_dir = resolve_data_dir(data_dir)
    cache_dir = resolve_cache_dir(cache_dir)
    loc = loader(arg, data_dir, download)
    if loc.serve is not None:
        return loc.serve(verify)
    try:
        hashes = cache.file_hashes(loc.files, cache_dir)
    except OSError as e:
        raise DataError(
            f"{loc.name}: cannot read {e.filename}: {e.strerror}", "check permissions"
        ) from e
    _check_sha256sums(loc.name, hashes)
    src_hash = cache.source_hash(hashes, loc.root)
    hit = cache.load_entry(cache_dir, loc.name, src_hash, verify=True)
    if hit is None:
        try:
            arrays, classes = loc.decode()
        except OSError as e:
            raise DataError(
                f"{loc.name}: cannot read {e.filename or 'a source file'}: {e.strerror or e}",
                "check that the files are readable",
            ) from e
        _check_arrays(loc.name, arrays, classes)
        manifest = cache.save_entry(
            cache_dir,
            loc.name,
            src_hash,
            arrays,
            classes=classes,
            description=loc.description,
            extra={"decoder": {"numpy": np.__version__, "pillow": PIL.__version__}},
        )
    else:
        arrays, manifest = hit
    return RawDataset(
        name=loc.name,
        train_images=_tensor(arrays["train_images"]),
        train_labels=_tensor(arrays["train_labels"]),
        test_images=_tensor(arrays["test_images"]),
        test_labels=_tensor(arrays["test_labels"]),
        classes=tuple(manifest["classes"]),
        source_hash=src_hash,
        content_hash=manifest["content_sha256"],
        description=manifest["description"],
    )


def _tensor(a: np.ndarray) -> torch.Tensor:
    # decoders may return views of read-only bytes; tensors must own writable memory
    return torch.from_numpy(a if a.flags.writeable and a.flags.c_contiguous else a.copy())


def _check_arrays(name: str, a: Arrays, classes: tuple[str, ...]) -> None:
    """Decoders promise uint8 NHWC images and int64 labels in range; a bug must not be cached."""
    for split in SPLITS:
        x, y = a[f"{split}_images"], a[f"{split}_labels"]
        if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != x.shape[:1]:
            raise DataError(f"{name}: decoded {split} arrays are malformed", "report this as a bug")
        if len(y) == 0:
            raise DataError(f"{name}: the {split} split is empty", "add images to it")
        if y.min() < 0 or y.max() >= len(classes):
            raise DataError(
                f"{name}: {split} labels outside 0..{len(classes) - 1}", "check the files"
            )
    if a["train_images"].shape[1:] != a["test_images"].shape[1:]:
        raise DataError(
            f"{name}: train images are {a['train_images'].shape[1:]} but test images are "
            f"{a['test_images'].shape[1:]}",
            "make both splits the same size",
        )


def _read_sha256sums(path: Path) -> dict[str, str]:
    sums = {}
    try:
        for line in path.read_text().splitlines():
            parts = line.strip().split(maxsplit=1)
            if len(parts) == 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
                sums[parts[1].lstrip("*")] = parts[0].lower()
    except (OSError, UnicodeDecodeError):
        pass
    return sums


def _check_sha256sums(name: str, hashes: dict[Path, str]) -> None:
    """Where a SHA256SUMS file beside a source file (or one level up) lists it, it must match."""
    sums: dict[Path, dict[str, str]] = {}  # one read per directory, not per file
    for path, digest in hashes.items():
        for d in (path.parent, path.parent.parent):
            if d not in sums:
                sums[d] = _read_sha256sums(d / "SHA256SUMS")
            expected = sums[d].get(path.relative_to(d).as_posix())
            if expected is not None and expected != digest:
                raise DataError(
                    f"{name}: {path} does not match its entry in {d / 'SHA256SUMS'}",
                    "the file is corrupt or incomplete; copy it again",
                )


# ---------------------------------------------------------------------------- image folders


def _image_tree(
    path: Path, what: str, known: tuple[str, ...] | None
) -> tuple[list[Path], Callable[[], tuple[Arrays, tuple[str, ...]]]]:
    """(files to hash, decoder) for an image-folder directory or tarball at `path`."""
    if path.is_file():  # a tarball

        def decode_tar() -> tuple[Arrays, tuple[str, ...]]:
            contents, dirs = tar_contents(path, what)
            tree = layout(list(contents), dirs, what, known)
            return decode_tree(tree, contents.__getitem__, what), tree.classes

        return [path], decode_tar
    files, dirs = walk(path)
    tree = layout(files, dirs, what, known)  # check the layout before hashing anything
    used = [path / p for v in tree.groups.values() for _, p in v]

    def decode_dir() -> tuple[Arrays, tuple[str, ...]]:
        return decode_tree(tree, lambda p: (path / p).read_bytes(), what), tree.classes

    return used, decode_dir


# ---------------------------------------------------------------------------- cifar10


_CIFAR_BATCHES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
_CIFAR_FOLDER_FORMS = (
    "cifar-10-images",
    "cifar-10-images.tar.xz",
    "cifar-10-images.tar.gz",
    "cifar-10-images.tar",
)


def _cifar_official_dir(d: Path) -> Located:
    files = [d / b for b in _CIFAR_BATCHES] + (
        [d / "batches.meta"] if (d / "batches.meta").is_file() else []
    )

    def decode() -> tuple[Arrays, tuple[str, ...]]:
        return decode_cifar_batches({f.name: f.read_bytes() for f in files}, str(d))

    return Located(
        "cifar10",
        tuple(files),
        d,
        decode,
        f"CIFAR-10 official pickled batches {d.name}/ (exact pixels)",
    )


def _cifar_official_tar(tgz: Path) -> Located:
    def decode() -> tuple[Arrays, tuple[str, ...]]:
        raw = tgz.read_bytes()
        if not downloads.cifar10_archive_ok(raw):
            raise DataError(
                f"cifar10: {tgz} is not the official archive (md5 mismatch)",
                "delete it and download it again (--download)",
            )
        contents, _ = tar_contents(tgz, "cifar10")
        blobs = {Path(n).name: b for n, b in contents.items()}
        missing = [b for b in _CIFAR_BATCHES if b not in blobs]
        if missing:
            raise DataError(f"cifar10: {tgz} lacks {', '.join(missing)}", "download it again")
        return decode_cifar_batches(blobs, str(tgz))

    return Located(
        "cifar10",
        (tgz,),
        tgz.parent,
        decode,
        f"CIFAR-10 official archive {tgz.name} (exact pixels)",
    )


def _cifar_folder(path: Path) -> Located:
    files, inner = _image_tree(path, "cifar10", CIFAR10_CLASSES)

    def decode() -> tuple[Arrays, tuple[str, ...]]:
        arrays, classes = inner()
        got = (arrays["train_images"].shape, arrays["test_images"].shape)
        if classes != CIFAR10_CLASSES or got != ((50000, 32, 32, 3), (10000, 32, 32, 3)):
            raise DataError(
                f"cifar10: {path} holds {got[0]}/{got[1]} images of classes {classes}, "
                "not CIFAR-10's 50000/10000 32x32x3 in 10 classes",
                f"load it as folder:{path} instead",
            )
        return arrays, classes

    root = path if path.is_dir() else path.parent
    return Located(
        "cifar10",
        tuple(files),
        root,
        decode,
        f"CIFAR-10 as JPEG image folder {path.name} (lossy; decoded by Pillow {PIL.__version__})",
    )


@register_source("cifar10")
def _cifar10(_: str, data_dir: Path, download_missing: bool) -> Located:
    d = data_dir / "cifar-10-batches-py"
    if all((d / b).is_file() for b in _CIFAR_BATCHES):
        return _cifar_official_dir(d)
    tgz = data_dir / "cifar-10-python.tar.gz"
    if tgz.is_file():
        return _cifar_official_tar(tgz)
    for form in _CIFAR_FOLDER_FORMS:
        if (data_dir / form).exists():
            return _cifar_folder(data_dir / form)
    if download_missing:
        downloads.download_cifar10(tgz)
        return _cifar_official_tar(tgz)
    raise DataError(
        f"cifar10: no data found in {data_dir}",
        "place cifar-10-python.tar.gz (or cifar-10-images.tar.xz) there, or pass --download",
    )


# ---------------------------------------------------------------------------- mnist and idx


def _find_idx(dirs: Sequence[Path], stem: str) -> Path | None:
    """`stem.gz` or `stem` in the first dir holding either (a .gz wins over a raw copy)."""
    for d in dirs:
        for name in (f"{stem}.gz", stem):
            if (d / name).is_file():
                return d / name
    return None


@register_source("mnist")
def _mnist(_: str, data_dir: Path, download_missing: bool) -> Located:
    dirs = [data_dir / "mnist", data_dir / "MNIST" / "raw", data_dir]
    found = {stem: _find_idx(dirs, stem) for stem in downloads.MNIST_FILES}
    missing = [s for s, p in found.items() if p is None]
    if missing and download_missing:
        for stem in missing:
            found[stem] = downloads.download_mnist(stem, data_dir / "mnist" / f"{stem}.gz")
    elif missing:
        raise DataError(
            f"mnist: {missing[0]}.gz not found in {data_dir / 'mnist'}",
            f"place the four MNIST IDX files ({', '.join(s + '.gz' for s in downloads.MNIST_FILES)}) "
            "there, or pass --download",
        )
    paths = {s: p for s, p in found.items() if p is not None}

    def decode() -> tuple[Arrays, tuple[str, ...]]:
        raws = {}
        for stem, p in paths.items():
            raws[stem] = gunzip_if_needed(p.read_bytes(), str(p))
            if not downloads.mnist_checksum_ok(p, raws[stem]):
                raise DataError(
                    f"mnist: {p} does not match the official MNIST checksums",
                    f"delete it and download it again, or load the folder as idx:{p.parent}",
                )
        x = idx_arrays(raws, paths, "mnist")
        if x["train_images"].shape[1:] != (28, 28, 1):
            raise DataError(
                f"mnist: images are {x['train_images'].shape[1:3]}, not 28x28", "check the files"
            )
        return x, MNIST_CLASSES

    root = Path(os.path.commonpath([p.parent for p in paths.values()]))
    return Located(
        "mnist",
        tuple(paths.values()),
        root,
        decode,
        f"MNIST official IDX files in {root.name}/ (exact)",
    )


_IDX_ROLES = {
    "train images": ("train-images*",),
    "train labels": ("train-labels*",),
    "test images": ("t10k-images*", "test-images*"),
    "test labels": ("t10k-labels*", "test-labels*"),
}


def resolve_path(arg: str, data_dir: Path, prefix: str) -> Path:
    """The existing path a `prefix` source names (as given, else inside the data dir), resolved."""
    p = Path(arg).expanduser()
    if not p.exists() and not p.is_absolute() and (data_dir / p).exists():
        p = data_dir / p  # a relative path may also name something inside the data dir
    if not p.exists():
        raise DataError(
            f"{prefix}{arg}: no such file or directory",
            "give an existing path (absolute, or relative to the working or data dir)",
        )
    return p.resolve()


@register_source("folder:")
def _folder(arg: str, data_dir: Path, _download: bool) -> Located:
    path = resolve_path(arg, data_dir, "folder:")
    name = f"folder:{path}"
    known = CIFAR10_CLASSES  # a folder holding exactly CIFAR-10's classes keeps the official order
    files, decode = _image_tree(path, name, known)
    root = path if path.is_dir() else path.parent
    kind = "tarball" if path.is_file() else "tree"
    return Located(
        name,
        tuple(files),
        root,
        decode,
        f"image-folder {kind} {path} (decoded with Pillow {PIL.__version__})",
    )


@register_source("idx:")
def _idx(arg: str, data_dir: Path, _download: bool) -> Located:
    d = resolve_path(arg, data_dir, "idx:")
    name = f"idx:{d}"
    if not d.is_dir():
        raise DataError(f"{name}: not a directory", "give the folder holding the four IDX files")
    paths: dict[str, Path] = {}
    for role, patterns in _IDX_ROLES.items():
        hits = sorted(
            {
                p
                for pat in patterns
                for p in d.glob(pat)
                if p.is_file() and not p.name.startswith(".")
            }
        )
        gz = [p for p in hits if p.name.endswith(".gz")]
        if not hits:
            raise DataError(
                f"{name}: no {role} file ({' or '.join(patterns)})",
                "name the files like MNIST's: train-images-idx3-ubyte[.gz], ...",
            )
        if len(gz if gz else hits) > 1:
            raise DataError(
                f"{name}: several {role} files: {', '.join(p.name for p in hits)}",
                "keep one per role",
            )
        paths[role] = (gz or hits)[0]

    def decode() -> tuple[Arrays, tuple[str, ...]]:
        raws = {r: gunzip_if_needed(p.read_bytes(), str(p)) for r, p in paths.items()}
        arrays = idx_arrays(raws, paths, name)
        # as for folders, a test class without training images is a mistake (a swapped or foreign
        # label file), not one more class: the model would get a class it can never learn
        unseen = np.setdiff1d(arrays["test_labels"], arrays["train_labels"])
        if len(unseen):
            raise DataError(
                f"{name}: test labels {unseen[:10].tolist()} never occur in the training labels",
                "check the label files: every test class needs training images",
            )
        n = int(max(arrays["train_labels"].max(), arrays["test_labels"].max())) + 1
        return arrays, tuple(str(i) for i in range(n))

    return Located(name, tuple(paths.values()), d, decode, f"IDX files in {d}")


# ---------------------------------------------------------------------------- data check


def check_data_dir(
    data_dir: str | Path | None = None, *, cache_dir: str | Path | None = None
) -> list[str]:
    """Human-readable lines on what the data dir holds: files, checksums, counts, classes."""
    d = resolve_data_dir(data_dir)
    lines = [f"data dir: {d}" + ("" if d.is_dir() else " (does not exist)")]
    lines.append(f"cache dir: {resolve_cache_dir(cache_dir)}")
    sums_path = d / "SHA256SUMS"
    sums = _read_sha256sums(sums_path)
    if sums:
        lines.append(f"SHA256SUMS: {len(sums)} entries")
        for rel, expected in sorted(sums.items()):
            f = d / rel
            state = (
                "missing"
                if not f.is_file()
                else ("ok" if cache.sha256_file(f) == expected else "BAD")
            )
            lines.append(f"  {state:7s} {rel}")
    for name in ("cifar10", "mnist"):
        lines += _check_source(name, d, cache_dir)
    lines.append(
        "other sources: "
        + ", ".join(s for s in list_sources() if s.endswith("PATH"))
        + " (an image-folder tree/tarball, or a folder of IDX files)"
    )
    return lines


def _per_class(labels: torch.Tensor, k: int) -> str:
    counts = torch.bincount(labels, minlength=k).tolist()
    return f"{counts[0]} each" if len(set(counts)) == 1 else " ".join(map(str, counts))


def _check_source(name: str, data_dir: Path, cache_dir: str | Path | None) -> list[str]:
    """Lines for one source; loading it runs every check (checksums, layout, counts)."""
    try:
        loader, arg = _lookup(name)
        files = loader(arg, data_dir, False).files
        ds = load_dataset(name, data_dir, cache_dir=cache_dir, verify=True)
    except (RethinkError, OSError) as e:
        return [f"{name}: absent or unusable: {e}"]
    shown = [str(f.relative_to(data_dir)) if f.is_relative_to(data_dir) else str(f) for f in files]
    more = f", ... ({len(shown)} files)" if len(shown) > 6 else ""
    x, tx = ds.train_images, ds.test_images
    return [
        f"{name}: present: {ds.description}",
        f"  files: {', '.join(shown[:6])}{more} (checksums ok)",
        f"  train {tuple(x.shape)} {x.dtype}, test {tuple(tx.shape)} {tx.dtype}, "
        f"{ds.num_classes} classes: {' '.join(ds.classes)}",
        f"  per class: train {_per_class(ds.train_labels, ds.num_classes)}; "
        f"test {_per_class(ds.test_labels, ds.num_classes)}",
        f"  source sha256 {ds.source_hash[:16]}..., arrays sha256 {ds.content_hash[:16]}...",
    ]
