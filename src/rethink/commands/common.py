"""Options several commands share: where the data and the results are, and CPU threads."""

from __future__ import annotations

import argparse

from rethink.options import positive_int


def add_data_options(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *,
                     download: bool = True) -> None:
    parser.add_argument("--data-dir",
                        help="dataset directory (default: $RETHINK_DATA, else a user cache dir)")
    parser.add_argument("--cache-dir",
                        help="decoded-array cache (default: $RETHINK_CACHE, else ~/.cache/rethink/arrays)")
    if download:
        parser.add_argument("--download", action="store_true",
                            help="download missing official files (online)")


def add_out_option(parser: argparse.ArgumentParser, what: str = "results.sqlite and run folders") -> None:
    parser.add_argument("--out", default="runs", help=f"output directory ({what}; default: runs)")


def add_threads_option(parser: argparse.ArgumentParser, default: int | None = None, help: str = "") -> None:
    """--threads: `rethink.cli` sets torch's CPU threads from it before the command runs."""
    parser.add_argument("--threads", type=positive_int, default=default,
                        help=help or "torch CPU threads (default: torch's)")


def add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
