"""RunConfig validation and identity; the SQLite store's transactions and schema."""

from __future__ import annotations

import math
import sqlite3

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rethink.config import RunConfig, lr_at
from rethink.errors import ConfigError, StoreError
from rethink.store import DB_NAME, Store


def test_defaults_follow_the_paper_protocol_with_regularizers_off():
    c = RunConfig()
    assert (c.momentum, c.lr_decay, c.batch_size) == (0.9, 0.95, 128)
    assert c.weight_decay == 0 and c.dropout == 0 and c.augment == ()
    assert RunConfig(model="inception").effective_lr == 0.1
    for model in ("alexnet", "mlp1x512", "mlp3x512"):
        assert RunConfig(model=model).effective_lr == 0.01
    assert RunConfig(model="alexnet", lr=0.05).effective_lr == 0.05


def test_run_id_covers_every_field_and_seed():
    base = RunConfig()
    assert base.run_id == RunConfig().run_id
    for change in [{"corruption_seed": 1}, {"init_seed": 1}, {"data_seed": 1}, {"subset_seed": 1},
                   {"weight_decay": 5e-4}, {"train_size": 100}, {"precision": "bf16"}]:
        assert base.replace(**change).run_id != base.run_id, change
    # augmentation order does not matter
    assert RunConfig(augment=("flip", "crop")).run_id == RunConfig(augment=("crop", "flip")).run_id


def test_round_trip_and_unknown_keys():
    c = RunConfig(corruption="partial", p=0.4, augment=("crop",), train_size=10)
    assert RunConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="unknown config key"):
        RunConfig.from_dict({"modle": "mlp1x512"})


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"model": "resnet"}, "unknown model"),
        ({"corruption": "noise"}, "unknown corruption"),
        ({"corruption": "partial"}, "needs a probability"),
        ({"corruption": "partial", "p": -0.1}, "outside"),
        ({"corruption": "partial", "p": 1.5}, "outside"),
        ({"corruption": "partial", "p": math.nan}, "outside"),
        ({"corruption": "random-labels", "p": 0.5}, "only applies"),
        ({"train_size": 0}, "positive"),
        ({"train_size": -5}, "positive"),
        ({"batch_size": 0}, "positive"),
        ({"max_epochs": 0}, "positive"),
        ({"lr": 0.0}, "outside"),
        ({"lr": -1.0}, "outside"),
        ({"momentum": 1.5}, "outside"),
        ({"weight_decay": -1e-4}, "outside"),
        ({"dropout": 1.0}, "outside"),
        ({"precision": "fp16"}, "unknown precision"),
        ({"augment": ("cutmix",)}, "unknown augmentation"),
        ({"label_noise": "sometimes"}, "unknown label noise"),
        ({"init_seed": -1}, "non-negative"),
        ({"corruption": "random-pixels", "augment": ("crop",)}, "corrupt-before-crop"),
    ],
)
def test_invalid_configs_are_refused_with_one_line(change, fragment):
    with pytest.raises(ConfigError, match=fragment) as info:
        RunConfig(**change).validate()
    assert "\n" not in str(info.value)


def test_pixel_test_with_crop_is_allowed_before_crop():
    RunConfig(corruption="gaussian", augment=("crop",), corrupt_before_crop=True).validate()


def test_lr_schedule_per_50k_samples_equals_per_epoch_on_full_cifar():
    c = RunConfig(model="mlp1x512")
    assert lr_at(c, 0, 50_000) == 0.01
    assert lr_at(c, 3, 50_000) == pytest.approx(0.01 * 0.95**3)
    assert lr_at(c.replace(decay_samples=None), 3, 50_000) == pytest.approx(0.01 * 0.95**3)
    # on a 10k subset the default decays x0.95 per 50k samples = per 5 epochs
    assert lr_at(c, 5, 10_000) == pytest.approx(0.01 * 0.95)
    assert lr_at(c.replace(decay_samples=None), 5, 10_000) == pytest.approx(0.01 * 0.95**5)


@settings(max_examples=60, deadline=None)
@given(
    p=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    train_size=st.one_of(st.none(), st.integers(-10, 10**6)),
    lr=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True)),
    corruption=st.sampled_from(["true", "partial", "random-labels", "gaussian", "bogus"]),
)
def test_validate_either_accepts_or_raises_config_error(p, train_size, lr, corruption):
    config = RunConfig(corruption=corruption, p=p, train_size=train_size, lr=lr)
    try:
        config.validate()
    except ConfigError:
        return
    # accepted configs are sane
    assert corruption != "bogus"
    assert (p is None) == (corruption != "partial")
    assert p is None or 0 <= p <= 1
    assert train_size is None or train_size > 0
    assert lr is None or (lr > 0 and math.isfinite(lr))


# ---------------------------------------------------------------------------- store


def _start(store: Store, run_id: str = "r1") -> None:
    store.start_run(run_id, RunConfig().to_dict(), versions={"torch": "x"}, realized_rate=0.9,
                    data_hash="h", train_size=10, test_size=5)


