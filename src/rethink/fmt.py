"""Small formatting helpers shared by the command line, the sweep engine and the report."""

from __future__ import annotations


def duration(seconds: float) -> str:
    """Seconds as a human duration: '42 s', '12.5 min', '2.25 h'."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
