"""`rethink reproduce`: the paper's experiments as a resumable sweep, then the report."""

from __future__ import annotations

import argparse

from rethink import options
from rethink.commands.common import add_data_options, add_device_option, add_out_option, add_threads_option
from rethink.config import RunConfig
from rethink.options import names, non_negative_int, non_negative_number, positive_int, stack_choice


def add_parser(sub: argparse._SubParsersAction) -> None:
    from rethink.experiments.grids import EXPERIMENTS, PRESETS

    parser = sub.add_parser("reproduce", help="the paper's experiments as a resumable sweep, then the report")
    parser.add_argument("--preset", default="demo", help=f"one of {', '.join(PRESETS)}")
    parser.add_argument("--experiments", type=names, default=None,
                        help=f"comma list of {', '.join(EXPERIMENTS)}")
    parser.add_argument("--models", type=names, default=None, help="comma list narrowing the preset's models")
    parser.add_argument("--seeds", type=positive_int, default=None,
                        help="seeds per point for every experiment (default: the preset's, per model)")
    # the run options a sweep can set for all its runs; the dataset is the preset's unless given
    options.add_options(parser, RunConfig, only=("dataset", "precision"), defaults={"dataset": None})
    add_out_option(parser, "results.sqlite, runs, report/")
    parser.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    add_threads_option(parser)
    add_device_option(parser)
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    add_data_options(parser)
    ex = parser.add_argument_group("executor", "where the runs train (README: Sweeps on a Ray cluster)")
    ex.add_argument("--stack", type=stack_choice, default="off", metavar="auto|off|K",
                    help="train up to K compatible runs (one model, size, batch size and precision, no "
                         "dropout) as one stacked model, stored exactly as plain runs; auto: a per-device "
                         "choice (none on CPUs, where it measured no faster); default off")
    ex.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="local: one run after another here (default); ray: each run a Ray task")
    ex.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                    help="connect to a running Ray cluster (default: start a local Ray instance)")
    ex.add_argument("--cpus-per-run", type=positive_int, default=1,
                    help="CPUs (and torch threads) each Ray task asks for (default 1)")
    ex.add_argument("--gpus-per-run", type=non_negative_number, default=0.0,
                    help="GPUs each Ray task asks for, fractions allowed (default 0)")
    ex.add_argument("--max-retries", type=non_negative_int, default=2,
                    help="Ray retries of a run whose worker died or that raised (default 2)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rethink.errors import ConfigError
    from rethink.experiments.executors import LocalExecutor, RayExecutor
    from rethink.experiments.sweep import run_sweep

    executor = LocalExecutor(stack=args.stack)
    if args.executor == "ray":
        executor = RayExecutor(args.ray_address, cpus_per_run=args.cpus_per_run,
                               gpus_per_run=args.gpus_per_run, max_retries=args.max_retries,
                               stack=args.stack)
    elif args.ray_address is not None:
        raise ConfigError("--ray-address needs --executor ray", "add --executor ray")
    result = run_sweep(
        args.preset, experiments=args.experiments or None, models=args.models or None, seeds=args.seeds,
        dataset=args.dataset, out_dir=args.out, data_dir=args.data_dir, cache_dir=args.cache_dir,
        download=args.download, device=args.device, precision=args.precision,
        report=not args.no_report, tensorboard=args.tensorboard, executor=executor,
    )
    return 0 if result.failed == 0 else 1
