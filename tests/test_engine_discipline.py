"""A restarted engine counts the workers a crashed engine left running against its limit.

The driver (an engine in its own interpreter) is SIGKILLed while two long runs go; its
workers run on as orphans. A new engine with the same `workers` on the same store adopts
them, so the machine never has more than `workers` worker processes of that store, sampled
with psutil the whole time. The run function only sleeps (no torch), so the test is quick.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from covnoise.config import RunConfig
from covnoise.runs import RunStore
from covnoise.runs.engine import LocalEngine
from covnoise.runs.engine.process import WORKER_MODULE, kill_worker_of

ROOT = Path(__file__).resolve().parents[1]
RUN_FN = "tests.test_engine_discipline.sleepy_run"
BASE = RunConfig(dataset="digits", model="mlp", width=16, depth=2, batch_size=64, small_batch=16)


def sleepy_run(config, emit, should_stop=None, progress=False):
    """Sleep `steps / 100` seconds (stopping early when asked); one metric row."""
    emit({"event": "metric", "step": 0, "metrics": {"slept": 0.0}})
    deadline = time.monotonic() + config.steps / 100
    while time.monotonic() < deadline:
        if should_stop is not None and should_stop():
            return {"status": "cancelled"}
        time.sleep(0.05)
    return {"status": "finished"}


def _config(seed: int, seconds: float) -> RunConfig:
    return BASE.replace(seed=seed, steps=int(seconds * 100), epochs=None)


def _store_workers(store_path: Path) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmd = proc.info["cmdline"] or []
        if proc.info["status"] == psutil.STATUS_ZOMBIE:
            continue
        if WORKER_MODULE in cmd and str(store_path) in cmd:
            pids.append(proc.pid)
    return pids


class _Sampler(threading.Thread):
    """Counts this store's worker processes every 20 ms; keeps the largest count."""

    def __init__(self, store_path: Path) -> None:
        super().__init__(daemon=True)
        self.store_path, self.most, self.samples = store_path, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.most = max(self.most, len(_store_workers(self.store_path)))
            self.samples += 1
            time.sleep(0.02)


DRIVER = """
import sys, time
from covnoise.runs import RunStore
from covnoise.runs.engine import LocalEngine
store = RunStore(sys.argv[1])
engine = LocalEngine(store, workers=2, run_fn=sys.argv[2], spares=0, threads=1, gpus=0,
                     poll_interval=0.05)
print("started", flush=True)
time.sleep(600)
"""


def _wait(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"condition not met within {timeout} s")


def test_a_restarted_engine_adopts_the_crashed_engines_workers(tmp_path):
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    orphans = [store.submit(_config(seed, 8.0))[0] for seed in (1, 2)]
    sampler = _Sampler(path)
    sampler.start()
    driver = subprocess.Popen(
        [sys.executable, "-c", DRIVER, str(path), RUN_FN], cwd=ROOT, stdout=subprocess.PIPE
    )
    engine = None
    try:
        _wait(lambda: set(store.statuses(orphans).values()) == {"running"}, 60)
        _wait(lambda: all(r["pid"] for r in store.active_runs()), 30)
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=10)
        assert set(store.statuses(orphans).values()) == {"running"}  # the orphans run on

        engine = LocalEngine(
            store, workers=2, run_fn=RUN_FN, spares=0, threads=1, gpus=0, poll_interval=0.05
        )
        late = engine.submit_many([_config(seed, 0.5) for seed in (3, 4, 5)])
        _wait(lambda: engine.info()["adopted"] == 2, 10)
        time.sleep(1.0)  # well inside the orphans' 8 s: the late runs must still wait
        assert set(store.statuses(late).values()) == {"queued"}
        final = engine.wait(orphans + late, timeout=90)
        assert set(final.values()) == {"finished"}, final
        assert engine.info()["adopted"] == 0
    finally:
        sampler.done.set()
        sampler.join(timeout=5)
        if engine is not None:
            engine.close()
        if driver.poll() is None:
            driver.kill()
            driver.wait()
        for pid in _store_workers(path):
            kill_worker_of(pid, path)
        store.close()
    assert sampler.samples > 50
    assert sampler.most == 2, f"{sampler.most} worker processes of the store ran at once"


def test_a_detached_worker_counts_against_a_new_engine_in_the_same_process(tmp_path):
    path = tmp_path / "runs.sqlite"
    store = RunStore(path)
    opts = dict(run_fn=RUN_FN, spares=0, threads=1, gpus=0, poll_interval=0.05)
    first = LocalEngine(store, workers=1, **opts)
    engine = None
    try:
        (old,) = first.submit_many([_config(1, 4.0)])
        _wait(lambda: store.active_runs() and store.active_runs()[0]["pid"], 30)
        first.close(cancel_running=False)  # the run goes on in its worker
        engine = LocalEngine(store, workers=1, **opts)
        (new,) = engine.submit_many([_config(2, 0.3)])
        _wait(lambda: engine.info()["adopted"] == 1, 10)
        assert store.status(new) == "queued"
        assert store.status(old) == "running"
        final = engine.wait([old, new], timeout=60)
        assert final == {old: "finished", new: "finished"}
        old_run, new_run = store.get_run(old), store.get_run(new)
        assert new_run["started_at"] >= old_run["ended_at"]
    finally:
        if engine is not None:
            engine.close()
        for pid in _store_workers(path):
            kill_worker_of(pid, path)
        store.close()
