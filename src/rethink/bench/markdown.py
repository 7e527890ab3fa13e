"""The Markdown page of `rethink bench` results (docs/benchmarks.md): one function per section,
each returning its lines; the sections of parts left out (no table rows) are dropped."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from rethink.bench.suite import check_targets


def render_markdown(results: dict[str, Any]) -> str:
    lines = [
        *_header(results),
        *_throughput(results),
        *_anatomy(results),
        *_time_to_fit(results),
        *_kernel(results),
        *_stacked(results),
        *_theorem1(results),
        *_data(results),
        *_targets(results),
    ]
    return "\n".join(_without_empty_sections(lines)) + "\n"


def _fmt_rate(v: dict[str, float]) -> str:
    return f"{v['median']:,.0f} ({v['low']:,.0f}-{v['high']:,.0f})"


def _header(results: dict[str, Any]) -> list[str]:
    m = results["machine"]
    return [
        "# `rethink bench` results",
        "",
        f"Plan `{results['plan']['name']}`, run {results['started']}, {results['seconds'] / 60:.1f} min. "
        "Each figure is the median of the timed repetitions after warm-up (min-max in brackets). "
        "What limits each target and what was tried: [benchmarks-analysis.md](benchmarks-analysis.md).",
        "",
        f"Machine: {m['cpu']}, {m['usable_cpus']} usable CPUs, {m['memory_gb']} GB; "
        f"SIMD {', '.join(m['simd'])}; "
        f"ATen CPU capability {m['cpu_capability']}; native bf16: {m['bf16_native']}; torch {m['torch']} "
        f"(MKL {m['mkl']}, oneDNN {m['mkldnn']}, {m['torch_threads']} threads); Python {m['python']}; "
        f"commit {m['git_commit']}.",
        "",
        "Matmul peak (2048 x 2048): "
        + ", ".join(f"{p} {v['median'] / 1e9:.0f} GFLOP/s" for p, v in results["peak"].items())
        + ".",
        *(line for skipped in results.get("skipped", []) for line in ("", f"Note: {skipped}.")),
    ]


def _section(title: str, columns: tuple[str, ...], rows: Iterable[str], intro: str = "") -> list[str]:
    """A '## title' section: an optional paragraph, then a table of these columns and rows."""
    return ["", f"## {title}", "", *([intro, ""] if intro else []),
            "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns), *rows]


def _throughput(results: dict[str, Any]) -> list[str]:
    intro = (
        f"Subset of {results['plan']['train_size']:,} images. Ours: `sgd_step` on batches indexed from "
        "in-memory tensors (what `rethink run` executes). Idiom: per-sample `Dataset`, `DataLoader` with "
        "one worker, NCHW fp32, stock `nn.LocalResponseNorm`; same initial weights. Bare step: ours on a "
        "fixed batch, no data handling. Utilization: FLOPs of one step (`torch.utils.flop_counter`) x "
        "steps/s, over the same-precision matmul peak."
    )
    rows = (
        f"| {r['model']} | {r['precision']} | {_fmt_rate(r['ours'])} | {_fmt_rate(r['idiom'])} | "
        f"{r['ratio']:.2f}x | {_fmt_rate(r['bare_step'])} | {r['flops_per_step'] / 1e9:.1f} | "
        f"{100 * r['utilization']:.0f}% |"
        for r in results["throughput"]
    )
    return _section("Training throughput (images/s, batch 128, 28x28x3 CIFAR-10)",
                    ("model", "precision", "ours", "idiom", "ratio", "bare step", "GFLOP/step",
                     "utilization"), rows, intro)


def _anatomy(results: dict[str, Any]) -> list[str]:
    intro = (
        "Outside share = 1 - (n images at the bare-step rate) / (epoch wall time). An epoch of `rethink "
        "run` includes batching, the eval-mode pass over the full training set and the test set, the "
        "checkpoint and the database row; the idiom's epoch is its loader pass plus a full-train-set "
        "evaluation through a loader."
    )
    rows = (
        f"| {a['model']} | {a['n']:,} | {o['train_eval']} | {o['epoch_s']:.2f} | "
        f"{o['train_s']:.2f} / {o['eval_s']:.2f} | {100 * o['outside_share']:.0f}% | "
        f"{a['idiom']['epoch_s']:.2f} | {100 * a['idiom']['outside_share']:.0f}% |"
        for a in results["anatomy"] for o in (a["ours"], a["ours_screen"])
    )
    return _section("Epoch anatomy (fp32)", ("model", "n", "train eval", "ours: s/epoch", "train / eval s",
                                             "outside", "idiom: s/epoch", "outside"), rows, intro)


def _time_to_fit(results: dict[str, Any]) -> list[str]:
    rows = (
        f"| {r['model']} | {r['n']:,} | {r['status']} | {r['steps_to_fit']} | {r['epochs']} | "
        f"{r['wall_s']:.0f} | {100 * r['test_acc']:.1f}% |"
        for r in results["time_to_fit"]
    )
    return _section("Time to fit random labels (`rethink run`, fp32)",
                    ("model", "n", "status", "steps to fit", "epochs", "wall s", "test acc"), rows)


def _kernel_row(k: dict[str, Any]) -> str:
    if "error" in k:
        return f"| {k['n']:,} | {k['error']} | | | | | | |"
    refs = []
    for method in ("scipy", "sklearn"):
        ref = k.get(method)
        refs.append("-" if ref is None
                    else ref.get("error") or f"{ref['seconds']:.1f} ({ref['peak_gb']:.1f})")
    return (f"| {k['n']:,} | {k['fit_s']:.1f} | {k['floor_s']:.1f} | {k['floor_ratio']:.2f}x | "
            f"{k['peak_gb']:.2f} | {100 * k['test_error']:.2f}% | {refs[0]} | {refs[1]} |")


def _kernel(results: dict[str, Any]) -> list[str]:
    intro = ("Floor: n^3/3 + n^2 d flops at the fp32 matmul peak. scipy: `scipy.linalg.solve(K, Y, "
             "assume_a='pos')` in float64 (kernel build included); scikit-learn: `KernelRidge(alpha=1e-10)`.")
    return _section("Kernel interpolation (`rethink kernel fit`, MNIST, RBF sigma 5, float32 + PCG)",
                    ("n", "fit s", "floor s", "ratio", "peak GB", "test error", "scipy s (GB)",
                     "scikit-learn s (GB)"), map(_kernel_row, results["kernel"]), intro)


def _stacked(results: dict[str, Any]) -> list[str]:
    intro = (
        "k runs of one model (different initializations, each its own batches) trained one after another "
        "with `sgd_step`, or as one stack (`rethink.train.stacked.Stack`, what `rethink reproduce --stack` "
        "trains: parameters, buffers and momentum stacked, the forward `vmap`-ed, per-run SGD; equal to k "
        "plain runs, tested in float64). Images/s summed over the k runs; utilization: k runs' FLOPs per "
        "stacked step x steps/s over the same-precision matmul peak."
    )
    rows = (
        f"| {r.get('model', 'mlp1x512')} | {r['k']} | {r['precision']} | {_fmt_rate(r['sequential'])} | "
        f"{_fmt_rate(r['stacked'])} | {r['speedup']:.2f}x | "
        + (f"{100 * r['utilization']:.0f}% |" if "utilization" in r else "- |")
        for r in results.get("stacked", [])
    )
    return _section("Many runs at once: stacked training",
                    ("model", "k", "precision", "one after another", "stacked", "speed-up", "utilization"),
                    rows, intro)


def _theorem1(results: dict[str, Any]) -> list[str]:
    rows = (f"| {r['n']:,} | {r['d']:,} | {r['weights']:,} | {r['seconds']:.2f} |"
            for r in results["theorem1"])
    return _section("Theorem 1 construction (CIFAR-10 pixels, random labels)",
                    ("n", "d", "weights", "seconds"), rows)


def _data(results: dict[str, Any]) -> list[str]:
    rows = (f"| {r['dataset']} | {r['images']:,} | {r['cold_s']:.1f} | {r['warm_s']:.2f} |"
            for r in results["data"])
    return _section("Data loading", ("dataset", "images", "cold decode s", "warm cache s"), rows)


def _targets(results: dict[str, Any]) -> list[str]:
    rows = (f"| {t} | {v} | {'yes' if ok else '**no**'} |" for t, v, ok in check_targets(results))
    return _section("Targets", ("target", "measured", "met"), rows)


def _without_empty_sections(lines: list[str]) -> list[str]:
    """Drop the '## ' sections whose table has no rows (parts left out with --parts)."""
    starts = [i for i, line in enumerate(lines) if line.startswith("## ")] + [len(lines)]
    kept = lines[: starts[0]]
    for a, b in zip(starts, starts[1:], strict=False):
        section = lines[a:b]
        rule = next((i for i, line in enumerate(section) if line.startswith("|---")), None)
        if rule is None or any(line.startswith("| ") for line in section[rule + 1 :]):
            kept += section
    return kept
