"""Beyond the paper: the width families, the run fields of the memorization study, their grids, the
sweep's follow-up parts, and verdicts that can fail."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from helpers import make_raw

from rethink.config import RunConfig
from rethink.data.pipeline import build_run_data
from rethink.data.rundata import training_rows
from rethink.errors import ConfigError
from rethink.experiments.grids import (
    BEYOND_EXPERIMENTS,
    DEFAULT_EXPERIMENTS,
    PRESETS,
    build_points,
)
from rethink.models import count_params, create_model
from rethink.report import beyond
from rethink.report.collect import Cell, Outcome, SweepData
from rethink.report.document import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED

SMOKE = PRESETS["smoke"]


# ---------------------------------------------------------------- run fields and models


def test_new_fields_at_their_defaults_keep_every_earlier_run_id():
    """Run ids computed before width, optimizer, train_fraction and exclude existed."""
    assert RunConfig().run_id == "806bba8ef3e307ce"
    assert RunConfig(model="alexnet", corruption="partial", p=0.4, augment=("crop",), weight_decay=5e-4,
                     train_size=2500).run_id == "a73001420edd4797"
    assert RunConfig(optimizer="adam").run_id != RunConfig().run_id


def test_train_fraction_keeps_a_seeded_fraction_with_the_splits_corrupted_labels():
    raw = make_raw(n_train=100, n_test=20)
    base = RunConfig(dataset="synthetic", input_size=8, corruption="partial", p=0.5, corruption_seed=4)
    full = build_run_data(base, raw)
    runs = [build_run_data(base.replace(train_fraction=0.7, data_seed=s), raw) for s in (0, 1)]
    rows = [training_rows(base.replace(train_fraction=0.7, data_seed=s), 100) for s in (0, 1)]
    for data, kept in zip(runs, rows, strict=True):
        assert len(data.train_y) == 70
        assert torch.equal(data.train_y, full.train_y[kept])  # the split's corrupted labels
        assert torch.equal(data.changed, full.changed[kept])
        assert torch.equal(data.subset, full.subset[kept])
        assert torch.equal(data.train_x, full.train_x[kept])
    assert not torch.equal(rows[0], rows[1])  # another data seed, another subset
    assert torch.equal(runs[0].test_y, full.test_y)


def test_exclude_leaves_the_listed_examples_out():
    raw = make_raw(n_train=50, n_test=10)
    config = RunConfig(dataset="synthetic", input_size=8, exclude=(9, 3, 3, 40))
    assert config.exclude == (3, 9, 40)
    data = build_run_data(config, raw)
    assert len(data.train_y) == 47 and not set(data.subset.tolist()) & {3, 9, 40}
    with pytest.raises(ConfigError, match="exclude lists index 60"):
        build_run_data(RunConfig(dataset="synthetic", input_size=8, exclude=(60,)), raw)


@pytest.mark.parametrize("fields, message", [
    ({"model": "mlp1x512", "width": 4}, "has no width"),
    ({"model": "cnn5", "width": 0}, "width=0"),
    ({"optimizer": "lbfgs"}, "unknown optimizer"),
    ({"train_fraction": 0.0}, "train_fraction"),
    ({"train_fraction": 1.5}, "train_fraction"),
    ({"exclude": (-1,)}, "non-negative"),
])
def test_bad_values_of_the_new_fields_are_refused(fields, message):
    with pytest.raises(ConfigError, match=message):
        RunConfig(**fields).validate()


def test_width_families_have_the_published_sizes():
    # PreActResNet18 at k = 64 (the standard CIFAR-10 ResNet18): 11,171,146 parameters
    assert count_params(create_model("resnet18k", in_shape=(3, 32, 32), width=64)) == 11_171_146
    k = 64  # the 5-layer CNN: four 3x3 convolutions with bias, batch norm, a linear layer on 8k
    convs = sum(9 * a * b + b + 2 * b for a, b in ((3, k), (k, 2 * k), (2 * k, 4 * k), (4 * k, 8 * k)))
    assert count_params(create_model("cnn5", in_shape=(3, 32, 32))) == convs + 8 * k * 10 + 10
    for name in ("cnn5", "resnet18k"):  # any width, and the paper's 28x28 crops too
        for shape in ((3, 32, 32), (3, 28, 28), (1, 28, 28)):
            out = create_model(name, in_shape=shape, width=3)(torch.zeros(2, *shape))
            assert out.shape == (2, 10)


def test_adam_runs_train_with_adam_and_store_its_state(tmp_path, monkeypatch):
    import rethink.train.runner as runner
    from rethink.train.checkpoint import load_checkpoint

    config = RunConfig(dataset="synthetic", model="cnn5", width=2, input_size=8, optimizer="adam", lr=1e-3,
                       lr_decay=1.0, max_epochs=2, stop_at_fit=False, train_size=40, test_size=20,
                       batch_size=16)
    raw = make_raw(n_train=60, n_test=30)
    monkeypatch.setattr(runner, "load_dataset", lambda *a, **k: raw)
    result = runner.run(config, out_dir=tmp_path, log=lambda _: None)
    state = load_checkpoint(tmp_path / config.run_id / "checkpoint.pt", config.run_id)
    assert result.epochs == 2 and result.steps == 2 * 3
    assert "exp_avg" in next(iter(state["optimizer"]["state"].values()))  # Adam's moments


# ---------------------------------------------------------------- grids


def test_beyond_experiments_run_only_when_named():
    assert not set(BEYOND_EXPERIMENTS) & set(DEFAULT_EXPERIMENTS)
    assert not [p for p in build_points(SMOKE) if p.experiment in BEYOND_EXPERIMENTS]


def test_width_points_follow_nakkiran_et_al():
    points = build_points(PRESETS["paper"], ("double-descent-width",))
    plan = PRESETS["paper"].double_descent
    assert len(points) == len(plan.models) * len(plan.noise) * len(plan.widths)
    for p in points:
        c = p.config
        schedule = (c.optimizer, c.lr, c.lr_decay, c.stop_at_fit, c.max_epochs)
        assert schedule == ("adam", 1e-4, 1.0, False, 4000)
        assert c.width == p.labels["width"] and c.input_size == 32 and c.augment == ("crop", "flip")
        assert (c.corruption == "true") == (p.labels["p"] == 0)
        assert c.label_noise == ("incorrect-only" if p.labels["p"] else "uniform")


def test_memorization_points_share_labels_and_differ_in_subset():
    points = build_points(SMOKE, ("memorization",))
    plan = SMOKE.memorization
    assert len(points) == plan.runs * len(plan.noise)
    for p in plan.noise:
        level = [q for q in points if q.labels["p"] == p]
        assert len({q.config.data_seed for q in level}) == plan.runs
        assert {q.config.corruption_seed for q in level} == {0}
        assert {q.config.train_fraction for q in level} == {plan.fraction}
    assert len(build_points(SMOKE, ("memorization",), seeds=2)) == 2 * len(plan.noise)


# ---------------------------------------------------------------- the sweep, end to end


@pytest.mark.usefixtures("real_cifar10", "real_mnist")
def test_a_beyond_sweep_records_everything_and_a_rerun_recomputes_nothing(tmp_path, shared_data_dir):
    from rethink.experiments.sweep import run_sweep
    from rethink.report import write_report
    from rethink.store import Store

    log: list[str] = []
    first = run_sweep("smoke", experiments=BEYOND_EXPERIMENTS, out_dir=tmp_path, data_dir=shared_data_dir,
                      precision="fp32", report=False, log=log.append)
    assert first.failed == 0
    with Store(tmp_path, readonly=True) as store:
        kinds = [r["kind"] for r in store.theory()]
        experiments = {p["experiment"] for p in store.sweep_points(first.sweep_id)}
    assert kinds.count("double-descent") == 2 and kinds.count("memorization") == 2
    assert experiments == {"double-descent-width", "memorization", "memorization-removal"}
    again: list[str] = []
    second = run_sweep("smoke", experiments=BEYOND_EXPERIMENTS, out_dir=tmp_path, data_dir=shared_data_dir,
                       precision="fp32", report=False, log=again.append)
    assert second.finished == 0 and second.failed == 0
    assert not [line for line in again if "models evaluated" in line or "test error peaks" in line]
    assert len([line for line in again if line.endswith(": recorded")]) == 2  # both random-feature sweeps
    report = (Path(write_report(tmp_path)).parent / "report.md").read_text()
    for title in ("double descent with random features", "double descent of trained widths",
                  "which examples are memorized"):
        assert title in report
    assert "Belkin et al. 2019" in report and "Feldman & Zhang 2020" in report


# ---------------------------------------------------------------- verdicts that can fail


def _cell(width: int, train: float, test: float, *, n_test: int = 10_000, p: float = 0.2,
          experiment: str = "double-descent-width", regularizer: str = "none", seeds: int = 1) -> Cell:
    outcomes = tuple(Outcome(f"r{width}{p}{regularizer}{s}", s, "not-fitted", 10, train_acc=train,
                             test_acc=test, n_train=1000, n_test=n_test, fit_threshold=0.99)
                     for s in range(seeds))
    return Cell(experiment, "cnn5", "partial", p, regularizer, width, outcomes)


def _curve(errors: dict[int, float], fits_at: int, p: float = 0.2) -> list[Cell]:
    return [_cell(k, 1.0 if k >= fits_at else 0.5, 1 - e, p=p) for k, e in errors.items()]


def test_the_width_peak_verdict_holds_fails_and_is_inconclusive():
    peak_at_fit = _curve({1: 0.60, 2: 0.65, 4: 0.75, 8: 0.62, 16: 0.55}, fits_at=4)
    assert beyond.peak_evidence(peak_at_fit)[0] == HOLDS
    # Nakkiran et al.'s Figure 1 shape: the underfit smallest widths err most, yet the error rises
    # again to a peak at the interpolation width and falls beyond it
    second_peak = _curve({1: 0.80, 2: 0.60, 4: 0.55, 8: 0.65, 16: 0.50, 32: 0.45}, fits_at=8)
    assert beyond.peak_evidence(second_peak)[0] == HOLDS
    plain_descent = _curve({1: 0.80, 2: 0.70, 4: 0.60, 8: 0.50, 16: 0.40, 32: 0.30}, fits_at=8)
    assert beyond.peak_evidence(plain_descent)[0] == FAILS
    never_fits = _curve({1: 0.60, 2: 0.65, 4: 0.75, 8: 0.62}, fits_at=99)
    assert beyond.peak_evidence(never_fits)[0] == INCONCLUSIVE
    no_descent = _curve({1: 0.60, 2: 0.65, 4: 0.70, 8: 0.70}, fits_at=4)
    assert beyond.peak_evidence(no_descent)[0] == INCONCLUSIVE
    within_noise = _curve({1: 0.80, 2: 0.70, 4: 0.60, 8: 0.605, 16: 0.40}, fits_at=8)
    assert beyond.peak_evidence(within_noise)[0] == INCONCLUSIVE
    assert beyond.peak_evidence(no_descent[:2])[0] == NOT_MEASURED
    untrained = Cell("double-descent-width", "cnn5", "partial", 0.2, "none", 32,
                     (Outcome("r32", 0, "not run", 10, n_test=10_000),))
    assert beyond.peak_evidence([*peak_at_fit, untrained])[0] == INCONCLUSIVE


def test_the_noise_verdict_holds_and_fails():
    flat = _curve({1: 0.40, 4: 0.40, 16: 0.38}, fits_at=4, p=0.0)
    peaked = _curve({1: 0.60, 4: 0.75, 16: 0.55}, fits_at=4, p=0.2)
    assert beyond.noise_evidence({0.0: flat, 0.2: peaked})[0] == HOLDS
    assert beyond.noise_evidence({0.0: peaked, 0.2: flat})[0] == FAILS
    assert beyond.noise_evidence({0.2: peaked})[0] == NOT_MEASURED


def _scores(auc: float, n_pos: int, n_neg: int) -> dict:
    from rethink.theory.memorization import auc_interval

    return {"auc": auc, "auc_interval": list(auc_interval(auc, n_pos, n_neg)),
            "changed": [1] * n_pos + [0] * n_neg, "n": n_pos + n_neg, "runs": 64}


def test_the_memorization_ranking_verdict_holds_fails_and_is_inconclusive():
    assert beyond.auc_evidence(_scores(0.95, 500, 2000))[0] == HOLDS
    assert beyond.auc_evidence(_scores(0.55, 500, 2000))[0] == FAILS
    assert beyond.auc_evidence(_scores(0.76, 10, 40))[0] == INCONCLUSIVE
    assert beyond.auc_evidence({"auc": math.nan, "auc_interval": [math.nan, math.nan]})[0] == NOT_MEASURED


def _removal_sweep(memorized: list[float], random: list[float]) -> SweepData:
    cells = {}
    for name, accs in (("remove-memorized", memorized), ("remove-random", random)):
        outcomes = tuple(Outcome(f"{name}{s}", s, "fitted", 10, train_acc=1.0, test_acc=a, n_train=2250,
                                 n_test=10_000) for s, a in enumerate(accs))
        cells[("memorization-removal", "mlp1x512", "true", 0.0, name, None)] = Cell(
            "memorization-removal", "mlp1x512", "true", 0.0, name, None, outcomes)
    return SweepData(Path("."), {"sweep_id": "s"}, [], cells)


def test_the_removal_verdict_holds_fails_and_is_inconclusive():
    assert beyond.removal_evidence(_removal_sweep([0.30, 0.301, 0.299], [0.35, 0.351, 0.349]))[0] == HOLDS
    assert beyond.removal_evidence(_removal_sweep([0.35, 0.351, 0.349], [0.30, 0.301, 0.299]))[0] == FAILS
    assert beyond.removal_evidence(_removal_sweep([0.30, 0.34, 0.32], [0.31, 0.35, 0.30]))[0] == INCONCLUSIVE
    assert beyond.removal_evidence(_removal_sweep([], []))[0] == NOT_MEASURED


def test_influence_is_summarized_a_chunk_at_a_time_exactly():
    from rethink.experiments.beyond import TOP_PAIRS, influence_summary
    from rethink.theory.memorization import influence, subset_masks

    g = torch.Generator().manual_seed(0)
    masks = subset_masks(40, 30, seed=1)
    right = torch.rand(40, 12, generator=g) < 0.6
    pairs = influence_summary(masks, right, chunk=7)
    whole, _ = influence(masks, right)
    top = torch.topk(whole.flatten(), TOP_PAIRS).values
    assert [q["influence"] for q in pairs] == pytest.approx(top.tolist())
    assert all(whole[q["train"], q["test"]] == pytest.approx(q["influence"]) for q in pairs)


def test_equal_training_size_keys_give_equal_training_sets():
    from rethink.data.rundata import training_size_key

    configs = [RunConfig(train_fraction=f, exclude=e, data_seed=s)
               for f in (1.0, 0.7) for e in ((), (1, 2, 3), tuple(range(10)), tuple(range(50, 60)))
               for s in range(4)]
    sizes: dict[tuple, set[int]] = {}
    for c in configs:
        rows = training_rows(c, 100)
        sizes.setdefault(training_size_key(c), set()).add(100 if rows is None else len(rows))
    assert all(len(s) == 1 for s in sizes.values())
