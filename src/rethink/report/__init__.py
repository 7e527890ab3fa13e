"""The reproduction report: our runs beside the paper's numbers, as HTML and Markdown.

    from rethink.report import write_report
    write_report("runs")            # runs/report/index.html, report.md, figures/*.png|svg,
                                    # epochs.csv, runs.csv

Modules: `paper_numbers` (the paper's published numbers, as data), `collect` (reading a sweep
from the store), `stats` (95% intervals and tests), `analysis`, `tables`, `figures`, `findings`
(claims and verdicts), `theory` (theory results against the paper's numbers), `sections`
(assembling the document), `html` / `markdown` (rendering), `exports` (CSV), `build`
(write_report).
"""

from __future__ import annotations

from rethink.report.build import write_report

__all__ = ["write_report"]
