"""The SQLite run store and its Parquet files, checked against the data written into them."""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import os
import sqlite3
import stat
import sys
import threading
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from covnoise.config import RunConfig
from covnoise.files import atomic_write
from covnoise.runs import (
    ACTIVE,
    COMPLETED,
    METRIC_COLUMNS,
    RUN_COLUMNS,
    STATUSES,
    TERMINAL,
    RunStore,
    StoreFormatError,
    default_store_path,
    expand_runs,
    read_cached_runs,
    read_runs_parquet,
    user_data_dir,
)
from covnoise.runs.parquet import parquet_schema
from covnoise.runs.schema import METRIC_TABLE, RUN_TABLE

BASE = RunConfig(
    dataset="digits",
    model="mlp",
    width=8,
    depth=2,
    batch_size=64,
    small_batch=16,
    steps=10,
    epochs=None,
    eval_every=5,
    sharpness_every=0,
)


def _event(step: int, rng: np.random.Generator, names=("train_loss", "test_acc")) -> dict:
    return {
        "event": "metric",
        "step": step,
        "epoch": step / 7,
        "examples_seen": 64 * step,
        "wall_time": 0.01 * step,
        "metrics": {n: float(rng.normal()) for n in names},
    }


def _expected_rows(run_id: str, events: list[dict]) -> pd.DataFrame:
    rows = [
        (run_id, e["step"], e["epoch"], e["examples_seen"], e["wall_time"], k, v)
        for e in events
        for k, v in e["metrics"].items()
    ]
    return pd.DataFrame(
        rows, columns=["run_id", "step", "epoch", "examples_seen", "wall_time", "name", "value"]
    )


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def _populate(store: RunStore) -> dict[str, list[dict]]:
    """Three runs in different final states with metric events (one value NaN, one inf)."""
    rng = np.random.default_rng(0)
    emitted: dict[str, list[dict]] = {}
    for seed, status in [(0, "finished"), (1, "diverged"), (2, "failed")]:
        cfg = BASE.replace(seed=seed, name=f"run{seed}")
        rid, _ = store.submit(cfg)
        assert store.claim_next("local", "test-owner") == (rid, json.loads(cfg.to_json()))
        store.record_start(
            rid,
            {
                "device": "cpu (test)",
                "versions": {"python": "3"},
                "code_revision": "abc",
                "total_steps": 10,
                "probe_size": 32,
            },
        )
        events = [_event(s, rng) for s in range(0, 11, 5)]
        if status == "diverged":
            events[-1]["metrics"]["train_loss"] = float("inf")
            events[-1]["metrics"]["test_acc"] = float("nan")
        for e in events:
            store.add_metric_event(rid, e)
        emitted[rid] = events
        summary = {
            "steps": 10,
            "examples_seen": 640,
            "wall_time": 1.5,
            "final": {"train_loss": 0.25},
        }
        message = "ValueError: boom" if status == "failed" else None
        assert store.finish(rid, status, message=message, summary=summary)
    return emitted


# ---------------------------------------------------------------------- runs and metrics
def test_metric_rows_round_trip_exactly(store):
    emitted = _populate(store)
    got = store.metrics(list(emitted))
    want = pd.concat([_expected_rows(r, ev) for r, ev in emitted.items()], ignore_index=True)
    assert len(got) == len(want) == 3 * 3 * 2
    cols = ["run_id", "step", "examples_seen", "name"]
    assert got[cols].astype(str).values.tolist() == want[cols].astype(str).values.tolist()
    np.testing.assert_array_equal(got["epoch"].to_numpy(), want["epoch"].to_numpy())
    np.testing.assert_array_equal(got["value"].to_numpy(), want["value"].to_numpy())  # NaN, inf
    # live updates: only rows after a given id, in id order
    cut = int(got["id"].iloc[7])
    later = store.metrics_since(cut)
    assert later["id"].tolist() == got["id"].iloc[8:].tolist()
    one = list(emitted)[1]
    assert set(store.metrics_since(cut, [one])["run_id"]) == {one}
    assert store.metrics([]).empty


def test_run_record_and_table(store):
    emitted = _populate(store)
    rid = list(emitted)[2]
    rec = store.get_run(rid)
    assert rec["status"] == "failed" and rec["message"] == "ValueError: boom"
    assert rec["config"] == BASE.replace(seed=2, name="run2").to_dict()
    assert rec["versions"] == {"python": "3"} and rec["final"] == {"train_loss": 0.25}
    assert rec["device"] == "cpu (test)" and rec["code_revision"] == "abc"
    assert rec["submitted_at"] <= rec["started_at"] <= rec["ended_at"]
    table = store.runs()
    assert table["run_id"].tolist() == list(emitted)
    assert table["cfg_seed"].tolist() == [0, 1, 2]
    assert store.runs(status="diverged")["run_id"].tolist() == [list(emitted)[1]]
    assert store.runs(where={"seed": 2})["run_id"].tolist() == [rid]
    assert store.runs(where={"seed": "2"})["run_id"].tolist() == [rid]  # CLI text values
    assert store.resolve(rid[:6]) == rid
    with pytest.raises(KeyError):
        store.resolve("zzzz")


