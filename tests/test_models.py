"""The model registry and the paper's five CIFAR10 models, checked against the paper's facts.

Every registered model gets the same checks (parametrized over `list_models()`, timm style):
the paper's Table 1 parameter count, forward/backward in NCHW, channels_last and bf16 autocast,
MNIST-shaped input, deterministic init and dropout behaviour.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rethink.errors import ConfigError
from rethink.models import (
    LocalResponseNorm,
    count_params,
    create_model,
    get_model_info,
    list_models,
    register_model,
)
from rethink.models import registry as registry_module
from rethink.models.alexnet import AlexNet, MaxPool2dSame, same_pads
from rethink.models.inception import ConvModule, DownsampleModule
from rethink.models.lrn import from_tf_lrn

# The paper's CIFAR10 models (Table 1); Inception V3 (ImageNet, >= 75x75 inputs) is tested below.
MODELS = [info.name for info in list_models() if info.paper_params is not None]
CONV_MODELS = [info.name for info in list_models() if info.is_conv and info.paper_params is not None]
IMAGENET_MODELS = ["inception-v3"]
WIDTH_MODELS = ["cnn5", "resnet18k"]  # double descent's width families (tests/test_beyond.py)

# Table 1 of the paper, at 28x28x3 input and 10 classes.
PAPER_COUNTS = {
    "mlp1x512": 1_209_866,
    "mlp3x512": 1_735_178,
    "alexnet": 1_387_786,
    "inception": 1_649_402,
    "inception-nobn": 1_649_402,
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def scratch_registry(monkeypatch):
    """A private copy of the registry, so test registrations don't leak into other tests."""
    monkeypatch.setattr(registry_module, "_REGISTRY", dict(registry_module._REGISTRY))


def _train_step(model: nn.Module, x: torch.Tensor, *, bf16: bool = False) -> torch.Tensor:
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(x)
    loss = F.cross_entropy(out.to(x.dtype), torch.arange(len(x)) % 10)
    loss.backward()
    return out


# --- registry ---------------------------------------------------------------------------


def test_registry_holds_exactly_the_paper_models_and_the_width_families():
    assert sorted(MODELS) == sorted(PAPER_COUNTS)
    assert sorted(info.name for info in list_models()) == sorted([*PAPER_COUNTS, *IMAGENET_MODELS,
                                                                   *WIDTH_MODELS])


@pytest.mark.parametrize("name", MODELS)
def test_paper_parameter_count(name):
    model = create_model(name, in_shape=(3, 28, 28), num_classes=10)
    assert get_model_info(name).paper_params == PAPER_COUNTS[name]
    assert count_params(model) == PAPER_COUNTS[name]
    assert count_params(model) == PAPER_COUNTS[name]


@pytest.mark.parametrize("name", MODELS)
def test_model_info_is_consistent(name):
    info = get_model_info(name)
    assert info.name == name
    assert info.description and "\n" not in info.description
    assert info.default_lr == (0.1 if name.startswith("inception") else 0.01)
    assert info.is_conv == (not name.startswith("mlp"))


def test_count_params_counts_learnable_parameters_not_running_statistics():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.Flatten(), nn.Linear(8, 2))
    assert count_params(model) == (8 * 3 * 9 + 8) + 2 * 8 + (8 * 2 + 2)


def test_unknown_model_lists_known_names_on_one_line():
    with pytest.raises(ConfigError) as excinfo:
        create_model("resnet18")
    message = str(excinfo.value)
    assert "resnet18" in message and "\n" not in message
    for name in MODELS:
        assert name in message
    with pytest.raises(ConfigError):
        get_model_info("resnet18")


@pytest.mark.parametrize(
    "kwargs",
    [{"in_shape": (28, 28)}, {"in_shape": (3, 0, 28)}, {"num_classes": 0}, {"dropout": 1.0}],
)
def test_bad_arguments_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        create_model("mlp1x512", **kwargs)


