"""The training loop end to end on small synthetic data: fit, steps_to_fit, resume, divergence."""

from __future__ import annotations

import pytest
import torch
from helpers import SMALL, make_raw

from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.sources import RawDataset
from rethink.errors import ConfigError
from rethink.store import Store
from rethink.train.checkpoint import load_checkpoint
from rethink.train.loop import fit
from rethink.train.runner import run


def _fit(config: RunConfig, tmp_path, raw=None, log=lambda s: None):
    raw = raw or make_raw()
    data = build_run_data(config, raw)
    run_dir = tmp_path / config.run_id
    with Store(tmp_path) as store:
        store.start_run(config.run_id, config.to_dict(), versions={}, realized_rate=data.realized_rate,
                        data_hash="c", train_size=len(data.train_y), test_size=len(data.test_y))
        result = fit(config, data, store, run_dir, log=log)
        return result, store.epochs(config.run_id), store.get_run(config.run_id), data


def test_true_labels_fit_and_generalize(tmp_path):
    result, epochs, row, _ = _fit(RunConfig(**SMALL), tmp_path)
    assert result.status == "fitted" and row["status"] == "fitted"
    assert result.train_acc == 1.0 and result.test_acc > 0.8
    assert result.steps_to_fit == epochs[-1]["step"] == result.steps
    assert [e["epoch"] for e in epochs] == list(range(len(epochs)))  # epoch 0: the initial network
    assert epochs[0]["step"] == 0 and epochs[0]["train_acc"] < 0.5
    # steps: ceil(200 / 32) = 7 per epoch
    assert all(e["step"] == 7 * e["epoch"] for e in epochs)
    assert epochs[-1]["best_test_acc"] == max(e["test_acc"] for e in epochs)


def test_random_labels_are_memorized_and_really_reach_the_batches(tmp_path):
    config = RunConfig(**{**SMALL, "max_epochs": 200, "lr": 0.1}, corruption="random-labels")
    result, _, row, data = _fit(config, tmp_path)
    assert result.status == "fitted" and result.train_acc == 1.0
    assert row["realized_rate"] == pytest.approx(data.realized_rate) and data.realized_rate > 0.7
    # the network fits the random labels, so on the TRUE training labels it is near chance
    raw = make_raw()
    state = load_checkpoint(tmp_path / config.run_id / "checkpoint.pt", config.run_id)
    from rethink.models import create_model

    model = create_model("mlp1x512", in_shape=(3, 8, 8))
    model.load_state_dict(state["model"])
    model.eval()
    with torch.no_grad():
        pred = model(data.train_x).argmax(1)
    assert (pred == data.train_y).all()
    assert (pred == raw.train_labels).float().mean() < 0.35
    assert 0.0 <= result.test_acc < 0.3  # test labels stay true: chance-level


def test_partial_corruption_records_clean_and_corrupted_accuracy(tmp_path):
    config = RunConfig(**{**SMALL, "max_epochs": 3}, corruption="partial", p=0.5)
    _, epochs, _, data = _fit(config, tmp_path)
    assert 0.2 < data.realized_rate < 0.7
    for e in epochs:
        assert e["train_acc_clean"] is not None and e["train_acc_corrupted"] is not None
        n_bad = int(data.changed.sum())
        n = len(data.changed)
        mixed = (e["train_acc_clean"] * (n - n_bad) + e["train_acc_corrupted"] * n_bad) / n
        assert mixed == pytest.approx(e["train_acc"])


def test_budget_exhausted_is_stored_as_not_fitted(tmp_path):
    config = RunConfig(**{**SMALL, "max_epochs": 1}, corruption="random-labels")
    result, epochs, row, _ = _fit(config, tmp_path)
    assert result.status == row["status"] == "not-fitted"
    assert result.steps_to_fit is None and [e["epoch"] for e in epochs] == [0, 1]


def test_divergence_stops_the_run_with_status_diverged(tmp_path):
    config = RunConfig(**{**SMALL, "lr": 1e12, "max_epochs": 5})
    result, _, row, _ = _fit(config, tmp_path)
    assert result.status == row["status"] == "diverged"
    assert "step" in result.message


