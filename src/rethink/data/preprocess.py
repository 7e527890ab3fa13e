"""The paper's preprocessing and batch augmentation, as whole-tensor functions.

Layout: images are float NCHW everywhere except `to_unit_float` and `prepare`, which take the
uint8 NHWC arrays that sources produce. Cropping works on the last two dims, so it accepts any
(..., H, W) tensor. Randomness comes only from an explicit `torch.Generator`; nothing loops over
images in Python.

Appendix A: divide by 255 to get [0, 1], crop the centre 28x28, then TensorFlow's
per_image_whitening (now `tf.image.per_image_standardization`).
"""

from __future__ import annotations

import math

import torch

from rethink.errors import ConfigError


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 NHWC in 0..255 -> float32 NCHW in [0, 1].

    Only uint8 is accepted: this is the one place that divides by 255, and refusing float input
    makes a second division by 255 an error instead of a silently clamped whitening.
    """
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise ConfigError(
            f"to_unit_float needs a uint8 NHWC tensor, got {x.dtype} with shape {tuple(x.shape)}",
            "float images are already in [0, 1]; use prepare(), which handles both",
        )
    x = x.permute(0, 3, 1, 2).to(torch.float32, memory_format=torch.contiguous_format)
    return x.div_(255.0)


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central size x size window of (..., H, W) images; offset (H - size) // 2.

    32 -> 28 takes rows and columns 2..29, as TensorFlow's central crop does. A no-op (same
    tensor) when the images already have that size.
    """
    h, w = x.shape[-2:]
    if h < size or w < size:
        raise ConfigError(
            f"cannot crop {h}x{w} images to {size}x{size}", "choose an input size <= the image size"
        )
    if (h, w) == (size, size):
        return x
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top : top + size, left : left + size]


def per_image_whitening(x: torch.Tensor) -> torch.Tensor:
    """TensorFlow's per_image_standardization of each image in a float NCHW batch.

    (x - mean) / max(std, 1 / sqrt(C*H*W)), with mean and population std (ddof=0) over all of
    an image's C*H*W values. The floor keeps constant images finite (they become all zeros).
    """
    if not x.is_floating_point() or x.ndim != 4:
        raise ConfigError(
            f"per_image_whitening needs a float NCHW tensor, got {x.dtype} {tuple(x.shape)}",
            "convert with to_unit_float first",
        )
    n = x[0].numel()
    var, mean = torch.var_mean(x, dim=(1, 2, 3), correction=0, keepdim=True)
    adjusted = var.sqrt().clamp_min(1.0 / math.sqrt(n))
    return (x - mean) / adjusted


def random_crop(
    x: torch.Tensor, size: int, generator: torch.Generator, *, padding: int = 0
) -> torch.Tensor:
    """A uniformly placed size x size window per image of a float NCHW batch.

    `padding` zero-pads each side first (0 keeps the paper's 32 -> 28 crops inside the image;
    4 gives the common "pad 4, crop 32" augmentation for a 32x32 input). Offsets are drawn on
    the generator's device, one (top, left) pair per image, and applied with two gathers.
    """
    if padding:
        x = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    n, c, h, w = x.shape
    if h < size or w < size:
        raise ConfigError(
            f"cannot crop {h}x{w} images (after padding {padding}) to {size}x{size}",
            "use a smaller input size or more padding",
        )
    dev = generator.device
    top = torch.randint(0, h - size + 1, (n,), generator=generator, device=dev).to(x.device)
    left = torch.randint(0, w - size + 1, (n,), generator=generator, device=dev).to(x.device)
    steps = torch.arange(size, device=x.device)
    rows = (top[:, None] + steps).view(n, 1, size, 1).expand(n, c, size, w)
    x = x.gather(2, rows)  # (n, c, size, w)
    cols = (left[:, None] + steps).view(n, 1, 1, size).expand(n, c, size, size)
    return x.gather(3, cols)  # (n, c, size, size)


