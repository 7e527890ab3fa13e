"""The `rethink` command: parses arguments, calls one function per subcommand.

Known failures (`RethinkError`) become one line on stderr and exit status 2, like argparse's
usage errors; `--debug` re-raises them with the traceback. Unexpected exceptions are not
caught, so a bug never looks like a user error.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from rethink.errors import RethinkError

EXIT_OK, EXIT_USAGE = 0, 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus where to look), exit status 2."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        # argparse takes `-1e-4` or `-inf` for an option ("expected one argument"); read them as the
        # (negative) numbers they are, so that the value's own check names the problem
        self._negative_number_matcher = re.compile(
            r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|infinity)$", re.IGNORECASE)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{value} must be positive")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _decay_per(text: str) -> int | None:
    """'epoch' (of the actual training set) or a number of training samples."""
    return None if text == "epoch" else _positive_int(text)


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", help="dataset directory (default: $RETHINK_DATA, else a user cache dir)")
    p.add_argument("--cache-dir",
                   help="decoded-array cache (default: $RETHINK_CACHE, else ~/.cache/rethink/arrays)")
    p.add_argument("--download", action="store_true", help="download missing official files (online)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="rethink",
        description="Randomization tests of generalization (Zhang et al., ICLR 2017).",
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for known errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    # ---- rethink run
    r = sub.add_parser("run", help="train one run of a randomization test",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    g = r.add_argument_group("data and randomization test")
    g.add_argument("--dataset", default="cifar10", help="cifar10, mnist, folder:PATH or idx:PATH")
    g.add_argument("--corruption", default="true",
                   help="true, partial, random-labels, shuffled-pixels, random-pixels, gaussian")
    g.add_argument("--p", type=float, default=None, help="label corruption probability (partial only)")
    g.add_argument("--label-noise", default="uniform",
                   help="partial: 'uniform' over all K classes (paper) or 'incorrect-only'")
    g.add_argument("--gaussian-stats", default="per-channel", help="per-channel or global")
    g.add_argument("--corrupt-before-crop", action="store_true",
                   help="apply pixel tests at full resolution, before the crop")
    g.add_argument("--train-size", type=_positive_int, default=None, help="stratified training subset")
    g.add_argument("--test-size", type=_positive_int, default=None, help="stratified test subset")
    g.add_argument("--input-size", type=_positive_int, default=28, help="centre-crop size")
    _add_data_args(g)

    g = r.add_argument_group("model and optimization (paper protocol by default)")
    g.add_argument("--model", default="mlp1x512", help="see `rethink models`")
    g.add_argument("--init", default="glorot",
                   help="weight initialization: glorot (TensorFlow's default), torch or he")
    g.add_argument("--lr", type=float, default=None,
                   help="initial learning rate (default: the model's paper value)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--lr-decay", type=float, default=0.95, help="learning-rate decay factor")
    g.add_argument("--decay-per", type=_decay_per, default=50_000, metavar="epoch|N",
                   help="apply the decay per N training samples seen, or per epoch of the actual "
                        "training set (equal on full CIFAR-10)")
    g.add_argument("--batch-size", type=_positive_int, default=128)
    g.add_argument("--weight-decay", type=float, default=0.0, help="L2 coefficient (off by default)")
    g.add_argument("--dropout", type=float, default=0.0, help="dropout rate (off by default)")
    g.add_argument("--augment", default="",
                   help="comma list of crop, flip, rotate, color (ImageNet colour perturbation); "
                        "off by default")
    g.add_argument("--precision", default="auto",
                   help="bf16 autocast or fp32; auto (default): bf16 where the device has it natively")
    g.add_argument("--train-eval", default="full", choices=("full", "screen"),
                   help="per-epoch eval-mode pass over the training set: every example (full), or stop "
                        "once the epoch certainly did not fit (screen: same steps_to_fit, cheaper epochs)")

    g = r.add_argument_group("budget and seeds")
    g.add_argument("--max-epochs", type=_positive_int, default=100)
    g.add_argument("--fit-threshold", type=float, default=1.0,
                   help="full-train accuracy that counts as fitted (steps_to_fit)")
    g.add_argument("--stop-at-fit", action=argparse.BooleanOptionalAction, default=True,
                   help="stop training once fitted")
    g.add_argument("--epochs-past-fit", type=_seed, default=0,
                   help="with --stop-at-fit, train this many epochs past the fit (early-stopping gain)")
    for name in ("corruption-seed", "init-seed", "data-seed", "subset-seed"):
        g.add_argument(f"--{name}", type=_seed, default=0)
    g.add_argument("--seed", type=_seed, default=None, help="set all four seeds at once")
    r.add_argument("--out", default="runs", help="output directory (results.sqlite and run folders)")
    r.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    r.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    r.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    r.add_argument("--nproc", type=_positive_int, default=1,
                   help="data-parallel processes for this run (launches torchrun: one per GPU, or gloo "
                        "on CPU); the global batch and schedule stay those of one process")
    r.set_defaults(func=cmd_run)

    # ---- rethink reproduce
    from rethink.experiments.grids import EXPERIMENTS, PRESETS

    x = sub.add_parser("reproduce", help="the paper's experiments as a resumable sweep, then the report")
    x.add_argument("--preset", default="demo", help=f"one of {', '.join(PRESETS)}")
    x.add_argument("--experiments", default=None, help=f"comma list of {', '.join(EXPERIMENTS)}")
    x.add_argument("--models", default=None, help="comma list narrowing the preset's models")
    x.add_argument("--seeds", type=_positive_int, default=None,
                   help="seeds per point for every experiment (default: the preset's, per model)")
    x.add_argument("--dataset", default=None, help="override the preset's dataset (e.g. folder:PATH)")
    x.add_argument("--out", default="runs", help="output directory (results.sqlite, runs, report/)")
    x.add_argument("--no-report", action="store_true", help="skip writing the report at the end")
    x.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads")
    x.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    x.add_argument("--tensorboard", action="store_true", help="also write TensorBoard event files")
    x.add_argument("--precision", default="auto",
                   help="for every run: auto (default: bf16 where native, else fp32), fp32 or bf16")
    _add_data_args(x)
    ex = x.add_argument_group("executor", "where the runs train (README: Sweeps on a Ray cluster)")
    ex.add_argument("--executor", choices=("local", "ray"), default="local",
                     help="local: one run after another here (default); ray: each run a Ray task")
    ex.add_argument("--ray-address", default=None, metavar="auto|HOST:PORT",
                     help="connect to a running Ray cluster (default: start a local Ray instance)")
    ex.add_argument("--cpus-per-run", type=_positive_int, default=1,
                     help="CPUs (and torch threads) each Ray task asks for (default 1)")
    ex.add_argument("--gpus-per-run", type=_non_negative_float, default=0.0,
                     help="GPUs each Ray task asks for, fractions allowed (default 0)")
    ex.add_argument("--max-retries", type=_seed, default=2,
                     help="Ray retries of a run whose worker died or that raised (default 2)")
    x.set_defaults(func=cmd_reproduce)

    # ---- rethink report
    rp = sub.add_parser("report", help="write the HTML/Markdown report of a sweep")
    rp.add_argument("--out", default="runs", help="output directory holding results.sqlite")
    rp.add_argument("--sweep", default=None, help="sweep id (default: the most recent)")
    rp.add_argument("--theory", action="append", default=[], metavar="DIR",
                    help="also list the theory results stored in DIR (the --out of `rethink expressivity`, "
                         "`kernel` or `measures`); repeatable")
    rp.set_defaults(func=cmd_report)

    # ---- rethink models
    m = sub.add_parser("models", help="list the registered models with their parameter counts")
    m.set_defaults(func=cmd_models)

    # ---- rethink data check
    d = sub.add_parser("data", help="dataset utilities")
    dsub = d.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND",
                            parser_class=_Parser)
    c = dsub.add_parser("check", help="verify and describe what is in the data directory")
    c.add_argument("--data-dir", help="dataset directory (default: $RETHINK_DATA, else a user cache dir)")
    c.add_argument("--cache-dir", help="decoded-array cache (default: $RETHINK_CACHE)")
    c.set_defaults(func=cmd_data_check)

    # ---- rethink pack
    k = sub.add_parser("pack", help="decode an image folder once into memory-mapped shards (ImageNet scale)")
    k.add_argument("src", help="image folder (directory or tarball): {train,test|val}/<class>/<image>")
    k.add_argument("--out", required=True, help="pack directory; train from it with --dataset packed:DIR")
    k.add_argument("--resolution", type=_positive_int, default=299,
                   help="shorter side resized to this, then centre-cropped square (default 299)")
    k.add_argument("--shard-size", type=_positive_int, default=None,
                   help="images per shard file (default: about 1 GiB of pixels each)")
    k.add_argument("--workers", type=_positive_int, default=1, help="decoding processes (default 1)")
    k.set_defaults(func=cmd_pack)

    # ---- rethink runs
    s = sub.add_parser("runs", help="list the runs stored in an output directory")
    s.add_argument("--out", default="runs")
    s.set_defaults(func=cmd_runs)

    _add_theory_commands(sub)
    return parser


def _add_theory_commands(sub: argparse._SubParsersAction) -> None:
    """`rethink expressivity`, `rethink kernel`, `rethink measures`: each module adds its parser."""
    # THEORY COMMANDS: one import and one call per command module
    from rethink.theory import measures_cmd
    measures_cmd.add_parser(sub)
    from rethink.theory import expressivity_cmd
    expressivity_cmd.add_parser(sub)
    from rethink.theory import kernel_cmd
    kernel_cmd.add_parser(sub)
    from rethink.bench import command as bench_cmd
    bench_cmd.add_parser(sub)


def config_from_args(args: argparse.Namespace):  # -> RunConfig
    from rethink.config import RunConfig
    from rethink.machine import resolve_device, resolve_precision, warn_on_stderr
    from rethink.train import distributed

    world = distributed.world_from_env()  # under torchrun only rank 0 warns
    warn = warn_on_stderr if world is None or world.is_main else None
    seeds = {k: getattr(args, k) for k in ("corruption_seed", "init_seed", "data_seed", "subset_seed")}
    if args.seed is not None:
        seeds = dict.fromkeys(seeds, args.seed)
    return RunConfig(
        dataset=args.dataset,
        train_size=args.train_size,
        test_size=args.test_size,
        input_size=args.input_size,
        corruption=args.corruption,
        p=args.p,
        label_noise=args.label_noise,
        gaussian_stats=args.gaussian_stats,
        corrupt_before_crop=args.corrupt_before_crop,
        model=args.model,
        dropout=args.dropout,
        init=args.init,
        lr=args.lr,
        momentum=args.momentum,
        lr_decay=args.lr_decay,
        decay_samples=args.decay_per,
        batch_size=args.batch_size,
        weight_decay=args.weight_decay,
        augment=tuple(a for a in args.augment.split(",") if a),
        max_epochs=args.max_epochs,
        fit_threshold=args.fit_threshold,
        stop_at_fit=args.stop_at_fit,
        epochs_past_fit=args.epochs_past_fit,
        precision=resolve_precision(args.precision, resolve_device(args.device), warn=warn),
        train_eval=args.train_eval,
        **seeds,
    )


def cmd_run(args: argparse.Namespace) -> int:
    from rethink.train import distributed
    from rethink.train.runner import run

    config = config_from_args(args).validate()
    world = distributed.world_from_env()  # set when torchrun started this process
    if args.nproc > 1 and world is None:
        from rethink.data import load_dataset
        from rethink.data.rundata import check_split_size

        # missing or damaged data, sizes the data does not have, batches that cannot be split: one
        # line here, not a failure report from every rank
        raw = load_dataset(config.dataset, args.data_dir, download=args.download, cache_dir=args.cache_dir)
        check_split_size(config.train_size, len(raw.train_labels), "train", raw.name)
        check_split_size(config.test_size, len(raw.test_labels), "test", raw.name)
        n_train = config.train_size or len(raw.train_labels)
        distributed.check_batches(distributed.World(0, args.nproc, 0), n_train, config.batch_size)
        return distributed.launch(args.nproc, _without_option(args.argv, "--nproc"))
    try:
        result = run(
            config,
            out_dir=args.out,
            data_dir=args.data_dir,
            cache_dir=args.cache_dir,
            download=args.download,
            device=args.device,
            tensorboard=args.tensorboard,
            world=world,
        )
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
        distributed.exit_worker(EXIT_OK)
    return EXIT_OK


def _without_option(argv: Sequence[str], option: str) -> list[str]:
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


def _names(text: str | None) -> tuple[str, ...] | None:
    return tuple(t.strip() for t in text.split(",") if t.strip()) if text else None


def _non_negative_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:  # also refuses nan
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def cmd_reproduce(args: argparse.Namespace) -> int:
    from rethink.errors import ConfigError
    from rethink.experiments.sweep import run_sweep

    executor = None  # the local one
    if args.executor == "ray":
        from rethink.experiments.executors import RayExecutor

        executor = RayExecutor(args.ray_address, cpus_per_run=args.cpus_per_run,
                               gpus_per_run=args.gpus_per_run, max_retries=args.max_retries)
    elif args.ray_address is not None:
        raise ConfigError("--ray-address needs --executor ray", "add --executor ray")
    result = run_sweep(
        args.preset,
        experiments=_names(args.experiments),
        models=_names(args.models),
        seeds=args.seeds,
        dataset=args.dataset,
        out_dir=args.out,
        data_dir=args.data_dir,
        cache_dir=args.cache_dir,
        download=args.download,
        device=args.device,
        precision=args.precision,
        report=not args.no_report,
        tensorboard=args.tensorboard,
        executor=executor,
    )
    return EXIT_OK if result.failed == 0 else 1


def cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rethink.errors import StoreError
    from rethink.report import write_report
    from rethink.store import DB_NAME

    if not (Path(args.out) / DB_NAME).exists():
        raise StoreError(f"no results database in {args.out}/",
                         "run `rethink reproduce` first, or pass --out")
    print(f"report: {write_report(args.out, sweep_id=args.sweep, theory_dirs=args.theory)}")
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    from rethink.models import count_params, create_model, list_models

    print(f"{'name':<16} {'paper params':>13} {'ours (paper conv.)':>19} {'ours (total)':>13}  description")
    for info in list_models():
        # each model at the input it was published for: the paper's CIFAR models at 28x28x3 with
        # 10 classes, Inception V3 at 299x299x3 with 1000
        model = create_model(info.name, in_shape=info.native_in_shape, num_classes=info.native_num_classes)
        paper = (f"{info.paper_params:,}" if info.paper_params
                 else f"{info.reference_params:,}*" if info.reference_params else "-")
        print(
            f"{info.name:<16} {paper:>13} {count_params(model):>19,} "
            f"{count_params(model):>13,}  {info.description}"
        )
    print("counts at 28x28x3 input, 10 classes (inception-v3: 299x299x3, 1000 classes); paper convention: "
          "conv/linear weights and biases\n* not in the paper: the standard architecture's count")
    return EXIT_OK


def cmd_data_check(args: argparse.Namespace) -> int:
    from rethink.data.sources import check_data_dir

    for line in check_data_dir(args.data_dir, cache_dir=args.cache_dir):
        print(line)
    return EXIT_OK


def cmd_pack(args: argparse.Namespace) -> int:
    from rethink.data.packed import pack_folder

    m = pack_folder(args.src, args.out, resolution=args.resolution, shard_size=args.shard_size,
                    workers=args.workers)
    counts = {s: m["splits"][s]["count"] for s in ("train", "test")}
    print(f"pack {args.out}: {counts['train']:,} train / {counts['test']:,} test images, "
          f"{m['resolution']}x{m['resolution']}, {len(m['classes'])} classes, content sha256 "
          f"{m['content_sha256'][:16]}...")
    return EXIT_OK


def cmd_runs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rethink.store import DB_NAME, Store

    if not (Path(args.out) / DB_NAME).exists():
        print(f"no results database in {args.out}/")
        return EXIT_OK
    with Store(args.out, readonly=True) as store:
        rows = store.runs()
    print(f"{'run id':<17} {'status':<11} {'model':<15} {'dataset':<8} {'corruption':<16} "
          f"{'n':>6} {'train':>7} {'test':>7} {'steps_to_fit':>12}")
    for r in rows:
        corruption = r["corruption"] + (f" {r['p']:g}" if r["p"] is not None else "")
        acc = [f"{100 * r[k]:.2f}" if r[k] is not None else "-" for k in ("train_acc", "test_acc")]
        print(f"{r['run_id']:<17} {r['status']:<11} {r['model']:<15} {r['dataset']:<8} "
              f"{corruption:<16} {r['train_size']:>6} {acc[0]:>7} {acc[1]:>7} "
              f"{r['steps_to_fit'] if r['steps_to_fit'] is not None else '-':>12}")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv  # `run --nproc` relaunches itself under torchrun with the same arguments
    if getattr(args, "threads", None):  # every command that trains or solves takes --threads
        import torch

        torch.set_num_threads(args.threads)
    try:
        return args.func(args)
    except RethinkError as exc:
        if args.debug:
            raise
        print(f"rethink: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rethink: interrupted; rerun the same command to resume from the last epoch",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
