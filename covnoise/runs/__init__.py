"""Where runs live and how they are executed: the SQLite run store, Parquet I/O and the
engines (``covnoise.runs.engine``: a local worker pool, Ray) that run configs and write their
metrics to the store. Import the store's names from here; the modules behind them may move.

Behind this face: ``schema`` (statuses and columns), ``paths`` (where the store lives),
``database`` (SQLite access), ``queries`` and ``store`` (reading and changing runs),
``parquet`` (runs files) and ``frames`` (pandas helpers); files are written through
``covnoise.files`` (atomic writes).
"""

from covnoise.runs.database import StoreError
from covnoise.runs.frames import expand_runs
from covnoise.runs.parquet import (
    PARQUET_SCHEMA_VERSION,
    FileTooLargeError,
    ReadLimits,
    StoreFormatError,
    read_cached_runs,
    read_runs_parquet,
    write_runs_parquet,
)
from covnoise.runs.paths import STORE_ENV, default_store_path, user_data_dir
from covnoise.runs.schema import (
    ACTIVE,
    COMPLETED,
    METRIC_COLUMNS,
    RUN_COLUMNS,
    STATUSES,
    TERMINAL,
)
from covnoise.runs.store import ImportRefusedError, RunStore, metric_rows, open_store

__all__ = [
    "FileTooLargeError",
    "ImportRefusedError",
    "ReadLimits",
    "StoreError",
    "ACTIVE",
    "COMPLETED",
    "METRIC_COLUMNS",
    "PARQUET_SCHEMA_VERSION",
    "RUN_COLUMNS",
    "RunStore",
    "STATUSES",
    "STORE_ENV",
    "StoreFormatError",
    "TERMINAL",
    "default_store_path",
    "expand_runs",
    "metric_rows",
    "open_store",
    "read_cached_runs",
    "read_runs_parquet",
    "user_data_dir",
    "write_runs_parquet",
]
