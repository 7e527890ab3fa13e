"""`rethink double-descent`: model-wise double descent with random features, exactly.

Fits n training images (a stratified subset, with `--noise` of their labels changed to another
class, as Nakkiran et al. corrupt) by minimum-norm least squares on N random Fourier (or ReLU)
features for each N/n of `--ratios`, and prints train error, test error and the solution's norm:
Belkin et al. (PNAS 2019) find test error and norm peaking at N = n and falling beyond it. The
result is recorded in the `theory` table of the results store (`--out`).
"""

from __future__ import annotations

import argparse

from rethink import options
from rethink.commands.common import add_data_options, add_out_option, add_threads_option
from rethink.theory.double_descent import DoubleDescentConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("double-descent", help="test error and norm of min-norm random-feature fits "
                                                   "across N = n (Belkin et al. 2019)")
    options.add_options(parser, DoubleDescentConfig)
    add_data_options(parser, download=False)
    add_out_option(parser, "results.sqlite")
    add_threads_option(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rethink.data.sources import load_dataset
    from rethink.store import Store
    from rethink.theory.double_descent import measure_and_record

    config = DoubleDescentConfig(**options.values_from_args(DoubleDescentConfig, args)).validate()
    raw = load_dataset(config.dataset, args.data_dir, cache_dir=args.cache_dir)
    with Store(args.out) as store:
        key, result = measure_and_record(config, raw, store, log=print)
    print(result["summary"])
    print(f"results: {args.out}/results.sqlite (theory double-descent {key})")
    return 0
