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
    makes a second division (pitfall 12) an error instead of a silently clamped whitening.
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
