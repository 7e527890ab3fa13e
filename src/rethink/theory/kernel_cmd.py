"""`rethink kernel`: Section 5 of Zhang et al. (2017) from the command line.

- `rethink kernel fit`: minimum-norm kernel interpolation (K alpha = Y, exactly unless --ridge)
  of MNIST or CIFAR-10 on pixels, Gabor wavelet features or random convolutional features;
  reports train error (0 when interpolating), test error beside the paper's, the RKHS norm, the
  residual, time and peak memory, and records the result in the store's `theory` table.
- `rethink kernel sgd`: SGD from w = 0 converges to the minimum-norm interpolant of a d > n
  least-squares problem on real data, SGD from a random start to a larger-norm one; plus the
  min-norm solution's norm and test error on pixels vs. Gabor features.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rethink.errors import ConfigError
from rethink.theory import features as ft
from rethink.theory.kernels import (
    DTYPES,
    KERNELS,
    MinNormInterpolator,
    check_fit_memory,
    check_interpolable,
    peak_memory,
)

# Defaults where the paper is silent, measured on 10,000-example subsets (docs/results/theory/kernel.md).
DEFAULT_KERNEL = {"pixels": "rbf", "gabor": "rbf", "random-conv": "linear"}
DEFAULT_BANDWIDTH = {("mnist", "pixels"): 5.0, ("mnist", "gabor"): 1.5, ("cifar10", "pixels"): 6.0}
MEDIAN_FACTOR = 0.5  # elsewhere: bandwidth = 0.5 x median pairwise distance of 1,000 training points

# The paper's test errors (%) and min-norm values, Section 5: (dataset, features, regularized).
PAPER_ERROR = {("mnist", "pixels", False): 1.2, ("mnist", "gabor", False): 0.6,
               ("cifar10", "pixels", False): 46.0, ("cifar10", "random-conv", False): 17.0,
               ("cifar10", "random-conv", True): 15.0}
PAPER_NORM = {("mnist", "pixels"): 220.0, ("mnist", "gabor"): 390.0}
PAPER_FILTERS = 32_000


@dataclass(frozen=True)
class KernelRunConfig:
    dataset: str = "mnist"
    features: str = "pixels"
    kernel: str | None = None  # default: DEFAULT_KERNEL[features]
    bandwidth: float | None = None  # rbf only; default: DEFAULT_BANDWIDTH, else the median rule
    ridge: float = 0.0
    train_size: int | None = None  # stratified subset; default: the whole training set
    test_size: int | None = None
    filters: int = ft.RandomConvConfig.filters
    # random-conv only (ft.RandomConvConfig; docs/results/theory/kernel.md measures each choice)
    filter_source: str = ft.RandomConvConfig.source
    conv_normalize: str = ft.RandomConvConfig.normalize
    whiten: bool = ft.RandomConvConfig.whiten
    rectify: str = ft.RandomConvConfig.rectify
    threshold: float = ft.RandomConvConfig.bias
    random_threshold: bool = ft.RandomConvConfig.random_bias
    pool_grid: int = ft.RandomConvConfig.grid
    standardize: bool = ft.RandomConvConfig.standardize
    dtype: str = "float32"
    block_size: int = 1024
    tol: float = 1e-6
    seed: int = 0  # subsets and random filters

    def validate(self) -> KernelRunConfig:
        ft.get_features(self.features)
        kernel = self.kernel or DEFAULT_KERNEL[self.features]
        if kernel not in KERNELS:
            raise ConfigError(f"unknown kernel {kernel!r}", f"choose one of {', '.join(KERNELS)}")
        if self.dtype not in DTYPES:
            raise ConfigError(f"unknown dtype {self.dtype!r}", f"choose one of {', '.join(DTYPES)}")
        for name in ("train_size", "test_size", "filters", "block_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}",
                                  "pass a positive integer")
        if self.bandwidth is not None and not self.bandwidth > 0:
            raise ConfigError(f"--bandwidth must be > 0, got {self.bandwidth}", "pass a positive distance")
        if not self.ridge >= 0:
            raise ConfigError(f"--ridge must be >= 0, got {self.ridge}", "0 interpolates exactly")
        if self.features == "random-conv":
            ft.check_random_conv(random_conv_config(self))
        return KernelRunConfig(**{**asdict(self), "kernel": kernel})


def random_conv_config(config: KernelRunConfig) -> ft.RandomConvConfig:
    return ft.RandomConvConfig(
        filters=config.filters, seed=config.seed, source=config.filter_source,
        normalize=config.conv_normalize, whiten=config.whiten, rectify=config.rectify, bias=config.threshold,
        random_bias=config.random_threshold, grid=config.pool_grid, standardize=config.standardize)


def feature_dim(config: KernelRunConfig, images: torch.Tensor) -> int:
    """d of the configured feature map on these images (cheap: one image, or arithmetic)."""
    if config.features == "random-conv":
        return random_conv_config(config).dim()
    return ft.get_features(config.features)(images[:1]).shape[1]


def featurize(config: KernelRunConfig, train: torch.Tensor,
              test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, test) features; random-conv filters, whitening and standardization come from `train`."""
    if config.features == "random-conv":
        rc = random_conv_config(config)
        bank, x = ft.fit_random_conv(train, rc)
        return x, ft.random_conv_features(test, rc, bank)
    fn = ft.get_features(config.features)
    return fn(train), fn(test)


