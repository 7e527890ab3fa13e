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
    """With a second /255 the std of a natural image falls under 1/sqrt(n)."""
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


# ---------------------------------------------------------------------------- color (ImageNet)
#
# References below are scalar ports of TensorFlow's CPU kernels (adjust_saturation_op.cc,
# adjust_hue_op.cc), run pixel by pixel in float64 on tiny images.


def _tf_rgb_to_hsv(r, g, b):
    vv = max(r, g, b)
    rng = vv - min(r, g, b)
    s = rng / vv if vv > 0 else 0.0
    if rng <= 0:
        return 0.0, s, vv
    norm = 1.0 / (6.0 * rng)
    h = norm * (g - b) if r == vv else norm * (b - r) + 2 / 6 if g == vv else norm * (r - g) + 4 / 6
    return (h + 1 if h < 0 else h), s, vv


def _tf_hsv_to_rgb(h, s, v):
    c = s * v
    m = v - c
    dh = h * 6
    fmodu = dh
    while fmodu <= 0:
        fmodu += 2.0
    while fmodu >= 2.0:
        fmodu -= 2.0
    x = c * (1 - abs(fmodu - 1))
    rgb = [(c, x, 0), (x, c, 0), (0, c, x), (0, x, c), (x, 0, c), (c, 0, x)][int(dh)]
    return tuple(u + m for u in rgb)


def _tf_adjust_saturation_pixel(p, scale):
    h, s, v = _tf_rgb_to_hsv(*p)
    return _tf_hsv_to_rgb(h, min(1.0, max(0.0, s * scale)), v)


def _tf_adjust_hue_pixel(p, delta):
    r, g, b = p
    cat = (1 if b < r else 3 if b > g else 2) if r < g else (0 if b < g else 4 if b > r else 5)
    by_cat = {0: (r, g, b), 1: (g, r, b), 2: (g, b, r), 3: (b, g, r), 4: (b, r, g), 5: (r, b, g)}
    vmax, vmid, vmin = by_cat[cat]
    if vmax == vmin:
        h = 0.0
    else:
        ratio = (vmid - vmin) / (vmax - vmin)
        h = cat + (ratio if cat % 2 == 0 else 1 - ratio)
    h += delta * 6
    while h < 0:
        h += 6
    while h >= 6:
        h -= 6
    cat = int(h)
    ratio = h - cat if cat % 2 == 0 else 1 - (h - cat)
    vmid = vmin + ratio * (vmax - vmin)
    return [(vmax, vmid, vmin), (vmid, vmax, vmin), (vmin, vmax, vmid), (vmin, vmid, vmax),
            (vmid, vmin, vmax), (vmax, vmin, vmid)][cat]


def _per_pixel(x: torch.Tensor, fn, values) -> torch.Tensor:
    out = torch.empty_like(x)
    for n in range(x.shape[0]):
        for i in range(x.shape[2]):
            for j in range(x.shape[3]):
                pixel = fn(tuple(x[n, :, i, j].tolist()), float(values[n]))
                out[n, :, i, j] = torch.tensor(pixel, dtype=x.dtype)
    return out


def _colorful(n=6, h=5, w=7, seed=0, low=0.0, high=1.0) -> torch.Tensor:
    x = torch.rand(n, 3, h, w, generator=gen(seed), dtype=torch.float64) * (high - low) + low
    x[0, :, 0, 0] = 0.4  # a grey pixel
    x[0, :, 0, 1] = torch.tensor([0.5, 0.5, 0.2], dtype=torch.float64)  # ties for the max
    x[0, :, 0, 2] = torch.tensor([0.2, 0.5, 0.5], dtype=torch.float64)
    return x


def test_color_constants_are_tensorflows():
    from rethink.data import preprocess as pp

    assert pp.BRIGHTNESS_MAX_DELTA == 32.0 / 255.0
    assert pp.SATURATION_RANGE == (0.5, 1.5) and pp.CONTRAST_RANGE == (0.5, 1.5)
    assert pp.HUE_MAX_DELTA == 0.2


