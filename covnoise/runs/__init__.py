"""Where runs live and how they are executed: the SQLite run store, Parquet I/O and the
engines (``covnoise.runs.engine``: a local worker pool, Ray) that run configs and write their
metrics to the store. Import the store's names from here; the modules behind them may move."""

from covnoise.runs.store import (  # noqa: F401
    ACTIVE,
    COMPLETED,
    METRIC_COLUMNS,
    PARQUET_SCHEMA_VERSION,
    RUN_COLUMNS,
    STATUSES,
    STORE_ENV,
    TERMINAL,
    RunStore,
    StoreFormatError,
    default_store_path,
    expand_runs,
    metric_rows,
    open_store,
    read_cached_runs,
    read_runs_parquet,
    user_data_dir,
    write_runs_parquet,
)

__all__ = [
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
