"""The uncertainty behind every number of the report, and the tests behind every verdict.

Two sources of uncertainty, both at 95%:
- the evaluation set is finite: an accuracy measured on n examples has the binomial (Wilson)
  interval of n, whatever the number of seeds;
- training is random: across k >= 2 seeds, Student's t interval of the mean (k - 1 degrees of
  freedom). One seed gives no estimate of this part, and the report says so.

An accuracy's interval is its Wilson interval widened, on each side, by the seeds' half-width in
quadrature. A difference of two accuracies (a regularizer's effect, batch norm's gain) adds all
four half-widths in quadrature: conservative, since two runs scored on the same test set share
part of its sampling error.

Trends ("grows with p") use Kendall's tau over every (seed, point) observation with a one-sided
p-value; comparisons of two groups ("starts faster than") use Welch's one-sided t-test over seeds.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats as scipy_stats

LEVEL = 0.95
Z = 1.959963984540054  # two-sided 95% normal quantile
ALPHA = 0.05  # one-sided tests


@dataclass(frozen=True)
class Interval:
    """A 95% interval around an estimate, with what it accounts for."""

    estimate: float
    lo: float
    hi: float
    seeds: int = 1  # observations across seeds behind the estimate
    n_eval: int | None = None  # evaluation-set size of the binomial part, if any

    def contains(self, x: float) -> bool:
        return self.lo <= x <= self.hi

    def inside(self, lo: float, hi: float) -> bool:
        return lo <= self.lo and self.hi <= hi

    def above(self, x: float) -> bool:
        return self.lo > x

    def below(self, x: float) -> bool:
        return self.hi < x

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def scaled(self, factor: float) -> Interval:
        """The same interval in other units (e.g. fractions -> percent)."""
        return Interval(self.estimate * factor, self.lo * factor, self.hi * factor, self.seeds, self.n_eval)

    def text(self, digits: int = 1, unit: str = "") -> str:
        """'51.2 [49.0, 53.4]' (with the unit after each number)."""
        f = f"{{:.{digits}f}}{unit}"
        return f"{f.format(self.estimate)} [{f.format(self.lo)}, {f.format(self.hi)}]"


def t_quantile(df: int) -> float:
    """The two-sided 95% quantile of Student's t with `df` degrees of freedom."""
    return float(scipy_stats.t.ppf(0.5 + LEVEL / 2, df))


def wilson(p_hat: float, n: int) -> tuple[float, float]:
    """Wilson's 95% interval for a proportion `p_hat` observed on `n` trials."""
    if n <= 0:
        return 0.0, 1.0
    p_hat = min(max(p_hat, 0.0), 1.0)
    denom = 1 + Z * Z / n
    centre = (p_hat + Z * Z / (2 * n)) / denom
    half = Z * math.sqrt(p_hat * (1 - p_hat) / n + Z * Z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def seed_half_width(values: Sequence[float]) -> float:
    """t half-width of the mean of `values` (0 for a single value: no estimate of the spread)."""
    k = len(values)
    if k < 2:
        return 0.0
    mean = sum(values) / k
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (k - 1))
    return t_quantile(k - 1) * sd / math.sqrt(k)


def mean_interval(values: Sequence[float], *, floor: float | None = None) -> Interval | None:
    """Mean over seeds with its t interval (a point interval for one seed). `floor`: the least
    value the quantity can take (0 for steps and rates); a few seeds' interval is cut there."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean = sum(values) / len(values)
    h = seed_half_width(values)
    return Interval(mean, mean - h if floor is None else max(floor, mean - h), mean + h, len(values))


def accuracy_interval(values: Sequence[float], n_eval: int | None) -> Interval | None:
    """Mean accuracy (fractions) over seeds: the Wilson interval of `n_eval`, widened on each side
    by the seeds' t half-width in quadrature."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if not values:
        return None
    mean = sum(values) / len(values)
    lo, hi = wilson(mean, n_eval) if n_eval else (mean, mean)
    h = seed_half_width(values)
    # an accuracy lies in [0, 1]: a few seeds' t interval can reach past either end
    low, high = max(0.0, mean - math.hypot(mean - lo, h)), min(1.0, mean + math.hypot(hi - mean, h))
    return Interval(mean, low, high, len(values), n_eval)


def _binomial_half_width(mean: float, n_eval: int | None) -> float:
    return Z * math.sqrt(mean * (1 - mean) / n_eval) if n_eval else 0.0


def difference_interval(a: Sequence[float], n_a: int | None, b: Sequence[float],
                        n_b: int | None) -> Interval | None:
    """mean(a) - mean(b) of two accuracies (fractions), with every half-width (seeds and binomial,
    both sides) added in quadrature."""
    a = [v for v in a if v is not None and math.isfinite(v)]
    b = [v for v in b if v is not None and math.isfinite(v)]
    if not a or not b:
        return None
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    h = math.sqrt(seed_half_width(a) ** 2 + seed_half_width(b) ** 2
                  + _binomial_half_width(ma, n_a) ** 2 + _binomial_half_width(mb, n_b) ** 2)
    return Interval(ma - mb, ma - mb - h, ma - mb + h, min(len(a), len(b)), min(filter(None, (n_a, n_b)),
                                                                                  default=None))


@dataclass(frozen=True)
class Trend:
    """Kendall's tau between x and y over all observations, and its one-sided p-value."""

    tau: float
    p_value: float  # H1: y grows with x
    n: int

    @property
    def significant(self) -> bool:
        return self.p_value < ALPHA


def trend(xs: Sequence[float], ys: Sequence[float]) -> Trend | None:
    """Kendall's tau-b (ties allowed: several seeds share an x) with the one-sided p-value that y
    grows with x; None with fewer than 3 observations or no variation."""
    if len(xs) < 3 or len(set(xs)) < 2 or len(set(ys)) < 2:
        return None
    result = scipy_stats.kendalltau(xs, ys, alternative="greater")
    if not math.isfinite(result.statistic):
        return None
    return Trend(float(result.statistic), float(result.pvalue), len(xs))


def difference_upper(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's one-sided 95% upper bound of mean(a) - mean(b); None with fewer than 2 seeds on a
    side. Equal values on both sides with no spread give the exact difference."""
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return a[0] - b[0]
    with warnings.catch_warnings():  # one constant side is fine: its variance is 0
        warnings.simplefilter("ignore", RuntimeWarning)
        result = scipy_stats.ttest_ind(a, b, equal_var=False, alternative="less")
        return float(result.confidence_interval(1 - ALPHA).high)


def greater(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's one-sided t-test p-value that mean(a) > mean(b); None with fewer than 2 seeds on a
    side. Equal values on both sides with no spread give 0 or 1 (the difference is exact)."""
    if len(a) < 2 or len(b) < 2:
        return None
    if max(a) == min(a) and max(b) == min(b):
        return 0.0 if a[0] > b[0] else 1.0
    with warnings.catch_warnings():  # one constant side is fine: its variance is 0
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(scipy_stats.ttest_ind(a, b, equal_var=False, alternative="greater").pvalue)
