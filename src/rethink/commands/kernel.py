"""`rethink kernel`: Section 5 of Zhang et al. (2017) from the command line.

- `rethink kernel fit`: minimum-norm kernel interpolation (K alpha = Y, exactly unless --ridge)
  of MNIST or CIFAR-10 on pixels, Gabor wavelet features or random convolutional features;
  reports train error (0 when interpolating), test error beside the paper's, the RKHS norm, the
  residual, time and peak memory, and records the result in the store's `theory` table. Its
  options are `KernelRunConfig`'s fields.
- `rethink kernel sgd`: SGD from w = 0 converges to the minimum-norm interpolant of a d > n
  least-squares problem on real data, SGD from a random start to a larger-norm one; plus the
  min-norm solution's norm and test error on pixels vs. Gabor features.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import Any

from rethink import options
from rethink.commands.common import add_data_options, add_out_option, add_threads_option
from rethink.theory.kernel_runs import KernelRunConfig, KernelSgdConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    kernel = sub.add_parser("kernel",
                            help="Section 5: minimum-norm kernel interpolation and SGD's implicit bias")
    modes = kernel.add_subparsers(dest="kernel_command", required=True, metavar="SUBCOMMAND",
                                  parser_class=type(kernel))
    kernel.set_defaults(func=run)

    fit = modes.add_parser("fit", help="solve K alpha = Y exactly; train/test error, RKHS norm, time, memory")
    options.add_options(fit, KernelRunConfig)
    _common(fit)

    sgd = modes.add_parser("sgd",
                           help="SGD from 0 converges to the min-norm interpolant; random start does not")
    options.add_options(sgd, KernelSgdConfig)
    _common(sgd)


def _common(parser: argparse.ArgumentParser) -> None:
    add_data_options(parser, download=False)
    add_out_option(parser, "results.sqlite")
    add_threads_option(parser)


def run(args: argparse.Namespace) -> int:
    return {"fit": _fit, "sgd": _sgd}[args.kernel_command](args)


def _fit(args: argparse.Namespace) -> int:
    from rethink.theory.kernel_runs import run_kernel

    config = KernelRunConfig(**options.values_from_args(KernelRunConfig, args)).validate()
    result = run_kernel(config, data_dir=args.data_dir, cache_dir=args.cache_dir)
    key = _record(args.out, {"experiment": "fit", **asdict(config), "bandwidth": result["bandwidth"]}, result)
    print(result["summary"])
    print(f"results: {args.out}/results.sqlite (theory kernel {key})")
    return 0


def _sgd(args: argparse.Namespace) -> int:
    from rethink.theory.kernel_runs import run_sgd_demo

    sgd = KernelSgdConfig(**options.values_from_args(KernelSgdConfig, args))
    config, result = run_sgd_demo(sgd, data_dir=args.data_dir, cache_dir=args.cache_dir)
    for row in result["norm_vs_generalization"]:
        print(f"min-norm linear interpolant on {row['features']} ({row['dim']} dims, rms "
              f"{row['feature_rms']:.3f}): norm {row['norm']:.4g}, train error "
              f"{100 * row['train_error']:.2f}%, test error {100 * row['test_error']:.2f}%")
    key = _record(args.out, config, result)
    print(result["summary"])
    print(f"results: {args.out}/results.sqlite (theory kernel {key})")
    return 0


def _record(out: str, config: dict[str, Any], result: dict[str, Any]) -> str:
    from rethink.machine import software_versions
    from rethink.store import Store

    with Store(out) as store:
        return store.record_theory("kernel", config, result, software_versions())
