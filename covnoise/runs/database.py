"""The SQLite file under the run store: per-thread connections, WAL, retried transactions.

Several processes (engines, workers, pages, the CLI) use one file at once. Every write is a
short `BEGIN IMMEDIATE` transaction that waits on SQLite's busy handler and is retried with
back-off, so a `database is locked` error does not escape; reads are retried the same way.
The file is created with the schema of covnoise.runs.schema. A path that cannot hold a store
(empty, a folder, a file that is not SQLite or not a covnoise store, one written by a newer
covnoise, damaged pages when `check` asks for SQLite's quick_check) raises StoreError with one
line, before anything is written to the file.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from covnoise.config import ConfigError
from covnoise.runs.paths import default_store_path
from covnoise.runs.schema import DB_VERSION, NOTES_STATEMENT, SCHEMA_STATEMENTS

T = TypeVar("T")

#: How long a busy file is retried before the error is raised.
RETRY_SECONDS = 120.0
#: The first 16 bytes of every SQLite database file.
SQLITE_HEADER = b"SQLite format 3\x00"


class StoreError(ConfigError, RuntimeError):
    """The store file cannot be used; the one-line message names the file and what is wrong.

    A ConfigError of the field ``store``, so commands report it as bad input (exit 2).
    """

    def __init__(self, message: str) -> None:
        super().__init__("store", message)


def _store_path(path: str | Path | None) -> Path:
    """The store file for `path` (the default when None); StoreError for an empty path."""
    if path is None:
        return default_store_path()
    if not str(path).strip():
        raise StoreError("the path is empty; give a file such as runs.sqlite")
    return Path(path).expanduser()


def check_store_file(path: Path) -> None:
    """Raise StoreError unless `path` is missing, empty or a SQLite file.

    Writes nothing, so a file that is not a store stays as it was. The file is read through
    SQLite itself (a read-only connection), never opened and closed with Python's open():
    closing any handle to a file drops every POSIX lock this process holds on it, which would
    silently release the locks of a store already open in this process and let another
    process's checkpoint damage it.
    """
    if path.is_dir():
        raise StoreError(f"{path} is a folder; give a file such as {path / 'runs.sqlite'}")
    if path.exists() and not path.is_file():
        raise StoreError(f"{path} is not a regular file")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return
    except OSError as exc:
        raise StoreError(f"{path} cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        return
    if size < len(SQLITE_HEADER):
        raise StoreError(f"{path} is truncated ({size} bytes)")
    uri = "file:" + urllib.parse.quote(str(path.resolve())) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        try:
            conn.execute("PRAGMA schema_version").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        text = str(exc).lower()
        if "not a database" in text:
            raise StoreError(f"{path} is not a SQLite file (not a covnoise run store)") from None
        if "locked" in text or "busy" in text:
            return  # in use by a writer: the store's own open retries
        raise StoreError(f"{path} cannot be read ({_one_line(exc)})") from None


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    text = str(exc).lower()
    return "locked" in text or "busy" in text


class Database:
    """A SQLite store file shared between threads (each gets its own connection) and
    processes (each write is one retried transaction)."""

    def __init__(
        self, path: str | Path | None = None, busy_timeout: float = 30.0, *, check: bool = False
    ) -> None:
        """Open (creating when missing) the store at `path`; `check` also runs SQLite's
        quick_check first, so damaged pages are reported now rather than mid-command."""
        self.path = _store_path(path)
        self._busy_ms = int(busy_timeout * 1000)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._conns_lock = threading.Lock()
        check_store_file(self.path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the folder {self.path.parent} ({exc.strerror or exc})"
            ) from None
        try:
            self._init_schema(check)
        except sqlite3.Error as exc:
            self.close()
            raise StoreError(self._explain(exc)) from None
        except BaseException:
            self.close()
            raise

    def _explain(self, exc: sqlite3.Error) -> str:
        """One line saying what a SQLite error on opening means for this file."""
        text = _one_line(exc)
        low = text.lower()
        if "not a database" in low or "malformed" in low or "corrupt" in low:
            return f"{self.path} is damaged or not a covnoise run store ({text})"
        if "unable to open" in low or "readonly" in low or "read-only" in low:
            return f"{self.path} cannot be opened for writing ({text})"
        return f"{self.path}: {text}"

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
    def quick_check(self) -> str | None:
        """SQLite's quick_check of the file: None when healthy, else its first complaint."""
        rows = self._read(lambda c: c.execute("PRAGMA quick_check(1)").fetchall())
        first = str(rows[0][0]) if rows else "no answer"
        return None if first == "ok" else " ".join(first.split())

    def _init_schema(self, check: bool = False) -> None:
        """Refuse a file that is not a store of this version, then set WAL and the schema.

        Every check reads only, so a refused file is left byte for byte as it was.
        """

        def setup(conn: sqlite3.Connection) -> None:
            if conn.execute("PRAGMA user_version").fetchone()[0] == 0:
                for statement in SCHEMA_STATEMENTS:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={DB_VERSION}")

        def wal(conn: sqlite3.Connection) -> None:
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"database is locked (journal mode {mode})")

        version = self._read(lambda c: c.execute("PRAGMA user_version").fetchone()[0])
        if version > DB_VERSION:
            raise StoreError(
                f"{self.path} was written by a newer covnoise (store version {version}; this "
                f"covnoise reads up to {DB_VERSION}); upgrade covnoise to use it"
            )
        if version == 0 and self._read(
            lambda c: c.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()[0]
        ):
            raise StoreError(f"{self.path} is a SQLite file but not a covnoise run store")
        if check and (problem := self.quick_check()) is not None:
            raise StoreError(f"{self.path} is damaged (SQLite quick_check: {problem})")
        self._read(wal)  # journal_mode cannot change inside a transaction
        if version == 0:
            self._write(setup)
        else:
            self._add_notes_table()

    def _add_notes_table(self) -> None:
        """Give a store made before the notes table one (nothing else changes)."""
        has = self._read(
            lambda c: c.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='run_notes'"
            ).fetchone()
        )
        if not has:
            self._write(lambda c: c.execute(NOTES_STATEMENT))
