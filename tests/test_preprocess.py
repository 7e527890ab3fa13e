"""Preprocessing: exact values, shapes, determinism, and TensorFlow's whitening formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rethink.data.preprocess import (
    center_crop,
    per_image_whitening,
    prepare,
    random_crop,
    random_flip,
    stratified_subset,
    to_unit_float,
)
from rethink.errors import ConfigError


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def uint8_images(n=4, h=32, w=32, c=3, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (n, h, w, c), generator=gen(seed), dtype=torch.uint8)


def tf_per_image_standardization(image: np.ndarray) -> np.ndarray:
    """TensorFlow's formula for one HWC/CHW image, written out in float64 numpy."""
    n = image.size
    mean = image.mean()
    std = np.sqrt(np.mean(np.square(image)) - np.square(mean))  # population std, as TF
    return (image - mean) / max(std, 1.0 / np.sqrt(n))


# ---------------------------------------------------------------------------- to_unit_float


def test_to_unit_float_divides_by_255_once_and_goes_nchw():
    x = uint8_images(n=2, h=3, w=5)
    y = to_unit_float(x)
    assert y.dtype == torch.float32 and y.shape == (2, 3, 3, 5) and y.is_contiguous()
    assert torch.equal(y, x.permute(0, 3, 1, 2).float() / 255)
    assert to_unit_float(torch.tensor([[[[0, 255]]]], dtype=torch.uint8)).flatten().tolist() == [
        0.0,
        1.0,
    ]


def test_to_unit_float_refuses_float_input():
    with pytest.raises(ConfigError, match="uint8 NHWC"):
        to_unit_float(torch.rand(1, 4, 4, 3))


# ---------------------------------------------------------------------------- center_crop


def test_center_crop_32_to_28_takes_offset_2():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)
    y = center_crop(x, 28)
    assert y.shape == (2, 3, 28, 28)
    assert torch.equal(y, x[:, :, 2:30, 2:30])


def test_center_crop_odd_margin_and_no_op():
    x = torch.rand(1, 1, 33, 31)
    assert torch.equal(center_crop(x, 28), x[..., 2:30, 1:29])
    same = torch.rand(2, 3, 28, 28)
    assert center_crop(same, 28) is same


def test_center_crop_too_small_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot crop 24x24 images to 28x28"):
        center_crop(torch.rand(1, 3, 24, 24), 28)


# ---------------------------------------------------------------------------- whitening


def test_whitening_matches_tensorflow_formula():
    x = to_unit_float(uint8_images(n=5, h=28, w=28))
    got = per_image_whitening(x).double().numpy()
    for i in range(5):
        want = tf_per_image_standardization(x[i].double().numpy())
        np.testing.assert_allclose(got[i], want, rtol=1e-5, atol=1e-5)
    assert np.allclose(got.mean(axis=(1, 2, 3)), 0, atol=1e-6)
    assert np.allclose(got.std(axis=(1, 2, 3)), 1, atol=1e-5)


