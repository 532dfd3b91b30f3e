"""The run store: one SQLite file (WAL) holding runs and their metric rows.

Engines and their workers write here; pages and the CLI read here. RunStore adds to the reads
of covnoise.runs.queries the changes a run goes through: queued by `submit`, claimed by an
engine, fed events by its worker, given a final status, cancelled, requeued or deleted; and
the export and import of runs as Parquet files. Every change is one short transaction, so
several processes may share one file (see covnoise.runs.database).

Imported runs are records, never work: a file's queued or running runs are refused (an engine
would otherwise execute them with the file's metric rows mixed into its own), and so is an
import of an id the store holds as queued or running.
"""

from __future__ import annotations

import json
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from covnoise.config import RunConfig
from covnoise.runs.frames import plain
from covnoise.runs.parquet import (
    DEFAULT_LIMITS,
    FileTooLargeError,
    ReadLimits,
    StoreFormatError,
    read_runs_parquet,
    write_runs_parquet,
)
from covnoise.runs.queries import RunQueries
from covnoise.runs.schema import ACTIVE, COMPLETED, METRIC_COLUMNS, PARQUET_RUN_COLUMNS, TERMINAL

if TYPE_CHECKING:  # pandas is imported where frames are built: workers never need it
    import pandas as pd

_INSERT_METRIC = (
    f"INSERT INTO metrics ({', '.join(METRIC_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(METRIC_COLUMNS))})"
)
_INSERT_RUN = (
    f"INSERT INTO runs ({', '.join(PARQUET_RUN_COLUMNS)}) "
    f"VALUES ({','.join('?' * len(PARQUET_RUN_COLUMNS))})"
)


class ImportRefusedError(ValueError):
    """An import would touch a run the store holds as queued or running; nothing was written."""


def check_importable(runs: pd.DataFrame) -> None:
    """Raise StoreFormatError naming the first run whose status is not terminal.

    An imported run is a record: a queued or running one would be claimed by the next engine.
    """
    for rid, status in zip(runs["run_id"], runs["status"], strict=True):
        if status not in TERMINAL:
            raise StoreFormatError(
                f"run {rid} has status {status!r}; only {', '.join(sorted(TERMINAL))} runs "
                "can be imported (imported runs are records and are never run)"
            )


def _json_or_none(value: Any) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _int_or_none(value: Any) -> int | None:
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def metric_rows(event: Mapping[str, Any]) -> list[tuple]:
    """Rows (step, epoch, examples_seen, wall_time, name, value) of one "metric" event."""
    step = _int_or_none(event.get("step"))
    epoch = _float_or_none(event.get("epoch"))
    seen = _int_or_none(event.get("examples_seen"))
    wall = _float_or_none(event.get("wall_time"))
    metrics = event.get("metrics") or {}
    return [
        (step, epoch, seen, wall, str(name), _float_or_none(value))
        for name, value in metrics.items()
    ]


