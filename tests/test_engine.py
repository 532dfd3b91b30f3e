"""The local engine running the real covnoise.core.train.run in worker processes.

Reference values come from calling run() in this process with the same config and the same
number of torch threads as a worker, so every metric row a run emitted can be counted and
compared one by one with what the store holds.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from covnoise.config import ConfigError, RunConfig
from covnoise.core.train import run
from covnoise.runs import RunStore
from covnoise.runs.engine import LocalEngine, expand_grid
from covnoise.runs.engine.monitor import pid_alive
from covnoise.runs.engine.process import is_worker_of, kill_worker_of, spawn_worker
from tests.helpers import TINY_RUN
from tests.helpers import wait_for as _wait_for

TINY = TINY_RUN
LONG = TINY.replace(steps=200_000, eval_every=20)


def stubborn_run(config, emit, should_stop=None, progress=False):
    """A run function that never looks at should_stop (for the engine's kill path); it
    reports whether the worker imported streamlit and how many torch threads it has."""
    emit(
        {
            "event": "metric",
            "step": 0,
            "metrics": {
                "streamlit": float("streamlit" in sys.modules),
                "threads": torch.get_num_threads(),
            },
        }
    )
    time.sleep(600)
    return {"status": "finished"}


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def _reference_rows(config: RunConfig, threads: int) -> list[tuple]:
    """(step, epoch, examples_seen, name, value) rows of an in-process run."""
    events: list[dict] = []
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        run(config, emit=events.append)
    finally:
        torch.set_num_threads(before)
    return [
        (e["step"], e["epoch"], e["examples_seen"], k, v)
        for e in events
        if e["event"] == "metric"
        for k, v in e["metrics"].items()
    ]


@pytest.mark.slow
def test_eight_parallel_runs_store_every_metric_row(store):
    noises = itertools.cycle(["none", "isotropic", "diag", "full"])
    configs = [TINY.replace(seed=s, noise=n) for s, n in zip(range(8), noises, strict=False)]
    with LocalEngine(store, workers=8, spares=0, poll_interval=0.05) as engine:
        assert engine.threads == max(1, (os.cpu_count() or 1) // 8)
        ids = engine.submit_many(configs)
        assert len(ids) == 8
        # all eight run at the same time (each worker needs seconds just to start)
        _wait_for(lambda: store.status_counts().get("running", 0) == 8, 60, poll=0.01)
        _wait_for(lambda: engine.info()["busy"] == 8, 30)
        statuses = engine.wait(ids, timeout=300)
        assert engine.last_error is None
    assert statuses == dict.fromkeys(ids, "finished")
    for cfg, rid in zip(configs, ids, strict=True):
        rec = store.get_run(rid)
        assert rec["message"] is None and rec["device"].startswith("cpu")
        assert rec["code_revision"] and rec["versions"]["torch"] == torch.__version__
        got = store.metrics([rid])
        want = _reference_rows(cfg, engine.threads)
        assert len(got) == len(want) > 0  # every row the run emitted, none twice
        assert list(zip(got["step"], got["examples_seen"], got["name"], strict=True)) == [
            (s, n, k) for s, _, n, k, _ in want
        ]
        np.testing.assert_allclose(got["epoch"].to_numpy(), [w[1] for w in want], rtol=1e-12)
        # same computation and thread count: only last-bit differences are allowed
        np.testing.assert_allclose(
            got["value"].to_numpy(), [w[4] for w in want], rtol=1e-6, atol=1e-9
        )
    # a finished config is returned as is, not run again
    with LocalEngine(store, workers=1, spares=0) as engine:
        n = store.count_metrics(ids[0])
        assert engine.submit(configs[0]) == ids[0]
        assert store.status(ids[0]) == "finished" and store.count_metrics(ids[0]) == n


def test_sigkill_marks_run_failed_within_ten_seconds_and_others_finish(store):
    with LocalEngine(store, workers=2, spares=0, poll_interval=0.1) as engine:
        victim = engine.submit(LONG.replace(seed=1))
        other = engine.submit(TINY.replace(seed=2, steps=600, eval_every=200))
        _wait_for(lambda: store.count_metrics(victim) and store.count_metrics(other), 120)
        pid = store.get_run(victim)["pid"]
        assert pid == engine.worker_pid(victim) and pid_alive(pid)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        _wait_for(lambda: store.status(victim) == "failed", 10.0, poll=0.02)
        assert time.monotonic() - killed <= 10.0
        assert "signal 9" in store.get_run(victim)["message"]
        assert engine.wait([other], timeout=180) == {other: "finished"}
        assert engine.last_error is None
    # the store is still readable and the other run is complete
    assert store.runs()["status"].tolist() == ["failed", "finished"]
    assert store.get_run(other)["steps"] == 600
    assert store.metrics([other])["step"].unique().tolist() == [0, 200, 400, 600]
    assert store.count_metrics(victim) > 0


def test_cancel_stops_the_run_and_its_process(store):
    with LocalEngine(store, workers=1, poll_interval=0.05) as engine:
        rid = engine.submit(LONG.replace(seed=5))
        _wait_for(lambda: store.count_metrics(rid) > 0, 120)
        pid = engine.worker_pid(rid)
        assert pid is not None and pid_alive(pid)
        # the single worker is busy: a second run waits in the queue and is cancelled there
        queued = engine.submit(LONG.replace(seed=6))
        info = engine.info()
        assert info["busy"] == 1 and info["runs"] == {"running": 1, "queued": 1}
        assert engine.cancel(queued) == "cancelled"
        assert engine.cancel(rid) == "running"
        _wait_for(lambda: store.status(rid) == "cancelled", 30)
        _wait_for(lambda: not pid_alive(pid), 10)
        rec = store.get_run(rid)
        assert rec["message"].startswith("cancelled at step")  # it stopped by itself
        assert 0 < rec["steps"] < LONG.steps
        n = store.count_metrics(rid)
        time.sleep(0.5)
        assert store.count_metrics(rid) == n  # nothing is written after the stop
        assert store.status(queued) == "cancelled" and store.count_metrics(queued) == 0
        assert engine.worker_pid(queued) is None
        # once a core is free a warm spare waits, and the next run goes to it
        _wait_for(lambda: engine.info()["warm_spares"] == 1, 30)
        spare = engine._idle[0].popen.pid
        nxt = engine.submit(TINY.replace(seed=8))
        assert engine.wait([nxt], timeout=120) == {nxt: "finished"}
        assert store.get_run(nxt)["pid"] == spare


def test_a_worker_that_ignores_cancel_is_killed(store):
    import streamlit  # noqa: F401 - the app's process has it; its workers must not

    run_fn = "tests.test_engine:stubborn_run"
    with LocalEngine(store, workers=2, run_fn=run_fn, spares=0, cancel_grace=1.0) as engine:
        rid = engine.submit(TINY.replace(seed=7))
        _wait_for(lambda: store.count_metrics(rid) > 0, 60)
        m = store.metrics([rid]).set_index("name")["value"]
        assert m["streamlit"] == 0.0 and m["threads"] == engine.threads == 1
        pid = engine.worker_pid(rid)
        engine.cancel(rid)
        _wait_for(lambda: store.status(rid) == "cancelled", 15)
        assert not pid_alive(pid)
        assert "worker was stopped" in store.get_run(rid)["message"]


@pytest.mark.slow
def test_queued_runs_survive_a_restart_and_lost_workers_are_noticed(store):
    # an engine closed without cancelling leaves its worker to finish the run by itself
    engine = LocalEngine(store, workers=1, spares=0)
    detached = engine.submit(TINY.replace(seed=14, steps=300, eval_every=100))
    _wait_for(lambda: store.count_metrics(detached) > 0, 120)
    engine.close(cancel_running=False)
    assert engine.info()["monitor_alive"] is False
    # claimed by an engine that died before starting a worker: requeued after stale_after
    orphan, _ = store.submit(TINY.replace(seed=12))
    assert store.claim_next("local", "a-dead-engine")[0] == orphan
    # running in a worker process that is gone
    lost, _ = store.submit(TINY.replace(seed=13))
    assert store.claim_next("local", "a-dead-engine")[0] == lost
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.set_worker(lost, dead.pid)
    with RunStore(store.path) as raw:  # its last heartbeat was a while ago
        raw._write(lambda c: c.execute("UPDATE runs SET heartbeat_at=heartbeat_at-60"))
    # submitted while no engine runs (an app or CLI that stopped): the next engine runs them
    queued = [store.submit(TINY.replace(seed=10))[0]]
    with LocalEngine(store, workers=2, spares=0, stale_after=2.0) as engine:
        _wait_for(lambda: store.status(lost) == "failed", 10)
        assert "is gone" in store.get_run(lost)["message"]
        assert engine.wait([*queued, orphan], timeout=180) == dict.fromkeys(
            [*queued, orphan], "finished"
        )
        assert engine.wait([detached], timeout=120) == {detached: "finished"}
    assert store.metrics([detached])["step"].unique().tolist() == [0, 100, 200, 300]


def test_bad_run_function_fails_with_a_message(store):
    with LocalEngine(store, workers=1, run_fn="covnoise.no_such_module.run", spares=0) as engine:
        rid = engine.submit(TINY)
        assert engine.wait([rid], timeout=60) == {rid: "failed"}
    assert "no_such_module" in store.get_run(rid)["message"]


def test_process_checks_tell_zombies_and_strangers_apart(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert pid_alive(proc.pid)
        # alive, but not a worker of this store: never killed
        assert not is_worker_of(proc.pid, tmp_path / "runs.sqlite")
        assert not kill_worker_of(proc.pid, tmp_path / "runs.sqlite")
        assert proc.poll() is None
    finally:
        proc.kill()
    _wait_for(lambda: not pid_alive(proc.pid), 10)  # a zombie until reaped counts as gone
    assert proc.poll() is not None
    assert not pid_alive(proc.pid) and not is_worker_of(proc.pid, tmp_path / "runs.sqlite")


def test_a_worker_is_recognised_by_its_store(tmp_path):
    store_path = tmp_path / "runs.sqlite"
    w = spawn_worker(sys.executable, store_path, "covnoise.no_such_module.run", 1)
    try:
        _wait_for(lambda: is_worker_of(w.popen.pid, store_path), 30)
        assert not is_worker_of(w.popen.pid, tmp_path / "other.sqlite")
        assert kill_worker_of(w.popen.pid, store_path)
        assert w.popen.wait(timeout=10) == -signal.SIGKILL
    finally:
        if w.popen.poll() is None:
            w.stop()
        w.close()


def test_sweep_grid_expansion():
    base = TINY.replace(small_batch=8)
    grid = dict(
        batch_sizes=[32, 64],
        noises=["none", "diag", "full"],
        noise_scales=[0.5, 1.0],
        lrs=[0.1, 0.2],
        seeds=[0, 1, 2],
    )
    configs = expand_grid(base, **grid)
    # noise "none" ignores the multiplier: 2 bs × (1 + 2·2) noise/scale × 2 lr × 3 seeds
    assert len(configs) == 2 * (1 + 2 * 2) * 2 * 3
    assert len({c.run_id() for c in configs}) == len(configs)
    combos = {(c.batch_size, c.noise, c.noise_scale, c.lr, c.seed) for c in configs}
    for bs, n, s, lr, seed in itertools.product(*grid.values()):
        assert (bs, n, base.noise_scale if n == "none" else s, lr, seed) in combos
    assert all(c.width == 16 and c.steps == 30 for c in configs)
    assert expand_grid(base) == [base]
    with pytest.raises(ConfigError) as err:
        expand_grid(base, batch_sizes=[4], noises=["full"])
    assert err.value.field == "small_batch"
    with pytest.raises(ConfigError) as err:
        expand_grid(base, noises=["fancy"])
    assert err.value.field == "noise"


@pytest.mark.slow
def test_sweep_command_runs_the_grid_and_exports_it(tmp_path, capsys):
    from covnoise.cli.main import main
    from covnoise.runs import read_runs_parquet

    db, out = str(tmp_path / "runs.sqlite"), tmp_path / "cached_runs" / "grid.parquet"
    flags = [
        "--dataset",
        "digits",
        "--width",
        "16",
        "--depth",
        "2",
        "--batch-size",
        "64",
        "--small-batch",
        "16",
        "--steps",
        "20",
        "--eval-every",
        "10",
        "--sharpness-every",
        "0",
    ]
    argv = [
        "sweep",
        *flags,
        "--noises",
        "none,full",
        "--workers",
        "2",
        "--store",
        db,
        "--export",
        str(out),
        "--no-progress",
    ]
    assert main(argv) == 0
    assert "2 runs: 2 finished" in capsys.readouterr().out
    runs, metrics = read_runs_parquet(out)
    want = expand_grid(TINY.replace(steps=20, eval_every=10), noises=["none", "full"])
    assert sorted(runs["run_id"]) == sorted(c.run_id() for c in want)
    with RunStore(db) as s:
        assert len(metrics) == s.count_metrics() > 0
    # bad grid values: exit 2, one line naming the field, nothing queued
    for bad, field in [
        (["--batch-sizes", "64,x"], "batch_sizes"),
        (["--noises", "none,iso"], "noises"),
        (["--batch-sizes", "8", "--noises", "full"], "small_batch"),
    ]:
        assert main(["sweep", *flags, *bad, "--store", db, "--no-progress"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {field}"), err
