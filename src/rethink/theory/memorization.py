"""Per-example memorization and influence from models trained on random subsets.

Feldman and Zhang, "What neural networks memorize and why" (NeurIPS 2020), Section 3: train m
models, each on a random subset of a fraction r of the training set (r = 0.7), and estimate for
training example i

    mem(i) = P(model correct on i | i in its subset) - P(model correct on i | i not in it),

and for a test example j the influence of training example i,

    infl(i, j) = P(correct on j | i in the subset) - P(correct on j | i not in it).

Each is a difference of two empirical proportions over the models; its standard error is that of
a difference of independent proportions, in Agresti and Caffo's form (`_difference`). An example
that no model (or every model) trained on has no estimate (NaN).

Combined with the randomization tests: under partial label corruption, the examples whose labels
were changed can only be fitted by memorizing them, so they should carry the highest scores;
`ranking_auc` measures that as the probability that a corrupted example outranks a clean one.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from rethink.data.rundata import fraction_rows

KIND = "memorization"  # a noise level's scores in the theory table (recorded after a sweep)


def subset_masks(m: int, n: int, fraction: float = 0.7, seed: int = 0) -> Tensor:
    """(m, n) bool: model k trains on the examples where row k is True, exactly round(fraction n)
    of them, drawn independently per model (as a run with `train_fraction` draws its subset)."""
    if not 0 < fraction < 1:
        raise ValueError(f"fraction {fraction} must be in (0, 1)")
    masks = torch.zeros(m, n, dtype=torch.bool)
    for k in range(m):
        masks[k, fraction_rows(n, fraction, seed, key=k)] = True
    return masks


def _difference(inside: Tensor, hits_in: Tensor, hits_out: Tensor) -> tuple[Tensor, Tensor]:
    """P(correct | in) - P(correct | out) and its standard error, from the models with and without
    each training example (`inside`: (m, n) bool) and their correct counts (n, ...) among them.

    The standard error is Agresti and Caffo's (2000): each proportion's with one success and one
    failure added. The plain (Wald) one is 0 whenever both proportions are 0 or 1, which here is
    common (a memorized example is right in every model that saw it and wrong in every other),
    and would claim certainty from a few dozen models."""
    m_in = inside.double().sum(0)
    shape = (-1,) + (1,) * (hits_in.dim() - 1)
    m_in = m_in.reshape(shape)
    m_out = len(inside) - m_in
    estimate = hits_in / m_in - hits_out / m_out  # NaN where m_in or m_out is 0
    q_in, q_out = (hits_in + 1) / (m_in + 2), (hits_out + 1) / (m_out + 2)
    stderr = torch.sqrt(q_in * (1 - q_in) / (m_in + 2) + q_out * (1 - q_out) / (m_out + 2))
    return estimate, torch.where(estimate.isnan(), estimate, stderr)


def memorization(in_subset: Tensor, correct_train: Tensor) -> tuple[Tensor, Tensor]:
    """(n,) memorization scores and standard errors of the training examples.

    in_subset, correct_train: (m, n) bool, model k's subset and its correctness on every training
    example (including those it did not train on)."""
    if in_subset.shape != correct_train.shape:
        raise ValueError(f"shapes differ: {tuple(in_subset.shape)} and {tuple(correct_train.shape)}")
    inside, right = in_subset.double(), correct_train.double()
    return _difference(in_subset, (inside * right).sum(0), ((1 - inside) * right).sum(0))


def influence(in_subset: Tensor, correct_test: Tensor) -> tuple[Tensor, Tensor]:
    """(n, t) influence of each training example on each test example, and standard errors.

    in_subset: (m, n) bool; correct_test: (m, t) bool, model k's correctness on the test set."""
    if in_subset.shape[0] != correct_test.shape[0]:
        raise ValueError(f"{in_subset.shape[0]} subsets but {correct_test.shape[0]} models evaluated")
    inside, right = in_subset.double(), correct_test.double()
    return _difference(in_subset, inside.T @ right, (1 - inside).T @ right)


def ranking_auc(scores: Tensor, positive: Tensor) -> float:
    """P(score of a random positive > score of a random negative), ties counting 1/2 (the area under
    the ROC curve of `positive` ranked by `scores`). NaN scores are left out."""
    keep = ~torch.isnan(scores)
    scores, positive = scores[keep].double(), positive[keep].bool()
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).double().sum()
    ties = (pos[:, None] == neg[None, :]).double().sum()
    return float((greater + 0.5 * ties) / (len(pos) * len(neg)))


def auc_interval(auc: float, n_pos: int, n_neg: int) -> tuple[float, float]:
    """The 95% interval of an AUC by Hanley and McNeil's (1982) standard error."""
    if not (n_pos and n_neg) or math.isnan(auc):
        return (math.nan, math.nan)
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    a2 = auc * auc
    var = (auc * (1 - auc) + (n_pos - 1) * (q1 - a2) + (n_neg - 1) * (q2 - a2)) / (n_pos * n_neg)
    se = math.sqrt(max(var, 0.0))
    return (max(0.0, auc - 1.96 * se), min(1.0, auc + 1.96 * se))
