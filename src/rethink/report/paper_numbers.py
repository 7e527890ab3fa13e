"""The paper's published numbers, as plain data (Tables 1, 2 and 4, and the theory section's numbers).

Accuracies are in percent, as the paper prints them. Nothing here is computed; the report
puts these beside our measurements. Model keys are the registry's names.
"""

from __future__ import annotations

from typing import NamedTuple

MODEL_NAMES = {
    "inception": "Inception",
    "inception-nobn": "Inception w/o BatchNorm",
    "alexnet": "AlexNet",
    "mlp3x512": "MLP 3x512",
    "mlp1x512": "MLP 1x512",
    "inception-v3": "Inception V3",
}

# Table 1's "# params" column (28x28x3 inputs).
PARAMS = {
    "inception": 1_649_402,
    "inception-nobn": 1_649_402,
    "alexnet": 1_387_786,
    "mlp3x512": 1_735_178,
    "mlp1x512": 1_209_866,
}

# (training images, test images) of the full data sets; the paper's numbers are CIFAR-10's.
DATASET_SIZES = {"cifar10": (50_000, 10_000), "mnist": (60_000, 10_000)}
PAPER_DATASET = "cifar10"
NUM_CLASSES = 10
CHANCE_ACC = 100.0 / NUM_CLASSES  # percent


class Table1Row(NamedTuple):
    model: str
    crop: bool
    weight_decay: bool
    random_labels: bool  # the grey "fitting random labels" rows (no crop, no weight decay)
    train_acc: float
    test_acc: float


# Table 1, every cell, in the paper's row order.
TABLE1 = (
    Table1Row("inception", True, True, False, 100.0, 89.05),
    Table1Row("inception", True, False, False, 100.0, 89.31),
    Table1Row("inception", False, True, False, 100.0, 86.03),
    Table1Row("inception", False, False, False, 100.0, 85.75),
    Table1Row("inception", False, False, True, 100.0, 9.78),
    Table1Row("inception-nobn", False, True, False, 100.0, 83.00),
    Table1Row("inception-nobn", False, False, False, 100.0, 82.00),
    Table1Row("inception-nobn", False, False, True, 100.0, 10.12),
    Table1Row("alexnet", True, True, False, 99.90, 81.22),
    Table1Row("alexnet", True, False, False, 99.82, 79.66),
    Table1Row("alexnet", False, True, False, 100.0, 77.36),
    Table1Row("alexnet", False, False, False, 100.0, 76.07),
    Table1Row("alexnet", False, False, True, 99.82, 9.86),
    Table1Row("mlp3x512", False, True, False, 100.0, 53.35),
    Table1Row("mlp3x512", False, False, False, 100.0, 52.39),
    Table1Row("mlp3x512", False, False, True, 100.0, 10.48),
    Table1Row("mlp1x512", False, True, False, 99.80, 50.39),
    Table1Row("mlp1x512", False, False, False, 100.0, 50.51),
    Table1Row("mlp1x512", False, False, True, 99.34, 10.61),
)


def table1_regularizer(crop: bool, weight_decay: bool) -> str:
    """Table 1's (random crop, weight decay) columns as the grids' regularizer label."""
    return {(True, True): "crop+wd", (True, False): "crop", (False, True): "wd"}.get(
        (crop, weight_decay), "none"
    )


class Table4Row(NamedTuple):
    model: str
    regularizer: str  # the grids' label
    train_acc: float | None  # None: the paper says it failed to converge
    text: str  # as the paper states it


# Table 4 (appendix E): random labels with one explicit regularizer, training accuracy.
TABLE4 = (
    Table4Row("inception", "wd", 100.0, "100%"),
    Table4Row("inception", "crop", 99.93, "99.93%"),
    Table4Row("inception", "flip+rotate", 99.28, "99.28%"),
    Table4Row("alexnet", "wd", None, "failed to converge"),
    Table4Row("mlp3x512", "wd", 100.0, "100%"),
    Table4Row("mlp1x512", "wd", 99.21, "99.21%"),
)

