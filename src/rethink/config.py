"""RunConfig: everything that decides what one training run computes, as one frozen dataclass.

The run id is a hash of this config (seeds included), so equal configs share results and a
rerun resumes or skips instead of starting over. Where the paper is silent the defaults below
are our choices; the comment on each says which, and every one of them is a field.
Everything that does not change the numbers (output directory, data directory, progress
output) stays out of the config and out of the id.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Any

from rethink import options
from rethink.data.corruption import CORRUPTIONS, GAUSSIAN_STATS, LABEL_NOISE_CONVENTIONS, PIXEL_CORRUPTIONS
from rethink.errors import ConfigError
from rethink.options import integers, non_negative_int, option, positive_int, word_or

# rotate: uniform in +-25 degrees (Table 4); color: the ImageNet perturbation of brightness,
# saturation, hue and contrast (Table 2; TF-slim's constants, rethink.data.preprocess.random_color)
AUGMENTATIONS = ("crop", "flip", "rotate", "color")
PRECISIONS = ("fp32", "bf16")
TRAIN_EVALS = ("full", "screen")

# Fields added after results were stored: at these values they are left out of the config's JSON
# (and so of its run id), so runs stored before the field existed keep their identity.
OMIT_AT_DEFAULT = {"train_eval": "full", "width": None, "optimizer": "sgd", "train_fraction": 1.0,
                   "exclude": []}
OPTIMIZERS = ("sgd", "adam")
CIFAR10_TRAIN_SIZE = 50_000  # the paper's epoch, the unit of the default decay schedule


# the help sections of `rethink run`
DATA, MODEL, BUDGET = ("data and randomization test", "model and optimization (paper protocol by default)",
                       "budget and seeds")


@dataclass(frozen=True)
class RunConfig:
    # data
    dataset: str = option("cifar10", "cifar10, mnist, folder:PATH, idx:PATH or packed:DIR", group=DATA)
    train_size: int | None = option(None, "stratified, seeded training subset (default: all)", group=DATA,
                                    parse=positive_int)
    test_size: int | None = option(None, "stratified test subset (default: all)", group=DATA,
                                   parse=positive_int)
    # the paper's centre crop 32 -> 28 for CIFAR-10
    input_size: int = option(28, "centre-crop size", group=DATA, parse=positive_int)

    # the randomization test
    corruption: str = option("true", "the randomization test", group=DATA, choices=tuple(CORRUPTIONS))
    p: float | None = option(None, "label corruption probability (partial only)", group=DATA)
    # the paper's convention: uniform over all K classes
    label_noise: str = option("uniform", "partial: how a corrupted label is drawn", group=DATA,
                              choices=LABEL_NOISE_CONVENTIONS)
    gaussian_stats: str = option("per-channel", "gaussian: the mean and variance matched", group=DATA,
                                 choices=GAUSSIAN_STATS)
    # pixel tests after the centre crop unless asked
    corrupt_before_crop: bool = option(False, "apply pixel tests at full resolution, before the crop",
                                       group=DATA)

    # model
    model: str = option("mlp1x512", "see `rethink models`", group=MODEL)
    dropout: float = option(0.0, "dropout rate (off by default)", group=MODEL)
    # the k of a width family (cnn5, resnet18k: double descent); None = the model's own size
    width: int | None = option(None, "width k of a width-family model (default: its standard k)",
                               group=MODEL, parse=positive_int)
    # The paper is silent; its code was TensorFlow, whose layers default to Glorot-uniform
    # weights and zero biases. "torch" (PyTorch's layer defaults) and "he" are switches. With
    # torch's defaults Inception w/o BatchNorm does not train at lr 0.1; with He it diverges.
    init: str = option("glorot", "weight initialization: glorot (TensorFlow's default), torch or he",
                       group=MODEL)

    # optimization: the paper's protocol (SGD with momentum); Adam for the double-descent runs,
    # as Nakkiran et al. train them (same learning-rate schedule fields, momentum unused)
    optimizer: str = option("sgd", "sgd (the paper's, with momentum) or adam", group=MODEL,
                            choices=OPTIMIZERS)
    lr: float | None = option(None, "initial learning rate (default: the model's paper value, 0.1 "
                                    "Inception, 0.01 others)", group=MODEL)
    momentum: float = option(0.9, "SGD momentum", group=MODEL)
    lr_decay: float = option(0.95, "learning-rate decay factor", group=MODEL)
    # x0.95 per 50,000 training samples seen, i.e. per CIFAR-10 epoch, so a subset gets the
    # paper's schedule per step; None = per epoch of the actual (possibly smaller) training set
    decay_samples: int | None = option(
        CIFAR10_TRAIN_SIZE, "apply the decay per N training samples seen, or per epoch of the actual "
        "training set (equal on full CIFAR-10)", group=MODEL, flag="decay-per", metavar="epoch|N",
        parse=word_or("epoch", positive_int))
    batch_size: int = option(128, "minibatch size", group=MODEL, parse=positive_int)
    # explicit regularizers are all off by default, as in the paper's unregularized rows
    weight_decay: float = option(0.0, "L2 coefficient (off by default)", group=MODEL)
    augment: tuple[str, ...] = option((), "comma list of augmentations (off by default); color is "
                                          "ImageNet's colour perturbation", group=MODEL,
                                      choices=AUGMENTATIONS)

    # Which examples of the (corrupted) training split a run trains on. train_fraction < 1 keeps a
    # seeded random subset of that size (from the data seed's own stream: Feldman and Zhang's
    # memorization estimator trains each model on 70%); exclude drops the listed examples (indices
    # into the split, e.g. the most memorized). Corruption is drawn before either, so runs with
    # different subsets share the same corrupted labels.
    train_fraction: float = option(1.0, "train on this seeded random fraction of the training split",
                                   group=DATA)
    exclude: tuple[int, ...] = option((), "comma list of training-split indices left out of training",
                                      group=DATA, parse=integers)

    # budget and stopping
    max_epochs: int = option(100, "epoch budget", group=BUDGET, parse=positive_int)
    # steps_to_fit: first eval with full-train accuracy >= this
    fit_threshold: float = option(1.0, "full-train accuracy that counts as fitted (steps_to_fit)",
                                  group=BUDGET)
    stop_at_fit: bool = option(True, "stop training once fitted", group=BUDGET)
    # With stop_at_fit, keep training this many epochs after the fit: what early stopping could
    # gain (best minus final test accuracy) is only visible on a run that goes on past its fit.
    epochs_past_fit: int = option(0, "with --stop-at-fit, train this many epochs past the fit "
                                     "(early-stopping gain)", group=BUDGET, parse=non_negative_int)

    # the command line's "auto" is resolved per machine (rethink.machine.resolve_precision)
    precision: str = option("fp32", "bf16 autocast or fp32; auto: bf16 where the device has it natively",
                            group=MODEL, choices=PRECISIONS, cli_default="auto")
    # The eval-mode pass over the training set after each epoch. "full": every example, every
    # epoch (exact per-epoch learning curves). "screen": examples that were wrong last time go
    # first, and the pass stops once more are wrong than the fit threshold allows: such an epoch
    # certainly did not fit, and its row stores no train loss/accuracy. A complete pass (every
    # fitting epoch, and the last epoch) is the full one, so steps_to_fit is the same in both.
    train_eval: str = option("full", "per-epoch eval-mode pass over the training set: every example "
                                     "(full), or stop once the epoch certainly did not fit (screen: same "
                                     "steps_to_fit, cheaper epochs)", group=MODEL, choices=TRAIN_EVALS)

    # independent seeds, so that changing one does not change the others: which labels/pixels
    # are randomized, the initial weights, the data order (and augmentation, dropout);
    # subset_seed picks the --train-size subset, kept apart so that runs differing in corruption
    # still see the same images
    corruption_seed: int = option(0, "which labels/pixels are randomized",
                                  group=BUDGET, parse=non_negative_int)
    init_seed: int = option(0, "the initial weights",
                            group=BUDGET, parse=non_negative_int)
    data_seed: int = option(0, "the data order, augmentation and dropout",
                            group=BUDGET, parse=non_negative_int)
    subset_seed: int = option(0, "which images a --train-size/--test-size subset keeps",
                              group=BUDGET, parse=non_negative_int)

    # Raised when a change to rethink makes an equal config compute other numbers, so that a store
    # never mixes the two under one run id. 2: every seed drives a stream of its own
    # (`rethink.seeds.derive_seed(seed, purpose)`), Inception in TF-slim's form.
    protocol: int = dataclasses.field(default=2, metadata={"flag": None})  # not a run option

    def __post_init__(self) -> None:
        object.__setattr__(self, "augment", tuple(sorted(set(self.augment))))
        object.__setattr__(self, "exclude", tuple(sorted(set(self.exclude))))

    # ------------------------------------------------------------------ identity

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["augment"] = list(self.augment)
        d["exclude"] = list(self.exclude)
        for key, legacy in OMIT_AT_DEFAULT.items():
            if d[key] == legacy:
                del d[key]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    @property
    def run_id(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"unknown config key(s) {', '.join(unknown)}", f"known keys: {', '.join(sorted(known))}"
            )
        values = dict(values)
        for key in ("augment", "exclude"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ validation

    def validate(self) -> RunConfig:
        """Check every field before any data is touched; raise ConfigError on the first problem."""
        from rethink.models import get_model_info  # late: models import torch-heavy modules

        _check_choice("corruption", self.corruption, tuple(CORRUPTIONS))
        _check_choice("label noise", self.label_noise, LABEL_NOISE_CONVENTIONS)
        _check_choice("gaussian statistics", self.gaussian_stats, GAUSSIAN_STATS)
        _check_choice("precision", self.precision, PRECISIONS)
        _check_choice("train evaluation", self.train_eval, TRAIN_EVALS)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        for name in self.augment:
            _check_choice("augmentation", name, AUGMENTATIONS)
        info = get_model_info(self.model)  # unknown model -> ConfigError listing known ones
        from rethink.models.registry import INITS

        _check_choice("initialization", self.init, tuple(INITS))

        if self.corruption == "partial":
            if self.p is None:
                raise ConfigError("corruption 'partial' needs a probability", "pass --p, e.g. --p 0.4")
            if not (isinstance(self.p, (int, float)) and math.isfinite(self.p) and 0 <= self.p <= 1):
                raise ConfigError(f"p={self.p} is outside [0, 1]", "pass --p between 0 and 1")
        elif self.p is not None:
            raise ConfigError(f"--p only applies to 'partial', not {self.corruption!r}", "drop --p")

        for name in ("train_size", "test_size", "decay_samples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ConfigError(f"{name}={value} must be a positive integer", f"fix --{option_flag(name)}")
        for name in ("input_size", "batch_size", "max_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ConfigError(f"{name}={value} must be a positive integer", f"fix --{option_flag(name)}")
        if not isinstance(self.epochs_past_fit, int) or self.epochs_past_fit < 0:
            raise ConfigError(f"epochs_past_fit={self.epochs_past_fit} must be a non-negative integer",
                              "fix --epochs-past-fit")
        _check_range("lr", self.lr, 0, math.inf, allow_none=True, open_low=True)
        _check_range("momentum", self.momentum, 0, 1)
        _check_range("lr_decay", self.lr_decay, 0, 1, open_low=True)
        _check_range("weight_decay", self.weight_decay, 0, math.inf)
        _check_range("dropout", self.dropout, 0, 1, open_high=True)
        _check_range("fit_threshold", self.fit_threshold, 0, 1, open_low=True)
        _check_range("train_fraction", self.train_fraction, 0, 1, open_low=True)
        if any(not isinstance(i, int) or i < 0 for i in self.exclude):
            raise ConfigError(f"exclude {self.exclude} must list non-negative indices", "fix --exclude")
        if self.width is not None and info.default_width is None:
            from rethink.models.registry import width_families

            raise ConfigError(f"model {self.model!r} has no width",
                              f"drop --width, or use one of: {', '.join(width_families())}")
        if self.width is not None and (not isinstance(self.width, int) or self.width < 1):
            raise ConfigError(f"width={self.width} must be a positive integer", "fix --width")
        if self.dropout > 0 and not info.supports_dropout:
            raise ConfigError(f"model {self.model!r} has no dropout option", "drop --dropout")
        for name in ("corruption_seed", "init_seed", "data_seed", "subset_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ConfigError(f"{name}={value} must be a non-negative integer",
                                  f"fix --{option_flag(name)}")
        if "color" in self.augment and self.corruption == "gaussian":
            raise ConfigError("color augmentation clips pixels to [0, 1], which would change the Gaussian "
                              "noise's distribution", "drop color from --augment")
        pixel_test = self.corruption in PIXEL_CORRUPTIONS
        if "crop" in self.augment and pixel_test and not self.corrupt_before_crop:
            raise ConfigError(
                f"random-crop augmentation with {self.corruption!r} needs the pixels corrupted "
                "at full resolution",
                "add --corrupt-before-crop",
            )
        return self

    @property
    def effective_lr(self) -> float:
        from rethink.models import get_model_info

        return self.lr if self.lr is not None else get_model_info(self.model).default_lr


def lr_at(config: RunConfig, epoch: int, train_size: int) -> float:
    """Learning rate for the given (0-based) epoch: lr0 * decay^(samples seen / decay period).

    With decay_samples=None the period is one epoch of the actual training set, otherwise it is
    `decay_samples` training samples (default 50,000: one CIFAR-10 epoch). On the full CIFAR-10
    training set both are exactly the paper's x0.95 per epoch.
    """
    period = config.decay_samples or train_size
    return config.effective_lr * config.lr_decay ** (epoch * train_size / period)


def option_flag(name: str) -> str | None:
    """The command-line option (without --) that sets RunConfig field `name`; None for a field
    that is not an option."""
    return options.flag(RunConfig, name)


def _check_choice(what: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(f"unknown {what} {value!r}", f"choose one of {', '.join(allowed)}")


def _check_range(
    name: str,
    value: float | None,
    low: float,
    high: float,
    *,
    allow_none: bool = False,
    open_low: bool = False,
    open_high: bool = False,
) -> None:
    if value is None and allow_none:
        return
    ok = isinstance(value, (int, float)) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (value < high if open_high else value <= high)
    if not ok:
        lo, hi = ("(" if open_low else "[") + f"{low:g}", f"{high:g}" + (")" if open_high else "]")
        raise ConfigError(f"{name}={value} is outside {lo}, {hi}", f"fix --{option_flag(name)}")