def test_killed_run_resumes_to_identical_results(tmp_path):
    config = RunConfig(**{**SMALL, "max_epochs": 6, "stop_at_fit": False}, corruption="partial",
                       p=0.3, augment=("crop", "flip"))
    _, reference, _, _ = _fit(config, tmp_path / "a")
    ref_state = load_checkpoint(tmp_path / "a" / config.run_id / "checkpoint.pt", config.run_id)

    class Kill(Exception):
        pass

    def kill_after_epoch_3(line: str) -> None:
        if line.startswith("epoch   3/"):
            raise Kill

    with pytest.raises(Kill):
        _fit(config, tmp_path / "b", log=kill_after_epoch_3)
    lines: list[str] = []
    _, resumed, row, _ = _fit(config, tmp_path / "b", log=lines.append)
    assert lines[0].startswith(f"resuming run {config.run_id} after epoch 3")
    assert row["status"] == "not-fitted"
    timings = ("wall_time", "train_time", "eval_time")
    strip = [{k: v for k, v in e.items() if k not in timings} for e in reference]
    assert [{k: v for k, v in e.items() if k not in timings} for e in resumed] == strip
    state = load_checkpoint(tmp_path / "b" / config.run_id / "checkpoint.pt", config.run_id)
    for name, tensor in ref_state["model"].items():
        assert torch.equal(tensor, state["model"][name]), name


def test_runner_skips_finished_runs_and_writes_run_files(tmp_path, monkeypatch):
    raw = make_raw()
    monkeypatch.setattr("rethink.train.runner.load_dataset", lambda *a, **k: raw)
    config = RunConfig(**{**SMALL, "max_epochs": 2, "stop_at_fit": False})
    first = run(config, out_dir=tmp_path, log=lambda s: None)
    assert (tmp_path / config.run_id / "config.json").exists()
    assert (tmp_path / config.run_id / "corruption.npz").exists()
    lines: list[str] = []
    second = run(config, out_dir=tmp_path, log=lines.append)
    assert "already finished" in lines[0]
    assert second.train_acc == first.train_acc and second.steps == first.steps
    with Store(tmp_path) as store:
        assert len(store.runs()) == 1 and len(store.epochs(config.run_id)) == 3  # epochs 0, 1, 2
        versions = store.get_run(config.run_id)["versions"]
        assert "torch" in versions


@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.bf16)])
@pytest.mark.parametrize("model", ["alexnet", "inception", "inception-nobn", "mlp3x512"])
def test_every_model_trains_a_step_in_each_precision(tmp_path, model, precision):
    raw = make_raw(n_train=40, n_test=20, size=30)
    config = RunConfig(dataset="synthetic", model=model, input_size=28, batch_size=20,
                       max_epochs=1, precision=precision, augment=("crop",))
    result, _, _, _ = _fit(config, tmp_path / precision, raw=raw)
    assert result.status in ("fitted", "not-fitted") and result.steps == 2


def test_tensorboard_event_files(tmp_path, monkeypatch):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    raw = make_raw()
    monkeypatch.setattr("rethink.train.runner.load_dataset", lambda *a, **k: raw)
    config = RunConfig(**{**SMALL, "max_epochs": 3, "stop_at_fit": False}, corruption="partial", p=0.5)
    run(config, out_dir=tmp_path, tensorboard=True, log=lambda s: None)
    events = EventAccumulator(str(tmp_path / "tensorboard" / config.run_id))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/acc", "test/acc", "train/acc_clean", "lr"} <= tags
    with Store(tmp_path) as store:
        stored = [e["test_acc"] for e in store.epochs(config.run_id)]
    logged = [e.value for e in events.Scalars("test/acc")]
    assert logged == pytest.approx(stored) and [e.step for e in events.Scalars("test/acc")] == [0, 7, 14, 21]


@pytest.mark.parametrize("corruption", ["true", "random-labels"])
def test_screened_train_evaluation_gives_the_same_steps_to_fit(tmp_path, corruption):
    full = RunConfig(**{**SMALL, "max_epochs": 60}, corruption=corruption)
    screen = full.replace(train_eval="screen")
    a, rows_a, _, _ = _fit(full, tmp_path / "full")
    b, rows_b, _, _ = _fit(screen, tmp_path / "screen")
    assert a.status == b.status == "fitted"
    assert (a.steps_to_fit, a.train_acc, a.test_acc) == (b.steps_to_fit, b.train_acc, b.test_acc)
    assert [r["test_acc"] for r in rows_a] == [r["test_acc"] for r in rows_b]  # same training
    # before the fit the screen stopped early (no train metrics stored); the fitting epoch is exact,
    # and so is epoch 0 (the initial network)
    assert rows_b[0]["train_acc"] == rows_a[0]["train_acc"]
    assert all(r["train_acc"] is None for r in rows_b[1:-1]) and rows_b[-1]["train_acc"] == 1.0
    assert rows_b[-1]["train_acc_clean"] == rows_a[-1]["train_acc_clean"]


def test_screened_run_ends_with_a_full_evaluation_when_it_runs_out_of_epochs(tmp_path):
    config = RunConfig(**{**SMALL, "max_epochs": 2}, corruption="random-labels", train_eval="screen")
    result, rows, _, _ = _fit(config, tmp_path)
    assert result.status == "not-fitted" and rows[1]["train_acc"] is None
    assert rows[-1]["train_acc"] == result.train_acc and 0 < result.train_acc < 1