class Table2Row(NamedTuple):
    corruption: str  # "true" or "random-labels"
    regularizer: str  # the grids' label, e.g. "aug+dropout+wd"
    train_top1: str  # as the paper prints them; "(x)" is the best test accuracy during training
    train_top5: str
    test_top1: str
    test_top5: str


# Table 2 (appendix B): ImageNet, Inception V3, top-1 / top-5 accuracy (%). Cells we could only
# confirm from secondary sources, not the paper's text, carry a "?".
TABLE2 = (
    Table2Row("true", "aug+dropout+wd", "92.18", "99.21?", "77.84", "93.92"),
    Table2Row("true", "aug", "92.33", "99.17?", "72.95", "90.43"),
    Table2Row("true", "wd", "90.60", "100.0?", "67.18 (72.57)", "86.44 (90.48?)"),
    Table2Row("true", "none", "99.53", "100.0?", "59.80 (63.16)", "80.38 (84.49?)"),
    Table2Row("random-labels", "dropout+wd", "~91 (91.18?)", "97.95?", "0.09", "0.49?"),
    Table2Row("random-labels", "wd", "87.81?", "96.15?", "0.12", "0.50?"),
    Table2Row("random-labels", "none", "95.20", "99.14?", "0.11?", "0.56?"),
)

# Figure 1b: the slowdown is "a small constant factor"; no number is printed.
FIG1B_CLAIM = "grows with p, by a small constant factor"
# Figure 1c: test error rises steadily to chance at p = 1.
FIG1C_TEST_ERROR_AT_P1 = 90.0
# Section 3.1: BatchNorm's effect on generalization is "only 3~4%" (Table 1: 3.03 and 3.75).
BN_EFFECT = (3.03, 3.75)
# Section 3.1: "on the CIFAR10 dataset, we do not observe any potential benefit of early stopping".
EARLY_STOPPING_CIFAR10 = "no potential benefit of early stopping on CIFAR10"

# Section 5: test errors (%) of minimum-norm kernel interpolation on the full training sets, as
# printed (the printed digits are the paper's precision): (dataset, features, regularized).
KERNEL_TEST_ERROR = {
    ("mnist", "pixels", False): "1.2",
    ("mnist", "gabor", False): "0.6",
    ("cifar10", "pixels", False): "46",
    ("cifar10", "random-conv", False): "17",
    ("cifar10", "random-conv", True): "15",  # with an l2 penalty of unstated strength
}
KERNEL_FILTERS = 32_000  # Section 5's random convolutional network
# Section 2.2: networks fit random labels, so "we expect that R_n(H) ~ 1".
RADEMACHER = 1.0

REGULARIZER_NAMES = {
    "none": "none",
    "wd": "weight decay",
    "crop": "random crop",
    "crop+wd": "random crop + weight decay",
    "flip": "flip",
    "flip+rotate": "flip + rotation up to 25 degrees",
    "dropout": "dropout",
    # Table 2 (ImageNet): augmentation is crop + colour perturbation
    "aug+dropout+wd": "augmentation + dropout + weight decay",
    "aug": "augmentation",
    "dropout+wd": "dropout + weight decay",
}

CORRUPTION_NAMES = {
    "true": "true labels",
    "partial": "partially corrupted labels",
    "random-labels": "random labels",
    "shuffled-pixels": "shuffled pixels",
    "random-pixels": "random pixels",
    "gaussian": "Gaussian",
}


def paper_pct(x: float | None) -> str:
    """A paper accuracy as printed: 100.0, 89.05, 83.00 ('-' for none)."""
    if x is None:
        return "-"
    return "100.0" if x == 100 else f"{x:.2f}"


def model_name(model: str) -> str:
    return MODEL_NAMES.get(model, model)
