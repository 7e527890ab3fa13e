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

import os
import resource
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

from rethink.errors import ConfigError
from rethink.options import option, positive_int, positive_number
from rethink.theory import features as ft
from rethink.theory.implicit_sgd import SGDConfig
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


_RC = ft.RandomConvConfig  # the random-conv defaults (docs/results/theory/kernel.md measures each choice)


@dataclass(frozen=True)
class KernelRunConfig:
    """One `rethink kernel fit`; its fields are the command's options."""

    dataset: str = option("mnist", "mnist, cifar10, folder:PATH or idx:PATH")
    features: str = option("pixels", "the feature map", choices=ft.FEATURES)
    kernel: str | None = option(None, f"one of {', '.join(KERNELS)} (default: rbf, linear for random-conv)")
    bandwidth: float | None = option(None, "rbf sigma in exp(-|x-z|^2/(2 sigma^2)) (default: 5 MNIST pixels, "
                                           "1.5 MNIST gabor, 6 CIFAR-10 pixels, else 0.5 x median distance)")
    ridge: float = option(0.0, "solve (K + ridge I) alpha = Y (0: exact interpolation)")
    train_size: int | None = option(None, "stratified training subset (default: all)", parse=positive_int)
    test_size: int | None = option(None, "stratified test subset (default: all)", parse=positive_int)
    filters: int = option(_RC.filters, f"random-conv filters (paper: {PAPER_FILTERS:,})", parse=positive_int)
    filter_source: str = option(_RC.source, "random-conv filters: gaussian N(0, I) or random training-image "
                                            "patches", choices=ft.SOURCES)
    conv_normalize: str = option(_RC.normalize, "random-conv input: per-image standardization, per-patch "
                                                "contrast normalization, or none", choices=ft.NORMALIZATIONS)
    whiten: bool = option(_RC.whiten, "random-conv: ZCA-whiten patches and filters with training-patch "
                                      "statistics")
    rectify: str = option(_RC.rectify, "random-conv: relu max(0, z - t), or symmetric: max(0, z - t) and "
                                       "max(0, -z - t)", choices=ft.RECTIFIERS)
    threshold: float = option(_RC.bias, "random-conv threshold t >= 0")
    random_threshold: bool = option(_RC.random_bias, "random-conv: each filter's threshold from U(-t, t) "
                                                     "instead of t")
    pool_grid: int = option(_RC.grid, "random-conv: average-pool each map over G x G cells",
                            parse=positive_int)
    standardize: bool = option(_RC.standardize, "random-conv: standardize each feature with training "
                                                "statistics, plus an intercept column")
    dtype: str = option("float32", "kernel storage and factorization", choices=tuple(DTYPES))
    block_size: int = option(1024, "kernel and Cholesky block rows", parse=positive_int)
    tol: float = option(1e-6, "relative residual to reach", parse=positive_number)
    seed: int = option(0, "subsets and random filters")

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
        ft.check_random_conv(random_conv_config(self))  # its options are checked whatever the features
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


def _splits(raw: Any, train_size: int | None, test_size: int | None,
            seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, labels, test images, labels): the stratified subsets training would draw
    with this subset seed (`rethink.data.pipeline.randomized_split`), whole splits when unset."""
    from rethink.config import RunConfig
    from rethink.data.pipeline import randomized_split

    data, _ = randomized_split(RunConfig(train_size=train_size, test_size=test_size, subset_seed=seed), raw)
    return data.train_images, data.train_labels, data.test_images, data.test_labels


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
    train_x, train_y, test_x, test_y = _splits(raw, config.train_size, config.test_size, config.seed)
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
        "data": {"train_subset": config.train_size is not None, "test_subset": config.test_size is not None,
                 "content_hash": raw.content_hash},
    }


# ----------------------------------------------------------------------------- sgd demo


@dataclass(frozen=True)
class KernelSgdConfig:
    """One `rethink kernel sgd`; its fields are the command's options."""

    dataset: str = option("mnist", "mnist, cifar10, folder:PATH or idx:PATH")
    train_size: int = option(100, "n, fewer than the d pixels", parse=positive_int)
    test_size: int = option(10_000, "test examples", parse=positive_int)
    epochs: int = option(1000, "SGD epochs", parse=positive_int)
    lr: float | None = option(None, "step size (default: 1/max|x|^2)", parse=positive_number)
    init_scale: float = option(0.05, "std of the random start's entries", parse=positive_number)
    log_every: int = option(100, "epochs between progress lines", parse=positive_int)
    compare: tuple[str, ...] = option(("pixels", "gabor"), "feature maps for the norm comparison")
    seed: int = option(0, "subset, start and order seed")

    def validate(self) -> KernelSgdConfig:
        for name in self.compare:
            ft.get_features(name)  # unknown -> ConfigError naming the known ones
        return self

    def sgd(self) -> SGDConfig:
        return SGDConfig(epochs=self.epochs, lr=self.lr, init_scale=self.init_scale, seed=self.seed,
                         log_every=self.log_every)


def run_sgd_demo(config: KernelSgdConfig, *, data_dir: str | None = None, cache_dir: str | None = None,
                 log=print) -> tuple[dict[str, Any], dict[str, Any]]:
    """SGD from 0 and from a random start on a d > n least-squares problem of real images, and the
    min-norm interpolant's norm and test error on each of the `compare` feature maps."""
    from rethink.data.sources import load_dataset
    from rethink.theory.implicit_sgd import min_norm_comparison, run_sgd

    names = list(config.validate().compare)
    raw = load_dataset(config.dataset, data_dir, cache_dir=cache_dir)
    train_x, train_y, test_x, test_y = _splits(raw, config.train_size, config.test_size, config.seed)
    sgd = config.sgd()
    x, x_test = ft.pixel_features(train_x), ft.pixel_features(test_x)
    n, d = x.shape
    log(f"sgd: least squares on {n} {raw.name} images x {d} pixels (d > n), one-hot targets, "
        f"{sgd.epochs} epochs")
    w_star, runs = run_sgd(x, train_y, x_test, test_y, sgd, log=log)
    star = float(w_star.norm())
    zero, rand = runs
    comparison = min_norm_comparison(
        {name: featurize(KernelRunConfig(features=name, seed=config.seed), train_x, test_x)
         for name in names},
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
           "compare": names, **asdict(sgd)}
    return cfg, result