def test_rgb_hsv_round_trip_and_colorsys():
    import colorsys

    from rethink.data.preprocess import hsv_to_rgb, rgb_to_hsv

    x = torch.rand(16, 3, 32, 32, generator=gen(0))
    hsv = rgb_to_hsv(x)
    assert hsv.shape == x.shape and hsv.dtype == x.dtype
    assert hsv.min() >= 0 and hsv.max() <= 1 and (hsv[:, 0] < 1).all()
    torch.testing.assert_close(hsv_to_rgb(hsv), x, atol=1e-5, rtol=0)
    x64 = _colorful()
    hsv64 = rgb_to_hsv(x64)
    want = torch.tensor([colorsys.rgb_to_hsv(*p) for p in x64.permute(0, 2, 3, 1).reshape(-1, 3).tolist()],
                        dtype=torch.float64)
    torch.testing.assert_close(hsv64.permute(0, 2, 3, 1).reshape(-1, 3), want, atol=1e-12, rtol=0)
    torch.testing.assert_close(hsv_to_rgb(hsv64), x64, atol=1e-12, rtol=0)
    assert hsv64[0, :, 0, 0].tolist() == [0.0, 0.0, pytest.approx(0.4)]  # grey: hue 0, saturation 0


@pytest.mark.parametrize("low,high", [(0.0, 1.0), (-0.2, 1.2)])  # out of range: after brightness
def test_adjust_saturation_and_hue_match_tensorflow_kernels(low, high):
    from rethink.data.preprocess import adjust_hue, adjust_saturation

    x = _colorful(low=low, high=high)
    x[1, :, 0, 0] = torch.tensor([-0.1, -0.05, -0.2], dtype=torch.float64)  # max <= 0
    factors = torch.tensor([0.0, 0.5, 1.0, 1.5, 3.0, 0.7], dtype=torch.float64)
    want = _per_pixel(x, _tf_adjust_saturation_pixel, factors)
    torch.testing.assert_close(adjust_saturation(x, factors), want, atol=1e-12, rtol=0)
    deltas = torch.tensor([0.0, 0.1, -0.2, 0.5, -0.45, 0.37], dtype=torch.float64)
    want = _per_pixel(x, _tf_adjust_hue_pixel, deltas)
    torch.testing.assert_close(adjust_hue(x, deltas), want, atol=1e-12, rtol=0)


def test_hue_shift_by_zero_or_whole_turns_is_identity():
    from rethink.data.preprocess import adjust_hue

    x = torch.rand(32, 3, 16, 16, generator=gen(1))
    for turns in (0.0, 1.0, -1.0, 2.0, torch.ones(32), torch.full((32,), -3.0)):
        torch.testing.assert_close(adjust_hue(x, turns), x, atol=1e-6, rtol=0)
    half = adjust_hue(x, 0.5)
    assert (half - x).abs().max() > 0.1
    torch.testing.assert_close(adjust_hue(half, 0.5), x, atol=1e-6, rtol=0)
    torch.testing.assert_close(adjust_hue(x, 0.3), adjust_hue(x, -0.7), atol=1e-6, rtol=0)


def test_saturation_zero_gives_grey_and_one_is_identity():
    from rethink.data.preprocess import adjust_saturation

    x = torch.rand(8, 3, 10, 10, generator=gen(2))
    grey = adjust_saturation(x, 0.0)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 1], grey[:, 2])
    torch.testing.assert_close(grey[:, 0], x.amax(dim=1))  # HSV grey keeps V = max
    torch.testing.assert_close(adjust_saturation(x, 1.0), x, atol=1e-6, rtol=0)


