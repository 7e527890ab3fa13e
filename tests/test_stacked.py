"""Stacked training: K runs trained as one stacked model give what K plain runs give.

Tolerances. The stacked forward and backward compute the same sums as the plain ones in another
order (vmapped kernels), so in float32 they agree to rounding, and rounding compounds: after 12
AlexNet steps one run's loss differed by 4e-3 while the others agreed to 1e-7 (a ReLU flipping
between summation orders). So the exact check runs in float64, where rounding cannot reach the
stored metrics: weights within 1e-9 relative, every stored metric within 1e-6, the same steps and
steps to fit; evaluation itself is float32 (`evaluate_rows` casts logits), identical on identical
weights. A float32 stack is checked for one epoch, within 1e-3.
"""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch
from helpers import make_raw

from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.metrics import RunResult
from rethink.store import Store
from rethink.train.checkpoint import load_checkpoint
from rethink.train.loop import RunState, fit
from rethink.train.stacked import fit_stack, stack_key

BASE = dict(dataset="synthetic", input_size=28, batch_size=16, lr=0.01, max_epochs=3, stop_at_fit=False)
TIMINGS = ("wall_time", "train_time", "eval_time")


def _raw(n_train: int = 64, n_test: int = 32):
    return make_raw(n_train=n_train, n_test=n_test, size=32)


