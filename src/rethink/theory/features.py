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
- `random-conv`: one random convolutional layer in the style of Coates & Ng's single-layer
  networks with random filters (Coates, Lee & Ng 2011; the random-patch CIFAR-10 pipelines of
  keystone-ml, `amplab/keystone` RandomPatchCifar). Defaults: F filters of size k x k x C that
  are random k x k patches of the training images, ZCA-whitened with the statistics of 100,000
  training patches and made unit-norm in the whitened space; applied (stride 1, no padding, to
  ZCA-whitened patches of per-image standardized images) as one gemm; symmetric rectification
  max(0, z - t), max(0, -z - t) with t = 0.25; average pooling over a `grid` x `grid` (2 x 2)
  partition of each map; each feature standardized with training statistics, scaled by
  1/sqrt(conv_dim), plus a constant intercept column. d = 2 F grid^2 + 1. Every step is an option
  (`RandomConvConfig`), including the earlier map (i.i.d. Gaussian filters on unwhitened
  images, a ReLU with thresholds from U(-1, 1), features / sqrt(d)); the measurements behind
  each default are in docs/results/theory/kernel.md.

Every map takes uint8 NHWC images (as `rethink.data` loads them), works in float32 batches and
returns an (N, d) float32 tensor; results do not depend on the batch size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

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
    """One random conv layer. Defaults: the Coates-Ng random-patch recipe, measured best here."""

    filters: int = 1024  # the paper used 32,000
    size: int = 6  # k x k receptive field
    grid: int = 2  # pooling partition per side: grid x grid cells
    bias: float = 0.25  # threshold t: every filter's, or each drawn from U(-t, t) if random_bias
    seed: int = 0
    batch: int = 100  # images per batch
    source: str = "patches"  # filters: "patches" (random training patches) or "gaussian" N(0, I)
    normalize: str = "image"  # inputs: "image" per-image standardization, "patch" per-patch, "none"
    whiten: bool = True  # ZCA-whiten patches (and filters) with training-patch statistics
    rectify: str = "symmetric"  # "symmetric": max(0, z - t) and max(0, -z - t); "relu": max(0, z - t)
    random_bias: bool = False
    standardize: bool = True  # per-feature standardization with training statistics (+ intercept)
    zca_eps: float = 0.1  # x the mean eigenvalue, added to the patch covariance's eigenvalues
    patch_eps: float = 10 / 255**2  # added to each patch's variance under normalize="patch"
    whitening_patches: int = 100_000  # training patches for the ZCA statistics
    filter_chunk: int = 256  # filters per gemm (bounds the activation buffer)

    def needs_data(self) -> bool:
        """Whether the filter bank is fitted on training images (patch filters or whitening)."""
        return self.source == "patches" or self.whiten

    def conv_dim(self) -> int:
        """Pooled rectified responses: F grid^2, twice that when symmetric."""
        return self.filters * self.grid**2 * (2 if self.rectify == "symmetric" else 1)

    def dim(self) -> int:
        """Feature dimension d: conv_dim, plus one constant (intercept) column when standardized."""
        return self.conv_dim() + int(self.standardize)


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


SOURCES = ("gaussian", "patches")
NORMALIZATIONS = ("image", "patch", "none")
RECTIFIERS = ("relu", "symmetric")


@dataclass(frozen=True)
class FilterBank:
    """A random-conv layer ready to apply: responses z = weight @ patch - offset, then thresholds.

    Whitening is folded into `weight` (W f for a filter f and the symmetric ZCA matrix W) and
    `offset` (W f . patch mean), so the forward pass is one gemm per filter chunk either way.
    `mean` and `scale` are set when the features are standardized: x -> (x - mean) * scale.
    """

    weight: Tensor  # (F, C k k), unfold's (channel, row, column) order
    offset: Tensor  # (F,)
    threshold: Tensor  # (F,)
    mean: Tensor | None = None  # (conv_dim,)
    scale: Tensor | None = None  # (conv_dim,): 1 / (std sqrt(conv_dim))


def check_random_conv(config: RandomConvConfig) -> None:
    """Refuse a random-conv config that cannot run, naming the bad field."""
    c = config
    if min(c.filters, c.size, c.grid, c.batch, c.filter_chunk, c.whitening_patches) < 1 or c.bias < 0:
        raise ConfigError(f"bad random-conv config {config}", "filters, size, grid >= 1 and bias >= 0")
    for name, value, allowed in (("source", c.source, SOURCES), ("normalize", c.normalize, NORMALIZATIONS),
                                 ("rectify", c.rectify, RECTIFIERS)):
        if value not in allowed:
            raise ConfigError(f"unknown random-conv {name} {value!r}", f"choose one of {', '.join(allowed)}")
    if not (c.zca_eps > 0 and c.patch_eps >= 0):
        raise ConfigError(f"bad random-conv config {config}", "zca_eps > 0 and patch_eps >= 0")