def test_submit_returns_finished_runs_unless_rerun(store):
    emitted = _populate(store)
    done, diverged, failed = emitted
    assert store.submit(BASE.replace(seed=0, name="run0")) == (done, False)
    assert store.submit(BASE.replace(seed=1)) == (diverged, False)  # a label is not the id
    assert store.submit(BASE.replace(seed=2)) == (failed, True)  # failed runs go again
    assert store.status(failed) == "queued" and store.count_metrics(failed) == 0
    assert store.submit(BASE.replace(seed=2)) == (failed, False)  # already queued
    assert store.submit(BASE.replace(seed=0), rerun=True) == (done, True)
    assert store.status(done) == "queued" and store.count_metrics(done) == 0
    assert store.count_metrics(diverged) == 6


def test_cancel_and_finish_transitions(store):
    queued, _ = store.submit(BASE.replace(seed=10))
    running, _ = store.submit(BASE.replace(seed=11))
    assert store.status_counts() == {"queued": 2}
    assert store.request_cancel(queued) == "cancelled"
    assert store.claim_next("local", "o")[0] == running  # the cancelled one is skipped
    assert store.claim_next("local", "o") is None
    assert store.heartbeat(running) is False
    assert store.request_cancel(running) == "running"
    assert store.heartbeat(running) is True  # the worker learns it should stop
    assert store.finish(running, "cancelled", message="stopped")
    assert not store.finish(running, "failed", message="late")  # first final status wins
    assert store.get_run(running)["message"] == "stopped"
    assert store.request_cancel("nope") is None
    assert store.status_counts() == {"cancelled": 2}
    assert store.delete([queued, running]) == 2 and store.runs().empty


def test_engine_kinds_are_claimed_separately(store):
    a, _ = store.submit(BASE.replace(seed=20), engine="ray")
    b, _ = store.submit(BASE.replace(seed=21), engine="local")
    assert store.claim_next("local", "o")[0] == b
    assert store.claim_next("local", "o") is None
    assert store.claim_next("ray", "o")[0] == a


def test_default_path_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("COVNOISE_STORE", str(tmp_path / "x.sqlite"))
    assert default_store_path() == tmp_path / "x.sqlite"
    monkeypatch.delenv("COVNOISE_STORE")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_store_path() == tmp_path / "data" / "covnoise" / "runs.sqlite"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the Linux default path")
