"""Model registry: names -> builders, plus the paper's facts about each model as data.

Callers never import model classes; they ask for a name:

    model = create_model("alexnet", in_shape=(3, 28, 28), num_classes=10)

Registering your own model (any `nn.Module`) is one decorator on a builder function. The builder
is called with keyword arguments `in_shape` and `num_classes`, and also `dropout` when
`supports_dropout=True`:

    from rethink.models import register_model

    @register_model("tiny-cnn", description="two convs and a linear head", is_conv=True)
    def tiny_cnn(*, in_shape, num_classes):
        c, h, w = in_shape
        return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * h * w, num_classes))

The name must be imported before `create_model` sees it (the five paper models register when
`rethink.models` is imported).
"""

from __future__ import annotations

import fnmatch
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from rethink.errors import ConfigError


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about one model name."""

    name: str  # "mlp1x512"
    builder: Callable[..., nn.Module]
    paper_params: int | None  # the paper's Table 1 count, None for non-paper models
    default_lr: float  # the paper's protocol: 0.1 for the Inceptions, 0.01 for the others
    description: str  # one line
    supports_dropout: bool
    is_conv: bool  # whether channels_last memory format makes sense
    # For a model the paper takes from elsewhere (Inception V3 on ImageNet), the standard
    # architecture's published count of every parameter at native_in_shape / native_num_classes
    # (torchvision's inception_v3). None for the paper's CIFAR models: theirs is paper_params.
    reference_params: int | None = None
    native_in_shape: tuple[int, int, int] = (3, 28, 28)  # the input the model is meant for
    native_num_classes: int = 10
    # for a family scaled by a width k (double descent): the builder's k when none is given;
    # None for a model of one fixed size
    default_width: int | None = None


_REGISTRY: dict[str, ModelInfo] = {}  # in registration order


def register_model(
    name: str,
    *,
    paper_params: int | None = None,
    default_lr: float = 0.01,
    description: str = "",
    supports_dropout: bool = False,
    is_conv: bool = False,
    reference_params: int | None = None,
    native_in_shape: tuple[int, int, int] = (3, 28, 28),
    native_num_classes: int = 10,
    default_width: int | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator: file `builder` under `name`. Returns the builder unchanged.

    Registering a name twice warns and replaces the earlier entry (as timm does), so that
    reloading a module during development keeps working. `native_in_shape` and
    `native_num_classes` say where `paper_params` / `reference_params` apply (and where a
    listing should build the model: Inception V3 refuses the CIFAR default of 28x28).
    """

    def decorator(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            warnings.warn(f"model {name!r} registered twice; replacing it", stacklevel=2)
        _REGISTRY[name] = ModelInfo(
            name=name,
            builder=builder,
            paper_params=paper_params,
            default_lr=default_lr,
            description=description,
            supports_dropout=supports_dropout,
            is_conv=is_conv,
            reference_params=reference_params,
            native_in_shape=tuple(native_in_shape),
            native_num_classes=native_num_classes,
            default_width=default_width,
        )
        return builder

    return decorator


def get_model_info(name: str) -> ModelInfo:
    """The registry entry for `name`; an unknown name raises ConfigError listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(_REGISTRY)
        raise ConfigError(
            f"unknown model {name!r}; known models: {known}",
            "pick one of the known names, or register your own with register_model",
        ) from None


def list_models(pattern: str | None = None) -> list[ModelInfo]:
    """All registered models in registration order, optionally filtered by an fnmatch pattern."""
    infos = list(_REGISTRY.values())
    if pattern is not None:
        infos = [info for info in infos if fnmatch.fnmatchcase(info.name, pattern)]
    return infos


def width_families() -> list[str]:
    """The registered models scaled by a width k (`--width`)."""
    return [info.name for info in _REGISTRY.values() if info.default_width is not None]


def create_model(
    name: str,
    *,
    in_shape: tuple[int, int, int] = (3, 28, 28),
    num_classes: int = 10,
    dropout: float = 0.0,
    width: int | None = None,
) -> nn.Module:
    """Build a model with PyTorch's default init (seeded by `torch.manual_seed`); see `initialize`.

    `in_shape` is (channels, height, width) of the NCHW float input: (3, 28, 28) is the paper's
    center-cropped CIFAR10, (1, 28, 28) is MNIST. `width` is the k of a width family (None: its
    default); a model of one fixed size refuses it.
    """
    info = get_model_info(name)
    in_shape = tuple(in_shape)
    if len(in_shape) != 3 or not all(isinstance(d, int) and d >= 1 for d in in_shape):
        raise ConfigError(
            f"in_shape must be three positive ints (channels, height, width), got {in_shape}",
            "e.g. in_shape=(3, 28, 28) for CIFAR10 or (1, 28, 28) for MNIST",
        )
    if not (isinstance(num_classes, int) and num_classes >= 1):
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}", "e.g. num_classes=10")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1), got {dropout!r}", "use 0 to turn dropout off")
    kwargs: dict = {"in_shape": in_shape, "num_classes": num_classes}
    if info.supports_dropout:
        kwargs["dropout"] = float(dropout)
    elif dropout > 0.0:
        with_dropout = ", ".join(i.name for i in _REGISTRY.values() if i.supports_dropout)
        raise ConfigError(
            f"model {name!r} has no dropout option (dropout={dropout})",
            f"use dropout=0, or one of: {with_dropout}",
        )
    if width is not None:
        if info.default_width is None:
            raise ConfigError(f"model {name!r} has no width option (width={width})",
                              f"drop the width, or use one of: {', '.join(width_families())}")
        if not (isinstance(width, int) and width >= 1):
            raise ConfigError(f"width must be a positive int, got {width!r}", "e.g. width=8")
        kwargs["width"] = width
    return info.builder(**kwargs)


def _glorot(m: nn.Module) -> None:
    nn.init.xavier_uniform_(m.weight)
    if m.bias is not None:  # convs followed by batch norm (Inception V3) have none
        nn.init.zeros_(m.bias)


def _he(m: nn.Module) -> None:
    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    if m.bias is not None:
        nn.init.zeros_(m.bias)


# The paper does not state its initialization. "torch": PyTorch's layer defaults; "glorot":
# Glorot/Xavier uniform weights and zero biases, the default of the TensorFlow layers the
# paper's code was written with; "he": He normal weights (fan-in, ReLU gain), zero biases.
INITS = {"torch": None, "glorot": _glorot, "he": _he}


def initialize(model: nn.Module, scheme: str) -> nn.Module:
    """Re-initialize every conv and linear layer of `model` in place with `scheme` (see INITS)."""
    if scheme not in INITS:
        raise ConfigError(f"unknown initialization {scheme!r}", f"choose one of {', '.join(INITS)}")
    fn = INITS[scheme]
    if fn is not None:
        for m in model.modules():
            if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
                fn(m)
    return model


def count_params(model: nn.Module) -> int:
    """Number of learnable parameters: what the paper's Table 1 counts (for Inception, in
    TF-slim's form, the conv weights, the batch-norm shifts and the FC layer; see `inception.py`).
    Batch norm's running statistics are buffers, not parameters."""
    return sum(p.numel() for p in model.parameters())
