"""The paper's small AlexNet for 28x28 inputs (TensorFlow cifar10-tutorial style).

Paper (Section 2 / Appendix A): "two (convolution 5x5 -> max-pool 3x3 -> local-response-
normalization) modules followed by two fully connected layers with 384 and 192 hidden units,
respectively. Finally a 10-way linear layer is used for prediction." The conv widths are not
stated; 64 and 64 with SAME padding everywhere reproduce the paper's 1,387,786 parameters:

    conv5x5 3->64 SAME, ReLU -> maxpool 3x3/2 SAME -> LRN      28x28 -> 14x14
    conv5x5 64->64 SAME, ReLU -> maxpool 3x3/2 SAME -> LRN     14x14 -> 7x7
    flatten 7*7*64 = 3136 -> FC 384, ReLU -> FC 192, ReLU -> FC 10

LRN hyperparameters are not in the paper; we use the tutorial's `tf.nn.lrn(depth_radius=4,
bias=1.0, alpha=0.001/9.0, beta=0.75)`, i.e. torch's LocalResponseNorm(size=9, alpha=0.001,
beta=0.75, k=1.0) (see `lrn.py` for the alpha convention); `lrn.py` also has the fast LRN used
here. Dropout, when on, follows each hidden FC ReLU.

The modules run conv -> max-pool -> ReLU: max pooling commutes with ReLU (relu(max(x)) =
max(relu(x)), and the gradients agree too, ties included), so the ReLU runs on the 4x smaller
pooled tensor. Outputs and gradients are those of conv -> ReLU -> max-pool.

Initialization: PyTorch's defaults here; training re-initializes with `RunConfig.init`
(Glorot by default, see `registry.initialize`).
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from rethink.models.lrn import LocalResponseNorm, from_tf_lrn
from rethink.models.mlp import fc_stack
from rethink.models.registry import register_model

TF_CIFAR10_LRN = from_tf_lrn(depth_radius=4, bias=1.0, alpha=0.001 / 9.0, beta=0.75)


def same_pads(size: int, kernel: int, stride: int) -> tuple[int, int, int]:
    """TensorFlow SAME padding along one axis: (out, pad_before, pad_after).

    out = ceil(size / stride); total = max((out - 1) * stride + kernel - size, 0), split with
    the smaller half before (so 28 -> 14 and 14 -> 7 with kernel 3, stride 2 pad 0 before and
    1 after, unlike PyTorch's symmetric `padding=1`, which shifts every window by one pixel).
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


class MaxPool2dSame(nn.Module):
    """Max pooling with TensorFlow SAME padding (padding never wins the max)."""

    def __init__(self, kernel_size: int, stride: int):
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x: Tensor) -> Tensor:
        k, s = self.kernel_size, self.stride
        h, w = x.shape[-2:]
        oh, top, bottom = same_pads(h, k, s)
        ow, left, right = same_pads(w, k, s)
        ceil_h, ceil_w = math.ceil((h - k) / s) + 1, math.ceil((w - k) / s) + 1
        if top == left == 0 and (ceil_h, ceil_w) == (oh, ow):
            # padding only after: ceil_mode's clipped last window is exactly the -inf padding
            return F.max_pool2d(x, k, s, ceil_mode=True)  # (N, C, oh, ow)
        x = F.pad(x, (left, right, top, bottom), value=float("-inf"))  # (N, C, H+pad, W+pad)
        return F.max_pool2d(x, k, s)  # (N, C, oh, ow)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding=SAME"


class AlexNet(nn.Module):
    """Small AlexNet; every option is a keyword argument.

    Args:
        in_shape: (channels, height, width) of the input.
        num_classes: size of the output layer.
        conv_widths: output channels of the two 5x5 convs.
        fc_widths: hidden FC layers.
        dropout: dropout probability after each hidden FC ReLU (0 = off).
        lrn: keyword arguments of `torch.nn.LocalResponseNorm` (torch's alpha convention).
        lrn_impl: the LRN module class; `torch.nn.LocalResponseNorm` gives the stock one.
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int] = (3, 28, 28),
        num_classes: int = 10,
        conv_widths: tuple[int, int] = (64, 64),
        fc_widths: tuple[int, ...] = (384, 192),
        dropout: float = 0.0,
        lrn: dict | None = None,
        lrn_impl: type[nn.Module] = LocalResponseNorm,
    ):
        super().__init__()
        c, h, w = in_shape
        lrn = TF_CIFAR10_LRN if lrn is None else lrn
        features: list[nn.Module] = []
        for width in conv_widths:
            features += [
                nn.Conv2d(c, width, 5, padding=2),  # SAME for an odd kernel, stride 1
                MaxPool2dSame(3, 2),  # pooled before the ReLU: same result, see module doc
                nn.ReLU(inplace=True),
                lrn_impl(**lrn),
            ]
            c, h, w = width, same_pads(h, 3, 2)[0], same_pads(w, 3, 2)[0]
        self.features = nn.Sequential(*features)
        fan_in = c * h * w  # 64 * 7 * 7 = 3136 at 28x28
        self.classifier = nn.Sequential(nn.Flatten(), *fc_stack(fan_in, fc_widths, num_classes, dropout))

    def forward(self, x: Tensor) -> Tensor:
        x = self.features(x)  # (N, 64, 7, 7) at 28x28
        return self.classifier(x)  # (N, num_classes)


@register_model(
    "alexnet",
    paper_params=1_387_786,
    default_lr=0.01,
    description="small AlexNet: 2x (conv5x5 64 -> maxpool 3x3/2 -> LRN), FC 384, 192, 10",
    supports_dropout=True,
    is_conv=True,
)
def alexnet(*, in_shape=(3, 28, 28), num_classes=10, dropout=0.0) -> AlexNet:
    return AlexNet(in_shape=in_shape, num_classes=num_classes, dropout=dropout)
