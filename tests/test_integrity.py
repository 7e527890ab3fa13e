"""Checksummed checkpoints, and running out of memory (recorded, with a hint; a sweep goes on).
Killed runs, concurrent processes and full disks: tests/test_faults.py."""

from __future__ import annotations

import sqlite3

import pytest
import torch
from helpers import SMALL, make_image_folder, make_raw

from rethink.config import RunConfig
from rethink.errors import CheckpointError, ResourceError
from rethink.experiments.sweep import run_sweep
from rethink.store import Store
from rethink.train import loop
from rethink.train.checkpoint import checkpoint_bytes, load_checkpoint, save_checkpoint
from rethink.train.runner import run

STATE = {"run_id": "r1", "epoch": 1, "model": {"w": torch.arange(6.0)}, "history": []}


def test_checkpoint_checksum_refuses_flipped_and_truncated_files(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, STATE)
    assert torch.equal(load_checkpoint(path, "r1")["model"]["w"], torch.arange(6.0))
    good = path.read_bytes()
    flipped = bytearray(good)
    flipped[-200] ^= 0x01  # one bit, deep in the archive: torch.load alone might not notice
    for damaged in (bytes(flipped), good[: len(good) // 2], good[:10]):
        path.write_bytes(damaged)
        with pytest.raises(CheckpointError, match="corrupted|unreadable"):
            load_checkpoint(path, "r1")
    # a checkpoint written before the header existed still loads (weights_only as ever)
    path.write_bytes(checkpoint_bytes(STATE).split(b"\n", 1)[1])
    assert load_checkpoint(path, "r1")["epoch"] == 1


def _oom_at_call(monkeypatch, k: int) -> None:
    real, calls = loop.sgd_step, []

    def sgd_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == k:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "sgd_step", sgd_step)


def test_out_of_memory_is_recorded_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setattr("rethink.train.runner.load_dataset", lambda *a, **k: make_raw())
    _oom_at_call(monkeypatch, 3)
    config = RunConfig(**SMALL)
    with pytest.raises(ResourceError, match="out of memory training mlp1x512 at batch size 32") as info:
        run(config, out_dir=tmp_path, log=lambda s: None)
    assert "--batch-size 16" in info.value.hint and "--precision bf16" in info.value.hint
    with Store(tmp_path, readonly=True) as store:
        row = store.get_run(config.run_id)
    assert row["status"] == "failed" and "Tried to allocate" in row["message"]


def test_out_of_memory_fails_one_run_and_the_sweep_goes_on(tmp_path, monkeypatch):
    data = make_image_folder(tmp_path / "data", n_train=12, n_test=10)
    _oom_at_call(monkeypatch, 1)  # the first run's first step
    result = run_sweep("smoke", experiments=("table1",), models=("mlp1x512",), dataset=f"folder:{data}",
                       out_dir=tmp_path / "out", report=False, log=lambda s: None)
    assert (result.runs, result.finished, result.failed) == (3, 2, 1)
    with Store(tmp_path / "out", readonly=True) as store:
        statuses = sorted(r["status"] for r in store.runs())
    db = sqlite3.connect(tmp_path / "out" / "results.sqlite")
    assert statuses.count("failed") == 1 and db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def _calls(tree) -> list:
    """(dotted name, keywords) of every call in a module's syntax tree."""
    import ast

    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            parts, f = [], node.func
            while isinstance(f, ast.Attribute):
                parts.append(f.attr)
                f = f.value
            if isinstance(f, ast.Name):
                parts.append(f.id)
            keywords = {k.arg: getattr(k.value, "value", None) for k in node.keywords}
            out.append((".".join(reversed(parts)), keywords, node.lineno))
    return out


def test_no_unsafe_deserialization_in_the_package():
    """Every load of a file is restricted: torch.load with weights_only=True, np.load without
    pickles, and pickle only through the SafeUnpickler (tests/test_data_sources.py proves it
    refuses a malicious pickle without running it)."""
    import ast
    from pathlib import Path

    import rethink

    seen = []
    for path in Path(rethink.__file__).parent.rglob("*.py"):
        for name, keywords, line in _calls(ast.parse(path.read_text())):
            where = f"{path.name}:{line}: {name}"
            if name == "torch.load":
                assert keywords.get("weights_only") is True, where
            elif name in ("np.load", "numpy.load"):
                assert keywords.get("allow_pickle") is False, where
            elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "torch.serialization.load"):
                raise AssertionError(f"raw unpickling outside SafeUnpickler: {where}")
            else:
                continue
            seen.append(where)
    assert len(seen) >= 4  # the scan sees the loads that exist (checkpoint, cache, packs)
