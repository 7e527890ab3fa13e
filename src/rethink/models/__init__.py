"""The paper's models, created by name through one registry.

    from rethink.models import create_model, count_params, list_models
    model = create_model("inception", in_shape=(3, 28, 28), num_classes=10)
    count_params(model)  # 1,649,402, the paper's Table 1 count

CIFAR10 (Table 1): mlp1x512, mlp3x512, alexnet, inception, inception-nobn. ImageNet (Table 2):
inception-v3 (inputs >= 75x75; 299x299, 1000 classes standard). Double descent (width k):
cnn5, resnet18k. To add your own model, decorate
a builder with `register_model` (see `registry.py`).
"""

from rethink.models import alexnet, inception, inception_v3, mlp, widths  # noqa: F401  (registers the models)
from rethink.models.lrn import LocalResponseNorm, local_response_norm
from rethink.models.registry import (
    ModelInfo,
    count_params,
    create_model,
    get_model_info,
    initialize,
    list_models,
    register_model,
)

__all__ = [
    "LocalResponseNorm",
    "ModelInfo",
    "count_params",
    "create_model",
    "get_model_info",
    "initialize",
    "list_models",
    "local_response_norm",
    "register_model",
]
