"""The Ray executor on a real local Ray cluster: same results as the local executor, reruns skip,
resumes use the driver's checkpoint, a killed worker is retried, user errors are not."""

from __future__ import annotations

import dataclasses
import os
import shutil
import signal
import sqlite3
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import descendants, dump_store, make_image_folder

from rethink.errors import CheckpointError, ConfigError
from rethink.experiments.grids import PRESETS
from rethink.experiments.sweep import SweepResult, run_sweep

SWEEP = {"experiments": ("fig1b",), "models": ("mlp1x512", "alexnet"), "report": False, "precision": "auto"}


@pytest.fixture(scope="module")
def worker_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workers' TMPDIR, where tasks train: kept inside pytest's temporary directories."""
    return tmp_path_factory.mktemp("ray-workers")


@pytest.fixture(scope="module")
def ray_cluster(worker_tmp):
    """One local 2-CPU Ray instance for the module; the executor uses it instead of starting one."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, runtime_env={"env_vars": {"TMPDIR": str(worker_tmp)}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"folder:{make_image_folder(tmp_path_factory.mktemp('ray-data') / 'images')}"


def _ray_sweep(out: Path, dataset: str, log: list[str] | None = None, preset: str = "smoke",
               max_retries: int = 2, stack: str | int = "off", **kwargs) -> SweepResult:
    from rethink.experiments.executors import RayExecutor

    options = {**SWEEP, **kwargs}
    return run_sweep(preset, dataset=dataset, out_dir=out, log=(log.append if log is not None else _quiet),
                     executor=RayExecutor(cpus_per_run=1, max_retries=max_retries, stack=stack), **options)


def _quiet(line: str) -> None:
    pass


@pytest.fixture(scope="module")
def swept(ray_cluster, dataset, tmp_path_factory):
    """The same sweep through the local executor and through Ray, both with one torch thread."""
    import torch

    root = tmp_path_factory.mktemp("ray-sweeps")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what each Ray task gets with --cpus-per-run 1
    try:
        local = run_sweep("smoke", dataset=dataset, out_dir=root / "local", log=_quiet, **SWEEP)
    finally:
        torch.set_num_threads(threads)
    log: list[str] = []
    via_ray = _ray_sweep(root / "ray", dataset, log)
    return local, via_ray, root, log


def _close(a: list[dict], b: list[dict]) -> None:
    """Equal rows; floats within 1e-6 (thread pools could reorder a reduction)."""
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            if isinstance(x[k], float) and isinstance(y[k], float):
                assert y[k] == pytest.approx(x[k], rel=1e-6, abs=1e-6), k
            else:
                assert x[k] == y[k], k


def test_ray_sweep_stores_what_the_local_executor_stores(swept):
    local, via_ray, root, log = swept
    assert (via_ray.runs, via_ray.finished, via_ray.failed, via_ray.skipped) == (6, 6, 0, 0)
    assert via_ray.sweep_id == local.sweep_id
    runs_l, epochs_l, points_l = dump_store(root / "local" / "results.sqlite")
    runs_r, epochs_r, points_r = dump_store(root / "ray" / "results.sqlite")
    assert points_r == points_l
    assert {r["status"] for r in runs_r} <= {"fitted", "not-fitted"}
    _close(runs_l, runs_r)  # statuses, steps, steps_to_fit, train/test loss and accuracy
    _close(epochs_l, epochs_r)  # every learning-curve row
    assert all(r["epochs"] >= 1 and r["steps"] >= 1 for r in runs_r)
    db = sqlite3.connect(root / "ray" / "results.sqlite")
    assert {v for (v,) in db.execute("SELECT json_extract(versions, '$.torch_threads') FROM runs")} == {1}
    for run in runs_r:  # the run folders came back from the workers, written by the driver
        here, there = root / "ray" / run["run_id"], root / "local" / run["run_id"]
        assert (here / "checkpoint.pt").stat().st_size > 0
        assert (here / "config.json").read_bytes() == (there / "config.json").read_bytes()
        with np.load(here / "corruption.npz") as a, np.load(there / "corruption.npz") as b:
            assert all(np.array_equal(a[k], b[k]) for k in b.files)
    assert log[-2] == "ray: 0 queued / 0 running / 6 done / 0 failed"
    status = [line for line in log if line.startswith("ray: ") and "queued" in line]
    # the state after each refill of the two slots, then the final one
    assert status[0] == "ray: 4 queued / 2 running / 0 done / 0 failed" and len(status) == 7
    assert log[-1].startswith(f"sweep {via_ray.sweep_id} done: 6 trained, 0 skipped, 0 failed")