def describe_random_conv(config: KernelRunConfig) -> str:
    """The random-conv recipe in a few words, for summaries."""
    thr = f"threshold {'U(-t, t), t = ' if config.random_threshold else ''}{config.threshold:g}"
    return (f"{config.filter_source}{' whitened' if config.whiten else ''}, "
            f"{config.conv_normalize}-normalized, {config.rectify}, {thr}, "
            f"{config.pool_grid}x{config.pool_grid} pool"
            + (", standardized" if config.standardize else ""))


def median_bandwidth(x: torch.Tensor, m: int = 1000, seed: int = 0) -> float:
    """MEDIAN_FACTOR x the median distance between m random training points."""
    g = torch.Generator().manual_seed(seed)
    sub = x[torch.randperm(len(x), generator=g)[:m]].double()
    d = torch.cdist(sub, sub)
    return MEDIAN_FACTOR * float(d[d > 0].median())


def _subset(labels: torch.Tensor, size: int | None, seed: int, split: str) -> torch.Tensor | None:
    from rethink.data.preprocess import stratified_subset

    if size is None or size == len(labels):
        return None
    if size > len(labels):
        raise ConfigError(f"--{split}-size {size:,} exceeds the {len(labels):,} {split} examples",
                          f"choose at most {len(labels):,}")
    return stratified_subset(labels, size, seed)


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.1f} GB"


