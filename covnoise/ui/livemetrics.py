"""Live polling of a set of runs: their metric rows kept current by reading only what was
added since the last poll, and how far each run has got.

The Live page redraws every few seconds while runs go; re-reading every metric row each time
would grow with the history, so only new rows (store.metrics_since) are fetched.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

from covnoise.runs import ACTIVE, RunStore


class LiveMetrics:
    """Metric rows of a set of runs, kept up to date by reading only rows added since the
    last poll (store.metrics_since)."""

    def __init__(self) -> None:
        self.frame = pd.DataFrame()
        self.max_id = 0
        self.ids: set[str] = set()

    def update(self, store: RunStore, run_ids: Iterable[str]) -> pd.DataFrame:
        """Rows of `run_ids` (new ids are read in full, known ones incrementally)."""
        wanted = set(run_ids)
        new = wanted - self.ids
        parts = [self.frame[self.frame["run_id"].isin(wanted)]] if len(self.frame) else []
        if new:
            parts.append(store.metrics(sorted(new)))
        if self.ids & wanted:
            parts.append(store.metrics_since(self.max_id, sorted(wanted)))
        parts = [p for p in parts if len(p)]
        if parts:
            frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
            frame = frame.drop_duplicates("id").sort_values("id", kind="stable")
            self.frame = frame.reset_index(drop=True)
            self.max_id = max(self.max_id, int(self.frame["id"].max()))
        else:
            self.frame = store.metrics([])
        self.ids = wanted
        return self.frame

    def forget(self, run_ids: Iterable[str]) -> None:
        """Drop what is known of `run_ids` (a requeued run starts its rows afresh)."""
        drop = set(run_ids)
        self.ids -= drop
        if len(self.frame):
            self.frame = self.frame[~self.frame["run_id"].isin(drop)]


def run_progress(runs: pd.DataFrame, metrics: pd.DataFrame) -> pd.Series:
    """Fraction of its steps each run has done (last logged step / total steps), by run_id."""
    last = metrics.groupby("run_id")["step"].max() if len(metrics) else pd.Series(dtype=float)
    out = {}
    for row in runs.itertuples():
        total = row.total_steps
        done = row.steps if row.status not in ACTIVE and pd.notna(row.steps) else None
        if done is None:
            done = last.get(row.run_id, 0)
        if pd.isna(total) or not total:
            out[row.run_id] = 1.0 if row.status == "finished" else 0.0
        else:
            out[row.run_id] = float(min(1.0, float(done or 0) / float(total)))
    return pd.Series(out, dtype=float)
