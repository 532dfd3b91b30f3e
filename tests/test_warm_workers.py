"""Persistent workers of the local engine: a queued run goes to the warm worker that just
finished a run, gives the same results as in a fresh process, and a worker is replaced by a
fresh interpreter after a failure, a cancel, and after `recycle_after` runs."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch

from covnoise.core.train import run
from covnoise.runs import RunStore
from covnoise.runs.engine import LocalEngine
from covnoise.runs.engine.monitor import pid_alive
from tests.helpers import TINY_RUN, wait_for

TINY = TINY_RUN.replace(sharpness_every=10)
FAIL_SEED = 13
SLOW_SEED = 14


def pid_run(config, emit, should_stop=None, progress=False):
    """Reports its process id; fails for FAIL_SEED; runs until stopped for SLOW_SEED."""
    emit({"event": "metric", "step": 0, "metrics": {"pid": float(os.getpid())}})
    if config.seed == FAIL_SEED:
        raise RuntimeError("this run fails on purpose")
    while config.seed == SLOW_SEED and not should_stop():
        time.sleep(0.02)
    return {"status": "cancelled" if config.seed == SLOW_SEED else "finished"}


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def _pid(store: RunStore, rid: str) -> int:
    return int(store.metrics([rid]).set_index("name")["value"]["pid"])


def test_a_second_queued_run_reuses_the_warm_worker_and_computes_the_same(store):
    first = TINY.replace(seed=0, noise="diag")
    second = TINY.replace(seed=1, noise="full", noise_source="fisher")
    with LocalEngine(store, workers=1, spares=0, poll_interval=0.05) as engine:
        ids = engine.submit_many([first, second])
        assert engine.wait(ids, timeout=300) == dict.fromkeys(ids, "finished")
        assert engine.last_error is None
        pids = [store.get_run(rid)["pid"] for rid in ids]
        assert pids[0] == pids[1] and pid_alive(pids[0])  # the same process ran both
        # and waits for a third: the worker says "done" after recording the run, so the
        # engine may take a moment to count it as a spare
        deadline = time.monotonic() + 20
        while engine.info()["warm_spares"] != 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.info()["warm_spares"] == 1
    # the second run, after another run in the same process, equals a run in this process
    events: list[dict] = []
    before = torch.get_num_threads()
    torch.set_num_threads(engine.threads)
    try:
        run(second, emit=events.append)
    finally:
        torch.set_num_threads(before)
    want = [
        (e["step"], k, v) for e in events if e["event"] == "metric" for k, v in e["metrics"].items()
    ]
    got = store.metrics([ids[1]])
    assert list(zip(got["step"], got["name"], strict=True)) == [(s, k) for s, k, _ in want]
    np.testing.assert_allclose(got["value"].to_numpy(), [w[2] for w in want], rtol=1e-6, atol=1e-9)
    wait_for(lambda: not pid_alive(pids[0]), 10)  # closing the engine ended the idle worker


def test_workers_are_replaced_after_a_failure_a_cancel_and_recycle_after(store):
    run_fn = "tests.test_warm_workers:pid_run"
    with LocalEngine(
        store, workers=1, spares=0, recycle_after=2, run_fn=run_fn, poll_interval=0.05
    ) as engine:
        ids = engine.submit_many([TINY.replace(seed=s) for s in (0, 1, 2)])
        assert engine.wait(ids, timeout=120) == dict.fromkeys(ids, "finished")
        a, b, c = (_pid(store, rid) for rid in ids)
        assert a == b != c  # two runs per worker, then a fresh one
        failing = engine.submit(TINY.replace(seed=FAIL_SEED))
        assert engine.wait([failing], timeout=60) == {failing: "failed"}
        after_failure = engine.submit(TINY.replace(seed=3))
        assert engine.wait([after_failure], timeout=60) == {after_failure: "finished"}
        assert _pid(store, failing) == c  # c had one run left, the failure ended it
        assert _pid(store, after_failure) not in (a, c)
        slow = engine.submit(TINY.replace(seed=SLOW_SEED))
        wait_for(lambda: store.count_metrics(slow) > 0, 60)
        engine.cancel(slow)
        assert engine.wait([slow], timeout=60) == {slow: "cancelled"}
        after_cancel = engine.submit(TINY.replace(seed=4))
        assert engine.wait([after_cancel], timeout=60) == {after_cancel: "finished"}
        assert _pid(store, slow) == _pid(store, after_failure)
        assert _pid(store, after_cancel) != _pid(store, slow)
        assert engine.last_error is None
