"""Render the report as one self-contained HTML file: CSS inline, figures embedded as base64 PNG,
no external resource of any kind, so index.html can be moved or mailed on its own.
"""

from __future__ import annotations

import base64
import html

from rethink.report.document import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_MEASURED,
    Block,
    Bullets,
    Document,
    FigureSpec,
    Finding,
    Section,
    Table,
)
from rethink.report.figures import DPI, SCREEN_DPI, png_size

CSS = """
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
nav { font-size: 0.9em; color: #555; }
nav a { margin-right: 1em; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.88em; }
caption { caption-side: top; text-align: left; color: #444; padding-bottom: 0.4em; }
th, td { border: 1px solid #d6d6d6; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f5; }
tr:nth-child(even) td { background: #fafafa; }
td.warn { color: #9a5b00; }
p.note { color: #555; font-size: 0.88em; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9em; }
ul.findings { list-style: none; padding-left: 0; }
ul.findings li { margin: 0.35em 0; padding: 0.3em 0.6em; border-left: 4px solid #bbb; background: #fafafa; }
ul.findings li.holds { border-color: #2e8b57; }
ul.findings li.fails { border-color: #c0392b; }
.verdict { font-weight: 600; }
li.holds .verdict { color: #2e8b57; }
li.fails .verdict { color: #c0392b; }
li.unmeasured .verdict { color: #777; }
ul.findings li.inconclusive { border-color: #d4a017; }
li.inconclusive .verdict { color: #a67c00; }
.claim-detail { color: #555; font-size: 0.9em; }
"""

_VERDICT_CLASS = {HOLDS: "holds", FAILS: "fails", INCONCLUSIVE: "inconclusive", NOT_MEASURED: "unmeasured"}
_WARN_WORDS = ("not run", "failed", "did not fit", "diverged", "still running", "not in sweep")


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)


def _table(t: Table) -> str:
    out = ["<table>"]
    if t.caption:
        out.append(f"<caption>{_e(t.caption)}</caption>")
    out.append("<thead><tr>" + "".join(f"<th>{_e(h)}</th>" for h in t.headers) + "</tr></thead><tbody>")
    for row in t.rows:
        cells = []
        for c in row:
            warn = any(w in c for w in _WARN_WORDS)
            cells.append(f'<td class="warn">{_e(c)}</td>' if warn else f"<td>{_e(c)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    out += [f'<p class="note">{_e(n)}</p>' for n in t.notes]
    return "\n".join(out)


def _figure(spec: FigureSpec, png: bytes) -> str:
    """The PNG is drawn at DPI / SCREEN_DPI times its on-screen size: shown at that size, it is sharp."""
    data = base64.b64encode(png).decode("ascii")
    width, height = (round(v * SCREEN_DPI / DPI) for v in png_size(png))
    return (f'<figure id="{_e(spec.name)}"><img alt="{_e(spec.caption)}" width="{width}" height="{height}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_e(spec.caption)}</figcaption></figure>')


def _finding(f: Finding) -> str:
    paper = f"; paper: {_e(f.paper)}" if f.paper else ""
    details = [f"{_e(f.source)}: &ldquo;{_e(f.quote)}&rdquo;" if f.quote else "",
               f"rule: {_e(f.rule)}" if f.rule else "",
               f'evidence: <a href="#{_e(f.evidence)}">{_e(f.evidence)}</a>' if f.evidence else ""]
    detail = "<br>".join(d for d in details if d)
    return (f'<li class="{_VERDICT_CLASS.get(f.verdict, "")}"><b>{_e(f.claim)}</b>: {_e(f.measured)}'
            f'{paper} - <span class="verdict">{_e(f.verdict)}</span>'
            + (f'<div class="claim-detail">{detail}</div>' if detail else "") + "</li>")


def _blocks(blocks: list[Block], images: dict[str, bytes]) -> list[str]:
    out: list[str] = []
    findings: list[Finding] = []

    def flush() -> None:
        if findings:
            out.append('<ul class="findings">\n' + "\n".join(_finding(f) for f in findings) + "\n</ul>")
            findings.clear()

    for block in blocks:
        if isinstance(block, Finding):
            findings.append(block)
            continue
        flush()
        if isinstance(block, str):
            out.append(f"<p>{_e(block)}</p>")
        elif isinstance(block, Bullets):
            out.append("<ul>" + "".join(f"<li>{_e(i)}</li>" for i in block.items) + "</ul>")
        elif isinstance(block, Table):
            out.append(_table(block))
        elif isinstance(block, FigureSpec):
            out.append(_figure(block, images[block.name]))
    flush()
    return out


def _section(s: Section, images: dict[str, bytes]) -> str:
    return "\n".join([f'<section id="{_e(s.id)}">', f"<h2>{_e(s.title)}</h2>", *_blocks(s.blocks, images),
                      "</section>"])


def render_html(doc: Document, images: dict[str, bytes]) -> str:
    """The whole document; `images` maps each figure's name to its PNG bytes."""
    nav = " ".join(f'<a href="#{_e(s.id)}">{_e(s.title.split(":")[0])}</a>' for s in doc.sections)
    body = "\n".join(_section(s, images) for s in doc.sections)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_e(doc.title)}</title>
<style>{CSS}</style>
</head>
<body>
<header><h1>{_e(doc.title)}</h1>
<p>Zhang, Bengio, Hardt, Recht, Vinyals (ICLR 2017), "Understanding deep learning requires rethinking
generalization": our runs beside the paper's numbers.</p>
<nav>{nav}</nav></header>
{body}
</body>
</html>
"""