def test_register_your_own_model(scratch_registry):
    @register_model("tiny-cnn", description="one conv and a linear head", is_conv=True)
    def tiny_cnn(*, in_shape, num_classes):
        c, h, w = in_shape
        conv = nn.Conv2d(c, 4, 3, padding=1)
        return nn.Sequential(conv, nn.ReLU(), nn.Flatten(), nn.Linear(4 * h * w, num_classes))

    assert "tiny-cnn" in [info.name for info in list_models()]
    assert [info.name for info in list_models("tiny-*")] == ["tiny-cnn"]
    info = get_model_info("tiny-cnn")
    assert info.paper_params is None and info.default_lr == 0.01 and not info.supports_dropout
    model = create_model("tiny-cnn", in_shape=(1, 8, 8), num_classes=3)
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 3)
    with pytest.raises(ConfigError, match="dropout"):
        create_model("tiny-cnn", dropout=0.5)
    with pytest.warns(UserWarning, match="twice"):
        register_model("tiny-cnn")(tiny_cnn)


def test_list_models_pattern():
    assert [i.name for i in list_models("inception*")] == ["inception", "inception-nobn", "inception-v3"]
    assert [i.name for i in list_models("mlp*")] == ["mlp1x512", "mlp3x512"]


# --- forward / backward for every model ---------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_forward_backward(name):
    model = create_model(name)
    out = _train_step(model, torch.randn(4, 3, 28, 28))
    assert out.shape == (4, 10) and out.dtype == torch.float32
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", CONV_MODELS)
def test_channels_last_matches_nchw(name):
    # float64: in float32 the two layouts' rounding differs by ~1e-6, enough to flip the argmax
    # of an occasional near-tie in a max-pool window and move that gradient elsewhere.
    model = create_model(name, in_shape=(3, 16, 16)).double()  # 16 -> 8 -> 4: same paddings
    _assert_layouts_agree(model, torch.randn(3, 3, 16, 16, dtype=torch.float64), atol=1e-10, rtol=1e-7)


def _assert_layouts_agree(model: torch.nn.Module, x: torch.Tensor, atol: float, rtol: float) -> None:
    """A training step in NCHW and in channels_last gives the same outputs and gradients."""
    ref = _train_step(model, x)
    ref_grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model = model.to(memory_format=torch.channels_last)
    out = _train_step(model, x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref)
    for p, g in zip(model.parameters(), ref_grads, strict=True):
        torch.testing.assert_close(p.grad, g, atol=atol, rtol=rtol)


@pytest.mark.bf16
@pytest.mark.parametrize("name", MODELS)
def test_bf16_autocast(name):
    model = create_model(name)
    if get_model_info(name).is_conv:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(4, 3, 28, 28).contiguous(memory_format=torch.channels_last)
    out = _train_step(model, x, bf16=True)
    assert out.shape == (4, 10) and out.dtype == torch.bfloat16
    for p in model.parameters():
        assert p.grad is not None and p.grad.dtype == torch.float32
        assert torch.isfinite(p.grad).all()


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("in_shape", [(1, 28, 28), (3, 32, 32), (3, 13, 17)])
def test_other_input_shapes(name, in_shape):
    model = create_model(name, in_shape=in_shape, num_classes=7)
    out = _train_step(model, torch.randn(2, *in_shape))
    assert out.shape == (2, 7)


@pytest.mark.parametrize("name", MODELS)
def test_init_is_deterministic_given_the_seed(name):
    torch.manual_seed(123)
    a = create_model(name).state_dict()
    torch.manual_seed(123)
    b = create_model(name).state_dict()
    torch.manual_seed(124)
    c = create_model(name).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("name", MODELS)
def test_dropout(name):
    assert get_model_info(name).supports_dropout
    x = torch.randn(8, 3, 28, 28)
    plain = create_model(name)
    assert not any(isinstance(m, nn.Dropout) for m in plain.modules())
    model = create_model(name, dropout=0.5)
    assert any(isinstance(m, nn.Dropout) and m.p == 0.5 for m in model.modules())
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))  # eval: dropout off, deterministic
    model.train()
    with torch.no_grad():
        assert not torch.equal(model(x), model(x))  # train: a fresh mask per call
    assert count_params(model) == PAPER_COUNTS[name]


