"""Do two results stores hold the same results? Same run ids, same sweep points, identical metrics.

    python scripts/compare_stores.py BEFORE/results.sqlite AFTER/results.sqlite [TOLERANCE]

Timings, timestamps and software versions are left out (they differ between any two runs);
every other column of `runs` and `epochs` must be equal: bit for bit, or with TOLERANCE within
that absolute difference for numbers (the largest difference is printed). Exit status 0 when
they are, 1 when not (the first differences are printed). Used to show that a change to the code
left what `rethink reproduce --preset smoke` computes unchanged, and that stacked runs
(`--stack K`) store what plain runs store.
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

LEFT_OUT = {"wall_time", "train_time", "eval_time", "started_at", "finished_at", "versions"}


def dump(path: str) -> tuple[dict[Any, dict], dict[Any, dict], list[tuple]]:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    db.row_factory = sqlite3.Row

    def kept(row: sqlite3.Row) -> dict[str, Any]:
        return {k: v for k, v in dict(row).items() if k not in LEFT_OUT}

    runs = {r["run_id"]: kept(r) for r in db.execute("SELECT * FROM runs")}
    epochs = {(r["run_id"], r["epoch"]): kept(r) for r in db.execute("SELECT * FROM epochs")}
    points = sorted(tuple(r) for r in db.execute("SELECT experiment, labels, run_id, config "
                                                 "FROM sweep_points"))
    return runs, epochs, points


def same(x: Any, y: Any, tolerance: float) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return abs(x - y) <= tolerance
    return x == y


def differences(a: dict[Any, dict], b: dict[Any, dict], tolerance: float) -> list[tuple[Any, dict]]:
    out = []
    for key, row in a.items():
        other = b.get(key, {})
        diff = {c: (row[c], other.get(c)) for c in row if not same(row[c], other.get(c), tolerance)}
        if diff:
            out.append((key, diff))
    return out


def largest_difference(a: dict[Any, dict], b: dict[Any, dict]) -> float:
    return max((abs(v - b[k][c]) for k, row in a.items() if k in b for c, v in row.items()
                if isinstance(v, float) and isinstance(b[k].get(c), float)), default=0.0)


def main(before: str, after: str, tolerance: float = 0.0) -> int:
    (runs_a, epochs_a, points_a), (runs_b, epochs_b, points_b) = dump(before), dump(after)
    bad_runs = differences(runs_a, runs_b, tolerance)
    bad_epochs = differences(epochs_a, epochs_b, tolerance)
    same = set(runs_a) == set(runs_b) and set(epochs_a) == set(epochs_b) and points_a == points_b
    print(f"runs: {len(runs_a)} vs {len(runs_b)}, same ids: {set(runs_a) == set(runs_b)}")
    print(f"epoch rows: {len(epochs_a)} vs {len(epochs_b)}, same keys: {set(epochs_a) == set(epochs_b)}")
    print(f"sweep points: {len(points_a)} vs {len(points_b)}, identical: {points_a == points_b}")
    largest = max(largest_difference(runs_a, runs_b), largest_difference(epochs_a, epochs_b))
    print(f"runs with a different metric: {len(bad_runs)}; epoch rows with a different metric: "
          f"{len(bad_epochs)} (tolerance {tolerance:g}); largest difference: {largest:.3g}")
    for key, diff in (bad_runs + bad_epochs)[:10]:
        print(f"  {key}: {diff}")
    return 0 if same and not bad_runs and not bad_epochs else 1


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3]) if len(sys.argv) == 4 else 0.0))
