"""`rethink report`: write the HTML/Markdown report of a sweep from its results store."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("report", help="write the HTML/Markdown report of a sweep")
    parser.add_argument("--out", default="runs", help="output directory holding results.sqlite")
    parser.add_argument("--sweep", default=None, help="sweep id (default: the most recent)")
    parser.add_argument("--theory", action="append", default=[], metavar="DIR",
                        help="also list the theory results stored in DIR (the --out of `rethink "
                             "expressivity`, `kernel` or `measures`); repeatable")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rethink.errors import StoreError
    from rethink.report import write_report
    from rethink.store import DB_NAME

    if not (Path(args.out) / DB_NAME).exists():
        raise StoreError(f"no results database in {args.out}/",
                         "run `rethink reproduce` first, or pass --out")
    print(f"report: {write_report(args.out, sweep_id=args.sweep, theory_dirs=args.theory)}")
    return 0
