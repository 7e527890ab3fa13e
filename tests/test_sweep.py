"""The experiment grids and the sweep engine: sharing, narrowing, skipping, and surviving a kill."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pytest
from helpers import dump_store, make_image_folder

from rethink.data.corruption import PIXEL_CORRUPTIONS
from rethink.errors import ConfigError
from rethink.experiments.grids import (
    BEYOND_EXPERIMENTS,
    DEFAULT_EXPERIMENTS,
    EXPERIMENTS,
    IMAGENET_WEIGHT_DECAY,
    PRESETS,
    TABLE1_ROWS,
    build_points,
)
from rethink.experiments.sweep import run_sweep, unique_runs

SMOKE = PRESETS["smoke"]


def test_table1_has_the_papers_rows():
    points = build_points(SMOKE, ("table1",))
    assert len(points) == 19  # 5 + 3 + 5 + 3 + 3 rows in the paper's Table 1
    random_rows = [p for p in points if p.labels["corruption"] == "random-labels"]
    assert {p.labels["model"] for p in random_rows} == set(TABLE1_ROWS)
    for p in points:  # explicit regularizers only where the row says so
        reg = p.labels["regularizer"]
        assert (p.config.weight_decay > 0) == ("wd" in reg)
        assert ("crop" in p.config.augment) == ("crop" in reg)


def test_label_corruption_endpoints_share_runs_with_table1():
    points = build_points(SMOKE, ("table1", "fig1b", "fig1c"))
    by_p = {(p.labels["model"], p.labels["p"]): p for p in points if p.experiment == "fig1b"}
    table1 = {p.run_id for p in points if p.experiment == "table1"}
    for model in ("inception", "alexnet", "mlp1x512"):
        assert by_p[(model, 0.0)].config.corruption == "true"
        assert by_p[(model, 1.0)].config.corruption == "random-labels"
        assert by_p[(model, 0.0)].run_id in table1 and by_p[(model, 1.0)].run_id in table1
        assert by_p[(model, 0.5)].config.corruption == "partial" and by_p[(model, 0.5)].config.p == 0.5
    fig1c = {p.run_id for p in points if p.experiment == "fig1c"}
    assert fig1c == {p.run_id for p in points if p.experiment == "fig1b"}  # the same runs


def test_every_preset_builds_valid_configs_with_regularizers_off_unless_asked():
    for preset in PRESETS.values():
        points = build_points(preset)
        assert points and len(unique_runs(points)) <= len(points)
        for p in points:
            if p.labels["regularizer"] == "none":
                assert p.config.weight_decay == 0 and p.config.augment == () and p.config.dropout == 0


def test_narrowing_and_seeds():
    points = build_points(SMOKE, ("fig1b",), ("mlp1x512",), seeds=2)
    assert {p.labels["model"] for p in points} == {"mlp1x512"}
    assert {p.labels["seed"] for p in points} == {0, 1}
    assert len(unique_runs(points)) == 2 * len(SMOKE.ps)
    seed0 = [p for p in points if p.labels["seed"] == 0]
    assert all(p.config.corruption_seed == p.config.init_seed == 0 for p in seed0)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"experiments": ("table9",)}, "unknown experiment"), ({"models": ("vgg",)}, "unknown model"),
     ({"seeds": 0}, "at least 1")],
)
def test_bad_sweep_requests(kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        build_points(SMOKE, **kwargs)


def test_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="unknown preset"):
        run_sweep("huge", out_dir=tmp_path)
    assert not any(tmp_path.iterdir())


SWEEP_ARGS = ["reproduce", "--preset", "smoke", "--experiments", "fig1b,table1",
              "--models", "mlp1x512,alexnet", "--no-report"]


def _cli(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rethink", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_killed_sweep_reruns_to_identical_results_without_duplicates(tmp_path):
    data = make_image_folder(tmp_path / "data")
    env = {**os.environ, "RETHINK_CACHE": str(tmp_path / "cache"), "PYTHONHASHSEED": "0"}
    args = [*SWEEP_ARGS, "--dataset", f"folder:{data}"]

    reference = _cli([*args, "--out", str(tmp_path / "a")], env)
    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out

    victim = _cli([*args, "--out", str(tmp_path / "b")], env)
    db = tmp_path / "b" / "results.sqlite"
    deadline = time.time() + 300
    while time.time() < deadline:  # kill it once some runs are done and others are not
        if db.exists():
            try:
                done = sqlite3.connect(db).execute(
                    "SELECT COUNT(*) FROM runs WHERE status != 'running'").fetchone()[0]
            except sqlite3.OperationalError:
                done = 0
            if done >= 3:
                break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    runs_at_kill = len(dump_store(db)[0])
    total = len(dump_store(tmp_path / "a" / "results.sqlite")[0])
    assert runs_at_kill >= 3 and victim.returncode == -signal.SIGKILL
    assert runs_at_kill < total or pytest.skip("the sweep finished before the kill")

    rerun = _cli([*args, "--out", str(tmp_path / "b")], env)
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert "already finished" in out or "skipped" in out

    assert dump_store(db) == dump_store(tmp_path / "a" / "results.sqlite")
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    per_run = check.execute(
        "SELECT r.epochs, COUNT(e.epoch) - 1 FROM runs r JOIN epochs e USING (run_id) GROUP BY r.run_id"
    ).fetchall()
    assert all(stored == counted for stored, counted in per_run)  # no duplicate or missing rows


@pytest.mark.realdata
def test_reproduce_smoke_end_to_end(shared_data_dir, tmp_path):
    """The CI run of the smoke preset: every experiment, real CIFAR-10 slice, then the report."""
    from rethink.cli import main

    out = tmp_path / "runs"
    assert main(["reproduce", "--preset", "smoke", "--data-dir", str(shared_data_dir),
                 "--out", str(out)]) == 0
    runs, epochs, points = dump_store(out / "results.sqlite")
    assert len(runs) == len(unique_runs(build_points(SMOKE)))
    assert all(r["status"] in ("fitted", "not-fitted") for r in runs)
    assert (out / "report" / "index.html").exists() and (out / "report" / "report.md").exists()
    # a second invocation trains nothing
    assert main(["reproduce", "--preset", "smoke", "--data-dir", str(shared_data_dir),
                 "--out", str(out), "--no-report"]) == 0
    assert dump_store(out / "results.sqlite")[:2] == (runs, epochs)


def test_cpu_preset_leaves_out_only_what_it_says():
    cpu = PRESETS["cpu"]
    points = build_points(cpu)
    assert not [p for p in points if p.experiment == "fig1b" and p.labels["model"] == "inception"]
    assert {p.labels["regularizer"] for p in points
            if p.experiment == "table4" and p.labels["model"] == "inception"} == {"wd"}
    assert {p.labels["model"] for p in points if p.experiment == "table1"} == set(TABLE1_ROWS)
    random_rows = {p.labels["model"] for p in points if p.labels["corruption"] == "random-labels"}
    assert random_rows == set(TABLE1_ROWS) - {"inception-nobn"}
    assert {p.experiment for p in points} == set(DEFAULT_EXPERIMENTS) == \
        set(EXPERIMENTS) - {"table2", *BEYOND_EXPERIMENTS}


def test_table2_is_the_papers_imagenet_grid_and_only_runs_when_named():
    paper = PRESETS["paper"]
    assert not [p for p in build_points(paper) if p.experiment == "table2"]
    with pytest.raises(ConfigError, match="table2 is the paper's ImageNet experiment"):
        build_points(paper, ("table2",))
    imagenet = dataclasses.replace(paper, dataset="packed:/data/imagenet-299")
    points = build_points(imagenet, ("table2",))
    rows = [(p.labels["corruption"], p.labels["regularizer"]) for p in points]
    assert rows == [("true", "aug+dropout+wd"), ("true", "aug"), ("true", "wd"), ("true", "none"),
                    ("random-labels", "dropout+wd"), ("random-labels", "wd"), ("random-labels", "none")]
    full = points[0].config
    assert full.model == "inception-v3" and full.input_size == 299 and full.train_size is None
    assert full.augment == ("color", "crop") and full.dropout == 0.2
    assert full.weight_decay == IMAGENET_WEIGHT_DECAY and full.decay_samples is None
    bare = points[-1].config
    assert bare.augment == () and bare.dropout == 0 == bare.weight_decay


def test_a_larger_epoch_budget_reaches_only_the_runs_it_names():
    cpu = PRESETS["cpu"]
    points = build_points(cpu)
    for key, epochs in cpu.max_epochs_for.items():
        model, corruption = key.split(":")
        assert model in cpu.models and corruption in (*PIXEL_CORRUPTIONS, "true", "partial", "random-labels")
        named = [p for p in points if (p.labels["model"], p.labels["corruption"]) == (model, corruption)]
        assert named and all(p.config.max_epochs == epochs for p in named)
    others = [p for p in points if f"{p.labels['model']}:{p.labels['corruption']}" not in cpu.max_epochs_for]
    assert all(p.config.max_epochs == cpu.max_epochs[p.labels["model"]] for p in others)


def test_dataset_too_small_for_the_preset_writes_nothing(tmp_path):
    data = make_image_folder(tmp_path / "data", n_train=5, n_test=5)
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="wants 100 train images"):
        run_sweep("smoke", experiments=("table1",), models=("mlp1x512",), dataset=f"folder:{data}",
                  out_dir=out, report=False, log=lambda s: None)
    assert not out.exists()