def random_flip(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Mirror each image of an NCHW batch left-right with probability 1/2."""
    flip = torch.rand(x.shape[0], generator=generator, device=generator.device) < 0.5
    return torch.where(flip.to(x.device).view(-1, 1, 1, 1), x.flip(3), x)


def stratified_subset(labels: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """Sorted indices of `n` examples drawn without replacement, class proportions preserved.

    Class k gets floor(n * count_k / N) examples; the leftover slots go to the classes with the
    largest fractional parts, ties to the lower class index, so the counts are deterministic.
    Which examples of a class are taken is seeded by `seed` alone (drawn on the CPU, so the
    subset is the same on every device); the indices come back on `labels`' device.
    """
    total = len(labels)
    if not 0 < n <= total:
        raise ConfigError(f"subset size {n} out of range", f"choose 1..{total}")
    device, labels = labels.device, labels.cpu()
    classes, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    exact = counts.double() * n / total
    quota = exact.floor().long()
    short = n - int(quota.sum())
    # largest remainder first; a stable sort on the negated remainder breaks ties by class index
    order = torch.sort(-(exact - quota), stable=True).indices
    quota[order[:short]] += 1
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(total, generator=g)  # random order within every class
    by_class = perm[torch.sort(inverse[perm], stable=True).indices]  # grouped by class
    starts = torch.cumsum(counts, 0) - counts
    cls_of = inverse[by_class]
    rank = torch.arange(total) - starts[cls_of]  # position within its class
    return by_class[rank < quota[cls_of]].sort().values.to(device)


def prepare(images: torch.Tensor, size: int) -> torch.Tensor:
    """The paper's input pipeline: NHWC -> float32 NCHW, centre crop, per-image whitening.

    uint8 images are divided by 255; float images (e.g. Gaussian-noise images) are taken to be
    on the [0, 1] scale already and are not divided again.
    """
    if images.dtype == torch.uint8:
        x = to_unit_float(images)
    elif images.is_floating_point() and images.ndim == 4:
        x = images.permute(0, 3, 1, 2).float()
    else:
        raise ConfigError(
            f"prepare needs uint8 or float NHWC images, got {images.dtype} {tuple(images.shape)}",
            "pass the dataset's image tensor",
        )
    return per_image_whitening(center_crop(x, size)).contiguous()


def random_rotate(x: torch.Tensor, max_degrees: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate each image of a float NCHW batch by a uniform angle in [-max_degrees, max_degrees].

    One affine grid for the whole batch and bilinear sampling; corners that come from outside
    the image are zero (the image mean, on whitened inputs).
    """
    n = x.shape[0]
    u = torch.rand(n, generator=generator, device=generator.device).to(x.device)
    angle = (2 * u - 1) * math.radians(max_degrees)
    cos, sin = angle.cos(), angle.sin()
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = torch.nn.functional.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="zeros",
                                           align_corners=False)


# ---------------------------------------------------------------------------- color (ImageNet)
#
# The paper's ImageNet augmentation is TensorFlow's Inception preprocessing: "random cropping,
# random perturbation of brightness, saturation, hue and contrast". Its color part,
# `distort_color` (models/inception image_processing.py, and TF-slim inception_preprocessing.py
# with fast_mode=False), applies four tf.image.random_* ops and clips to [0, 1]. The constants
# below are TensorFlow's. Ours: TF picks an ordering per preprocessing thread (2 in models/
# inception, 4 in TF-slim); we always use their shared ordering 0 (brightness, saturation, hue,
# contrast), and we draw every factor per image from an explicit generator.
#
# The functions take float NCHW images on the [0, 1] scale (before whitening / rescaling to
# [-1, 1]). As in TF, only `random_color` clips; the single ops may leave [0, 1].

BRIGHTNESS_MAX_DELTA = 32.0 / 255.0  # tf.image.random_brightness(max_delta=32. / 255.)
SATURATION_RANGE = (0.5, 1.5)  # tf.image.random_saturation(lower=0.5, upper=1.5)
HUE_MAX_DELTA = 0.2  # tf.image.random_hue(max_delta=0.2), a fraction of a full turn
CONTRAST_RANGE = (0.5, 1.5)  # tf.image.random_contrast(lower=0.5, upper=1.5)


def _per_image(value: float | torch.Tensor, x: torch.Tensor, ndim: int = 4) -> torch.Tensor | float:
    """A scalar as is, or an (N,) tensor of per-image values shaped (N, 1, ...) to `ndim` dims."""
    if isinstance(value, torch.Tensor):
        return value.to(device=x.device, dtype=x.dtype).view(-1, *([1] * (ndim - 1)))
    return value


