"""Failpoints: named places where this process kills itself on purpose, for crash tests.

Storage engines prove their crash safety by dying at chosen points; so do we. With

    RETHINK_FAILPOINTS="checkpoint-temp-written:2,step:7"

the process sends itself SIGKILL the 2nd time it reaches `checkpoint-temp-written` or the 7th
time it reaches `step`, whichever comes first: no cleanup, no `finally`, exactly like a power
cut or the OOM killer. Unset (always, outside tests) a failpoint costs one truth test.

The points, in the order one epoch reaches them:
  step                      after an optimizer step
  checkpoint-temp-written   the new checkpoint is complete in its temp file, not yet renamed
  checkpoint-replaced       the new checkpoint is in place; the database does not know the epoch
  db-in-transaction         a database write is done but not committed
  epoch-stored              the epoch's row is committed
"""

from __future__ import annotations

import os
import signal

POINTS = ("step", "checkpoint-temp-written", "checkpoint-replaced", "db-in-transaction", "epoch-stored")
ENV = "RETHINK_FAILPOINTS"


def _plan(text: str) -> dict[str, int]:
    plan = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, count = item.partition(":")
        if name not in POINTS:
            raise ValueError(f"{ENV}: unknown failpoint {name!r} (known: {', '.join(POINTS)})")
        plan[name] = int(count or 1)
    return plan


_PLAN = _plan(os.environ.get(ENV, ""))
_SEEN: dict[str, int] = {}


def failpoint(name: str) -> None:
    """Die here (SIGKILL) if RETHINK_FAILPOINTS asks for this visit of `name`."""
    if not _PLAN:
        return
    _SEEN[name] = _SEEN.get(name, 0) + 1
    if _PLAN.get(name) == _SEEN[name]:
        os.kill(os.getpid(), signal.SIGKILL)
