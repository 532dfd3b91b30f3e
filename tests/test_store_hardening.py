"""The run store and its files from the command line, fed bad input: every bad store, file and
target ends in exit 2 and one line, the store stays byte for byte as it was, imports never hand
work to an engine, stored text cannot drive the terminal, and oversized files are refused from
their footer before any data is read."""

from __future__ import annotations

import hashlib
import shutil
import socket
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from covnoise.cli.main import main
from covnoise.config import RunConfig
from covnoise.runs import RunStore, StoreFormatError, read_runs_parquet, write_runs_parquet
from covnoise.runs.database import StoreError
from covnoise.runs.parquet import (
    PARQUET_SCHEMA_VERSION,
    FileTooLargeError,
    ReadLimits,
    parquet_schema,
)
from covnoise.runs.store import ImportRefusedError

ROOT = Path(__file__).resolve().parents[1]
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


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _finished_store(path: Path, runs: int = 3, rows: int = 30) -> list[str]:
    """A store at `path` holding `runs` finished runs of `rows` metric rows each."""
    ids = []
    with RunStore(path) as store:
        for seed in range(runs):
            rid, _ = store.submit(BASE.replace(seed=seed, name=f"run{seed}"))
            store.claim_next("local", "test")
            store.add_metrics(
                rid,
                [(s, s / 10, 64 * s, 0.1 * s, "train_loss", 1.0 / (s + 1)) for s in range(rows)],
            )
            store.finish(rid, "finished", summary={"steps": rows, "final": {"test_acc": 0.5}})
            ids.append(rid)
    return ids


def _run_file(path: Path, status: str, *, seed: int = 7, name: str = "imported", **extra) -> str:
    """A runs file of one run with `status` and three metric rows; returns its id."""
    cfg = BASE.replace(seed=seed, name=name)
    rid = cfg.run_id()
    runs = pd.DataFrame(
        [
            {
                "run_id": rid,
                "name": name,
                "config": cfg.to_json(),
                "status": status,
                "engine": "local",
                "submitted_at": 1.0,
                **extra,
            }
        ]
    )
    metrics = pd.DataFrame(
        {
            "run_id": [rid] * 3,
            "step": [0, 5, 10],
            "epoch": [0.0, 0.5, 1.0],
            "examples_seen": [0, 320, 640],
            "wall_time": [0.0, 0.1, 0.2],
            "name": ["train_loss"] * 3,
            "value": [123.0, 456.0, 789.0],
        }
    )
    write_runs_parquet(path, runs, metrics)
    return rid


def _one_error_line(capsys, starts: str) -> str:
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1, captured.err
    assert err[0].startswith(f"error: {starts}"), err
    assert "Traceback" not in captured.err + captured.out
    return err[0]


