"""Crash-resume equivalence, tested by killing: a run SIGKILLed anywhere and resumed ends exactly
where an uninterrupted run ends (bitwise, on CPU with one thread), and the database stays whole;
also two processes on one output directory, and unwritable or full disks.

Each kill uses a failpoint (`rethink.faults`): the process kills itself during a step, with a
checkpoint half-installed, inside a database transaction, right after an epoch is committed.
CI tries the fixed list below; `pytest --soak N tests/test_faults.py` adds N random kill
sequences (random failpoints and timer kills, several per run until it finishes).
"""

from __future__ import annotations

import os
import random
import resource
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

from rethink.cli import main
from rethink.faults import POINTS
from rethink.store import DB_NAME, Store
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


# ---------------------------------------------------------------- two processes, unwritable and full disks


def _popen_run(folder: Path, out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "rethink", *ARGS, "--dataset", f"folder:{folder}", "--out", str(out), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _integrity(out: Path) -> str:
    db = sqlite3.connect(out / DB_NAME)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def test_a_second_process_on_the_same_run_is_refused_other_runs_proceed(folder, tmp_path, capsys):
    out = tmp_path / "out"
    first = _popen_run(folder, out, "--max-epochs", "400")  # long enough to be caught mid-run
    try:
        deadline = time.time() + 60
        while not list(out.glob("*/.lock")) or not list(out.glob("*/checkpoint.pt")):
            assert time.time() < deadline and first.poll() is None
            time.sleep(0.1)
        same = [*ARGS, "--dataset", f"folder:{folder}", "--out", str(out), "--max-epochs", "400"]
        assert main(same) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "is being trained by another rethink process" in err
        assert f"pid {first.pid}" in err
        other = [*ARGS, "--dataset", f"folder:{folder}", "--out", str(out), "--max-epochs", "2",
                 "--seed", "7"]
        assert main(other) == 0  # another run, same folder and database: trains alongside
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    assert _integrity(out) == "ok"
    with Store(out, readonly=True) as store:
        assert sorted(r["status"] for r in store.runs()) == ["not-fitted", "running"]


def test_an_unwritable_output_directory_is_one_line_and_leaves_nothing(folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    argv = [*ARGS, "--dataset", f"folder:{folder}", "--max-epochs", "1", "--out", str(blocker / "runs")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot" in err and "a-file" in err
    assert blocker.read_text() == "not a directory"
    if os.geteuid() != 0:  # root ignores permission bits
        ro = tmp_path / "read-only"
        ro.mkdir(mode=0o555)
        assert main([*argv[:-1], str(ro)]) == 2
        assert "cannot" in capsys.readouterr().err and not list(ro.iterdir())


def _file_size_limit(limit: int):
    def apply() -> None:  # in the child: writes past `limit` bytes fail with EFBIG, like a full disk
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_is_one_line_keeps_the_store_whole_and_the_rerun_finishes(folder, reference, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "rethink", *ARGS, "--dataset", f"folder:{folder}", "--out", str(out)]
    # the run folder's small files and the database fit; the first checkpoint (~1.2 MB) does not
    full = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_file_size_limit(400_000),
                          timeout=300)
    assert full.returncode == 2, full.stderr
    assert full.stderr.count("\n") == 1 and "cannot write checkpoint" in full.stderr
    assert _integrity(out) == "ok"
    # the half-written checkpoint was removed (and the run folder, which held no checkpoint yet)
    assert not list(out.glob("*/.*.tmp"))
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    _assert_identical(_snapshot(out), reference)