def _row(epoch: int) -> dict:
    return {"epoch": epoch, "step": 10 * epoch, "lr": 0.01, "train_loss": 1.0, "train_acc": 0.5,
            "train_acc_clean": None, "train_acc_corrupted": None, "test_loss": 2.0,
            "test_acc": 0.1, "best_test_acc": 0.1, "wall_time": 1.0}


def test_store_round_trip(tmp_path):
    with Store(tmp_path) as store:
        _start(store)
        store.write_epoch("r1", _row(1))
        store.write_epoch("r1", _row(2))
        store.finish_run("r1", "fitted", {"epochs": 2, "steps": 20, "steps_to_fit": 20,
                                          "train_acc": 1.0, "test_acc": 0.1})
    with Store(tmp_path) as store:
        run = store.get_run("r1")
        assert run["status"] == "fitted" and run["steps_to_fit"] == 20
        assert run["model"] == "mlp1x512" and run["realized_rate"] == 0.9
        assert [e["epoch"] for e in store.epochs("r1")] == [1, 2]
        assert store.conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_replace_epochs_is_atomic_and_exact(tmp_path):
    with Store(tmp_path) as store:
        _start(store)
        for e in (1, 2, 3):
            store.write_epoch("r1", _row(e))
        store.replace_epochs("r1", [_row(1), _row(2)])
        assert [e["epoch"] for e in store.epochs("r1")] == [1, 2]
        with pytest.raises(RuntimeError), store.transaction() as c:
            c.execute("DELETE FROM epochs")
            raise RuntimeError("killed mid-write")
        assert len(store.epochs("r1")) == 2  # rolled back


def test_store_in_unwritable_place_is_a_store_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open"):
        Store(blocker / "out")


def test_corrupt_database_file_is_a_store_error(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        Store(tmp_path)


def test_schema_is_plain_sqlite(tmp_path):
    with Store(tmp_path) as store:
        _start(store)
    conn = sqlite3.connect(tmp_path / DB_NAME)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs", "epochs", "meta"} <= tables


def test_tables_are_generated_from_the_metrics_definitions(tmp_path):
    """The epochs table's columns are EpochRow's fields, the runs table holds RunResult's summary
    (one definition: adding a metric is adding a field), and a finished run reads back as its result."""
    import dataclasses

    from rethink.metrics import EPOCH_COLUMNS, SUMMARY_COLUMNS, EpochRow, RunResult

    with Store(tmp_path) as store:
        _start(store)
        result = RunResult(run_id="r1", status="fitted", epochs=3, steps=30, steps_to_fit=20, train_loss=0.1,
                           train_acc=1.0, test_loss=2.0, test_acc=0.1, best_test_acc=0.12, wall_time=5.0)
        assert store.finished_result("r1") is None  # started, not finished
        store.finish_run("r1", result.status, result.summary())
        assert store.finished_result("r1") == result
    conn = sqlite3.connect(tmp_path / DB_NAME)
    epochs = [r[1] for r in conn.execute("PRAGMA table_info(epochs)")]
    runs = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    assert epochs == ["run_id", *EPOCH_COLUMNS] == ["run_id", *(f.name for f in dataclasses.fields(EpochRow))]
    assert set(SUMMARY_COLUMNS) <= set(runs) and "run_id" not in SUMMARY_COLUMNS


def test_database_from_an_older_schema_gains_new_columns(tmp_path):
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("CREATE TABLE epochs (run_id TEXT, epoch INTEGER, step INTEGER, lr REAL, "
                 "PRIMARY KEY (run_id, epoch))")
    conn.commit()
    conn.close()
    with Store(tmp_path) as store:
        _start(store)
        store.write_epoch("r1", _row(1))
        assert store.epochs("r1")[0]["test_acc"] == 0.1


def test_readonly_store_reads_without_writing(tmp_path):
    with Store(tmp_path) as store:
        _start(store)
    (tmp_path / DB_NAME).chmod(0o444)
    try:
        with Store(tmp_path, readonly=True) as store:
            assert store.get_run("r1")["status"] == "running"
            with pytest.raises(StoreError):
                _start(store, "r2")
    finally:
        (tmp_path / DB_NAME).chmod(0o644)
    with pytest.raises(StoreError, match="no results database"):
        Store(tmp_path / "empty", readonly=True)
    assert not (tmp_path / "empty").exists()


def test_theory_results_are_keyed_by_config_and_replaced_on_rerun(tmp_path):
    with Store(tmp_path) as store:
        k1 = store.record_theory("kernel", {"n": 100, "kernel": "rbf"}, {"test_error": 0.1})
        k2 = store.record_theory("kernel", {"kernel": "rbf", "n": 100}, {"test_error": 0.2})
        k3 = store.record_theory("expressivity", {"n": 100}, {"max_error": 0.0})
        assert k1 == k2 and k1 != k3
        rows = store.theory("kernel")
        assert len(rows) == 1 and rows[0]["result"] == {"test_error": 0.2}
        assert rows[0]["config"] == {"kernel": "rbf", "n": 100}
        assert [r["kind"] for r in store.theory()] == ["kernel", "expressivity"]