# --- AlexNet ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 6, 7, 13, 14, 15, 28, 32])
def test_same_max_pool_matches_tensorflow_padding(size):
    x = torch.randn(2, 3, size, size + 1)
    oh, top, bottom = same_pads(size, 3, 2)
    ow, left, right = same_pads(size + 1, 3, 2)
    ref = F.max_pool2d(F.pad(x, (left, right, top, bottom), value=float("-inf")), 3, 2)
    out = MaxPool2dSame(3, 2)(x)
    assert out.shape == (2, 3, oh, ow) == ref.shape
    assert torch.equal(out, ref)


def test_same_pads_are_tensorflows():
    assert same_pads(28, 3, 2) == (14, 0, 1)
    assert same_pads(14, 3, 2) == (7, 0, 1)
    assert same_pads(7, 3, 2) == (4, 1, 1)
    assert same_pads(28, 5, 1) == (28, 2, 2)


def test_alexnet_layers_and_pool_relu_order():
    model = create_model("alexnet")
    assert model.classifier[1].in_features == 7 * 7 * 64
    lrns = [m for m in model.modules() if isinstance(m, LocalResponseNorm)]
    assert len(lrns) == 2
    assert from_tf_lrn(depth_radius=4, bias=1.0, alpha=0.001 / 9, beta=0.75) == {
        "size": 9,
        "alpha": pytest.approx(0.001),
        "beta": 0.75,
        "k": 1.0,
    }
    lrn = lrns[0]
    assert (lrn.size, lrn.alpha, lrn.beta, lrn.k) == (9, pytest.approx(1e-3), 0.75, 1.0)

    # The model pools before its ReLU; check that equals the paper's conv -> ReLU -> pool -> LRN,
    # forward and backward, against stock torch modules.
    x = torch.randn(3, 3, 28, 28) * 20  # large enough that the LRN does something
    stock = nn.LocalResponseNorm(9, 0.001, 0.75, 1.0)
    pool = MaxPool2dSame(3, 2)
    conv1, conv2 = model.features[0], model.features[4]

    def reference(x):
        x = stock(pool(F.relu(conv1(x))))  # (N, 64, 14, 14)
        x = stock(pool(F.relu(conv2(x))))  # (N, 64, 7, 7)
        return model.classifier(x)

    out = model(x)
    torch.testing.assert_close(out, reference(x), atol=1e-5, rtol=1e-5)
    g_model = torch.autograd.grad(out.sum(), list(model.parameters()))
    g_ref = torch.autograd.grad(reference(x).sum(), list(model.parameters()))
    for a, b in zip(g_model, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_alexnet_with_stock_lrn_has_the_same_count():
    assert count_params(AlexNet(lrn_impl=nn.LocalResponseNorm)) == PAPER_COUNTS["alexnet"]


# --- fast LRN -----------------------------------------------------------------------------


LRN_CASES = [  # (shape, size): AlexNet's, fewer channels than the window, even size, 3-d and 5-d
    ((4, 64, 7, 7), 9),
    ((2, 5, 6, 3), 9),
    ((3, 16, 5, 5), 4),
    ((2, 12, 4, 4), 1),
    ((2, 16, 9), 5),
    ((2, 10, 3, 2, 4), 3),
]


@pytest.mark.parametrize(
    "shape,size,channels_last",
    [(shape, size, False) for shape, size in LRN_CASES]
    + [(shape, size, True) for shape, size in LRN_CASES if len(shape) == 4],
)
def test_fast_lrn_matches_stock(shape, size, channels_last):
    x = torch.randn(shape) * 10
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    grad = torch.randn(shape)
    kwargs = {"size": size, "alpha": 0.5, "beta": 0.75, "k": 1.0}
    ref = nn.LocalResponseNorm(**kwargs)(x)
    out = LocalResponseNorm(**kwargs)(x)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    (g_ref,) = torch.autograd.grad(ref, x, grad)
    (g_out,) = torch.autograd.grad(out, x, grad)
    torch.testing.assert_close(g_out, g_ref, atol=1e-5, rtol=1e-5)
    if channels_last:
        assert out.is_contiguous(memory_format=torch.channels_last)


def test_fast_lrn_gradcheck():
    x = (torch.randn(2, 7, 3, 4, dtype=torch.float64) * 3).requires_grad_()
    assert torch.autograd.gradcheck(LocalResponseNorm(4, 0.3, 0.75, 2.0), (x,))


def test_fast_lrn_bf16_rounds_only_the_output():
    x = (torch.randn(2, 64, 5, 5) * 30).requires_grad_()
    ref = nn.LocalResponseNorm(9, 0.001, 0.75, 1.0)(x)
    out = LocalResponseNorm(9, 0.001, 0.75, 1.0)(x.bfloat16())
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref, atol=0, rtol=2**-7)  # ~ one bf16 rounding
    out.float().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


