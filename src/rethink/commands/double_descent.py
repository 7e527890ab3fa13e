"""`rethink double-descent`: model-wise double descent with random features, exactly.

Fits n training images (a stratified subset, with `--noise` of their labels changed to another
class, as Nakkiran et al. corrupt) by minimum-norm least squares on N random Fourier (or ReLU)
features for each N/n of `--ratios`, and prints train error, test error and the solution's norm:
Belkin et al. (PNAS 2019) find test error and norm peaking at N = n and falling beyond it. The
result is recorded in the `theory` table of the results store (`--out`).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace

from rethink import options
from rethink.commands.common import add_data_options, add_out_option, add_threads_option
from rethink.config import RunConfig
from rethink.errors import ConfigError
from rethink.options import numbers, option, positive_int
from rethink.theory.double_descent import FEATURES


@dataclass(frozen=True)
class DoubleDescentConfig:
    """One sweep over N/n; its fields are the command's options."""

    dataset: str = option("mnist", "mnist, cifar10, folder:PATH or idx:PATH")
    train_size: int = option(1000, "training examples n (a stratified subset)", parse=positive_int)
    test_size: int = option(2000, "test examples (a stratified subset)", parse=positive_int)
    features: str = option("rff", "random Fourier (rff) or ReLU features", choices=FEATURES)
    ratios: tuple[float, ...] = option((0.1, 0.5, 0.9, 1.0, 1.1, 2.0, 5.0, 10.0), "N/n values", parse=numbers)
    # where the bandwidth is not given: half the median distance of 1,000 training points, as
    # rethink kernel fit chooses for a dataset it has no measured bandwidth for
    bandwidth: float | None = option(None, "feature scale sigma (default: 0.5 x the median distance)")
    noise: float = option(0.0, "fraction of training labels changed to another class (0: none)")
    seed: int = option(0, "subsets, label noise and features")

    def validate(self) -> DoubleDescentConfig:
        """Check every field before any data is read."""
        if self.features not in FEATURES:
            raise ConfigError(f"unknown features {self.features!r}", f"choose one of {', '.join(FEATURES)}")
        if not self.ratios or any(not r > 0 for r in self.ratios):
            raise ConfigError(f"ratios {self.ratios} must be positive", "e.g. --ratios 0.5,1,2")
        if not 0 <= self.noise <= 1:
            raise ConfigError(f"noise={self.noise} is outside [0, 1]", "e.g. --noise 0.2")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ConfigError(f"bandwidth={self.bandwidth} must be positive", "fix --bandwidth")
        self.run_config().validate()
        return self

    def run_config(self) -> RunConfig:
        """The training path's subsets and labels (incorrect-only noise at rate `noise`)."""
        noisy = self.noise > 0
        return RunConfig(dataset=self.dataset, train_size=self.train_size, test_size=self.test_size,
                         corruption="partial" if noisy else "true", p=self.noise if noisy else None,
                         label_noise="incorrect-only", subset_seed=self.seed, corruption_seed=self.seed)


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("double-descent", help="test error and norm of min-norm random-feature fits "
                                                   "across N = n (Belkin et al. 2019)")
    options.add_options(parser, DoubleDescentConfig)
    add_data_options(parser, download=False)
    add_out_option(parser, "results.sqlite")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rethink.data.pipeline import randomized_split
    from rethink.data.sources import load_dataset
    from rethink.machine import software_versions
    from rethink.store import Store
    from rethink.theory import double_descent as dd
    from rethink.theory.features import pixel_features
    from rethink.theory.kernel_runs import median_bandwidth

    config = DoubleDescentConfig(**options.values_from_args(DoubleDescentConfig, args)).validate()
    raw = load_dataset(config.dataset, args.data_dir, cache_dir=args.cache_dir)
    data, _ = randomized_split(config.run_config(), raw)
    x, xt = pixel_features(data.train_images).double(), pixel_features(data.test_images).double()
    if config.bandwidth is None:
        config = replace(config, bandwidth=median_bandwidth(x))
    print(f"{raw.name}: n = {len(x):,} training and {len(xt):,} test images, {config.features} features, "
          f"bandwidth {config.bandwidth:.3g}, {100 * data.realized_rate:.1f}% of training labels changed")
    points = dd.sweep(x, data.train_labels, xt, data.test_labels, list(config.ratios),
                      num_classes=raw.num_classes, kind=config.features, bandwidth=config.bandwidth,
                      seed=config.seed)
    peak = max(points, key=lambda p: p.test_error)
    summary = (f"{config.features} features on {len(x):,} {raw.name} images ({100 * config.noise:.0f}% label "
               f"noise): test error peaks at N/n = {peak.ratio:.2f} ({100 * peak.test_error:.1f}%), "
               + ", ".join(f"{p.ratio:g}: {100 * p.test_error:.1f}%" for p in points))
    result = {"points": [{**asdict(p), "ratio": p.ratio} for p in points], "summary": summary,
              "realized_noise": data.realized_rate}
    with Store(args.out) as store:
        key = store.record_theory("double-descent", asdict(config), result, software_versions())
    print(summary)
    print(f"results: {args.out}/results.sqlite (theory double-descent {key})")
    return 0
