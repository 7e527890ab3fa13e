"""The paper's figures, redrawn from our runs: each function takes plain data, returns a Figure.

No pyplot and no global state: figures are `matplotlib.figure.Figure` objects rendered by the
Agg (PNG) and SVG backends when saved. Accuracies and errors here are in percent; the caller
converts. Several seeds of one curve share a colour; the first carries the legend label.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import NamedTuple

import matplotlib
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

Series = tuple[Sequence[float], Sequence[float]]  # (x, y)


class RatioPoint(NamedTuple):
    """Figure 1b: one model at one p. lower_bound: some seed did not fit (value is its budget)."""

    p: float
    value: float
    lo: float
    hi: float
    lower_bound: bool


class ErrorPoint(NamedTuple):
    """Figure 1c: test error (percent) of one model at one p, with its spread over seeds."""

    p: float
    value: float
    lo: float
    hi: float


class AccCurve(NamedTuple):
    """Figure 2b: one run's accuracies (percent) per evaluation step."""

    steps: Sequence[float]
    train: Sequence[float]
    test: Sequence[float]
    best_test: Sequence[float]


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), layout="constrained")


def loss_curves(curves: dict[str, list[Series]], title: str) -> Figure:
    """Figure 1a: training loss against SGD steps, one colour per randomization test."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for i, (label, series) in enumerate(curves.items()):
        for j, (x, y) in enumerate(series):
            ax.plot(x, y, color=f"C{i}", marker=".", lw=1.5 if j == 0 else 0.8,
                    alpha=1.0 if j == 0 else 0.5, label=label if j == 0 else None)
    ax.set(xlabel="SGD steps", ylabel="training loss (full training set)", title=title)
    ax.grid(alpha=0.3)
    if curves:
        ax.legend()
    return fig


def slowdown(lines: dict[str, list[RatioPoint]]) -> Figure:
    """Figure 1b: steps to fit relative to the true-label run, against label corruption p."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.axhline(1.0, color="0.6", lw=0.8, ls=":")
    any_bound = False
    for i, (label, pts) in enumerate(lines.items()):
        pts = sorted(pts)
        color = f"C{i}"
        ax.plot([q.p for q in pts], [q.value for q in pts], color=color, label=label)
        for q in pts:
            any_bound |= q.lower_bound
            yerr = [[max(q.value - q.lo, 0)], [max(q.hi - q.value, 0)]]
            ax.errorbar(q.p, q.value, yerr=yerr, color=color, capsize=3, marker="o", ms=7,
                        mfc="white" if q.lower_bound else color, mec=color)
    handles, _ = ax.get_legend_handles_labels()
    if any_bound:
        handles.append(Line2D([], [], color="0.3", marker="o", mfc="white", ls="",
                              label="did not fit: plotted at its budget (lower bound)"))
    ax.set(xlabel="label corruption p", ylabel="steps to fit / steps to fit at p = 0",
           title="Convergence slowdown", xlim=(-0.05, 1.05))
    ax.grid(alpha=0.3)
    if lines:
        ax.legend(handles=handles)
    return fig


def error_growth(lines: dict[str, list[ErrorPoint]], chance: float = 90.0) -> Figure:
    """Figure 1c: test error (percent) against label corruption p, with the chance line."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    ax.axhline(chance, color="0.4", lw=1, ls="--", label=f"chance ({chance:g}%)")
    for i, (label, pts) in enumerate(lines.items()):
        pts = sorted(pts)
        ax.errorbar([q.p for q in pts], [q.value for q in pts],
                    yerr=[[max(q.value - q.lo, 0) for q in pts], [max(q.hi - q.value, 0) for q in pts]],
                    color=f"C{i}", marker="o", capsize=3, label=label)
    ax.set(xlabel="label corruption p", ylabel="test error (%)", title="Generalization error growth",
           xlim=(-0.05, 1.05), ylim=(0, 100))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def clean_vs_corrupted(panels: dict[tuple[str, str], dict[str, list[Series]]]) -> Figure:
    """Small multiples: train accuracy (percent) on clean vs corrupted examples against steps.

    Keys are (row, column) titles, e.g. (model, "p = 0.5"); values map a curve name to its seeds.
    """
    rows = list(dict.fromkeys(r for r, _ in panels))
    cols = list(dict.fromkeys(c for _, c in panels))
    fig = _figure(2.8 * max(len(cols), 1) + 0.6, 2.3 * max(len(rows), 1) + 0.4)
    axes = fig.subplots(max(len(rows), 1), max(len(cols), 1), squeeze=False, sharey=True)
    colours = {"clean": "C0", "corrupted": "C3", "all": "0.5"}
    for (r, c), curves in panels.items():
        ax = axes[rows.index(r)][cols.index(c)]
        for name, series in curves.items():
            for j, (x, y) in enumerate(series):
                ax.plot(x, y, color=colours.get(name, "C2"), ls=":" if name == "all" else "-",
                        lw=1.4 if j == 0 else 0.8, alpha=1.0 if j == 0 else 0.5,
                        label=name if j == 0 else None)
        ax.set_title(f"{r}, {c}", fontsize=9)
        ax.set_ylim(-2, 102)
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("SGD steps")
    for row in axes:
        row[0].set_ylabel("train acc (%)")
    if panels:
        axes[0][0].legend(fontsize=8)
    return fig


def batchnorm_curves(curves: dict[str, list[AccCurve]]) -> Figure:
    """Figure 2b: train and test accuracy against steps, cumulative best test accuracy shaded."""
    fig = _figure(6.4, 4.2)
    ax = fig.add_subplot()
    for i, (label, runs) in enumerate(curves.items()):
        color = f"C{i}"
        for j, run in enumerate(runs):
            first = j == 0
            ax.plot(run.steps, run.train, color=color, ls="--", lw=1.2,
                    label=f"{label}: train" if first else None)
            ax.plot(run.steps, run.test, color=color, lw=1.5, label=f"{label}: test" if first else None)
            ax.fill_between(run.steps, run.test, run.best_test, color=color, alpha=0.2, lw=0,
                            label=f"{label}: best test so far" if first else None)
    ax.set(xlabel="SGD steps", ylabel="accuracy (%)", ylim=(0, 102),
           title="Inception with and without BatchNorm (no explicit regularizers)")
    ax.grid(alpha=0.3)
    if curves:
        ax.legend(fontsize=8)
    return fig


def render(fig: Figure, fmt: str, dpi: int = 110) -> bytes:
    """The figure as PNG or SVG bytes; SVG output is deterministic (fixed ids, no date)."""
    buf = io.BytesIO()
    with matplotlib.rc_context({"svg.hashsalt": "rethink", "svg.fonttype": "path"}):
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=metadata)
    return buf.getvalue()
