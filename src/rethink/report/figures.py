"""The paper's figures, redrawn from our runs: each function takes plain data, returns a Figure.

No pyplot and no global state: figures are `matplotlib.figure.Figure` objects rendered by the
Agg (PNG) and SVG backends when saved. Accuracies and errors here are in percent; the caller
converts. Every figure shows its uncertainty: 95% intervals as error bars on points, and the
min-max over seeds as a shaded band around the mean of a curve. The paper's own numbers, where
it prints any, are drawn as grey or hollow reference marks. Legends sit outside the axes, to the
right, so they never hide a curve.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import NamedTuple

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

Series = tuple[Sequence[float], Sequence[float]]  # (x, y)

SCREEN_DPI = 110  # a figure's size on screen, in pixels per inch
DPI = 2 * SCREEN_DPI  # the PNG files: twice that, sharp on high-density screens
WIDTH, HEIGHT = 8.2, 4.2  # inches: a 6.4-inch plot and a legend column to its right


class RatioPoint(NamedTuple):
    """Figure 1b: one model at one p, with the 95% interval [lo, hi] of the ratio.
    lower_bound: some seed did not fit (its budget counts, so the value is a lower bound)."""

    p: float
    value: float
    lo: float
    hi: float
    lower_bound: bool
    seeds: int = 1


class ErrorPoint(NamedTuple):
    """Figure 1c: test error (percent) of one model at one p, with its 95% interval [lo, hi]."""

    p: float
    value: float
    lo: float
    hi: float
    seeds: int = 1
    n_eval: int | None = None


class AccCurve(NamedTuple):
    """Figure 2b: one run's accuracies (percent) per evaluation step."""

    steps: Sequence[float]
    train: Sequence[float]
    test: Sequence[float]
    best_test: Sequence[float]


class Band(NamedTuple):
    """Several seeds of one curve on their common steps: mean, min, max, and how many seeds."""

    x: list[float]
    mean: list[float]
    lo: list[float]
    hi: list[float]
    n: list[int]


def band(series: Sequence[Series]) -> Band:
    """Mean and min-max over the seeds at every step some seed reached (a seed that stopped early,
    having fit, no longer counts after its last step)."""
    at: dict[float, list[float]] = {}
    for x, y in series:
        for xi, yi in zip(x, y, strict=True):
            at.setdefault(float(xi), []).append(float(yi))
    xs = sorted(at)
    return Band(xs, [sum(at[x]) / len(at[x]) for x in xs], [min(at[x]) for x in xs],
                [max(at[x]) for x in xs], [len(at[x]) for x in xs])


def _figure(width: float = WIDTH, height: float = HEIGHT) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def _draw_band(ax: Axes, series: Sequence[Series], color: str, label: str | None, *, ls: str = "-",
               lw: float = 1.5, marker: str | None = None) -> bool:
    """The seeds' mean as a line and their min-max as a shaded band; True if a band was drawn."""
    b = band(series)
    if not b.x:
        return False
    ax.plot(b.x, b.mean, color=color, ls=ls, lw=lw, marker=marker, ms=3, label=label)
    if max(b.n) < 2:
        return False
    ax.fill_between(b.x, b.lo, b.hi, color=color, alpha=0.18, lw=0)
    return True


def _dodge(i: int, k: int, step: float = 0.012) -> float:
    """A small horizontal shift of the i-th of k series, so error bars at the same p stay apart."""
    return (i - (k - 1) / 2) * step


def _legend(fig: Figure, ax: Axes, extra: Sequence[Line2D] = (), title: str | None = None) -> None:
    handles, labels = ax.get_legend_handles_labels()
    handles = [*handles, *extra]
    if handles:
        fig.legend(handles=handles, loc="outside right upper", fontsize=8, frameon=False, title=title,
                   title_fontsize=8)


def _band_note(banded: bool) -> str | None:
    return "shaded: min-max over seeds" if banded else None


def loss_curves(curves: dict[str, list[Series]], title: str) -> Figure:
    """Figure 1a: training loss against SGD steps (from step 0), one colour per randomization test;
    the mean over seeds with their min-max shaded."""
    fig = _figure()
    ax = fig.add_subplot()
    banded = False
    for i, (label, series) in enumerate(curves.items()):
        banded |= _draw_band(ax, series, f"C{i}", label, marker=".")
    ax.set(xlabel="SGD steps", ylabel="training loss (full training set)", title=title)
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    _legend(fig, ax, title=_band_note(banded))
    return fig


