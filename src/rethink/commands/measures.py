"""`rethink measures`: complexity measures of stored runs, Rademacher by randomization, stability.

    rethink measures runs --out DIR [--sweep ID] [--record-out DIR2]
    rethink measures rademacher --models mlp1x512,linear --sizes 100,500 --draws 3 --out DIR
    rethink measures stability --model mlp1x512 --train-size 1000 --corruption true --out DIR

Each prints progress lines and a final table, and records its results in the `theory` table
of the results store (`--out`, or `--record-out` for `runs`, whose store is only read).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from rethink.commands.common import add_data_options, add_out_option, add_threads_option
from rethink.errors import ConfigError
from rethink.options import add_options, names, values_from_args
from rethink.theory.rademacher import RademacherConfig
from rethink.theory.stability import StabilityConfig


def _data_args(p: argparse.ArgumentParser) -> None:
    add_data_options(p, download=False)
    add_threads_option(p)


def add_parser(sub: argparse._SubParsersAction) -> None:
    m = sub.add_parser("measures", help="complexity measures: stored runs, Rademacher, stability")
    msub = m.add_subparsers(dest="measures_command", required=True, metavar="MODE",
                            parser_class=type(m))
    m.set_defaults(func=run)

    r = msub.add_parser("runs", help="norms, margins, bounds and sharpness of a store's finished runs, "
                                     "and their Kendall tau with the generalization gap")
    r.add_argument("--out", default="runs", help="output directory holding results.sqlite (read only)")
    r.add_argument("--sweep", default=None, help="only this sweep's runs (default: every finished run)")
    r.add_argument("--runs", type=names, default=None, help="comma list of run ids")
    r.add_argument("--record-out", default=None,
                   help="where to record the results (default: --out; use another directory while a "
                        "sweep is still writing there)")
    r.add_argument("--measures", type=names, default=None,
                   help="comma list (default: all); see the module docs")
    r.add_argument("--sharpness-draws", type=int, default=5)
    r.add_argument("--sharpness-examples", type=int, default=1000)
    r.add_argument("--recompute", action="store_true", help="ignore results recorded before")
    r.add_argument("--markdown", default=None, metavar="FILE", help="also write the tables as Markdown")
    _data_args(r)

    d = msub.add_parser("rademacher", help="empirical Rademacher complexity by fitting random signs")
    d.add_argument("--models", type=names, default=("mlp1x512", "linear"),
                   help="comma list: registered models and 'linear' (default: mlp1x512,linear)")
    add_options(d, RademacherConfig)
    add_out_option(d, "results.sqlite")
    _data_args(d)

    s = msub.add_parser("stability", help="retrain with one example replaced; held-out loss change")
    add_options(s, StabilityConfig)
    add_out_option(s, "results.sqlite")
    _data_args(s)


def run(args: argparse.Namespace) -> int:
    modes = {"runs": cmd_runs, "rademacher": cmd_rademacher, "stability": cmd_stability}
    return modes[args.measures_command](args)


def _record(out: str | Path, kind: str, config: dict[str, Any], result: dict[str, Any]) -> None:
    from rethink.machine import software_versions
    from rethink.store import Store

    with Store(out) as store:
        store.record_theory(kind, config, result, software_versions())


# ---------------------------------------------------------------------------- runs


def _fmt(v: float | None) -> str:
    from rethink.theory.measures import fmt_value

    return fmt_value(v)


def runs_table(results: list[dict[str, Any]], names: tuple[str, ...]) -> list[str]:
    head = f"{'run':<16} {'model':<14} {'labels':<13} {'reg':<8} {'n':>5} {'train':>6} {'test':>6} {'gap':>5}"
    lines = [head + "".join(f" {n[:11]:>11}" for n in names)]
    for r in results:
        lines.append(
            f"{r['run_id']:<16} {r['model']:<14} {r['labels']:<13} {r['regularizer']:<8} "
            f"{r['train_size']:>5} {100 * r['train_acc']:>6.1f} {100 * r['test_acc']:>6.1f} "
            f"{100 * r['gap']:>5.1f}"
            + "".join(f" {_fmt(r['values'].get(n)):>11}" for n in names))
    return lines


def tau_table(taus: dict[str, dict[str, Any]]) -> list[str]:
    models = sorted({m for v in taus.values() for m in v["by_model"]})
    lines = [f"{'measure':<20} {'tau (all)':>10}" + "".join(f" {m[:14]:>14}" for m in models)]
    for name, v in taus.items():
        def cell(t: dict[str, Any] | None) -> str:
            return "-" if t is None or t["tau"] is None else f"{t['tau']:+.2f} ({t['runs']})"

        by_model = "".join(f" {cell(v['by_model'].get(m)):>14}" for m in models)
        lines.append(f"{name:<20} {cell(v):>10}{by_model}")
    return lines


def pairs_table(pairs: list[tuple[dict[str, Any], dict[str, Any]]], names: tuple[str, ...]) -> list[str]:
    lines = []
    for true, rand in pairs:
        lines.append(f"{true['model']} (n={true['train_size']}, {true['regularizer']}): "
                     f"train error 0 for both; test {100 * true['test_acc']:.1f}% (true) vs "
                     f"{100 * rand['test_acc']:.1f}% (random)")
        for n in names:
            a, b = true["values"].get(n), rand["values"].get(n)
            ratio = f"{b / a:.3g}" if a not in (None, 0) and b is not None else "-"
            lines.append(f"    {n:<20} true {_fmt(a):>10}   random {_fmt(b):>10}   random/true {ratio:>7}")
    return lines


def cmd_runs(args: argparse.Namespace) -> int:
    from rethink.store import Store
    from rethink.theory.measures import MeasureOptions, measure_runs
    from rethink.theory.sharpness import SharpnessConfig

    options = MeasureOptions(measures=args.measures or None,
                             sharpness=SharpnessConfig(draws=args.sharpness_draws,
                                                       examples=args.sharpness_examples)).validate()
    record_out = Path(args.record_out or args.out)
    recorded = []
    if not args.recompute and (record_out / "results.sqlite").is_file():
        with Store(record_out, readonly=True) as store:
            recorded = store.theory("measures")
    report = measure_runs(args.out, sweep=args.sweep, run_ids=args.runs or None, options=options,
                          record=lambda c, r: _record(record_out, "measures", c, r), recorded=recorded,
                          data_dir=args.data_dir, cache_dir=args.cache_dir)
    print("\nmeasures (gap = train - test accuracy, points):")
    for start in range(0, len(report.names), 7):  # 7 measures a table keeps lines readable
        print("\n".join(runs_table(report.results, report.names[start : start + 7])) + "\n")
    if report.pairs:
        print("\ntrue vs random labels at equal training error:")
        print("\n".join(pairs_table(report.pairs, report.names)))
    print("\nKendall tau of each measure with the gap, fitted runs (number of runs):")
    print("\n".join(tau_table(report.taus)))
    print(f"\n{report.summary}")
    print(f"results: {record_out}/results.sqlite (theory kind 'measures')")
    if args.markdown:
        from rethink.files import atomic_write

        atomic_write(Path(args.markdown), markdown_tables(report).encode())
        print(f"tables: {args.markdown}")
    return 0


def _md(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_tables(report: Any) -> str:
    """The runs, true-vs-random and Kendall tau tables of a RunsReport, as Markdown."""
    names = list(report.names)
    head = ["run", "model", "labels", "reg.", "n", "train %", "test %", "gap", *names]
    lines = [_md(head), _md(["---"] * len(head))]
    for r in report.results:
        acc = [f"{100 * r[k]:.1f}" for k in ("train_acc", "test_acc", "gap")]
        lines.append(_md([r["run_id"], r["model"], r["labels"], r["regularizer"], str(r["train_size"]), *acc,
                          *(_fmt(r["values"].get(n)) for n in names)]))
    if report.pairs:  # one row per pair: random-label value / true-label value of each measure
        head = ["model", "n", "reg.", "test % true", "test % random", *(f"{n} ratio" for n in names)]
        lines += ["", _md(head), _md(["---"] * len(head))]
        for t, r in report.pairs:
            cells = [t["model"], str(t["train_size"]), t["regularizer"], f"{100 * t['test_acc']:.1f}",
                     f"{100 * r['test_acc']:.1f}"]
            for n in names:
                a, b = t["values"].get(n), r["values"].get(n)
                cells.append(f"{b / a:.3g}" if a not in (None, 0) and b is not None else "-")
            lines.append(_md(cells))
    models = sorted({m for v in report.taus.values() for m in v["by_model"]})

    def cell(t: dict[str, Any] | None) -> str:
        return "-" if t is None or t["tau"] is None else f"{t['tau']:+.2f} ({t['runs']})"

    head = ["measure", "all fitted runs", *models]
    lines += ["", _md(head), _md(["---"] * len(head))]
    for n, v in report.taus.items():
        lines.append(_md([n, cell(v), *(cell(v["by_model"].get(m)) for m in models)]))
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- rademacher


def cmd_rademacher(args: argparse.Namespace) -> int:
    from rethink.data.sources import load_dataset
    from rethink.theory.rademacher import check_model, rademacher

    if not args.models:
        raise ConfigError("no --models given", "e.g. --models mlp1x512,linear")
    values = values_from_args(RademacherConfig, args)
    configs = [RademacherConfig(model=m, **values) for m in args.models]
    for c in configs:
        check_model(c.model)
        c.validate()
    raw = load_dataset(args.dataset, args.data_dir, cache_dir=args.cache_dir)
    table = []
    for c in configs:
        print(f"{c.model}: fitting {c.draws} random sign vectors at n = {', '.join(map(str, c.sizes))}")
        points = rademacher(raw, c)
        table.extend(points)
        line = ", ".join(f"n={p.n}: {p.sign_mean:.3f}" for p in points)
        pooled = f", inputs pooled to {c.pool}x{c.pool}" if c.pool else ""
        summary = (f"{c.model} on {c.dataset}{pooled}: empirical Rademacher complexity (sign outputs, "
                   f"{c.draws} draws) {line}")
        _record(args.out, "rademacher", _plain(c),
                {"points": [p.to_dict() for p in points], "summary": summary})
    print(f"\n{'model':<16} {'n':>6} {'R_n (sign)':>11} {'std':>6} {'R_n (clip)':>11} {'fitted':>7} "
          f"{'epochs':>7}")
    for p in table:
        fitted = sum(d.fitted for d in p.draws)
        epochs = "lstsq" if p.model == "linear" else f"{max(d.epochs for d in p.draws)}"
        print(f"{p.model:<16} {p.n:>6} {p.sign_mean:>11.3f} {p.sign_std:>6.3f} {p.clip_mean:>11.3f} "
              f"{fitted:>3}/{len(p.draws):<3} {epochs:>7}")
    print(f"results: {args.out}/results.sqlite (theory kind 'rademacher')")
    return 0


def _plain(config: Any) -> dict[str, Any]:
    from dataclasses import asdict

    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()}


# ---------------------------------------------------------------------------- stability


def cmd_stability(args: argparse.Namespace) -> int:
    from rethink.data.sources import load_dataset
    from rethink.theory.stability import rows_to_dicts, stability

    config = StabilityConfig(**values_from_args(StabilityConfig, args)).validate()
    raw = load_dataset(args.dataset, args.data_dir, cache_dir=args.cache_dir)
    print(f"stability of {config.model} on {config.train_size} {config.dataset} images "
          f"({config.corruption}), {config.replacements} replaced examples, {config.epochs} epochs")
    rows = stability(raw, config)
    print(f"\n{'epoch':>5} {'train acc':>9} {'held-out loss':>13} {'mean |dl|':>10} {'max |dl|':>9} "
          f"{'removed dl':>10} {'||dtheta||':>10}")
    for r in rows:
        print(f"{r.epoch:>5} {100 * r.train_acc:>8.2f}% {r.heldout_loss:>13.4f} {r.mean_abs:>10.4f} "
              f"{r.max_abs:>9.4f} {r.removed_gain:>10.4f} {r.param_dist:>10.4f}")
    last = rows[-1]
    summary = (f"{config.model}, n={config.train_size}, {config.corruption}: after {last.epoch} epochs "
               f"(train acc {100 * last.train_acc:.1f}%) replacing one example changes the held-out loss by "
               f"{last.mean_abs:.4f} on average and {last.max_abs:.4f} at most ({config.holdout} points, "
               f"{config.replacements} replacements); the removed example's loss rises by "
               f"{last.removed_gain:.3f}")
    _record(args.out, "stability", _plain(config), {"rows": rows_to_dicts(rows), "summary": summary})
    print(f"\n{summary}\nresults: {args.out}/results.sqlite (theory kind 'stability')")
    return 0
