"""`rethink run`: train one run of a randomization test.

Its options are `RunConfig`'s fields (`rethink.options` generates them from the fields'
metadata), plus what does not change the numbers: where data and results live, the device,
threads, TensorBoard, data-parallel processes, and ``--seed`` to set all four seeds at once.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rethink import options
from rethink.commands.common import add_data_options, add_device_option, add_out_option, add_threads_option
from rethink.config import BUDGET, DATA, RunConfig
from rethink.options import non_negative_int, positive_int

SEEDS = ("corruption_seed", "init_seed", "data_seed", "subset_seed")


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("run", help="train one run of a randomization test")
    groups = options.add_options(parser, RunConfig)
    add_data_options(groups[DATA])
    groups[BUDGET].add_argument("--seed", type=non_negative_int, default=None,
                                help="set all four seeds at once")
    add_out_option(parser)
    add_threads_option(parser)
    add_device_option(parser)
    parser.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    parser.add_argument("--nproc", type=positive_int, default=1,
                        help="data-parallel processes for this run (launches torchrun: one per GPU, or "
                             "gloo on CPU); the global batch and schedule stay those of one process")
    parser.set_defaults(func=run)


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's config from parsed options: `--seed` sets every seed, `--precision auto` becomes
    what this machine runs natively (under torchrun only rank 0 warns about it)."""
    from rethink.machine import resolve_device, resolve_precision, warn_on_stderr
    from rethink.train import distributed

    values = options.values_from_args(RunConfig, args)
    if args.seed is not None:
        values.update(dict.fromkeys(SEEDS, args.seed))
    world = distributed.world_from_env()
    warn = warn_on_stderr if world is None or world.is_main else None
    values["precision"] = resolve_precision(values["precision"], resolve_device(args.device), warn=warn)
    return RunConfig.from_dict(values)


def run(args: argparse.Namespace) -> int:
    from rethink.train import distributed
    from rethink.train.runner import run as train_run

    config = config_from_args(args).validate()
    world = distributed.world_from_env()  # set when torchrun started this process
    if args.nproc > 1 and world is None:
        _check_data_for_processes(config, args)
        return distributed.launch(args.nproc, without_option(args.argv, "--nproc"))
    try:
        result = train_run(config, out_dir=args.out, data_dir=args.data_dir, cache_dir=args.cache_dir,
                           download=args.download, device=args.device, tensorboard=args.tensorboard,
                           world=world)
    finally:
        distributed.shutdown()
    if world is None or world.is_main:
        fit = f"fitted at step {result.steps_to_fit}" if result.steps_to_fit is not None else result.status
        print(
            f"done {result.run_id}: {fit}; train acc {100 * result.train_acc:.2f}%, "
            f"test acc {100 * result.test_acc:.2f}% (best {100 * result.best_test_acc:.2f}%), "
            f"gap {100 * (result.train_acc - result.test_acc):.2f} points, {result.epochs} epochs, "
            f"{result.steps} steps, {result.wall_time:.0f}s"
            + (f" [{result.message}]" if result.message else "")
        )
        print(f"results: {args.out}/results.sqlite (run {result.run_id}), "
              f"files in {args.out}/{result.run_id}/")
    if world is not None:
        distributed.exit_worker(0)
    return 0


def _check_data_for_processes(config: RunConfig, args: argparse.Namespace) -> None:
    """Missing or damaged data, sizes the data does not have, batches that cannot be split: one
    line here, before launching, not a failure report from every rank."""
    from rethink.data import load_dataset
    from rethink.data.rundata import check_split_size
    from rethink.train import distributed

    raw = load_dataset(config.dataset, args.data_dir, download=args.download, cache_dir=args.cache_dir)
    check_split_size(config.train_size, len(raw.train_labels), "train", raw.name)
    check_split_size(config.test_size, len(raw.test_labels), "test", raw.name)
    n_train = config.train_size or len(raw.train_labels)
    distributed.check_batches(distributed.World(0, args.nproc, 0), n_train, config.batch_size)


def without_option(argv: Sequence[str], option: str) -> list[str]:
    """`argv` without `option VALUE` / `option=VALUE`."""
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == option:
            skip = True
        elif not item.startswith(option + "="):
            out.append(item)
    return out
