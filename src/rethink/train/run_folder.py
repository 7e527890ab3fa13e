"""A run's folder, `<out>/<run id>/`: the one owner of its files and its lock.

    checkpoint.pt   the training state after the last finished epoch (rethink.train.checkpoint)
    config.json     the RunConfig, as stored with the run
    corruption.npz  which labels changed, the training labels and subset, the realized rate
    .lock           held (flock) by the process training the run; holds its pid

The checkpoint is the source of truth a resume rebuilds the store's epoch rows from; whether a
run has *finished* is the store's to say (`Store.finished_result`).
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rethink.config import RunConfig
from rethink.data.rundata import RunData
from rethink.errors import CheckpointError, StoreError
from rethink.files import atomic_write
from rethink.train.checkpoint import load_checkpoint, save_checkpoint

CHECKPOINT, CONFIG, CORRUPTION, LOCK = "checkpoint.pt", "config.json", "corruption.npz", ".lock"


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @classmethod
    def of(cls, out_dir: str | Path, run_id: str) -> RunFolder:
        return cls(Path(out_dir) / run_id)

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def checkpoint(self) -> Path:
        return self.path / CHECKPOINT

    # ------------------------------------------------------------------ training state

    def load_state(self, corruption_sha256: str) -> dict[str, Any] | None:
        """The run's checkpoint, checked (checksum, run id, and the corrupted data it was trained
        on), or None when there is none yet. Raises CheckpointError for one that cannot be resumed."""
        if not self.checkpoint.exists():
            return None
        state = load_checkpoint(self.checkpoint, self.run_id)
        if state["corruption_sha256"] != corruption_sha256:
            raise CheckpointError(f"checkpoint {self.checkpoint} was trained on other data than its "
                                  "config gives", "delete the run folder to restart it")
        return state

    def save_state(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.checkpoint, {"run_id": self.run_id, **state})

    def checkpoint_bytes(self) -> bytes | None:
        """The checkpoint file as it is (to carry a run to another machine), or None."""
        return self.checkpoint.read_bytes() if self.checkpoint.is_file() else None

    def put_files(self, files: dict[str, bytes]) -> None:
        """Write files by name (e.g. `files()` of this run's folder on another machine)."""
        for name, data in files.items():
            atomic_write(self.path / Path(name).name, data)

    # ------------------------------------------------------------------ the run's record

    def write_record(self, config: RunConfig, data: RunData) -> None:
        """config.json and the corruption record (mask, labels, subset) beside the checkpoint."""
        atomic_write(self.path / CONFIG, json.dumps(config.to_dict(), indent=2, sort_keys=True).encode())
        record = io.BytesIO()
        np.savez_compressed(record, changed=data.changed.cpu().numpy(),
                            train_labels=data.train_y.cpu().numpy(),
                            subset=data.subset.numpy(), realized_rate=np.float64(data.realized_rate))
        atomic_write(self.path / CORRUPTION, record.getvalue())

    def files(self) -> dict[str, bytes]:
        """Every finished file of the folder by name (dot-files are locks and atomic writes' temporaries)."""
        return {p.name: p.read_bytes() for p in self.path.iterdir()
                if p.is_file() and not p.name.startswith(".")}

    # ------------------------------------------------------------------ the lock

    @contextlib.contextmanager
    def claim(self) -> Iterator[None]:
        """Create the folder and hold its lock while training.

        A second process training the same run into the same --out is refused in one line (two
        writers would interleave checkpoints); other runs in the same folder train concurrently
        (the database takes concurrent writers). An unwritable folder is one line too, and a folder
        this call created is removed again if anything fails before a checkpoint exists.
        """
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = open(self.path / LOCK, "a+")  # noqa: SIM115 - held open for the whole run
        except OSError as exc:
            raise self._unwritable(exc) from exc
        try:
            self._lock(lock)
            for stale in self.path.glob(".*.tmp"):  # a killed writer's temp file; we hold the lock now
                stale.unlink(missing_ok=True)
            yield
        except BaseException as exc:
            if created and not self.checkpoint.exists():
                shutil.rmtree(self.path, ignore_errors=True)  # nothing of this run was kept: no folder
            if isinstance(exc, OSError):
                raise self._unwritable(exc) from exc
            raise
        finally:
            lock.close()

    def _lock(self, lock: Any) -> None:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise StoreError(f"run {self.run_id} is being trained by another rethink process "
                             f"(pid {holder}) in {self.path.parent}",
                             "wait for it to finish, or use another --out") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()

    def _unwritable(self, exc: OSError) -> StoreError:
        return StoreError(f"cannot write to the output directory {self.path.parent}: {exc.strerror or exc}",
                          "pass a writable --out with free space")
