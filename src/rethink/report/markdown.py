"""Render the report as Markdown: the same tables and findings as the HTML, figures referenced
as relative `figures/<name>.png` files beside it.
"""

from __future__ import annotations

from rethink.report.document import Block, Bullets, Document, FigureSpec, Finding, Table


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(t: Table) -> list[str]:
    out = [f"*{_cell(t.caption)}*", ""] if t.caption else []
    out.append("| " + " | ".join(_cell(h) for h in t.headers) + " |")
    out.append("|" + "|".join("---" for _ in t.headers) + "|")
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in t.rows]
    out += ["", *t.notes] if t.notes else []
    return out


def finding_line(f: Finding) -> str:
    """The claim, what we measured, the paper's value and the verdict on one line, then the paper's
    sentence, the rule and a link to the evidence, indented under it."""
    paper = f"; paper: {f.paper}" if f.paper else ""
    line = f"- {f.claim}: {f.measured}{paper} - **{f.verdict}**"
    details = [f"  - {f.source}: \"{f.quote}\"" if f.quote else "",
               f"  - rule: {f.rule}" if f.rule else "",
               f"  - evidence: [{f.evidence}](#{f.evidence})" if f.evidence else ""]
    return "\n".join([line, *filter(None, details)])


def _block(block: Block, figures_dir: str) -> list[str]:
    if isinstance(block, str):
        return [block]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items]
    if isinstance(block, Table):
        return _table(block)
    if isinstance(block, FigureSpec):
        return [f"![{block.caption}]({figures_dir}/{block.name}.png)", "", f"*{block.caption}*"]
    return []


def render_markdown(doc: Document, figures_dir: str = "figures") -> str:
    lines = [f"# {doc.title}", ""]
    for section in doc.sections:
        lines += [f'<a id="{section.id}"></a>', "", f"## {section.title}", ""]
        previous_finding = False
        for block in section.blocks:
            if isinstance(block, Finding):
                lines.append(finding_line(block))
                previous_finding = True
                continue
            if previous_finding:
                lines.append("")
                previous_finding = False
            lines += [*_block(block, figures_dir), ""]
        if previous_finding:
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
