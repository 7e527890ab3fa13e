"""`rethink bench [--quick] [--out FILE] [--markdown FILE]`: run the benchmarks, print a table,
write JSON and a Markdown page (docs/benchmarks.md by default for the full run).

--quick (CI) runs every part on tiny sizes in a couple of minutes; its figures are not targets.
The bf16 parts run only where the device computes bf16 natively (`machine.bf16_support`; where it
would be emulated, e.g. a CPU with AVX2 alone, they are skipped and the output says so).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from rethink.bench import solvers, training
from rethink.bench.machine import describe_machine
from rethink.bench.timing import matmul_peak
from rethink.data.sources import load_dataset
from rethink.errors import ConfigError
from rethink.machine import bf16_support
from rethink.models import list_models

# Steps per timed repetition: enough for ~1 s of work per repetition at full size.
STEPS = {"mlp1x512": 40, "mlp3x512": 30, "alexnet": 8, "inception": 2, "inception-nobn": 2}

# Targets from issue 5: (fp32, bf16) speed-up over the idiom, utilization of the same-precision peak.
RATIO_TARGETS = {
    "mlp1x512": (3.0, 4.5),
    "mlp3x512": (3.0, 4.5),
    "alexnet": (1.4, 2.8),
    "inception": (1.3, 2.4),
    "inception-nobn": (1.3, 2.4),
}
UTILIZATION_TARGETS = {"fp32": 0.60, "bf16": 0.45}
OUTSIDE_TARGET = 0.10


# --parts: each part is driven by one field of the plan; leaving a part out empties its field.
PARTS = {
    "throughput": ("models", ()),
    "anatomy": ("anatomy", {}),
    "fit": ("fit", ()),
    "kernel": ("kernel_sizes", ()),
    "theorem1": ("theorem1_sizes", ()),
    "stacked": ("stacked", ()),
    "data": ("data", ()),
}


@dataclass(frozen=True)
class BenchPlan:
    """What a run measures; `quick()` and `full()` are the two sizes."""

    name: str
    models: tuple[str, ...]
    precisions: tuple[str, ...] = ("fp32", "bf16")
    train_size: int = 10_000
    reps: int = 5
    step_scale: float = 1.0
    anatomy: dict[str, int] = field(default_factory=dict)  # model -> train size
    fit: tuple[tuple[str, int], ...] = ()  # (model, train size) for time to fit random labels
    kernel_sizes: tuple[int, ...] = ()
    reference_sizes: tuple[int, ...] = ()
    theorem1_sizes: tuple[int, ...] = ()
    data: tuple[str, ...] = ()
    stacked: tuple[int, ...] = ()  # numbers of MLP 1x512 runs stacked in one process

    @classmethod
    def quick(cls) -> BenchPlan:
        return cls(
            "quick",
            ("mlp1x512", "alexnet"),
            train_size=1024,
            reps=2,
            step_scale=0.25,
            anatomy={"mlp1x512": 1024},
            fit=(("mlp1x512", 300),),
            kernel_sizes=(1000,),
            reference_sizes=(1000,),
            theorem1_sizes=(1000, 5000),
            data=("mnist",),
            stacked=(2,),
        )

    @classmethod
    def full(cls) -> BenchPlan:
        return cls(
            "full",
            tuple(m.name for m in list_models() if m.name in STEPS),
            anatomy={"mlp1x512": 10_000, "alexnet": 5_000, "inception": 1_000},
            fit=(("mlp1x512", 10_000), ("alexnet", 5_000)),
            kernel_sizes=(5_000, 10_000, 20_000, 60_000),
            reference_sizes=(5_000, 10_000, 20_000),
            theorem1_sizes=(1_000, 10_000, 50_000),
            data=("mnist", "cifar10"),
            stacked=(2, 4, 8),
        )


def native_precisions(plan: BenchPlan, device: torch.device) -> tuple[BenchPlan, str | None]:
    """The plan without bf16 where the device would emulate it (~20-100x slower than fp32 on a CPU
    with AVX2 alone: minutes instead of seconds), and a line saying why; else the plan and None."""
    native, why = bf16_support(device)
    if native or "bf16" not in plan.precisions:
        return plan, None
    kept = tuple(p for p in plan.precisions if p != "bf16")
    return replace(plan, precisions=kept), f"bf16 skipped: {why}; {', '.join(kept)} only"


def run_bench(
    plan: BenchPlan, *, data_dir: str | None, cache_dir: str | None, device: str = "cpu", log=print
) -> dict[str, Any]:
    started = time.time()
    plan, skipped = native_precisions(plan, torch.device(device))
    out: dict[str, Any] = {
        "plan": asdict(plan),
        "machine": describe_machine(torch.device(device)),
        "started": time.ctime(),
        "skipped": [skipped] if skipped else [],
    }
    if skipped:
        log(skipped)
    out["peak"] = {p: matmul_peak(p, device=device) for p in plan.precisions}
    log("matmul peak: " + ", ".join(f"{p} {v['median'] / 1e9:.0f} GFLOP/s" for p, v in out["peak"].items()))
    cifar = load_dataset("cifar10", data_dir, cache_dir=cache_dir)

    out["throughput"] = []
    for model in plan.models:
        for precision in plan.precisions:
            s = training.setup(cifar, model, precision, plan.train_size, device=device)
            steps = max(1, round(STEPS[model] * plan.step_scale))
            r = training.throughput(s, steps=steps, reps=plan.reps)
            r.update(
                model=model,
                precision=precision,
                utilization=r["achieved_flops"] / out["peak"][precision]["median"],
            )
            out["throughput"].append(r)
            log(
                f"{model:<15} {precision}: ours {r['ours']['median']:8.0f} img/s, idiom "
                f"{r['idiom']['median']:7.0f} ({r['ratio']:.2f}x), "
                f"bare step {r['bare_step']['median']:8.0f}, "
                f"utilization {100 * r['utilization']:.0f}%"
            )

    bare = {(r["model"], r["precision"]): r["bare_step"]["median"] for r in out["throughput"]}
    out["anatomy"] = []
    for model, n in plan.anatomy.items():
        s = training.setup(cifar, model, "fp32", n, device=device)
        rate = bare.get((model, "fp32")) or training.throughput(s, steps=2, reps=2)["bare_step"]["median"]
        a = {
            mode: training.anatomy(
                s, epochs=3, bare_images_per_s=rate, data_dir=data_dir, cache_dir=cache_dir, train_eval=mode
            )
            for mode in ("full", "screen")
        }
        i = training.idiom_anatomy(s, bare_images_per_s=rate)
        out["anatomy"].append(
            {"model": model, "n": n, "ours": a["full"], "ours_screen": a["screen"], "idiom": i}
        )
        log(
            f"epoch anatomy {model} n={n}: ours {a['full']['epoch_s']:.2f} s/epoch, "
            f"{100 * a['full']['outside_share']:.0f}% outside compute (screened train eval: "
            f"{a['screen']['epoch_s']:.2f} s, {100 * a['screen']['outside_share']:.0f}%); "
            f"idiom {i['epoch_s']:.2f} s, {100 * i['outside_share']:.0f}%"
        )

    out["time_to_fit"] = []
    for model, n in plan.fit:
        r = training.time_to_fit(model, n, data_dir=data_dir, cache_dir=cache_dir, device=device)
        out["time_to_fit"].append(r)
        log(
            f"time to fit random labels, {model} n={n}: {r['status']} at step {r['steps_to_fit']} "
            f"({r['epochs']} epochs), {r['wall_s']:.0f} s"
        )

    out["kernel"] = []
    for n in plan.kernel_sizes:
        r = solvers.kernel_fit(n, data_dir=data_dir, cache_dir=cache_dir)
        if "error" not in r:
            r["floor_s"] = solvers.kernel_floor(n, r["d"], out["peak"]["fp32"]["median"])
            r["floor_ratio"] = r["fit_s"] / r["floor_s"]
        for method in ("scipy", "sklearn"):
            if n in plan.reference_sizes:
                r[method] = solvers.reference_fit(method, n, data_dir=data_dir, cache_dir=cache_dir)
        out["kernel"].append(r)
        log(
            f"kernel n={n}: "
            + (
                r.get("error")
                or f"{r['fit_s']:.1f} s fit ({r['floor_ratio']:.2f}x the "
                f"FLOP floor), peak {r['peak_gb']:.2f} GB"
            )
        )

    out["stacked"] = []
    for k in plan.stacked:
        for precision in plan.precisions:
            s = training.setup(cifar, "mlp1x512", precision, plan.train_size, device=device)
            r = training.stacked_mlps(s, k=k, steps=max(1, round(10 * plan.step_scale)), reps=plan.reps)
            out["stacked"].append(r)
            log(
                f"{k} MLP 1x512 runs {precision}: one after another {r['sequential']['median']:.0f} img/s, "
                f"stacked {r['stacked']['median']:.0f} img/s ({r['speedup']:.2f}x)"
            )

    out["theorem1"] = solvers.theorem1_construction(cifar.train_images, list(plan.theorem1_sizes))
    for r in out["theorem1"]:
        log(f"Theorem 1 construction n={r['n']}: {r['seconds']:.2f} s")
    out["data"] = [solvers.data_loading(name, data_dir) for name in plan.data]
    for r in out["data"]:
        log(f"data {r['dataset']}: cold {r['cold_s']:.1f} s, warm {r['warm_s']:.2f} s")
    out["seconds"] = time.time() - started
    return out


def check_targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for each target the results cover."""
    rows = []
    for r in results["throughput"]:
        want = RATIO_TARGETS[r["model"]][0 if r["precision"] == "fp32" else 1]
        rows.append(
            (f"{r['model']} {r['precision']} >= {want}x the idiom", f"{r['ratio']:.2f}x", r["ratio"] >= want)
        )
        want = UTILIZATION_TARGETS[r["precision"]]
        rows.append(
            (
                f"{r['model']} {r['precision']} utilization >= {100 * want:.0f}%",
                f"{100 * r['utilization']:.0f}%",
                r["utilization"] >= want,
            )
        )
    for a in results["anatomy"]:
        for share, mode in ((o["outside_share"], o["train_eval"]) for o in (a["ours"], a["ours_screen"])):
            rows.append(
                (
                    f"{a['model']} outside-compute share <= {100 * OUTSIDE_TARGET:.0f}% (train eval {mode})",
                    f"{100 * share:.0f}%",
                    share <= OUTSIDE_TARGET,
                )
            )
    for k in results["kernel"]:
        if "floor_ratio" in k:
            rows.append(
                (
                    f"kernel n={k['n']} within 1.5x of its FLOP floor",
                    f"{k['floor_ratio']:.2f}x",
                    k["floor_ratio"] <= 1.5,
                )
            )
    return rows


