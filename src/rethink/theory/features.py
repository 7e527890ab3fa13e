"""Feature maps for the kernel experiments of Section 5 of Zhang et al. (2017).

The paper reports that preprocessing MNIST "with a Gabor wavelet transform" before solving Eq. (3)
halves the test error (1.2% -> 0.6%) while the norm of the minimum-norm solution grows (~220 ->
~390), and that on CIFAR-10 "a random convolutional neural net with 32,000 random filters"
reaches 17% (15% with l2 regularization). It names neither the filter bank nor the random net;
the definitions here are ours and are written out in full (and in docs/results/theory/kernel.md).

- `pixels`: the image scaled to [0, 1] and flattened (d = H W C).
- `gabor`: a Gabor wavelet transform, first order, like a scattering transform's first layer:
  complex Gabor (Morlet) wavelets psi_{j,theta} at J dyadic scales and L orientations, the modulus
  |x * psi_{j,theta}|, averaged over `pool` x `pool` cells; plus the averaged image itself.
  Scale j: envelope sigma_j = 0.8 2^j pixels, centre frequency xi_j = (3 pi / 4) / 2^j, slant
  (envelope aspect) 4 / L across the oscillation, each wavelet made zero-mean (Morlet correction)
  and l1-normalized. d = (1 + J L) C (H / pool) (W / pool).
- `random-conv`: one random convolutional layer: F filters of size k x k x C with i.i.d.
  N(0, 1) entries scaled to unit l2 norm, applied (stride 1, no padding) to per-image standardized
  images, a ReLU with a per-filter bias drawn from U(-bias, bias), and average pooling of each map
  over a `grid` x `grid` partition of the image. d = F grid^2, scaled by 1/sqrt(d) so the linear
  kernel has O(1) entries.

Every map takes uint8 NHWC images (as `rethink.data` loads them), works in float32 batches and
returns an (N, d) float32 tensor; results do not depend on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rethink.errors import ConfigError

Tensor = torch.Tensor


@dataclass(frozen=True)
class GaborConfig:
    scales: int = 3  # J: sigma_j = 0.8 * 2^j
    orientations: int = 8  # L: theta_l = pi l / L
    size: int = 17  # filter support, odd (covers 2.6 sigma at the coarsest default scale)
    pool: int = 4  # average-pooling cell: 28x28 -> 7x7
    batch: int = 2048


@dataclass(frozen=True)
class RandomConvConfig:
    filters: int = 1024  # the paper used 32,000
    size: int = 6  # k x k receptive field
    grid: int = 2  # pooling partition per side: grid x grid cells
    bias: float = 1.0  # ReLU thresholds ~ U(-bias, bias)
    seed: int = 0
    batch: int = 100


def to_nchw(images: Tensor) -> Tensor:
    """uint8 NHWC in 0..255 -> float32 NCHW in [0, 1]; float input is taken as already scaled."""
    if images.ndim != 4:
        raise ConfigError(f"images must be NHWC, got shape {tuple(images.shape)}", "pass (N, H, W, C)")
    x = images.permute(0, 3, 1, 2).float()
    return x / 255.0 if images.dtype == torch.uint8 else x


def pixel_features(images: Tensor) -> Tensor:
    """(N, H W C) float32 in [0, 1], flattened in NHWC order."""
    return to_nchw(images).permute(0, 2, 3, 1).reshape(len(images), -1).contiguous()


def gabor_bank(config: GaborConfig) -> tuple[Tensor, Tensor]:
    """Real and imaginary parts of the J x L Morlet wavelets, each (J L, 1, size, size) float32."""
    J, L, k = config.scales, config.orientations, config.size
    if J < 1 or L < 1 or k < 3 or k % 2 == 0:
        raise ConfigError(f"bad Gabor bank {config}", "scales, orientations >= 1 and an odd size >= 3")
    r = torch.arange(k, dtype=torch.float64) - k // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    slant = 4.0 / L
    waves = []
    for j in range(J):
        sigma, xi = 0.8 * 2**j, (3 * math.pi / 4) / 2**j
        for l_ in range(L):
            theta = math.pi * l_ / L
            u = xx * math.cos(theta) + yy * math.sin(theta)  # along the oscillation
            v = -xx * math.sin(theta) + yy * math.cos(theta)
            envelope = torch.exp(-(u**2 + (slant * v) ** 2) / (2 * sigma**2))
            wave = envelope * torch.exp(1j * xi * u)
            wave = wave - envelope * (wave.sum() / envelope.sum())  # zero mean (Morlet)
            waves.append(wave / wave.abs().sum())
    bank = torch.stack(waves)[:, None]  # (J L, 1, k, k) complex
    return bank.real.float(), bank.imag.float()


def gabor_features(images: Tensor, config: GaborConfig = GaborConfig()) -> Tensor:
    """First-order Gabor wavelet modulus, pooled, plus the pooled image; (N, d) float32."""
    re, im = gabor_bank(config)
    nf, pad, out = re.shape[0], config.size // 2, []
    weight = torch.cat([re, im])  # (2 nf, 1, k, k)
    for s in range(0, len(images), config.batch):
        x = to_nchw(images[s:s + config.batch])  # (b, C, H, W)
        b, c, h, w = x.shape
        x = x.reshape(b * c, 1, h, w)  # each channel filtered separately
        z = F.conv2d(x, weight, padding=pad)  # (b C, 2 nf, H, W)
        modulus = torch.sqrt(z[:, :nf] ** 2 + z[:, nf:] ** 2)
        maps = torch.cat([x, modulus], 1)  # (b C, 1 + nf, H, W)
        pooled = F.avg_pool2d(maps, config.pool)  # (b C, 1 + nf, H/p, W/p)
        out.append(pooled.reshape(b, -1))
    return torch.cat(out)


def random_filters(config: RandomConvConfig, channels: int) -> tuple[Tensor, Tensor]:
    """(F, C, k, k) unit-norm Gaussian filters and (F,) biases from U(-bias, bias), seeded."""
    if config.filters < 1 or config.size < 1 or config.grid < 1 or config.bias < 0:
        raise ConfigError(f"bad random-conv config {config}", "filters, size, grid >= 1 and bias >= 0")
    g = torch.Generator().manual_seed(config.seed)
    w = torch.randn(config.filters, channels, config.size, config.size, generator=g)
    w /= w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    b = (torch.rand(config.filters, generator=g) * 2 - 1) * config.bias
    return w, b


def standardize(x: Tensor) -> Tensor:
    """Per-image standardization of NCHW images: zero mean, unit std (floored as TensorFlow's)."""
    flat = x.flatten(1)
    mean, std = flat.mean(1), flat.std(1, correction=0).clamp(min=1 / math.sqrt(flat.shape[1]))
    return (x - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)


def random_conv_features(images: Tensor, config: RandomConvConfig = RandomConvConfig()) -> Tensor:
    """One random conv layer + ReLU + grid average pooling; (N, F grid^2) float32 / sqrt(d)."""
    w, bias = random_filters(config, images.shape[-1])
    d, k, out = config.filters * config.grid**2, config.size, []
    h, wd = images.shape[1] - k + 1, images.shape[2] - k + 1
    w_mat = w.flatten(1)  # (F, C k k), unfold's (channel, row, column) order
    for s in range(0, len(images), config.batch):
        x = standardize(to_nchw(images[s:s + config.batch]))
        patches = F.unfold(x, k)  # (b, C k k, h w): the convolution as one gemm, much faster on CPU
        z = torch.matmul(w_mat, patches).sub_(bias[:, None]).relu_()  # (b, F, h w)
        z = z.view(len(x), config.filters, h, wd)
        out.append(F.adaptive_avg_pool2d(z, config.grid).flatten(1))  # (b, F grid^2), filter-major
    return torch.cat(out) / math.sqrt(d)


FeatureFn = Callable[..., Tensor]
FEATURES: dict[str, FeatureFn] = {
    "pixels": pixel_features,
    "gabor": gabor_features,
    "random-conv": random_conv_features,
}


def get_features(name: str) -> FeatureFn:
    if name not in FEATURES:
        raise ConfigError(f"unknown feature map {name!r}", f"choose one of {', '.join(FEATURES)}")
    return FEATURES[name]
