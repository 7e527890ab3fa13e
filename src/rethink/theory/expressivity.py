"""Theorem 1 (Section 4, appendix C), executable: 2n + d weights fit any labels of n points.

The network is c(x) = sum_j w_j max(<a, x> - b_j, 0) with a in R^d and b, w in R^n. On the
sample it equals A w with A_ij = max(x_i - b_j, 0), where x_i = <a, z_i> are the sorted
projections and b interleaves them (b_1 < x_1 < b_2 < ... < b_n < x_n), so A is lower
triangular with a positive diagonal (Lemma 1). The construction never forms A: on the line
through a, c is piecewise linear with a kink at each b_j, and w_j is the change of slope at
b_j, found one point at a time (forward substitution, O(n) after an O(n log n) sort).

Choices where the paper is silent (measured in docs/results/theory/expressivity.md):
- a: random integers, the best separated (largest smallest-gap / range) of a few draws.
  Integer-valued inputs (raw pixel values) then have exactly representable projections, so
  every later step sees the same x_i however the dot product is summed.
- b: b_1 = x_1 - (median gap), b_{k+1} = x_k + (x_{k+1} - x_k) / 8. A knot just past each
  point makes c nearly the linear interpolant (slopes ~ label jump / gap); the solve's
  recurrence then damps by t/(1-t) = 1/7 per step, where midpoints (t = 1/2) let the slopes
  alternate undamped. A power-of-two fraction keeps b on the projections' grid (exact).
- w: each w_k is the correctly rounded float64 of the exact solution given the already
  rounded w_1..w_{k-1} (rational arithmetic on the floats), so the exact network with the
  stored float64 weights meets every target to about one rounding of that step's residual.
- forward: the literal n-unit hidden layer, blocked (O(block * n) memory), columns whose
  ReLU is zero for the whole block skipped. With `summation="compensated"` the sum
  sum_j w_j h_ij is as accurate as in twice float64's precision (Dekker's exact products and
  a TwoSum tree). Plain float64 loses ~eps * max_j |w_j| * range: 1.3e-4 on 50,000 random
  CIFAR-10 labels (range / smallest gap ~ 5e9), against 5e-12 compensated, at ~15x the time.
- repeated inputs: a function cannot give two labels to one point. Exact duplicates are
  found (equal projections, then equal rows); the network has one unit per distinct point,
  fitted to the label of its first occurrence, and the conflicting examples are counted.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch import Tensor, nn

from rethink.errors import ConfigError, DataError

SUMMATIONS = ("compensated", "plain")
KNOT_FRACTION = 0.125  # b_{k+1} = x_k + KNOT_FRACTION * (x_{k+1} - x_k); a power of two keeps it exact
PROJECTION_BOUND = 2.0**49  # |<a, x>| below this leaves 3 bits below the integers for b, in 53
_SPLIT = 134217729.0  # 2**27 + 1: Veltkamp's constant, splits a float64 into two 26-bit halves


# --------------------------------------------------------------------------- the network


class TwoLayerReLU(nn.Module):
    """c(x) = sum_j w_j max(<a, x> - b_j, 0): one hidden layer of n ReLUs sharing the direction a.

    `w` is (n,) for one real output or (n, K) for K outputs. Parameters are constructed, not
    trained, so they do not require gradients; `forward` is not differentiable.
    `summation`: "compensated" (twice-float64-accurate output sums) or "plain" (BLAS).
    """

    def __init__(self, a: Tensor, b: Tensor, w: Tensor, *, summation: str = "compensated",
                 block_elements: int = 2**18) -> None:
        super().__init__()
        if summation not in SUMMATIONS:
            raise ConfigError(f"unknown summation {summation!r}", f"choose one of {', '.join(SUMMATIONS)}")
        if a.ndim != 1 or b.ndim != 1 or w.shape[0] != b.shape[0] or w.ndim not in (1, 2):
            raise ConfigError(f"shapes a {tuple(a.shape)}, b {tuple(b.shape)}, w {tuple(w.shape)} "
                              "do not form a two-layer network", "a is (d,), b is (n,), w is (n,) or (n, K)")
        self.a = nn.Parameter(a.to(torch.float64), requires_grad=False)  # (d,)
        self.b = nn.Parameter(b.to(torch.float64), requires_grad=False)  # (n,)
        self.w = nn.Parameter(w.to(torch.float64), requires_grad=False)  # (n,) or (n, K)
        self.summation = summation
        self.block_elements = block_elements

    @property
    def num_weights(self) -> int:
        """d + n + n (one output) or d + n + nK: every number the network is made of."""
        return sum(p.numel() for p in self.parameters())

    def project(self, x: Tensor) -> Tensor:
        """<a, x> for each input: (N, ...) -> (N,) float64."""
        return flatten_inputs(x) @ self.a

    def hidden(self, x: Tensor) -> Tensor:
        """The hidden layer max(<a, x> - b_j, 0), (N, n): for small inputs only."""
        return (self.project(x)[:, None] - self.b).clamp_(min=0)

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        """(N, ...) inputs -> (N,) or (N, K) float64, in blocks of rows sorted by projection.

        Many mid-sized elementwise ops: on a busy shared CPU, torch.set_num_threads(1) was 5-25x
        faster than 2 threads (measured), since each op's threads wait for a free core.
        """
        p = self.project(x)  # (N,)
        p_sorted, order = torch.sort(p)
        b, idx = torch.sort(self.b)  # the construction's b is already sorted; any b works
        w = self.w[idx]
        out = torch.zeros((len(p), *w.shape[1:]), dtype=torch.float64)
        rows = max(1, self.block_elements // max(1, len(b)))
        for start in range(0, len(p), rows):
            block = p_sorted[start : start + rows]  # ascending
            # units with b_j >= every p in the block contribute exactly 0: leave them out
            active = int(torch.searchsorted(b, block[-1:], side="left"))
            if active == 0:
                continue
            h = (block[:, None] - b[:active]).clamp_(min=0)  # (rows, active)
            out[order[start : start + rows]] = _output_layer(h, w[:active], self.summation)
        return out

    def extra_repr(self) -> str:
        k = 1 if self.w.ndim == 1 else self.w.shape[1]
        return f"d={self.a.numel()}, n={self.b.numel()}, outputs={k}, summation={self.summation!r}"


def _output_layer(h: Tensor, w: Tensor, summation: str) -> Tensor:
    if summation == "plain":
        return h @ w
    if w.ndim == 1:
        return compensated_matvec(h, w)
    return torch.stack([compensated_matvec(h, w[:, k]) for k in range(w.shape[1])], dim=1)


# --------------------------------------------------------------------------- exact-ish sums


def split_halves(x: Tensor) -> tuple[Tensor, Tensor]:
    """Veltkamp's split x = hi + lo, each with at most 26 significant bits (exact)."""
    c = x * _SPLIT
    hi = c - (c - x)
    return hi, x - hi


