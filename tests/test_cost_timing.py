"""The Train page's estimate: each setting timed on this machine through the training loop's
own code, curvature scaled to the Hessian-vector products earlier runs took, calibrated on
this machine's own runs of the same setting, the FLOP model for what was not timed.

How close the estimate comes to the wall clock is measured by `python -m bench.presets`
(README), not here: these tests check what the estimate is made of against the training
loop's own events and exact arithmetic."""

from __future__ import annotations

import dataclasses
import socket

import pandas as pd
import pytest
import torch

from covnoise import results
from covnoise.config import RunConfig
from covnoise.core.timing import OperationTimes, time_operations, timing_config
from covnoise.core.train import run
from covnoise.ui import cost
from covnoise.ui.runsdata import OWN_SOURCE

CFG = RunConfig(
    dataset="digits",
    width=16,
    depth=2,
    batch_size=128,
    steps=40,
    epochs=None,
    noise="diag",
    eval_every=8,
    sharpness_every=2,
)


_cost = cost._cost  # the page's counts and FLOPs of a config


def test_timing_runs_the_loops_operations_and_the_counts_match_a_real_run():
    """The timed operations are the loop's own (a curvature evaluation logs Lanczos' and the
    Tr(HΣ) draws' products); the counts they are multiplied by are the ones a real run of
    the setting emits; torch's thread count is put back."""
    before = torch.get_num_threads()
    times = time_operations(CFG, threads=1)
    assert torch.get_num_threads() == before
    assert min(times.setup, times.step, times.evaluation, times.curvature) > 0
    assert times.products >= 2  # at least a Lanczos step and its residual check
    events: list[dict] = []
    summary = run(CFG, events.append)
    metrics = [e["metrics"] for e in events if e["event"] == "metric"]
    c = _cost(CFG)
    assert c.steps == summary["steps"]
    assert c.evaluations == len(metrics)
    assert c.sharpness_evaluations == sum("sharpness" in m for m in metrics)
    expected = (
        times.setup
        + c.steps * times.step
        + c.evaluations * times.evaluation
        + c.sharpness_evaluations * times.curvature
    )
    assert results.timed_seconds(c, times) == pytest.approx(expected)
    split = results.timed_split(c, times)
    assert sum(split.values()) == pytest.approx(expected)
    # a setting whose runs take half the products per curvature evaluation: half the time
    half = results.timed_split(c, times, products=times.products / 2)
    assert half["curvature"] == pytest.approx(split["curvature"] / 2)
    assert half["training"] == split["training"]


def test_settings_that_cost_the_same_share_one_timing():
    key = timing_config(CFG)
    same = dataclasses.replace(
        CFG, seed=3, noise_scale=0.25, steps=None, epochs=7.0, eval_every=2, name="x"
    )
    assert timing_config(same) == key
    for field, value in [("batch_size", 64), ("noise", "full"), ("width", 32), ("probe_size", 64)]:
        assert timing_config(dataclasses.replace(CFG, **{field: value})) != key


def _row(cfg: RunConfig, wall: float, **extra) -> dict:
    return {
        "run_id": cfg.run_id(),
        "config": cfg.to_json(),
        "cfg_dataset": cfg.dataset,
        "status": "finished",
        "wall_time": wall,
        "source": OWN_SOURCE,
        "host": socket.gethostname(),
        **extra,
    }


def _times(cfg: RunConfig) -> OperationTimes:
    return cost.operation_times(timing_config(cfg).to_json(), 1, True)


def test_the_estimate_calibrates_on_this_machines_own_runs_of_the_setting():
    """An own run of the setting that took 3× its prediction triples the estimate; runs of
    other machines, cached runs and runs of settings not launched do not move it."""
    fresh = cost.cost_summary([CFG], pd.DataFrame(), workers=1, threads=1, warm=1)
    assert fresh["timed"] == 1 and fresh["calibrated_on"] == 0
    start = results.QUEUED_START_SECONDS
    predicted = results.timed_seconds(_cost(CFG), _times(CFG))
    assert fresh["seconds"] == pytest.approx(predicted + start)

    earlier = dataclasses.replace(CFG, seed=1)  # the same setting, another seed
    other = dataclasses.replace(CFG, width=24, seed=5)  # a setting not launched
    past = pd.DataFrame(
        [
            _row(earlier, 3 * predicted),
            _row(earlier, 50 * predicted, host="another-machine"),
            _row(earlier, 90 * predicted, source="cached_runs/study.parquet", host=None),
            _row(other, 70 * predicted),
        ]
    )
    summary = cost.cost_summary([CFG], past, workers=1, threads=1, warm=1)
    assert summary["calibrated_on"] == 1
    assert summary["seconds"] == pytest.approx(3 * predicted + start)
    assert sum(summary["split"].values()) == pytest.approx(3 * predicted)