def _fmt_rate(v: dict[str, float]) -> str:
    return f"{v['median']:,.0f} ({v['low']:,.0f}-{v['high']:,.0f})"


def render_markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
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
        "",
        "## Training throughput (images/s, batch 128, 28x28x3 CIFAR-10)",
        "",
        f"Subset of {results['plan']['train_size']:,} images. Ours: `sgd_step` on batches indexed from "
        "in-memory tensors (what `rethink run` executes). Idiom: per-sample `Dataset`, `DataLoader` with "
        "one worker, NCHW fp32, stock `nn.LocalResponseNorm`; same initial weights. Bare step: ours on a "
        "fixed batch, no data handling. Utilization: FLOPs of one step (`torch.utils.flop_counter`) x "
        "steps/s, over the same-precision matmul peak.",
        "",
        "| model | precision | ours | idiom | ratio | bare step | GFLOP/step | utilization |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        lines.append(
            f"| {r['model']} | {r['precision']} | {_fmt_rate(r['ours'])} | {_fmt_rate(r['idiom'])} | "
            f"{r['ratio']:.2f}x | {_fmt_rate(r['bare_step'])} | {r['flops_per_step'] / 1e9:.1f} | "
            f"{100 * r['utilization']:.0f}% |"
        )
    lines += [
        "",
        "## Epoch anatomy (fp32)",
        "",
        "Outside share = 1 - (n images at the bare-step rate) / (epoch wall time). An epoch of `rethink "
        "run` includes batching, the eval-mode pass over the full training set and the test set, the "
        "checkpoint and the database row; the idiom's epoch is its loader pass plus a full-train-set "
        "evaluation through a loader.",
        "",
        "| model | n | train eval | ours: s/epoch | train / eval s | outside | idiom: s/epoch | outside |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for a in results["anatomy"]:
        i = a["idiom"]
        for o in (a["ours"], a["ours_screen"]):
            lines.append(
                f"| {a['model']} | {a['n']:,} | {o['train_eval']} | {o['epoch_s']:.2f} | "
                f"{o['train_s']:.2f} / {o['eval_s']:.2f} | {100 * o['outside_share']:.0f}% | "
                f"{i['epoch_s']:.2f} | {100 * i['outside_share']:.0f}% |"
            )
    lines += [
        "",
        "## Time to fit random labels (`rethink run`, fp32)",
        "",
        "| model | n | status | steps to fit | epochs | wall s | test acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results["time_to_fit"]:
        lines.append(
            f"| {r['model']} | {r['n']:,} | {r['status']} | {r['steps_to_fit']} | {r['epochs']} | "
            f"{r['wall_s']:.0f} | {100 * r['test_acc']:.1f}% |"
        )
    lines += [
        "",
        "## Kernel interpolation (`rethink kernel fit`, MNIST, RBF sigma 5, float32 + PCG)",
        "",
        "Floor: n^3/3 + n^2 d flops at the fp32 matmul peak. scipy: `scipy.linalg.solve(K, Y, "
        "assume_a='pos')` in float64 (kernel build included); scikit-learn: `KernelRidge(alpha=1e-10)`.",
        "",
        "| n | fit s | floor s | ratio | peak GB | test error | scipy s (GB) | scikit-learn s (GB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k in results["kernel"]:
        if "error" in k:
            lines.append(f"| {k['n']:,} | {k['error']} | | | | | | |")
            continue
        refs = []
        for method in ("scipy", "sklearn"):
            ref = k.get(method)
            refs.append(
                "-" if ref is None else ref.get("error") or f"{ref['seconds']:.1f} ({ref['peak_gb']:.1f})"
            )
        lines.append(
            f"| {k['n']:,} | {k['fit_s']:.1f} | {k['floor_s']:.1f} | {k['floor_ratio']:.2f}x | "
            f"{k['peak_gb']:.2f} | {100 * k['test_error']:.2f}% | {refs[0]} | {refs[1]} |"
        )
    lines += [
        "",
        "## Several MLP runs in one process",
        "",
        "k MLP 1x512 runs (different initializations, each its own batches) trained one after another "
        "with `sgd_step`, or stacked: parameters stacked with `torch.func.stack_module_state`, the forward "
        "`vmap`-ed (one batched GEMM per layer), one optimizer over the stacks (`bench.training.Stacked`; "
        "a stacked step equals k separate steps, tested). Images/s summed over the k runs.",
        "",
        "| k | precision | one after another | stacked | speed-up |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['k']} | {r['precision']} | {_fmt_rate(r['sequential'])} | {_fmt_rate(r['stacked'])} | "
        f"{r['speedup']:.2f}x |"
        for r in results.get("stacked", [])
    ]
    lines += [
        "",
        "## Theorem 1 construction (CIFAR-10 pixels, random labels)",
        "",
        "| n | d | weights | seconds |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['n']:,} | {r['d']:,} | {r['weights']:,} | {r['seconds']:.2f} |" for r in results["theorem1"]
    ]
    lines += [
        "",
        "## Data loading",
        "",
        "| dataset | images | cold decode s | warm cache s |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {r['dataset']} | {r['images']:,} | {r['cold_s']:.1f} | {r['warm_s']:.2f} |"
        for r in results["data"]
    ]
    lines += ["", "## Targets", "", "| target | measured | met |", "|---|---|---|"]
    lines += [f"| {t} | {v} | {'yes' if ok else '**no**'} |" for t, v, ok in check_targets(results)]
    return "\n".join(_without_empty_sections(lines)) + "\n"


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


def cmd_bench(args: argparse.Namespace) -> int:
    from rethink.files import atomic_write

    plan = BenchPlan.quick() if args.quick else BenchPlan.full()
    changes: dict[str, Any] = {}
    if args.models:
        changes["models"] = tuple(args.models.split(","))
    if args.parts:
        wanted = set(args.parts.split(","))
        unknown = wanted - set(PARTS)
        if unknown:
            raise ConfigError(
                f"unknown bench part(s) {', '.join(sorted(unknown))}", f"choose from {', '.join(PARTS)}"
            )
        changes.update({fld: empty for part, (fld, empty) in PARTS.items() if part not in wanted})
    plan = BenchPlan(**{**asdict(plan), **changes})
    results = run_bench(plan, data_dir=args.data_dir, cache_dir=args.cache_dir, device=args.device)
    out = Path(args.out or ("bench-quick.json" if args.quick else "bench.json"))
    atomic_write(out, json.dumps(results, indent=1, default=str).encode())
    markdown = Path(args.markdown or (out.with_suffix(".md") if args.quick else "docs/benchmarks.md"))
    atomic_write(markdown, render_markdown(results).encode())
    print(f"results: {out}, {markdown}")
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench", help="speed and memory against the usual PyTorch idiom and the machine's peak"
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes (CI, ~2 min); figures are not targets")
    p.add_argument("--out", default=None, help="JSON results (default: bench.json, bench-quick.json)")
    p.add_argument(
        "--markdown",
        default=None,
        help="Markdown page (default: docs/benchmarks.md; with --quick, next to the JSON)",
    )
    p.add_argument("--models", default=None, help="comma list of models for the throughput part")
    p.add_argument(
        "--parts", default=None, help=f"comma list of parts to run (default: all): {', '.join(PARTS)}"
    )
    p.add_argument("--data-dir", help="dataset directory (default: $RETHINK_DATA)")
    p.add_argument("--cache-dir", help="decoded-array cache (default: $RETHINK_CACHE)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--device", default="cpu", help="cpu or cuda[:N] (see bench/gpu.sh)")
    p.set_defaults(func=cmd_bench)