def two_sum_rows(x: Tensor) -> tuple[Tensor, Tensor]:
    """Row sums by a pairwise tree, keeping every addition's exact rounding error (Knuth's TwoSum).

    Returns (sum, error): the float tree sum and the sum of those errors. Overwrites x.
    """
    err = torch.zeros(x.shape[0], dtype=x.dtype)
    while x.shape[1] > 1:
        half = x.shape[1] // 2
        left, right = x[:, :half], x[:, half : 2 * half]
        s = left + right
        z = s - left
        right.sub_(z)  # right - z
        left.sub_(z.neg_().add_(s))  # left - (s - z)
        err += left.add_(right).sum(1)  # the exact error of each s
        x = s if x.shape[1] % 2 == 0 else torch.cat([s, x[:, 2 * half :]], 1)
    return x[:, 0], err


def compensated_matvec(h: Tensor, w: Tensor) -> Tensor:
    """sum_j h_ij w_j for every row, about as accurate as in twice float64's precision.

    Each product's rounding error is recovered exactly (Dekker's TwoProduct, no FMA needed) and
    so is each addition's (TwoSum), so the result is off by ~eps |result| + eps^2 sum|h w|
    instead of ~eps sum|h w|. In-place temporaries keep it at ~20 passes over h.
    """
    w_hi, w_lo = split_halves(w)
    prod = h * w
    h_hi = h * _SPLIT
    h_hi.sub_(h_hi - h)  # Veltkamp: hi = c - (c - h)
    h_lo = h - h_hi
    prod_err = torch.mul(h_hi, w_hi).sub_(prod).addcmul_(h_hi, w_lo).addcmul_(h_lo, w_hi).addcmul_(h_lo, w_lo)
    del h_hi, h_lo
    total, sum_err = two_sum_rows(prod)
    return total + (sum_err + prod_err.sum(1))