@pytest.fixture
def float64():
    """Models built in float64 (and data cast to it by `_data`): rounding out of the comparison."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def _data(config: RunConfig, raw):
    data = build_run_data(config, raw)
    if torch.get_default_dtype() == torch.float64:
        data = dataclasses.replace(data, train_x=data.train_x.double(), test_x=data.test_x.double())
    return data


def _configs(model: str, **extra) -> list[RunConfig]:
    """Three runs of one model that differ in corruption, p, weight decay, momentum and seeds."""
    base = {**BASE, "model": model, **extra}
    augment = base.pop("augment", ())
    return [RunConfig(**base, augment=augment, corruption="true", init_seed=1, data_seed=1),
            RunConfig(**base, augment=augment, corruption="partial", p=0.5, weight_decay=5e-4,
                      corruption_seed=2, init_seed=2),
            RunConfig(**base, augment=(*augment, "flip"), corruption="random-labels", momentum=0.5,
                      init_seed=3, data_seed=3)]


def _plain(config: RunConfig, out, raw) -> tuple[list[dict], dict]:
    data = _data(config, raw)
    with Store(out) as store:
        store.start_run(config.run_id, config.to_dict(), versions={}, realized_rate=data.realized_rate,
                        data_hash="c", train_size=len(data.train_y), test_size=len(data.test_y))
        fit(config, data, store, out / config.run_id, log=lambda _: None)
        rows = store.epochs(config.run_id)
    path = out / config.run_id / "checkpoint.pt"
    return rows, load_checkpoint(path, config.run_id) if path.exists() else None


def _stacked(configs: list[RunConfig], out, raw, log=lambda _: None) -> dict[str, RunResult]:
    with Store(out) as store:
        states = []
        for config in configs:
            data = _data(config, raw)
            store.start_run(config.run_id, config.to_dict(), versions={}, realized_rate=data.realized_rate,
                            data_hash="c", train_size=len(data.train_y), test_size=len(data.test_y))
            states.append(RunState.start(config, data, store, out / config.run_id, log=log)[0])
        fit_stack(states)
        return {state.config.run_id: state.finish() for state in states}


def _rows(out, run_id: str) -> list[dict]:
    with Store(out, readonly=True) as store:
        return store.epochs(run_id)


def _assert_same_run(plain_rows, plain_state, stacked_rows, stacked_state, *, weights: float = 1e-9,
                     metrics: float = 1e-6) -> None:
    assert [r["epoch"] for r in plain_rows] == [r["epoch"] for r in stacked_rows]
    assert [r["step"] for r in plain_rows] == [r["step"] for r in stacked_rows]
    for a, b in zip(plain_rows, stacked_rows, strict=True):
        for key in a:
            if key in TIMINGS or key == "run_id" or a[key] is None:
                assert (a[key] is None) == (b[key] is None), key
                continue
            assert b[key] == pytest.approx(a[key], rel=metrics, abs=metrics), (key, a["epoch"])
    for name, tensor in plain_state["model"].items():
        other = stacked_state["model"][name]
        if tensor.dtype.is_floating_point:
            # a floor: a conv bias before batch norm gets no gradient and stays at rounding noise
            scale = max(float(tensor.abs().max()), 1e-3)
            assert float((tensor - other).abs().max()) <= weights * scale, name
        else:
            assert torch.equal(tensor, other), name
    plain_opt, stacked_opt = plain_state["optimizer"], stacked_state["optimizer"]
    assert plain_opt["param_groups"] == stacked_opt["param_groups"]
    for i, entry in plain_opt["state"].items():
        buf, other = entry["momentum_buffer"], stacked_opt["state"][i]["momentum_buffer"]
        assert float((buf - other).abs().max()) <= weights * max(float(buf.abs().max()), 1e-3)


def _assert_stack_matches_plain_runs(configs: list[RunConfig], tmp_path, raw) -> None:
    """The configs share a stack; trained stacked and one by one, each run stores the same run."""
    assert len({stack_key(c) for c in configs}) == 1
    _stacked(configs, tmp_path / "stacked", raw)
    for config in configs:
        rows, state = _plain(config, tmp_path / "plain", raw)
        stacked_state = load_checkpoint(tmp_path / "stacked" / config.run_id / "checkpoint.pt", config.run_id)
        _assert_same_run(rows, state, _rows(tmp_path / "stacked", config.run_id), stacked_state)


@pytest.mark.parametrize("model", ["mlp1x512", "mlp3x512", "alexnet", "inception", "inception-nobn"])
def test_stacked_runs_match_plain_runs_for_every_paper_model(model, tmp_path, float64):
    small = model.startswith("inception")  # ~10x the MLP's step in float64: fewer images, one epoch
    raw = _raw(32, 16) if small else _raw()
    configs = _configs(model, max_epochs=1) if small else _configs(model)
    _assert_stack_matches_plain_runs(configs, tmp_path, raw)


def test_a_run_that_fits_leaves_the_stack_and_the_others_go_on(tmp_path, float64):
    """One run fits after its first epochs (a low threshold on true labels) and stops; the others
    train to their budget, exactly as when each trains alone."""
    raw = _raw()
    easy = RunConfig(**{**BASE, "max_epochs": 6, "stop_at_fit": True, "lr": 0.05}, model="mlp1x512",
                     fit_threshold=0.3)
    hard = [RunConfig(**{**BASE, "max_epochs": 6, "lr": 0.05}, model="mlp1x512", corruption="random-labels",
                      corruption_seed=s) for s in (1, 2)]
    results = _stacked([easy, *hard], tmp_path / "stacked", raw)
    assert results[easy.run_id].status == "fitted" and results[easy.run_id].epochs < 6
    assert all(results[c.run_id].epochs == 6 for c in hard)
    for config in (easy, *hard):
        rows, state = _plain(config, tmp_path / "plain", raw)
        stacked_state = load_checkpoint(tmp_path / "stacked" / config.run_id / "checkpoint.pt", config.run_id)
        _assert_same_run(rows, state, _rows(tmp_path / "stacked", config.run_id), stacked_state)


def test_a_killed_stack_resumes_every_run_to_the_uninterrupted_result(tmp_path):
    """In float32, with crop augmentation: the resumed stack is the same stack, so equal."""
    raw = _raw()
    configs = _configs("mlp1x512", max_epochs=5, augment=("crop",))
    _stacked(configs, tmp_path / "whole", raw)

    class Kill(Exception):
        pass

    def kill_at_epoch_3(line: str) -> None:
        if line.startswith("epoch   3/"):
            raise Kill

    with pytest.raises(Kill):
        _stacked(configs, tmp_path / "killed", raw, log=kill_at_epoch_3)
    lines: list[str] = []
    _stacked(configs, tmp_path / "killed", raw, log=lines.append)
    assert sum(line.startswith("resuming run") for line in lines) == len(configs)
    for config in configs:
        whole = load_checkpoint(tmp_path / "whole" / config.run_id / "checkpoint.pt", config.run_id)
        resumed = load_checkpoint(tmp_path / "killed" / config.run_id / "checkpoint.pt", config.run_id)
        _assert_same_run(_rows(tmp_path / "whole", config.run_id), whole,
                         _rows(tmp_path / "killed", config.run_id), resumed)


@pytest.mark.parametrize("model", ["mlp1x512", "alexnet"])
def test_a_float32_stack_matches_plain_runs_for_an_epoch(model, tmp_path):
    raw, configs = _raw(), _configs(model, max_epochs=1)
    _stacked(configs, tmp_path / "stacked", raw)
    for config in configs:
        rows, state = _plain(config, tmp_path / "plain", raw)
        stacked_state = load_checkpoint(tmp_path / "stacked" / config.run_id / "checkpoint.pt", config.run_id)
        _assert_same_run(rows, state, _rows(tmp_path / "stacked", config.run_id), stacked_state,
                         weights=1e-2, metrics=1e-2)


def test_a_diverging_run_leaves_the_stack_at_its_step_like_a_plain_run(tmp_path):
    raw = _raw()
    wild = RunConfig(**{**BASE, "lr": 1e6}, model="mlp1x512", corruption="random-labels")
    calm = RunConfig(**BASE, model="mlp1x512", init_seed=5)
    results = _stacked([wild, calm], tmp_path / "stacked", raw)
    rows, _ = _plain(wild, tmp_path / "plain", raw)
    with Store(tmp_path / "plain", readonly=True) as store:
        plain = store.finished_result(wild.run_id)
    assert results[wild.run_id].status == plain.status == "diverged"
    assert results[wild.run_id].message == plain.message and results[wild.run_id].steps == plain.steps
    assert results[calm.run_id].status != "diverged" and results[calm.run_id].epochs == BASE["max_epochs"]


@pytest.mark.parametrize("model, width", [("mlp1x512", None), ("cnn5", 2)])
def test_subset_runs_of_the_memorization_study_stack_like_plain_runs(model, width, tmp_path, float64):
    """Feldman and Zhang's runs: one corruption, each run its own 70% subset, init and order."""
    raw = _raw()
    configs = [RunConfig(**BASE, model=model, width=width, corruption="partial", p=0.2,
                         label_noise="incorrect-only", train_fraction=0.7, init_seed=k, data_seed=k)
               for k in range(3)]
    _assert_stack_matches_plain_runs(configs, tmp_path, raw)


