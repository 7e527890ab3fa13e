"""Construction choices vs float64 precision, on all 50,000 CIFAR-10 images with random labels.

Run from the repository root (about 1 min of CPU, 1.5 GB):
    RETHINK_DATA=/path/to/data .venv/bin/python docs/results/theory/expressivity_ablation.py
Each row builds the network one way and evaluates it on the same 5,000 training points, once
with compensated and once with plain float64 output sums. Results: expressivity.md.
"""
import torch

from rethink.data.corruption import corrupt
from rethink.data.preprocess import center_crop
from rethink.data.sources import load_dataset
from rethink.theory.expressivity import (
    TwoLayerReLU,
    fit_two_layer,
    flatten_inputs,
    knots,
    solve_output_weights,
)

torch.set_num_threads(1)
raw = load_dataset("cifar10")
images = center_crop(raw.train_images.permute(0, 3, 1, 2), 28).permute(0, 2, 3, 1)
x = flatten_inputs(images)  # (50000, 2352) raw pixel values
labels = corrupt("random-labels", raw.train_images, raw.train_labels, raw.test_images, raw.test_labels,
                 num_classes=10, seed=0).train_labels
y = labels.double()
check = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:5000]  # evaluated points


def float_recurrence(p, b, y):
    """The textbook solve in float64: slopes by the recurrence, w = their differences."""
    pl, bl, yl = p.tolist(), b.tolist(), y.tolist()
    s = [yl[0] / (pl[0] - bl[0])]
    for i in range(len(pl) - 1):
        s.append((yl[i + 1] - yl[i] - s[i] * (bl[i + 1] - pl[i])) / (pl[i + 1] - bl[i + 1]))
    s = torch.tensor(s, dtype=torch.float64)
    return torch.cat([s[:1], s.diff()])


def measure(name, model):
    errors = {}
    for summation in ("compensated", "plain"):
        model.summation = summation
        errors[summation] = float((model(x[check]) - y[check]).abs().max())
    built = getattr(model, "construction_", None)
    p = (x @ model.a).sort().values
    sep = float((p[-1] - p[0]) / p.diff().min())
    print(f"| {name} | {sep:.2g} | {float(model.w.abs().max() * (p[-1] - p[0])):.2g} "
          f"| {errors['compensated']:.1e} | {errors['plain']:.1e} |"
          + (f" {built.seconds:.1f} s |" if built else " |"), flush=True)


print("| construction | range / smallest gap | max abs(w) x range | max error, compensated sum "
      "| max error, plain float64 sum | construction time |")
print("|---|---|---|---|---|---|")
default = fit_two_layer(x, y)
measure("default: best of 8 integer directions, knots at 1/8, exact solve", default)
measure("1 integer direction (no choice)", fit_two_layer(x, y, draws=1))
measure("knots at midpoints (1/2)", fit_two_layer(x, y, knot_fraction=0.5))
measure("knots at 1/64", fit_two_layer(x, y, knot_fraction=1 / 64))
p, order = (x @ default.a).sort()
w = float_recurrence(p, default.b, y[order])
measure("default a and b, float64 recurrence for w", TwoLayerReLU(default.a, default.b, w))
a = torch.randn(x.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
p, order = (x @ a).sort()
b = knots(p)
measure("Gaussian real a (inexact projections), knots at 1/8, exact solve",
        TwoLayerReLU(a, b, solve_output_weights(p, b, y[order])))
