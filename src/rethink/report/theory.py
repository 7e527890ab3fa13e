"""The theory results of the store (Theorem 1, Section 5's kernels, Rademacher complexity, complexity
measures, stability, and beyond the paper random-feature double descent) as report rows, with the
paper's (or the follow-up's) number or claim where it states one and a verdict against it under a
stated rule (`RULES`). `collect.latest_theory` has already kept one row per result, the latest
when the same thing was measured several times.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from rethink.report import paper_numbers as paper
from rethink.report.document import fmt_interval, fmt_num
from rethink.report.stats import Interval, mean_interval, wilson
from rethink.theory import double_descent as rff_estimator

AGREES, DIFFERS, INCONCLUSIVE, NO_NUMBER = "agrees", "differs", "inconclusive", "no number in the paper"

FIT = 0.99  # the report's fit threshold: a network "fits" 99% of its (random) targets
RADEMACHER_MIN = 1 - 2 * (1 - FIT)  # R = 1 - 2 x (fraction of signs missed): 0.98 at 99% fitted
EXACT = 1e-6  # Theorem 1: max |c(x_i) - y_i| that counts as an exact fit in float64
SGD_DISTANCE = 1e-2  # Section 5: |W - W*| / |W*| from w = 0 that counts as "the minimum-norm solution"
THRESHOLD_BAND = (0.8, 1.25)  # N/n around the interpolation threshold N = n where the peak must lie

DOUBLE_DESCENT_RULE = (
    "Double descent with random features (Belkin et al. 2019: test error peaks at the interpolation "
    f"threshold N = n and decreases beyond it): agrees when the sweep's largest test error lies at an N/n "
    f"in [{THRESHOLD_BAND[0]:g}, {THRESHOLD_BAND[1]:g}] and its 95% Wilson interval (of the test-set size) "
    "lies above the interval of the error at the sweep's largest N/n; differs when the largest error "
    "lies outside that band with its interval above every in-band point's; inconclusive otherwise (no "
    "point in the band or beyond it, or overlapping intervals)."
)
RULES = (
    "Section 5 test errors (1.2% MNIST pixels, 0.6% MNIST Gabor, 46% CIFAR-10 pixels, 17% random-conv "
    "features, 15% with an l2 penalty): agrees when our test error's 95% Wilson interval (of the test-set "
    "size) overlaps the paper's number as printed (± half its last digit: 1.2 stands for 1.15-1.25), "
    "measured on the paper's whole training set (60,000 MNIST, 50,000 CIFAR-10 images) and, for "
    f"random-conv features, with its {paper.KERNEL_FILTERS:,} filters; differs when it does not overlap "
    "there. On a training subset or with fewer filters: inconclusive, whatever the error, since an "
    "interpolant's test error changes with n and a subset cannot confirm the paper's number.",
    "Theorem 1 (2n + d weights fit any labels): agrees when the one-output network has exactly 2n + d "
    f"weights and reproduces every distinct training point to {EXACT:g} (conflicting repeats, one image "
    "with two labels, cannot be fit by any function); differs otherwise. A K-output network (d + n + nK "
    "weights) is not the theorem's: no verdict.",
    f"Rademacher complexity ≈ 1: agrees when, for a network, every draw at every n gives R ≥ "
    f"{RADEMACHER_MIN:g} (at least {100 * FIT:g}% of the random signs fitted, the report's fit threshold); "
    "differs otherwise. Linear models are controls the paper says nothing about: no verdict.",
    f"SGD from w = 0 finds the minimum-norm solution (an argument, no number): agrees when it ends within "
    f"a relative distance of {SGD_DISTANCE:g} of it.",
    DOUBLE_DESCENT_RULE,
)


@dataclass(frozen=True)
class TheoryRow:
    kind: str
    measured: str  # the command's one-line summary
    ours: str  # the number judged, with its interval
    paper: str
    verdict: str  # AGREES, DIFFERS, INCONCLUSIVE or NO_NUMBER, with its reason after ': '
    recorded: str


# ------------------------------------------------------------------ one row per kind


def _printed(text: str) -> tuple[float, float]:
    """A number as printed and half its last digit: '1.2' -> (1.2, 0.05), '46' -> (46.0, 0.5)."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return float(text), 0.5 * 10.0 ** -decimals


def kernel_verdict(result: dict[str, Any]) -> tuple[str, str, str]:
    """(ours, paper, verdict) of a `rethink kernel fit` result."""
    err, n_test, n = result.get("test_error"), result.get("n_test"), result.get("n_train")
    if err is None or not n_test:
        return "-", "-", NO_NUMBER
    lo, hi = wilson(err, n_test)
    ours = f"test error {fmt_interval(Interval(err, lo, hi, 1, n_test), digits=2)} %, n = {fmt_num(n, 0)}"
    dataset, features = result.get("dataset"), result.get("features")
    printed = paper.KERNEL_TEST_ERROR.get((dataset, features, bool(result.get("ridge"))))
    if printed is None:
        return ours, "-", NO_NUMBER
    value, half = _printed(printed)
    full = paper.DATASET_SIZES.get(dataset, (None, None))[0]
    filters = result.get("filters")
    if full and n < full:
        return ours, f"{printed}%", f"{INCONCLUSIVE}: n = {fmt_num(n, 0)} < the paper's {fmt_num(full, 0)}"
    if features == "random-conv" and filters != paper.KERNEL_FILTERS:
        return ours, f"{printed}%", (f"{INCONCLUSIVE}: {fmt_num(filters or 0, 0)} filters, the paper's "
                                     f"{paper.KERNEL_FILTERS:,}")
    if 100 * hi < value - half:
        return ours, f"{printed}%", f"{DIFFERS}: lower than the paper's"
    if 100 * lo > value + half:
        return ours, f"{printed}%", f"{DIFFERS}: higher than the paper's"
    return ours, f"{printed}%", AGREES


