"""Decode once, then load uint8 arrays from `.npy` files keyed by the source files' hash.

An entry is `<cache_dir>/<sanitized-name>-<source_hash[:16]>/` holding one `.npy` per array and
a `manifest.json` (format version, shapes, dtypes, classes, content sha256). Entries are written
to a temporary directory and renamed into place, so a reader sees a whole entry or none. An entry
that fails any check (manifest, shapes, sizes, optionally the content hash) is rebuilt, never
used. File hashes are memoized by (path, size, mtime_ns) so a warm load does not re-read sources.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rethink.files import atomic_write

FORMAT_VERSION = 1
ARRAY_NAMES = ("train_images", "train_labels", "test_images", "test_labels")
_MANIFEST = "manifest.json"
_HASH_MEMO = "file-hashes.json"
_CHUNK = 1 << 22


# ---------------------------------------------------------------------------- source hashing


def sha256_file(path: Path) -> str:
    """sha256 hex of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json_atomic(path: Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=1, sort_keys=True).encode())


def file_hashes(paths: Iterable[Path], cache_dir: Path | None) -> dict[Path, str]:
    """sha256 of each file, memoized in `cache_dir` by (absolute path, size, mtime_ns).

    The memo is best effort: an unreadable memo is ignored and an unwritable cache dir only
    costs re-hashing next time.
    """
    memo_path = cache_dir / _HASH_MEMO if cache_dir is not None else None
    memo = (_read_json(memo_path) if memo_path else None) or {}
    if not isinstance(memo, dict):
        memo = {}
    out: dict[Path, str] = {}
    changed = False
    for path in paths:
        st = path.stat()
        key = str(path.resolve())
        stamp = [st.st_size, st.st_mtime_ns]
        entry = memo.get(key)
        if isinstance(entry, list) and len(entry) == 3 and entry[:2] == stamp:
            out[path] = entry[2]
            continue
        out[path] = sha256_file(path)
        memo[key] = [*stamp, out[path]]
        changed = True
    if changed and memo_path is not None:
        with contextlib.suppress(OSError):  # a read-only cache dir only costs re-hashing
            _write_json_atomic(memo_path, memo)
    return out


def source_hash(hashes: Mapping[Path, str], root: Path) -> str:
    """Identify a source: a lone file's sha256, else the sha256 of its sorted (path, hash) list.

    `hashes` maps each source file to its sha256 (see `file_hashes`). For a lone file the result
    equals the file's line in a SHA256SUMS file, so the two can be compared.
    """
    if len(hashes) == 1:
        return next(iter(hashes.values()))
    lines = sorted(f"{p.relative_to(root).as_posix()}\0{h}\n" for p, h in hashes.items())
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def content_hash(arrays: Mapping[str, np.ndarray]) -> str:
    """sha256 over the arrays' names, dtypes, shapes and bytes, in `ARRAY_NAMES` order."""
    h = hashlib.sha256()
    for name in ARRAY_NAMES:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape}\n".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


# ---------------------------------------------------------------------------- entries


def entry_dir(cache_dir: Path, name: str, src_hash: str) -> Path:
    """Where the arrays decoded from source `src_hash` of dataset `name` live."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:60] or "dataset"
    return cache_dir / f"{safe}-{src_hash[:16]}"


def load_entry(
    cache_dir: Path, name: str, src_hash: str, *, verify: bool = False
) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    """The cached arrays and manifest, or None when absent or failing any check.

    Always checked: manifest format, source hash, array names, dtypes and shapes against the
    `.npy` headers and file sizes. With `verify`, also the content hash (about 0.15 s for
    CIFAR-10).
    """
    d = entry_dir(cache_dir, name, src_hash)
    manifest = _read_json(d / _MANIFEST)
    if not _manifest_ok(manifest, src_hash):
        return None
    arrays: dict[str, np.ndarray] = {}
    for key in ARRAY_NAMES:
        spec = manifest["arrays"][key]
        try:
            a = np.load(d / f"{key}.npy", allow_pickle=False)
        except (OSError, ValueError, EOFError):
            return None  # missing or truncated file
        if a.dtype.str != spec["dtype"] or list(a.shape) != spec["shape"]:
            return None
        arrays[key] = a
    if verify and content_hash(arrays) != manifest["content_sha256"]:
        return None
    return arrays, manifest


def _manifest_ok(m: Any, src_hash: str) -> bool:
    try:
        return (
            m["format_version"] == FORMAT_VERSION
            and m["source_hash"] == src_hash
            and isinstance(m["classes"], list)
            and all(isinstance(m["arrays"][k]["shape"], list) for k in ARRAY_NAMES)
            and all(isinstance(m["arrays"][k]["dtype"], str) for k in ARRAY_NAMES)
            and isinstance(m["content_sha256"], str)
        )
    except (TypeError, KeyError):
        return False


def save_entry(
    cache_dir: Path,
    name: str,
    src_hash: str,
    arrays: Mapping[str, np.ndarray],
    *,
    classes: tuple[str, ...],
    description: str,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write an entry atomically and return its manifest.

    Failing to write (read-only or full disk) is not an error for the caller: the manifest is
    still returned and the next load decodes again.
    """
    manifest = {
        "format_version": FORMAT_VERSION,
        "name": name,
        "source_hash": src_hash,
        "classes": list(classes),
        "description": description,
        "arrays": {
            k: {"shape": list(arrays[k].shape), "dtype": arrays[k].dtype.str} for k in ARRAY_NAMES
        },
        "content_sha256": content_hash(arrays),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **(extra or {}),
    }
    final = entry_dir(cache_dir, name, src_hash)
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=cache_dir, prefix=f".{final.name}.", suffix=".tmp"))
    except OSError:
        return manifest
    try:
        for key in ARRAY_NAMES:
            np.save(tmp / f"{key}.npy", np.ascontiguousarray(arrays[key]), allow_pickle=False)
        (tmp / _MANIFEST).write_text(json.dumps(manifest, indent=1))
        _replace_dir(tmp, final)
    except OSError:
        pass  # disk full or read-only: the caller still has the arrays
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return manifest


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move `tmp` to `final`, first moving aside a stale (failed-check) entry there."""
    if final.exists():
        stale = final.with_name(f".{final.name}.stale-{os.getpid()}-{time.monotonic_ns()}")
        try:
            os.replace(final, stale)
        except OSError:
            return
        shutil.rmtree(stale, ignore_errors=True)
    with contextlib.suppress(OSError):  # another process got there first; theirs is as good
        os.replace(tmp, final)
