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
from typing import Any

from rethink.errors import ConfigError

LABELS = {"random": "random-labels", "true": "true"}  # --labels -> the corruption that makes them
VARIANTS = ("scalar", "multiclass")
DEFAULT_SUMMATION = {"scalar": "compensated", "multiclass": "plain"}


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "expressivity",
        help="Theorem 1: a two-layer ReLU net with 2n+d weights fits any labels",
        description="Theorem 1 (Section 4): build c(x) = sum_j w_j max(<a,x> - b_j, 0) fitting "
                    "every training label exactly, and measure it.",
    )
    p.add_argument("--dataset", default="cifar10", help="cifar10 (default), mnist, folder:PATH or idx:PATH")
    p.add_argument("--data-dir", help="dataset directory (default: $RETHINK_DATA, else a user cache dir)")
    p.add_argument("--cache-dir", help="decoded-array cache (default: $RETHINK_CACHE)")
    p.add_argument("--train-size", type=int, default=None, help="stratified training subset (default: all)")
    p.add_argument("--test-size", type=int, default=None, help="stratified test subset (default: all)")
    p.add_argument("--input-size", type=int, default=28,
                   help="centre-crop size (default 28, as in training); 0 keeps full images")
    p.add_argument("--labels", default="random", help="random (default: uniform over the classes) or true")
    p.add_argument("--seed", type=int, default=0,
                   help="seeds the labels, the subsets and the direction a (default 0)")
    p.add_argument("--variant", default="scalar",
                   help="scalar (default): fit the label value, 2n+d weights; multiclass: K outputs, argmax")
    p.add_argument("--summation", default=None,
                   help="compensated or plain output sums (default: compensated for scalar, "
                        "plain for multiclass)")
    p.add_argument("--draws", type=int, default=8,
                   help="random directions tried, the best separated kept (default 8)")
    p.add_argument("--knot-fraction", type=float, default=0.125,
                   help="b_{k+1} = x_k + fraction * (x_{k+1} - x_k) (default 0.125)")
    p.add_argument("--plain-check", type=int, default=5000,
                   help="training examples also evaluated with plain float64 sums (default 5000; 0: none)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads; the blocked forward is many mid-sized ops, and on a shared "
                        "2-core machine 2 threads ran 25x slower than 1 (default 1)")
    p.add_argument("--out", default="runs", help="output directory holding results.sqlite (default: runs)")
    p.set_defaults(func=cmd_expressivity)


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The run's configuration as plain values, checked before any data is read."""
    if args.labels not in LABELS:
        raise ConfigError(f"unknown --labels {args.labels!r}", f"choose one of {', '.join(LABELS)}")
    if args.variant not in VARIANTS:
        raise ConfigError(f"unknown --variant {args.variant!r}", f"choose one of {', '.join(VARIANTS)}")
    summation = args.summation or DEFAULT_SUMMATION[args.variant]
    from rethink.theory.expressivity import SUMMATIONS

    if summation not in SUMMATIONS:
        raise ConfigError(f"unknown --summation {summation!r}", f"choose one of {', '.join(SUMMATIONS)}")
    for name in ("train_size", "test_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {value}: need at least one example (n >= 1)",
                              "pass a positive size, or leave it out for the whole split")
    for name, low in (("input_size", 0), ("seed", 0), ("plain_check", 0), ("draws", 1)):
        if getattr(args, name) < low:
            raise ConfigError(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}",
                              "see rethink expressivity --help")
    if not 0.0 < args.knot_fraction < 1.0:
        raise ConfigError(f"--knot-fraction {args.knot_fraction} is outside (0, 1)", "e.g. 0.125")
    if args.threads is not None and args.threads < 1:
        raise ConfigError(f"--threads {args.threads} must be positive", "pass 1 or more")
    return {
        "dataset": args.dataset,
        "train_size": args.train_size,
        "test_size": args.test_size,
        "input_size": args.input_size,
        "labels": args.labels,
        "seed": args.seed,
        "variant": args.variant,
        "summation": summation,
        "draws": args.draws,
        "knot_fraction": args.knot_fraction,
        "plain_check": args.plain_check,
    }


