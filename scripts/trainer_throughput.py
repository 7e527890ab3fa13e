"""Training throughput of `rethink run` itself, per model and precision, on real CIFAR-10.

Each measurement is a real run through the runner (batches by indexing from in-memory
tensors, the paper's protocol, batch 128) on a stratified subset; the throughput is the number
of training images divided by the time of the SGD steps of one epoch (eval excluded), taken
as the median over the epochs after the first (the first pays one-off warm-up costs).

    python scripts/trainer_throughput.py [--train-size 3840] [--epochs 3] [--models a,b] [--precisions auto]

--precisions auto (the default) is fp32, and bf16 where the CPU computes it natively; an explicit
list is kept (bf16 where it is emulated warns: it runs far slower than fp32).

The full benchmark, with the idiom baseline and utilization, is `rethink bench`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile

import torch

from rethink.config import RunConfig
from rethink.machine import bf16_support, emulated_bf16_warning, software_versions
from rethink.models import list_models
from rethink.store import Store
from rethink.train.runner import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-size", type=int, default=3840)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", default=",".join(m.name for m in list_models()))
    parser.add_argument("--precisions", default="auto", help="auto, or a comma list of fp32, bf16")
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args()

    native, why = bf16_support(torch.device("cpu"))
    if args.precisions == "auto":
        precisions = ["fp32", "bf16"] if native else ["fp32"]
        if not native:
            print(f"bf16 skipped: {why}; fp32 only", file=sys.stderr)
    else:
        precisions = args.precisions.split(",")
        if "bf16" in precisions and not native:
            print(f"warning: {emulated_bf16_warning('bf16', torch.device('cpu'))}", file=sys.stderr)
    v = software_versions()
    print(f"torch {v['torch']}, {v['torch_threads']} threads, {v['cpu']}")
    print(f"{'model':<16} {'precision':<9} {'images/s':>9}   (per-epoch: min..max)")
    with tempfile.TemporaryDirectory() as out:
        for model in args.models.split(","):
            for precision in precisions:
                config = RunConfig(
                    dataset="cifar10", model=model, corruption="random-labels",
                    train_size=args.train_size, test_size=1000, max_epochs=args.epochs,
                    stop_at_fit=False, precision=precision,
                )
                run(config, out_dir=out, data_dir=args.data_dir, log=lambda s: None)
                with Store(out) as store:
                    epochs = store.epochs(config.run_id)[1:]
                rates = [args.train_size / e["train_time"] for e in epochs]
                print(f"{model:<16} {precision:<9} {statistics.median(rates):>9.0f}   "
                      f"({min(rates):.0f}..{max(rates):.0f})", flush=True)


if __name__ == "__main__":
    main()
