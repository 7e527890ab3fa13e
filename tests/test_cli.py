"""The command line: bad input is one line and exit status 2 with nothing written; real runs work."""

from __future__ import annotations

import json
import sqlite3

import pytest
import torch

from rethink.cli import main
from rethink.machine import native_bf16, resolve_precision


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["run", "--model", "resnet"], "unknown model"),
        (["run", "--dataset", "cifar100"], "unknown dataset"),
        (["run", "--corruption", "partial", "--p", "1.5"], "outside [0, 1]"),
        (["run", "--corruption", "partial", "--p", "-0.1"], "outside [0, 1]"),
        (["run", "--corruption", "partial", "--p", "nan"], "outside [0, 1]"),
        (["run", "--corruption", "partial"], "needs a probability"),
        (["run", "--corruption", "label-noise"], "unknown corruption"),
        (["run", "--train-size", "-5"], "must be positive"),
        (["run", "--train-size", "0"], "must be positive"),
        (["run", "--batch-size", "x"], "not an integer"),
        (["run", "--weight-decay", "-1"], "weight_decay"),
        (["run", "--augment", "cutout"], "unknown augmentation"),
        (["run", "--precision", "fp8"], "unknown precision"),
        (["run", "--init-seed", "-3"], "must be >= 0"),
        (["run", "--dataset", "folder:/nonexistent/x"], "folder"),
        (["run", "--data-dir", "/nonexistent/data"], "no data found"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(argv, fragment, tmp_path, capsys):
    out = tmp_path / "out"
    argv = [*argv, "--out", str(out)] if argv[0] == "run" else argv
    with pytest.raises(SystemExit) as exc_info:
        raise SystemExit(main(argv))
    assert exc_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and fragment in err, err
    assert not out.exists()


def test_models_lists_paper_and_total_counts(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for count in ("1,209,866", "1,735,178", "1,387,786", "1,649,402"):
        assert count in text


def test_runs_without_database(tmp_path, capsys):
    assert main(["runs", "--out", str(tmp_path)]) == 0
    assert "no results database" in capsys.readouterr().out


def test_train_size_larger_than_dataset(shared_data_dir, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["run", "--dataset", "mnist", "--data-dir", str(shared_data_dir),
                 "--train-size", "70000", "--out", str(out)])
    assert code == 2 and "larger than the 60000 train images" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.realdata
def test_real_cifar10_run_end_to_end_and_resume_skip(shared_data_dir, tmp_path, capsys):
    """A short real run on the shared CIFAR-10 copy through the CLI, then the rerun skips it."""
    out = tmp_path / "runs"
    argv = ["run", "--dataset", "cifar10", "--data-dir", str(shared_data_dir), "--model", "mlp1x512",
            "--corruption", "partial", "--p", "0.5", "--train-size", "1000", "--test-size", "500",
            "--max-epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "(1000 train / 500 test, 28x28x3)" in text and "done " in text
    db = sqlite3.connect(out / "results.sqlite")
    (status, realized, train_size, config), = db.execute(
        "SELECT status, realized_rate, train_size, config FROM runs").fetchall()
    assert status == "not-fitted" and train_size == 1000
    # --precision auto (the default) stored as what it resolved to on this machine
    assert json.loads(config)["precision"] == ("bf16" if native_bf16(torch.device("cpu")) else "fp32")
    assert 0.35 < realized < 0.55  # ~ 0.9 * 0.5
    rows = db.execute("SELECT epoch, train_acc, train_acc_clean, test_acc FROM epochs").fetchall()
    assert [r[0] for r in rows] == [0, 1, 2]  # epoch 0: the initial network
    assert all(r[2] is not None and 0 <= r[3] <= 1 for r in rows)
    assert main(argv) == 0
    assert "already finished" in capsys.readouterr().out
    assert db.execute("SELECT COUNT(*) FROM epochs").fetchone()[0] == 3


def test_explicit_precision_is_kept_and_auto_follows_the_hardware():
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    assert resolve_precision("auto", cpu) == ("bf16" if native_bf16(cpu) else "fp32")


def test_bf16_detection_override(monkeypatch):
    from rethink import machine
    from rethink.errors import ConfigError

    cpu = torch.device("cpu")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)  # set when simulating an AVX2 machine
    monkeypatch.delenv("RETHINK_BF16_NATIVE", raising=False)
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "fma"})  # an AVX2-only CPU
    assert machine.bf16_support(cpu) == (False, "not native on this CPU (AVX2 only)")
    monkeypatch.setenv("RETHINK_BF16_NATIVE", "1")
    assert machine.bf16_support(cpu) == (True, "native (RETHINK_BF16_NATIVE=1)")
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2", "avx512f", "avx512_bf16", "amx_bf16"})
    monkeypatch.setenv("RETHINK_BF16_NATIVE", "0")
    assert machine.bf16_support(cpu) == (False, "not native (RETHINK_BF16_NATIVE=0)")
    monkeypatch.delenv("RETHINK_BF16_NATIVE")
    assert machine.bf16_support(cpu) == (True, "native on this CPU (AMX)")
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "avx2")  # oneDNN then emulates bf16 even here
    assert not machine.native_bf16(cpu)
    monkeypatch.setenv("RETHINK_BF16_NATIVE", "yes")
    with pytest.raises(ConfigError, match="RETHINK_BF16_NATIVE='yes' is neither 0 nor 1"):
        machine.native_bf16(cpu)
    monkeypatch.delenv("RETHINK_BF16_NATIVE")
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (7, 0))
    assert machine.bf16_support(torch.device("cuda")) == (
        False, "not native on Tesla V100 (needs compute capability 8.0)")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device: (9, 0))
    assert machine.native_bf16(torch.device("cuda"))


@pytest.mark.realdata
def test_where_bf16_is_emulated_auto_is_fp32_and_explicit_bf16_warns(shared_data_dir, tmp_path, capsys,
                                                                      monkeypatch):
    monkeypatch.setenv("RETHINK_BF16_NATIVE", "0")
    base = ["run", "--dataset", "mnist", "--data-dir", str(shared_data_dir), "--model", "mlp1x512",
            "--train-size", "100", "--test-size", "100", "--max-epochs", "1", "--out", str(tmp_path)]
    assert main(base) == 0
    assert capsys.readouterr().err == ""
    assert main([*base, "--precision", "bf16"]) == 0  # emulated, slow, but not refused
    err = capsys.readouterr().err.splitlines()
    assert err == ["rethink: warning: bf16 is not native (RETHINK_BF16_NATIVE=0), so it runs emulated, far "
                   "slower than fp32 (--precision auto picks fp32 here)"]
    db = sqlite3.connect(tmp_path / "results.sqlite")
    stored = sorted(json.loads(c)["precision"] for (c,) in db.execute("SELECT config FROM runs"))
    assert stored == ["bf16", "fp32"]


def test_every_run_option_field_has_its_flag_on_run():
    import argparse
    import dataclasses

    from rethink.cli import build_parser
    from rethink.config import RunConfig, option_flag

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    flags = {s for a in subparsers.choices["run"]._actions for s in a.option_strings}
    fields = [f.name for f in dataclasses.fields(RunConfig)]
    missing = [n for n in fields if option_flag(n) is not None and f"--{option_flag(n)}" not in flags]
    assert missing == []
    assert option_flag("decay_samples") == "decay-per" and option_flag("protocol") is None


def test_a_bad_decay_period_names_the_flag_that_sets_it():
    from rethink.config import RunConfig
    from rethink.errors import ConfigError

    with pytest.raises(ConfigError, match="fix --decay-per"):
        RunConfig(decay_samples=0).validate()
