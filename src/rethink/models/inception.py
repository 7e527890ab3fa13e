"""The paper's small Inception for 28x28 inputs (Figure 3), with and without batch norm.

Modules (Figure 3):
    Conv(k, c, stride)  = conv k x k (no bias) -> BatchNorm (learnable shift beta, no scale) -> ReLU
    Inception(c1, c3)   = Conv(1, c1) || Conv(3, c3), concatenated       -> c1 + c3 channels
    Downsample(c3)      = Conv(3, c3, stride 2) || MaxPool 3x3 stride 2   -> c3 + c_in channels

Stack (28x28 -> 14x14 -> 7x7):
    Conv(3, 96) -> Inc(32, 32) -> Inc(32, 48) -> Down(80)
    -> Inc(112, 48) -> Inc(96, 64) -> Inc(80, 80) -> Inc(48, 96) -> Down(96)
    -> Inc(176, 160) -> Inc(176, 160) -> global mean pool (336) -> FC 10

Parameter count 1,649,402 for both variants, in TensorFlow-slim's form (the paper's framework):
`conv2d` followed by `batch_norm` has no conv bias, and slim's batch norm defaults to a learnable
shift beta and no scale gamma (`center=True, scale=False`). "Inception w/o BatchNorm" removes every
batch norm layer and nothing else, so each conv keeps its own bias instead (beta becomes the bias):
the same count. The other reading with the same count, a conv bias followed by a batch norm with no
learnable parameter, is not the same network: batch norm subtracts the batch mean, so every conv
bias would be cancelled (zero gradient) and no learnable shift would be left before any ReLU.

Padding is TensorFlow SAME throughout. For the 3x3 stride-1 convs that is a symmetric 1. In
Downsample both branches use SAME with stride 2 (out = ceil(in / 2): 28 -> 14, 14 -> 7), which
pads 0 before and 1 after, so the conv's and the max-pool's windows start on the same pixels and
the two outputs line up (PyTorch's symmetric padding=1 gives the same sizes but shifts the conv
windows by one pixel). Batch norm uses PyTorch's defaults (eps 1e-5, momentum 0.1); the paper
does not say. Dropout, when on, comes before the final FC. Initialization: PyTorch's
defaults here; training re-initializes with `RunConfig.init` (Glorot by default).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rethink.models.alexnet import MaxPool2dSame, same_pads
from rethink.models.registry import register_model

# The Figure 3 stack, as data: (module, *channel arguments).
INCEPTION_STACK: tuple[tuple, ...] = (
    ("conv", 96),
    ("inception", 32, 32),
    ("inception", 32, 48),
    ("downsample", 80),
    ("inception", 112, 48),
    ("inception", 96, 64),
    ("inception", 80, 80),
    ("inception", 48, 96),
    ("downsample", 96),
    ("inception", 176, 160),
    ("inception", 176, 160),
)


class Conv2dSame(nn.Conv2d):
    """nn.Conv2d and TensorFlow SAME padding, asymmetric where TF's is."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, *, bias: bool = True):
        super().__init__(c_in, c_out, kernel_size, stride, padding=0, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        _, top, bottom = same_pads(x.shape[-2], kh, sh)
        _, left, right = same_pads(x.shape[-1], kw, sw)
        if top == bottom and left == right:
            return F.conv2d(x, self.weight, self.bias, self.stride, (top, left))
        x = F.pad(x, (left, right, top, bottom))  # (N, C, H+pad, W+pad), zeros
        return F.conv2d(x, self.weight, self.bias, self.stride)  # (N, c_out, H/s, W/s)


class BatchNormShift(nn.BatchNorm2d):
    """TF-slim's default batch norm: normalize, then add a learnable per-channel shift `bias`
    (slim's beta, initialized to zero); no learnable scale (slim's `scale=False`)."""

    def __init__(self, channels: int):
        super().__init__(channels, affine=False)
        # BatchNorm2d.forward passes (weight, bias) = (None, this) to F.batch_norm: shift only
        self.bias = nn.Parameter(torch.zeros(channels))


class ConvModule(nn.Module):
    """Figure 3's Conv module: conv -> BatchNorm -> ReLU (TF-slim: the conv has no bias and the
    batch norm a shift; without batch norm the conv has its bias)."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, stride: int = 1, *, bn: bool):
        super().__init__()
        self.conv = Conv2dSame(c_in, c_out, kernel_size, stride, bias=not bn)
        self.bn = BatchNormShift(c_out) if bn else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))  # (N, c_out, H/stride, W/stride)


class InceptionModule(nn.Module):
    """Conv 1x1 (c1) || Conv 3x3 (c3), concatenated along channels."""

    def __init__(self, c_in: int, c1: int, c3: int, *, bn: bool):
        super().__init__()
        self.branch1 = ConvModule(c_in, c1, 1, bn=bn)
        self.branch3 = ConvModule(c_in, c3, 3, bn=bn)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.branch1(x), self.branch3(x)], dim=1)  # (N, c1 + c3, H, W)


class DownsampleModule(nn.Module):
    """Conv 3x3 stride 2 (c3) || MaxPool 3x3 stride 2, concatenated along channels."""

    def __init__(self, c_in: int, c3: int, *, bn: bool):
        super().__init__()
        self.conv = ConvModule(c_in, c3, 3, stride=2, bn=bn)
        self.pool = MaxPool2dSame(3, 2)

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.conv(x), self.pool(x)], dim=1)  # (N, c3 + c_in, H/2, W/2)


class Inception(nn.Module):
    """Small Inception; every option is a keyword argument.

    Args:
        in_shape: (channels, height, width) of the input; any size works (global mean pool).
        num_classes: size of the output layer.
        batch_norm: False removes every batch norm layer ("Inception w/o BatchNorm").
        dropout: dropout probability before the final FC (0 = off).
        stack: the module list, INCEPTION_STACK by default.
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int] = (3, 28, 28),
        num_classes: int = 10,
        batch_norm: bool = True,
        dropout: float = 0.0,
        stack: tuple[tuple, ...] = INCEPTION_STACK,
    ):
        super().__init__()
        c = in_shape[0]
        blocks: list[nn.Module] = []
        for kind, *channels in stack:
            if kind == "conv":
                blocks.append(ConvModule(c, channels[0], 3, bn=batch_norm))
                c = channels[0]
            elif kind == "inception":
                blocks.append(InceptionModule(c, *channels, bn=batch_norm))
                c = sum(channels)
            elif kind == "downsample":
                blocks.append(DownsampleModule(c, channels[0], bn=batch_norm))
                c = c + channels[0]
            else:
                raise ValueError(f"unknown Inception stack entry {kind!r}")
        self.features = nn.Sequential(*blocks)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (N, 336, 7, 7) at 28x28
        x = x.mean(dim=(2, 3))  # (N, 336) global mean pool
        return self.fc(self.dropout(x))  # (N, num_classes)


@register_model(
    "inception",
    paper_params=1_649_402,
    default_lr=0.1,
    description="small Inception (Figure 3), TF-slim form: bias-free convs, batch norm with shift, no scale",
    supports_dropout=True,
    is_conv=True,
)
def inception(*, in_shape=(3, 28, 28), num_classes=10, dropout=0.0) -> Inception:
    return Inception(in_shape=in_shape, num_classes=num_classes, batch_norm=True, dropout=dropout)


@register_model(
    "inception-nobn",
    paper_params=1_649_402,
    default_lr=0.1,
    description="small Inception (Figure 3) with every batch norm layer removed",
    supports_dropout=True,
    is_conv=True,
)
def inception_nobn(*, in_shape=(3, 28, 28), num_classes=10, dropout=0.0) -> Inception:
    return Inception(in_shape=in_shape, num_classes=num_classes, batch_norm=False, dropout=dropout)
