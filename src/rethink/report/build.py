"""`write_report`: read a sweep from the results store and write index.html, report.md, the figures
(SVG, and PNG at twice the screen resolution) and the sweep's numbers as CSV (epochs.csv,
runs.csv) into the report folder, each file atomically (temp file + os.replace).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rethink.files import atomic_write
from rethink.report.collect import load_sweep
from rethink.report.document import FigureSpec
from rethink.report.exports import EPOCHS_CSV, RUNS_CSV, epochs_csv, runs_csv
from rethink.report.figures import render
from rethink.report.html import render_html
from rethink.report.markdown import render_markdown
from rethink.report.sections import build_document, section_data

FIGURES_DIR = "figures"


def write_report(out_dir: str | Path, *, sweep_id: str | None = None, dest: str | Path | None = None,
                 theory_dirs: Sequence[str | Path] = ()) -> Path:
    """Write the report of one sweep (default: the most recent) and return the path of index.html.

    Its Theory section lists the theory results of `out_dir`'s store and of `theory_dirs`.
    Raises StoreError when `out_dir` (or one of `theory_dirs`) holds no results database, or
    `out_dir` no sweep (or not `sweep_id`).
    """
    sweep = load_sweep(out_dir, sweep_id, theory_dirs)
    dest = Path(dest) if dest is not None else Path(out_dir) / "report"
    figures_dir = dest / FIGURES_DIR
    figures_dir.mkdir(parents=True, exist_ok=True)

    doc = build_document(sweep)
    doc.sections.append(section_data(sweep, FIGURES_DIR, EPOCHS_CSV, RUNS_CSV))
    images: dict[str, bytes] = {}
    for section in doc.sections:
        for spec in section.of_type(FigureSpec):
            png = render(spec.figure, "png")
            atomic_write(figures_dir / f"{spec.name}.png", png)
            atomic_write(figures_dir / f"{spec.name}.svg", render(spec.figure, "svg"))
            images[spec.name] = png

    atomic_write(dest / EPOCHS_CSV, epochs_csv(sweep))
    atomic_write(dest / RUNS_CSV, runs_csv(sweep))
    atomic_write(dest / "report.md", render_markdown(doc, FIGURES_DIR).encode("utf-8"))
    index = dest / "index.html"
    atomic_write(index, render_html(doc, images).encode("utf-8"))
    return index
