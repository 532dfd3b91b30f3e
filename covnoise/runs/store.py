"""The run store: one SQLite file (WAL) holding runs and their metric rows, plus Parquet files.

Engines and their workers write here; pages and the CLI read here. Several processes may
write at once: every write is a short `BEGIN IMMEDIATE` transaction, waits on SQLite's busy
handler, and is retried with back-off, so a `database is locked` error does not escape.

Parquet files (``cached_runs/*.parquet``) hold one row per run with its metrics as a nested
list column and a schema version in the file metadata. They are read with pyarrow only (no
pickle, no code execution), validated column by column, and a bad file is skipped with a
warning naming it.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from covnoise.config import RunConfig

if TYPE_CHECKING:  # pandas is imported where frames are built: workers never need it
    import pandas as pd

STATUSES = ("queued", "running", "finished", "failed", "diverged", "cancelled")
ACTIVE = frozenset({"queued", "running"})
TERMINAL = frozenset({"finished", "failed", "diverged", "cancelled"})
#: Results that a plain resubmission returns instead of running again.
COMPLETED = frozenset({"finished", "diverged"})

STORE_ENV = "COVNOISE_STORE"
PARQUET_SCHEMA_VERSION = 1
_META_VERSION = b"covnoise.schema_version"
_META_KIND = b"covnoise.kind"
_DB_VERSION = 1

RUN_COLUMNS = (
    "run_id",
    "name",
    "config",
    "status",
    "engine",
    "submitted_at",
    "started_at",
    "ended_at",
    "heartbeat_at",
    "device",
    "versions",
    "code_revision",
    "message",
    "total_steps",
    "probe_size",
    "steps",
    "examples_seen",
    "wall_time",
    "final",
    "host",
    "pid",
    "cancel_requested",
)
METRIC_COLUMNS = ("run_id", "step", "epoch", "examples_seen", "wall_time", "name", "value")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    name TEXT,
    config TEXT NOT NULL,
    status TEXT NOT NULL,
    engine TEXT NOT NULL DEFAULT 'local',
    submitted_at REAL NOT NULL,
    started_at REAL,
    ended_at REAL,
    heartbeat_at REAL,
    device TEXT,
    versions TEXT,
    code_revision TEXT,
    message TEXT,
    traceback TEXT,
    total_steps INTEGER,
    probe_size INTEGER,
    steps INTEGER,
    examples_seen INTEGER,
    wall_time REAL,
    final TEXT,
    host TEXT,
    pid INTEGER,
    owner TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status, engine, submitted_at);
CREATE TABLE IF NOT EXISTS metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL,
    step INTEGER,
    epoch REAL,
    examples_seen INTEGER,
    wall_time REAL,
    name TEXT NOT NULL,
    value REAL
);
CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run_id, id);
"""

_RETRY_SECONDS = 120.0


class StoreFormatError(ValueError):
    """A Parquet file is not a covnoise runs file (or is damaged); the message says why."""


def default_store_path() -> Path:
    """The store file: $COVNOISE_STORE, else ``runs.sqlite`` in the user's data folder."""
    env = os.environ.get(STORE_ENV)
    if env:
        return Path(env).expanduser()
    return user_data_dir() / "runs.sqlite"