def test_default_path_on_linux_is_under_local_share(monkeypatch, tmp_path):
    # platformdirs gives the XDG default, the path covnoise has always used on Linux
    monkeypatch.delenv("COVNOISE_STORE", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert user_data_dir() == tmp_path / ".local" / "share" / "covnoise"
    assert default_store_path() == tmp_path / ".local" / "share" / "covnoise" / "runs.sqlite"
    monkeypatch.setenv("XDG_DATA_HOME", "")  # empty means unset
    assert default_store_path() == tmp_path / ".local" / "share" / "covnoise" / "runs.sqlite"


def test_schema_is_one_table_of_columns(store):
    conn = sqlite3.connect(store.path)
    run_cols = [r[1] for r in conn.execute("PRAGMA table_info(runs)")]
    metric_cols = [r[1] for r in conn.execute("PRAGMA table_info(metrics)")]
    conn.close()
    assert run_cols == [c.name for c in RUN_TABLE]
    assert metric_cols == [c.name for c in METRIC_TABLE]
    assert RUN_COLUMNS == tuple(c for c in run_cols if c not in ("traceback", "owner"))
    assert METRIC_COLUMNS == tuple(metric_cols[1:])
    live = {"heartbeat_at", "host", "pid", "owner", "cancel_requested"}
    assert parquet_schema().names == [*(c for c in run_cols if c not in live), "metrics"]
    assert set(STATUSES) == ACTIVE | TERMINAL and COMPLETED <= TERMINAL


def test_store_file_is_in_wal_mode(store):
    conn = sqlite3.connect(store.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    conn.close()


# ---------------------------------------------------------------------- several writers
def _writer(path: str, seed: int, n_events: int, barrier) -> None:
    s = RunStore(path, busy_timeout=0.05)  # short busy waits force the retry path
    rid, _ = s.submit(BASE.replace(seed=seed))
    s.claim_next("local", f"w{seed}")
    barrier.wait()
    for step in range(n_events):
        s.add_metric_event(rid, {"step": step, "metrics": {"a": step, "b": -step}})
        s.heartbeat(rid)
    s.finish(rid, "finished")
    s.close()


def test_concurrent_writer_processes_lose_nothing(tmp_path):
    path = str(tmp_path / "busy.sqlite")
    RunStore(path).close()
    ctx = mp.get_context("spawn")
    n_proc, n_events = 4, 150
    barrier = ctx.Barrier(n_proc)
    procs = [
        ctx.Process(target=_writer, args=(path, 100 + i, n_events, barrier)) for i in range(n_proc)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n_proc  # no "database is locked" escaped
    with RunStore(path) as s:
        runs = s.runs()
        assert (runs["status"] == "finished").sum() == n_proc
        m = s.metrics()
        assert len(m) == n_proc * n_events * 2
        for _, g in m.groupby("run_id"):
            a = g[g["name"] == "a"]
            assert a["step"].tolist() == list(range(n_events))  # in order, none lost
            assert (a["value"].to_numpy() == np.arange(n_events)).all()


# ---------------------------------------------------------------------- Parquet
def test_export_import_round_trip_is_identical(store, tmp_path):
    _populate(store)
    path = tmp_path / "cached_runs" / "three.parquet"
    assert store.export_parquet(path) == 3
    with RunStore(tmp_path / "other.sqlite") as other:
        assert other.import_parquet(path) == 3
        assert other.import_parquet(path) == 0  # already there
        assert other.import_parquet(path, replace=True) == 3
        a, b = store.runs(), other.runs()
        drop = ["heartbeat_at", "host", "pid", "cancel_requested"]
        pd.testing.assert_frame_equal(a.drop(columns=drop), b.drop(columns=drop))
        ma, mb = store.metrics(), other.metrics()
        pd.testing.assert_frame_equal(ma.drop(columns="id"), mb.drop(columns="id"))
        assert [store.get_run(r)["traceback"] for r in a["run_id"]] == [
            other.get_run(r)["traceback"] for r in a["run_id"]
        ]
    runs, metrics = read_runs_parquet(path)
    assert len(runs) == 3 and len(metrics) == 18
    assert math.isinf(metrics["value"].max())


def test_export_subset(store, tmp_path):
    emitted = _populate(store)
    keep = list(emitted)[:2]
    assert store.export_parquet(tmp_path / "two.parquet", keep) == 2
    runs, metrics = read_runs_parquet(tmp_path / "two.parquet")
    assert runs["run_id"].tolist() == keep
    assert set(metrics["run_id"]) == set(keep) and len(metrics) == 12
    assert expand_runs(runs)["cfg_seed"].tolist() == [0, 1]
    assert expand_runs(runs, {"seed": 1})["run_id"].tolist() == keep[1:]


def test_bad_cached_files_are_skipped_with_a_warning(store, tmp_path):
    _populate(store)
    folder = tmp_path / "cached"
    store.export_parquet(folder / "good.parquet")
    raw = (folder / "good.parquet").read_bytes()
    (folder / "corrupt.parquet").write_bytes(raw[: len(raw) // 2] + b"\0" * 64 + raw[-8:])
    (folder / "text.parquet").write_text("not parquet at all")
    pq.write_table(pa.table({"x": [1, 2]}), folder / "foreign.parquet")
    table = pq.read_table(folder / "good.parquet")
    meta = dict(table.schema.metadata)
    pq.write_table(
        table.replace_schema_metadata({**meta, b"covnoise.schema_version": b"99"}),
        folder / "future.parquet",
    )
    pq.write_table(
        table.set_column(
            table.schema.get_field_index("steps"), "steps", pa.array(["a", "b", "c"])
        ).replace_schema_metadata(meta),
        folder / "wrongtype.parquet",
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        runs, metrics = read_cached_runs(folder)
    messages = [str(w.message) for w in caught]
    for name in ("corrupt", "text", "foreign", "future", "wrongtype"):
        assert sum(f"{name}.parquet" in m for m in messages) == 1, (name, messages)
    assert not any("good.parquet" in m for m in messages)
    assert len(runs) == 3 and set(runs["source"]) == {"good.parquet"} and len(metrics) == 18
    for name in ("foreign", "future", "wrongtype", "text"):
        with pytest.raises(StoreFormatError):
            read_runs_parquet(folder / f"{name}.parquet")


def _export_repeatedly(db: str, target: str, rounds: int, barrier) -> None:
    with RunStore(db) as s:
        barrier.wait()
        for _ in range(rounds):
            assert s.export_parquet(target) == 3


def test_concurrent_exports_to_one_file_all_succeed(store, tmp_path):
    _populate(store)
    target = tmp_path / "cached" / "same.parquet"
    ctx = mp.get_context("spawn")
    n_proc, rounds = 2, 25
    barrier = ctx.Barrier(n_proc)
    args = (str(store.path), str(target), rounds, barrier)
    procs = [ctx.Process(target=_export_repeatedly, args=args) for _ in range(n_proc)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
    assert [p.exitcode for p in procs] == [0] * n_proc  # no writer lost its temporary file
    runs, metrics = read_runs_parquet(target)
    assert len(runs) == 3 and len(metrics) == 18
    assert [f.name for f in target.parent.iterdir()] == ["same.parquet"]  # no temporary left


def test_concurrent_exports_from_threads(store, tmp_path):
    _populate(store)
    target = tmp_path / "threads" / "same.parquet"
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def export() -> None:
        barrier.wait()
        try:
            for _ in range(10):
                store.export_parquet(target)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=export) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert errors == []
    assert len(read_runs_parquet(target)[0]) == 3
    assert [f.name for f in target.parent.iterdir()] == ["same.parquet"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "deep" / "file.bin"
    with atomic_write(target) as f:
        f.write(b"old")
    assert target.read_bytes() == b"old"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # like any new file
    with pytest.raises(RuntimeError), atomic_write(target) as f:
        f.write(b"half")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_empty_cached_folder(tmp_path):
    runs, metrics = read_cached_runs(tmp_path)
    assert runs.empty and metrics.empty and "run_id" in runs.columns


# ---------------------------------------------------------------------- the runs CLI
def test_runs_cli_list_show_export_import_remove(store, tmp_path, capsys):
    from covnoise.cli.main import main

    emitted = _populate(store)
    done, diverged, failed = emitted
    db = str(store.path)
    assert main(["runs", "ls", "--store", db]) == 0
    out = capsys.readouterr().out
    assert all(rid in out for rid in emitted) and "3 runs" in out
    assert main(["runs", "ls", "--store", db, "--status", "failed", "--where", "seed=2"]) == 0
    out = capsys.readouterr().out
    assert failed in out and done not in out
    assert main(["runs", "show", done[:8], "--store", db]) == 0
    out = capsys.readouterr().out
    assert done in out and "train_loss" in out and "seed: 0" in out
    path = tmp_path / "out" / "two.parquet"
    assert main(["runs", "export", "--to", str(path), "--store", db, done, diverged]) == 0
    other = str(tmp_path / "other.sqlite")
    assert main(["runs", "import", str(path), "--store", other]) == 0
    with RunStore(other) as s:
        assert sorted(s.runs()["run_id"]) == sorted([done, diverged])
        assert len(s.metrics()) == 12
    assert main(["runs", "rm", done, "--store", other]) == 0
    with RunStore(other) as s:
        assert s.runs()["run_id"].tolist() == [diverged] and len(s.metrics()) == 6
    capsys.readouterr()
    # bad input: exit 2 and one line naming the field
    queued, _ = store.submit(BASE.replace(seed=50))
    for argv, field in [
        (["runs", "show", "zzzz", "--store", db], "run_id"),
        (["runs", "ls", "--status", "done", "--store", db], "status"),
        (["runs", "ls", "--where", "colour=red", "--store", db], "where"),
        (["runs", "rm", queued, "--store", db], "run_id"),
        (["runs", "import", str(tmp_path / "missing.parquet"), "--store", db], "paths"),
    ]:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {field}"), (argv, err)
    assert main(["runs", "cancel", queued, "--store", db]) == 0
    assert store.status(queued) == "cancelled"


def test_notes_tag_and_hide_any_run_and_older_stores_gain_the_table(tmp_path):
    """Tags and hidden flags live in their own table, for any run id (cached runs too); a
    store made before the table gets it on open, its runs untouched; delete drops notes."""

    from covnoise.runs.schema import NOTES_STATEMENT, SCHEMA_STATEMENTS

    old = tmp_path / "old.sqlite"
    with sqlite3.connect(old) as conn:  # a version-1 store as made before the notes table
        for statement in SCHEMA_STATEMENTS:
            if statement != NOTES_STATEMENT:
                conn.execute(statement)
        conn.execute("PRAGMA user_version=1")
    store = RunStore(old)
    cfg = RunConfig(steps=1)
    rid, _ = store.submit(cfg)
    assert store.set_tags([rid, "cached-id"], ["demo", " class ", "", "demo"]) == 2
    assert store.set_hidden(["cached-id"]) == 1
    assert store.notes() == {
        rid: (("demo", "class"), False),
        "cached-id": (("demo", "class"), True),
    }
    store.set_hidden(["cached-id"], hidden=False)
    store.set_tags([rid], [])
    assert store.notes() == {rid: ((), False), "cached-id": (("demo", "class"), False)}
    assert store.delete([rid]) == 1 and rid not in store.notes()
    store.close()
    with sqlite3.connect(old) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
