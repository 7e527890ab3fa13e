"""The `rethink` command: the parser, the dispatch to one command module, the error mapping.

Each subcommand is a module of `rethink.commands` with ``add_parser`` and ``run``. Known
failures (`RethinkError`) become one line on stderr and exit status 2, like argparse's usage
errors; `--debug` re-raises them with the traceback. Unexpected exceptions are not caught, so
a bug never looks like a user error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from rethink.commands import COMMANDS
from rethink.errors import RethinkError
from rethink.options import join_negative_values

EXIT_OK, EXIT_USAGE, EXIT_INTERRUPTED = 0, 2, 130


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (plus where to look), exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="rethink",
                    description="Randomization tests of generalization (Zhang et al., ICLR 2017).")
    parser.add_argument("--debug", action="store_true", help="show tracebacks for known errors")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)
    for name in COMMANDS:
        importlib.import_module(f"rethink.commands.{name}").add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = join_negative_values(list(sys.argv[1:] if argv is None else argv))
    args = build_parser().parse_args(argv)
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
        print("rethink: interrupted; rerun the same command to resume from the last epoch", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