def test_runs_with_dropout_or_other_shapes_do_not_share_a_stack():
    a = RunConfig(**BASE, model="alexnet")
    assert stack_key(a.replace(dropout=0.5)) is None
    assert stack_key(a.replace(optimizer="adam")) is None  # the stack's update is momentum SGD
    assert stack_key(a) != stack_key(a.replace(train_fraction=0.7)) != stack_key(a.replace(exclude=(1,)))
    assert stack_key(a.replace(exclude=(1,))) == stack_key(a.replace(exclude=(2,)))  # one fewer either way
    # a fraction and exclusions: how many excluded examples the draw keeps depends on the data seed
    both = a.replace(train_fraction=0.7, exclude=tuple(range(10)))
    assert stack_key(both) != stack_key(both.replace(data_seed=1))
    assert stack_key(a) != stack_key(a.replace(batch_size=32)) != stack_key(a.replace(model="mlp1x512"))
    assert stack_key(a) == stack_key(a.replace(corruption="gaussian", weight_decay=1e-3, init_seed=4))


def test_sweeps_group_compatible_runs_into_stacks_of_at_most_k():
    from rethink.experiments.executors import Job, plan_stacks

    configs = [RunConfig(**BASE, model="mlp1x512", init_seed=i) for i in range(5)]
    configs += [RunConfig(**BASE, model="alexnet"), RunConfig(**BASE, model="mlp1x512", dropout=0.5)]
    jobs = [Job(i + 1, c.run_id, c, 0) for i, c in enumerate(configs)]
    cpu = torch.device("cpu")
    sizes = [[j.config.model for j in group] for group in plan_stacks(jobs, 2, cpu)]
    assert sizes == [["mlp1x512"] * 2, ["mlp1x512"] * 2, ["mlp1x512"], ["alexnet"], ["mlp1x512"]]
    assert all(len(group) == 1 for group in plan_stacks(jobs, "off", cpu))
    assert all(len(group) == 1 for group in plan_stacks(jobs, "auto", cpu))  # no stacking on CPUs
    assert [len(g) for g in plan_stacks(jobs, "auto", torch.device("cuda"))] == [5, 1, 1]


def test_a_stacked_sweep_stores_what_a_plain_sweep_stores(tmp_path):
    """`--stack` changes how runs train, not what is stored: the same run ids, sweep points and
    epochs, metrics within float32 rounding of one epoch's steps (1e-2, see the module docs)."""
    from helpers import dump_store, make_image_folder

    from rethink.experiments.executors import LocalExecutor
    from rethink.experiments.sweep import run_sweep

    data = make_image_folder(tmp_path / "data")
    lines: list[str] = []
    kwargs = dict(experiments=("fig1b",), models=("mlp1x512",), dataset=f"folder:{data}", precision="fp32",
                  report=False)
    run_sweep("smoke", out_dir=tmp_path / "plain", log=lambda _: None, **kwargs)
    run_sweep("smoke", out_dir=tmp_path / "stacked", executor=LocalExecutor(stack=4), log=lines.append,
              **kwargs)
    stacked_sizes = [int(m.group(1)) for line in lines if (m := re.search(r"stacking (\d+) runs", line))]
    assert stacked_sizes and all(2 <= k <= 4 for k in stacked_sizes), lines
    plain, stacked = dump_store(tmp_path / "plain" / "results.sqlite"), \
        dump_store(tmp_path / "stacked" / "results.sqlite")
    assert plain[2] == stacked[2]  # sweep points: the same run ids behind the same points
    assert [r["run_id"] for r in plain[0]] == [r["run_id"] for r in stacked[0]]
    assert [(e["run_id"], e["epoch"], e["step"]) for e in plain[1]] == \
        [(e["run_id"], e["epoch"], e["step"]) for e in stacked[1]]
    for a, b in zip(plain[1], stacked[1], strict=True):
        for key, value in a.items():
            if isinstance(value, float):
                assert b[key] == pytest.approx(value, rel=1e-2, abs=1e-2), key
