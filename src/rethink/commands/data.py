"""`rethink data check`: verify and describe what is in the data directory."""

from __future__ import annotations

import argparse

from rethink.commands.common import add_data_options


def add_parser(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("data", help="dataset utilities")
    data_sub = parser.add_subparsers(dest="data_command", required=True, metavar="SUBCOMMAND",
                                     parser_class=type(parser))
    check = data_sub.add_parser("check", help="verify and describe what is in the data directory")
    add_data_options(check, download=False)
    check.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rethink.data.sources import check_data_dir

    for line in check_data_dir(args.data_dir, cache_dir=args.cache_dir):
        print(line)
    return 0
