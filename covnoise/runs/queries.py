"""Reading the run store: one run, statuses, the runs table and the long metrics table.

Everything a page, the CLI or a monitor asks of the store without changing it. The frames
have the columns of covnoise.runs.schema (runs with their config fields expanded as
``cfg_<field>`` columns); pandas is imported only where a frame is built.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from covnoise.runs.database import Database
from covnoise.runs.frames import chunks, expand_runs, typed_metrics
from covnoise.runs.schema import JSON_RUN_COLUMNS, METRIC_COLUMNS, RUN_COLUMNS

if TYPE_CHECKING:
    import pandas as pd

#: Ids per `IN (…)` query (SQLite bounds the number of parameters).
CHUNK = 500


class RunQueries(Database):
    """The read side of the run store (RunStore adds the writes)."""

    def get_run(self, run_id: str) -> dict[str, Any] | None:
        """One run as a dict (config, versions and final decoded from JSON), or None."""
        row = self._read(
            lambda c: c.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        )
        if row is None:
            return None
        out = dict(row)
        for key in JSON_RUN_COLUMNS:
            if out.get(key) is not None:
                out[key] = json.loads(out[key])
        return out

    def status(self, run_id: str) -> str | None:
        """The status of `run_id` (None for an id the store does not hold)."""
        row = self._read(
            lambda c: c.execute("SELECT status FROM runs WHERE run_id=?", (run_id,)).fetchone()
        )
        return None if row is None else row["status"]

    def stop_requested(self, run_id: str) -> bool:
        """Whether a run should stop: cancel requested, already cancelled, or unknown."""
        row = self._read(
            lambda c: c.execute(
                "SELECT cancel_requested, status FROM runs WHERE run_id=?", (run_id,)
            ).fetchone()
        )
        return row is None or bool(row["cancel_requested"]) or row["status"] == "cancelled"

    def statuses(self, run_ids: Iterable[str]) -> dict[str, str | None]:
        """Status of each id (None for an id the store does not hold)."""
        ids = list(run_ids)
        found: dict[str, str] = {}
        for chunk in chunks(ids, CHUNK):
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

    def gone_runs(self) -> set[str]:
        """Ids of running runs whose recorded worker process is gone (read-only).

        Only runs recorded on this host with a pid can be checked: the pid is missing, or it
        now belongs to a process started after the run's last heartbeat (the pid was reused;
        the pid is recorded with a heartbeat once its process exists).
        """
        import psutil

        here = socket.gethostname()
        gone = set()
        for run in self._read(
            lambda c: c.execute(
                "SELECT run_id, pid, host, heartbeat_at FROM runs WHERE status='running' "
                "AND pid IS NOT NULL"
            ).fetchall()
        ):
            if run["host"] not in (None, here):
                continue
            try:
                started = psutil.Process(int(run["pid"])).create_time()
            except (psutil.NoSuchProcess, psutil.ZombieProcess, ValueError, OverflowError):
                gone.add(run["run_id"])
                continue
            except psutil.Error:
                continue
            beat = run["heartbeat_at"]
            if beat is not None and started > float(beat) + 1.0:
                gone.add(run["run_id"])
        return gone

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
        return expand_runs(df, where)

    def metrics(
        self, run_ids: Iterable[str] | None = None, names: Iterable[str] | None = None
    ) -> pd.DataFrame:
        """Long metrics table (id, run_id, step, epoch, examples_seen, wall_time, name, value)."""
        return self._metrics_query(run_ids, names, after=None)

    def metrics_since(self, row_id: int, run_ids: Iterable[str] | None = None) -> pd.DataFrame:
        """Metric rows with id > `row_id` (for live updates: pass the largest id seen)."""
        return self._metrics_query(run_ids, None, after=int(row_id))

    def _metrics_query(
        self, run_ids: Iterable[str] | None, names: Iterable[str] | None, after: int | None
    ) -> pd.DataFrame:
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
            for chunk in chunks(ids, CHUNK):
                cl = [*clauses, f"run_id IN ({','.join('?' * len(chunk))})"]
                frames.append(self._frame(base, cl, [*args, *chunk]))
        frames = [f for f in frames if len(f)] or frames[:1]
        df = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
        return df.sort_values("id", kind="stable").reset_index(drop=True)

    def _frame(self, base: str, clauses: list[str], args: list) -> pd.DataFrame:
        import pandas as pd

        sql = base + (" WHERE " + " AND ".join(clauses) if clauses else "") + " ORDER BY id"
        df = self._read(lambda c: pd.read_sql_query(sql, c, params=args))
        return typed_metrics(df)

    def status_counts(self) -> dict[str, int]:
        """How many runs have each status (statuses with no run are left out)."""
        rows = self._read(
            lambda c: c.execute("SELECT status, COUNT(*) AS n FROM runs GROUP BY status").fetchall()
        )
        return {r["status"]: r["n"] for r in rows}

    def count_metrics(self, run_id: str | None = None) -> int:
        """Number of metric rows (of one run, or of all runs)."""
        if run_id is None:
            return self._read(lambda c: c.execute("SELECT COUNT(*) FROM metrics").fetchone()[0])
        return self._read(
            lambda c: c.execute(
                "SELECT COUNT(*) FROM metrics WHERE run_id=?", (run_id,)
            ).fetchone()[0]
        )

    def max_metric_id(self) -> int:
        """The largest metric row id (0 for none): where live updates start reading."""
        return self._read(
            lambda c: c.execute("SELECT COALESCE(MAX(id), 0) FROM metrics").fetchone()[0]
        )
