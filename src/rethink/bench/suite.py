"""The benchmark suite behind `rethink bench`: what a run measures (`BenchPlan`, its parts and
targets), `run_bench` (one function per part, each logging a line per figure) and `check_targets`.

The quick plan (CI) runs every part on tiny sizes in a couple of minutes; its figures are not targets.
The bf16 parts run only where the device computes bf16 natively (`machine.bf16_support`; where it
would be emulated, e.g. a CPU with AVX2 alone, they are skipped and the output says so).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from rethink.bench import solvers, training
from rethink.bench.machine import describe_machine
from rethink.bench.timing import matmul_peak
from rethink.data.sources import load_dataset
from rethink.machine import bf16_support
from rethink.models import list_models

# Steps per timed repetition: enough for ~1 s of work per repetition at full size.
STEPS = {"mlp1x512": 40, "mlp3x512": 30, "alexnet": 8, "inception": 2, "inception-nobn": 2}

# Targets the benchmark checks (`check_targets`): the (fp32, bf16) speed-up over the idiom, the
# utilization of the same-precision peak, the largest share of an epoch spent outside compute.
RATIO_TARGETS = {
    "mlp1x512": (3.0, 4.5),
    "mlp3x512": (3.0, 4.5),
    "alexnet": (1.4, 2.8),
    "inception": (1.3, 2.4),
    "inception-nobn": (1.3, 2.4),
}
# The largest stack timed per model on a CPU: 64 Inception runs of batch 128 hold ~6 GB of
# activations and take minutes per timed step on 2 cores. A GPU times every k.
STACK_LIMIT = {"inception": 16, "inception-nobn": 16}
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
    stacked: tuple[int, ...] = ()  # numbers of runs stacked in one model (rethink.train.stacked)
    stacked_models: tuple[str, ...] = ("mlp1x512",)

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
            stacked=(1, 4, 16, 64),
            stacked_models=("mlp1x512", "mlp3x512", "alexnet", "inception"),
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
    """Run every part of `plan` (parts left out have empty fields), logging a line per figure."""
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
    out["peak"] = run_peak(plan, device=device, log=log)
    cifar = load_dataset("cifar10", data_dir, cache_dir=cache_dir)
    where = {"data_dir": data_dir, "cache_dir": cache_dir}
    out["throughput"] = run_throughput(plan, cifar, out["peak"], device=device, log=log)
    out["anatomy"] = run_anatomy(plan, cifar, out["throughput"], **where, device=device, log=log)
    out["time_to_fit"] = run_time_to_fit(plan, **where, device=device, log=log)
    out["kernel"] = run_kernel(plan, out["peak"], **where, log=log)
    out["stacked"] = run_stacked(plan, cifar, device=device, peak=out["peak"], log=log)
    out["theorem1"] = run_theorem1(plan, cifar, log=log)
    out["data"] = run_data(plan, data_dir=data_dir, log=log)
    out["seconds"] = time.time() - started
    return out


def run_peak(plan: BenchPlan, *, device: str, log=print) -> dict[str, dict[str, float]]:
    """The matmul peak of each precision of the plan."""
    peak = {p: matmul_peak(p, device=device) for p in plan.precisions}
    log("matmul peak: " + ", ".join(f"{p} {v['median'] / 1e9:.0f} GFLOP/s" for p, v in peak.items()))
    return peak


def run_throughput(
    plan: BenchPlan, cifar, peak: dict[str, dict[str, float]], *, device: str, log=print
) -> list[dict[str, Any]]:
    """Training images/s of each model and precision: ours, the idiom's, the bare step's."""
    results = []
    for model in plan.models:
        for precision in plan.precisions:
            s = training.setup(cifar, model, precision, plan.train_size, device=device)
            steps = max(1, round(STEPS[model] * plan.step_scale))
            r = training.throughput(s, steps=steps, reps=plan.reps)
            r.update(
                model=model,
                precision=precision,
                utilization=r["achieved_flops"] / peak[precision]["median"],
            )
            results.append(r)
            log(
                f"{model:<15} {precision}: ours {r['ours']['median']:8.0f} img/s, idiom "
                f"{r['idiom']['median']:7.0f} ({r['ratio']:.2f}x), "
                f"bare step {r['bare_step']['median']:8.0f}, "
                f"utilization {100 * r['utilization']:.0f}%"
            )
    return results


def run_anatomy(
    plan: BenchPlan,
    cifar,
    throughput: list[dict[str, Any]],
    *,
    data_dir: str | None,
    cache_dir: str | None,
    device: str,
    log=print,
) -> list[dict[str, Any]]:
    """Where an fp32 epoch's time goes, ours (full and screened train eval) and the idiom's; the
    bare-step rate comes from the throughput part where it ran, else is measured here."""
    bare = {(r["model"], r["precision"]): r["bare_step"]["median"] for r in throughput}
    results = []
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
        results.append({"model": model, "n": n, "ours": a["full"], "ours_screen": a["screen"], "idiom": i})
        log(
            f"epoch anatomy {model} n={n}: ours {a['full']['epoch_s']:.2f} s/epoch, "
            f"{100 * a['full']['outside_share']:.0f}% outside compute (screened train eval: "
            f"{a['screen']['epoch_s']:.2f} s, {100 * a['screen']['outside_share']:.0f}%); "
            f"idiom {i['epoch_s']:.2f} s, {100 * i['outside_share']:.0f}%"
        )
    return results


def run_time_to_fit(
    plan: BenchPlan, *, data_dir: str | None, cache_dir: str | None, device: str, log=print
) -> list[dict[str, Any]]:
    """Wall time of `rethink run` until it fits random labels, for each (model, n) of the plan."""
    results = []
    for model, n in plan.fit:
        r = training.time_to_fit(model, n, data_dir=data_dir, cache_dir=cache_dir, device=device)
        results.append(r)
        log(
            f"time to fit random labels, {model} n={n}: {r['status']} at step {r['steps_to_fit']} "
            f"({r['epochs']} epochs), {r['wall_s']:.0f} s"
        )
    return results


def run_kernel(
    plan: BenchPlan,
    peak: dict[str, dict[str, float]],
    *,
    data_dir: str | None,
    cache_dir: str | None,
    log=print,
) -> list[dict[str, Any]]:
    """Kernel interpolation fits against their FLOP floor, with scipy and scikit-learn beside them
    at the plan's reference sizes."""
    results = []
    for n in plan.kernel_sizes:
        r = solvers.kernel_fit(n, data_dir=data_dir, cache_dir=cache_dir)
        if "error" not in r:
            r["floor_s"] = solvers.kernel_floor(n, r["d"], peak["fp32"]["median"])
            r["floor_ratio"] = r["fit_s"] / r["floor_s"]
        for method in ("scipy", "sklearn"):
            if n in plan.reference_sizes:
                r[method] = solvers.reference_fit(method, n, data_dir=data_dir, cache_dir=cache_dir)
        results.append(r)
        log(
            f"kernel n={n}: "
            + (
                r.get("error")
                or f"{r['fit_s']:.1f} s fit ({r['floor_ratio']:.2f}x the "
                f"FLOP floor), peak {r['peak_gb']:.2f} GB"
            )
        )
    return results