# --- Inception ----------------------------------------------------------------------------


def test_inception_is_tf_slim_conv_then_batch_norm_with_shift_and_no_scale():
    """Every conv followed by batch norm has no bias (batch norm would cancel it), and every batch
    norm learns a shift (beta) and no scale (gamma): TF-slim's conv2d + batch_norm defaults."""
    model = create_model("inception")
    modules = [m for m in model.modules() if isinstance(m, ConvModule)]
    assert len(modules) == 1 + 2 * 8 + 2  # stem + 2 per Inception module + 1 per Downsample
    for m in modules:
        assert m.conv.bias is None
        assert isinstance(m.bn, nn.modules.batchnorm._BatchNorm)
        assert not m.bn.affine and m.bn.weight is None  # no gamma
        assert isinstance(m.bn.bias, nn.Parameter) and m.bn.bias.shape == (m.conv.out_channels,)
    assert count_params(model) == 1_649_402


def test_inception_batch_norm_shift_is_learned_and_folds():
    """The shift gets a gradient (a conv bias before batch norm would get none), and folding the
    batch norm into its conv keeps the eval-mode function."""
    from rethink.theory.norms import fold_batchnorm

    torch.manual_seed(0)
    block = ConvModule(3, 4, 3, bn=True)
    x = torch.randn(8, 3, 6, 6)
    block(x).sum().backward()
    assert block.bn.bias.grad is not None and block.bn.bias.grad.abs().sum() > 0
    with torch.no_grad():
        block.bn.bias.add_(0.3)
        block.train()
        block(x)  # populate running statistics
    block.eval()
    folded = fold_batchnorm(block)
    torch.testing.assert_close(folded(x), block(x), atol=1e-5, rtol=1e-5)


def test_inception_nobn_convs_keep_their_bias():
    model = create_model("inception-nobn")
    assert all(m.conv.bias is not None for m in model.modules() if isinstance(m, ConvModule))
    assert count_params(model) == 1_649_402


def test_inception_nobn_has_no_batch_norm():
    model = create_model("inception-nobn")
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def test_inception_shapes_follow_figure_3():
    model = create_model("inception")
    sizes = []
    x = torch.randn(1, 3, 28, 28)
    model.eval()
    with torch.no_grad():
        for block in model.features:
            x = block(x)
            sizes.append((x.shape[1], x.shape[2]))
    assert sizes == [
        (96, 28), (64, 28), (80, 28), (160, 14), (160, 14), (160, 14), (160, 14), (144, 14),
        (240, 7), (336, 7), (336, 7),
    ]  # fmt: skip


def test_downsample_conv_uses_tensorflow_same_padding():
    block = DownsampleModule(2, 4, bn=False)
    x = torch.randn(1, 2, 14, 14)
    conv = block.conv.conv
    ref = F.relu(F.conv2d(F.pad(x, (0, 1, 0, 1)), conv.weight, conv.bias, stride=2))
    out = block(x)
    assert out.shape == (1, 6, 7, 7)
    torch.testing.assert_close(out[:, :4], ref)
    torch.testing.assert_close(out[:, 4:], MaxPool2dSame(3, 2)(x))


@pytest.mark.parametrize("scheme", ["glorot", "he"])
def test_initialization_schemes(scheme):
    import math

    from rethink.models import initialize

    torch.manual_seed(0)
    model = initialize(create_model("alexnet"), scheme)
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear)):
            assert (m.bias == 0).all()
            fan_in = m.weight[0].numel()
            fan_out = m.weight.shape[0] * m.weight[0, 0].numel()
            expected = math.sqrt(2 / (fan_in + fan_out)) if scheme == "glorot" else math.sqrt(2 / fan_in)
            assert abs(float(m.weight.detach().std()) / expected - 1) < 0.1


