"""The results store: one SQLite file per output directory, a `runs` and an `epochs` table.

Every write is one transaction and the journal is write-ahead (WAL), so a process killed at
any moment leaves the database as it was before or after that write, never in between.
A run's row carries its full config JSON, seeds included, and the software versions that
produced it; its epochs rows are the learning curve.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rethink.errors import StoreError
from rethink.faults import failpoint
from rethink.metrics import EPOCH_COLUMNS, SUMMARY_COLUMNS, EpochRow, RunResult, sql_columns

DB_NAME = "results.sqlite"
SCHEMA_VERSION = 1

RUN_STATUSES = ("running", "fitted", "not-fitted", "diverged", "failed")
FINISHED_STATUSES = ("fitted", "not-fitted", "diverged")

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    dataset TEXT, model TEXT, corruption TEXT, p REAL,
    train_size INTEGER, test_size INTEGER,
    realized_rate REAL,
    data_hash TEXT,
    {sql_columns(RunResult, SUMMARY_COLUMNS, nullable=True)},
    versions TEXT,
    started_at TEXT, finished_at TEXT
);
CREATE TABLE IF NOT EXISTS sweeps (
    sweep_id TEXT PRIMARY KEY,
    preset TEXT NOT NULL,
    options TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sweep_points (
    sweep_id TEXT NOT NULL REFERENCES sweeps(sweep_id),
    experiment TEXT NOT NULL,
    labels TEXT NOT NULL,
    run_id TEXT NOT NULL,
    config TEXT NOT NULL,
    PRIMARY KEY (sweep_id, experiment, labels)
);
CREATE TABLE IF NOT EXISTS epochs (
    run_id TEXT NOT NULL REFERENCES runs(run_id),
    {sql_columns(EpochRow, EPOCH_COLUMNS)},
    PRIMARY KEY (run_id, epoch)
);
CREATE TABLE IF NOT EXISTS theory (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    config TEXT NOT NULL,
    result TEXT NOT NULL,
    versions TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (kind, key)
);
"""


def is_finished(row: dict[str, Any]) -> bool:
    """Whether a `runs` row is a finished run (fitted, not fitted or diverged)."""
    return row["status"] in FINISHED_STATUSES


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