def run_kernel(config: KernelRunConfig, *, data_dir: str | None = None, cache_dir: str | None = None,
               log=print) -> dict[str, Any]:
    """Load, featurize, fit, evaluate; returns the result dict (with a one-line `summary`)."""
    from rethink.data.sources import load_dataset

    config = config.validate()
    t_start, load_start, cpu_start = time.time(), os.getloadavg(), _cpu_seconds()
    raw = load_dataset(config.dataset, data_dir, cache_dir=cache_dir)
    tr, te = _subset(raw.train_labels, config.train_size, config.seed, "train"), \
        _subset(raw.test_labels, config.test_size, config.seed, "test")
    train_x = raw.train_images if tr is None else raw.train_images[tr]
    train_y = raw.train_labels if tr is None else raw.train_labels[tr]
    test_x = raw.test_images if te is None else raw.test_images[te]
    test_y = raw.test_labels if te is None else raw.test_labels[te]
    n, m = len(train_y), len(test_y)
    dim = feature_dim(config, train_x)
    check_interpolable(config.kernel, n, dim, config.ridge)
    need = check_fit_memory(n, dim, raw.num_classes, dtype=config.dtype, block_size=config.block_size)
    log(f"kernel: {config.kernel} on {config.features} ({dim:,} dims) of {n:,} {raw.name} training "
        f"and {m:,} test examples; the fit needs about {_gb(need)}")

    t = time.time()
    x, x_test = featurize(config, train_x, test_x)
    t_features = time.time() - t
    log(f"features: {tuple(x.shape)} train, {tuple(x_test.shape)} test ({t_features:.0f} s)")
    bandwidth = None
    if config.kernel == "rbf":
        bandwidth = config.bandwidth or DEFAULT_BANDWIDTH.get((raw.name, config.features)) \
            or median_bandwidth(x, seed=config.seed)
        log(f"bandwidth: {bandwidth:.4g}")

    model = MinNormInterpolator(config.kernel, bandwidth=bandwidth, ridge=config.ridge, dtype=config.dtype,
                                block_size=config.block_size, tol=config.tol, verbose=True)
    model.fit(x, train_y)
    t = time.time()
    test_error = 1.0 - model.score(x_test, test_y)
    t_predict = time.time() - t
    total, cpu = time.time() - t_start, _cpu_seconds() - cpu_start
    peak = peak_memory()

    paper_error = PAPER_ERROR.get((raw.name, config.features, config.ridge > 0))
    paper_norm = PAPER_NORM.get((raw.name, config.features)) if config.ridge == 0 else None
    what = f"{config.kernel.upper() if config.kernel == 'rbf' else config.kernel} kernel" + (
        f" (bandwidth {bandwidth:.3g})" if bandwidth else "")
    feats = {"pixels": "pixels", "gabor": "Gabor wavelet features",
             "random-conv": f"random-conv features ({config.filters:,} filters, "
                            f"{describe_random_conv(config)}; paper {PAPER_FILTERS:,})"}
    summary = (
        f"{what}{f', ridge {config.ridge:g}' if config.ridge else ''} on {n:,} {raw.name} "
        f"{feats[config.features]}: train error {100 * model.train_error_:.2f}%, test error "
        f"{100 * test_error:.2f}% on {m:,}" + (f" (paper {paper_error:g}%)" if paper_error else "")
        + f", RKHS norm {model.rkhs_norm_:.4g}" + (f" (paper ~{paper_norm:g})" if paper_norm else "")
        + f", residual {model.residual_:.1e}" + ("" if model.converged_ else f" NOT below tol {config.tol:g}")
        + (f" (preconditioner shift {model.shift_:.1e})" if model.shift_ else "")
        + f", {total:.0f} s ({cpu:.0f} CPU s on {torch.get_num_threads()} threads), peak {_gb(peak)}"
    )
    return {
        "summary": summary,
        "dataset": raw.name, "n_train": n, "n_test": m, "features": config.features, "dim": dim,
        "kernel": config.kernel, "bandwidth": bandwidth, "ridge": config.ridge, "dtype": config.dtype,
        "filters": config.filters if config.features == "random-conv" else None,
        "random_conv": asdict(random_conv_config(config)) if config.features == "random-conv" else None,
        "train_error": model.train_error_, "test_error": test_error,
        "paper_test_error": paper_error / 100 if paper_error else None, "paper_norm": paper_norm,
        "rkhs_norm": model.rkhs_norm_, "residual": model.residual_,
        "max_abs_residual": model.max_abs_residual_, "residual_history": model.residual_history_,
        "converged": model.converged_, "pcg_iterations": model.n_iter_, "preconditioner_shift": model.shift_,
        "time_s": {"features": t_features, **model.timings_, "predict": t_predict, "total": total},
        "cpu_time_s": cpu,  # user + system over all threads: what the work costs on a machine shared or not
        "peak_memory_bytes": peak, "memory_estimate_bytes": need,
        "loadavg_start": load_start, "loadavg_end": os.getloadavg(), "threads": torch.get_num_threads(),
        "data": {"train_subset": tr is not None, "test_subset": te is not None,
                 "content_hash": raw.content_hash},
    }


# ----------------------------------------------------------------------------- sgd demo


