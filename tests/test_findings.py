"""Every claim of the report can hold, fail and be inconclusive: small synthetic sweeps built
directly as report data (cells, outcomes and curves), one per verdict, for every claim."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from rethink.report import findings as F
from rethink.report import stats
from rethink.report.collect import Cell, Outcome, SweepData
from rethink.report.document import FAILS, HOLDS, INCONCLUSIVE, NOT_MEASURED

BATCH = 128


class Builder:
    """Collects cells (every seed of one point) and their curves into a SweepData."""

    def __init__(self) -> None:
        self.points: list[dict] = []
        self.cells: dict[tuple, Cell] = {}
        self.curves: dict[str, list[dict]] = {}

    def add(self, experiment: str, model: str, corruption: str = "true", p: float | None = None,
            regularizer: str = "none", *, seeds: list[dict]) -> Builder:
        outcomes = []
        for seed, s in enumerate(seeds):
            run_id = f"{experiment}-{model}-{corruption}-{p}-{regularizer}-{seed}"
            n_train, n_test = s.get("n_train", 10_000), s.get("n_test", 10_000)
            fitted = s.get("fitted", True)
            status = s.get("status", "fitted" if fitted else "not-fitted")
            spe = math.ceil(n_train / BATCH)
            steps = s.get("steps_to_fit", 10 * spe)
            outcomes.append(Outcome(
                run_id=run_id, seed=seed, status=status, max_epochs=60,
                train_acc=s.get("train", 1.0 if fitted else 0.5), test_acc=s.get("test", 0.5),
                best_test_acc=s.get("best", s.get("test", 0.5)), steps_to_fit=steps if fitted else None,
                steps=steps if fitted else 60 * spe, epochs=60, n_train=n_train, n_test=n_test,
                fit_threshold=0.99, steps_per_epoch=spe))
            self.curves[run_id] = s.get("curve", [])
            config = {"model": model, "train_size": n_train, "test_size": n_test, "batch_size": BATCH,
                      "fit_threshold": 0.99, "epochs_past_fit": s.get("past", 0)}
            labels = {"model": model, "corruption": corruption, "p": p, "regularizer": regularizer,
                      "seed": seed}
            self.points.append({"experiment": experiment, "labels": labels, "run_id": run_id,
                                "config": config, "run": {"status": status}})
        key = (experiment, model, corruption, None if p is None else round(float(p), 6), regularizer, None)
        self.cells[key] = Cell(*key, outcomes=tuple(outcomes))
        return self

    def sweep(self) -> SweepData:
        return SweepData(Path("."), {"sweep_id": "s"}, self.points, self.cells, self.curves)


def curve(train_accs: list[float], losses: list[float] | None = None, spe: int = 79) -> list[dict]:
    """Epoch rows from epoch 0, one per value."""
    losses = losses or [2.3] * len(train_accs)
    return [{"epoch": e, "step": e * spe, "train_acc": a, "train_loss": loss}
            for e, (a, loss) in enumerate(zip(train_accs, losses, strict=True))]


STALLED = {"fitted": False, "train": 0.40, "curve": curve([0.1] + [0.40] * 20)}
LEARNING = {"fitted": False, "train": 0.90, "curve": curve([0.1 + 0.04 * e for e in range(21)])}


def verdicts(found) -> list[str]:
    return [f.verdict for f in found]


def only(found, text: str = "") -> str:
    chosen = [f for f in found if text in f.claim]
    assert len(chosen) == 1, [f.claim for f in found]
    assert chosen[0].quote and chosen[0].rule  # every claim quotes the paper and states its rule
    return chosen[0].verdict


# ------------------------------------------------------------------ Table 1


@pytest.mark.parametrize("seed_spec, expected", [
    ({"test": 0.101}, HOLDS),
    ({"test": 0.30}, FAILS),  # far above chance on 10,000 test images
    (STALLED, FAILS),
    ({**LEARNING, "test": 0.10}, INCONCLUSIVE),
    ({"test": 0.10, "n_test": 20}, INCONCLUSIVE),  # consistent with chance, but too wide to tell
    ({"test": 0.124, "n_test": 2000}, INCONCLUSIVE),  # just off chance, one seed
])
def test_random_labels(seed_spec, expected):
    sweep = Builder().add("table1", "mlp1x512", "random-labels", seeds=[seed_spec]).sweep()
    assert only(F.random_labels(sweep)) == expected


def test_random_labels_off_chance_over_seeds_does_not_hold():
    seeds = [{"test": t, "n_test": 2000} for t in (0.124, 0.126, 0.125)]
    sweep = Builder().add("table1", "mlp1x512", "random-labels", seeds=seeds).sweep()
    assert only(F.random_labels(sweep)) == FAILS


@pytest.mark.parametrize("spec, expected", [({}, HOLDS), (STALLED, FAILS), (LEARNING, INCONCLUSIVE)])
def test_table1_fits(spec, expected):
    sweep = (Builder().add("table1", "alexnet", seeds=[{}]).add("table1", "alexnet", regularizer="wd",
                                                                 seeds=[spec]).sweep())
    assert only(F.table1_fits(sweep)) == expected


@pytest.mark.parametrize("spec, expected", [
    ({"test": 0.50}, HOLDS),
    ({"test": 0.15}, FAILS),
    ({"test": 0.32, "n_test": 100}, INCONCLUSIVE),  # interval straddles chance + 20
    ({**LEARNING, "test": 0.50}, INCONCLUSIVE),
    ({**LEARNING, "test": 0.15}, INCONCLUSIVE),  # not fitted yet: the claim is about fitted networks
    ({**STALLED, "test": 0.15}, INCONCLUSIVE),
])
def test_no_regularizer(spec, expected):
    sweep = Builder().add("table1", "mlp3x512", seeds=[spec]).sweep()
    assert only(F.no_regularizer(sweep)) == expected


@pytest.mark.parametrize("with_wd, expected", [
    ([0.52, 0.521, 0.519], HOLDS),  # +2 points, tight
    ([0.70, 0.701, 0.699], FAILS),  # +20 points: far outside the paper's range
    ([0.52], INCONCLUSIVE),  # one seed
])
def test_regularizer_effects(with_wd, expected):
    sweep = (Builder().add("table1", "mlp3x512", seeds=[{"test": t} for t in (0.50, 0.501, 0.499)])
             .add("table1", "mlp3x512", regularizer="wd", seeds=[{"test": t} for t in with_wd]).sweep())
    assert only(F.regularizer_effects(sweep)) == expected


# ------------------------------------------------------------------ Table 4


@pytest.mark.parametrize("wd, control, expected", [
    (STALLED, {}, HOLDS),
    ({}, {}, FAILS),  # it fitted
    (LEARNING, {}, INCONCLUSIVE),  # ran out of budget while learning
    (STALLED, STALLED, INCONCLUSIVE),  # the control does not fit either
])
def test_alexnet_weight_decay(wd, control, expected):
    sweep = (Builder().add("table4", "alexnet", "random-labels", regularizer="wd", seeds=[wd])
             .add("table1", "alexnet", "random-labels", seeds=[control]).sweep())
    assert only(F.alexnet_weight_decay(sweep)) == expected


def test_alexnet_weight_decay_without_a_control_is_inconclusive():
    sweep = Builder().add("table4", "alexnet", "random-labels", regularizer="wd", seeds=[STALLED]).sweep()
    assert only(F.alexnet_weight_decay(sweep)) == INCONCLUSIVE


@pytest.mark.parametrize("spec, expected", [({}, HOLDS), (STALLED, FAILS), (LEARNING, INCONCLUSIVE)])
def test_regularized_random_fit(spec, expected):
    sweep = Builder().add("table4", "mlp1x512", "random-labels", regularizer="wd", seeds=[spec]).sweep()
    assert only(F.regularized_random_fit(sweep)) == expected


def test_regularized_random_fit_with_rows_missing_is_not_holds():
    sweep = Builder().add("table4", "inception", "random-labels", regularizer="wd", seeds=[{}]).sweep()
    assert only(F.regularized_random_fit(sweep)) == INCONCLUSIVE  # crop and flip+rotate not run


# ------------------------------------------------------------------ Figure 1a


@pytest.mark.parametrize("spec, expected", [({}, HOLDS), (STALLED, FAILS), (LEARNING, INCONCLUSIVE)])
def test_pixels(spec, expected):
    b = Builder()
    for k in ("shuffled-pixels", "random-pixels"):
        b.add("fig1a", "alexnet", k, seeds=[{}])
    sweep = b.add("fig1a", "alexnet", "gaussian", seeds=[spec]).sweep()
    assert only(F.pixels(sweep)) == expected


def _starting_at(epoch: int, spe: int = 20) -> dict:
    """A run whose loss first falls below 90% of its initial value at `epoch`."""
    losses = [2.3 if e < epoch else 1.0 for e in range(40)]
    return {"n_train": 20 * BATCH, "curve": curve([0.1] * 40, losses, spe)}


@pytest.mark.parametrize("random_starts, true_starts, expected", [
    ([10, 11, 12], [2, 2, 3], HOLDS),
    ([2, 2, 2], [2, 2, 3], FAILS),  # the seeds rule out a difference beyond one epoch
    ([2, 2, 3], [2, 3, 2], INCONCLUSIVE),  # no difference seen, but one epoch of spread allows one
    ([2, 2, 2], [10, 11, 12], FAILS),  # the other way round
    ([10, 12], [2, 20], INCONCLUSIVE),  # later on average, but the seeds disagree
    ([10], [2], INCONCLUSIVE),  # one seed: no test
])
def test_random_labels_start_later(random_starts, true_starts, expected):
    b = Builder().add("fig1a", "alexnet", "random-labels", seeds=[_starting_at(e) for e in random_starts])
    sweep = b.add("fig1a", "alexnet", "true", seeds=[_starting_at(e) for e in true_starts]).sweep()
    assert only(F.starts(sweep), "later than true labels") == expected


def test_pixels_start_before_random_labels():
    sweep = (Builder().add("fig1a", "alexnet", "random-labels", seeds=[_starting_at(e) for e in (10, 11, 12)])
             .add("fig1a", "alexnet", "random-pixels", seeds=[_starting_at(e) for e in (3, 3, 4)])
             .add("fig1a", "alexnet", "gaussian", seeds=[_starting_at(e) for e in (20, 21, 22)]).sweep())
    found = F.starts(sweep)
    assert only(found, "random pixels start") == HOLDS
    assert only(found, "Gaussian inputs start") == FAILS  # they start later here
    assert only(found, "later than true labels") == NOT_MEASURED  # no true-label run


# ------------------------------------------------------------------ Figure 1b / 1c


def _p_sweep(experiment: str, values: dict[float, list[dict]]) -> SweepData:
    b = Builder()
    for p, seeds in values.items():
        b.add(experiment, "mlp1x512", "partial", p, seeds=seeds)
    return b.sweep()


PS = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@pytest.mark.parametrize("steps, expected", [
    ({p: [1000 + 1000 * p] for p in PS}, HOLDS),  # monotone over 6 points: p = 1/720
    ({p: [1000 + (50 if i % 2 else 0)] for i, p in enumerate(PS)}, FAILS),  # flat within an epoch
    ({p: [2000 - 500 * p] for p in PS}, FAILS),  # shrinks
])
def test_slowdown_trend(steps, expected):
    sweep = _p_sweep("fig1b", {p: [{"steps_to_fit": s} for s in v] for p, v in steps.items()})
    assert only(F.slowdown(sweep), "grow") == expected


def test_slowdown_with_an_unfitted_point_is_inconclusive():
    seeds = {p: [{"steps_to_fit": int(1000 + 1000 * p)}] for p in PS}
    seeds[1.0] = [{"fitted": False}]
    found = F.slowdown(_p_sweep("fig1b", seeds))
    assert only(found, "grow") == INCONCLUSIVE and only(found, "factor") == INCONCLUSIVE


@pytest.mark.parametrize("top, expected", [(2000, HOLDS), (40_000, FAILS)])
def test_slowdown_factor(top, expected):
    seeds = {p: [{"steps_to_fit": int(1000 + (top - 1000) * p)}] for p in PS}
    assert only(F.slowdown(_p_sweep("fig1b", seeds)), "factor") == expected


def test_slowdown_ratio_interval_is_the_tables_and_counts_one_epoch_each_side():
    from rethink.report import analysis, tables

    seeds = {0.0: [{"steps_to_fit": 1000}, {"steps_to_fit": 1000}],
             1.0: [{"steps_to_fit": 3000}, {"steps_to_fit": 3000}]}
    sweep = _p_sweep("fig1b", seeds)
    epoch = math.ceil(10_000 / BATCH)  # identical seeds: the interval is the resolution alone
    point = analysis.ratio_point(sweep.cell("fig1b", "mlp1x512", "partial", 1.0), [1000.0, 1000.0])
    assert (point.value, point.lo, point.hi) == pytest.approx(
        (3.0, (3000 - epoch) / (1000 + epoch), (3000 + epoch) / (1000 - epoch)))
    text = stats.Interval(point.value, point.lo, point.hi, 2).text(2)
    assert text in next(f for f in F.slowdown(sweep) if "factor" in f.claim).measured
    assert any(text in str(row) for row in tables.fig1b(sweep).rows)


@pytest.mark.parametrize("accs, expected", [
    ({p: 0.5 - 0.4 * p for p in PS}, HOLDS),
    ({p: 0.5 for p in PS}, FAILS),
])
def test_error_growth(accs, expected):
    sweep = _p_sweep("fig1c", {p: [{"test": a}] for p, a in accs.items()})
    assert only(F.error_growth(sweep), "grows") == expected


def test_error_growth_needs_fitted_runs():
    seeds = {p: [{"test": 0.5 - 0.4 * p}] for p in PS}
    seeds[0.6] = [{**LEARNING, "test": 0.26}]
    assert only(F.error_growth(_p_sweep("fig1c", seeds)), "grows") == INCONCLUSIVE


@pytest.mark.parametrize("top, expected", [
    ({"test": 0.10}, HOLDS), ({"test": 0.25}, FAILS), ({"test": 0.10, "n_test": 20}, INCONCLUSIVE)])
def test_error_reaches_chance(top, expected):
    seeds = {p: [{"test": 0.5 - 0.4 * p}] for p in PS[:-1]} | {1.0: [top]}
    assert only(F.error_growth(_p_sweep("fig1c", seeds)), "chance") == expected


# ------------------------------------------------------------------ Figure 2b


@pytest.mark.parametrize("nobn, expected", [
    ([0.47, 0.471, 0.469], HOLDS),  # +3 points
    ([0.60, 0.601, 0.599], FAILS),  # batch norm hurts
    ([0.47], INCONCLUSIVE),  # one seed
])
def test_batchnorm(nobn, expected):
    sweep = (Builder().add("fig2b", "inception", seeds=[{"test": t} for t in (0.50, 0.501, 0.499)])
             .add("fig2b", "inception-nobn", seeds=[{"test": t} for t in nobn]).sweep())
    assert only(F.batchnorm(sweep)) == expected


def test_batchnorm_needs_both_networks_fitted():
    sweep = (Builder().add("fig2b", "inception", seeds=[{"test": t} for t in (0.50, 0.501, 0.499)])
             .add("fig2b", "inception-nobn", seeds=[{**LEARNING, "test": 0.47}] * 3).sweep())
    assert only(F.batchnorm(sweep)) == INCONCLUSIVE


@pytest.mark.parametrize("spec, expected", [
    ({"test": 0.50, "best": 0.503, "past": 20}, HOLDS),
    ({"test": 0.50, "best": 0.60, "past": 20}, FAILS),  # early stopping would gain 10 points
    ({"test": 0.50, "best": 0.503, "past": 0}, INCONCLUSIVE),  # stopped at its fit: ~0 by construction
    ({"test": 0.50, "best": 0.52, "past": 20, "n_test": 1000}, INCONCLUSIVE),  # straddles 2 points
])
def test_early_stopping(spec, expected):
    sweep = Builder().add("fig2b", "inception", seeds=[spec] * 3).sweep()
    assert only(F.early_stopping(sweep)) == expected


# ------------------------------------------------------------------ Arpit et al.


def _split(gap: float) -> dict:
    rows = [{"epoch": e, "step": e * 79, "train_acc": 0.5, "train_loss": 2.0,
             "train_acc_clean": 0.5 + gap / 200, "train_acc_corrupted": 0.5 - gap / 200} for e in range(10)]
    return {"curve": rows}


@pytest.mark.parametrize("gap, expected", [(20.0, HOLDS), (-5.0, FAILS), (2.0, INCONCLUSIVE)])
def test_clean_first(gap, expected):
    sweep = Builder().add("memorization-order", "mlp1x512", "partial", 0.4, seeds=[_split(gap)]).sweep()
    found = F.clean_first(sweep)
    assert only(found) == expected and found[0].source == F.ARPIT


# ------------------------------------------------------------------ the whole list


def test_every_claim_is_not_measured_on_an_empty_sweep_and_quotes_the_paper():
    found = F.findings(Builder().sweep())
    assert found and all(f.verdict == NOT_MEASURED for f in found)
    assert all(f.quote and f.rule and f.evidence for f in found)
    assert {f.source for f in found} == {F.ZHANG, F.ARPIT}


def test_wilson_interval_matches_the_formula():
    lo, hi = stats.wilson(0.5, 100)
    assert lo == pytest.approx(0.4038, abs=1e-4) and hi == pytest.approx(0.5962, abs=1e-4)
    iv = stats.accuracy_interval([0.5], 100)
    assert (iv.lo, iv.hi) == pytest.approx((lo, hi))  # one seed: the binomial part alone
    wide = stats.accuracy_interval([0.45, 0.5, 0.55], 100)
    assert wide.lo < lo and wide.hi > hi  # seeds widen it
    spread = stats.accuracy_interval([0.212, 0.283], 1000)  # two seeds: t with one degree of freedom
    assert spread.lo == 0.0 and spread.hi == pytest.approx(0.699, abs=0.001)
    assert stats.accuracy_interval([0.97, 0.999], 10_000).hi == 1.0  # never past 100%


def test_mean_interval_is_cut_at_its_floor():
    assert stats.mean_interval([140.0, 240.0]).lo < 0  # two seeds: t with one degree of freedom
    cut = stats.mean_interval([140.0, 240.0], floor=0.0)
    assert cut.lo == 0.0 and cut.hi == stats.mean_interval([140.0, 240.0]).hi


def test_difference_upper_bound():
    assert stats.difference_upper([40, 40, 40], [40, 40, 60]) == pytest.approx(12.80, abs=0.01)
    assert stats.difference_upper([3.0, 3.0], [1.0, 1.0]) == 2.0  # no spread: exact
    assert stats.difference_upper([3.0], [1.0, 2.0]) is None


def test_trend_test_is_one_sided():
    assert stats.trend([0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6]).p_value < 0.01
    assert stats.trend([0, 1, 2, 3, 4, 5], [6, 5, 4, 3, 2, 1]).p_value > 0.99


def test_partial_seeds_are_inconclusive_not_unmeasured():
    b = Builder()
    for k in ("shuffled-pixels", "random-pixels", "gaussian"):
        b.add("fig1a", "alexnet", k, seeds=[{}, {"status": "not run", "fitted": False}])
    assert only(F.pixels(b.sweep())) == INCONCLUSIVE


def test_summary_counts_each_verdict_per_source():
    from rethink.report.document import Finding
    from rethink.report.sections import verdict_counts

    found = [Finding("a", "", "", HOLDS), Finding("b", "", "", HOLDS), Finding("c", "", "", FAILS),
             Finding("d", "", "", HOLDS, source="Arpit et al. 2017")]
    assert verdict_counts(found, "Zhang et al. 2017") == (
        "holds: 2, does not hold: 1, inconclusive: 0, not measured: 0")