def test_whitening_clamps_small_std():
    n = 3 * 28 * 28
    constant = torch.full((1, 3, 28, 28), 0.7)
    assert torch.equal(per_image_whitening(constant), torch.zeros_like(constant))  # no NaN
    # std below 1/sqrt(n): divided by the floor, not by the std
    tiny = torch.full((1, 3, 28, 28), 0.5, dtype=torch.float64)
    tiny[0, 0, 0, 0] = 0.5 + 1e-3
    got = per_image_whitening(tiny)
    want = tf_per_image_standardization(tiny[0].numpy())
    np.testing.assert_allclose(got[0].numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(got[0].numpy(), (tiny[0] - tiny[0].mean()).numpy() * math.sqrt(n))


def test_dividing_by_255_twice_would_hit_the_clamp():
    """Pitfall 12: with a second /255 the std of a natural image falls under 1/sqrt(n)."""
    x = to_unit_float(uint8_images(n=3, h=28, w=28))
    floor = 1 / math.sqrt(3 * 28 * 28)
    assert (x.std(dim=(1, 2, 3), unbiased=False) > floor).all()
    assert ((x / 255).std(dim=(1, 2, 3), unbiased=False) < floor).all()


def test_whitening_refuses_integer_input():
    with pytest.raises(ConfigError, match="float NCHW"):
        per_image_whitening(torch.zeros(1, 3, 4, 4, dtype=torch.uint8))


# ---------------------------------------------------------------------------- random crop


def _window_offsets(x: torch.Tensor, y: torch.Tensor) -> list[tuple[int, int]]:
    """For each image, the (top, left) of the window of x that y equals; fails if there is none."""
    size = y.shape[-1]
    windows = x.unfold(2, size, 1).unfold(3, size, 1)  # (n, c, oh, ow, size, size)
    match = (windows == y[:, :, None, None]).all(dim=(1, 4, 5))  # (n, oh, ow)
    assert match.flatten(1).any(dim=1).all(), "some crop is not a window of its image"
    return [tuple(int(v) for v in m.nonzero()[0]) for m in match]


def test_random_crop_is_a_window_of_each_image_and_deterministic():
    x = torch.randn(64, 3, 32, 32)  # distinct values: a window match is unambiguous
    y = random_crop(x, 28, gen(1))
    assert y.shape == (64, 3, 28, 28)
    offsets = _window_offsets(x, y)
    assert len(set(offsets)) > 10  # offsets really vary per image
    assert torch.equal(y, random_crop(x, 28, gen(1)))
    assert not torch.equal(y, random_crop(x, 28, gen(2)))


def test_random_crop_covers_every_offset():
    x = torch.randn(2000, 1, 8, 8)
    offsets = _window_offsets(x, random_crop(x, 6, gen(0)))
    assert set(offsets) == {(t, left) for t in range(3) for left in range(3)}


def test_random_crop_with_padding_crops_from_the_zero_padded_image():
    x = torch.rand(200, 3, 32, 32) + 1  # no zeros inside the image
    y = random_crop(x, 32, gen(0), padding=4)
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    offsets = _window_offsets(padded, y)
    assert {t for t, _ in offsets} == set(range(9))
    shifted = [i for i, (t, left) in enumerate(offsets) if (t, left) != (4, 4)]
    assert all((y[i] == 0).any() for i in shifted)


def test_random_crop_too_large_is_a_config_error():
    with pytest.raises(ConfigError, match="cannot crop 28x28"):
        random_crop(torch.rand(2, 3, 28, 28), 32, gen(0))


# ---------------------------------------------------------------------------- random flip


def test_random_flip_flips_about_half_and_is_deterministic():
    x = torch.randn(1000, 3, 4, 5)
    y = random_flip(x, gen(3))
    same = (y == x).flatten(1).all(1)
    flipped = (y == x.flip(3)).flatten(1).all(1)
    assert (same ^ flipped).all()  # each image is either untouched or mirrored left-right
    assert 400 < int(flipped.sum()) < 600
    assert torch.equal(y, random_flip(x, gen(3)))
    assert not torch.equal(y, random_flip(x, gen(4)))


# ---------------------------------------------------------------------------- stratified subset


def test_stratified_subset_preserves_proportions():
    labels = torch.tensor([0] * 500 + [1] * 300 + [2] * 200)[torch.randperm(1000, generator=gen(0))]
    idx = stratified_subset(labels, 100, seed=7)
    assert idx.dtype == torch.int64 and len(idx) == 100
    assert torch.equal(idx, idx.sort().values) and len(idx.unique()) == 100
    assert torch.bincount(labels[idx]).tolist() == [50, 30, 20]
    assert torch.equal(idx, stratified_subset(labels, 100, seed=7))
    assert not torch.equal(idx, stratified_subset(labels, 100, seed=8))


def test_stratified_subset_remainders_go_to_largest_fraction_then_lowest_class():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    # exact shares 2.5, 1.5, 1.0: floors 2, 1, 1; the spare slot goes to class 0 (tie with 1)
    assert torch.bincount(labels[stratified_subset(labels, 5, seed=0)]).tolist() == [3, 1, 1]
    # shares 3.5, 2.1, 1.4: floors 3, 2, 1; the spare slot goes to class 0 (0.5 > 0.4 > 0.1)
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    assert torch.bincount(labels[stratified_subset(labels, 7, seed=0)]).tolist() == [4, 2, 1]


def test_stratified_subset_full_size_and_bad_sizes():
    labels = torch.tensor([3, 1, 3, 1, 2])
    assert stratified_subset(labels, 5, seed=0).tolist() == [0, 1, 2, 3, 4]
    for n in (0, -1, 6):
        with pytest.raises(ConfigError, match=f"subset size {n} out of range"):
            stratified_subset(labels, n, seed=0)


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.integers(1, 40), min_size=1, max_size=8),
    frac=st.floats(0.01, 1.0),
    seed=st.integers(0, 2**31),
)
def test_stratified_subset_invariants(counts, frac, seed):
    labels = torch.cat([torch.full((c,), k) for k, c in enumerate(counts)])
    labels = labels[torch.randperm(len(labels), generator=gen(seed))]
    n = max(1, round(frac * len(labels)))
    idx = stratified_subset(labels, n, seed)
    assert len(idx) == n and len(idx.unique()) == n and torch.equal(idx, idx.sort().values)
    got = torch.bincount(labels[idx], minlength=len(counts))
    share = torch.tensor(counts, dtype=torch.float64) * n / len(labels)
    assert ((got - share).abs() < 1).all()  # every class within one of its exact share