def _uniform(x: torch.Tensor, low: float, high: float, generator: torch.Generator) -> torch.Tensor:
    """One U[low, high) draw per image of x, drawn on the generator's device."""
    u = torch.rand(x.shape[0], generator=generator, device=generator.device)
    return low + (high - low) * u  # exactly `low` when low == high: a zero range is the identity


def _check_rgb(x: torch.Tensor, what: str) -> None:
    if not x.is_floating_point() or x.ndim != 4 or x.shape[1] != 3:
        raise ConfigError(
            f"{what} needs float RGB images (N, 3, H, W), got {x.dtype} {tuple(x.shape)}",
            "apply color augmentation to 3-channel images on the [0, 1] scale",
        )


def _check_range(name: str, lower: float, upper: float) -> None:
    if not 0 <= lower <= upper:
        raise ConfigError(f"{name} range [{lower}, {upper}] is invalid", "need 0 <= lower <= upper")


def _rgb_to_hue6(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(hue in sextants, chroma = max - min, value = max) of (N, 3, H, W) RGB, each (N, H, W).

    TF's hue formulas. Hue is kept in sextants (6 * turns) and not wrapped, in [-1, 5), and
    chroma instead of saturation: skipping the /6, *6, wrap and s * v roundings keeps a round
    trip within ~3e-7 in float32, and chroma keeps pixels with max <= 0 (where saturation is
    defined as 0) intact, as TF's hue kernel does.
    """
    r, g, b = x.unbind(-3)
    v = torch.maximum(torch.maximum(r, g), b)
    chroma = v - torch.minimum(torch.minimum(r, g), b)
    safe = torch.where(chroma > 0, chroma, torch.ones_like(chroma))  # no 0/0 in discarded branches
    h6 = torch.where(r == v, (g - b) / safe, torch.where(g == v, (b - r) / safe + 2.0, (r - g) / safe + 4.0))
    return torch.where(chroma > 0, h6, torch.zeros_like(h6)), chroma, v  # grey pixels: hue 0


def _saturation(chroma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """TF's S = chroma / V, and 0 where V <= 0."""
    return torch.where(v > 0, chroma / torch.where(v > 0, v, torch.ones_like(v)), torch.zeros_like(v))


# Which of (v, falling, m, rising) each of R, G, B takes in hue sextants 0..5 (see _hue6_to_rgb).
_SEXTANT_SOURCES = ((0, 1, 2, 2, 3, 0), (3, 0, 0, 1, 2, 2), (2, 2, 3, 0, 0, 1))


def _hue6_to_rgb(h6: torch.Tensor, chroma: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Inverse of `_rgb_to_hue6` for any real h6 (period 6): TF's six sectors, without branches.

    In sextant i with fraction f the largest channel is v, the smallest m = v - chroma, and the
    middle one is rising (m + chroma f) or falling (v - chroma f).
    """
    i = torch.floor(h6)
    f = h6 - i  # exact: h6 and i are within a factor of 2 (or i == 0)
    candidates = torch.stack([v, v - chroma * f, v - chroma, v - chroma * (1.0 - f)], dim=-3)
    table = torch.tensor(_SEXTANT_SOURCES, device=h6.device)  # (3, 6)
    sextant = i.remainder(6.0).long().clamp(0, 5)  # clamp: a remainder that rounds up to 6.0
    index = table[:, sextant].movedim(0, -3)  # (N, 3, H, W)
    return candidates.gather(-3, index)


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB -> HSV, every component in [0, 1] for RGB in [0, 1]; TF's formulas.

    V = max, S = (max - min) / max (0 where max <= 0), H in [0, 1) turns (0 for grey pixels).
    Inputs outside [0, 1] convert as in TF's kernel (S may exceed 1).
    """
    h6, chroma, v = _rgb_to_hue6(x)
    return torch.stack([(h6 / 6.0).remainder(1.0), _saturation(chroma, v), v], dim=-3)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) HSV -> RGB, the inverse of `rgb_to_hsv`; hue in turns, periodic (h ~ h + 1)."""
    h, s, v = hsv.unbind(-3)
    return _hue6_to_rgb(6.0 * h, s * v, v)


def adjust_brightness(x: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """x + delta (a scalar or one value per image); no clipping, as tf.image.adjust_brightness."""
    return x + _per_image(delta, x)


def adjust_saturation(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """Scale the HSV saturation by `factor` (scalar or per image) and clip it to [0, 1], as TF.

    factor 0 gives grey (every channel equal to the pixel's max); factor 1 is the identity for
    images in [0, 1].
    """
    _check_rgb(x, "adjust_saturation")
    h6, chroma, v = _rgb_to_hue6(x)
    s = (_saturation(chroma, v) * _per_image(factor, x, ndim=3)).clamp(0.0, 1.0)
    return _hue6_to_rgb(h6, s * v, v)


def adjust_hue(x: torch.Tensor, delta: float | torch.Tensor) -> torch.Tensor:
    """Rotate the HSV hue by `delta` turns (scalar or per image), wrapping mod 1, as TF."""
    _check_rgb(x, "adjust_hue")
    h6, chroma, v = _rgb_to_hue6(x)  # keeps max and min, as TF's hue kernel
    # wrap the shift, not the hue: a whole number of turns is then exactly no shift
    turns = delta.remainder(1.0) if isinstance(delta, torch.Tensor) else delta % 1.0
    return _hue6_to_rgb(h6 + 6.0 * _per_image(turns, x, ndim=3), chroma, v)


def adjust_contrast(x: torch.Tensor, factor: float | torch.Tensor) -> torch.Tensor:
    """(x - mean) * factor + mean, blending each image with its own mean; no clipping.

    The mean is per image and per channel over H x W, as tf.image.adjust_contrast computes it
    (torchvision blends with the grey-level mean instead).
    """
    mean = x.mean(dim=(-2, -1), keepdim=True)
    return (x - mean) * _per_image(factor, x) + mean


def random_brightness(x: torch.Tensor, max_delta: float, generator: torch.Generator) -> torch.Tensor:
    """Add one delta ~ U[-max_delta, max_delta) per image (tf.image.random_brightness)."""
    if max_delta < 0:
        raise ConfigError(f"brightness max_delta={max_delta} is negative", "use max_delta >= 0")
    return adjust_brightness(x, _uniform(x, -max_delta, max_delta, generator))


def random_saturation(
    x: torch.Tensor, lower: float, upper: float, generator: torch.Generator
) -> torch.Tensor:
    """Scale saturation by one factor ~ U[lower, upper) per image (tf.image.random_saturation).

    TF requires upper > lower; we also accept lower == upper (a fixed factor).
    """
    _check_range("saturation", lower, upper)
    return adjust_saturation(x, _uniform(x, lower, upper, generator))


def random_hue(x: torch.Tensor, max_delta: float, generator: torch.Generator) -> torch.Tensor:
    """Rotate the hue by one delta ~ U[-max_delta, max_delta) turns per image (tf.image.random_hue)."""
    if not 0 <= max_delta <= 0.5:
        raise ConfigError(f"hue max_delta={max_delta} is outside [0, 0.5]", "as in TF, use 0..0.5 turns")
    return adjust_hue(x, _uniform(x, -max_delta, max_delta, generator))


def random_contrast(
    x: torch.Tensor, lower: float, upper: float, generator: torch.Generator
) -> torch.Tensor:
    """Scale contrast by one factor ~ U[lower, upper) per image (tf.image.random_contrast)."""
    _check_range("contrast", lower, upper)
    return adjust_contrast(x, _uniform(x, lower, upper, generator))


def random_color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """TF Inception's distort_color, ordering 0, on a float NCHW RGB batch in [0, 1].

    brightness (32/255) -> saturation [0.5, 1.5] -> hue (0.2) -> contrast [0.5, 1.5] -> clip to
    [0, 1]. The generator is drawn in that order, N values per op.
    """
    _check_rgb(x, "random_color")
    x = random_brightness(x, BRIGHTNESS_MAX_DELTA, generator)
    x = random_saturation(x, *SATURATION_RANGE, generator)
    x = random_hue(x, HUE_MAX_DELTA, generator)
    x = random_contrast(x, *CONTRAST_RANGE, generator)
    return x.clamp(0.0, 1.0)
