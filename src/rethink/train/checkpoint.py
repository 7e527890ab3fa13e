"""Checkpoints: written atomically (temp file + rename), read with `weights_only=True`.

A checkpoint is one dict of tensors and plain values: the model and optimizer state, the
epoch and step reached, the learning-curve rows so far and the run id it belongs to. The
corruption is NOT in it: it is recomputed from the corruption seed, and the saved label
checksum proves the recomputation matches (it is never redrawn differently on resume).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from rethink.errors import CheckpointError

FORMAT_VERSION = 1


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write `state` to `path` so that a kill at any moment leaves the old file or the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save({"format_version": FORMAT_VERSION, **state}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, run_id: str) -> dict[str, Any]:
    """Load a checkpoint of run `run_id`; refuse truncated files and other runs' checkpoints."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
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
