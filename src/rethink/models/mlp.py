"""The paper's multi-layer perceptrons: MLP 1x512 and MLP 3x512.

    flatten (C*H*W = 2352 at 3x28x28) -> [Linear 512 -> ReLU (-> Dropout)] x depth -> Linear 10

At 3x28x28 the counts are the paper's: 1,209,866 (1x512) and 1,735,178 (3x512). Dropout, when
on, follows each hidden ReLU. Initialization: PyTorch's defaults
here; training re-initializes with `RunConfig.init` (Glorot by default).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from rethink.models.registry import register_model


def fc_stack(fan_in: int, widths: Sequence[int], num_classes: int, dropout: float) -> list[nn.Module]:
    """[Linear -> ReLU (-> Dropout)] per hidden width, then the Linear output layer.

    The fully connected part of both the MLPs and AlexNet.
    """
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(fan_in, width), nn.ReLU(inplace=True)]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        fan_in = width
    layers.append(nn.Linear(fan_in, num_classes))
    return layers


class MLP(nn.Module):
    """Fully connected ReLU network on the flattened image.

    Args:
        in_shape: (channels, height, width) of the input; the first layer sees their product.
        num_classes: size of the output layer.
        width: units per hidden layer.
        depth: number of hidden layers.
        dropout: dropout probability after each hidden ReLU (0 = off).
    """

    def __init__(
        self,
        *,
        in_shape: tuple[int, int, int] = (3, 28, 28),
        num_classes: int = 10,
        width: int = 512,
        depth: int = 1,
        dropout: float = 0.0,
    ):
        super().__init__()
        hidden = fc_stack(math.prod(in_shape), [width] * depth, num_classes, dropout)
        self.net = nn.Sequential(nn.Flatten(), *hidden)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (N, C, H, W) -> (N, num_classes)


@register_model(
    "mlp1x512",
    paper_params=1_209_866,
    default_lr=0.01,
    description="MLP, one hidden layer of 512 ReLU units",
    supports_dropout=True,
)
def mlp1x512(*, in_shape=(3, 28, 28), num_classes=10, dropout=0.0) -> MLP:
    return MLP(in_shape=in_shape, num_classes=num_classes, depth=1, dropout=dropout)


@register_model(
    "mlp3x512",
    paper_params=1_735_178,
    default_lr=0.01,
    description="MLP, three hidden layers of 512 ReLU units",
    supports_dropout=True,
)
def mlp3x512(*, in_shape=(3, 28, 28), num_classes=10, dropout=0.0) -> MLP:
    return MLP(in_shape=in_shape, num_classes=num_classes, depth=3, dropout=dropout)
