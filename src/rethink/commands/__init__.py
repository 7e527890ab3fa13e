"""The `rethink` subcommands: one module each, every one with the same pair of functions.

- ``add_parser(sub)`` adds the command's parser (and its subcommands) to `sub`, with
  ``func=run`` as its default;
- ``run(args) -> int`` does the work and returns the exit status.

`rethink.cli` builds the parser from `COMMANDS` (in this order in ``--help``), dispatches, and
maps known errors to one line and exit status 2.
"""

COMMANDS = ("run", "reproduce", "report", "models", "data", "pack", "runs",
            "measures", "expressivity", "kernel", "double_descent", "bench")