def user_data_dir() -> Path:
    """Per-user data folder for covnoise (XDG on Linux, the platform's usual place elsewhere)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "covnoise"


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


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


class RunStore:
    """A SQLite run store shared by engines, workers, pages and the CLI.

    Each thread gets its own connection; the object itself may be shared between threads.
    """

    def __init__(self, path: str | Path | None = None, busy_timeout: float = 30.0) -> None:
        self.path = Path(path).expanduser() if path is not None else default_store_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._busy_ms = int(busy_timeout * 1000)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        self._init_schema()

    # ------------------------------------------------------------------ connections
    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self._busy_ms / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout={self._busy_ms}")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection this object opened (from any thread)."""
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _retry(self, fn, *, write: bool):
        """Run fn(conn) (in a write transaction when `write`), retrying while the file is busy."""
        deadline = time.monotonic() + _RETRY_SECONDS
        delay = 0.005
        while True:
            conn = self._conn()
            try:
                if not write:
                    return fn(conn)
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc) or time.monotonic() > deadline:
                    raise
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK")
                    except sqlite3.Error:
                        pass
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _write(self, fn):
        return self._retry(fn, write=True)

    def _read(self, fn):
        return self._retry(fn, write=False)

    def _init_schema(self) -> None:
        def setup(conn: sqlite3.Connection) -> None:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in _SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(f"PRAGMA user_version={_DB_VERSION}")

        def wal(conn: sqlite3.Connection) -> None:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"database is locked (journal mode {mode})")

        self._read(wal)  # journal_mode cannot change inside a transaction
        version = self._read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            self._write(setup)
        elif version > _DB_VERSION:
            raise RuntimeError(
                f"{self.path} was written by a newer covnoise (store version {version})"
            )

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
            row = conn.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
            if row is not None:
                status = row["status"]
                if status in ACTIVE or (status in COMPLETED and not rerun):
                    return False
                conn.execute("DELETE FROM metrics WHERE run_id=?", (run_id,))
                conn.execute("DELETE FROM runs WHERE run_id=?", (run_id,))
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
            conn.executemany(
                "INSERT INTO metrics (run_id, step, epoch, examples_seen, wall_time, name, value)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                data,
            )
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
        """Remove runs and their metrics; returns how many runs were removed."""
        ids = list(run_ids)

        def tx(conn: sqlite3.Connection) -> int:
            n = 0
            for rid in ids:
                conn.execute("DELETE FROM metrics WHERE run_id=?", (rid,))
                n += conn.execute("DELETE FROM runs WHERE run_id=?", (rid,)).rowcount
            return n

        return self._write(tx)

    # ------------------------------------------------------------------ reading
    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run as a dict (config, versions and final decoded from JSON), or None."""
        row = self._read(
            lambda c: c.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        )
        if row is None:
            return None
        out = dict(row)
        for key in ("config", "versions", "final"):
            if out.get(key) is not None:
                out[key] = json.loads(out[key])
        return out

    def status(self, run_id: str) -> str | None:
        row = self._read(
            lambda c: c.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        )
        return None if row is None else row["status"]

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str | None]:
        """Status of each id (None for an id the store does not hold)."""
        ids = list(run_ids)
        found: dict[str, str] = {}
        for chunk in _chunks(ids, 500):
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                lambda c, chunk=chunk, marks=marks: c.execute(
                    f"SELECT run_id, status FROM runs WHERE run_id IN ({marks})", chunk
                ).fetchall()
            )
            found.update({r["run_id"]: r["status"] for r in rows})
        return {rid: found.get(rid) for rid in ids}

    def resolve(self, prefix: str) -> str:
        """The full id of the one run whose id starts with `prefix` (KeyError otherwise)."""
        rows = self._read(
            lambda c: c.execute(
                "SELECT run_id FROM runs WHERE run_id LIKE ? ESCAPE '\\' LIMIT 2",
                (prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%",),
            ).fetchall()
        )
        if len(rows) != 1:
            what = "no run" if not rows else "more than one run"
            raise KeyError(f"{what} has an id starting with {prefix!r}")
        return rows[0]["run_id"]

    def active_runs(self, engine: str | None = None) -> list[dict[str, Any]]:
        """Running runs (with owner, pid, host, heartbeat) for monitors."""
        sql = (
            "SELECT run_id, owner, pid, host, heartbeat_at, cancel_requested, engine "
            "FROM runs WHERE status='running'"
        )
        args: tuple = ()
        if engine is not None:
            sql += " AND engine=?"
            args = (engine,)
        return [dict(r) for r in self._read(lambda c: c.execute(sql, args).fetchall())]

    def runs(
        self,
        status: str | Iterable[str] | None = None,
        run_ids: Iterable[str] | None = None,
        where: Mapping[str, Any] | None = None,
    ) -> pd.DataFrame:
        """The runs table, one row per run, config fields expanded as ``cfg_<field>`` columns.

        `where` keeps runs whose config field equals the value (compared as JSON text).
        """
        import pandas as pd

        sql = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
        clauses, args = [], []
        if status is not None:
            sts = [status] if isinstance(status, str) else list(status)
            clauses.append(f"status IN ({','.join('?' * len(sts))})")
            args.extend(sts)
        ids = None if run_ids is None else list(run_ids)
        sql_text = sql + (" WHERE " + " AND ".join(clauses) if clauses else "")
        sql_text += " ORDER BY submitted_at, rowid"
        df = self._read(lambda c: pd.read_sql_query(sql_text, c, params=args))
        if ids is not None:
            df = df[df["run_id"].isin(ids)].reset_index(drop=True)
        return _expand_runs(df, where)

    def metrics(
        self, run_ids: Iterable[str] | None = None, names: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Long metrics table (id, run_id, step, epoch, examples_seen, wall_time, name, value)."""
        return self._metrics_query(run_ids, names, after=None)

    def metrics_since(self, row_id: int, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Metric rows with id > `row_id` (for live updates: pass the largest id seen)."""
        return self._metrics_query(run_ids, None, after=int(row_id))

    def _metrics_query(self, run_ids, names, after) -> pd.DataFrame:
        import pandas as pd

        cols = "id, " + ", ".join(METRIC_COLUMNS)
        clauses, args = [], []
        if after is not None:
            clauses.append("id > ?")
            args.append(after)
        if names is not None:
            ns = list(names)
            clauses.append(f"name IN ({','.join('?' * len(ns))})")
            args.extend(ns)
        base = f"SELECT {cols} FROM metrics"
        if run_ids is None:
            frames = [self._frame(base, clauses, args)]
        else:
            ids = list(run_ids)
            frames = [self._frame(base, [*clauses, "0"], args)] if not ids else []
            for chunk in _chunks(ids, 500):
                cl = [*clauses, f"run_id IN ({','.join('?' * len(chunk))})"]
                frames.append(self._frame(base, cl, [*args, *chunk]))
        frames = [f for f in frames if len(f)] or frames[:1]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return df.sort_values("id", kind="stable").reset_index(drop=True)

    def _frame(self, base: str, clauses: list[str], args: list) -> pd.DataFrame:
        import pandas as pd

        sql = base + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id"
        df = self._read(lambda c: pd.read_sql_query(sql, c, params=args))
        return _typed_metrics(df)

    def status_counts(self) -> dict[str, int]:
        """How many runs have each status (statuses with no run are left out)."""
        rows = self._read(
            lambda c: c.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status").fetchall()
        )
        return {r["status"]: r["n"] for r in rows}

    def count_metrics(self, run_id: str | None = None) -> int:
        if run_id is None:
            return self._read(lambda c: c.execute("SELECT COUNT(*) FROM metrics").fetchone()[0])
        return self._read(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM metrics WHERE run_id=?", (run_id,)
            ).fetchone()[0]
        )

    def max_metric_id(self) -> int:
        return self._read(
            lambda c: c.execute("SELECT COALESCE(MAX(id), 0) FROM metrics").fetchone()[0]
        )

    # ------------------------------------------------------------------ Parquet
    def export_parquet(self, path: str | Path, run_ids: Iterable[str] | None = None) -> int:
        """Write the given runs (all when None) and their metrics to one Parquet file."""
        import pandas as pd

        ids = None if run_ids is None else list(run_ids)
        runs = self._read(
            lambda c: pd.read_sql_query(
                f"SELECT {', '.join(_PARQUET_RUN_COLUMNS)} FROM runs ORDER BY submitted_at, rowid",
                c,
            )
        )
        if ids is not None:
            runs = runs[runs["run_id"].isin(ids)].reset_index(drop=True)
        metrics = self.metrics(runs["run_id"].tolist()) if len(runs) else None
        write_runs_parquet(path, runs, metrics)
        return len(runs)

    def import_parquet(self, path: str | Path, replace: bool = False) -> int:
        """Add the runs of a Parquet file (existing ids are kept unless `replace`)."""
        runs, metrics = read_runs_parquet(path)
        return self.import_frames(runs, metrics, replace=replace)

    def import_frames(
        self, runs: pd.DataFrame, metrics: pd.DataFrame, replace: bool = False
    ) -> int:
        """Insert runs and metrics frames as produced by read_runs_parquet; returns runs added."""
        by_run = {rid: g for rid, g in metrics.groupby("run_id", sort=False)}

        def tx(conn: sqlite3.Connection) -> int:
            n = 0
            for rec in runs.to_dict("records"):
                rid = rec["run_id"]
                exists = conn.execute("SELECT 1 FROM runs WHERE run_id=?", (rid,)).fetchone()
                if exists and not replace:
                    continue
                if exists:
                    conn.execute("DELETE FROM metrics WHERE run_id=?", (rid,))
                    conn.execute("DELETE FROM runs WHERE run_id=?", (rid,))
                values = [_py(rec.get(c)) for c in _PARQUET_RUN_COLUMNS]
                conn.execute(
                    f"INSERT INTO runs ({', '.join(_PARQUET_RUN_COLUMNS)}) "
                    f"VALUES ({','.join('?' * len(_PARQUET_RUN_COLUMNS))})",
                    values,
                )
                g = by_run.get(rid)
                if g is not None and len(g):
                    conn.executemany(
                        "INSERT INTO metrics (run_id, step, epoch, examples_seen, wall_time, "
                        "name, value) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        [
                            tuple(_py(v) for v in row)
                            for row in g[list(METRIC_COLUMNS)].itertuples(index=False)
                        ],
                    )
                n += 1
            return n

        return self._write(tx)


# ---------------------------------------------------------------------- helpers for frames
def _chunks(items: list, size: int) -> Iterator[list]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _py(value: Any) -> Any:
    """A plain Python value for sqlite (NaN/NA → None, numpy scalars → Python)."""
    import pandas as pd

    if value is None:
        return None
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    if hasattr(value, "item"):
        return value.item()
    return value


def _typed_metrics(df: pd.DataFrame) -> pd.DataFrame:
    df = df.astype(
        {
            "step": "Int64",
            "examples_seen": "Int64",
            "epoch": "float64",
            "wall_time": "float64",
            "value": "float64",
        }
    )
    return df


def expand_runs(df: pd.DataFrame, where: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Add ``cfg_<field>`` columns from each run's config JSON (as RunStore.runs does);
    `where` keeps runs whose config field equals the value (compared as JSON text)."""
    return _expand_runs(df, where)


def _expand_runs(df: pd.DataFrame, where: Mapping[str, Any] | None) -> pd.DataFrame:
    import pandas as pd

    configs = [json.loads(c) if isinstance(c, str) else {} for c in df["config"]]
    if where:
        keep = [all(_json_eq(cfg.get(k), v) for k, v in where.items()) for cfg in configs]
        df = df[keep].reset_index(drop=True)
        configs = [c for c, k in zip(configs, keep, strict=True) if k]
    cfg = pd.DataFrame(configs, index=df.index)
    cfg = cfg.drop(columns=[c for c in cfg.columns if c == "name"])
    cfg.columns = [f"cfg_{c}" for c in cfg.columns]
    return pd.concat([df, cfg], axis=1)


def _json_eq(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and not isinstance(actual, str):
        try:
            wanted = json.loads(wanted)
        except ValueError:
            return False
    if isinstance(actual, (int, float)) and isinstance(wanted, (int, float)):
        return float(actual) == float(wanted)
    return actual == wanted


# ---------------------------------------------------------------------- Parquet files
_PARQUET_RUN_COLUMNS = (
    "run_id",
    "name",
    "config",
    "status",
    "engine",
    "submitted_at",
    "started_at",
    "ended_at",
    "device",
    "versions",
    "code_revision",
    "message",
    "traceback",
    "total_steps",
    "probe_size",
    "steps",
    "examples_seen",
    "wall_time",
    "final",
)


def _parquet_schema():
    import pyarrow as pa

    metric = pa.struct(
        [
            ("step", pa.int64()),
            ("epoch", pa.float64()),
            ("examples_seen", pa.int64()),
            ("wall_time", pa.float64()),
            ("name", pa.string()),
            ("value", pa.float64()),
        ]
    )
    types = {
        "run_id": pa.string(),
        "name": pa.string(),
        "config": pa.string(),
        "status": pa.string(),
        "engine": pa.string(),
        "submitted_at": pa.float64(),
        "started_at": pa.float64(),
        "ended_at": pa.float64(),
        "device": pa.string(),
        "versions": pa.string(),
        "code_revision": pa.string(),
        "message": pa.string(),
        "traceback": pa.string(),
        "total_steps": pa.int64(),
        "probe_size": pa.int64(),
        "steps": pa.int64(),
        "examples_seen": pa.int64(),
        "wall_time": pa.float64(),
        "final": pa.string(),
    }
    fields = [pa.field(name, types[name]) for name in _PARQUET_RUN_COLUMNS]
    fields.append(pa.field("metrics", pa.list_(metric)))
    return pa.schema(fields)


def write_runs_parquet(path: str | Path, runs: pd.DataFrame, metrics: pd.DataFrame | None) -> None:
    """Write runs (columns as in the store) and their long metrics to a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _parquet_schema()
    groups: dict[str, list[dict]] = {}
    if metrics is not None and len(metrics):
        cols = ["step", "epoch", "examples_seen", "wall_time", "name", "value"]
        for rid, g in metrics.groupby("run_id", sort=False):
            groups[rid] = [
                {k: _py(v) for k, v in zip(cols, row, strict=True)}
                for row in g[cols].itertuples(index=False)
            ]
    columns = {}
    for name in _PARQUET_RUN_COLUMNS:
        values = [_py(v) for v in runs[name]] if name in runs else [None] * len(runs)
        columns[name] = pa.array(values, type=schema.field(name).type)
    columns["metrics"] = pa.array(
        [groups.get(rid, []) for rid in runs["run_id"]], type=schema.field("metrics").type
    )
    table = pa.Table.from_pydict(columns, schema=schema).replace_schema_metadata(
        {_META_VERSION: str(PARQUET_SCHEMA_VERSION).encode(), _META_KIND: b"runs"}
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)


def read_runs_parquet(path: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a covnoise runs Parquet file into (runs, metrics) frames.

    Raises StoreFormatError when the file is unreadable, from another program, of another
    schema version, or has columns of the wrong type. Uses pyarrow only.
    """
    import pandas as pd
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise StoreFormatError(f"not a readable Parquet file ({exc})") from exc
    meta = schema.metadata or {}
    if meta.get(_META_KIND) != b"runs" or _META_VERSION not in meta:
        raise StoreFormatError("not a covnoise runs file (no covnoise schema version)")
    try:
        version = int(meta[_META_VERSION].decode())
    except ValueError as exc:
        raise StoreFormatError(f"bad schema version {meta[_META_VERSION]!r}") from exc
    if version != PARQUET_SCHEMA_VERSION:
        raise StoreFormatError(
            f"schema version {version} is not supported (this covnoise reads "
            f"{PARQUET_SCHEMA_VERSION})"
        )
    expected = _parquet_schema()
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise StoreFormatError(f"column {field.name!r} is missing")
        if not schema.field(idx).type.equals(field.type):
            raise StoreFormatError(
                f"column {field.name!r} has type {schema.field(idx).type}, expected {field.type}"
            )
    try:
        table = pq.read_table(path, columns=expected.names)
    except (OSError, pa.ArrowException) as exc:
        raise StoreFormatError(f"damaged Parquet data ({exc})") from exc
    table = table.replace_schema_metadata(None)
    runs = table.drop_columns(["metrics"]).to_pandas(ignore_metadata=True)
    mcol = table.column("metrics").combine_chunks()
    flat = mcol.flatten()
    parents = pc.list_parent_indices(mcol).to_numpy(zero_copy_only=False)
    metrics = pd.DataFrame(
        {
            "run_id": runs["run_id"].to_numpy()[parents] if len(parents) else [],
            **{name: flat.field(name).to_pandas() for name in METRIC_COLUMNS[1:]},
        }
    )
    metrics = _typed_metrics(metrics.reset_index(drop=True))
    _validate_runs(runs)
    for col in ("total_steps", "probe_size", "steps", "examples_seen"):
        runs[col] = runs[col].astype("Int64")
    return runs, metrics


def _validate_runs(runs: pd.DataFrame) -> None:
    if runs["run_id"].isna().any() or runs["run_id"].duplicated().any():
        raise StoreFormatError("run_id values must be present and unique")
    bad = set(runs["status"].dropna()) - set(STATUSES)
    if runs["status"].isna().any() or bad:
        raise StoreFormatError(f"unknown status values {sorted(map(str, bad))}")
    for col in ("config", "versions", "final"):
        for text in runs[col].dropna():
            try:
                value = json.loads(text)
            except ValueError as exc:
                raise StoreFormatError(f"column {col!r} holds text that is not JSON") from exc
            if not isinstance(value, dict):
                raise StoreFormatError(f"column {col!r} must hold JSON objects")
    if runs["config"].isna().any():
        raise StoreFormatError("every run needs a config")


def read_cached_runs(folder: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read every ``*.parquet`` in `folder` (read-only); bad files are skipped with a warning.

    Returns (runs, metrics); runs have a ``source`` column naming the file and config fields
    expanded as ``cfg_<field>`` columns. A run id found in several files is taken from the
    first file (sorted by name).
    """
    import pandas as pd

    run_frames, metric_frames = [], []
    seen: set[str] = set()
    for path in sorted(Path(folder).glob("*.parquet")):
        try:
            runs, metrics = read_runs_parquet(path)
        except StoreFormatError as exc:
            warnings.warn(f"skipping {path}: {exc}", stacklevel=2)
            continue
        except Exception as exc:  # noqa: BLE001 - a cached file must never crash the app
            warnings.warn(f"skipping {path}: {type(exc).__name__}: {exc}", stacklevel=2)
            continue
        keep = ~runs["run_id"].isin(seen)
        runs = runs[keep].reset_index(drop=True)
        metrics = metrics[metrics["run_id"].isin(set(runs["run_id"]))]
        seen.update(runs["run_id"])
        runs.insert(len(runs.columns), "source", path.name)
        run_frames.append(runs)
        metric_frames.append(metrics)
    if not run_frames:
        empty_runs = pd.DataFrame(columns=[*_PARQUET_RUN_COLUMNS, "source"])
        empty_metrics = pd.DataFrame(columns=list(METRIC_COLUMNS))
        return _expand_runs(empty_runs, None), empty_metrics
    runs = pd.concat(run_frames, ignore_index=True)
    metrics = pd.concat(metric_frames, ignore_index=True)
    return _expand_runs(runs, None), metrics


@contextmanager
def open_store(path: str | Path | None = None) -> Iterator[RunStore]:
    """A RunStore closed on exit."""
    store = RunStore(path)
    try:
        yield store
    finally:
        store.close()