def test_train_eval_full_keeps_the_run_ids_of_runs_stored_before_it_existed():
    config = RunConfig(**SMALL)
    assert "train_eval" not in config.to_dict()
    assert "train_eval" in config.replace(train_eval="screen").to_dict()
    assert RunConfig.from_dict(config.to_dict()) == config
    with pytest.raises(Exception, match="train evaluation"):
        config.replace(train_eval="sometimes").validate()


def test_color_augmentation_perturbs_training_batches_only_and_needs_rgb(tmp_path):
    config = RunConfig(**SMALL, augment=("color",))
    data = build_run_data(config, make_raw())
    assert data.train_full is not None  # colour works on the [0, 1] image before whitening
    idx = torch.arange(16)
    a = data.train_batch(idx, torch.Generator().manual_seed(1))
    b = data.train_batch(idx, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.shape == data.train_x[idx].shape
    assert not torch.allclose(a, data.train_x[idx], atol=1e-3)  # perturbed, yet whitened:
    assert torch.allclose(a.mean((1, 2, 3)), torch.zeros(16), atol=1e-4)
    plain = build_run_data(RunConfig(**SMALL), make_raw())
    assert torch.equal(plain.test_x, data.test_x)  # evaluation sees the unperturbed images
    gray = make_raw()
    gray = RawDataset(**{**gray.__dict__, "train_images": gray.train_images[..., :1],
                         "test_images": gray.test_images[..., :1]})
    with pytest.raises(ConfigError, match="color augmentation needs RGB images"):
        build_run_data(config, gray)
    with pytest.raises(ConfigError, match="would change the Gaussian"):
        RunConfig(**SMALL, augment=("color",), corruption="gaussian").validate()


def test_a_model_that_refuses_the_input_size_leaves_nothing_behind(tmp_path, monkeypatch):
    monkeypatch.setattr("rethink.train.runner.load_dataset", lambda *a, **k: make_raw())
    with pytest.raises(ConfigError, match="needs inputs of at least 75x75"):
        run(RunConfig(**{**SMALL, "model": "inception-v3"}), out_dir=tmp_path / "out", log=lambda s: None)
    assert not (tmp_path / "out").exists()


def test_epochs_past_fit_trains_on_after_the_fit_with_the_same_steps_to_fit(tmp_path):
    stop, _, _, _ = _fit(RunConfig(**{**SMALL, "max_epochs": 60}), tmp_path / "stop")
    past, rows, _, _ = _fit(RunConfig(**{**SMALL, "max_epochs": 60}, epochs_past_fit=3), tmp_path / "past")
    assert stop.status == past.status == "fitted"
    assert past.steps_to_fit == stop.steps_to_fit and past.epochs == stop.epochs + 3
    assert [r["epoch"] for r in rows] == list(range(stop.epochs + 4))
    assert past.best_test_acc == max(r["test_acc"] for r in rows[1:])  # trained epochs only


def test_one_process_replicas_change_nothing():
    """The single-process side of the data-parallel interface is the identity: the network itself,
    the whole batch, the batch's mean loss, the whole split; it writes and may screen."""
    import torch.nn.functional as F

    from rethink.train.evaluation import evaluate_rows
    from rethink.train.replicas import ONE_PROCESS, replicas_for

    config = RunConfig(**SMALL)
    data = build_run_data(config, make_raw())
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(data.train_x[0].numel(), data.num_classes))
    assert replicas_for(None) is ONE_PROCESS and ONE_PROCESS.wrap(net) is net
    assert ONE_PROCESS.writes and ONE_PROCESS.can_screen and ONE_PROCESS.rank_key == ()
    idx = torch.tensor([3, 1, 4])
    xb, yb = ONE_PROCESS.batch(data, idx, torch.Generator().manual_seed(0))
    assert torch.equal(xb, data.train_batch(idx, torch.Generator().manual_seed(0)))
    assert torch.equal(yb, data.train_y[idx])
    out = net(xb)
    loss, value = ONE_PROCESS.loss(F.cross_entropy, out, yb, len(idx))
    assert value == F.cross_entropy(out, yb).item() == loss.item()
    whole = ONE_PROCESS.evaluate(net, data.test_x, data.test_y, "fp32", top5=False)
    loss_sum, correct, _ = evaluate_rows(net, data.test_x, data.test_y, "fp32", slice(0, len(data.test_y)))
    assert whole.loss == loss_sum / len(data.test_y) and torch.equal(whole.correct, correct)
    assert whole.top5 is None
