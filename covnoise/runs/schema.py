"""What a run and a metric row are: run statuses and the columns of the store's two tables.

Each column is written once, in the tables below, as (name, SQL declaration, Arrow type):
the SQLite schema, the column lists the store selects and inserts, the Parquet schema and the
pandas dtypes of the frames are all derived from them, so they cannot drift apart. A column
with no Arrow type is bookkeeping of a live store (who runs it, its heartbeat) and is not
written to Parquet files.
"""

from __future__ import annotations

from dataclasses import dataclass

STATUSES = ("queued", "running", "finished", "failed", "diverged", "cancelled")
ACTIVE = frozenset({"queued", "running"})
TERMINAL = frozenset({"finished", "failed", "diverged", "cancelled"})
#: Results that a plain resubmission returns instead of running again.
COMPLETED = frozenset({"finished", "diverged"})

#: Version of the SQLite layout (``PRAGMA user_version``); a newer file is refused.
DB_VERSION = 1


@dataclass(frozen=True)
class Column:
    """One column: its SQL declaration, its Arrow type in Parquet files (None: not exported)
    and whether frames of the table list it."""

    name: str
    sql: str
    arrow: str | None
    listed: bool = True

    @property
    def pandas_dtype(self) -> str | None:
        """The nullable pandas dtype of a numeric column (None for text)."""
        return {"INTEGER": "Int64", "REAL": "float64"}.get(self.sql.split()[0])


# One row per column of the runs table, in table order.
RUN_TABLE = (
    Column("run_id", "TEXT PRIMARY KEY", "string"),
    Column("name", "TEXT", "string"),
    Column("config", "TEXT NOT NULL", "string"),
    Column("status", "TEXT NOT NULL", "string"),
    Column("engine", "TEXT NOT NULL DEFAULT 'local'", "string"),
    Column("submitted_at", "REAL NOT NULL", "float64"),
    Column("started_at", "REAL", "float64"),
    Column("ended_at", "REAL", "float64"),
    Column("heartbeat_at", "REAL", None),
    Column("device", "TEXT", "string"),
    Column("versions", "TEXT", "string"),
    Column("code_revision", "TEXT", "string"),
    Column("message", "TEXT", "string"),
    Column("traceback", "TEXT", "string", listed=False),
    Column("total_steps", "INTEGER", "int64"),
    Column("probe_size", "INTEGER", "int64"),
    Column("steps", "INTEGER", "int64"),
    Column("examples_seen", "INTEGER", "int64"),
    Column("wall_time", "REAL", "float64"),
    Column("final", "TEXT", "string"),
    Column("host", "TEXT", None),
    Column("pid", "INTEGER", None),
    Column("owner", "TEXT", None, listed=False),
    Column("cancel_requested", "INTEGER NOT NULL DEFAULT 0", None),
)

# One row per column of the metrics table, in table order (a metric row of a Parquet file is
# a struct of the columns with an Arrow type).
METRIC_TABLE = (
    Column("id", "INTEGER PRIMARY KEY AUTOINCREMENT", None, listed=False),
    Column("run_id", "TEXT NOT NULL", None),
    Column("step", "INTEGER", "int64"),
    Column("epoch", "REAL", "float64"),
    Column("examples_seen", "INTEGER", "int64"),
    Column("wall_time", "REAL", "float64"),
    Column("name", "TEXT NOT NULL", "string"),
    Column("value", "REAL", "float64"),
)

#: Columns of the runs frames (RunStore.runs): the table less traceback and owner.
RUN_COLUMNS = tuple(c.name for c in RUN_TABLE if c.listed)
#: Columns of a run in a Parquet file (and the columns an import writes).
PARQUET_RUN_COLUMNS = tuple(c.name for c in RUN_TABLE if c.arrow is not None)
#: Columns of the long metrics frames (without the row id).
METRIC_COLUMNS = tuple(c.name for c in METRIC_TABLE if c.listed)
#: Fields of one metric row inside a Parquet file's ``metrics`` list column.
METRIC_FIELDS = tuple(c.name for c in METRIC_TABLE if c.arrow is not None)
#: Run columns held as nullable integers once read from Parquet.
INTEGER_RUN_COLUMNS = tuple(
    c.name for c in RUN_TABLE if c.arrow is not None and c.pandas_dtype == "Int64"
)
#: Run columns that hold JSON objects as text.
JSON_RUN_COLUMNS = ("config", "versions", "final")
#: pandas dtypes of the numeric metric columns.
METRIC_DTYPES = {c.name: c.pandas_dtype for c in METRIC_TABLE if c.listed and c.pandas_dtype}


def _create_table(name: str, columns: tuple[Column, ...]) -> str:
    body = ",\n".join(f"    {c.name} {c.sql}" for c in columns)
    return f"CREATE TABLE IF NOT EXISTS {name} (\n{body}\n)"


#: The user's notes on runs (tags, hidden), kept apart from the runs table: they are about
#: any run id the app shows (cached runs too), are never exported, and the table is added to
#: stores made before it without a new store version (older covnoise ignores it).
NOTES_STATEMENT = (
    "CREATE TABLE IF NOT EXISTS run_notes (\n"
    "    run_id TEXT PRIMARY KEY,\n"
    "    tags TEXT NOT NULL DEFAULT '',\n"
    "    hidden INTEGER NOT NULL DEFAULT 0\n"
    ")"
)

#: The statements that create an empty store.
SCHEMA_STATEMENTS = (
    _create_table("runs", RUN_TABLE),
    "CREATE INDEX IF NOT EXISTS runs_status ON runs (status, engine, submitted_at)",
    _create_table("metrics", METRIC_TABLE),
    "CREATE INDEX IF NOT EXISTS metrics_run ON metrics (run_id, id)",
    NOTES_STATEMENT,
)