def test_ray_rerun_through_the_cli_skips_everything(swept, dataset, capsys):
    from rethink.cli import main

    _, _, root, _ = swept
    before = dump_store(root / "ray" / "results.sqlite")
    argv = ["reproduce", "--preset", "smoke", "--experiments", "fig1b", "--models", "mlp1x512,alexnet",
            "--dataset", dataset, "--out", str(root / "ray"), "--no-report", "--executor", "ray",
            "--cpus-per-run", "1", "--max-retries", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "(6 already finished)" in out and "0 trained, 6 skipped, 0 failed" in out
    assert "queued" not in out  # nothing was submitted
    assert dump_store(root / "ray" / "results.sqlite") == before


def _copy_with_one_run_running(swept, out: Path) -> tuple[sqlite3.Connection, str]:
    """A copy of the swept Ray store in `out` whose first run is marked as still running."""
    shutil.copytree(swept[2] / "ray", out)
    db = sqlite3.connect(out / "results.sqlite", isolation_level=None)
    run_id = db.execute("SELECT run_id FROM runs ORDER BY run_id LIMIT 1").fetchone()[0]
    db.execute("UPDATE runs SET status = 'running' WHERE run_id = ?", (run_id,))
    return db, run_id


def test_an_interrupted_run_resumes_on_the_worker_from_the_drivers_checkpoint(swept, dataset, tmp_path):
    out = tmp_path / "out"
    before = dump_store(swept[2] / "ray" / "results.sqlite")
    db, run_id = _copy_with_one_run_running(swept, out)
    curve = "SELECT wall_time FROM epochs WHERE run_id = ? ORDER BY epoch"
    wall_times = db.execute(curve, (run_id,)).fetchall()
    # as if killed after the last checkpoint was written but before the database caught up
    db.execute("DELETE FROM epochs WHERE run_id = ? AND epoch = (SELECT MAX(epoch) FROM epochs "
               "WHERE run_id = ?)", (run_id, run_id))
    db.close()

    result = _ray_sweep(out, dataset)
    assert (result.finished, result.skipped) == (1, 5)
    assert dump_store(out / "results.sqlite") == before
    db = sqlite3.connect(out / "results.sqlite")
    # the same epoch rows, not a retrained run: the worker resumed from the checkpoint we sent
    assert db.execute(curve, (run_id,)).fetchall() == wall_times


def test_a_user_error_on_a_worker_stops_the_sweep_unretried(swept, dataset, tmp_path):
    out = tmp_path / "out"
    db, run_id = _copy_with_one_run_running(swept, out)
    db.close()
    (out / run_id / "checkpoint.pt").write_bytes(b"not a checkpoint")

    with pytest.raises(CheckpointError, match="is unreadable") as info:
        _ray_sweep(out, dataset)
    assert str(out / run_id / "checkpoint.pt") in str(info.value)  # the driver's path, not the worker's
    status = sqlite3.connect(out / "results.sqlite").execute(
        "SELECT status FROM runs WHERE run_id = ?", (run_id,)).fetchone()[0]
    assert status == "running"  # not stored as failed: the user has to fix it


def _kill_a_training_worker(sweep: threading.Thread, worker_tmp: Path) -> int:
    """SIGKILL a worker in the middle of training one of our runs: its task is running and has
    written a checkpoint (an epoch is done) in a temporary folder that was not there before."""
    old = set(worker_tmp.glob("rethink-ray-*/*/checkpoint.pt"))  # left by earlier killed workers
    deadline = time.time() + 60
    while time.time() < deadline and sweep.is_alive():
        started = {p.parent.name for p in set(worker_tmp.glob("rethink-ray-*/*/checkpoint.pt")) - old}
        for pid, cmdline in descendants(os.getpid()).items():
            # Ray titles a worker "ray::<task name>" while it runs the task, "ray::IDLE" after
            title = cmdline.split(b"\0")[0].decode(errors="replace")
            if title.removeprefix("ray::rethink-run-") in started:
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.02)
    pytest.fail("no worker was caught training one of our runs")


@pytest.fixture
def slow_preset(monkeypatch):
    """AlexNet on 100 images, one SGD step per epoch: slow to fit random labels, so runs last seconds."""
    smoke = PRESETS["smoke"]
    preset = dataclasses.replace(smoke, name="ray-slow", max_epochs=dict.fromkeys(smoke.max_epochs, 15),
                                 ps=(0.5, 1.0))
    monkeypatch.setitem(PRESETS, "ray-slow", preset)
    return "ray-slow"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds the worker through /proc")
