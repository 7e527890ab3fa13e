"""The paper's experiments as declarative grids of RunConfigs, and the presets that size them.

An experiment is a function `(preset, seeds) -> list[Point]`; a point is one RunConfig plus the
labels that place it in its table or figure. Labels always have the same keys:
  model, corruption ("true", "partial", "random-labels", pixel tests), p (label corruption, or
  None), regularizer ("none", "wd", "crop", "crop+wd", "dropout", "flip+rotate", ...), seed.
Experiments share runs: equal configs have equal run ids, so e.g. Table 1's random-label rows
and Figure 1b's p = 1 points are trained once.

Presets only size things (subsets, epoch budgets, which models); they never change the
protocol. Every reduction a preset makes is recorded with the sweep and shown in the report.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from rethink.config import RunConfig
from rethink.data.corruption import PIXEL_CORRUPTIONS
from rethink.errors import ConfigError

PAPER_MODELS = ("inception", "inception-nobn", "alexnet", "mlp3x512", "mlp1x512")
IMAGENET_MODEL = "inception-v3"  # Table 2's model
WIDTH_MODELS = ("cnn5", "resnet18k")  # double descent's width families (beyond the paper)
FIG1_MODELS = ("inception", "alexnet", "mlp1x512")  # Figure 1b/1c's models

# Coefficient and rate the paper does not state for CIFAR-10; ours, documented.
WEIGHT_DECAY = 5e-4
DROPOUT = 0.5
# Table 2 (ImageNet) reused TensorFlow's Inception V3 setup (the paper's appendix); TF-slim's
# inception_v3 defaults are weight decay 4e-5 and dropout keep_prob 0.8, and its training
# augmentation crops and perturbs brightness, saturation, hue and contrast (the paper's words).
IMAGENET_WEIGHT_DECAY = 4e-5
IMAGENET_DROPOUT = 0.2
IMAGENET_AUGMENT = ("crop", "color")
# TF's Inception trainer decays the rate x0.94 every 2 epochs: x0.94^(1/2) per epoch of the actual
# training set (the CIFAR-10 protocol's "per 50,000 samples" would decay 25x too fast on ImageNet).
# The initial rate is the model's registry value (0.045, TF's distributed Inception trainer).
IMAGENET_LR_DECAY = 0.94**0.5


@dataclass(frozen=True)
class Exclusion:
    """Points a preset leaves out: those matching every field ("*" matches anything)."""

    experiment: str
    model: str
    reason: str
    corruption: str = "*"
    regularizer: str = "*"

    def matches(self, point: Point) -> bool:
        labels = point.labels
        key = (point.experiment, labels["model"], labels["corruption"], labels["regularizer"])
        pattern = (self.experiment, self.model, self.corruption, self.regularizer)
        return all(p in ("*", k) for p, k in zip(pattern, key, strict=True))


@dataclass(frozen=True)
class DoubleDescentPlan:
    """How big the double-descent experiments are (beyond the paper).

    Random features (`double-descent-rff`, no training): Belkin, Hsu, Ma and Mandal (PNAS 2019),
    min-norm least squares on N features for N/n in `rff_ratios`. Trained widths
    (`double-descent-width`): Nakkiran et al. ("Deep double descent", ICLR 2020), width-k models
    trained with Adam at a constant rate 1e-4 for a fixed number of epochs (no stopping at the fit:
    their test error is read at the end, and per epoch), labels corrupted with the incorrect-only
    convention they use."""

    rff_datasets: tuple[str, ...] = ("mnist", "cifar10")
    rff_features: tuple[str, ...] = ("rff",)
    rff_train_size: int = 1_000
    rff_test_size: int = 2_000
    rff_ratios: tuple[float, ...] = (0.1, 0.25, 0.5, 0.75, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0, 3.0, 5.0, 10.0)
    rff_noise: tuple[float, ...] = (0.0, 0.2)
    models: tuple[str, ...] = ("cnn5", "resnet18k")
    widths: tuple[int, ...] = tuple(range(1, 65))
    noise: tuple[float, ...] = (0.0, 0.1, 0.2)
    train_size: int | None = None
    test_size: int | None = None
    input_size: int = 32  # Nakkiran et al. train on the 32x32 images
    epochs: int = 4_000  # their Adam runs: 4K epochs
    lr: float = 1e-4
    augment: tuple[str, ...] = ("crop", "flip")  # their standard augmentation
    train_eval: str = "full"  # "screen" saves the training-set pass (final train error stays exact)


@dataclass(frozen=True)
class MemorizationPlan:
    """How big the Feldman-Zhang memorization experiment is (beyond the paper): `runs` models per
    label-noise level, each trained (the paper's protocol, to its fit) on its own random
    `fraction` of the training split, with the same corrupted labels; then, from the clean level's
    scores, runs on the whole split less the `removal` most memorized examples, or as many random
    ones, `removal_seeds` each, beside runs with nothing removed."""

    model: str = "inception"
    width: int | None = None
    train_size: int | None = None
    test_size: int | None = None
    input_size: int = 28
    runs: int = 2_000
    fraction: float = 0.7
    noise: tuple[float, ...] = (0.0, 0.2)  # incorrect-only label noise; 0 gives the removal test
    max_epochs: int = 200
    epochs_past_fit: int = 0
    removal: float = 0.1  # the fraction of the split removed
    removal_seeds: int = 3


@dataclass(frozen=True)
class Preset:
    """How big each run of a sweep is. Nothing here changes the paper's protocol."""

    name: str
    description: str
    models: tuple[str, ...]  # the models this preset trains (experiments keep only these)
    train_size: dict[str, int | None]  # per model; None = the full training set
    test_size: dict[str, int | None]  # per model; None = the full test set
    max_epochs: dict[str, int]  # per model: the budget for fitting
    # "model:corruption" -> epochs, for the tests a model fits slowest (e.g. Gaussian pixels);
    # only those runs get the larger budget, every other run keeps its model's
    max_epochs_for: dict[str, int] = field(default_factory=dict)
    # "experiment:model" -> subset size, where one experiment of a model is sized apart from the
    # model's other experiments (e.g. the MLPs' Table 1 on all 50,000 images, their regularizer
    # study on 10,000 with more seeds)
    train_size_for: dict[str, int | None] = field(default_factory=dict)
    test_size_for: dict[str, int | None] = field(default_factory=dict)
    # seeds per model, and "experiment:model" overrides; `--seeds N` replaces all of them
    seeds: dict[str, int] = field(default_factory=dict)
    seeds_for: dict[str, int] = field(default_factory=dict)
    # One fit threshold for stopping (steps_to_fit) and for every "fits" verdict of the report:
    # the paper's own lowest reported fit of random labels is 99.21% (Table 4), 99.34% in Table 1.
    fit_threshold: float = 0.99
    # Figure 2b's runs train this many epochs past their fit, so the cumulative best test accuracy
    # can show what early stopping would gain (a run that stops at its fit shows ~0 by construction)
    early_stopping_epochs: int = 20
    fig1a_model: str = "inception"
    table2_input_size: int = 299  # Table 2's input resolution (pack the ImageNet folder at >= this)
    ps: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    dataset: str = "cifar10"
    precision: str = "fp32"
    experiments: tuple[str, ...] | None = None  # None = every experiment
    # points this preset leaves out to save time; the report lists each with its reason
    exclude: tuple[Exclusion, ...] = ()
    # beyond the paper: double descent and memorization (run only when named in --experiments)
    double_descent: DoubleDescentPlan = field(default_factory=DoubleDescentPlan)
    memorization: MemorizationPlan = field(default_factory=MemorizationPlan)

    def includes(self, point: Point) -> bool:
        return not any(e.matches(point) for e in self.exclude)

    def epochs_for(self, model: str, corruption: str) -> int:
        return self.max_epochs_for.get(f"{model}:{corruption}", self.max_epochs[model])

    def seeds_of(self, experiment: str, model: str) -> int:
        if experiment == "memorization":  # one model per subset: the estimator's m
            return self.memorization.runs
        return self.seeds_for.get(f"{experiment}:{model}", self.seeds.get(model, 1))

    def config(self, model: str, experiment: str = "", **fields: Any) -> RunConfig:
        key = f"{experiment}:{model}"
        return RunConfig(
            dataset=self.dataset,
            model=model,
            train_size=self.train_size_for.get(key, self.train_size.get(model)),
            test_size=self.test_size_for.get(key, self.test_size.get(model)),
            max_epochs=self.epochs_for(model, fields.get("corruption", "true")),
            precision=self.precision,
            fit_threshold=self.fit_threshold,
            **fields,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Point:
    experiment: str
    labels: dict[str, Any]
    config: RunConfig = field(compare=False)

    @property
    def run_id(self) -> str:
        return self.config.run_id


# ---------------------------------------------------------------- regularizers as config fields

REGULARIZERS: dict[str, dict[str, Any]] = {
    "none": {},
    "wd": {"weight_decay": WEIGHT_DECAY},
    "crop": {"augment": ("crop",)},
    "crop+wd": {"augment": ("crop",), "weight_decay": WEIGHT_DECAY},
    "flip": {"augment": ("flip",)},
    "flip+rotate": {"augment": ("flip", "rotate")},
    "dropout": {"dropout": DROPOUT},
}


def _corruption_fields(corruption: str, p: float | None) -> dict[str, Any]:
    """p = 0 is the true labels and p = 1 is random labels: the same runs as Table 1's."""
    if corruption == "partial" and p == 0:
        return {"corruption": "true"}
    if corruption == "partial" and p == 1:
        return {"corruption": "random-labels"}
    return {"corruption": corruption, "p": p if corruption == "partial" else None}


def _point(experiment: str, preset: Preset, seed: int, model: str, corruption: str = "true",
           p: float | None = None, regularizer: str = "none") -> Point:
    seeds = {"corruption_seed": seed, "init_seed": seed, "data_seed": seed}  # subset fixed: 0
    extra: dict[str, Any] = {}
    if corruption in PIXEL_CORRUPTIONS and "crop" in REGULARIZERS[regularizer].get("augment", ()):
        extra["corrupt_before_crop"] = True
    if experiment == "fig2b":
        extra["epochs_past_fit"] = preset.early_stopping_epochs
    config = preset.config(model, experiment, **_corruption_fields(corruption, p),
                           **REGULARIZERS[regularizer], **seeds, **extra)
    labels = {"model": model, "corruption": corruption, "p": p, "regularizer": regularizer,
              "seed": seed}
    return Point(experiment, labels, config)


# ---------------------------------------------------------------- the experiments

# Table 1's rows: (model, regularizers with true labels); each model also has a random-label row.
TABLE1_ROWS = {
    "inception": ("crop+wd", "crop", "wd", "none"),
    "inception-nobn": ("wd", "none"),
    "alexnet": ("crop+wd", "crop", "wd", "none"),
    "mlp3x512": ("wd", "none"),
    "mlp1x512": ("wd", "none"),
}
# Table 4 (appendix E): random labels with one regularizer on.
TABLE4_ROWS = {
    "inception": ("wd", "crop", "flip+rotate"),
    "alexnet": ("wd",),
    "mlp3x512": ("wd",),
    "mlp1x512": ("wd",),
}
# The regularization study on true labels: each explicit regularizer alone, and none.
REGULARIZER_STUDY = ("none", "wd", "crop", "dropout")
# Table 2 (ImageNet, Inception V3): (data augmentation, dropout, weight decay) per row, true
# labels then random labels, in the paper's order.
TABLE2_ROWS = {
    "true": ((True, True, True), (True, False, False), (False, False, True), (False, False, False)),
    "random-labels": ((False, True, True), (False, False, True), (False, False, False)),
}


def table2_regularizer(augment: bool, dropout: bool, weight_decay: bool) -> str:
    """Table 2's (aug, dropout, wd) columns as a regularizer label: 'aug+dropout+wd', ..., 'none'."""
    return "+".join(n for n, on in (("aug", augment), ("dropout", dropout), ("wd", weight_decay)) if on) \
        or "none"


def table1(preset: Preset, seed: int) -> list[Point]:
    points = []
    for model, rows in TABLE1_ROWS.items():
        points += [_point("table1", preset, seed, model, regularizer=r) for r in rows]
        points.append(_point("table1", preset, seed, model, "random-labels"))
    return points


def fig1a(preset: Preset, seed: int) -> list[Point]:
    return [
        _point("fig1a", preset, seed, preset.fig1a_model, corruption)
        for corruption in ("true", "random-labels", *PIXEL_CORRUPTIONS)
    ]


def _label_corruption(experiment: str, preset: Preset, seed: int, ps: tuple[float, ...]) -> list[Point]:
    return [_point(experiment, preset, seed, m, "partial", p) for m in FIG1_MODELS for p in ps]


def fig1b(preset: Preset, seed: int) -> list[Point]:
    return _label_corruption("fig1b", preset, seed, preset.ps)


def fig1c(preset: Preset, seed: int) -> list[Point]:
    return _label_corruption("fig1c", preset, seed, preset.ps)


def memorization_order(preset: Preset, seed: int) -> list[Point]:
    partial = tuple(p for p in preset.ps if 0 < p < 1)
    return _label_corruption("memorization-order", preset, seed, partial)


def fig2b(preset: Preset, seed: int) -> list[Point]:
    return [_point("fig2b", preset, seed, m) for m in ("inception", "inception-nobn")]


def table4(preset: Preset, seed: int) -> list[Point]:
    return [
        _point("table4", preset, seed, model, "random-labels", regularizer=r)
        for model, rows in TABLE4_ROWS.items()
        for r in rows
    ]


def table2(preset: Preset, seed: int) -> list[Point]:
    """The paper's ImageNet table: Inception V3 with its regularizers toggled, and random labels."""
    if preset.dataset in ("cifar10", "mnist"):
        raise ConfigError(f"table2 is the paper's ImageNet experiment, not one for {preset.dataset}",
                          "pass --dataset packed:DIR (see `rethink pack`) or folder:DIR")
    points = []
    for corruption, rows in TABLE2_ROWS.items():
        for augment, dropout, weight_decay in rows:
            fields = {
                "augment": IMAGENET_AUGMENT if augment else (),
                "dropout": IMAGENET_DROPOUT if dropout else 0.0,
                "weight_decay": IMAGENET_WEIGHT_DECAY if weight_decay else 0.0,
            }
            config = preset.config(IMAGENET_MODEL, "table2", corruption=corruption,
                                   input_size=preset.table2_input_size,
                                   lr_decay=IMAGENET_LR_DECAY, decay_samples=None,
                                   corruption_seed=seed, init_seed=seed, data_seed=seed, **fields)
            labels = {"model": IMAGENET_MODEL, "corruption": corruption, "p": None,
                      "regularizer": table2_regularizer(augment, dropout, weight_decay), "seed": seed}
            points.append(Point("table2", labels, config))
    return points


def _noise_fields(p: float) -> dict[str, Any]:
    """Label noise as the double-descent and memorization studies corrupt: a fraction p of the
    training labels changed to another class (incorrect-only), p = 0 the true labels."""
    if p == 0:
        return {"corruption": "true"}
    return {"corruption": "partial", "p": p, "label_noise": "incorrect-only"}


def double_descent_rff(preset: Preset, seed: int) -> list[Point]:
    """No training runs: the random-feature fits run after the sweep's training
    (`rethink.experiments.beyond`), from the preset's `double_descent` plan."""
    return []


def double_descent_width(preset: Preset, seed: int) -> list[Point]:
    """Nakkiran et al.'s width sweeps: each width k of each model at each label-noise level,
    trained with Adam at a constant rate for a fixed number of epochs."""
    plan = preset.double_descent
    points = []
    for model in plan.models:
        for p in plan.noise:
            for k in plan.widths:
                config = RunConfig(
                    dataset=preset.dataset, model=model, width=k, train_size=plan.train_size,
                    test_size=plan.test_size, input_size=plan.input_size, **_noise_fields(p),
                    optimizer="adam", lr=plan.lr, lr_decay=1.0, init="torch", augment=plan.augment,
                    max_epochs=plan.epochs, stop_at_fit=False, fit_threshold=preset.fit_threshold,
                    precision=preset.precision, train_eval=plan.train_eval,
                    corruption_seed=seed, init_seed=seed, data_seed=seed)
                labels = {"model": model, "corruption": "partial", "p": p,
                          "regularizer": "+".join(plan.augment) or "none", "seed": seed, "width": k}
                points.append(Point("double-descent-width", labels, config))
    return points


def memorization_config(preset: Preset, p: float, **fields: Any) -> RunConfig:
    """A run of the memorization study: the plan's model and sizes, the paper's protocol, label
    noise p drawn once (corruption seed 0) for every run."""
    plan = preset.memorization
    return RunConfig(dataset=preset.dataset, model=plan.model, width=plan.width, train_size=plan.train_size,
                     test_size=plan.test_size, input_size=plan.input_size, **_noise_fields(p),
                     max_epochs=plan.max_epochs, epochs_past_fit=plan.epochs_past_fit,
                     fit_threshold=preset.fit_threshold, precision=preset.precision, **fields)


def memorization(preset: Preset, seed: int) -> list[Point]:
    """Feldman and Zhang's subset runs: run `seed` of each noise level trains on its own random
    fraction of the training split (drawn from its data seed)."""
    plan = preset.memorization
    return [
        Point("memorization", {"model": plan.model, "corruption": "partial", "p": p, "regularizer": "none",
                               "seed": seed},
              memorization_config(preset, p, train_fraction=plan.fraction, init_seed=seed, data_seed=seed))
        for p in plan.noise
    ]


def regularizers(preset: Preset, seed: int) -> list[Point]:
    return [
        _point("regularizers", preset, seed, model, regularizer=r)
        for model in PAPER_MODELS
        for r in REGULARIZER_STUDY
    ]


EXPERIMENTS: dict[str, Callable[[Preset, int], list[Point]]] = {
    "table1": table1,
    "fig1a": fig1a,
    "fig1b": fig1b,
    "fig1c": fig1c,
    "memorization-order": memorization_order,
    "fig2b": fig2b,
    "table4": table4,
    "regularizers": regularizers,
    "table2": table2,
    "double-descent-rff": double_descent_rff,
    "double-descent-width": double_descent_width,
    "memorization": memorization,
}
# Beyond the paper: double descent (Belkin et al. 2019, Nakkiran et al. 2020) and per-example
# memorization (Feldman and Zhang 2020), run only when named.
BEYOND_EXPERIMENTS = ("double-descent-rff", "double-descent-width", "memorization")
# What a sweep runs unless --experiments says otherwise: the paper's CIFAR-10 experiments. Table 2
# needs an ImageNet(-like) dataset, so it is only run when named.
DEFAULT_EXPERIMENTS = tuple(e for e in EXPERIMENTS if e != "table2" and e not in BEYOND_EXPERIMENTS)


# ---------------------------------------------------------------- presets


def _per_model(value: Any, **overrides: Any) -> dict[str, Any]:
    table = dict.fromkeys((*PAPER_MODELS, IMAGENET_MODEL), value)
    table.update({k.replace("_", "-"): v for k, v in overrides.items()})
    return table


_SLOW_INCEPTION = "Inception trains ~100 images/s on 2 CPU cores; AlexNet and the MLPs carry this"
_SLOW_NOBN = (
    "without batch norm Inception leaves the 2.30 loss plateau slowly at the paper's learning rate 0.1: "
    "16.0% train accuracy on random labels after 60 epochs (240 steps) of 500 images in our first cpu "
    "run, far from fitting within this preset's time (He initialization instead diverges at step 7)"
)

PRESETS: dict[str, Preset] = {
    "smoke": Preset(
        name="smoke",
        description="every experiment on a tiny slice (CI): checks the machinery, not the science",
        models=(*PAPER_MODELS, IMAGENET_MODEL, "cnn5"),
        train_size=_per_model(100),
        test_size=_per_model(100),
        max_epochs=_per_model(2),
        ps=(0.0, 0.5, 1.0),
        table2_input_size=75,  # Inception V3's smallest input
        double_descent=DoubleDescentPlan(
            rff_datasets=("mnist",), rff_train_size=100, rff_test_size=100, rff_ratios=(0.5, 1.0, 2.0),
            models=("cnn5",), widths=(1, 2), noise=(0.0, 0.2), train_size=100, test_size=100, epochs=2,
            augment=()),
        memorization=MemorizationPlan(model="mlp1x512", train_size=100, test_size=100, runs=4,
                                      max_epochs=2, removal_seeds=1),
    ),
    "demo": Preset(
        name="demo",
        description="the headline phenomena with MLP 1x512 on 10,000 real CIFAR-10 images",
        models=("mlp1x512",),
        train_size=_per_model(10_000),
        test_size=_per_model(None),
        max_epochs=_per_model(60),
        fig1a_model="mlp1x512",
        experiments=("table1", "fig1a", "fig1b", "fig1c", "memorization-order"),
    ),
    "cpu": Preset(
        name="cpu",
        description="every experiment sized for a 2-core CPU in about 3 hours (AVX-512/AMX class, fp32; "
        "about 4x that where fp32 is AVX2 only): the MLPs' Table 1 and Figure 1b/1c on all 50,000 "
        "images, AlexNet and Inception on subsets, several seeds where a run costs minutes",
        models=(*PAPER_MODELS, "cnn5"),
        # MLPs: the paper's 50,000 images (2-4 s per epoch here); AlexNet ~4 s per epoch at 2,500;
        # Inception ~10 s per epoch at 500 (100 images/s), the largest subsets that fit the hours
        train_size=_per_model(2_500, mlp1x512=None, mlp3x512=None, inception=500, inception_nobn=500),
        # full test set for the MLPs (binomial 95% interval +-1 point at 50%); 2,000 for AlexNet
        # (+-2.2), 1,000 for Inception (+-3.1): evaluation is a third of an epoch's time
        test_size=_per_model(2_000, mlp1x512=None, mlp3x512=None, inception=1_000, inception_nobn=1_000),
        max_epochs=_per_model(60, mlp1x512=100, mlp3x512=100),
        # AlexNet fits random and Gaussian pixels more slowly than labels (98.2% and 92.8% train
        # accuracy after 60 epochs in an earlier run): those two runs get 150
        max_epochs_for={"alexnet:random-pixels": 150, "alexnet:gaussian": 150},
        # The MLPs' regularizer study and Table 4 rows on 10,000 images with 3 seeds: a run is ~30 s
        train_size_for={"regularizers:mlp1x512": 10_000, "regularizers:mlp3x512": 10_000,
                        "table4:mlp1x512": 10_000, "table4:mlp3x512": 10_000},
        # Seeds where a verdict compares runs and the runs are cheap enough for a spread: Figure
        # 1a's starts (AlexNet, 2), Figure 2b's batch norm and early stopping (Inception, 2), the
        # MLPs' Table 1 (2) and their regularizer study and Table 4 on 10,000 images (3). One seed
        # elsewhere: AlexNet's Table 1 comparisons would need 3+ seeds to be judged (with 2, the t
        # quantile is 12.7), and the trend tests of Figure 1b/1c run over seeds x p values.
        seeds=_per_model(1, mlp1x512=2, mlp3x512=2),
        seeds_for={"fig1b:mlp1x512": 1, "fig1c:mlp1x512": 1, "memorization-order:mlp1x512": 1,
                   "fig1a:alexnet": 2,
                   "regularizers:mlp1x512": 3, "regularizers:mlp3x512": 3,
                   "table4:mlp1x512": 3, "table4:mlp3x512": 3,
                   "fig2b:inception": 2, "fig2b:inception-nobn": 2},
        fig1a_model="alexnet",
        # Inception trains ~100 images/s here: it trains Table 1, Figure 2b and Table 4's
        # weight-decay row; the p sweeps and the regularizer study use AlexNet and the MLPs.
        exclude=(
            *(Exclusion(e, "inception", _SLOW_INCEPTION) for e in ("fig1b", "fig1c", "memorization-order")),
            Exclusion("table4", "inception", _SLOW_INCEPTION, regularizer="crop"),
            Exclusion("table4", "inception", _SLOW_INCEPTION, regularizer="flip+rotate"),
            Exclusion("regularizers", "inception", _SLOW_INCEPTION),
            Exclusion("regularizers", "inception-nobn", _SLOW_INCEPTION),
            Exclusion("table1", "inception-nobn", _SLOW_NOBN, corruption="random-labels"),
        ),
        # Beyond the paper, about 1.5 h on the Xeon class with two 1-thread Ray workers (summed run
        # times in docs/results/beyond). Random features on 1,000 images (a min-norm solve per N/n:
        # seconds). The 5-layer CNN on 1,000 CIFAR-10 images (1,000 test) at 8 widths up to 24
        # (theirs: 1-64 on 50,000), 200 epochs of Adam 1e-4 (theirs: 4,000), without augmentation
        # (they find double descent without it too), at 0%, 10% and 20% label noise: ~45
        # min of run time per level (k = 24 alone ~16); k = 8 fits 94% of 20%-noisy labels in 150
        # epochs. Memorization with
        # MLP 1x512 (the fastest model that fits: 1,750 images in ~10 epochs, 2 s) on 2,500 images,
        # 64 subset runs per noise level (theirs: 2,000-4,000 ResNets), the full test set for the
        # influence estimates and the removal test.
        double_descent=DoubleDescentPlan(
            models=("cnn5",), widths=(1, 2, 4, 6, 8, 12, 16, 24), train_size=1_000, test_size=1_000,
            epochs=200, augment=(), train_eval="screen"),
        memorization=MemorizationPlan(model="mlp1x512", train_size=2_500, test_size=None, runs=64,
                                      max_epochs=100, removal_seeds=5),
    ),
    "paper": Preset(
        name="paper",
        description="the paper's full scale: all 50,000 images, all models (for GPUs); with "
        "--experiments table2 --dataset packed:DIR, Table 2 on ImageNet with Inception V3",
        models=(*PAPER_MODELS, IMAGENET_MODEL, *WIDTH_MODELS),
        train_size=_per_model(None),
        test_size=_per_model(None),
        # ImageNet epochs are 25x CIFAR-10's: 100 of them is TF-slim Inception's order of magnitude
        max_epochs=_per_model(300, inception_v3=100),
        # the published grids: widths 1-64 of both families for 4,000 epochs with augmentation;
        # 2,000 subset models per noise level (Feldman and Zhang use 2,000-4,000), the paper's
        # Inception and protocol
        double_descent=DoubleDescentPlan(),
        memorization=MemorizationPlan(model="inception", runs=2_000, max_epochs=100),
    ),
}


def build_points(
    preset: Preset,
    experiments: tuple[str, ...] | None = None,
    models: tuple[str, ...] | None = None,
    seeds: int | None = None,
) -> list[Point]:
    """Every point of the chosen experiments, narrowed to the chosen models, for each seed (the
    preset's seeds per model and experiment, or `seeds` for all)."""
    chosen = experiments or preset.experiments or DEFAULT_EXPERIMENTS
    unknown = [e for e in chosen if e not in EXPERIMENTS]
    if unknown:
        raise ConfigError(f"unknown experiment(s) {', '.join(unknown)}",
                          f"choose from {', '.join(EXPERIMENTS)}")
    keep = models or preset.models
    known = (*PAPER_MODELS, IMAGENET_MODEL, *WIDTH_MODELS)
    bad = [m for m in keep if m not in known]
    if bad:
        raise ConfigError(f"unknown model(s) {', '.join(bad)} for these experiments",
                          f"choose from {', '.join(known)}")
    if seeds is not None and seeds < 1:
        raise ConfigError(f"--seeds {seeds} must be at least 1", "pass --seeds 1 or more")

    def wanted(point: Point) -> bool:
        model = point.labels["model"]
        n = seeds if seeds is not None else preset.seeds_of(point.experiment, model)
        return model in keep and preset.includes(point) and point.labels["seed"] < n

    runs = [preset.memorization.runs] if "memorization" in chosen else []
    most = seeds or max([*preset.seeds.values(), *preset.seeds_for.values(), *runs, 1])
    points = [
        point
        for seed in range(most)
        for name in chosen
        for point in EXPERIMENTS[name](preset, seed)
        if wanted(point)
    ]
    for point in points:
        point.config.validate()
    return points


def sweep_id(preset: Preset, options: dict[str, Any]) -> str:
    text = json.dumps({"preset": preset.to_dict(), "options": options}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
