"""Checkpoints: checksummed, written atomically (temp file + rename), read with `weights_only=True`.

A checkpoint is one dict of tensors and plain values: the model and optimizer state, the
epoch and step reached, the learning-curve rows so far and the run id it belongs to. The
corruption is NOT in it: it is recomputed from the corruption seed, and the saved label
checksum proves the recomputation matches (it is never redrawn differently on resume).

On disk: one header line `rethink-checkpoint <sha256 of the rest>\\n`, then `torch.save`'s
bytes. A truncated file or a flipped bit fails the checksum and is reported, never loaded (a
bit flip inside a tensor would otherwise load silently). Files without the header, written by
rethink before it had one, are still read (weights_only, so no code can run).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rethink.errors import CheckpointError
from rethink.faults import failpoint

FORMAT_VERSION = 1
MAGIC = b"rethink-checkpoint "
_HEADER = len(MAGIC) + 64 + 1  # magic, hex sha256, newline


def checkpoint_bytes(state: dict[str, Any]) -> bytes:
    """`state` as a checkpoint file's bytes: the checksum header, then torch.save's archive."""
    buffer = io.BytesIO()
    torch.save({"format_version": FORMAT_VERSION, **state}, buffer)
    payload = buffer.getvalue()
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` so that a kill at any moment leaves the old file or the new one."""
    data = checkpoint_bytes(state)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        failpoint("checkpoint-temp-written")
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # disk full, quota, read-only: one line, the old file kept
            raise _write_error(path, exc) from exc
        raise
    failpoint("checkpoint-replaced")


def _write_error(path: Path, exc: OSError) -> CheckpointError:
    return CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}",
                           "free disk space or fix permissions, then rerun the same command to resume")


def load_checkpoint(path: Path, run_id: str) -> dict[str, Any]:
    """Load a checkpoint of run `run_id`; refuse truncated, corrupted and other runs' files."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable ({exc.strerror or exc})",
                              "check its permissions, or delete it to restart the run") from exc
    payload = raw
    if raw.startswith(MAGIC):
        digest, payload = raw[len(MAGIC) : _HEADER - 1], raw[_HEADER:]
        if raw[_HEADER - 1 : _HEADER] != b"\n" or hashlib.sha256(payload).hexdigest().encode() != digest:
            raise CheckpointError(f"checkpoint {path} is corrupted (checksum mismatch: truncated or altered)",
                                  "delete it to restart the run from scratch")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, disallowed pickle globals
        raise CheckpointError(
            f"checkpoint {path} is unreadable ({type(exc).__name__})",
            "delete it to restart the run from scratch",
        ) from exc
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path} has an unknown format", "delete it to restart the run")
    if state.get("run_id") != run_id:
        raise CheckpointError(
            f"checkpoint {path} belongs to run {state.get('run_id')}, not {run_id}",
            "delete it or use another --out",
        )
    return state
