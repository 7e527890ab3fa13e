"""Inception V3 (Szegedy et al. 2016), the paper's ImageNet model (Table 2), in plain torch.

The architecture of TF-slim's `inception_v3` and torchvision's `inception_v3`, whose module
names we keep (a torchvision state dict loads with strict=True):

    stem     Conv2d_1a 3x3/2 32, 2a 3x3 32, 2b 3x3 64 (pad 1), maxpool 3x3/2,
             3b 1x1 80, 4a 3x3 192, maxpool 3x3/2                        299 -> 35x35x192
    35x35    Mixed_5b, 5c, 5d (InceptionA; pool branch 32, 64, 64)      -> 256, 288, 288
    -> 17    Mixed_6a (InceptionB: 3x3/2 || 1x1-3x3-3x3/2 || maxpool)   -> 768
    17x17    Mixed_6b..6e (InceptionC, 7x7 factorized into 1x7 and 7x1; c7 = 128, 160, 160, 192)
    -> 8     Mixed_7a (InceptionD)                                       -> 1280
    8x8      Mixed_7b, 7c (InceptionE, 3x3 split into 1x3 || 3x1)       -> 2048
    head     global average pool, dropout, linear 2048 -> num_classes

Every conv is conv (no bias) -> BatchNorm(eps=0.001) -> ReLU. Stride-2 convs and pools are
VALID (no padding); stride-1 convs pad k // 2, which equals TensorFlow SAME for odd kernels.

Parameters at 1000 classes: 23,834,568 without the auxiliary classifier, 27,161,264 with it,
counting every parameter (batch-norm scale and shift included): torchvision's
`inception_v3(aux_logits=False / True)`. TF-slim's batch norm has no scale (`scale=False`), so
its checkpoint holds 17,216 fewer trainable parameters; we keep torchvision's affine batch norm
(the brief's reference count).

Choices that are ours, each documented where it is made:
- The auxiliary classifier is off by default: our training loop optimizes one loss.
- Average pools in the Inception blocks exclude padding from the mean (TensorFlow SAME
  pooling; torchvision counts the zero padding).
- Batch-norm momentum is PyTorch's 0.1, not TF-slim's decay 0.9997 (momentum 0.0003).
- Dropout rate comes from the run config (0 = off); TF-slim's keep_prob 0.8 is rate 0.2.

Any input of at least 75x75 works (the global pool takes the final map's size; 299x299 is the
standard, ImageNet's); smaller inputs shrink to nothing in Mixed_7a and raise ConfigError.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rethink.errors import ConfigError
from rethink.models.registry import register_model

# The standard counts (every parameter, 1000 classes), as torchvision's inception_v3 reports them.
REFERENCE_PARAMS = 23_834_568
REFERENCE_PARAMS_AUX = 27_161_264
BN_EPS = 0.001  # TF-slim's batch_norm_epsilon for Inception (torchvision uses the same)
MIN_INPUT_SIZE = 75  # smallest height/width for which Mixed_7a's output is still >= 1x1
MIN_INPUT_SIZE_AUX = 107  # ... for which the auxiliary head's 5x5/3 pool on Mixed_6e is >= 1x1

# Learning rate for SGD with momentum 0.9 (our loop). The paper "reuse[s] the ... experimental
# setup from the TENSORFLOW package" on "50 workers"; that package's distributed Inception
# trainer (models/inception/inception_distributed_train.py: one batch of 32 per worker) defaults
# to initial_learning_rate 0.045, decayed x0.94 every 2 epochs, the schedule of the Inception V3
# paper itself. (Its single-machine inception_train.py uses 0.1, decay x0.16 every 30 epochs,
# tuned for a batch of 256 over 8 GPUs.) Both use RMSProp(decay 0.9, momentum 0.9, epsilon 1.0);
# with epsilon 1.0 and mean squared gradients far below 1 the RMSProp step is ~ lr * gradient,
# i.e. momentum SGD at the same lr, so the number carries over to our optimizer.
DEFAULT_LR = 0.045
# TF-slim / the TF package: dropout keep_prob 0.8 before the logits, i.e. rate 0.2, when the
# paper's "dropout" column is on. Our protocol's default is 0 (every regularizer off).
STANDARD_DROPOUT = 0.2


def _valid(size: int, kernel: int = 3, stride: int = 2) -> int:
    """Output length of an unpadded (VALID) conv or pool along one axis."""
    return (size - kernel) // stride + 1


def spatial_sizes(size: int) -> dict[str, int]:
    """Height (or width) of the feature map after each stage, for an input of `size` pixels.

    299 -> {"Mixed_5": 35, "Mixed_6": 17, "Mixed_7": 8}; a size <= 0 means the input is too
    small for that stage.
    """
    s = _valid(size)  # Conv2d_1a_3x3, stride 2
    s = _valid(s, 3, 1)  # Conv2d_2a_3x3 (2b pads 1: same size)
    s = _valid(s)  # maxpool 3x3/2 (3b is 1x1)
    s = _valid(s, 3, 1)  # Conv2d_4a_3x3
    mixed_5 = _valid(s)  # maxpool 3x3/2
    mixed_6 = _valid(mixed_5)  # Mixed_6a, stride 2
    mixed_7 = _valid(mixed_6)  # Mixed_7a, stride 2
    return {"Mixed_5": mixed_5, "Mixed_6": mixed_6, "Mixed_7": mixed_7}


class BasicConv2d(nn.Module):
    """conv (no bias; the batch norm's shift replaces it) -> BatchNorm(eps=0.001) -> ReLU."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int | tuple[int, int], **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel_size, bias=False, **kwargs)
        self.bn = nn.BatchNorm2d(c_out, eps=BN_EPS)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


def _avg_pool_3x3(x: Tensor) -> Tensor:
    # TensorFlow's SAME average pool divides by the number of real pixels in each window
    # (count_include_pad=False); torchvision's port divides by 9 everywhere.
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block: 1x1 || 1x1-5x5 || 1x1-3x3-3x3 || avgpool-1x1 -> 224 + pool_features."""

    def __init__(self, c_in: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 64, 1)
        self.branch5x5_1 = BasicConv2d(c_in, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(c_in, pool_features, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b5, b3, bp], 1)


class InceptionB(nn.Module):
    """35 -> 17 reduction: 3x3/2 || 1x1-3x3-3x3/2 || maxpool 3x3/2 -> 480 + c_in."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(c_in, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(c_in, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3(x)
        b3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([b3, b3dbl, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17x17 block with 7x7 convs factorized into 1x7 and 7x1 (c7 channels inside) -> 768."""

    def __init__(self, c_in: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(c_in, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        b7dbl = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3,
                     self.branch7x7dbl_4, self.branch7x7dbl_5):
            b7dbl = conv(b7dbl)
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b7, b7dbl, bp], 1)


class InceptionD(nn.Module):
    """17 -> 8 reduction: 1x1-3x3/2 || 1x1-1x7-7x1-3x3/2 || maxpool 3x3/2 -> 512 + c_in."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(c_in, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_4(self.branch7x7x3_3(self.branch7x7x3_2(self.branch7x7x3_1(x))))
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8x8 block: 1x1 || 1x1-(1x3 || 3x1) || 1x1-3x3-(1x3 || 3x1) || avgpool-1x1 -> 2048."""

    def __init__(self, c_in: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(c_in, 320, 1)
        self.branch3x3_1 = BasicConv2d(c_in, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(c_in, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(c_in, 192, 1)

    def forward(self, x: Tensor) -> Tensor:
        b1 = self.branch1x1(x)
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        b3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        b3dbl = torch.cat([self.branch3x3dbl_3a(b3dbl), self.branch3x3dbl_3b(b3dbl)], 1)
        bp = self.branch_pool(_avg_pool_3x3(x))
        return torch.cat([b1, b3, b3dbl, bp], 1)


class InceptionAux(nn.Module):
    """Auxiliary classifier on Mixed_6e: avgpool 5x5/3 -> 1x1 128 -> kxk 768 -> linear.

    k is 5 (torchvision, TF-slim at 299x299) or, for smaller inputs, the pooled map's size, as
    TF-slim's `_reduced_kernel_size_for_small_input` does; the count then differs from 27,161,264.
    """

    def __init__(self, c_in: int, num_classes: int, pooled_size: int) -> None:
        super().__init__()
        self.conv0 = BasicConv2d(c_in, 128, 1)
        self.conv1 = BasicConv2d(128, 768, min(5, pooled_size))
        self.fc = nn.Linear(768, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(self.conv0(F.avg_pool2d(x, 5, stride=3)))  # (N, 768, 1, 1) at 299x299
        return self.fc(x.mean(dim=(2, 3)))


class InceptionOutputs(NamedTuple):
    """Training-mode output when the auxiliary classifier is on."""

    logits: Tensor
    aux_logits: Tensor


class InceptionV3(nn.Module):
    """Inception V3; every option is a keyword argument.

    Args:
        in_shape: (channels, height, width); height and width at least 75 (299 is standard).
        num_classes: size of the output layer (1000 for ImageNet).
        dropout: dropout probability before the final linear layer (0 = off; TF-slim uses 0.2).
        aux_logits: add the auxiliary classifier on Mixed_6e. Off by default: our training loop
            optimizes one cross-entropy, and with the head on, train-mode forward returns
            `InceptionOutputs(logits, aux_logits)` (TF weighs the auxiliary loss 0.4), which
            the loop would not know what to do with. Eval mode always returns the logits.
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int] = (3, 299, 299),
        num_classes: int = 1000,
        dropout: float = 0.0,
        aux_logits: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = in_shape
        if min(h, w) < MIN_INPUT_SIZE:
            raise ConfigError(
                f"inception-v3 needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE}, got {h}x{w} "
                f"(its three stride-2 reductions leave no pixels)",
                f"use an input size >= {MIN_INPUT_SIZE} (299 is the standard ImageNet size)",
            )
        self.Conv2d_1a_3x3 = BasicConv2d(c, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.AuxLogits: InceptionAux | None = None
        if aux_logits:
            pooled = min(_valid(spatial_sizes(n)["Mixed_6"], 5, 3) for n in (h, w))
            if pooled < 1:
                raise ConfigError(
                    f"the auxiliary classifier needs a larger input than {h}x{w}",
                    f"use inputs of at least {MIN_INPUT_SIZE_AUX}x{MIN_INPUT_SIZE_AUX}, or aux_logits=False",
                )
            self.AuxLogits = InceptionAux(768, num_classes, pooled)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280)
        self.Mixed_7c = InceptionE(2048)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(2048, num_classes)

    def forward(self, x: Tensor) -> Tensor | InceptionOutputs:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, 3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, 3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (N, 768, 17, 17)
        aux = self.AuxLogits(x) if self.AuxLogits is not None and self.training else None
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (N, 2048, 8, 8)
        logits = self.fc(self.dropout(x.mean(dim=(2, 3))))  # (N, num_classes)
        return logits if aux is None else InceptionOutputs(logits, aux)


@register_model(
    "inception-v3",
    reference_params=REFERENCE_PARAMS,
    native_in_shape=(3, 299, 299),
    native_num_classes=1000,
    default_lr=DEFAULT_LR,
    description="Inception V3 for ImageNet (Table 2); inputs >= 75x75, 299x299 standard",
    supports_dropout=True,
    is_conv=True,
)
def inception_v3(*, in_shape=(3, 299, 299), num_classes=1000, dropout=0.0) -> InceptionV3:
    return InceptionV3(in_shape=in_shape, num_classes=num_classes, dropout=dropout)
