"""The SQLite file under the run store: per-thread connections, WAL, retried transactions.

Several processes (engines, workers, pages, the CLI) use one file at once. Every write is a
short `BEGIN IMMEDIATE` transaction that waits on SQLite's busy handler and is retried with
back-off, so a `database is locked` error does not escape; reads are retried the same way.
The file is created with the schema of covnoise.runs.schema and a file written by a newer
covnoise is refused.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from covnoise.runs.paths import default_store_path
from covnoise.runs.schema import DB_VERSION, SCHEMA_STATEMENTS

T = TypeVar("T")

#: How long a busy file is retried before the error is raised.
RETRY_SECONDS = 120.0


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Database:
    """A SQLite store file shared between threads (each gets its own connection) and
    processes (each write is one retried transaction)."""

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

    # ------------------------------------------------------------------ transactions
    def _retry(self, fn: Callable[[sqlite3.Connection], T], *, write: bool) -> T:
        """Run fn(conn) (in a write transaction when `write`), retrying while the file is busy."""
        deadline = time.monotonic() + RETRY_SECONDS
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

    def _write(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._retry(fn, write=True)

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return self._retry(fn, write=False)

    # ------------------------------------------------------------------ schema
    def _init_schema(self) -> None:
        def setup(conn: sqlite3.Connection) -> None:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in SCHEMA_STATEMENTS:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={DB_VERSION}")

        def wal(conn: sqlite3.Connection) -> None:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"database is locked (journal mode {mode})")

        self._read(wal)  # journal_mode cannot change inside a transaction
        version = self._read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        if version == 0:
            self._write(setup)
        elif version > DB_VERSION:
            raise RuntimeError(
                f"{self.path} was written by a newer covnoise (store version {version})"
            )
