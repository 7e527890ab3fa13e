"""The report as data: sections of paragraphs, tables and figures, rendered to HTML and Markdown.

Cells are already-formatted strings, so both renderers show exactly the same numbers. The
number formats live here too.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from matplotlib.figure import Figure

from rethink.report.collect import Cell, Stat
from rethink.report.stats import Interval

HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED)


@dataclass(frozen=True)
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class FigureSpec:
    name: str  # file stem under figures/
    caption: str
    figure: Figure


@dataclass(frozen=True)
class Finding:
    claim: str
    measured: str
    paper: str
    verdict: str  # one of VERDICTS
    quote: str = ""  # the paper's sentence (or its figure/table) that the claim checks
    rule: str = ""  # how the verdict is decided
    source: str = "Zhang et al. 2017"  # whose claim it is
    evidence: str = ""  # id of the report section holding the runs behind it


@dataclass(frozen=True)
class Bullets:
    items: list[str]


Block = str | Bullets | Table | FigureSpec | Finding  # a str is a paragraph


@dataclass
class Section:
    """A titled run of blocks, rendered in order; consecutive findings form one list."""

    id: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> Section:
        self.blocks.extend(blocks)
        return self

    def of_type(self, kind: type) -> list:
        return [b for b in self.blocks if isinstance(b, kind)]


@dataclass
class Document:
    title: str
    sections: list[Section]


# ------------------------------------------------------------------ number formats


def pct(x: float | None, digits: int = 2) -> str:
    """A fraction in [0, 1] as a percentage without the sign, e.g. 0.9905 -> '99.05'."""
    return "-" if x is None else f"{100 * x:.{digits}f}"


def fmt_stat(s: Stat | None, n_seeds: int = 1, *, scale: float = 100.0, digits: int = 2) -> str:
    """mean, with '± std (n=k)' when the cell has several seeds."""
    if s is None:
        return "-"
    text = f"{scale * s.mean:.{digits}f}"
    if n_seeds > 1:
        of = f" of {n_seeds}" if s.n < n_seeds else ""
        text += f" ± {scale * s.std:.{digits}f} (n={s.n}{of})"
    return text


NO_SEED_INTERVAL = "1 seed: no interval"


def fmt_interval(iv: Interval | None, *, scale: float = 100.0, digits: int = 1, signed: bool = False) -> str:
    """'51.2 [49.0, 53.4]': an estimate and its 95% interval, in `scale` units (100: fractions as
    percent). A number with no binomial part on one seed has no interval at all, and says so."""
    if iv is None:
        return "-"
    s = iv.scaled(scale)
    est, lo, hi = (fmt_num(x, digits, signed) for x in (s.estimate, s.lo, s.hi))
    if iv.seeds < 2 and iv.n_eval is None:
        return f"{est} ({NO_SEED_INTERVAL})"
    return f"{est} [{lo}, {hi}]"


def fmt_num(x: float, digits: int = 1, signed: bool = False) -> str:
    """x with thousands separators and `digits` decimals; never '-0.0'."""
    return f"{round(x, digits) + 0.0:{'+' if signed else ''},.{digits}f}"


def cell_value(cell: Cell | None, attr: str, *, scale: float = 100.0, digits: int = 1) -> str:
    """A cell's number with its 95% interval (`Cell.interval`), or what is missing: 'not in sweep',
    'not run', 'failed: ...'. Seeds without a result are counted: '(2 of 3 seeds)'."""
    if cell is None:
        return "not in sweep"
    iv = cell.interval(attr)
    if iv is None:  # the notes column carries the messages; here the status words only
        words = dict.fromkeys(o.status if o.status != "running" else "still running" for o in cell.outcomes)
        return " / ".join(words) or "-"
    text = fmt_interval(iv, scale=scale, digits=digits)
    return text + (f" ({iv.seeds} of {cell.n_seeds} seeds)" if iv.seeds < cell.n_seeds else "")


def cell_sizes(cell: Cell | None) -> str:
    """'3 / 10,000 / 10,000': the cell's seeds (those with a result, of all), training and test set
    sizes, the n behind each of its intervals."""
    if cell is None:
        return "-"
    done = len(cell.results)
    seeds = str(cell.n_seeds) if done == cell.n_seeds else f"{done} of {cell.n_seeds}"
    return f"{seeds} / {fmt_int(cell.n_train)} / {fmt_int(cell.n_test)}"


def notes_of(cell: Cell | None) -> str:
    """The cell's problems in words ('did not fit in 60 epochs', 'not run', ...), or ''."""
    return "" if cell is None else "; ".join(cell.problems())


def fmt_int(n: int | float | None) -> str:
    return "-" if n is None else f"{round(n):,}"


def fmt_p(p: float | None) -> str:
    return "-" if p is None else f"{p:g}"