def slowdown(lines: dict[str, list[RatioPoint]]) -> Figure:
    """Figure 1b: steps to fit relative to the true-label run, against label corruption p, with
    95% error bars (none for a point of one seed on each side)."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    any_bound = False
    for i, (label, pts) in enumerate(lines.items()):
        pts = sorted(pts)
        color, shift = f"C{i}", _dodge(i, len(lines))
        ax.plot([q.p + shift for q in pts], [q.value for q in pts], color=color, label=label)
        for q in pts:
            any_bound |= q.lower_bound
            yerr = [[max(q.value - q.lo, 0)], [max(q.hi - q.value, 0)]]
            ax.errorbar(q.p + shift, q.value, yerr=yerr, color=color, capsize=3, marker="o", ms=7,
                        mfc="white" if q.lower_bound else color, mec=color)
    extra = []
    if any_bound:
        extra.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="",
                            label="did not fit: at its budget\n(a lower bound)"))
    ax.set(xlabel="label corruption p", ylabel="steps to fit / steps to fit at p = 0",
           title="Convergence slowdown", xlim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    _legend(fig, ax, extra, title="error bars: 95% interval")
    return fig


def error_growth(lines: dict[str, list[ErrorPoint]], chance: float = 90.0,
                 paper_at_zero: dict[str, float] | None = None) -> Figure:
    """Figure 1c: test error (percent) against label corruption p, with 95% error bars (Wilson of
    the test set, widened by the seeds); the chance line, which is also the paper's value at
    p = 1, and the paper's Table 1 test error of each model at p = 0 as a hollow diamond."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.axhline(chance, color="0.4", lw=1, ls="--", label=f"chance ({chance:g}%) = the paper at p = 1")
    paper_at_zero = paper_at_zero or {}
    drew_paper = False
    for i, (label, pts) in enumerate(lines.items()):
        pts, shift = sorted(pts), _dodge(i, len(lines))
        ax.errorbar([q.p + shift for q in pts], [q.value for q in pts],
                    yerr=[[max(q.value - q.lo, 0) for q in pts], [max(q.hi - q.value, 0) for q in pts]],
                    color=f"C{i}", marker="o", capsize=3, label=label)
        if label in paper_at_zero:
            ax.plot([0.0 + shift], [paper_at_zero[label]], ls="", marker="D", ms=9, mfc="none", mec=f"C{i}",
                    mew=1.5)
            drew_paper = True
    extra = [Line2D([], [], color="0.3", marker="D", mfc="none", ls="", ms=8,
                    label="the paper, Table 1 (p = 0)")] if drew_paper else []
    ax.set(xlabel="label corruption p", ylabel="test error (%)", title="Generalization error growth",
           xlim=(-0.05, 1.05), ylim=(0, 100))
    ax.grid(alpha=0.3)
    _legend(fig, ax, extra, title="error bars: 95% interval")
    return fig


def clean_vs_corrupted(panels: dict[tuple[str, str], dict[str, list[Series]]]) -> Figure:
    """Small multiples: train accuracy (percent) on clean vs corrupted examples against steps.

    Keys are (row, column) titles, e.g. (model, "p = 0.5"); values map a curve name to its seeds,
    drawn as their mean with the min-max shaded.
    """
    rows = list(dict.fromkeys(r for r, _ in panels))
    cols = list(dict.fromkeys(c for _, c in panels))
    fig = _figure(2.8 * max(len(cols), 1) + 2.2, 2.3 * max(len(rows), 1) + 0.4)
    axes = fig.subplots(max(len(rows), 1), max(len(cols), 1), squeeze=False, sharey=True)
    colours = {"clean": "C0", "corrupted": "C3", "all": "0.5"}
    banded = False
    for (r, c), curves in panels.items():
        ax = axes[rows.index(r)][cols.index(c)]
        for name, series in curves.items():
            banded |= _draw_band(ax, series, colours.get(name, "C2"), name, ls=":" if name == "all" else "-",
                                 lw=1.4)
        ax.set_title(f"{r}, {c}", fontsize=9)
        ax.set_ylim(-2, 102)
        ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("SGD steps")
    for row in axes:
        row[0].set_ylabel("train acc (%)")
    if panels:
        first = axes[rows.index(next(iter(panels))[0])][cols.index(next(iter(panels))[1])]
        _legend(fig, first, title=_band_note(banded))
    return fig


def batchnorm_curves(curves: dict[str, list[AccCurve]], paper_test: dict[str, float] | None = None) -> Figure:
    """Figure 2b: train and test accuracy against steps (means over seeds, min-max shaded), the best
    test accuracy so far (dotted), and the paper's Table 1 test accuracy of each network
    (dash-dot, no explicit regularizers)."""
    fig = _figure()
    ax = fig.add_subplot()
    paper_test = paper_test or {}
    banded = False
    for i, (label, runs) in enumerate(curves.items()):
        color = f"C{i}"
        banded |= _draw_band(ax, [(r.steps, r.train) for r in runs], color, f"{label}: train", ls="--",
                             lw=1.2)
        banded |= _draw_band(ax, [(r.steps, r.test) for r in runs], color, f"{label}: test")
        _draw_band(ax, [(r.steps, r.best_test) for r in runs], color, f"{label}: best test so far", ls=":",
                   lw=1.2)
        if label in paper_test:
            ax.axhline(paper_test[label], color=color, ls="-.", lw=0.9, alpha=0.8,
                       label=f"{label}: the paper's test acc (Table 1)")
    ax.set(xlabel="SGD steps", ylabel="accuracy (%)", ylim=(0, 102),
           title="Inception with and without BatchNorm")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    _legend(fig, ax, title=_band_note(banded))
    return fig


