"""The sharpness/noise cadence chosen by a run's length when the config leaves it unset, as
the training loop, the schedule and the cost model all see it; the cost estimate's split."""

from __future__ import annotations

import pytest
import torch

from covnoise import results
from covnoise.config import RunConfig
from covnoise.core.schedule import CURVATURE_PER_RUN, curvature_count, curvature_every
from covnoise.core.train import run

TINY = RunConfig(dataset="digits", model="mlp", width=16, depth=2, batch_size=64, epochs=None)


@pytest.mark.parametrize("evaluations", [1, 5, 20, 21, 40, 41, 399, 1000, 10_001])
def test_an_unset_cadence_measures_about_twenty_evaluations(evaluations):
    every = curvature_every(None, evaluations)
    n = curvature_count(evaluations, every)
    assert 1 <= n <= CURVATURE_PER_RUN
    if evaluations <= CURVATURE_PER_RUN:
        assert every == 1 and n == evaluations  # a short run measures every evaluation
    else:  # the densest cadence that stays within the budget
        assert curvature_count(evaluations, every - 1) > CURVATURE_PER_RUN
        assert n > CURVATURE_PER_RUN / 2
    assert curvature_every(3, evaluations) == 3 and curvature_every(0, evaluations) == 0


def test_a_run_with_the_default_cadence_measures_where_the_schedule_says():
    cfg = TINY.replace(steps=50, eval_every=1, probe_size=32, lanczos_iters=4, noise_samples=2)
    assert cfg.sharpness_every is None
    events: list[dict] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, events.append)
    finally:
        torch.set_num_threads(threads)
    metrics = [e for e in events if e["event"] == "metric"]
    measured = [i for i, e in enumerate(metrics) if "sharpness" in e["metrics"]]
    assert len(metrics) == 51 and events[0]["curvature_every"] == 3  # ⌈51 / 20⌉
    assert measured == list(range(0, 51, 3))
    cost = results.run_cost(cfg, n_train=1347, n_test=450, forward_flops=1.0)
    assert cost.sharpness_evaluations == len(measured) == 17


def test_the_cost_split_sums_to_the_estimate_and_follows_the_cadence():
    every = results.run_cost(TINY.replace(steps=400, sharpness_every=1), 1347, 450, 1e5)
    auto = results.run_cost(TINY.replace(steps=400), 1347, 450, 1e5)
    for cost in (every, auto):
        split = cost.split_seconds(2e9)
        assert sum(split.values()) == pytest.approx(results.run_seconds(cost, 2e9))
        assert min(split.values()) > 0
    assert every.split_seconds(2e9)["training"] == auto.split_seconds(2e9)["training"]
    curv = {c: c.split_seconds(2e9)["curvature"] for c in (every, auto)}
    assert (every.sharpness_evaluations, auto.sharpness_evaluations) == (41, 14)  # every 3rd
    assert curv[auto] / curv[every] == pytest.approx(14 / 41)
