"""Width families for double descent (Nakkiran et al., "Deep double descent", ICLR 2020).

Beyond the paper: the two families Nakkiran et al. scale by a width k, from their Section 3:

- `cnn5`: "5-layer CNNs, with 4 Conv-BatchNorm-ReLU-MaxPool layers and a fully-connected output
  layer", convolution widths [k, 2k, 4k, 8k] (3x3, stride 1, padding 1, with bias), max pooling 2
  after the second, third and fourth block, then a max pool over what is left (4x4 at 32x32
  inputs, their MaxPool2d(4); adaptive here so other input sizes work) and a linear layer on 8k.
  k = 64 is their standard CNN.
- `resnet18k`: the pre-activation ResNet18 with widths [k, 2k, 4k, 8k] of its four stages
  (two basic blocks each, 3x3 convolutions without bias, 1x1 projection shortcuts where the
  shape changes), then global average pooling (their 4x4 average pool at 32x32 inputs) and a
  linear layer, with no normalization after the last block, as in their code. k = 64 is the
  standard ResNet18 (11,171,146 parameters).

Both are built with PyTorch's default initialization, as their code trains them (`RunConfig.init`
"torch").
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from rethink.models.registry import register_model

STANDARD_WIDTH = 64  # k of the standard CNN and of ResNet18


def _conv_bn_relu(c_in: int, c_out: int, pool: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]
    return layers + ([nn.MaxPool2d(2)] if pool else [])


@register_model("cnn5", default_lr=1e-4, description="5-layer CNN of width k (Nakkiran et al. 2020)",
                is_conv=True, native_in_shape=(3, 32, 32), default_width=STANDARD_WIDTH)
def cnn5(*, in_shape=(3, 32, 32), num_classes=10, width: int = STANDARD_WIDTH) -> nn.Sequential:
    k = width
    return nn.Sequential(
        *_conv_bn_relu(in_shape[0], k, pool=False),
        *_conv_bn_relu(k, 2 * k, pool=True),
        *_conv_bn_relu(2 * k, 4 * k, pool=True),
        *_conv_bn_relu(4 * k, 8 * k, pool=True),
        nn.AdaptiveMaxPool2d(1),
        nn.Flatten(),
        nn.Linear(8 * k, num_classes),
    )


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3 (stride) -> BN-ReLU-conv3x3, added to the input (projected when its shape
    changes; the projection reads the first BN-ReLU's output, as in the pre-activation ResNet)."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm2d(c_in), nn.BatchNorm2d(c_out)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.shortcut = (nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)
                         if stride != 1 or c_in != c_out else None)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class PreActResNet18(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        k = width
        self.stem = nn.Conv2d(in_channels, k, 3, padding=1, bias=False)
        blocks, c_in = [], k
        for c_out, stride in ((k, 1), (2 * k, 2), (4 * k, 2), (8 * k, 2)):
            blocks += [PreActBlock(c_in, c_out, stride), PreActBlock(c_out, c_out, 1)]
            c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.linear = nn.Linear(c_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.blocks(self.stem(x))
        return self.linear(F.adaptive_avg_pool2d(out, 1).flatten(1))


@register_model("resnet18k", default_lr=1e-4, description="pre-activation ResNet18 of width k "
                "(Nakkiran et al. 2020)", is_conv=True, native_in_shape=(3, 32, 32),
                default_width=STANDARD_WIDTH)
def resnet18k(*, in_shape=(3, 32, 32), num_classes=10, width: int = STANDARD_WIDTH) -> PreActResNet18:
    return PreActResNet18(in_shape[0], num_classes, width)