def test_unknown_initialization_is_refused():
    from rethink.models import initialize

    with pytest.raises(ConfigError, match="unknown initialization"):
        initialize(create_model("mlp1x512"), "orthogonal")


# --- Inception V3 (ImageNet) -----------------------------------------------------------------


def _v3(in_size: int = 75, **kwargs) -> nn.Module:
    return create_model("inception-v3", in_shape=(3, in_size, in_size), **kwargs)


def test_inception_v3_has_the_standard_parameter_count():
    from rethink.models.inception_v3 import REFERENCE_PARAMS, REFERENCE_PARAMS_AUX, InceptionV3

    # torchvision's inception_v3(aux_logits=False / True) at 1000 classes, every parameter
    model = _v3(299, num_classes=1000)
    assert count_params(model) == REFERENCE_PARAMS == 23_834_568
    assert count_params(InceptionV3(aux_logits=True)) == REFERENCE_PARAMS_AUX
    assert REFERENCE_PARAMS_AUX == 27_161_264
    # the count does not depend on the input size (global pool)
    assert count_params(_v3(75, num_classes=1000)) == REFERENCE_PARAMS


def test_inception_v3_registry_entry():
    info = get_model_info("inception-v3")
    assert info.paper_params is None  # Table 1 counts are CIFAR models; this one is the standard's
    assert info.reference_params == 23_834_568
    assert (info.native_in_shape, info.native_num_classes) == ((3, 299, 299), 1000)
    assert info.is_conv and info.supports_dropout
    assert info.default_lr == 0.045
    assert all(i.reference_params is None and i.native_in_shape == (3, 28, 28)
               for i in list_models() if i.name in PAPER_COUNTS)


def test_inception_v3_layout_matches_torchvision_names_and_shapes():
    sd = _v3(299, num_classes=1000).state_dict()
    assert sd["Conv2d_1a_3x3.conv.weight"].shape == (32, 3, 3, 3)
    assert sd["Mixed_5b.branch_pool.conv.weight"].shape == (32, 192, 1, 1)
    assert sd["Mixed_6e.branch7x7dbl_2.conv.weight"].shape == (192, 192, 7, 1)
    assert sd["Mixed_6e.branch7x7dbl_5.conv.weight"].shape == (192, 192, 1, 7)
    assert sd["Mixed_7c.branch3x3dbl_3b.conv.weight"].shape == (384, 384, 3, 1)
    assert sd["fc.weight"].shape == (1000, 2048) and "fc.bias" in sd
    assert not any(k.endswith("conv.bias") for k in sd)
    bns = [m for m in _v3().modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(bns) == 94 and all(bn.eps == 0.001 and bn.affine for bn in bns)


def test_inception_v3_output_shapes_at_299_and_75():
    model = _v3(299, num_classes=1000).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 299, 299)).shape == (1, 1000)
        assert _v3(75, num_classes=10).eval()(torch.randn(2, 3, 75, 75)).shape == (2, 10)
        assert _v3(75, num_classes=10).eval()(torch.randn(1, 3, 75, 90)).shape == (1, 10)


def test_inception_v3_feature_map_sizes():
    from rethink.models.inception_v3 import MIN_INPUT_SIZE, MIN_INPUT_SIZE_AUX, _valid, spatial_sizes

    assert spatial_sizes(299) == {"Mixed_5": 35, "Mixed_6": 17, "Mixed_7": 8}
    assert spatial_sizes(MIN_INPUT_SIZE)["Mixed_7"] == 1 and spatial_sizes(MIN_INPUT_SIZE - 1)["Mixed_7"] == 0
    assert _valid(spatial_sizes(MIN_INPUT_SIZE_AUX)["Mixed_6"], 5, 3) == 1
    assert _valid(spatial_sizes(MIN_INPUT_SIZE_AUX - 1)["Mixed_6"], 5, 3) == 0
    model = _v3(299).eval()
    x, sizes = torch.randn(1, 3, 299, 299), {}
    with torch.no_grad():
        for name, block in model.named_children():
            if name in ("AuxLogits", "dropout", "fc"):
                continue
            x = block(x)
            if name in ("Conv2d_2b_3x3", "Conv2d_4a_3x3"):
                x = F.max_pool2d(x, 3, stride=2)
            sizes[name] = tuple(x.shape[1:])
    assert sizes["Mixed_5d"] == (288, 35, 35)
    assert sizes["Mixed_6a"] == sizes["Mixed_6e"] == (768, 17, 17)
    assert sizes["Mixed_7a"] == (1280, 8, 8) and sizes["Mixed_7c"] == (2048, 8, 8)