def test_contrast_blends_with_each_images_channel_means():
    from rethink.data.preprocess import adjust_contrast

    x = torch.rand(4, 3, 6, 5, generator=gen(3))
    torch.testing.assert_close(adjust_contrast(x, 1.0), x, atol=1e-6, rtol=0)
    mean = x.mean(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(adjust_contrast(x, 0.0), mean.expand_as(x))
    factors = torch.tensor([0.5, 1.0, 1.5, 2.0])
    torch.testing.assert_close(adjust_contrast(x, factors), (x - mean) * factors.view(-1, 1, 1, 1) + mean)


def test_random_brightness_adds_one_exact_delta_per_image():
    from rethink.data.preprocess import random_brightness

    x = torch.rand(500, 3, 4, 4, generator=gen(4))
    y = random_brightness(x, 0.125, gen(5))
    delta = (y - x).flatten(1)
    torch.testing.assert_close(delta, delta[:, :1].expand_as(delta), atol=1e-6, rtol=0)  # one per image
    u = torch.rand(500, generator=gen(5))
    torch.testing.assert_close(delta[:, 0], -0.125 + 0.25 * u, atol=1e-6, rtol=0)  # U[-d, d), unclipped
    assert delta.abs().max() <= 0.125 + 1e-6 and delta[:, 0].std() > 0.05
    assert (y > 1).any() and (y < 0).any()  # no clipping in the single op


@pytest.mark.parametrize("op", ["brightness", "saturation", "hue", "contrast", "color"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_color_ops_keep_shape_dtype_and_are_seeded(op, dtype):
    from rethink.data import preprocess as pp

    ops = {
        "brightness": lambda x, g: pp.random_brightness(x, pp.BRIGHTNESS_MAX_DELTA, g),
        "saturation": lambda x, g: pp.random_saturation(x, *pp.SATURATION_RANGE, g),
        "hue": lambda x, g: pp.random_hue(x, pp.HUE_MAX_DELTA, g),
        "contrast": lambda x, g: pp.random_contrast(x, *pp.CONTRAST_RANGE, g),
        "color": pp.random_color,
    }
    x = torch.rand(16, 3, 9, 11, generator=gen(6)).to(dtype)
    y = ops[op](x, gen(7))
    assert y.shape == x.shape and y.dtype == dtype
    assert torch.equal(y, ops[op](x, gen(7)))
    assert not torch.equal(y, ops[op](x, gen(8)))
    assert not torch.equal(y, x)
    if op == "color":
        assert y.min() >= 0 and y.max() <= 1


@pytest.mark.parametrize("op", ["brightness", "saturation", "hue", "contrast"])
def test_color_ops_with_zero_range_are_identity(op):
    from rethink.data import preprocess as pp

    x = torch.rand(16, 3, 12, 12, generator=gen(9))
    y = {
        "brightness": lambda: pp.random_brightness(x, 0.0, gen(0)),
        "saturation": lambda: pp.random_saturation(x, 1.0, 1.0, gen(0)),
        "hue": lambda: pp.random_hue(x, 0.0, gen(0)),
        "contrast": lambda: pp.random_contrast(x, 1.0, 1.0, gen(0)),
    }[op]()
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_random_color_is_tf_ordering_0_then_clip():
    from rethink.data import preprocess as pp

    x = torch.rand(64, 3, 8, 8, generator=gen(10))
    g = gen(11)
    want = pp.random_brightness(x, 32 / 255, g)
    want = pp.random_saturation(want, 0.5, 1.5, g)
    want = pp.random_hue(want, 0.2, g)
    want = pp.random_contrast(want, 0.5, 1.5, g).clamp(0, 1)
    assert torch.equal(pp.random_color(x, gen(11)), want)
    # factors differ per image: images that start equal end up different
    same = x[:1].expand(64, -1, -1, -1)
    out = pp.random_color(same, gen(12))
    assert len({tuple(o.flatten()[:3].tolist()) for o in out}) == 64


def test_color_ops_refuse_bad_input():
    from rethink.data import preprocess as pp

    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ConfigError, match="RGB"):
        pp.random_color(torch.rand(2, 1, 4, 4), gen(0))
    with pytest.raises(ConfigError, match="RGB"):
        pp.adjust_hue(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), 0.1)
    with pytest.raises(ConfigError, match="hue max_delta"):
        pp.random_hue(x, 0.6, gen(0))
    with pytest.raises(ConfigError, match="saturation range"):
        pp.random_saturation(x, 1.5, 0.5, gen(0))
    with pytest.raises(ConfigError, match="contrast range"):
        pp.random_contrast(x, -0.1, 0.5, gen(0))
    with pytest.raises(ConfigError, match="brightness"):
        pp.random_brightness(x, -0.1, gen(0))