class RunStore(RunQueries):
    """A SQLite run store shared by engines, workers, pages and the CLI.

    Each thread gets its own connection; the object itself may be shared between threads.
    """

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ submitting and claiming
    def submit(
        self, config: RunConfig, *, rerun: bool = False, engine: str = "local"
    ) -> tuple[str, bool]:
        """Queue a run for `config`; returns (run_id, queued_now).

        A run that already finished (or diverged), or is queued or running, is returned as is
        unless `rerun` asks to run a finished one again. Failed and cancelled runs are
        queued again. Requeuing clears the old metric rows.
        """
        run_id = config.run_id()
        now = time.time()

        def tx(conn: sqlite3.Connection) -> bool:
            if _kept(conn, run_id, rerun) is not None:
                return False
            conn.execute(
                "INSERT INTO runs (run_id, name, config, status, engine, submitted_at) "
                "VALUES (?, ?, ?, 'queued', ?, ?)",
                (run_id, config.name, config.to_json(), engine, now),
            )
            return True

        return run_id, self._write(tx)

    def claim_next(self, engine: str, owner: str) -> tuple[str, dict[str, Any]] | None:
        """Atomically take the oldest queued run of `engine`; returns (run_id, config dict)."""

        def tx(conn: sqlite3.Connection):
            row = conn.execute(
                "SELECT run_id, config FROM runs WHERE status='queued' AND engine=? "
                "ORDER BY submitted_at, rowid LIMIT 1",
                (engine,),
            ).fetchone()
            if row is None:
                return None
            now = time.time()
            conn.execute(
                "UPDATE runs SET status='running', owner=?, started_at=?, heartbeat_at=?, "
                "host=?, cancel_requested=0 WHERE run_id=?",
                (owner, now, now, socket.gethostname(), row["run_id"]),
            )
            return row["run_id"], json.loads(row["config"])

        return self._write(tx)

    def begin_here(
        self, config: RunConfig, owner: str, pid: int, *, rerun: bool = False, engine: str = "cli"
    ) -> tuple[str, str | None]:
        """Record a run that this process runs itself (the `train` command) as running, in
        one transaction; returns (run_id, None). A run of the same config that is queued or
        running, or completed (unless `rerun`), is left alone: (run_id, its status)."""
        run_id = config.run_id()

        def tx(conn: sqlite3.Connection) -> str | None:
            if (status := _kept(conn, run_id, rerun)) is not None:
                return status
            now = time.time()
            conn.execute(
                "INSERT INTO runs (run_id, name, config, status, engine, submitted_at, owner, "
                "started_at, heartbeat_at, host, pid, cancel_requested) "
                "VALUES (?, ?, ?, 'running', ?, ?, ?, ?, ?, ?, ?, 0)",
                (
                    run_id,
                    config.name,
                    config.to_json(),
                    engine,
                    now,
                    owner,
                    now,
                    now,
                    socket.gethostname(),
                    pid,
                ),
            )
            return None

        return run_id, self._write(tx)

    def set_worker(self, run_id: str, pid: int | None, host: str | None = None) -> None:
        """Record which process runs `run_id` (so a monitor can check it is alive)."""
        self._write(
            lambda c: c.execute(
                "UPDATE runs SET pid=?, host=COALESCE(?, host), heartbeat_at=? WHERE run_id=?",
                (pid, host, time.time(), run_id),
            )
        )

    # ------------------------------------------------------------------ events from a run
    def record_start(self, run_id: str, event: Mapping[str, Any]) -> None:
        """Store what a "start" event says: device, versions, code revision, sizes."""
        self._write(
            lambda c: c.execute(
                "UPDATE runs SET device=?, versions=?, code_revision=?, total_steps=?, "
                "probe_size=?, heartbeat_at=? WHERE run_id=?",
                (
                    event.get("device"),
                    _json_or_none(event.get("versions")),
                    event.get("code_revision"),
                    _int_or_none(event.get("total_steps")),
                    _int_or_none(event.get("probe_size")),
                    time.time(),
                    run_id,
                ),
            )
        )

    def add_metrics(self, run_id: str, rows: Iterable[Sequence[Any]]) -> int:
        """Append rows (step, epoch, examples_seen, wall_time, name, value); returns the count."""
        data = [(run_id, *row) for row in rows]
        if not data:
            return 0

        def tx(conn: sqlite3.Connection) -> int:
            conn.executemany(_INSERT_METRIC, data)
            conn.execute("UPDATE runs SET heartbeat_at=? WHERE run_id=?", (time.time(), run_id))
            return len(data)

        return self._write(tx)

    def add_metric_event(self, run_id: str, event: Mapping[str, Any]) -> int:
        """Store one "metric" event as one row per metric name."""
        return self.add_metrics(run_id, metric_rows(event))

    def heartbeat(self, run_id: str) -> bool:
        """Mark `run_id` alive now; returns whether someone asked it to stop."""

        def tx(conn: sqlite3.Connection) -> bool:
            conn.execute("UPDATE runs SET heartbeat_at=? WHERE run_id=?", (time.time(), run_id))
            row = conn.execute(
                "SELECT cancel_requested, status FROM runs WHERE run_id=?", (run_id,)
            ).fetchone()
            return row is None or bool(row["cancel_requested"]) or row["status"] == "cancelled"

        return self._write(tx)

    def finish(
        self,
        run_id: str,
        status: str,
        message: str | None = None,
        summary: Mapping[str, Any] | None = None,
        traceback: str | None = None,
    ) -> bool:
        """Give a queued or running run its final status; False if it had one already."""
        if status not in TERMINAL:
            raise ValueError(f"status: {status!r} is not one of {', '.join(sorted(TERMINAL))}")
        s = dict(summary or {})

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET status=?, message=?, traceback=?, ended_at=?, "
                "steps=COALESCE(?, steps), examples_seen=COALESCE(?, examples_seen), "
                "wall_time=COALESCE(?, wall_time), final=COALESCE(?, final), "
                "device=COALESCE(?, device), versions=COALESCE(?, versions), "
                "code_revision=COALESCE(?, code_revision) "
                "WHERE run_id=? AND status IN ('queued', 'running')",
                (
                    status,
                    message,
                    traceback,
                    time.time(),
                    _int_or_none(s.get("steps")),
                    _int_or_none(s.get("examples_seen")),
                    _float_or_none(s.get("wall_time")),
                    _json_or_none(s.get("final")),
                    s.get("device"),
                    _json_or_none(s.get("versions")),
                    s.get("code_revision"),
                    run_id,
                ),
            )
            return cur.rowcount == 1

        return self._write(tx)

    def request_cancel(self, run_id: str) -> str | None:
        """Cancel a queued run now, or flag a running one to stop; returns its status after."""

        def tx(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is None:
                return None
            if row["status"] == "queued":
                conn.execute(
                    "UPDATE runs SET status='cancelled', message='cancelled before it started', "
                    "ended_at=? WHERE run_id=?",
                    (time.time(), run_id),
                )
                return "cancelled"
            if row["status"] == "running":
                conn.execute("UPDATE runs SET cancel_requested=1 WHERE run_id=?", (run_id,))
            return row["status"]

        return self._write(tx)

    def requeue(self, run_id: str) -> bool:
        """Put a running run back in the queue (its worker never started); clears metrics."""

        def tx(conn: sqlite3.Connection) -> bool:
            cur = conn.execute(
                "UPDATE runs SET status='queued', owner=NULL, pid=NULL, started_at=NULL, "
                "heartbeat_at=NULL WHERE run_id=? AND status='running'",
                (run_id,),
            )
            if cur.rowcount:
                conn.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
            return cur.rowcount == 1

        return self._write(tx)

    def delete(self, run_ids: Iterable[str]) -> int:
        """Remove runs, their metrics and notes; returns how many runs were removed."""
        ids = list(run_ids)

        def tx(conn: sqlite3.Connection) -> int:
            n = 0
            for rid in ids:
                conn.execute("DELETE FROM metrics WHERE run_id=?", (rid,))
                conn.execute("DELETE FROM run_notes WHERE run_id=?", (rid,))
                n += conn.execute("DELETE FROM runs WHERE run_id=?", (rid,)).rowcount
            return n

        return self._write(tx)

    # ------------------------------------------------------------------ notes
    def set_hidden(self, run_ids: Iterable[str], hidden: bool = True) -> int:
        """Hide runs from the app's views (or show them again); any run id, cached runs too.
        Returns how many notes were written."""
        ids = list(dict.fromkeys(run_ids))

        def tx(conn: sqlite3.Connection) -> int:
            for rid in ids:
                conn.execute(
                    "INSERT INTO run_notes (run_id, hidden) VALUES (?, ?) "
                    "ON CONFLICT(run_id) DO UPDATE SET hidden=excluded.hidden",
                    (rid, int(hidden)),
                )
            return len(ids)

        return self._write(tx)

    def set_tags(self, run_ids: Iterable[str], tags: Iterable[str]) -> int:
        """Replace the tags of runs (any run id). Tags are stripped of commas and spaces at
        the ends; empty ones are dropped. Returns how many notes were written."""
        ids = list(dict.fromkeys(run_ids))
        text = ",".join(dict.fromkeys(t.strip() for t in tags if t.strip().strip(",")))

        def tx(conn: sqlite3.Connection) -> int:
            for rid in ids:
                conn.execute(
                    "INSERT INTO run_notes (run_id, tags) VALUES (?, ?) "
                    "ON CONFLICT(run_id) DO UPDATE SET tags=excluded.tags",
                    (rid, text),
                )
            return len(ids)

        return self._write(tx)

    def notes(self) -> dict[str, tuple[tuple[str, ...], bool]]:
        """run id → (tags, hidden) for every run with a note."""
        rows = self._read(
            lambda c: c.execute("SELECT run_id, tags, hidden FROM run_notes").fetchall()
        )
        return {
            rid: (tuple(t for t in tags.split(",") if t), bool(hidden))
            for rid, tags, hidden in rows
        }

    # ------------------------------------------------------------------ Parquet files
    def export_parquet(
        self,
        path: str | Path,
        run_ids: Iterable[str] | None = None,
        limits: ReadLimits | None = None,
    ) -> int:
        """Write the given runs (all when None) and their metrics to one Parquet file.

        Raises FileTooLargeError, writing nothing, when the file would hold more runs or
        metric rows than an import accepts (`limits`, by default the import's own caps)."""
        import pandas as pd

        ids = None if run_ids is None else list(run_ids)
        runs = self._read(
            lambda c: pd.read_sql_query(
                f"SELECT {', '.join(PARQUET_RUN_COLUMNS)} FROM runs ORDER BY submitted_at, rowid",
                c,
            )
        )
        if ids is not None:
            runs = runs[runs["run_id"].isin(ids)].reset_index(drop=True)
        _check_exportable(self, runs["run_id"].tolist(), limits or DEFAULT_LIMITS)
        metrics = self.metrics(runs["run_id"].tolist()) if len(runs) else None
        write_runs_parquet(path, runs, metrics)
        return len(runs)

    def import_parquet(
        self, path: str | Path, replace: bool = False, limits: ReadLimits = DEFAULT_LIMITS
    ) -> int:
        """Add the runs of a Parquet file (existing ids are kept unless `replace`).

        Raises StoreFormatError (a file over `limits`, not a runs file, or holding queued or
        running runs) or ImportRefusedError; the store is unchanged then.
        """
        runs, metrics = read_runs_parquet(path, limits)
        return self.import_frames(runs, metrics, replace=replace)

    def import_frames(
        self, runs: pd.DataFrame, metrics: pd.DataFrame, replace: bool = False
    ) -> int:
        """Insert runs and metrics frames as produced by read_runs_parquet; returns runs added.

        All or nothing: StoreFormatError for a run that is not terminal, ImportRefusedError
        for an id the store holds as queued or running (its rows are never mixed in).
        """
        check_importable(runs)
        by_run = {rid: g for rid, g in metrics.groupby("run_id", sort=False)}

        def tx(conn: sqlite3.Connection) -> int:
            n = 0
            for rec in runs.to_dict("records"):
                rid = rec["run_id"]
                row = conn.execute("SELECT status FROM runs WHERE run_id=?", (rid,)).fetchone()
                exists = row is not None
                if exists and row["status"] in ACTIVE:
                    raise ImportRefusedError(
                        f"run {rid} is {row['status']} in the store; imports never touch a "
                        "queued or running run (cancel it or let it finish first)"
                    )
                if exists and not replace:
                    continue
                if exists:
                    conn.execute("DELETE FROM metrics WHERE run_id=?", (rid,))
                    conn.execute("DELETE FROM runs WHERE run_id=?", (rid,))
                conn.execute(_INSERT_RUN, [plain(rec.get(c)) for c in PARQUET_RUN_COLUMNS])
                g = by_run.get(rid)
                if g is not None and len(g):
                    conn.executemany(
                        _INSERT_METRIC,
                        [
                            tuple(plain(v) for v in row)
                            for row in g[list(METRIC_COLUMNS)].itertuples(index=False)
                        ],
                    )
                n += 1
            return n

        return self._write(tx)


@contextmanager
def open_store(path: str | Path | None = None, *, check: bool = False) -> Iterator[RunStore]:
    """A RunStore closed on exit (`check`: run SQLite's quick_check on opening)."""
    store = RunStore(path, check=check)
    try:
        yield store
    finally:
        store.close()


def _kept(conn: sqlite3.Connection, run_id: str, rerun: bool) -> str | None:
    """Inside a write transaction: the status of a stored run of `run_id` that a new run must
    leave alone (queued, running, or completed unless `rerun`); otherwise None, after
    removing any older record of it and its metric rows."""
    row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
    if row is None:
        return None
    status = row["status"]
    if status in ACTIVE or (status in COMPLETED and not rerun):
        return status
    conn.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
    conn.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
    return None


def _check_exportable(store: RunStore, ids: list[str], limits: ReadLimits) -> None:
    """FileTooLargeError when `ids` hold more runs or metric rows than an import accepts."""
    rows = sum(store.count_metrics(rid) for rid in ids)
    for n, what, cap in (
        (len(ids), "runs", limits.max_runs),
        (rows, "metric rows", limits.max_metric_rows),
    ):
        if n > cap:
            raise FileTooLargeError(
                f"the export would hold {n:,} {what}; an import accepts at most {cap:,}, so "
                "export fewer runs (run ids, --status, --where)"
            )
