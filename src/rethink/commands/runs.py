"""`rethink runs`: list the runs stored in an output directory."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("runs", help="list the runs stored in an output directory")
    parser.add_argument("--out", default="runs")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rethink.store import DB_NAME, Store

    if not (Path(args.out) / DB_NAME).exists():
        print(f"no results database in {args.out}/")
        return 0
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
    return 0