def render(fig: Figure, fmt: str, dpi: int = DPI) -> bytes:
    """The figure as PNG (at `dpi`, twice the screen's by default) or SVG bytes; SVG output is
    deterministic (fixed ids, no date)."""
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "rethink", "svg.fonttype": "path"}):
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) in pixels of PNG bytes, from their IHDR header."""
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


# ---------------------------------------------------------------- beyond the paper


class WidthPoint(NamedTuple):
    """One width (or N/n) of a double-descent curve: an error (percent) with its 95% interval."""

    x: float
    value: float
    lo: float
    hi: float


def double_descent(lines: dict[str, list[WidthPoint]], *, xlabel: str, threshold: float | None = None,
                   threshold_label: str = "", ylabel: str = "test error (%)", title: str = "",
                   log_y: bool = False, dashed: Sequence[str] = (), bars: bool = True) -> Figure:
    """Error (or norm) against model size on a log axis, with 95% error bars (`bars`: the points
    have intervals) and the interpolation threshold marked as a vertical line; series named in
    `dashed` are drawn dashed (train error)."""
    fig = _figure()
    ax = fig.add_subplot()
    if threshold is not None:
        ax.axvline(threshold, color="0.4", lw=1, ls="--", label=threshold_label)
    for i, (label, pts) in enumerate(lines.items()):
        pts = sorted(pts)
        ax.errorbar([q.x for q in pts], [q.value for q in pts],
                    yerr=[[max(q.value - q.lo, 0) for q in pts], [max(q.hi - q.value, 0) for q in pts]],
                    color=f"C{i % 10}", marker="o", ms=3, capsize=2, label=label,
                    ls="--" if label in dashed else "-")
    ax.set_xscale("log")
    if log_y:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3, which="both")
    _legend(fig, ax, title="error bars: 95% interval" if bars else None)
    return fig


def epoch_curves(curves: dict[str, Series], title: str) -> Figure:
    """Epoch-wise double descent: test error (percent) against epochs, one line per width."""
    fig = _figure()
    ax = fig.add_subplot()
    for i, (label, (x, y)) in enumerate(curves.items()):
        ax.plot(x, y, color=matplotlib.colormaps["viridis"](i / max(len(curves) - 1, 1)), lw=1.2, label=label)
    ax.set_xscale("symlog", linthresh=10)
    ax.set(xlabel="epoch", ylabel="test error (%)", title=title)
    ax.grid(alpha=0.3)
    _legend(fig, ax)
    return fig


def score_histograms(panels: dict[str, dict[str, Sequence[float]]]) -> Figure:
    """Memorization scores: one panel per noise level, a histogram per group of examples (clean,
    changed labels), each normalized to its own count."""
    fig = _figure(WIDTH, 3.2)
    axes = fig.subplots(1, max(len(panels), 1), squeeze=False)[0]
    bins = [i / 20 - 1 for i in range(41)]  # scores lie in [-1, 1]
    for ax, (title, groups) in zip(axes, panels.items(), strict=False):
        for i, (label, values) in enumerate(groups.items()):
            if len(values):
                ax.hist(values, bins=bins, density=True, alpha=0.55, color=f"C{i}",
                        label=f"{label} ({len(values):,})")
        ax.set(xlabel="memorization score", ylabel="density", title=title, xlim=(-0.5, 1.0))
        ax.legend(fontsize=7, frameon=False)
        ax.grid(alpha=0.3)
    return fig


def image_grid(rows: Sequence[tuple[str, Sequence[tuple[object, str]]]], title: str) -> Figure:
    """Rows of images (HWC uint8 arrays) with a caption under each and a title per row."""
    cols = max((len(images) for _, images in rows), default=1)
    fig = Figure(figsize=(1.0 * cols + 1.4, 1.05 * len(rows) + 0.4), layout="constrained")
    axes = fig.subplots(max(len(rows), 1), cols, squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(cols):
            ax = axes[r][c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c < len(images):
                image, caption = images[c]
                ax.imshow(image, cmap="gray" if getattr(image, "ndim", 3) == 2 else None)
                ax.set_xlabel(caption, fontsize=6, labelpad=1)
            else:
                ax.axis("off")
        axes[r][0].set_ylabel(name, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(title, fontsize=9)
    return fig