def _inputs(images, size: int):  # uint8 NHWC tensor -> (N, d) float64 tensor
    """uint8 NHWC -> (N, d) float64 raw pixel values, centre-cropped to size x size unless 0."""
    from rethink.data.preprocess import center_crop
    from rethink.theory.expressivity import flatten_inputs

    if size:
        images = center_crop(images.permute(0, 3, 1, 2), size).permute(0, 2, 3, 1)
    return flatten_inputs(images)


def cmd_expressivity(args: argparse.Namespace) -> int:
    import torch

    from rethink.data.corruption import corrupt
    from rethink.data.preprocess import stratified_subset
    from rethink.data.sources import load_dataset
    from rethink.machine import software_versions
    from rethink.store import Store
    from rethink.theory.expressivity import expressivity_report, fit_multiclass, fit_two_layer

    config = config_from_args(args)
    start = time.perf_counter()
    raw = load_dataset(config["dataset"], args.data_dir, cache_dir=args.cache_dir)
    train_images, train_labels = raw.train_images, raw.train_labels
    test_images, test_labels = raw.test_images, raw.test_labels
    for split, size, total in (("train", config["train_size"], len(train_labels)),
                               ("test", config["test_size"], len(test_labels))):
        if size is not None and size > total:
            raise ConfigError(f"--{split}-size {size} is larger than the {total} {split} images "
                              f"of {raw.name}", f"pass at most {total}")
    if config["train_size"] is not None:
        idx = stratified_subset(train_labels, config["train_size"], config["seed"])
        train_images, train_labels = train_images[idx], train_labels[idx]
    if config["test_size"] is not None:
        idx = stratified_subset(test_labels, config["test_size"], config["seed"])
        test_images, test_labels = test_images[idx], test_labels[idx]
    k = raw.num_classes
    labels = corrupt(LABELS[config["labels"]], train_images, train_labels, test_images, test_labels,
                     num_classes=k, seed=config["seed"]).train_labels
    x_train, x_test = _inputs(train_images, config["input_size"]), _inputs(test_images, config["input_size"])
    n, d = x_train.shape
    print(f"{raw.name}: {n:,} training points in d = {d:,}, {config['labels']} labels over {k} classes; "
          f"{len(x_test):,} test points ({time.perf_counter() - start:.1f} s to load)")

    fit_args = {"seed": config["seed"], "draws": config["draws"], "knot_fraction": config["knot_fraction"],
                "summation": config["summation"]}
    if config["variant"] == "scalar":
        model = fit_two_layer(x_train, labels.to(torch.float64), **fit_args)
    else:
        model = fit_multiclass(x_train, labels, k, **fit_args)
    built = model.construction_
    print(f"constructed {model.num_weights:,} weights in {built.seconds:.1f} s: {built.n_distinct:,} "
          f"distinct points ({built.duplicate_examples:,} exact repeats, {built.conflicting_examples:,} "
          f"with another label), smallest gap / range = 1 / {built.separation:.3g}, "
          f"max |w| = {float(model.w.abs().max()):.3g}")
    print(f"evaluating c(x) on {n:,} training and {len(x_test):,} test points "
          f"({config['summation']} sums, {torch.get_num_threads()} threads)...", flush=True)
    what = f"{config['labels']} {raw.name} labels"
    result = expressivity_report(model, x_train, labels, x_test, test_labels, num_classes=k, what=what,
                                 plain_check=config["plain_check"], seed=config["seed"])
    result["data"] = {"name": raw.name, "source_hash": raw.source_hash, "content_hash": raw.content_hash,
                      "description": raw.description}
    if result["plain_float64_max_error"] is not None:
        print(f"plain float64 sums on {result['plain_check_examples']:,} of those training points: "
              f"max error {result['plain_float64_max_error']:.2e}")
    with Store(args.out) as store:
        key = store.record_theory("expressivity", config, result, software_versions())
    print(result["summary"])
    print(f"results: {args.out}/results.sqlite (theory row expressivity {key})")
    return 0