# --------------------------------------------------------------------------- construction


@dataclass(frozen=True)
class Construction:
    """What the construction found, kept on the fitted module as `construction_`."""

    n_examples: int  # rows given
    n_distinct: int  # distinct points = hidden units n
    d: int
    duplicate_examples: int  # rows that repeat an earlier row exactly
    conflicting_examples: int  # repeats whose target differs from the first occurrence's
    min_gap: float  # smallest gap between consecutive distinct projections
    projection_range: float  # largest minus smallest projection
    direction_draws: int  # random directions tried
    knot_fraction: float  # b_{k+1} = x_k + knot_fraction * (x_{k+1} - x_k)
    exact_projection: bool  # inputs integer-valued and |<a, x>| < 2**49: projections are exact
    seconds: float
    conflicting: tuple[int, ...] = ()  # indices (into the rows given) of the conflicting repeats

    @property
    def separation(self) -> float:
        """range / smallest gap: scale-free; plain float64 loses ~eps * this * label jump."""
        return self.projection_range / self.min_gap if self.min_gap > 0 else math.inf

    def as_dict(self) -> dict:
        record = {k: v for k, v in asdict(self).items() if k != "conflicting"}
        return {**record, "separation": self.separation, "conflicting_first": list(self.conflicting[:20])}


def flatten_inputs(x: Tensor) -> Tensor:
    """(N, ...) images or points -> (N, d) float64, values unchanged (raw pixels stay 0..255)."""
    if x.ndim < 2:
        raise ConfigError(f"inputs must be (n, d) points or (n, ...) images, got shape {tuple(x.shape)}",
                          "add the point dimension, e.g. x[:, None]")
    return x.reshape(x.shape[0], math.prod(x.shape[1:])).to(torch.float64)


