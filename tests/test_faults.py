"""Crash-resume equivalence, tested by killing: a run SIGKILLed anywhere and resumed ends exactly
where an uninterrupted run ends (bitwise, on CPU with one thread), and the database stays whole.

Each kill uses a failpoint (`rethink.faults`): the process kills itself during a step, with a
checkpoint half-installed, inside a database transaction, right after an epoch is committed.
CI tries the fixed list below; `pytest --soak N tests/test_faults.py` adds N random kill
sequences (random failpoints and timer kills, several per run until it finishes).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from rethink.faults import POINTS
from rethink.store import DB_NAME
from rethink.train.checkpoint import load_checkpoint

EPOCHS = 4
# every regularizer's randomness is in play: crop and flip draws, dropout masks, partial labels
ARGS = ["run", "--model", "mlp1x512", "--input-size", "8", "--batch-size", "32", "--corruption", "partial",
        "--p", "0.3", "--augment", "crop,flip", "--dropout", "0.2", "--max-epochs", str(EPOCHS),
        "--no-stop-at-fit", "--precision", "fp32", "--threads", "1", "--lr", "0.05"]
TIMINGS = ("wall_time", "train_time", "eval_time")
# (failpoint, visit): 9 steps per epoch (300 / 32); transaction 1 creates the schema, 2 starts the run
KILL_POINTS = [
    ("step", 4),  # mid first epoch, before any checkpoint
    ("step", 22),  # mid third epoch
    ("checkpoint-temp-written", 2),  # the new checkpoint complete but not yet renamed
    ("checkpoint-replaced", 3),  # checkpoint of epoch 3 in place, its row not yet in the database
    ("db-in-transaction", 4),  # epoch 2's row written, not committed
    ("epoch-stored", 1),  # just after the first epoch's commit
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    """10 classes x (30 train + 10 test) 10x10 PNGs: a class colour plus noise."""
    root = tmp_path_factory.mktemp("faults") / "tree"
    rng = np.random.default_rng(0)
    colours = rng.integers(0, 256, size=(10, 3))
    for split, n in (("train", 30), ("test", 10)):
        for c in range(10):
            (root / split / f"c{c}").mkdir(parents=True)
            for i in range(n):
                img = np.clip(colours[c] + rng.normal(0, 40, (10, 10, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(root / split / f"c{c}" / f"{i}.png")
    return root


def _rethink(folder: Path, out: Path, failpoints: str = "", kill_after: float | None = None) -> int:
    env = {**os.environ, "RETHINK_FAILPOINTS": failpoints}
    cmd = [sys.executable, "-m", "rethink", *ARGS, "--dataset", f"folder:{folder}", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=kill_after if kill_after is not None else 300)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)  # a power cut at a random moment
        _, err = proc.communicate()
    assert proc.returncode in (0, -signal.SIGKILL), err
    return proc.returncode


def _snapshot(out: Path) -> dict:
    """Everything a run stores, minus wall-clock timings: rows, files, final weights."""
    db = sqlite3.connect(out / DB_NAME)
    db.row_factory = sqlite3.Row
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    (run,) = [dict(r) for r in db.execute("SELECT * FROM runs")]
    epochs = [{k: v for k, v in dict(r).items() if k not in TIMINGS}
              for r in db.execute("SELECT * FROM epochs ORDER BY epoch")]
    db.close()
    run_dir = out / run["run_id"]
    state = load_checkpoint(run_dir / "checkpoint.pt", run["run_id"])
    keep = ("status", "epochs", "steps", "steps_to_fit", "train_loss", "train_acc", "test_loss", "test_acc",
            "best_test_acc", "realized_rate", "config")
    return {
        "run": {k: run[k] for k in keep},
        "epochs": epochs,
        "files": {name: (run_dir / name).read_bytes() for name in ("config.json", "corruption.npz")},
        "history": [{k: v for k, v in row.items() if k not in TIMINGS} for row in state["history"]],
        "tensors": {f"{part}.{k}": v for part in ("model",) for k, v in state[part].items()},
        "optimizer": state["optimizer"],
        "leftovers": sorted(p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")),
    }


def _assert_identical(a: dict, b: dict) -> None:
    assert a["run"] == b["run"] and a["epochs"] == b["epochs"] and a["history"] == b["history"]
    assert a["files"] == b["files"]  # the corruption was never redrawn
    assert a["tensors"].keys() == b["tensors"].keys()
    for k, t in a["tensors"].items():
        assert torch.equal(t, b["tensors"][k]), k  # bitwise
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)  # the momentum buffers too
    assert a["leftovers"] == b["leftovers"] == []


@pytest.fixture(scope="module")
def reference(folder, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("reference")
    assert _rethink(folder, out) == 0
    return _snapshot(out)


def test_failpoints_cover_every_point():
    assert {name for name, _ in KILL_POINTS} == set(POINTS)


@pytest.mark.parametrize(("point", "visit"), KILL_POINTS, ids=[f"{p}-{v}" for p, v in KILL_POINTS])
def test_killed_run_resumes_bitwise(folder, reference, tmp_path, point, visit):
    out = tmp_path / "out"
    assert _rethink(folder, out, f"{point}:{visit}") == -signal.SIGKILL  # it really died there
    if (out / DB_NAME).exists():
        db = sqlite3.connect(out / DB_NAME)
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"  # whole after the kill
        db.close()
    assert _rethink(folder, out) == 0
    _assert_identical(_snapshot(out), reference)


def test_soak_random_kill_sequences(folder, reference, tmp_path, request):
    """Random kills until the run finishes, `--soak N` times (skipped in CI)."""
    rounds = request.config.getoption("--soak")
    if not rounds:
        pytest.skip("soak mode: pytest --soak N tests/test_faults.py")
    rng = random.Random(int(time.time()))
    kills = 0
    for r in range(rounds):
        out = tmp_path / f"soak{r}"
        while True:
            if rng.random() < 0.5:
                point = rng.choice(POINTS)
                visit = rng.randint(1, 4 * 9 if point == "step" else EPOCHS + 1)
                code = _rethink(folder, out, f"{point}:{visit}")
            else:
                code = _rethink(folder, out, kill_after=rng.uniform(0.5, 6.0))
            if code == 0:
                break
            kills += 1
        _assert_identical(_snapshot(out), reference)
    print(f"soak: {rounds} runs, {kills} kills, all identical to the uninterrupted run")