def random_filters(config: RandomConvConfig, channels: int) -> tuple[Tensor, Tensor]:
    """(F, C, k, k) unit-norm Gaussian filters and (F,) biases from U(-bias, bias), seeded."""
    check_random_conv(config)
    g = torch.Generator().manual_seed(config.seed)
    w = torch.randn(config.filters, channels, config.size, config.size, generator=g)
    w /= w.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    b = (torch.rand(config.filters, generator=g) * 2 - 1) * config.bias
    return w, b


def image_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-image mean and std of (N, ...) images, std floored at 1/sqrt(#values) as TensorFlow's."""
    flat = x.flatten(1)
    return flat.mean(1), flat.std(1, correction=0).clamp(min=1 / math.sqrt(flat.shape[1]))


def standardize(x: Tensor) -> Tensor:
    """Per-image standardization of NCHW images: zero mean, unit std (floored as TensorFlow's)."""
    mean, std = image_stats(x)
    return (x - mean.view(-1, 1, 1, 1)) / std.view(-1, 1, 1, 1)


def normalize_patches(p: Tensor, eps: float, dim: int = -1) -> Tensor:
    """Contrast normalization of patches along `dim`: minus their mean, over sqrt(variance + eps)."""
    mean = p.mean(dim, keepdim=True)
    centred = p - mean
    return centred / (centred.pow(2).mean(dim, keepdim=True) + eps).sqrt()


def image_patches(images: Tensor, config: RandomConvConfig, count: int, generator: torch.Generator) -> Tensor:
    """(count, C k k) random k x k patches of random `images` (uint8 NHWC), as the conv sees them.

    Image, row and column are drawn uniformly; each patch is taken in unfold's (channel, row,
    column) order after the same input normalization as `random_conv_features` applies.
    """
    n, h, w, _ = images.shape
    k = config.size
    idx = torch.randint(n, (count,), generator=generator)
    rows = torch.randint(h - k + 1, (count,), generator=generator)[:, None] + torch.arange(k)
    cols = torch.randint(w - k + 1, (count,), generator=generator)[:, None] + torch.arange(k)
    p = images[idx[:, None, None], rows[:, :, None], cols[:, None, :]]  # (count, k, k, C)
    p = to_nchw(p).flatten(1)  # (count, C k k)
    if config.normalize == "image":
        mean, std = torch.empty(count), torch.empty(count)
        for s in range(0, count, 4096):  # each patch standardized with its whole image's statistics
            mean[s:s + 4096], std[s:s + 4096] = image_stats(to_nchw(images[idx[s:s + 4096]]))
        p = (p - mean[:, None]) / std[:, None]
    elif config.normalize == "patch":
        p = normalize_patches(p, config.patch_eps)
    return p


def zca(patches: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Mean (P,) and symmetric ZCA matrix (P, P) of (m, P) patches.

    W = V diag(1 / sqrt(s + eps mean(s))) V^T for the covariance's eigenpairs (s, V): eps is
    relative to the mean eigenvalue, so the same value fits any input scale.
    """
    x = patches.double()
    mean = x.mean(0)
    c = torch.cov(x.T, correction=0)
    s, v = torch.linalg.eigh(c)
    s = s.clamp(min=0)
    w = (v * (s + eps * s.mean()).rsqrt()) @ v.T
    return mean.float(), w.float()


def filter_bank(config: RandomConvConfig, channels: int, train_images: Tensor | None = None) -> FilterBank:
    """The random-conv layer for `config`: Gaussian or training-patch filters, whitened or not.

    Gaussian filters without whitening are exactly `random_filters` (same seed, same draws).
    Otherwise, from one seeded generator: a pool of max(F, whitening_patches) training patches
    (max(F, 1) without whitening); with whitening, its mean mu and ZCA matrix W; the filters f are
    the first F pool patches (or N(0, I) draws), minus mu, whitened (f W), made unit-norm; the
    weight applied to an input patch x is W f, so the response is (W f) . (x - mu); last the
    thresholds, `bias` or U(-bias, bias).
    """
    check_random_conv(config)
    nf, p_dim = config.filters, channels * config.size**2
    if not config.needs_data():
        w, b = random_filters(config, channels)
        b = b if config.random_bias else torch.full((nf,), config.bias)
        return FilterBank(w.flatten(1), torch.zeros(nf), b)
    if train_images is None:
        raise ConfigError(f"random-conv with source={config.source!r}, whiten={config.whiten} is fitted on "
                          "training images", "call fit_random_conv(train_images, config) first")
    g = torch.Generator().manual_seed(config.seed)
    pool = image_patches(train_images, config, max(nf, config.whitening_patches if config.whiten else 1), g)
    mean, white = zca(pool, config.zca_eps) if config.whiten else (torch.zeros(p_dim), None)
    f = pool[:nf] if config.source == "patches" else torch.randn(nf, p_dim, generator=g) + mean
    f = f - mean
    if white is not None:
        f = f @ white
    f = f / f.norm(dim=1, keepdim=True).clamp(min=1e-12)
    weight = f @ white if white is not None else f
    t = torch.full((nf,), config.bias)
    if config.random_bias:
        t = (torch.rand(nf, generator=g) * 2 - 1) * config.bias
    return FilterBank(weight.contiguous(), weight @ mean, t)


def _input_patches(images: Tensor, config: RandomConvConfig) -> Tensor:
    """(b, C k k, h w) normalized input patches of uint8 NHWC images (the convolution's input)."""
    x = to_nchw(images)
    if config.normalize == "image":
        x = standardize(x)
    patches = F.unfold(x, config.size)
    return normalize_patches(patches, config.patch_eps, dim=1) if config.normalize == "patch" else patches


def conv_pool(images: Tensor, config: RandomConvConfig, bank: FilterBank) -> Tensor:
    """(N, d) unscaled features: the bank's responses, rectified, averaged over grid x grid cells.

    conv_dim = F grid^2 (x 2 when symmetric: all max(0, z - b) features, then all max(0, -z - b)),
    filter-major, then (when standardized) one column of ones. Work is split over image batches and
    filter chunks (one gemm each).
    """
    nf, cells, k = config.filters, config.grid**2, config.size
    h, wd = images.shape[1] - k + 1, images.shape[2] - k + 1
    out = torch.empty(len(images), config.dim())
    out[:, config.conv_dim():] = 1.0
    for s in range(0, len(images), config.batch):
        patches = _input_patches(images[s:s + config.batch], config)  # (b, C k k, h w)
        b = len(patches)
        for f0 in range(0, nf, config.filter_chunk):
            f1 = min(f0 + config.filter_chunk, nf)
            z = torch.matmul(bank.weight[f0:f1], patches).sub_(bank.offset[f0:f1, None])  # (b, fc, h w)
            t = bank.threshold[f0:f1, None]
            pos = F.adaptive_avg_pool2d((z - t).relu_().view(b, f1 - f0, h, wd), config.grid)
            out[s:s + b, f0 * cells:f1 * cells] = pos.flatten(1)
            if config.rectify == "symmetric":
                neg = F.adaptive_avg_pool2d(z.add_(t).neg_().relu_().view(b, f1 - f0, h, wd), config.grid)
                out[s:s + b, (nf + f0) * cells:(nf + f1) * cells] = neg.flatten(1)
    return out


def random_conv_features(images: Tensor, config: RandomConvConfig = RandomConvConfig(),
                         bank: FilterBank | None = None) -> Tensor:
    """One random conv layer + rectification + grid average pooling; (N, d) float32.

    Divided by sqrt(d), or standardized with the training statistics `bank` carries. Without a
    bank, one is built from `config` (only possible for Gaussian filters without whitening).
    """
    bank = filter_bank(config, images.shape[-1]) if bank is None else bank
    out = conv_pool(images, config, bank)
    if config.standardize:
        if bank.mean is None or bank.scale is None:
            raise ConfigError("standardized random-conv features need the training statistics",
                              "call fit_random_conv(train_images, config) first")
        out[:, :config.conv_dim()].sub_(bank.mean).mul_(bank.scale)
        return out
    return out.div_(math.sqrt(config.dim()))


def feature_standardization(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-feature mean and scale 1 / (std sqrt(d)) of (n, d) training features (std 0 -> 1).

    Standardized features x -> (x - mean) * scale add 1 to the mean K_ii of the linear kernel.
    Centred features span no direction along the all-ones vector (X_c^T 1 = 0, so K 1 = 0): the
    constant column that `conv_pool` appends gives the kernel the intercept it needs to interpolate.
    """
    mean, std = x.mean(0), x.std(0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean, 1.0 / (std * math.sqrt(x.shape[1]))


def fit_random_conv(train_images: Tensor, config: RandomConvConfig) -> tuple[FilterBank, Tensor]:
    """Fit the layer on training images: its filter bank and the (n, d) training features.

    The bank carries everything needed for test features: `random_conv_features(test, config, bank)`.
    """
    bank = filter_bank(config, train_images.shape[-1], train_images if config.needs_data() else None)
    x = conv_pool(train_images, config, bank)
    if not config.standardize:
        return bank, x.div_(math.sqrt(config.dim()))
    conv = x[:, :config.conv_dim()]
    mean, scale = feature_standardization(conv)
    conv.sub_(mean).mul_(scale)
    return replace(bank, mean=mean, scale=scale), x


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
