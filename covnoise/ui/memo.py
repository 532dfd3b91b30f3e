"""Work a rerun would repeat on the same data, done once: results computed from DataFrames,
cached under an exact fingerprint of their contents, and the slow imports some pages need,
done in the background after the server starts.

st.cache_data hashes a DataFrame argument itself, but samples the rows of a large one, so two
frames of the same shape could share an entry. Here the key is a digest of every row's hash
(pandas.util.hash_pandas_object: values, index and column names; dicts and lists by their
text), computed in milliseconds, and the frames themselves are passed unhashed. Runs that are
still going change their rows, so they get a new entry on the next rerun: nothing shown goes
stale, and nothing is kept per user (an entry is the result of a pure function of the frames;
at most `max_entries` are kept).
"""

from __future__ import annotations

import hashlib
import importlib
import threading

import pandas as pd
import streamlit as st

from covnoise import results
from covnoise.ui.guards import log

#: Imported in the background once the app has drawn its first page: modules a page would
#: otherwise import on its first open (scipy.stats for the correlations' intervals, several
#: seconds; torch._dynamo, reached by the cost model's FLOP count on Train).
WARM_MODULES = ("scipy.stats", "covnoise.results.correlations", "torch", "torch._dynamo")


def frame_key(*parts: pd.DataFrame | pd.Series) -> str:
    """A digest of the contents of frames and series: equal exactly when they hold the same
    values, index, column names and dtypes (up to a 128-bit hash collision)."""
    h = hashlib.blake2b(digest_size=16)
    for part in parts:
        frame = part.to_frame() if isinstance(part, pd.Series) else part
        objects = [c for c, t in frame.dtypes.items() if pd.api.types.is_object_dtype(t)]
        if objects:  # dicts or lists (a run's recorded versions) hash by their text
            frame = frame.assign(**{str(c): frame[c].map(repr) for c in objects})
        h.update(repr((list(frame.columns), [str(t) for t in frame.dtypes])).encode())
        h.update(pd.util.hash_pandas_object(frame, index=True).to_numpy().tobytes())
    return h.hexdigest()


@st.cache_data(max_entries=16, show_spinner=False)
def _aggregate_seeds(key: str, _curve: pd.DataFrame, _groups: pd.Series) -> pd.DataFrame:
    return results.aggregate_seeds(_curve, _groups)


def aggregate_seeds(curve: pd.DataFrame, groups: pd.Series) -> pd.DataFrame:
    """results.aggregate_seeds, cached by the contents of its inputs."""
    return _aggregate_seeds(frame_key(curve, groups), curve, groups)


@st.cache_data(max_entries=16, show_spinner=False)
def _seed_points(
    key: str, _runs: pd.DataFrame, _metrics: pd.DataFrame, how: str, columns: tuple[str, ...]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    points = results.run_points(_runs, _metrics, how=how)
    return points, results.group_seeds(points, list(columns))


def seed_points(
    runs: pd.DataFrame, metrics: pd.DataFrame, how: str, columns
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(results.run_points, results.group_seeds of them), cached by the contents of the runs
    and metrics."""
    return _seed_points(frame_key(runs, metrics), runs, metrics, how, tuple(columns))


def _import_all(names: tuple[str, ...]) -> None:
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as err:  # a warm-up never breaks the app; the page imports it again
            log.warning("background import of %s failed: %s", name, err)


@st.cache_resource(show_spinner=False)
def warm_imports(names: tuple[str, ...] = WARM_MODULES) -> threading.Thread:
    """Start, once per server, a daemon thread importing `names` (a page that needs one of
    them meanwhile waits for that import instead of starting its own)."""
    thread = threading.Thread(target=_import_all, args=(names,), name="covnoise-warm", daemon=True)
    thread.start()
    return thread