def test_inception_v3_forward_backward_at_75():
    model = _v3(75)
    out = _train_step(model, torch.randn(2, 3, 75, 75))
    assert out.shape == (2, 10) and out.dtype == torch.float32
    for p in model.parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all()


@pytest.mark.parametrize("in_shape", [(3, 74, 74), (3, 75, 74), (3, 28, 28)])
def test_inception_v3_too_small_input_is_a_config_error(in_shape):
    with pytest.raises(ConfigError, match="at least 75x75") as excinfo:
        create_model("inception-v3", in_shape=in_shape)
    assert "299" in excinfo.value.hint


@pytest.mark.bf16
def test_inception_v3_channels_last_and_bf16():
    # looser than the CIFAR models: at 75x75 the Mixed_7 batch norms see 2 values per channel,
    # which amplifies the layouts' different summation order
    _assert_layouts_agree(_v3(75).double(), torch.randn(2, 3, 75, 75, dtype=torch.float64),
                          atol=1e-7, rtol=1e-4)
    model = _v3(75).to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 75, 75).contiguous(memory_format=torch.channels_last)
    out = _train_step(model, x, bf16=True)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out.float()).all()


def test_inception_v3_dropout_before_the_linear_layer():
    assert not any(isinstance(m, nn.Dropout) for m in _v3().modules())  # protocol default: off
    model = _v3(dropout=0.2)
    assert [m.p for m in model.modules() if isinstance(m, nn.Dropout)] == [0.2]
    assert list(dict(model.named_children()))[-2:] == ["dropout", "fc"]
    x = torch.randn(2, 3, 75, 75)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


def test_inception_v3_aux_logits_off_by_default_and_optional():
    from rethink.models.inception_v3 import InceptionOutputs, InceptionV3

    assert _v3().AuxLogits is None
    model = InceptionV3(in_shape=(3, 107, 107), num_classes=5, aux_logits=True)
    out = model(torch.randn(2, 3, 107, 107))
    assert isinstance(out, InceptionOutputs)
    assert out.logits.shape == out.aux_logits.shape == (2, 5)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 107, 107)).shape == (2, 5)  # eval: logits only
    with pytest.raises(ConfigError, match="auxiliary"):
        InceptionV3(in_shape=(3, 106, 106), aux_logits=True)


def test_inception_v3_average_pool_excludes_padding_as_tensorflow():
    from rethink.models.inception_v3 import _avg_pool_3x3

    assert torch.equal(_avg_pool_3x3(torch.ones(1, 2, 5, 5)), torch.ones(1, 2, 5, 5))


@pytest.mark.parametrize("scheme", ["glorot", "he"])
def test_inception_v3_initialization(scheme):
    from rethink.models import initialize

    model = _v3()
    before = model.Mixed_7c.branch1x1.conv.weight.detach().clone()
    initialize(model, scheme)  # convs have no bias: must not fail
    conv = model.Mixed_7c.branch1x1.conv  # 1x1, 2048 -> 320
    assert not torch.equal(conv.weight, before)
    fan_in, fan_out = 2048, 320
    expected = (2 / (fan_in + fan_out)) ** 0.5 if scheme == "glorot" else (2 / fan_in) ** 0.5
    assert abs(float(conv.weight.detach().std()) / expected - 1) < 0.05
    assert (model.fc.bias == 0).all()
    bn = model.Mixed_7c.branch1x1.bn
    assert (bn.weight == 1).all() and (bn.bias == 0).all()  # batch norm untouched
    _train_step(model, torch.randn(2, 3, 75, 75))