def sgd_verdict(result: dict[str, Any]) -> tuple[str, str, str]:
    """(ours, paper, verdict) of a `rethink kernel sgd` result: the run from w = 0."""
    zero = next((r for r in result.get("runs", []) if r.get("start") == "zero"), None)
    if zero is None:
        return "-", "argument", NO_NUMBER
    d = float(zero["distance"])
    return (f"|W - W*| / |W*| = {d:.1e} from w = 0", "converges to the minimum-norm solution",
            AGREES if d <= SGD_DISTANCE else DIFFERS)


def expressivity_verdict(result: dict[str, Any]) -> tuple[str, str, str]:
    """(ours, paper, verdict) of a `rethink expressivity` result."""
    n, d, outputs = result.get("n"), result.get("d"), result.get("outputs", 1)
    weights, error = result.get("weights"), result.get("max_train_error")
    if None in (n, d, weights, error):
        return "-", "2n + d weights", NO_NUMBER
    ours = f"{weights:,} weights, max error {error:.1e}"
    if outputs != 1:
        return (ours, "2n + d weights (one output)",
                f"{NO_NUMBER}: {outputs} outputs, not the theorem's network")
    ok = weights == 2 * n + d and error <= EXACT
    return ours, f"2n + d = {2 * n + d:,} weights, exact", AGREES if ok else DIFFERS


def rademacher_verdict(row: dict[str, Any]) -> tuple[str, str, str]:
    """(ours, paper, verdict) of a `rethink measures rademacher` result: R at the largest n."""
    points = row["result"].get("points") or []
    if not points:
        return "-", "≈ 1", NO_NUMBER
    top = max(points, key=lambda p: p["n"])
    iv = mean_interval([float(d["sign"]) for d in top.get("draws", [])]) or Interval(
        top["sign_mean"], top["sign_mean"], top["sign_mean"])
    iv = Interval(iv.estimate, max(iv.lo, -1.0), min(iv.hi, 1.0), iv.seeds)  # R lies in [-1, 1]
    value = (fmt_interval(iv, scale=1, digits=3) if iv.seeds > 1
             else f"{iv.estimate:.3f} (1 draw: no interval)")
    ours = f"{value} at n = {top['n']:,}" + (f" ({iv.seeds} draws)" if iv.seeds > 1 else "")
    model = row["config"].get("model", top.get("model"))
    if model == "linear":
        return ours, "≈ 1 (networks)", f"{NO_NUMBER}: a linear control"
    ok = all(float(d["sign"]) >= RADEMACHER_MIN for p in points for d in p.get("draws", []))
    return ours, "≈ 1", AGREES if ok else DIFFERS


def double_descent_verdict(row: dict[str, Any]) -> tuple[str, str, str]:
    """(ours, paper, verdict) of a `rethink double-descent` sweep, under the rule in RULES."""
    points = sorted((row.get("result") or {}).get("points") or [], key=lambda p: p["ratio"])
    m = int((row.get("config") or {}).get("test_size") or 0)
    claim = "test error peaks at N = n, falls beyond"
    if not points or m <= 0:
        return "-", claim, NO_NUMBER
    low, high = THRESHOLD_BAND
    peak, last = max(points, key=lambda p: p["test_error"]), points[-1]
    band = [p for p in points if low <= p["ratio"] <= high]
    ours = (f"peak {100 * peak['test_error']:.1f}% at N/n = {peak['ratio']:g}; "
            f"{100 * last['test_error']:.1f}% at N/n = {last['ratio']:g} ({m:,} test images)")
    if not band or last["ratio"] <= high:
        return ours, claim, f"{INCONCLUSIVE}: the sweep has no N/n in [{low:g}, {high:g}] or none beyond it"
    peak_lo = wilson(peak["test_error"], m)[0]
    if low <= peak["ratio"] <= high:
        if peak_lo > wilson(last["test_error"], m)[1]:
            return ours, claim, AGREES
        return ours, claim, f"{INCONCLUSIVE}: the descent beyond N = n is within the test set's interval"
    if all(peak_lo > wilson(p["test_error"], m)[1] for p in band):
        return ours, claim, f"{DIFFERS}: the test error peaks at N/n = {peak['ratio']:g}, outside the band"
    return ours, claim, f"{INCONCLUSIVE}: the peak is not separable from the band's errors"


def judge(row: dict[str, Any]) -> tuple[str, str, str]:
    """(ours, paper, verdict) of any theory row."""
    kind, result, config = row["kind"], row.get("result") or {}, row.get("config") or {}
    if kind == "kernel":
        return sgd_verdict(result) if config.get("experiment") == "sgd" else kernel_verdict(result)
    if kind == "expressivity":
        return expressivity_verdict(result)
    if kind == "rademacher":
        return rademacher_verdict(row)
    if kind == "measures":
        return "-", "follow-up literature", NO_NUMBER
    if kind == "stability":
        return "-", "\"not uniformly stable\"", NO_NUMBER
    if kind == rff_estimator.KIND:
        return double_descent_verdict(row)
    return "-", "-", NO_NUMBER


def theory_rows(rows: Sequence[dict[str, Any]]) -> list[TheoryRow]:
    out = []
    for row in rows:
        ours, paper_text, verdict = judge(row)
        summary = str((row.get("result") or {}).get("summary", "(no summary)"))
        out.append(TheoryRow(row["kind"], summary, ours, paper_text, verdict, str(row.get("created_at", ""))))
    return out