# ---------------------------------------------------------------------- bad store files
def _bad_store(kind: str, tmp_path: Path) -> str:
    """A --store argument of the given kind of bad."""
    real = tmp_path / "real.sqlite"
    _finished_store(real)
    target = tmp_path / f"{kind}.sqlite"
    if kind == "text":
        target.write_text("these are my notes, not a database\n")
    elif kind == "truncated":
        target.write_bytes(real.read_bytes()[: real.stat().st_size // 3])
    elif kind == "short":
        target.write_bytes(real.read_bytes()[:10])
    elif kind == "garbage":
        data = real.read_bytes()
        rng = np.random.default_rng(0)
        target.write_bytes(data[:16] + rng.bytes(len(data) - 16))
    elif kind == "folder":
        target.mkdir()
    elif kind == "empty-path":
        return ""
    elif kind == "under-a-file":
        (tmp_path / "plain").write_text("x")
        return str(tmp_path / "plain" / "sub" / "runs.sqlite")
    elif kind == "newer":
        shutil.copy(real, target)
        with sqlite3.connect(target) as conn:
            conn.execute("PRAGMA user_version=99")
        conn.close()
    elif kind == "foreign":
        with sqlite3.connect(target) as conn:
            conn.execute("CREATE TABLE notes (text TEXT)")
            conn.execute("INSERT INTO notes VALUES ('mine')")
        conn.close()
    return str(target)


BAD_STORES = ["text", "truncated", "short", "garbage", "folder", "empty-path", "under-a-file"]


@pytest.mark.parametrize("kind", [*BAD_STORES, "newer", "foreign"])
def test_every_bad_store_is_one_line_and_left_alone(kind, tmp_path, capsys):
    store = _bad_store(kind, tmp_path)
    good = tmp_path / "good.parquet"
    _run_file(good, "finished")
    before = _digest(Path(store)) if store and Path(store).is_file() else None
    capsys.readouterr()
    for argv in (
        ["runs", "ls"],
        ["runs", "show", "abc"],
        ["runs", "import", str(good)],
        ["runs", "export", "--to", str(tmp_path / "out.parquet")],
        ["runs", "rm", "abc"],
        ["runs", "cancel", "abc"],
    ):
        assert main([*argv, "--store", store]) == 2, (kind, argv)
        line = _one_error_line(capsys, "store")
        if kind == "newer":
            assert "newer covnoise" in line
        if before is not None:
            assert _digest(Path(store)) == before, (kind, argv)
    assert not (tmp_path / "out.parquet").exists()


def test_the_library_raises_store_error(tmp_path):
    with pytest.raises(StoreError, match="newer covnoise"):
        RunStore(_bad_store("newer", tmp_path))
    with pytest.raises(StoreError, match="empty"):
        RunStore("")


def test_damaged_pages_are_found_by_quick_check(tmp_path, capsys):
    real = tmp_path / "real.sqlite"
    _finished_store(real, runs=4, rows=3000)
    damaged = tmp_path / "damaged.sqlite"
    data = bytearray(real.read_bytes())
    page = 4096
    middle = (len(data) // page // 2) * page
    data[middle : middle + page] = b"\xa5" * page
    damaged.write_bytes(bytes(data))
    before = _digest(damaged)
    for argv in (["runs", "ls"], ["runs", "show", "a"]):
        assert main([*argv, "--store", str(damaged)]) == 2
        line = _one_error_line(capsys, "store")
        assert "damaged" in line and "quick_check" in line
        assert _digest(damaged) == before
    # the undamaged original still lists
    assert main(["runs", "ls", "--store", str(real)]) == 0


# ---------------------------------------------------------------------- export targets
@pytest.mark.parametrize("kind", ["under-a-file", "folder", "empty", "the-store"])
def test_export_to_an_impossible_path(kind, tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    _finished_store(store)
    (tmp_path / "plain").write_text("x")
    (tmp_path / "dir").mkdir()
    to = {
        "under-a-file": str(tmp_path / "plain" / "out.parquet"),
        "folder": str(tmp_path / "dir"),
        "empty": "",
        "the-store": str(store),
    }[kind]
    before = _digest(store)
    capsys.readouterr()
    assert main(["runs", "export", "--to", to, "--store", str(store)]) == 2
    _one_error_line(capsys, "to")
    assert _digest(store) == before
    assert list((tmp_path / "dir").iterdir()) == []


def test_an_export_that_import_would_refuse_is_not_written(tmp_path, capsys, monkeypatch):
    """Export and import share their caps: what export writes, import reads back."""
    import covnoise.runs.store as store_module
    from covnoise.runs.parquet import ReadLimits

    store = tmp_path / "runs.sqlite"
    ids = _finished_store(store, runs=3, rows=30)  # 90 metric rows
    small = ReadLimits(max_metric_rows=60)
    monkeypatch.setattr(store_module, "DEFAULT_LIMITS", small)
    to = tmp_path / "all.parquet"
    capsys.readouterr()
    assert main(["runs", "export", "--to", str(to), "--store", str(store)]) == 2
    line = _one_error_line(capsys, "to")
    assert "90 metric rows" in line and "60" in line
    assert not to.exists()
    # two runs (60 rows) fit, and read back under the same caps
    assert main(["runs", "export", "--to", str(to), "--store", str(store), *ids[:2]]) == 0
    runs, metrics = read_runs_parquet(to, small)
    assert sorted(runs["run_id"]) == sorted(ids[:2]) and len(metrics) == 60


# ---------------------------------------------------------------------- imports are records
@pytest.mark.parametrize("status", ["queued", "running"])
def test_importing_queued_or_running_runs_is_refused_and_nothing_runs(status, tmp_path, capsys):
    from covnoise.runs.engine import LocalEngine

    store = tmp_path / "runs.sqlite"
    _finished_store(store, runs=1)
    path = tmp_path / "work.parquet"
    rid = _run_file(path, status)
    before = _digest(store)
    capsys.readouterr()
    for extra in ([], ["--replace"]):
        assert main(["runs", "import", str(path), "--store", str(store), *extra]) == 2
        line = _one_error_line(capsys, "paths")
        assert rid in line and repr(status) in line
        assert _digest(store) == before
    with RunStore(store) as s, pytest.raises(StoreFormatError, match=status):
        s.import_parquet(path)
    with LocalEngine(store, workers=1, spares=0, poll_interval=0.05):
        time.sleep(1.0)
    with RunStore(store) as s:
        assert s.status(rid) is None
        assert s.status_counts() == {"finished": 1}
        assert s.count_metrics(rid) == 0


def test_an_import_never_touches_a_run_the_store_holds_as_queued(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    with RunStore(store) as s:
        rid, queued = s.submit(BASE.replace(seed=7, name="imported"))
    assert queued
    path = tmp_path / "done.parquet"
    assert _run_file(path, "finished") == rid
    before = _digest(store)
    capsys.readouterr()
    for extra in ([], ["--replace"]):
        assert main(["runs", "import", str(path), "--store", str(store), *extra]) == 2
        line = _one_error_line(capsys, "paths")
        assert rid in line and "queued" in line
        assert _digest(store) == before
    runs, metrics = read_runs_parquet(path)
    with RunStore(store) as s:
        with pytest.raises(ImportRefusedError):
            s.import_frames(runs, metrics, replace=True)
        assert s.status(rid) == "queued" and s.count_metrics(rid) == 0


def test_finished_runs_still_import(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    path = tmp_path / "done.parquet"
    rid = _run_file(path, "cancelled")
    assert main(["runs", "import", str(path), "--store", str(store)]) == 0
    with RunStore(store) as s:
        assert s.status(rid) == "cancelled" and s.count_metrics(rid) == 3


# ---------------------------------------------------------------------- what is printed
def test_control_characters_are_escaped_when_printed(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    path = tmp_path / "evil.parquet"
    evil = "\x1b]0;owned\x07name\x1b[2J\x9b31m\x7f\x00"
    rid = _run_file(
        path, "failed", name=evil, message=f"boom {evil}", device=evil, traceback=f"tb {evil}\nx"
    )
    assert main(["runs", "import", str(path), "--store", str(store)]) == 0
    capsys.readouterr()
    for argv in (["runs", "show", rid[:8], "--traceback"], ["runs", "ls"]):
        assert main([*argv, "--store", str(store)]) == 0
        out = capsys.readouterr().out
        assert not any(ch in out for ch in "\x1b\x07\x9b\x7f\x00"), argv
    assert main(["runs", "show", rid[:8], "--traceback", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "\\x1b]0;owned\\x07name\\x1b[2J\\x9b31m\\x7f\\x00" in out
    assert "tb " in out and "\nx\n" in out  # the traceback keeps its lines


def test_running_runs_whose_process_is_gone_are_marked(tmp_path, capsys):
    store = tmp_path / "runs.sqlite"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    with RunStore(store) as s:
        gone, _ = s.submit(BASE.replace(seed=1))
        alive, _ = s.submit(BASE.replace(seed=2))
        s.claim_next("local", "test")
        s.claim_next("local", "test")
        s.set_worker(gone, dead.pid, socket.gethostname())
        s.set_worker(alive, __import__("os").getpid(), socket.gethostname())
    before = _digest(store)
    capsys.readouterr()
    assert main(["runs", "show", gone[:8], "--store", str(store)]) == 0
    assert "status: running (process gone)" in capsys.readouterr().out
    assert main(["runs", "show", alive[:8], "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert "status: running" in out and "gone" not in out
    assert main(["runs", "ls", "--store", str(store)]) == 0
    out = capsys.readouterr().out
    assert out.count("running (process gone)") == 2  # the row and the summary line
    assert _digest(store) == before
    with RunStore(store) as s:
        assert s.status(gone) == "running"


# ---------------------------------------------------------------------- oversized files
def _constant_rows_file(path: Path, runs: int = 100, per_run: int = 100_000) -> None:
    """A runs file of runs × per_run constant metric rows, written one run per row group so
    that building it takes little memory (10 M rows by default; a few hundred KB on disk)."""
    schema = parquet_schema().with_metadata(
        {
            b"covnoise.schema_version": str(PARQUET_SCHEMA_VERSION).encode(),
            b"covnoise.kind": b"runs",
        }
    )
    vt = schema.field("metrics").type.value_type
    zero = {pa.int64(): 0, pa.float64(): 0.0, pa.string(): "loss"}
    struct = pa.StructArray.from_arrays(
        [pa.repeat(pa.scalar(zero[f.type], f.type), per_run) for f in vt], fields=list(vt)
    )
    metrics = pa.ListArray.from_arrays(pa.array([0, per_run], pa.int32()), struct)
    fixed = {"status": "finished", "config": "{}", "engine": "local", "submitted_at": 0.0}
    with pq.ParquetWriter(path, schema) as writer:
        for i in range(runs):
            cols = {}
            for f in schema:
                if f.name == "metrics":
                    cols[f.name] = metrics
                elif f.name == "run_id":
                    cols[f.name] = pa.array([f"run{i:04d}"], f.type)
                elif f.name in fixed:
                    cols[f.name] = pa.array([fixed[f.name]], f.type)
                else:
                    cols[f.name] = pa.nulls(1, f.type)
            writer.write_table(pa.table(cols, schema=schema))


def test_ten_million_constant_rows_are_refused_in_little_time_and_memory(tmp_path):
    path = tmp_path / "big.parquet"
    _constant_rows_file(path)
    assert path.stat().st_size < 2 * 2**20
    limit = 1 * 2**30
    code = textwrap.dedent(
        f"""
        import resource, sys, time
        resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
        from covnoise.runs.parquet import FileTooLargeError, read_runs_parquet
        t = time.perf_counter()
        try:
            read_runs_parquet(sys.argv[1])
        except FileTooLargeError as exc:
            print("refused", time.perf_counter() - t, exc)
        else:
            print("read it")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    word, seconds, *message = proc.stdout.split()
    assert word == "refused" and float(seconds) < 2.0
    assert "10,000,000 metric rows" in " ".join(message) and "cap" in " ".join(message)


def test_oversized_files_are_refused_by_import_and_upload(tmp_path, capsys):
    from covnoise.ui import runsdata

    path = tmp_path / "big.parquet"
    _constant_rows_file(path, runs=30)  # 3 M rows: over the upload cap, under the CLI's
    store = tmp_path / "runs.sqlite"
    _finished_store(store, runs=1)
    before = _digest(store)
    with pytest.raises(FileTooLargeError, match="2,000,000"):
        runsdata.read_upload("big.parquet", path.read_bytes())
    small = ReadLimits(max_metric_rows=1000)
    with RunStore(store) as s, pytest.raises(FileTooLargeError, match="cap is 1,000"):
        s.import_parquet(path, limits=small)
    _constant_rows_file(path, runs=60)  # 6 M rows: over the CLI's cap too
    capsys.readouterr()
    assert main(["runs", "import", str(path), "--store", str(store)]) == 2
    line = _one_error_line(capsys, "paths")
    assert "6,000,000 metric rows" in line and "cap" in line
    assert _digest(store) == before


def test_uploads_are_capped_per_session(tmp_path, monkeypatch):
    from covnoise.ui import runsdata

    path = tmp_path / "one.parquet"
    _run_file(path, "finished")
    data = path.read_bytes()
    monkeypatch.setattr(runsdata, "SESSION_MAX_BYTES", int(2.5 * len(data)))
    held = runsdata.uploads()
    held.clear()
    for name in ("a.parquet", "b.parquet"):
        held[name] = runsdata.read_upload(name, data)
    with pytest.raises(FileTooLargeError, match="per session"):
        runsdata.read_upload("c.parquet", data)
    del held["a.parquet"]  # a released upload frees its share
    held["c.parquet"] = runsdata.read_upload("c.parquet", data)
    assert held["c.parquet"][0]["source"].tolist() == ["upload: c.parquet"]
    held.clear()