def test_curvature_is_counted_from_earlier_runs_of_the_setting_from_any_source():
    """Cached runs' Hessian-vector products per curvature evaluation (a count, valid on any
    machine) scale the timed curvature; their wall times are not used."""
    times = _times(CFG)
    earlier = dataclasses.replace(CFG, seed=2)
    past = pd.DataFrame([_row(earlier, 1e6, source="cached_runs/study.parquet", host=None)])
    wanted = times.products / 4  # per evaluation: Lanczos' products plus the draws

    def metrics_of(runs: pd.DataFrame) -> pd.DataFrame:
        assert list(runs["run_id"]) == [earlier.run_id()]
        rows = []
        for step in (0, 8):
            rows.append((earlier.run_id(), step, "sharpness_hvps", wanted - 1))
            rows.append((earlier.run_id(), step, "noise_trace_hsigma_draws", 1.0))
            rows.append((earlier.run_id(), step, "test_acc", 0.5))
        return pd.DataFrame(rows, columns=["run_id", "step", "name", "value"])

    plain = cost.cost_summary([CFG], pd.DataFrame(), 1, threads=1)
    counted = cost.cost_summary([CFG], past, 1, threads=1, metrics_of=metrics_of)
    assert counted["counted_on"] == 1 and counted["calibrated_on"] == 0
    assert counted["split"]["curvature"] == pytest.approx(plain["split"]["curvature"] / 4)
    assert counted["split"]["training"] == pytest.approx(plain["split"]["training"])


def test_settings_not_timed_use_the_flop_model_scaled_to_the_timed_ones(monkeypatch):
    monkeypatch.setattr(cost, "TIMED_SETTINGS", 1)
    wide = dataclasses.replace(CFG, width=48)
    summary = cost.cost_summary([CFG, wide], pd.DataFrame(), workers=1, threads=1)
    assert summary["timed"] == 1 and summary["settings"] == 2
    rate = cost._default_rate()
    timed = results.timed_seconds(_cost(CFG), _times(CFG))
    scale = timed / results.run_seconds(_cost(CFG), rate)
    expected = timed + scale * results.run_seconds(_cost(wide), rate)
    assert sum(summary["split"].values()) == pytest.approx(expected)


def test_a_setting_that_cannot_run_here_falls_back_on_the_flop_model(tmp_path):
    """MNIST from an empty folder cannot be timed (its files are missing): the estimate is
    the FLOP model at the assumed rate, and says so."""
    cfg = RunConfig(dataset="mnist", data_dir=str(tmp_path), width=16, depth=2, batch_size=128)
    assert cost.operation_times(timing_config(cfg).to_json(), 1, True) is None
    summary = cost.cost_summary([cfg], pd.DataFrame(), workers=1, threads=1)
    assert summary["timed"] == 0
    c = _cost(cfg)
    assert sum(summary["split"].values()) == pytest.approx(
        results.run_seconds(c, cost._default_rate())
    )


def test_large_settings_are_timed_in_parts_at_the_most_products_a_curvature_step_takes(
    monkeypatch,
):
    """Past the whole-evaluation limit, a setting is timed in parts: its curvature is
    priced at the most Hessian-vector products Lanczos and the Tr(HΣ) cap allow; past the
    parts limit too, it is not timed at all."""
    from covnoise.core.noise import HSIGMA_MAX_DRAWS

    times = time_operations(CFG, threads=1, whole=False)
    cap = CFG.lanczos_iters + 1 + max(CFG.noise_samples, HSIGMA_MAX_DRAWS)
    assert times.products == cap
    assert min(times.setup, times.step, times.evaluation, times.curvature) > 0
    plain = time_operations(dataclasses.replace(CFG, noise="none"), threads=1, whole=False)
    assert plain.products == CFG.lanczos_iters + 1

    monkeypatch.setattr(cost, "WHOLE_LIMIT_SECONDS", 0.0)
    assert cost._times(timing_config(CFG).to_json(), 1, _cost(CFG)).products == cap
    monkeypatch.setattr(cost, "PARTS_LIMIT_SECONDS", 0.0)
    assert cost._times(timing_config(CFG).to_json(), 1, _cost(CFG)) is None
    summary = cost.cost_summary([CFG], pd.DataFrame(), workers=1, threads=1)
    assert summary["timed"] == 0