# ---------------------------------------------------------------------------- prepare


def test_prepare_is_unit_float_then_crop_then_whitening():
    x = uint8_images(n=3)
    y = prepare(x, 28)
    assert y.shape == (3, 3, 28, 28) and y.dtype == torch.float32 and y.is_contiguous()
    assert torch.equal(y, per_image_whitening(center_crop(to_unit_float(x), 28)))


def test_prepare_takes_float_images_on_the_unit_scale():
    x = uint8_images(n=3)
    as_float = x.float() / 255  # NHWC floats in [0, 1], as Gaussian-noise images are
    torch.testing.assert_close(prepare(as_float, 28), prepare(x, 28), rtol=1e-5, atol=1e-5)
    noise = torch.randn(2, 32, 32, 3, generator=gen(0)) * 0.25 + 0.47
    assert prepare(noise, 28).shape == (2, 3, 28, 28)


def test_prepare_mnist_shape_without_crop():
    x = uint8_images(n=2, h=28, w=28, c=1)
    assert prepare(x, 28).shape == (2, 1, 28, 28)


def test_prepare_refuses_other_dtypes():
    with pytest.raises(ConfigError, match="uint8 or float NHWC"):
        prepare(torch.zeros(1, 32, 32, 3, dtype=torch.int64), 28)


def test_random_rotate_turns_images_within_the_bound():
    from rethink.data.preprocess import random_rotate

    x = torch.zeros(64, 1, 15, 15)
    x[:, :, 7, 10:] = 1.0  # a bar from the centre to the right edge
    out = random_rotate(x, 25.0, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    ys, xs = torch.meshgrid(torch.arange(15.0) - 7, torch.arange(15.0) - 7, indexing="ij")
    angles = torch.rad2deg(torch.atan2((out[:, 0] * ys).sum((1, 2)), (out[:, 0] * xs).sum((1, 2))))
    assert angles.abs().max() <= 27  # the bar's direction moved by at most ~25 degrees
    assert angles.std() > 5  # and by different angles for different images
    same = random_rotate(x, 25.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, same)
    assert torch.allclose(random_rotate(x, 0.0, torch.Generator()), x, atol=1e-5)
