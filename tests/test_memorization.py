"""The Feldman-Zhang memorization and influence estimators on synthetic tasks with planted answers."""

from __future__ import annotations

import math

import pytest
import torch

from rethink.theory import memorization as mz


def _planted(m: int = 400, n: int = 60, seed: int = 0):
    """n training examples: the first 10 'memorized' (a model gets one right iff it trained on it),
    the next 10 'hard' (right with probability 0.3 regardless), the rest 'easy' (always right)."""
    in_subset = mz.subset_masks(m, n, 0.7, seed=seed)
    g = torch.Generator().manual_seed(seed)
    correct = torch.ones(m, n, dtype=torch.bool)
    correct[:, :10] = in_subset[:, :10]
    correct[:, 10:20] = torch.rand(m, 10, generator=g) < 0.3
    return in_subset, correct


def test_memorization_recovers_the_planted_examples_with_standard_errors():
    in_subset, correct = _planted()
    scores, stderr = mz.memorization(in_subset, correct)
    assert torch.all(scores[:10] == 1)
    # every model agreed, yet 400 models do not make the estimate exact: Agresti-Caffo's error
    assert torch.all((stderr[:10] > 0.005) & (stderr[:10] < 0.02))
    assert torch.all(scores[20:] == 0)  # always right: nothing to memorize
    # hard examples: no dependence on membership, so their scores are 0 within ~3 standard errors
    assert torch.all(scores[10:20].abs() <= 3.5 * stderr[10:20])
    planted = torch.zeros(60, dtype=torch.bool)
    planted[:10] = True
    assert mz.ranking_auc(scores, planted) == 1.0


def test_the_standard_error_is_agresti_and_caffos_for_a_difference_of_proportions():
    in_subset = torch.tensor([[1, 0], [1, 1], [0, 1], [0, 0]], dtype=torch.bool)
    correct = torch.tensor([[1, 1], [0, 1], [1, 0], [0, 1]], dtype=torch.bool)
    scores, stderr = mz.memorization(in_subset, correct)
    # example 0: in for models 0, 1 (right 1 of 2), out for 2, 3 (right 1 of 2): 0.5 - 0.5; with one
    # success and one failure added to each side, 2 of 4 and 2 of 4
    assert scores[0] == 0 and stderr[0] == pytest.approx(math.sqrt(0.25 / 4 + 0.25 / 4))
    # example 1: in for models 1, 2 (right 1 of 2), out for 0, 3 (right 2 of 2, adjusted 3 of 4)
    assert scores[1] == pytest.approx(-0.5) and stderr[1] == pytest.approx(math.sqrt(0.25 / 4 + 0.1875 / 4))


def test_influence_finds_the_training_example_a_test_example_depends_on():
    in_subset, _ = _planted()
    m = in_subset.shape[0]
    correct_test = torch.ones(m, 3, dtype=torch.bool)
    correct_test[:, 0] = in_subset[:, 7]  # test example 0 is right only when training example 7 was seen
    infl, stderr = mz.influence(in_subset, correct_test)
    assert infl.shape == (60, 3) and int(infl[:, 0].argmax()) == 7 and float(infl[7, 0]) == 1.0
    assert float(infl[:, 1:].abs().max()) == 0.0
    others = torch.cat([infl[:7, 0], infl[8:, 0]])
    assert float(others.abs().max()) < 0.25


def test_ranking_auc_counts_ties_and_skips_missing_scores():
    scores = torch.tensor([0.9, 0.5, 0.5, 0.1, float("nan")])
    positive = torch.tensor([True, True, False, False, True])
    assert mz.ranking_auc(scores, positive) == pytest.approx((2 + 1 + 0.5) / 4)
    assert math.isnan(mz.ranking_auc(scores, torch.zeros(5, dtype=torch.bool)))


def test_subsets_are_seeded_and_sized():
    a, b = mz.subset_masks(5, 20, 0.7, seed=1), mz.subset_masks(5, 20, 0.7, seed=1)
    assert torch.equal(a, b) and a.sum(1).tolist() == [14] * 5
    assert not torch.equal(a, mz.subset_masks(5, 20, 0.7, seed=2))
    with pytest.raises(ValueError, match="fraction"):
        mz.subset_masks(5, 20, 1.0)


def test_auc_interval_is_hanley_and_mcneils():
    # A = 0.5, 10 and 10: Q1 = Q2 = 1/3, var = (1/4 + 9/12 + 9/12) / 100
    lo, hi = mz.auc_interval(0.5, 10, 10)
    half = 1.96 * math.sqrt(1.75 / 100)
    assert (lo, hi) == (pytest.approx(0.5 - half), pytest.approx(0.5 + half))
    assert mz.auc_interval(0.99, 5, 5)[1] == 1.0  # clipped to [0, 1]
    assert all(math.isnan(v) for v in mz.auc_interval(0.7, 0, 10))