def run_sgd_demo(args: argparse.Namespace, log=print) -> tuple[dict[str, Any], dict[str, Any]]:
    from rethink.data.sources import load_dataset
    from rethink.theory.implicit_sgd import SGDConfig, min_norm_comparison, run_sgd

    config = SGDConfig(epochs=args.epochs, lr=args.lr, init_scale=args.init_scale, seed=args.seed,
                       log_every=args.log_every)
    names = [f.strip() for f in args.compare.split(",") if f.strip()]
    for name in names:
        ft.get_features(name)
    raw = load_dataset(args.dataset, args.data_dir, cache_dir=args.cache_dir)
    tr = _subset(raw.train_labels, args.train_size, args.seed, "train")
    te = _subset(raw.test_labels, args.test_size, args.seed, "test")
    train_x = raw.train_images if tr is None else raw.train_images[tr]
    train_y = raw.train_labels if tr is None else raw.train_labels[tr]
    test_x = raw.test_images if te is None else raw.test_images[te]
    test_y = raw.test_labels if te is None else raw.test_labels[te]
    x, x_test = ft.pixel_features(train_x), ft.pixel_features(test_x)
    n, d = x.shape
    log(f"sgd: least squares on {n} {raw.name} images x {d} pixels (d > n), one-hot targets, "
        f"{config.epochs} epochs")
    w_star, runs = run_sgd(x, train_y, x_test, test_y, config, log=log)
    star = float(w_star.norm())
    zero, rand = runs
    comparison = min_norm_comparison(
        {name: featurize(KernelRunConfig(features=name, seed=args.seed), train_x, test_x) for name in names},
        train_y, test_y)
    summary = (
        f"SGD on {n} {raw.name} images x {d} pixels: from 0, |W - W*|/|W*| = {zero.distance:.1e} "
        f"(|W| {zero.norm:.4g}, min norm {star:.4g}); from a random start, |W| {rand.norm:.4g} "
        f"(+{100 * (rand.norm / star - 1):.0f}%), |W - W*|/|W*| = {rand.distance:.2f}, "
        f"distance to W* + (I - P) W0 {rand.predicted_distance:.1e}; test error "
        f"{100 * zero.test_error:.1f}% vs {100 * rand.test_error:.1f}%")
    result = {
        "summary": summary, "dataset": raw.name, "n_train": n, "n_test": len(test_y), "dim": d,
        "min_norm": star,
        "runs": [{k: v for k, v in vars(r).items() if k != "weights"} for r in runs],
        "norm_vs_generalization": comparison,
    }
    cfg = {"experiment": "sgd", "dataset": raw.name, "train_size": n, "test_size": len(test_y),
           "compare": names, **asdict(config)}
    return cfg, result


# ----------------------------------------------------------------------------- CLI


def _record(out: str, config: dict[str, Any], result: dict[str, Any]) -> str:
    from rethink.machine import software_versions
    from rethink.store import Store

    with Store(out) as store:
        return store.record_theory("kernel", config, result, software_versions())


def cmd_fit(args: argparse.Namespace) -> int:
    config = KernelRunConfig(
        dataset=args.dataset, features=args.features, kernel=args.kernel, bandwidth=args.bandwidth,
        ridge=args.ridge, train_size=args.train_size, test_size=args.test_size, filters=args.filters,
        filter_source=args.filter_source, conv_normalize=args.conv_normalize, whiten=args.whiten,
        rectify=args.rectify, threshold=args.threshold, random_threshold=args.random_threshold,
        pool_grid=args.pool_grid, standardize=args.standardize,
        dtype=args.dtype, block_size=args.block_size, tol=args.tol, seed=args.seed,
    ).validate()
    result = run_kernel(config, data_dir=args.data_dir, cache_dir=args.cache_dir)
    key = _record(args.out, {"experiment": "fit", **asdict(config), "bandwidth": result["bandwidth"]}, result)
    print(result["summary"])
    print(f"results: {args.out}/results.sqlite (theory kernel {key})")
    return 0


def cmd_sgd(args: argparse.Namespace) -> int:
    config, result = run_sgd_demo(args)
    for row in result["norm_vs_generalization"]:
        print(f"min-norm linear interpolant on {row['features']} ({row['dim']} dims, rms "
              f"{row['feature_rms']:.3f}): norm {row['norm']:.4g}, train error "
              f"{100 * row['train_error']:.2f}%, test error {100 * row['test_error']:.2f}%")
    key = _record(args.out, config, result)
    print(result["summary"])
    print(f"results: {args.out}/results.sqlite (theory kernel {key})")
    return 0


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{value} must be positive")
        return value
    return parse


def _data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset directory (default: $RETHINK_DATA)")
    p.add_argument("--cache-dir", help="decoded-array cache (default: $RETHINK_CACHE)")
    p.add_argument("--out", default="runs", help="output directory for results.sqlite (default: runs)")
    p.add_argument("--threads", type=_positive(int), default=None, help="torch CPU threads")