def run_stacked(plan: BenchPlan, cifar, *, device: str, peak: dict[str, Any],
                log=print) -> list[dict[str, Any]]:
    """k runs of each model trained one after another beside the same runs stacked in one model."""
    results = []
    for model in plan.stacked_models:
        for k in plan.stacked:
            if torch.device(device).type == "cpu" and k > STACK_LIMIT.get(model, k):
                continue
            for precision in plan.precisions:
                s = training.setup(cifar, model, precision, plan.train_size, device=device)
                # about the same work per timed repetition at every k; fewer repetitions of the largest
                steps = max(1, round(STEPS[model] * plan.step_scale / max(1, k // 4)))
                reps = plan.reps if k < 16 else min(plan.reps, 3)
                r = training.stacked_runs(s, k=k, steps=steps, reps=reps,
                                          peak_flops=peak[precision]["median"])
                results.append(r)
                log(f"{k} {model} runs {precision}: one after another {r['sequential']['median']:.0f} img/s, "
                    f"stacked {r['stacked']['median']:.0f} img/s ({r['speedup']:.2f}x), "
                    f"utilization {100 * r['utilization']:.0f}%")
    return results


def run_theorem1(plan: BenchPlan, cifar, *, log=print) -> list[dict[str, Any]]:
    """Time to build the Theorem 1 network that fits n CIFAR-10 images, for each n of the plan."""
    results = solvers.theorem1_construction(cifar.train_images, list(plan.theorem1_sizes))
    for r in results:
        log(f"Theorem 1 construction n={r['n']}: {r['seconds']:.2f} s")
    return results


def run_data(plan: BenchPlan, *, data_dir: str | None, log=print) -> list[dict[str, Any]]:
    """Cold decode and warm cache load time of each dataset of the plan."""
    results = [solvers.data_loading(name, data_dir) for name in plan.data]
    for r in results:
        log(f"data {r['dataset']}: cold {r['cold_s']:.1f} s, warm {r['warm_s']:.2f} s")
    return results


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