class Store:
    """A thin, transactional wrapper over the results database in `out_dir`."""

    def __init__(self, out_dir: str | Path, *, readonly: bool = False) -> None:
        """Open (creating it unless `readonly`) the database in `out_dir`.

        `readonly` opens an existing database without taking write locks or creating anything,
        so reports can be written from a read-only results folder.
        """
        self.path = Path(out_dir) / DB_NAME
        try:
            if readonly:
                if not self.path.is_file():
                    raise StoreError(f"no results database at {self.path}", "run `rethink run` first")
                self.conn = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True,
                                            timeout=30, isolation_level=None)
                self.conn.row_factory = sqlite3.Row
                self.conn.execute("SELECT 1 FROM runs LIMIT 1")  # fails fast on a foreign file
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            self.conn.row_factory = sqlite3.Row
            self.conn.execute("PRAGMA journal_mode=WAL")
            self.conn.execute("PRAGMA synchronous=NORMAL")
            with self.transaction():  # executescript would commit on its own
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        self.conn.execute(statement)
                self._add_missing_epoch_columns()
                self.conn.execute(
                    "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
                )
        except (sqlite3.DatabaseError, OSError) as exc:
            raise StoreError(
                f"cannot open results database {self.path}: {exc}",
                "check the output directory is writable, or pass another --out",
            ) from exc

    def _add_missing_epoch_columns(self) -> None:
        """A database made by an older rethink gains the newer metric columns (as NULLs)."""
        have = {row[1] for row in self.conn.execute("PRAGMA table_info(epochs)")}
        for column in EPOCH_COLUMNS:
            if column not in have:
                self.conn.execute(f"ALTER TABLE epochs ADD COLUMN {column} REAL")

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise StoreError(f"results database {self.path} is busy or read-only: {exc}",
                             "wait for the other rethink process, or pass another --out") from exc
        try:
            yield self.conn
        except sqlite3.OperationalError as exc:  # read-only file, full disk, lost lock
            self.conn.execute("ROLLBACK")
            raise StoreError(f"cannot write results database {self.path}: {exc}",
                             "check free disk space and permissions") from exc
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        else:
            failpoint("db-in-transaction")
            try:
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self.conn.execute("ROLLBACK")
                raise StoreError(f"cannot write results database {self.path}: {exc}",
                                 "check free disk space and permissions") from exc

    # ------------------------------------------------------------------ writes

    def start_run(
        self,
        run_id: str,
        config: dict[str, Any],
        *,
        versions: dict[str, Any],
        realized_rate: float,
        data_hash: str,
        train_size: int,
        test_size: int,
    ) -> None:
        """Insert the run as `running`, or mark an existing unfinished row as running again."""
        with self.transaction() as c:
            c.execute(
                """INSERT INTO runs (run_id, config, status, dataset, model, corruption, p,
                       train_size, test_size, realized_rate, data_hash, versions, started_at)
                   VALUES (?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(run_id) DO UPDATE SET status='running', message=NULL,
                       versions=excluded.versions, data_hash=excluded.data_hash""",
                (
                    run_id,
                    json.dumps(config, sort_keys=True),
                    config.get("dataset"),
                    config.get("model"),
                    config.get("corruption"),
                    config.get("p"),
                    train_size,
                    test_size,
                    realized_rate,
                    data_hash,
                    json.dumps(versions, sort_keys=True),
                    _now(),
                ),
            )

    def write_epoch(self, run_id: str, row: dict[str, Any]) -> None:
        with self.transaction() as c:
            self._insert_epochs(c, run_id, [row])

    def replace_epochs(self, run_id: str, rows: Sequence[dict[str, Any]]) -> None:
        """Make the epochs table hold exactly `rows` for this run (used on resume)."""
        with self.transaction() as c:
            c.execute("DELETE FROM epochs WHERE run_id = ?", (run_id,))
            self._insert_epochs(c, run_id, rows)

    @staticmethod
    def _insert_epochs(c: sqlite3.Connection, run_id: str, rows: Sequence[dict[str, Any]]) -> None:
        columns = ", ".join(EPOCH_COLUMNS)
        marks = ", ".join("?" for _ in EPOCH_COLUMNS)
        c.executemany(
            f"INSERT OR REPLACE INTO epochs (run_id, {columns}) VALUES (?, {marks})",
            [(run_id, *(row.get(k) for k in EPOCH_COLUMNS)) for row in rows],
        )

    def finish_run(self, run_id: str, status: str, summary: dict[str, Any]) -> None:
        if status not in RUN_STATUSES:
            raise ValueError(f"unknown run status {status!r}")
        keys = SUMMARY_COLUMNS
        with self.transaction() as c:
            c.execute(
                f"UPDATE runs SET status = ?, {', '.join(f'{k} = ?' for k in keys)}, "
                "finished_at = ? WHERE run_id = ?",
                (status, *(summary.get(k) for k in keys), _now(), run_id),
            )

    def register_sweep(
        self, sweep_id: str, preset: str, options: dict[str, Any], points: Sequence[dict[str, Any]]
    ) -> None:
        """Record a sweep and its points (experiment, labels, run id, config); idempotent."""
        with self.transaction() as c:
            c.execute(
                "INSERT OR IGNORE INTO sweeps VALUES (?, ?, ?, ?)",
                (sweep_id, preset, json.dumps(options, sort_keys=True), _now()),
            )
            c.executemany(
                "INSERT OR REPLACE INTO sweep_points VALUES (?, ?, ?, ?, ?)",
                [
                    (sweep_id, p["experiment"], json.dumps(p["labels"], sort_keys=True), p["run_id"],
                     json.dumps(p["config"], sort_keys=True))
                    for p in points
                ],
            )

    def mark_failed(self, run_id: str, config: dict[str, Any], message: str) -> None:
        """Store a run that raised as `failed` with its error (inserting the row if needed)."""
        with self.transaction() as c:
            c.execute(
                """INSERT INTO runs (run_id, config, status, dataset, model, corruption, p, message,
                       started_at, finished_at)
                   VALUES (?, ?, 'failed', ?, ?, ?, ?, ?, ?, ?)
                   ON CONFLICT(run_id) DO UPDATE SET status='failed', message=excluded.message,
                       finished_at=excluded.finished_at""",
                (run_id, json.dumps(config, sort_keys=True), config.get("dataset"), config.get("model"),
                 config.get("corruption"), config.get("p"), message, _now(), _now()),
            )

    def import_run(self, row: dict[str, Any], epochs: Sequence[dict[str, Any]]) -> None:
        """Store a run trained elsewhere (a Ray worker's own database): its `runs` row and
        exactly these epoch rows, in one transaction.

        Copies every column this database's `runs` table has (and EPOCH_COLUMNS), so new
        columns need no change here. An existing row keeps its `started_at`, as a resumed
        local run does.
        """
        have = [r[1] for r in self.conn.execute("PRAGMA table_info(runs)")]
        columns = [k for k in have if k in row]
        if "run_id" not in columns:
            raise ValueError("import_run needs the row's run_id")
        updates = ", ".join(
            f"{k} = COALESCE(runs.{k}, excluded.{k})" if k == "started_at" else f"{k} = excluded.{k}"
            for k in columns if k != "run_id"
        )
        with self.transaction() as c:
            c.execute(
                f"INSERT INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)}) "
                f"ON CONFLICT(run_id) DO UPDATE SET {updates}",
                tuple(row[k] for k in columns),
            )
            c.execute("DELETE FROM epochs WHERE run_id = ?", (row["run_id"],))
            self._insert_epochs(c, row["run_id"], epochs)

    def record_theory(self, kind: str, config: dict[str, Any], result: dict[str, Any],
                      versions: dict[str, Any] | None = None) -> str:
        """Store one theory result (expressivity, kernel, measures...) keyed by its config.

        The same kind and config replace the earlier row: a rerun updates, never duplicates.
        Returns the key (a short hash of the config).
        """
        text = json.dumps(config, sort_keys=True, default=str)
        key = hashlib.sha256(f"{kind}:{text}".encode()).hexdigest()[:16]
        with self.transaction() as c:
            c.execute(
                "INSERT OR REPLACE INTO theory (kind, key, config, result, versions, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (kind, key, text, json.dumps(result, sort_keys=True, default=str),
                 json.dumps(versions or {}, sort_keys=True, default=str), _now()),
            )
        return key

    # ------------------------------------------------------------------ reads

    def theory(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Theory results (all kinds, or one), oldest first, with config/result/versions decoded."""
        if "theory" not in {r[0] for r in self.conn.execute("SELECT name FROM sqlite_master")}:
            return []  # a read-only database written before theory results existed
        rows = self.conn.execute(
            "SELECT * FROM theory WHERE (? IS NULL OR kind = ?) ORDER BY created_at, rowid", (kind, kind)
        ).fetchall()
        return [{**dict(r), **{k: json.loads(r[k] or "{}") for k in ("config", "result", "versions")}}
                for r in rows]

    def sweeps(self) -> list[dict[str, Any]]:
        rows = self.conn.execute("SELECT * FROM sweeps ORDER BY created_at, rowid").fetchall()
        return [{**dict(r), "options": json.loads(r["options"])} for r in rows]

    def sweep_points(self, sweep_id: str) -> list[dict[str, Any]]:
        """The sweep's points, each with its labels (dict) and its run row (None if not started)."""
        rows = self.conn.execute(
            "SELECT experiment, labels, run_id, config FROM sweep_points WHERE sweep_id = ? "
            "ORDER BY experiment, labels", (sweep_id,)
        ).fetchall()
        return [
            {"experiment": r["experiment"], "labels": json.loads(r["labels"]), "run_id": r["run_id"],
             "config": json.loads(r["config"]), "run": self.get_run(r["run_id"])}
            for r in rows
        ]

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        row = self.conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone()
        return dict(row) if row else None

    def finished_result(self, run_id: str) -> RunResult | None:
        """The stored result of a finished run; None if it has not finished (or never started)."""
        row = self.get_run(run_id)
        if row is None or not is_finished(row):
            return None
        summary = {k: row[k] for k in SUMMARY_COLUMNS} | {"message": row["message"] or ""}
        return RunResult(run_id=run_id, status=row["status"], **summary)

    def runs(self, **where: Any) -> list[dict[str, Any]]:
        clause = " AND ".join(f"{k} = ?" for k in where) or "1"
        rows = self.conn.execute(
            f"SELECT * FROM runs WHERE {clause} ORDER BY started_at", tuple(where.values())
        ).fetchall()
        return [dict(r) for r in rows]

    def epochs(self, run_id: str) -> list[dict[str, Any]]:
        rows = self.conn.execute(
            "SELECT * FROM epochs WHERE run_id = ? ORDER BY epoch", (run_id,)
        ).fetchall()
        return [dict(r) for r in rows]