def add_parser(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser("kernel", help="Section 5: minimum-norm kernel interpolation and SGD's implicit bias")
    ksub = k.add_subparsers(dest="kernel_command", required=True, metavar="SUBCOMMAND",
                            parser_class=type(k))

    f = ksub.add_parser("fit", help="solve K alpha = Y exactly; train/test error, RKHS norm, time, memory")
    f.add_argument("--dataset", default="mnist",
                   help="mnist, cifar10, folder:PATH or idx:PATH (default: mnist)")
    f.add_argument("--features", default="pixels",
                   help=f"one of {', '.join(ft.FEATURES)} (default: pixels)")
    f.add_argument("--kernel", default=None,
                   help=f"one of {', '.join(KERNELS)} (default: rbf, linear for random-conv)")
    f.add_argument("--bandwidth", type=float, default=None,
                   help="rbf sigma in exp(-|x-z|^2/(2 sigma^2)) (default: 5 MNIST pixels, 1.5 MNIST "
                        "gabor, 6 CIFAR-10 pixels, else 0.5 x median distance)")
    f.add_argument("--ridge", type=float, default=0.0,
                   help="solve (K + ridge I) alpha = Y (default: 0, exact interpolation)")
    f.add_argument("--train-size", type=_positive(int), default=None,
                   help="stratified training subset (default: all)")
    f.add_argument("--test-size", type=_positive(int), default=None,
                   help="stratified test subset (default: all)")
    f.add_argument("--filters", type=_positive(int), default=ft.RandomConvConfig.filters,
                   help=f"random-conv filters (default: %(default)s; paper: {PAPER_FILTERS:,})")
    rc = ft.RandomConvConfig
    f.add_argument("--filter-source", choices=ft.SOURCES, default=rc.source,
                   help="random-conv filters: gaussian N(0, I) or random training-image patches "
                        "(default: %(default)s)")
    f.add_argument("--conv-normalize", choices=ft.NORMALIZATIONS, default=rc.normalize,
                   help="random-conv input: per-image standardization, per-patch contrast normalization, "
                        "or none (default: %(default)s)")
    f.add_argument("--whiten", action=argparse.BooleanOptionalAction, default=rc.whiten,
                   help="random-conv: ZCA-whiten patches and filters with training-patch statistics "
                        "(default: %(default)s)")
    f.add_argument("--rectify", choices=ft.RECTIFIERS, default=rc.rectify,
                   help="random-conv: relu max(0, z - t), or symmetric: max(0, z - t) and max(0, -z - t) "
                        "(default: %(default)s)")
    f.add_argument("--threshold", type=float, default=rc.bias,
                   help="random-conv threshold t >= 0 (default: %(default)s)")
    f.add_argument("--random-threshold", action=argparse.BooleanOptionalAction, default=rc.random_bias,
                   help="random-conv: each filter's threshold from U(-t, t) instead of t "
                        "(default: %(default)s)")
    f.add_argument("--pool-grid", type=_positive(int), default=rc.grid,
                   help="random-conv: average-pool each map over G x G cells (default: %(default)s)")
    f.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=rc.standardize,
                   help="random-conv: standardize each feature with training statistics, plus an "
                        "intercept column (default: %(default)s)")
    f.add_argument("--dtype", default="float32",
                   help="kernel storage and factorization: float32 (default) or float64")
    f.add_argument("--block-size", type=_positive(int), default=1024,
                   help="kernel and Cholesky block rows (default: %(default)s)")
    f.add_argument("--tol", type=_positive(float), default=1e-6,
                   help="relative residual to reach (default: %(default)s)")
    f.add_argument("--seed", type=int, default=0, help="subset and random-filter seed (default: 0)")
    _data_args(f)
    f.set_defaults(func=cmd_fit)

    s = ksub.add_parser("sgd", help="SGD from 0 converges to the min-norm interpolant; random start does not")
    s.add_argument("--dataset", default="mnist", help="(default: mnist)")
    s.add_argument("--train-size", type=_positive(int), default=100,
                   help="n, fewer than the d pixels (default: %(default)s)")
    s.add_argument("--test-size", type=_positive(int), default=10_000, help="(default: %(default)s)")
    s.add_argument("--epochs", type=_positive(int), default=1000, help="(default: %(default)s)")
    s.add_argument("--lr", type=_positive(float), default=None, help="step size (default: 1/max|x|^2)")
    s.add_argument("--init-scale", type=_positive(float), default=0.05,
                   help="std of the random start's entries (default: %(default)s)")
    s.add_argument("--log-every", type=_positive(int), default=100,
                   help="epochs between progress lines (default: %(default)s)")
    s.add_argument("--compare", default="pixels,gabor",
                   help="feature maps for the norm comparison (default: %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="subset, start and order seed (default: 0)")
    _data_args(s)
    s.set_defaults(func=cmd_sgd)
