"""Norms of a trained network: per-layer operator norms, path norm, margins, distance to init.

A network's weight layers are its `nn.Linear` and convolution modules, found by running one
input through it (so a convolution knows the input size it acts on). Every norm is of the
layer's *linear operator*, bias left out, as the bounds this module serves are stated:

- spectral norm ||A||_2: the largest singular value of the operator, padding and stride
  included. Linear layers: sqrt of the top eigenvalue of W W^T (or W^T W), equal to
  `torch.linalg.matrix_norm(ord=2)` to rounding and ~10x faster. Convolutions: Lanczos on A^T A
  (A^T by autograd) in float64 until the Ritz residual bounds the error below `tol` (exact to
  that tolerance; tests check it against the dense operator matrix at tiny sizes).
- Frobenius norm ||W||_F: of the weight tensor (kernel), as Neyshabur et al. (2017) and
  Jiang et al. (2020) use it.
- (2,1) norm ||A^T - M^T||_{2,1} (Bartlett, Foster & Telgarsky 2017): the sum, over output
  units, of the l2 norm of each unit's incoming weights in the operator matrix (a conv's
  border units have fewer taps); computed exactly by running the layer, weights squared, on
  an all-ones input.

Batch norm (eval mode, running statistics) is folded into the convolution before it, so the
norms describe the function the network computes; distance to initialization uses the raw
parameters that SGD moved.

Chains. Bartlett et al.'s bound is for a chain x -> s_L(A_L ... s_1(A_1 x)). A network is
treated as a chain when its leaf modules run one after another, each on exactly the tensor the
previous one returned (the MLPs and AlexNet; Inception's parallel branches and its mean pool in
`forward` are not). The non-linear leaves then need a Lipschitz constant rho (in l2):
ReLU, flatten, identity, dropout (eval): 1; max pooling k x k / stride s: sqrt(ceil(k/s)^2),
the number of windows one input can win (2 for AlexNet's overlapping 3x3/2 pools, attained);
local response normalization: 1, an approximation (its gain (k + a S(x^2))^-beta is at most 1
and it is the identity at 0, but its cross-channel terms are not bounded here).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from rethink.models.alexnet import MaxPool2dSame
from rethink.models.lrn import LocalResponseNorm

_WEIGHT_LAYERS = (nn.Linear, nn.modules.conv._ConvNd)


@dataclass(frozen=True)
class WeightLayer:
    """One linear/conv layer of a (batch-norm-folded) network, bias-free, in float64."""

    name: str  # module path, e.g. "net.1" or "features.0.conv"
    module: nn.Module  # a float64 copy with bias None: module(x) is the operator A x
    in_shape: tuple[int, ...]  # one example's input shape, e.g. (3, 28, 28) or (2352,)
    out_shape: tuple[int, ...]

    @property
    def weight(self) -> Tensor:
        return self.module.weight

    def apply(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """A x, or the operator with another weight tensor (same shape) applied to x."""
        if weight is None:
            return self.module(x)
        return torch.func.functional_call(self.module, {"weight": weight}, (x,))


# ---------------------------------------------------------------------------- batch norm folding


def _fold(conv: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    """conv <- bn(conv(.)) in eval mode: scale each output channel, shift the bias."""
    scale = 1.0 / torch.sqrt(bn.running_var + bn.eps)  # (C_out,)
    shift = -bn.running_mean * scale
    gamma, beta = getattr(bn, "weight", None), getattr(bn, "bias", None)  # None where not learned
    if gamma is not None:
        scale, shift = scale * gamma, shift * gamma
    if beta is not None:  # affine, or a shift alone (Inception's TF-slim batch norm)
        shift = shift + beta
    w = conv.weight.detach()
    conv.weight = nn.Parameter(w * scale.view(-1, *([1] * (w.dim() - 1))))
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(scale)
    conv.bias = nn.Parameter(bias * scale + shift)


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of `model` with every batch norm that follows a conv/linear folded into it.

    Recognized: a `.conv`/`.bn` pair of attributes (Inception's Conv module) and a conv or linear
    immediately followed by a batch norm inside an `nn.Sequential`. The batch norm becomes
    `nn.Identity`. A batch norm in any other place raises ValueError.
    """
    model = copy.deepcopy(model).eval()
    for parent in model.modules():
        conv, bn = getattr(parent, "conv", None), getattr(parent, "bn", None)
        if isinstance(conv, _WEIGHT_LAYERS) and isinstance(bn, nn.modules.batchnorm._BatchNorm):
            _fold(conv, bn)
            parent.bn = nn.Identity()
        if isinstance(parent, nn.Sequential):
            children = list(parent.named_children())
            for (_, a), (name_b, b) in zip(children, children[1:], strict=False):
                if isinstance(a, _WEIGHT_LAYERS) and isinstance(b, nn.modules.batchnorm._BatchNorm):
                    _fold(a, b)
                    setattr(parent, name_b, nn.Identity())
    left = [n for n, m in model.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if left:
        raise ValueError(f"cannot fold batch norm {left[0]!r}: it does not follow a conv or linear layer")
    return model


# ---------------------------------------------------------------------------- layers and chains


@dataclass(frozen=True)
class Trace:
    """What one forward pass of one example shows about a network's structure."""

    layers: list[WeightLayer]  # in call order
    leaves: list[tuple[str, nn.Module]]  # every leaf module in call order
    is_chain: bool  # see the module docstring


def trace(model: nn.Module, in_shape: Sequence[int]) -> Trace:
    """Find the weight layers (float64, bias-free copies) and whether the network is a chain.

    `model` should already be batch-norm folded (`fold_batchnorm`); it is run in eval mode on
    one zero input of `in_shape` (C, H, W), in float64 on a copy.
    """
    net = copy.deepcopy(model).double().eval().to(memory_format=torch.contiguous_format)
    names = {m: n for n, m in net.named_modules()}
    calls: list[tuple[nn.Module, Tensor, Tensor]] = []

    def hook(module: nn.Module, inputs: tuple, output: Tensor) -> None:
        calls.append((module, inputs[0], output))

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    x = torch.zeros(1, *in_shape, dtype=torch.float64)
    try:
        with torch.no_grad():
            out = net(x)
    finally:
        for h in handles:
            h.remove()

    chain = bool(calls) and calls[0][1] is x and calls[-1][2] is out
    chain = chain and all(calls[i][1] is calls[i - 1][2] for i in range(1, len(calls)))
    layers = []
    for module, inp, output in calls:
        if isinstance(module, _WEIGHT_LAYERS):
            op = copy.deepcopy(module)
            op.register_parameter("bias", None)
            op.weight.requires_grad_(False)
            layers.append(WeightLayer(names[module], op, tuple(inp.shape[1:]), tuple(output.shape[1:])))
    return Trace(layers, [(names[m], m) for m, _, _ in calls], chain)


def _pool_rho(m: nn.Module) -> float:
    def pair(v: int | tuple[int, int]) -> tuple[int, int]:
        return (v, v) if isinstance(v, int) else tuple(v)

    (kh, kw), (sh, sw) = pair(m.kernel_size), pair(m.stride or m.kernel_size)
    return math.sqrt(math.ceil(kh / sh) * math.ceil(kw / sw))


# Lipschitz constants (l2) of the non-linear leaves a chain may contain; see the module docstring.
LIPSCHITZ: dict[type, Callable[[nn.Module], float]] = {
    nn.ReLU: lambda m: 1.0,
    nn.Flatten: lambda m: 1.0,
    nn.Identity: lambda m: 1.0,
    nn.Dropout: lambda m: 1.0,
    nn.MaxPool2d: _pool_rho,
    MaxPool2dSame: _pool_rho,
    LocalResponseNorm: lambda m: 1.0,  # approximation, see above
    nn.LocalResponseNorm: lambda m: 1.0,
}


def chain_lipschitz_factors(tr: Trace) -> float | None:
    """The product of the non-linear leaves' Lipschitz constants, None if not a known chain."""
    if not tr.is_chain:
        return None
    rho = 1.0
    for _, m in tr.leaves:
        if isinstance(m, _WEIGHT_LAYERS):
            continue
        rule = LIPSCHITZ.get(type(m))
        if rule is None:
            return None
        rho *= rule(m)
    return rho


# ---------------------------------------------------------------------------- per-layer norms


def spectral_norm(layer: WeightLayer, *, tol: float = 1e-9, max_iter: int = 400, seed: int = 0) -> float:
    """||A||_2 of the layer's operator: exact for linear layers, Lanczos for convolutions."""
    if isinstance(layer.module, nn.Linear):
        w = layer.weight  # (out, in), float64
        gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w  # the smaller side; ~10x faster than SVD
        return math.sqrt(max(float(torch.linalg.eigvalsh(gram)[-1]), 0.0))
    return operator_norm(layer.apply, layer.in_shape, tol=tol, max_iter=max_iter, seed=seed)


def operator_norm(
    op: Callable[[Tensor], Tensor],
    in_shape: Sequence[int],
    *,
    tol: float = 1e-9,
    max_iter: int = 400,
    seed: int = 0,
) -> float:
    """Largest singular value of a linear map `op` on float64 tensors of shape (1, *in_shape).

    Lanczos on A^T A with full reorthogonalization; A^T comes from autograd (a vector-Jacobian
    product). Stops when the Ritz residual beta_k |s_k| is below tol * theta, which bounds the
    distance of theta to an eigenvalue of A^T A.
    """
    dim = math.prod(in_shape)
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(dim, generator=g, dtype=torch.float64)
    q /= q.norm()

    def gram(v: Tensor) -> Tensor:  # A^T A v; plain autograd (torch.func.vjp is ~100x slower here)
        v = v.view(1, *in_shape).detach().requires_grad_(True)
        with torch.enable_grad():
            y = op(v)
            (g,) = torch.autograd.grad(y, v, grad_outputs=y.detach())
        return g.reshape(-1)

    basis: list[Tensor] = []
    alphas: list[float] = []
    betas: list[float] = []
    theta = 0.0
    for _ in range(min(max_iter, dim)):
        basis.append(q)
        w = gram(q)
        alphas.append(float(w @ q))
        q_basis = torch.stack(basis)  # (k, dim)
        for _ in range(2):  # full reorthogonalization, twice is enough
            w = w - q_basis.T @ (q_basis @ w)
        beta = float(w.norm())
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t += torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(t)
        theta = float(evals[-1])
        if beta * abs(float(evecs[-1, -1])) <= tol * max(theta, 1e-300) or beta < 1e-12 * max(theta, 1.0):
            break
        betas.append(beta)
        q = w / beta
    return math.sqrt(max(theta, 0.0))


def frobenius_norm(layer: WeightLayer) -> float:
    return float(layer.weight.norm())


def two_one_norm(layer: WeightLayer, reference: Tensor | None = None) -> float:
    """||A^T - M^T||_{2,1}: sum over output units of the l2 norm of their weights in the operator."""
    w = layer.weight if reference is None else layer.weight - reference.to(layer.weight)
    ones = torch.ones(1, *layer.in_shape, dtype=torch.float64)
    with torch.no_grad():
        row_sq = layer.apply(ones, w * w)  # each output unit's sum of squared incoming weights
    return float(row_sq.clamp_min(0).sqrt().sum())


def max_units(layers: Sequence[WeightLayer]) -> int:
    """W in Bartlett et al.: the largest number of units (input or output) of any layer."""
    return max(max(math.prod(lay.in_shape), math.prod(lay.out_shape)) for lay in layers)


# ---------------------------------------------------------------------------- whole-network measures


def path_norm(model: nn.Module, in_shape: Sequence[int]) -> float:
    """l2 path norm (Neyshabur et al. 2015): sqrt of the sum of f_{w^2}(1) over the outputs.

    Every parameter (weights and biases, batch norm folded first) is squared, an all-ones input
    is run through in eval mode and float64, and the outputs are summed, as Jiang et al. (2020)
    compute it. Biases count as paths from a constant unit. Pooling stays as it is; local
    response normalization is removed (paths through a normalization are not defined).
    """
    net = fold_batchnorm(model).double()
    for name, m in list(net.named_modules()):
        if isinstance(m, (LocalResponseNorm, nn.LocalResponseNorm)):
            parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
            setattr(parent, name.rsplit(".", 1)[-1], nn.Identity())
    with torch.no_grad():
        for p in net.parameters():
            p.pow_(2)
        out = net(torch.ones(1, *in_shape, dtype=torch.float64))
    return math.sqrt(float(out.sum()))


def distance_to_init(model: nn.Module, init: nn.Module) -> float:
    """||theta - theta_0||_2 over all parameters (raw, as SGD moved them)."""
    own, ref = dict(model.named_parameters()), dict(init.named_parameters())
    if own.keys() != ref.keys():
        raise ValueError("model and initial model have different parameters")
    total = sum(float((own[k].detach().double() - ref[k].detach().double()).pow(2).sum()) for k in own)
    return math.sqrt(total)


@torch.no_grad()
def output_margins(model: nn.Module, x: Tensor, y: Tensor, batch: int = 1024) -> Tensor:
    """f(x)_y - max_{j != y} f(x)_j for every example, eval mode (negative = misclassified)."""
    model.eval()
    out = []
    for start in range(0, len(y), batch):
        logits = model(x[start : start + batch]).double()
        target = y[start : start + batch]
        true = logits.gather(1, target[:, None]).squeeze(1)
        other = logits.scatter(1, target[:, None], float("-inf")).amax(1)
        out.append(true - other)
    return torch.cat(out)


def margin_percentile(margins: Tensor, q: float = 10.0) -> float:
    """The q-th percentile (linear interpolation) of the margins; Jiang et al. (2020) use q = 10."""
    return float(torch.quantile(margins.double(), q / 100.0))
