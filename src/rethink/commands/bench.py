"""`rethink bench [--quick] [--out FILE] [--markdown FILE]`: run the benchmarks, print a table,
write JSON and a Markdown page (docs/benchmarks.md by default for the full run).

--quick (CI) runs every part on tiny sizes in a couple of minutes; its figures are not targets.
The bf16 parts run only where the device computes bf16 natively (`machine.bf16_support`; where it
would be emulated, e.g. a CPU with AVX2 alone, they are skipped and the output says so).
The suite itself is `rethink.bench.suite`, the page `rethink.bench.markdown`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rethink.commands.common import add_data_options, add_threads_option
from rethink.options import names


def add_parser(sub: argparse._SubParsersAction) -> None:
    from rethink.bench.suite import PARTS  # for the help; rethink.config has imported torch already

    parser = sub.add_parser("bench",
                            help="speed and memory against the usual PyTorch idiom and the machine's peak")
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (CI, ~2 min); figures are not targets")
    parser.add_argument("--out", default=None, help="JSON results (default: bench.json, bench-quick.json)")
    parser.add_argument("--markdown", default=None,
                        help="Markdown page (default: docs/benchmarks.md; with --quick, next to the JSON)")
    parser.add_argument("--models", type=names, default=None,
                        help="comma list of models for the throughput part")
    parser.add_argument("--parts", type=names, default=None,
                        help=f"comma list of parts to run (default: all): {', '.join(PARTS)}")
    add_data_options(parser, download=False)
    add_threads_option(parser)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (see scripts/gpu.sh)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from rethink.bench.markdown import render_markdown
    from rethink.bench.suite import PARTS, BenchPlan, run_bench
    from rethink.errors import ConfigError
    from rethink.files import atomic_write

    plan = BenchPlan.quick() if args.quick else BenchPlan.full()
    changes: dict[str, Any] = {}
    if args.models:
        changes["models"] = args.models
    if args.parts:
        unknown = set(args.parts) - set(PARTS)
        if unknown:
            raise ConfigError(
                f"unknown bench part(s) {', '.join(sorted(unknown))}", f"choose from {', '.join(PARTS)}"
            )
        changes.update({fld: empty for part, (fld, empty) in PARTS.items() if part not in args.parts})
    plan = BenchPlan(**{**asdict(plan), **changes})
    results = run_bench(plan, data_dir=args.data_dir, cache_dir=args.cache_dir, device=args.device)
    out = Path(args.out or ("bench-quick.json" if args.quick else "bench.json"))
    atomic_write(out, json.dumps(results, indent=1, default=str).encode())
    markdown = Path(args.markdown or (out.with_suffix(".md") if args.quick else "docs/benchmarks.md"))
    atomic_write(markdown, render_markdown(results).encode())
    print(f"results: {out}, {markdown}")
    return 0
