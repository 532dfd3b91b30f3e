"""Runs Parquet files (``cached_runs/*.parquet``): one row per run, its metrics nested inside.

A file holds the exported run columns of covnoise.runs.schema, a ``metrics`` list column of
metric-row structs, and a schema version in its metadata. Files are written atomically and
read with pyarrow only (no pickle, no code execution), validated column by column; a bad
file in a cached-runs folder is skipped with a warning naming it. Before any data is read, the
file's size and its footer (runs, metric rows and uncompressed bytes per row group) are held
against ReadLimits, so a small file that would expand to gigabytes is refused in milliseconds.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from covnoise.files import atomic_write
from covnoise.runs.frames import expand_runs, plain, typed_metrics
from covnoise.runs.schema import (
    INTEGER_RUN_COLUMNS,
    JSON_RUN_COLUMNS,
    METRIC_COLUMNS,
    METRIC_FIELDS,
    METRIC_TABLE,
    PARQUET_RUN_COLUMNS,
    RUN_TABLE,
    STATUSES,
)

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

PARQUET_SCHEMA_VERSION = 1
_META_VERSION = b"covnoise.schema_version"
_META_KIND = b"covnoise.kind"


class StoreFormatError(ValueError):
    """A Parquet file is not a covnoise runs file (or is damaged); the message says why."""


class FileTooLargeError(StoreFormatError):
    """A runs file is over a ReadLimits cap; the message names the cap."""


@dataclass(frozen=True)
class ReadLimits:
    """Caps on one runs file, checked against its size and footer before any data is read.

    The real study files hold ~100 runs and ~250 000 metric rows (2 MB); the defaults leave
    room for twenty times that while keeping a read well under a few GB of memory.
    """

    max_bytes: int = 256 * 2**20
    max_runs: int = 100_000
    max_metric_rows: int = 5_000_000
    max_uncompressed_bytes: int = 1 * 2**30
    max_footer_bytes: int = 16 * 2**20


DEFAULT_LIMITS = ReadLimits()


def parquet_schema() -> pa.Schema:
    """The Arrow schema of a runs file (without its metadata)."""
    import pyarrow as pa

    metric = pa.struct([(c.name, getattr(pa, c.arrow)()) for c in METRIC_TABLE if c.arrow])
    fields = [pa.field(c.name, getattr(pa, c.arrow)()) for c in RUN_TABLE if c.arrow]
    fields.append(pa.field("metrics", pa.list_(metric)))
    return pa.schema(fields)


def write_runs_parquet(path: str | Path, runs: pd.DataFrame, metrics: pd.DataFrame | None) -> None:
    """Write runs (columns as in the store) and their long metrics to a Parquet file."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = parquet_schema()
    groups: dict[str, list[dict]] = {}
    if metrics is not None and len(metrics):
        cols = list(METRIC_FIELDS)
        for rid, g in metrics.groupby("run_id", sort=False):
            groups[rid] = [
                {k: plain(v) for k, v in zip(cols, row, strict=True)}
                for row in g[cols].itertuples(index=False)
            ]
    columns = {}
    for name in PARQUET_RUN_COLUMNS:
        values = [plain(v) for v in runs[name]] if name in runs else [None] * len(runs)
        columns[name] = pa.array(values, type=schema.field(name).type)
    columns["metrics"] = pa.array(
        [groups.get(rid, []) for rid in runs["run_id"]], type=schema.field("metrics").type
    )
    table = pa.Table.from_pydict(columns, schema=schema).replace_schema_metadata(
        {_META_VERSION: str(PARQUET_SCHEMA_VERSION).encode(), _META_KIND: b"runs"}
    )
    with atomic_write(path) as f:
        pq.write_table(table, f)


def _mib(n: int) -> str:
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def _source_size(source: str | Path | bytes) -> int:
    if isinstance(source, bytes | bytearray | memoryview):
        return len(source)
    try:
        return Path(source).stat().st_size
    except OSError as exc:
        raise StoreFormatError(f"cannot be read ({exc.strerror or exc})") from exc


def _reader(source: str | Path | bytes):
    """What pyarrow reads: the path itself, or a fresh reader over the bytes."""
    import pyarrow as pa

    return source if isinstance(source, str | Path) else pa.BufferReader(source)


def _footer_size(source: str | Path | bytes, size: int) -> int:
    """The footer length the file's last 8 bytes announce (0 when there are too few bytes)."""
    if size < 12:
        return 0
    if isinstance(source, bytes | bytearray | memoryview):
        tail = bytes(source[-8:])
    else:
        with open(source, "rb") as f:
            f.seek(size - 8)
            tail = f.read(8)
    return int.from_bytes(tail[:4], "little") if tail[4:] == b"PAR1" else 0


