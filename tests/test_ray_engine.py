"""The Ray engine against a real local Ray cluster (two CPUs), running covnoise.core.train.run."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from covnoise.config import RunConfig
from covnoise.core.train import run
from covnoise.runs import RunStore
from tests.helpers import TINY_RUN
from tests.helpers import wait_for as _wait_for

ray = pytest.importorskip("ray")

pytestmark = pytest.mark.ray

TINY = TINY_RUN
LONG = TINY.replace(steps=200_000, eval_every=20)


def stubborn_run(config, emit, should_stop=None, progress=False):
    """A run function that never looks at should_stop (for the forced cancel)."""
    emit({"event": "metric", "step": 0, "metrics": {"alive": 1.0}})
    time.sleep(600)
    return {"status": "finished"}


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():  # another module's cluster: start a two-CPU one of our own
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def store(tmp_path):
    s = RunStore(tmp_path / "runs.sqlite")
    yield s
    s.close()


def _reference_rows(config: RunConfig) -> list[tuple]:
    events: list[dict] = []
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a task asking for one CPU trains with one thread
    try:
        run(config, emit=events.append)
    finally:
        torch.set_num_threads(before)
    return [
        (e["step"], k, v) for e in events if e["event"] == "metric" for k, v in e["metrics"].items()
    ]


def test_sweep_of_four_runs_stores_every_metric(cluster, store):
    from covnoise.runs.engine.ray_engine import RayEngine

    engine = RayEngine(store, poll_interval=0.05)
    try:
        assert engine.max_in_flight == 2  # two CPUs, one per task
        ids = engine.sweep(TINY, noises=["none", "full"], seeds=[0, 1])
        assert len(ids) == 4
        assert engine.wait(ids, timeout=300) == dict.fromkeys(ids, "finished")
        assert engine.last_error is None
    finally:
        engine.close()
    for rid, cfg in zip(
        ids, [TINY.replace(noise=n, seed=s) for n in ("none", "full") for s in (0, 1)], strict=True
    ):
        assert cfg.run_id() == rid
        rec = store.get_run(rid)
        assert rec["message"] is None and rec["device"].startswith("cpu")
        assert rec["versions"]["torch"] == torch.__version__
        got = store.metrics([rid])
        want = _reference_rows(cfg)
        assert len(got) == len(want) > 0
        assert list(zip(got["step"], got["name"], strict=True)) == [(s, k) for s, k, _ in want]
        np.testing.assert_allclose(
            got["value"].to_numpy(), [w[2] for w in want], rtol=1e-6, atol=1e-9
        )


def test_metrics_stream_while_running_and_cancel_stops_the_run(cluster, store):
    from covnoise.runs.engine.ray_engine import RayEngine

    engine = RayEngine(store, poll_interval=0.05)
    try:
        rid = engine.submit(LONG.replace(seed=3))
        _wait_for(lambda: store.count_metrics(rid) > 0, 120)
        assert store.status(rid) == "running"  # metrics arrive before the run ends
        first = store.count_metrics(rid)
        _wait_for(lambda: store.count_metrics(rid) > first, 60)
        assert store.status(rid) == "running"
        assert engine.cancel(rid) == "running"
        assert engine.wait([rid], timeout=60) == {rid: "cancelled"}
        rec = store.get_run(rid)
        assert rec["message"].startswith("cancelled at step")  # the run itself stopped
        assert 0 < rec["steps"] < LONG.steps
        _wait_for(lambda: engine.in_flight() == [], 30)  # the task has ended
        n = store.count_metrics(rid)
        time.sleep(0.5)
        assert store.count_metrics(rid) == n
    finally:
        engine.close()


def test_a_task_that_ignores_cancel_is_stopped_by_force(cluster, store):
    from covnoise.runs.engine.ray_engine import RayEngine

    engine = RayEngine(
        store, run_fn="tests.test_ray_engine:stubborn_run", cancel_grace=1.0, poll_interval=0.05
    )
    try:
        rid = engine.submit(TINY.replace(seed=4))
        _wait_for(lambda: store.count_metrics(rid) > 0, 120)
        engine.cancel(rid)
        assert engine.wait([rid], timeout=60) == {rid: "cancelled"}
        assert "stopped" in store.get_run(rid)["message"]
        _wait_for(lambda: engine.in_flight() == [], 30)
    finally:
        engine.close()
