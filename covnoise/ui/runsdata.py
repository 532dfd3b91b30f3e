"""Runs from every source the app reads: its own store, the cached files shipped with it, and
files uploaded in a browser session; plus the Parquet file a page offers for download.

Cached runs (``cached_runs/*.parquet``, or the folder named by ``$COVNOISE_CACHED_RUNS``) and
uploaded files are read as data only, with pyarrow, into memory; the store is never written
with them. A ``source`` column says where each run came from, and metrics are read back from
that same source.

Uploads are capped (UPLOAD_LIMITS per file, checked in the file's footer before any data is
read, and SESSION_MAX_* per browser session) and live in st.session_state only, so their
memory goes when the session ends.
"""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pandas as pd
import streamlit as st

from covnoise.results.labels import OWN_SOURCE
from covnoise.runs import (
    METRIC_COLUMNS,
    RunStore,
    expand_runs,
    read_cached_runs,
    read_runs_parquet,
    write_runs_parquet,
)
from covnoise.runs.parquet import FileTooLargeError, ReadLimits, file_stats
from covnoise.ui.guards import log
from covnoise.ui.manage import with_notes

ROOT = Path(__file__).resolve().parents[2]
CACHED_ENV = "COVNOISE_CACHED_RUNS"
#: Caps on one uploaded file (the shipped study files hold ~250 000 metric rows, 2 MB).
UPLOAD_LIMITS = ReadLimits(
    max_bytes=64 * 2**20,
    max_runs=20_000,
    max_metric_rows=2_000_000,
    max_uncompressed_bytes=256 * 2**20,
)
#: Caps on all the files uploaded in one browser session together.
SESSION_MAX_BYTES = 128 * 2**20
SESSION_MAX_METRIC_ROWS = 4_000_000
_UPLOADS_KEY = "uploaded_runs"
_SIZES_KEY = "uploaded_sizes"


def cached_runs_dir() -> Path:
    """Folder of the cached runs shipped with the app ($COVNOISE_CACHED_RUNS overrides)."""
    env = os.environ.get(CACHED_ENV)
    return Path(env).expanduser() if env else ROOT / "cached_runs"


def _signature(folder: Path) -> tuple:
    try:
        files = sorted(folder.glob("*.parquet"))
        return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in files)
    except OSError:
        return ()


@st.cache_resource(show_spinner=False, max_entries=4)
def _read_cached(folder: str, signature: tuple) -> tuple[pd.DataFrame, pd.DataFrame]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs, metrics = read_cached_runs(folder)
    for w in caught:
        log.warning("%s", w.message)
    return runs, metrics


def cached_signature() -> tuple:
    """Names, times and sizes of the cached files: a cache key that changes with them."""
    return _signature(cached_runs_dir())


def cached_runs() -> tuple[pd.DataFrame, pd.DataFrame]:
    """(runs, metrics) of every readable cached file; re-read when a file changes. Read-only."""
    folder = cached_runs_dir()
    return _read_cached(str(folder), _signature(folder))


def read_upload(name: str, data: bytes) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An uploaded covnoise runs file as (runs, metrics); StoreFormatError when it is not one.

    FileTooLargeError (a StoreFormatError naming the cap) when the file, or this session's
    uploads with it, would be over the caps; the footer is checked before any data is read.
    Read from memory with pyarrow only.
    """
    sizes = _upload_sizes()
    used_bytes = sum(b for b, _ in sizes.values())
    used_rows = sum(r for _, r in sizes.values())
    if used_bytes + len(data) > SESSION_MAX_BYTES:
        raise FileTooLargeError(
            f"this session's uploads would hold {(used_bytes + len(data)) / 2**20:.0f} MiB; "
            f"the cap per session is {SESSION_MAX_BYTES // 2**20} MiB (reload to start over)"
        )
    rows = file_stats(data, UPLOAD_LIMITS)["metric_rows"]
    if used_rows + rows > SESSION_MAX_METRIC_ROWS:
        raise FileTooLargeError(
            f"this session's uploads would hold {used_rows + rows:,} metric rows; the cap per "
            f"session is {SESSION_MAX_METRIC_ROWS:,} (reload to start over)"
        )
    runs, metrics = read_runs_parquet(data, UPLOAD_LIMITS)
    runs = expand_runs(runs, None)
    runs["source"] = f"upload: {name}"
    sizes[name] = (len(data), rows)
    return runs, metrics


def _upload_sizes() -> dict[str, tuple[int, int]]:
    """(bytes, metric rows) of each upload this session still holds."""
    held = uploads()
    sizes = st.session_state.setdefault(_SIZES_KEY, {})
    for name in [n for n in sizes if n not in held]:
        del sizes[name]
    return sizes


def uploads() -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """Runs uploaded in this browser session, by file name (held in st.session_state only,
    so they are released with the session)."""
    return st.session_state.setdefault(_UPLOADS_KEY, {})


def all_runs(store: RunStore) -> pd.DataFrame:
    """Runs from the store, the cached files and this session's uploads, one row per run id
    (the store wins over cached files, cached files over uploads); a ``source`` column says
    where each came from, ``tags`` and ``hidden`` the user's notes on it."""
    own = store.runs()
    own["source"] = OWN_SOURCE
    frames = [own, cached_runs()[0], *(r for r, _ in uploads().values())]
    frames = [f for f in frames if len(f)]
    if not frames:
        return with_notes(own, store)
    runs = pd.concat(frames, ignore_index=True)
    return with_notes(runs.drop_duplicates("run_id", keep="first").reset_index(drop=True), store)


def metrics_for(store: RunStore, runs: pd.DataFrame) -> pd.DataFrame:
    """Long metrics of `runs` (a frame from all_runs), each read from the run's source."""
    parts = []
    own_ids = runs.loc[runs["source"] == OWN_SOURCE, "run_id"].tolist()
    if own_ids:
        parts.append(store.metrics(own_ids).drop(columns="id"))
    other = runs[runs["source"] != OWN_SOURCE]
    if len(other):
        frames = [cached_runs()[1], *(m for _, m in uploads().values())]
        for m in frames:
            if len(m):
                parts.append(m[m["run_id"].isin(set(other["run_id"]))])
    parts = [p for p in parts if len(p)]
    if not parts:
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    return pd.concat(parts, ignore_index=True)


def parquet_bytes(runs: pd.DataFrame, metrics: pd.DataFrame) -> bytes:
    """`runs` and their metrics as a covnoise runs Parquet file (readable by import/upload)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.parquet"
        write_runs_parquet(path, runs, metrics)
        return path.read_bytes()