def file_stats(source: str | Path | bytes, limits: ReadLimits = DEFAULT_LIMITS) -> dict[str, int]:
    """Bytes, runs, metric rows and uncompressed bytes of a runs file, read from its footer.

    Raises FileTooLargeError (naming the cap) when one is over `limits`, StoreFormatError
    when the footer cannot be read. No column data is read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    size = _source_size(source)
    if size > limits.max_bytes:
        raise FileTooLargeError(f"the file is {_mib(size)}; the cap is {_mib(limits.max_bytes)}")
    footer = _footer_size(source, size)
    if footer > limits.max_footer_bytes:
        raise FileTooLargeError(
            f"its footer is {_mib(footer)}; the cap is {_mib(limits.max_footer_bytes)}"
        )
    try:
        meta = pq.ParquetFile(_reader(source)).metadata
    except (OSError, pa.ArrowException) as exc:
        raise StoreFormatError(f"not a readable Parquet file ({exc})") from exc
    groups = [meta.row_group(i) for i in range(meta.num_row_groups)]
    # a metric row is one value in each leaf column of the metrics list: the longest leaf
    # column of a row group bounds its metric rows, whatever the leaves are called
    rows = sum(
        max((g.column(j).num_values for j in range(g.num_columns)), default=0) for g in groups
    )
    stats = {
        "bytes": size,
        "runs": meta.num_rows,
        "metric_rows": rows,
        "uncompressed_bytes": sum(g.total_byte_size for g in groups),
    }
    _check_caps(stats, limits)
    return stats


def _check_caps(stats: dict[str, int], limits: ReadLimits) -> None:
    caps = (
        ("runs", "runs", limits.max_runs),
        ("metric_rows", "metric rows", limits.max_metric_rows),
        ("uncompressed_bytes", "uncompressed bytes", limits.max_uncompressed_bytes),
    )
    for key, what, cap in caps:
        if stats[key] > cap:
            raise FileTooLargeError(f"it holds {stats[key]:,} {what}; the cap is {cap:,}")


def read_runs_parquet(
    source: str | Path | bytes, limits: ReadLimits = DEFAULT_LIMITS
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read a covnoise runs Parquet file (a path, or its bytes) into (runs, metrics) frames.

    Raises FileTooLargeError when the footer shows it over `limits` (nothing else is read
    then), StoreFormatError when the file is unreadable, from another program, of another
    schema version, or has columns of the wrong type. Uses pyarrow only.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    file_stats(source, limits)
    try:
        schema = pq.read_schema(_reader(source))
    except (OSError, pa.ArrowException) as exc:
        raise StoreFormatError(f"not a readable Parquet file ({exc})") from exc
    expected = parquet_schema()
    _check_schema(schema, expected)
    try:
        table = pq.read_table(_reader(source), columns=expected.names)
    except (OSError, pa.ArrowException) as exc:
        raise StoreFormatError(f"damaged Parquet data ({exc})") from exc
    return _frames(table)


def _frames(table: pa.Table) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, metrics) frames of a runs table whose schema was checked; validated."""
    import pandas as pd
    import pyarrow.compute as pc

    table = table.replace_schema_metadata(None)
    runs = table.drop_columns(["metrics"]).to_pandas(ignore_metadata=True)
    mcol = table.column("metrics").combine_chunks()
    flat = mcol.flatten()
    parents = pc.list_parent_indices(mcol).to_numpy(zero_copy_only=False)
    metrics = pd.DataFrame(
        {
            "run_id": runs["run_id"].to_numpy()[parents] if len(parents) else [],
            **{name: flat.field(name).to_pandas() for name in METRIC_FIELDS},
        }
    )
    metrics = typed_metrics(metrics.reset_index(drop=True))
    _validate_runs(runs)
    for col in INTEGER_RUN_COLUMNS:
        runs[col] = runs[col].astype("Int64")
    return runs, metrics


def _check_schema(schema: pa.Schema, expected: pa.Schema) -> None:
    """Raise StoreFormatError unless `schema` is `expected`'s, of a runs file of this version."""
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
    for field in expected:
        idx = schema.get_field_index(field.name)
        if idx < 0:
            raise StoreFormatError(f"column {field.name!r} is missing")
        if not schema.field(idx).type.equals(field.type):
            raise StoreFormatError(
                f"column {field.name!r} has type {schema.field(idx).type}, expected {field.type}"
            )


def _validate_runs(runs: pd.DataFrame) -> None:
    """Raise StoreFormatError unless ids are unique, statuses known and JSON columns objects."""
    if runs["run_id"].isna().any() or runs["run_id"].duplicated().any():
        raise StoreFormatError("run_id values must be present and unique")
    bad = set(runs["status"].dropna()) - set(STATUSES)
    if runs["status"].isna().any() or bad:
        raise StoreFormatError(f"unknown status values {sorted(map(str, bad))}")
    for col in JSON_RUN_COLUMNS:
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
        empty_runs = pd.DataFrame(columns=[*PARQUET_RUN_COLUMNS, "source"])
        empty_metrics = pd.DataFrame(columns=list(METRIC_COLUMNS))
        return expand_runs(empty_runs), empty_metrics
    runs = pd.concat(run_frames, ignore_index=True)
    metrics = pd.concat(metric_frames, ignore_index=True)
    return expand_runs(runs), metrics
