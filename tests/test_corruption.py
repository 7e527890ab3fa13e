"""Each randomization test checked against the paper's definition (Section 2)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rethink.data.corruption import (
    corrupt,
    corrupt_labels,
    gaussian_pixels,
    random_pixels,
    shuffle_pixels,
)
from rethink.errors import ConfigError

K = 10


def _labels(n: int = 20_000, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, K, (n,), generator=torch.Generator().manual_seed(seed))


def _images(n: int = 64, h: int = 6, w: int = 5, c: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, h, w, c), generator=g, dtype=torch.uint8)


def _run(kind: str, seed: int = 0, **kw):
    y, yt = _labels(5000, 1), _labels(500, 2)
    return corrupt(kind, _images(5000), y, _images(500, seed=3), yt, num_classes=K, seed=seed, **kw)


def test_random_labels_are_independent_of_true_labels():
    # the true-vs-random confusion matrix is near uniform: each cell ~ n / K^2 (not a
    # permutation of the true labels)
    n = 100_000
    true = _labels(n)
    data = corrupt("random-labels", _images(n, 1, 1, 1), true, _images(1, 1, 1, 1), true[:1],
                   num_classes=K, seed=7)
    confusion = torch.zeros(K, K)
    confusion.index_put_((true, data.train_labels), torch.ones(n), accumulate=True)
    expected = n / K**2
    # chi-square with 81 degrees of freedom: mean 81, sd ~12.7; 150 is > 5 sd out
    chi2 = float(((confusion - expected) ** 2 / expected).sum())
    assert chi2 < 150
    # a class permutation (bijection) would put all mass on K cells
    assert (confusion > 0).all()
    assert abs(data.realized_rate - (K - 1) / K) < 0.01


@pytest.mark.parametrize("p", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_partial_realized_rate_is_p_times_k_minus_1_over_k(p):
    labels = _labels(50_000)
    noisy = corrupt_labels(labels, p, K, torch.Generator().manual_seed(0))
    rate = float((noisy != labels).float().mean())
    expected = p * (K - 1) / K
    sd = math.sqrt(expected * (1 - expected) / len(labels))
    assert abs(rate - expected) <= 5 * sd + 1e-9


@pytest.mark.parametrize("p", [0.0, 0.3, 1.0])
def test_incorrect_only_changes_every_selected_label(p):
    labels = _labels(50_000)
    noisy = corrupt_labels(labels, p, K, torch.Generator().manual_seed(0), "incorrect-only")
    rate = float((noisy != labels).float().mean())
    assert abs(rate - p) <= 5 * math.sqrt(p * (1 - p) / len(labels)) + 1e-9
    if p == 1.0:  # the replacement is uniform over the other K-1 classes
        shift = (noisy - labels) % K
        counts = torch.bincount(shift, minlength=K)
        assert counts[0] == 0
        assert (counts[1:].float() / len(labels) - 1 / (K - 1)).abs().max() < 0.01


def test_partial_record_mask_and_rate_and_test_labels_stay_true():
    data = _run("partial", p=0.5)
    y = _labels(5000, 1)
    assert torch.equal(data.changed, data.train_labels != y)
    assert data.realized_rate == pytest.approx(float(data.changed.float().mean()))
    assert torch.equal(data.test_labels, _labels(500, 2))
    assert torch.equal(data.train_images, _images(5000))  # label tests leave images alone


def test_same_seed_same_corruption_other_seed_other_corruption():
    for kind, kw in [("partial", {"p": 0.4}), ("random-labels", {}), ("shuffled-pixels", {}),
                     ("random-pixels", {}), ("gaussian", {})]:
        a, b, c = _run(kind, 5, **kw), _run(kind, 5, **kw), _run(kind, 6, **kw)
        for field in ("train_images", "train_labels", "test_images"):
            assert torch.equal(getattr(a, field), getattr(b, field)), (kind, field)
        changed = any(not torch.equal(getattr(a, f), getattr(c, f))
                      for f in ("train_images", "train_labels", "test_images"))
        assert changed, kind


def test_inputs_are_not_modified():
    x, y = _images(100), _labels(100)
    x0, y0 = x.clone(), y.clone()
    for kind in ("partial", "random-labels", "shuffled-pixels", "random-pixels", "gaussian"):
        corrupt(kind, x, y, x, y, num_classes=K, seed=0, p=0.5 if kind == "partial" else None)
    assert torch.equal(x, x0) and torch.equal(y, y0)


def test_shuffled_pixels_is_one_permutation_shared_by_train_and_test():
    n, h, w = 50, 6, 5
    # images whose pixel value encodes the position: a permutation is then readable
    pos = torch.arange(h * w, dtype=torch.uint8).reshape(1, h, w, 1)
    train = pos.expand(n, h, w, 3).clone()
    test = pos.expand(7, h, w, 3).clone()
    new_train, new_test = shuffle_pixels(train, test, torch.Generator().manual_seed(0))
    perm = new_train[0, :, :, 0].flatten()
    assert sorted(perm.tolist()) == list(range(h * w))  # a permutation
    assert not torch.equal(perm, torch.arange(h * w, dtype=torch.uint8))
    assert (new_train[:, :, :, 0].reshape(n, -1) == perm).all()  # same for every train image
    assert (new_test[:, :, :, 0].reshape(7, -1) == perm).all()  # and for the test images


def test_pixel_permutations_move_colour_channels_together():
    x = _images(30)
    for new in (shuffle_pixels(x, x, torch.Generator().manual_seed(0))[0],
                random_pixels(x, torch.Generator().manual_seed(0))):
        for i in range(len(x)):
            before = {tuple(px.tolist()) for px in x[i].reshape(-1, 3)}
            after = {tuple(px.tolist()) for px in new[i].reshape(-1, 3)}
            assert before == after  # the RGB triples survive intact


def test_random_pixels_differ_per_image_and_preserve_each_multiset():
    n, h, w = 40, 6, 5
    pos = torch.arange(h * w, dtype=torch.uint8).reshape(1, h, w, 1).expand(n, h, w, 1).clone()
    new = random_pixels(pos, torch.Generator().manual_seed(0)).reshape(n, -1)
    assert all(sorted(row.tolist()) == list(range(h * w)) for row in new)  # each a permutation
    assert len({tuple(row.tolist()) for row in new}) == n  # different for every image
    x = _images(20)
    shuffled = random_pixels(x, torch.Generator().manual_seed(1))
    assert torch.equal(x.reshape(20, -1).sort(1).values, shuffled.reshape(20, -1).sort(1).values)


def test_random_pixels_applies_to_test_images_too():
    data = _run("random-pixels")
    test = _images(500, seed=3)
    assert not torch.equal(data.test_images, test)
    assert torch.equal(data.test_images.reshape(500, -1).sort(1).values,
                       test.reshape(500, -1).sort(1).values)


@pytest.mark.parametrize("stats", ["per-channel", "global"])
def test_gaussian_matches_dataset_moments(stats):
    """Train and test noise both follow the TRAINING set's moments; the test split here has other
    moments, so using its own would fail."""
    g = torch.Generator().manual_seed(0)

    def images(n: int, ranges: tuple[tuple[int, int], ...]) -> torch.Tensor:
        # channels with different means and spreads
        return torch.stack([torch.randint(lo, hi, (n, 8, 8), generator=g) for lo, hi in ranges],
                           dim=-1).to(torch.uint8)

    train = images(4000, ((0, 100), (100, 256), (50, 60)))
    test = images(2000, ((150, 256), (0, 30), (200, 256)))  # far from the training moments
    new_train, new_test = gaussian_pixels(train, test, torch.Generator().manual_seed(1), stats)
    assert new_train.dtype == torch.float32 and new_train.shape == train.shape
    assert new_test.shape == test.shape
    dims = (0, 1, 2) if stats == "per-channel" else (0, 1, 2, 3)
    scaled, own = train.double() / 255, test.double() / 255
    for new in (new_train, new_test):
        assert torch.allclose(new.double().mean(dims), scaled.mean(dims), atol=3e-3)
        assert torch.allclose(new.double().std(dims), scaled.std(dims), rtol=2e-2)
    if stats == "per-channel":  # the test split's own moments are far away: this would have caught it
        assert (new_test.double().mean(dims) - own.mean(dims)).abs().min() > 0.1
    else:
        assert abs(float(new_test.double().mean()) - float(own.mean())) > 0.05
    # not clipped or wrapped: Gaussian tails go outside [0, 1] for the wide channel
    assert new_train.min() < 0 or new_train.max() > 1


def test_gaussian_replaces_images_and_keeps_labels():
    data = _run("gaussian")
    assert torch.equal(data.train_labels, _labels(5000, 1))
    assert data.realized_rate == 0.0 and not data.changed.any()
    assert data.test_images.dtype == torch.float32


@pytest.mark.parametrize("p", [-0.1, 1.5, float("nan")])
def test_p_outside_unit_interval_is_refused(p):
    with pytest.raises(ConfigError, match="outside"):
        corrupt_labels(_labels(10), p, K, torch.Generator())


def test_bad_names_and_arguments_are_refused():
    with pytest.raises(ConfigError, match="unknown corruption"):
        _run("random-label")
    with pytest.raises(ConfigError, match="needs a probability"):
        _run("partial")
    with pytest.raises(ConfigError, match="only applies"):
        _run("random-labels", p=0.5)
    with pytest.raises(ConfigError, match="convention"):
        corrupt_labels(_labels(10), 0.5, K, torch.Generator(), "sometimes")


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    k=st.integers(2, 20),
    p=st.floats(0, 1),
    seed=st.integers(0, 2**31),
    convention=st.sampled_from(["uniform", "incorrect-only"]),
)
def test_corrupt_labels_properties(n, k, p, seed, convention):
    labels = torch.randint(0, k, (n,), generator=torch.Generator().manual_seed(seed))
    noisy = corrupt_labels(labels, p, k, torch.Generator().manual_seed(seed), convention)
    assert noisy.shape == labels.shape and noisy.dtype == labels.dtype
    assert int(noisy.min()) >= 0 and int(noisy.max()) < k
    if p == 0:
        assert torch.equal(noisy, labels)
    if p == 1 and convention == "incorrect-only":
        assert (noisy != labels).all()
    again = corrupt_labels(labels, p, k, torch.Generator().manual_seed(seed), convention)
    assert torch.equal(noisy, again)


def test_each_seed_drives_a_stream_of_its_own():
    """Equal numbers for the corruption and subset seeds must not give correlated draws: each
    purpose derives its own stream (a shared Generator(0) would draw the same permutation)."""
    from rethink.data.preprocess import stratified_subset
    from rethink.data.rundata import split_subset
    from rethink.seeds import derive_seed, seeded_generator

    purposes = {derive_seed(0, "corruption"), derive_seed(0, "subset", "train"),
                derive_seed(0, "subset", "test"), derive_seed(0, "init"), derive_seed(0, "order", 0)}
    assert len(purposes) == 5
    labels = _labels(5000, 1)
    assert not torch.equal(split_subset(labels, 1000, 0, "train", "x"), stratified_subset(labels, 1000, 0))
    assert torch.equal(split_subset(labels, 1000, 0, "train", "x"),
                       stratified_subset(labels, 1000, derive_seed(0, "subset", "train")))
    data = _run("random-labels")
    shared = torch.randint(0, K, (5000,), generator=torch.Generator().manual_seed(0))
    own = torch.randint(0, K, (5000,), generator=seeded_generator(0, "corruption"))
    assert not torch.equal(data.train_labels, shared) and torch.equal(data.train_labels, own)
