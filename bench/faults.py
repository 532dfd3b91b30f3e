"""Load and fault figures of the run store and the engines: nothing lost, failures seen fast.

`python -m bench.faults [--json] [--quick] [--ray]`

Each part uses a scratch store in a temporary folder and the real engines and workers:

- concurrent runs: 16 runs at once in the local engine (16 worker processes on this
  machine), each emitting `EVENTS` metric events of 10 rows as fast as it can. Counted:
  rows in the store against rows emitted, and duplicated (run, step, name) keys.
- killed writer: 4 writer processes append 4,000 events of 10 rows each (160,000 rows) while
  2 reader processes poll, and a fifth process takes SQLite's write lock, writes rows of its
  own without committing and is killed with SIGKILL while holding the lock. Counted: the
  160,000 rows, none of the killed writer's rows, and SQLite's integrity check.
- killed worker: a run's worker process is killed with SIGKILL; the time until the store
  says `failed` (local engine with its default poll interval; with --ray the Ray engine on
  a local two-CPU cluster, where the run function reports its task's process id).
- cancel: `engine.cancel(run)` on a running run; the time until the store says
  `cancelled` and the worker process has exited (local), until the task has ended (Ray).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import signal
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.engine import TINY as ENGINE_TINY
from bench.machine import describe_machine
from covnoise.runs import RunStore
from covnoise.runs.engine import LocalEngine
from covnoise.runs.engine.monitor import pid_alive

N_NAMES = 10
EVENTS = 250  # per concurrent run
WRITER_EVENTS = 4_000  # per writer process
TINY = ENGINE_TINY.replace(steps=EVENTS, eval_every=1)  # only its seed and steps matter


def burst_run(config, emit, should_stop=None, progress=False):
    """Run function: `config.steps` metric events of 10 rows, as fast as the store takes them."""
    for step in range(config.steps):
        emit({"event": "metric", "step": step, "metrics": {f"m{k}": float(k) for k in range(10)}})
    return {"status": "finished"}


def pid_run(config, emit, should_stop=None, progress=False):
    """Run function: reports its process id, then emits a row every 50 ms until stopped."""
    step = 0
    while should_stop is None or not should_stop():
        emit({"event": "metric", "step": step, "metrics": {"pid": float(os.getpid())}})
        step += 1
        time.sleep(0.05)
    return {"status": "cancelled", "message": f"cancelled at step {step}"}


def _wait(cond, timeout: float, poll: float = 0.005) -> float:
    """Seconds until `cond()` holds (raises TimeoutError past `timeout`)."""
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise TimeoutError("condition not reached")
        time.sleep(poll)
    return time.monotonic() - t0


# ---------------------------------------------------------------------- concurrent runs
def concurrent_runs(folder: Path, runs: int = 16, events: int = EVENTS) -> dict[str, Any]:
    """`runs` runs at once through the local engine; rows stored vs emitted."""
    store = RunStore(folder / "concurrent.sqlite")
    configs = [TINY.replace(seed=s, steps=events) for s in range(runs)]
    t = time.perf_counter()
    with LocalEngine(
        store, workers=runs, spares=0, run_fn="bench.faults:burst_run", poll_interval=0.05
    ) as engine:
        ids = engine.submit_many(configs)
        statuses = engine.wait(ids, timeout=900)
    wall = time.perf_counter() - t
    frame = store.metrics(ids)
    dup = int(frame.duplicated(["run_id", "step", "name"]).sum())
    store.close()
    return {
        "runs": runs,
        "finished": sum(s == "finished" for s in statuses.values()),
        "rows_expected": runs * events * N_NAMES,
        "rows_stored": len(frame),
        "duplicates": dup,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------- killed writer
def _rows(step: int) -> list[tuple]:
    return [(step, 0.0, step, 0.0, f"m{k}", float(k)) for k in range(N_NAMES)]


def _writer(path: str, run_id: str, events: int) -> None:
    store = RunStore(path)
    for e in range(events):
        store.add_metrics(run_id, _rows(e))
    store.close()


def _reader(path: str, run_id: str, stop, out) -> None:
    store = RunStore(path)
    reads = 0
    while not stop.is_set():
        store.count_metrics(run_id)
        store.status_counts()
        reads += 1
        time.sleep(0.01)
    store.close()
    out.put(reads)


def _lock_holder(path: str, run_id: str, ready) -> None:
    """Take the write lock, write rows without committing, then wait to be killed."""
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    names = [r[1] for r in conn.execute("PRAGMA table_info(metrics)")]
    row = {"run_id": run_id, "step": 0, "epoch": 0.0, "examples_seen": 0, "wall_time": 0.0}
    row.update(name="killed", value=1.0)
    cols = [c for c in names if c in row]
    conn.execute(
        f"INSERT INTO metrics ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
        [row[c] for c in cols],
    )
    ready.set()
    time.sleep(600)


def killed_writer(folder: Path, writers: int = 4, events: int = WRITER_EVENTS) -> dict[str, Any]:
    """Writers + readers + a writer killed while it holds the write lock."""
    path = folder / "writers.sqlite"
    store = RunStore(path)
    ids = [store.submit(TINY.replace(seed=100 + i))[0] for i in range(writers + 1)]
    store.close()
    ctx = mp.get_context("spawn")
    stop, ready, out = ctx.Event(), ctx.Event(), ctx.Queue()
    holder = ctx.Process(target=_lock_holder, args=(str(path), ids[-1], ready))
    holder.start()
    ready.wait(60)
    readers = [ctx.Process(target=_reader, args=(str(path), ids[0], stop, out)) for _ in range(2)]
    procs = [ctx.Process(target=_writer, args=(str(path), ids[i], events)) for i in range(writers)]
    t = time.perf_counter()
    for p in (*readers, *procs):
        p.start()
    time.sleep(1.0)  # everyone is now waiting on the holder's lock
    os.kill(holder.pid, signal.SIGKILL)
    holder.join()
    for p in procs:
        p.join(600)
    wall = time.perf_counter() - t
    stop.set()
    reads = sum(out.get(timeout=60) for _ in readers)
    for p in readers:
        p.join(60)
    store = RunStore(path)
    frame = store.metrics(ids)
    store.close()
    conn = sqlite3.connect(path)
    check = conn.execute("PRAGMA integrity_check").fetchone()[0]
    conn.close()
    return {
        "writers": writers,
        "rows_expected": writers * events * N_NAMES,
        "rows_stored": int((frame["run_id"] != ids[-1]).sum()),
        "killed_writer_rows": int((frame["run_id"] == ids[-1]).sum()),
        "writer_exit_codes": [p.exitcode for p in procs],
        "reads": reads,
        "integrity": check,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------- killed worker, cancel
def _running_pid(store: RunStore, rid: str, timeout: float = 120) -> int:
    _wait(lambda: store.count_metrics(rid) > 0, timeout, poll=0.02)
    return int(store.metrics([rid]).iloc[0]["value"])


def local_faults(folder: Path, repeats: int) -> dict[str, list[float]]:
    """Seconds from SIGKILL to `failed`, and from cancel to `cancelled` with the process gone."""
    store = RunStore(folder / "local.sqlite")
    out: dict[str, list[float]] = {"killed_worker_failed_s": [], "cancel_stopped_s": []}
    with LocalEngine(store, workers=1, spares=0, run_fn="bench.faults:pid_run") as engine:
        for i in range(repeats):
            rid = engine.submit(TINY.replace(seed=1000 + i))
            pid = _running_pid(store, rid)
            os.kill(pid, signal.SIGKILL)
            t = time.monotonic()
            _wait(lambda rid=rid: store.status(rid) == "failed", 30)
            out["killed_worker_failed_s"].append(time.monotonic() - t)
            rid = engine.submit(TINY.replace(seed=2000 + i))
            pid = _running_pid(store, rid)
            t = time.monotonic()
            engine.cancel(rid)
            _wait(lambda rid=rid: store.status(rid) == "cancelled", 30)
            _wait(lambda pid=pid: not pid_alive(pid), 30)
            out["cancel_stopped_s"].append(time.monotonic() - t)
    store.close()
    return out


def ray_faults(folder: Path, repeats: int) -> dict[str, list[float]]:
    """The same through the Ray engine on a local two-CPU cluster."""
    import ray

    from covnoise.runs.engine.ray_engine import RayEngine

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    store = RunStore(folder / "ray.sqlite")
    out: dict[str, list[float]] = {"ray_killed_worker_failed_s": [], "ray_cancel_stopped_s": []}
    engine = RayEngine(store, run_fn="bench.faults:pid_run")
    try:
        for i in range(repeats):
            rid = engine.submit(TINY.replace(seed=3000 + i))
            pid = _running_pid(store, rid)
            os.kill(pid, signal.SIGKILL)
            t = time.monotonic()
            _wait(lambda rid=rid: store.status(rid) == "failed", 60)
            out["ray_killed_worker_failed_s"].append(time.monotonic() - t)
            rid = engine.submit(TINY.replace(seed=4000 + i))
            _running_pid(store, rid)
            t = time.monotonic()
            engine.cancel(rid)
            _wait(lambda rid=rid: store.status(rid) == "cancelled", 60)
            _wait(lambda rid=rid: rid not in engine.in_flight(), 60)
            out["ray_cancel_stopped_s"].append(time.monotonic() - t)
    finally:
        engine.close()
        store.close()
        ray.shutdown()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--quick", action="store_true", help="fewer runs, rows and repeats")
    parser.add_argument("--ray", action="store_true", help="also the Ray engine's faults")
    args = parser.parse_args(argv)
    runs, events, repeats = (4, 50, 2) if args.quick else (16, EVENTS, 5)
    writer_events = 400 if args.quick else WRITER_EVENTS
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result: dict[str, Any] = {"machine": describe_machine()}
        result["concurrent"] = concurrent_runs(folder, runs, events)
        result["killed_writer"] = killed_writer(folder, 4, writer_events)
        timings = local_faults(folder, repeats)
        if args.ray:
            timings.update(ray_faults(folder, repeats))
    result["timings"] = {
        k: {"median": statistics.median(v), "max": max(v), "n": len(v)} for k, v in timings.items()
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    _print_table(result)
    return 0


def _print_table(r: dict[str, Any]) -> None:
    c, w = r["concurrent"], r["killed_writer"]
    print(f"machine: {r['machine']}\n")
    print("| measure | result |\n| --- | --- |")
    print(
        f"| {c['runs']} concurrent runs (local engine, one worker each) | "
        f"{c['rows_stored']:,}/{c['rows_expected']:,} rows, {c['duplicates']} duplicated, "
        f"{c['finished']}/{c['runs']} finished, {c['wall_s']:.0f} s |"
    )
    print(
        f"| {w['writers']} writers + 2 readers + a writer killed holding the lock | "
        f"{w['rows_stored']:,}/{w['rows_expected']:,} rows, {w['killed_writer_rows']} rows of "
        f"the killed writer, integrity {w['integrity']}, {w['reads']} reads, "
        f"{w['wall_s']:.1f} s |"
    )
    labels = {
        "killed_worker_failed_s": "worker killed (SIGKILL) → run `failed`, local engine",
        "cancel_stopped_s": "cancel → run `cancelled` and worker exited, local engine",
        "ray_killed_worker_failed_s": "task process killed (SIGKILL) → run `failed`, Ray",
        "ray_cancel_stopped_s": "cancel → run `cancelled` and task ended, Ray",
    }
    for key, t in r["timings"].items():
        print(f"| {labels[key]} | median {t['median']:.2f} s, max {t['max']:.2f} s (n={t['n']}) |")


if __name__ == "__main__":
    raise SystemExit(main())