@pytest.mark.parametrize("max_retries", [1, 0])
def test_a_killed_worker_is_retried_or_its_run_stored_as_failed(ray_cluster, worker_tmp, dataset, slow_preset,
                                                                tmp_path, max_retries):
    out, log = tmp_path / "out", []
    results: list[SweepResult] = []
    sweep = threading.Thread(target=lambda: results.append(_ray_sweep(
        out, dataset, log, preset=slow_preset, max_retries=max_retries, models=("alexnet",))))
    sweep.start()
    try:
        _kill_a_training_worker(sweep, worker_tmp)
    finally:
        sweep.join(timeout=120)
    assert results, "the sweep did not complete"
    [result] = results
    statuses = [r["status"] for r in dump_store(out / "results.sqlite")[0]]
    assert result.runs == 2 and len(statuses) == 2
    if max_retries:
        assert (result.finished, result.failed) == (2, 0)
        assert set(statuses) <= {"fitted", "not-fitted"}
    else:  # no retry: stored as failed with the error, and the sweep went on
        assert (result.finished, result.failed) == (1, 1)
        assert statuses.count("failed") == 1 and set(statuses) <= {"failed", "fitted", "not-fitted"}
        message = sqlite3.connect(out / "results.sqlite").execute(
            "SELECT message FROM runs WHERE status = 'failed'").fetchone()[0]
        assert "WorkerCrashedError" in message or "died" in message
        assert any(" failed: " in line for line in log)
        assert log[-2] == "ray: 0 queued / 0 running / 1 done / 1 failed"


def test_without_ray_the_ray_executor_is_a_one_line_error(monkeypatch, tmp_path, capsys):
    from rethink.cli import main
    from rethink.experiments.executors import RayExecutor

    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    with pytest.raises(ConfigError, match=r"--executor ray needs Ray"):
        RayExecutor()
    assert main(["reproduce", "--preset", "smoke", "--executor", "ray", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err == "rethink: error: --executor ray needs Ray (pip install 'rethink[ray]')\n"
    assert not (tmp_path / "o").exists()


def test_ray_address_needs_the_ray_executor(tmp_path, capsys):
    from rethink.cli import main

    assert main(["reproduce", "--preset", "smoke", "--ray-address", "auto", "--out", str(tmp_path)]) == 2
    assert "--ray-address needs --executor ray" in capsys.readouterr().err


def test_import_run_copies_every_column_and_replaces_the_epochs(tmp_path):
    from rethink.store import EPOCH_COLUMNS, Store

    config = {"dataset": "cifar10", "model": "mlp1x512", "corruption": "true", "p": None}
    with Store(tmp_path / "worker") as worker:
        worker.start_run("r1", config, versions={"torch": "x"}, realized_rate=0.0, data_hash="h",
                         train_size=10, test_size=5)
        for epoch in (1, 2):
            worker.write_epoch("r1", {k: float(epoch) for k in EPOCH_COLUMNS} | {"epoch": epoch})
        worker.finish_run("r1", "fitted", {"epochs": 2, "steps": 2, "steps_to_fit": 2, "train_acc": 1.0})
        row, epochs = worker.get_run("r1") | {"started_at": "2000-01-01T00:00:00"}, worker.epochs("r1")
    with Store(tmp_path / "driver") as driver:
        driver.mark_failed("r1", config, "an earlier try")  # a rerun of a failed run
        started = driver.get_run("r1")["started_at"]
        driver.write_epoch("r1", {"epoch": 9, "step": 9})
        driver.import_run(row, epochs)
        assert driver.get_run("r1") == {**row, "started_at": started}  # kept, as a local rerun keeps it
        assert started != row["started_at"]
        assert driver.epochs("r1") == epochs


def test_a_ray_task_trains_a_stack_and_the_driver_stores_each_run(ray_cluster, dataset, tmp_path):
    """With --stack, one task trains a group of compatible runs as one stacked model and returns
    every run; the driver stores them as the plain sweep stored them (float32: 1e-2, see
    tests/test_stacked.py for why stacked float32 runs agree to rounding, not bit for bit)."""
    log: list[str] = []
    result = _ray_sweep(tmp_path / "stacked", dataset, log, stack=4, precision="fp32")
    assert result.failed == 0
    assert any("stacking" in line and "runs in one task" in line for line in log), log
    plain = run_sweep("smoke", dataset=dataset, out_dir=tmp_path / "plain", log=_quiet,
                      **{**SWEEP, "precision": "fp32"})
    assert plain.failed == 0
    a = dump_store(tmp_path / "plain" / "results.sqlite")
    b = dump_store(tmp_path / "stacked" / "results.sqlite")
    assert a[2] == b[2] and [r["run_id"] for r in a[0]] == [r["run_id"] for r in b[0]]
    assert [(e["run_id"], e["epoch"]) for e in a[1]] == [(e["run_id"], e["epoch"]) for e in b[1]]
    for x, y in zip(a[1], b[1], strict=True):
        for key, value in x.items():
            if isinstance(value, float):
                assert y[key] == pytest.approx(value, rel=1e-2, abs=1e-2), key
