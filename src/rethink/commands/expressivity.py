"""`rethink expressivity`: Theorem 1 on a real dataset, from the command line.

Builds the two-layer ReLU network with 2n + d weights (or d + n + nK for K outputs) that fits
the training labels (random by default) of a dataset, evaluates it through its own forward
pass, prints the fit, the conditioning and the test accuracy, and records the result in the
`theory` table of the results store (`--out`).

Inputs are the raw pixel values 0..255, centre-cropped to 28x28 like the paper's training
inputs (so CIFAR-10 has d = 2,352, the paper's own example); `--input-size 0` keeps full images.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace

from rethink import options
from rethink.commands.common import add_data_options, add_out_option, add_threads_option
from rethink.config import RunConfig
from rethink.errors import ConfigError
from rethink.options import flag, option

LABELS = {"random": "random-labels", "true": "true"}  # --labels -> the corruption that makes them
VARIANTS = ("scalar", "multiclass")
DEFAULT_SUMMATION = {"scalar": "compensated", "multiclass": "plain"}


@dataclass(frozen=True)
class ExpressivityConfig:
    """What one Theorem 1 construction computes; its fields are the command's options."""

    dataset: str = option("cifar10", "cifar10, mnist, folder:PATH or idx:PATH")
    train_size: int | None = option(None, "stratified training subset (default: all)")
    test_size: int | None = option(None, "stratified test subset (default: all)")
    input_size: int = option(28, "centre-crop size (as in training); 0 keeps full images")
    labels: str = option("random", "random (uniform over the classes) or true", choices=tuple(LABELS))
    seed: int = option(0, "seeds the labels, the subsets and the direction a")
    variant: str = option("scalar", "scalar: fit the label value, 2n+d weights; multiclass: K outputs, "
                                    "argmax", choices=VARIANTS)
    summation: str | None = option(None, "compensated or plain output sums (default: compensated for "
                                         "scalar, plain for multiclass)")
    draws: int = option(8, "random directions tried, the best separated kept")
    knot_fraction: float = option(0.125, "b_{k+1} = x_k + fraction * (x_{k+1} - x_k)")
    plain_check: int = option(5000, "training examples also evaluated with plain float64 sums (0: none)")

    def validate(self) -> ExpressivityConfig:
        """Check every field before any data is read; the summation default filled in."""
        if self.labels not in LABELS:
            raise ConfigError(f"unknown --labels {self.labels!r}", f"choose one of {', '.join(LABELS)}")
        if self.variant not in VARIANTS:
            raise ConfigError(f"unknown --variant {self.variant!r}", f"choose one of {', '.join(VARIANTS)}")
        summation = self.summation or DEFAULT_SUMMATION[self.variant]
        from rethink.theory.expressivity import SUMMATIONS

        if summation not in SUMMATIONS:
            raise ConfigError(f"unknown --summation {summation!r}", f"choose one of {', '.join(SUMMATIONS)}")
        for name in ("train_size", "test_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{flag(type(self), name)} {value}: need at least one example (n >= 1)",
                                  "pass a positive size, or leave it out for the whole split")
        for name, low in (("input_size", 0), ("seed", 0), ("plain_check", 0), ("draws", 1)):
            if getattr(self, name) < low:
                raise ConfigError(f"--{flag(type(self), name)} must be >= {low}, got {getattr(self, name)}",
                                  "see rethink expressivity --help")
        if not 0.0 < self.knot_fraction < 1.0:
            raise ConfigError(f"--knot-fraction {self.knot_fraction} is outside (0, 1)", "e.g. 0.125")
        return replace(self, summation=summation)

    def run_config(self) -> RunConfig:
        """The training data path's config for the same subsets and labels (one seed for both)."""
        return RunConfig(dataset=self.dataset, train_size=self.train_size, test_size=self.test_size,
                         corruption=LABELS[self.labels], subset_seed=self.seed, corruption_seed=self.seed)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser(
        "expressivity",
        help="Theorem 1: a two-layer ReLU net with 2n+d weights fits any labels",
        description="Theorem 1 (Section 4): build c(x) = sum_j w_j max(<a,x> - b_j, 0) fitting "
                    "every training label exactly, and measure it.",
    )
    options.add_options(parser, ExpressivityConfig)
    add_data_options(parser, download=False)
    add_threads_option(parser, default=1, help="torch CPU threads; the blocked forward is many mid-sized "
                       "ops, and on a shared 2-core machine 2 threads ran 25x slower than 1")
    add_out_option(parser, "results.sqlite")
    parser.set_defaults(func=run)


def _inputs(images, size: int):  # uint8 NHWC tensor -> (N, d) float64 tensor
    """uint8 NHWC -> (N, d) float64 raw pixel values, centre-cropped to size x size unless 0."""
    from rethink.data.pipeline import center_crop_nhwc
    from rethink.theory.expressivity import flatten_inputs

    return flatten_inputs(center_crop_nhwc(images, size) if size else images)


def run(args: argparse.Namespace) -> int:
    import torch

    from rethink.data.pipeline import randomized_split
    from rethink.data.sources import load_dataset
    from rethink.machine import software_versions
    from rethink.store import Store
    from rethink.theory.expressivity import expressivity_report, fit_multiclass, fit_two_layer

    config = ExpressivityConfig(**options.values_from_args(ExpressivityConfig, args)).validate()
    start = time.perf_counter()
    raw = load_dataset(config.dataset, args.data_dir, cache_dir=args.cache_dir)
    data, _ = randomized_split(config.run_config(), raw)
    labels, k = data.train_labels, raw.num_classes
    x_train = _inputs(data.train_images, config.input_size)
    x_test = _inputs(data.test_images, config.input_size)
    n, d = x_train.shape
    print(f"{raw.name}: {n:,} training points in d = {d:,}, {config.labels} labels over {k} classes; "
          f"{len(x_test):,} test points ({time.perf_counter() - start:.1f} s to load)")

    fit_args = {"seed": config.seed, "draws": config.draws, "knot_fraction": config.knot_fraction,
                "summation": config.summation}
    if config.variant == "scalar":
        model = fit_two_layer(x_train, labels.to(torch.float64), **fit_args)
    else:
        model = fit_multiclass(x_train, labels, k, **fit_args)
    built = model.construction_
    print(f"constructed {model.num_weights:,} weights in {built.seconds:.1f} s: {built.n_distinct:,} "
          f"distinct points ({built.duplicate_examples:,} exact repeats, {built.conflicting_examples:,} "
          f"with another label), smallest gap / range = 1 / {built.separation:.3g}, "
          f"max |w| = {float(model.w.abs().max()):.3g}")
    print(f"evaluating c(x) on {n:,} training and {len(x_test):,} test points "
          f"({config.summation} sums, {torch.get_num_threads()} threads)...", flush=True)
    what = f"{config.labels} {raw.name} labels"
    result = expressivity_report(model, x_train, labels, x_test, data.test_labels, num_classes=k, what=what,
                                 plain_check=config.plain_check, seed=config.seed)
    result["data"] = {"name": raw.name, "source_hash": raw.source_hash, "content_hash": raw.content_hash,
                      "description": raw.description}
    if result["plain_float64_max_error"] is not None:
        print(f"plain float64 sums on {result['plain_check_examples']:,} of those training points: "
              f"max error {result['plain_float64_max_error']:.2e}")
    with Store(args.out) as store:
        key = store.record_theory("expressivity", asdict(config), result, software_versions())
    print(result["summary"])
    print(f"results: {args.out}/results.sqlite (theory row expressivity {key})")
    return 0