def integer_rows_and_l1(x: Tensor, chunk_elements: int = 2**20) -> tuple[bool, float]:
    """(all entries integers, largest row l1 norm), read in row chunks: O(chunk) extra memory."""
    rows = max(1, chunk_elements // max(1, x.shape[1]))
    integer, l1 = True, 0.0
    for start in range(0, len(x), rows):
        part = x[start : start + rows]
        integer = integer and bool((part == part.round()).all())
        l1 = max(l1, float(part.abs().sum(1).max()))
    return integer, l1


def direction_scale(l1: float) -> float:
    """The largest power of two M with M * l1 <= 2**49 (at least 1), l1 = the largest row l1 norm.

    With integer a in [-M, M] every partial sum of <a, x> for integer x is an integer below
    2**49, so float64 computes it exactly in any order.
    """
    if l1 == 0.0:
        return 1.0
    return max(1.0, 2.0 ** math.floor(math.log2(PROJECTION_BOUND / l1)))


def random_directions(d: int, count: int, scale: float, generator: torch.Generator) -> Tensor:
    """`count` random integer directions, entries uniform in [-scale, scale]: (d, count) float64."""
    m = int(scale)
    return torch.randint(-m, m + 1, (d, count), generator=generator).to(torch.float64)


def sorted_distinct(x: Tensor, p: Tensor, tie: float = 0.0) -> tuple[Tensor, Tensor] | None:
    """Sort by projection and group repeated rows; None if two distinct rows share a projection.

    Neighbours whose projections differ by at most `tie` (0 for exactly computed projections;
    a few ulps otherwise) must be equal rows, else this direction does not separate the points.
    Returns (order, first): `order` sorts p (stable, so with exact ties a group's first member
    is its earliest row) and `first` (N,) bool marks the first member of each group.
    """
    p_sorted, order = torch.sort(p, stable=True)
    first = torch.ones(len(p), dtype=torch.bool)
    first[1:] = p_sorted.diff() > tie
    tied = (~first).nonzero().squeeze(1)
    if len(tied) and not bool((x[order[tied]] == x[order[tied - 1]]).all()):
        return None
    return order, first


def knots(x_sorted: Tensor, fraction: float = KNOT_FRACTION) -> Tensor:
    """b interleaving the sorted distinct projections: b_1 < x_1 < b_2 < x_2 < ... < b_n < x_n.

    b_1 = x_1 - (median gap), b_{k+1} = x_k + fraction * (x_{k+1} - x_k).
    """
    gaps = x_sorted.diff()  # (n-1,)
    b = torch.empty_like(x_sorted)
    b[0] = x_sorted[0] - (gaps.median() if len(gaps) else 1.0)
    b[1:] = x_sorted[:-1] + fraction * gaps  # a power-of-two fraction: exact on the grid
    if len(gaps) and not bool(((b[1:] > x_sorted[:-1]) & (b[1:] < x_sorted[1:])).all()):
        raise DataError("projections too close to place a knot strictly between neighbours",
                        "scale the inputs up or use integer-valued inputs")
    return b


_FIXED_BITS = 1074  # every float64 is an integer multiple of 2**-1074


def _fixed(v: float) -> int:
    """v * 2**1074 as an exact integer."""
    num, den = v.as_integer_ratio()
    return num << (_FIXED_BITS - den.bit_length() + 1)


def solve_output_weights(x_sorted: Tensor, b: Tensor, y: Tensor) -> Tensor:
    """w with sum_j w_j max(x_i - b_j, 0) = y_i, by forward substitution in O(n), never forming A.

    On the line c is piecewise linear: between x_{k-1} and x_k it follows the slope S (the sum
    of the w's so far) until the knot b_k, where w_k is the change of slope that lands it on y_k.
    The value and slope are carried as exact integers (fixed point at 2**-1074; products at
    2**-2148), so w_k is the correctly rounded float64 of the exact answer given the rounded
    w_1..w_{k-1}: errors do not accumulate along the sweep.
    """
    xs, bs, ys = x_sorted.tolist(), b.tolist(), y.to(torch.float64).tolist()
    w = [0.0] * len(xs)
    value = slope = 0  # c at the previous point (scale 2**-2148) and the slope there (2**-1074)
    prev = _fixed(xs[0]) if xs else 0
    for k, (xk_f, bk_f, yk) in enumerate(zip(xs, bs, ys, strict=True)):
        xk = _fixed(xk_f)
        at_xk = value + slope * (xk - prev)  # c at x_k before unit k: no knot in (x_{k-1}, x_k)
        reach = xk - _fixed(bk_f)  # x_k - b_k > 0: how far unit k's ramp has risen at x_k
        w[k] = ((_fixed(yk) << _FIXED_BITS) - at_xk) / (reach << _FIXED_BITS)  # correctly rounded
        wk = _fixed(w[k])
        slope += wk
        value = at_xk + wk * reach
        prev = xk
    return torch.tensor(w, dtype=torch.float64)


def _choose_direction(x: Tensor, generator: torch.Generator, draws: int, exact: bool, scale: float
                      ) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """The best separated of `draws` random integer directions that keep distinct points apart.

    Returns (a, projections, order, first, directions tried); see `sorted_distinct`.
    """
    best, tried = None, 0
    for _ in range(8):  # a draw where two distinct points collide is rare: draw again
        candidates = random_directions(x.shape[1], draws, scale, generator)
        proj = x @ candidates  # (n, draws)
        tried += draws
        for c in range(draws):
            tie = 0.0 if exact else 2.0**-44 * float(proj[:, c].abs().max())
            found = sorted_distinct(x, proj[:, c], tie)
            if found is None:
                continue
            order, first = found
            distinct = proj[order[first], c]
            gaps = distinct.diff()
            ratio = float((distinct[-1] - distinct[0]) / gaps.min()) if len(gaps) else 0.0
            if best is None or ratio < best[0]:
                best = (ratio, candidates[:, c].clone(), proj[:, c].clone(), order, first)
        if best is not None:
            return *best[1:], tried
    raise DataError(f"no random direction of {tried} separated the distinct points",
                    "check the inputs for near-identical rows")


def _construct(x: Tensor, targets: Tensor, seed: int, draws: int, knot_fraction: float
               ) -> tuple[Tensor, Tensor, Tensor, Tensor, Construction]:
    """a, b, the sorted distinct projections, their targets (the first occurrence's) and a record."""
    if x.ndim != 2 or len(x) == 0 or x.shape[1] == 0:
        raise ConfigError(f"need n >= 1 points in d >= 1 dimensions, got shape {tuple(x.shape)}",
                          "pass a non-empty (n, d) tensor")
    if len(targets) != len(x):
        raise ConfigError(f"{len(x)} points but {len(targets)} targets", "pass one target per point")
    if draws < 1:
        raise ConfigError(f"direction draws {draws} must be >= 1", "pass 1 or more")
    if not 0.0 < knot_fraction < 1.0:
        raise ConfigError(f"knot fraction {knot_fraction} is outside (0, 1)", "e.g. 0.125 or 0.5")
    integer, l1 = integer_rows_and_l1(x)
    if not math.isfinite(l1) or not bool(torch.isfinite(targets).all()):  # l1 is NaN/inf iff x is
        raise DataError("inputs or targets contain NaN or infinity (or overflow)", "clean the data first")
    # integer inputs (pixels) with an integer a have exact projections: any summation order
    exact = integer and l1 <= PROJECTION_BOUND
    a, p, order, first, tried = _choose_direction(x, torch.Generator().manual_seed(seed), draws, exact,
                                                  direction_scale(l1))
    p_sorted = p[order]
    group = torch.cumsum(first.long(), 0) - 1  # (n,) group of each sorted row
    fitted = targets[order][first]  # (n_distinct, ...) the target of each group's first row
    conflicting = (targets[order] != fitted[group]).reshape(len(x), -1).any(1)
    x_distinct = p_sorted[first]
    b = knots(x_distinct, knot_fraction)
    exact = exact and l1 * float(a.abs().max()) <= PROJECTION_BOUND
    gaps = x_distinct.diff()
    record = Construction(
        n_examples=len(x),
        n_distinct=len(x_distinct),
        d=x.shape[1],
        duplicate_examples=int((~first).sum()),
        conflicting_examples=int(conflicting.sum()),
        min_gap=float(gaps.min()) if len(gaps) else math.inf,
        projection_range=float(x_distinct[-1] - x_distinct[0]),
        direction_draws=tried,
        knot_fraction=knot_fraction,
        exact_projection=exact,
        seconds=0.0,
        conflicting=tuple(order[conflicting].sort().values.tolist()),
    )
    return a, b, x_distinct, fitted, record


def fit_two_layer(x: Tensor, y: Tensor, *, seed: int = 0, draws: int = 8,
                  knot_fraction: float = KNOT_FRACTION, summation: str = "compensated") -> TwoLayerReLU:
    """Theorem 1's network fitted to real targets y at points x: 2n + d weights, c(x_i) = y_i.

    x: (n, d) (or (n, ...) images, flattened), y: (n,) real. n counts distinct points; a
    repeated point gets its first occurrence's target (`construction_` counts what was dropped).
    `seed` draws the direction; `draws` directions are tried and the best separated is kept;
    `knot_fraction` places b_{k+1} that far from x_k towards x_{k+1}.
    """
    start = time.perf_counter()
    x, y = flatten_inputs(x), y.to(torch.float64)
    if y.ndim != 1:
        raise ConfigError(f"targets must be (n,), got shape {tuple(y.shape)}",
                          "use fit_multiclass for K outputs")
    a, b, x_distinct, fitted, record = _construct(x, y, seed, draws, knot_fraction)
    model = TwoLayerReLU(a, b, solve_output_weights(x_distinct, b, fitted), summation=summation)
    model.construction_ = replace(record, seconds=time.perf_counter() - start)
    return model


def fit_multiclass(x: Tensor, labels: Tensor, num_classes: int, *, seed: int = 0, draws: int = 8,
                   knot_fraction: float = KNOT_FRACTION, summation: str = "plain") -> TwoLayerReLU:
    """K outputs sharing a and b (d + n + nK weights); output k fits the indicator of class k.

    Each column is the scalar construction with one-hot targets, so argmax reproduces the
    labels. Plain summation by default: argmax needs far less than float64's last digits, and
    the compensated sum costs K times the scalar one.
    """
    start = time.perf_counter()
    x, labels = flatten_inputs(x), labels.long()
    if labels.ndim != 1 or num_classes < 2:
        raise ConfigError(f"need (n,) labels and >= 2 classes, got shape {tuple(labels.shape)}, "
                          f"K={num_classes}", "pass integer class labels")
    if len(labels) and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ConfigError(f"labels must lie in 0..{num_classes - 1}", "check num_classes")
    onehot = torch.nn.functional.one_hot(labels, num_classes).to(torch.float64)  # (n, K)
    a, b, x_distinct, fitted, record = _construct(x, onehot, seed, draws, knot_fraction)
    w = torch.stack([solve_output_weights(x_distinct, b, fitted[:, k]) for k in range(num_classes)], 1)
    model = TwoLayerReLU(a, b, w, summation=summation)
    model.construction_ = replace(record, seconds=time.perf_counter() - start)
    return model


# --------------------------------------------------------------------------- the report


def predicted_labels(out: Tensor, num_classes: int) -> Tensor:
    """Class predictions: the nearest label value (one output) or the argmax (K outputs)."""
    if out.ndim == 1:
        return out.round().clamp(0, num_classes - 1).long()
    return out.argmax(1)


def expressivity_report(model: TwoLayerReLU, train_x: Tensor, train_labels: Tensor, test_x: Tensor,
                        test_labels: Tensor, *, num_classes: int, what: str = "labels",
                        plain_check: int = 5000, seed: int = 0) -> dict:
    """Evaluate a fitted network through its own forward pass: fit, conditioning, test accuracy.

    The train error is max |c(x_i) - y_i| over the examples the network was fitted to (all but
    the conflicting repeats), with y_i the label value (one output) or one-hot (K outputs).
    With compensated summation, `plain_check` training examples (0: none) are also evaluated
    with plain float64 sums, to show what that precision gives. `what` names the labels in
    the summary line, e.g. "random CIFAR-10 labels".
    """
    built = model.construction_
    n, d = built.n_distinct, built.d
    outputs = 1 if model.w.ndim == 1 else model.w.shape[1]
    expected = d + n + n * outputs
    if model.num_weights != expected:  # Theorem 1's count, checked on the module itself
        raise AssertionError(f"{model.num_weights} weights, expected d + n + nK = {expected}")
    labels = train_labels.long()
    targets = labels.to(torch.float64) if outputs == 1 else nn.functional.one_hot(labels, outputs).double()

    start = time.perf_counter()
    out = model(train_x)
    train_seconds = time.perf_counter() - start
    error = (out - targets).abs().reshape(len(out), -1).amax(1)  # (N,)
    fitted = torch.ones(len(out), dtype=torch.bool)
    fitted[list(built.conflicting)] = False
    max_error = float(error[fitted].max())
    train_acc = float((predicted_labels(out, num_classes) == labels).double().mean())

    plain_error = None
    if model.summation == "compensated" and plain_check > 0:
        idx = torch.randperm(len(out), generator=torch.Generator().manual_seed(seed))[:plain_check]
        idx = idx[fitted[idx]]
        model.summation = "plain"
        try:
            plain_out = model(train_x[idx])
        finally:
            model.summation = "compensated"
        plain_error = float((plain_out - targets[idx]).abs().max())

    start = time.perf_counter()
    test_out = model(test_x)
    test_seconds = time.perf_counter() - start
    test_acc = float((predicted_labels(test_out, num_classes) == test_labels.long()).double().mean())

    max_w = float(model.w.abs().max())
    total = built.seconds + train_seconds + test_seconds
    formula = "2n+d" if outputs == 1 else "d+n+nK"
    left_out = built.conflicting_examples
    summary = (
        f"{formula} = {model.num_weights:,} weights fit {n:,} {what}"
        + (f" ({left_out:,} conflicting repeats left out)" if left_out else "")
        + f": max error {max_error:.1e} (float64, {model.summation} sum), "
        f"train accuracy {100 * train_acc:.2f}%, test accuracy {100 * test_acc:.1f}% "
        f"(chance {100 / num_classes:.0f}%), {total:.1f} s"
    )
    return {
        "summary": summary,
        "n_examples": built.n_examples,
        "n": n,
        "d": d,
        "outputs": outputs,
        "weights": model.num_weights,
        "weights_formula": formula,
        "max_train_error": max_error,
        "train_accuracy": train_acc,
        "plain_float64_max_error": plain_error,
        "plain_check_examples": 0 if plain_error is None else int(min(plain_check, len(out))),
        "summation": model.summation,
        "test_accuracy": test_acc,
        "test_examples": len(test_out),
        "chance": 1.0 / num_classes,
        "max_abs_w": max_w,
        "max_abs_w_times_range": max_w * built.projection_range,
        "construction": built.as_dict(),
        "seconds": {"construct": built.seconds, "train_forward": train_seconds,
                    "test_forward": test_seconds, "total": total},
    }
