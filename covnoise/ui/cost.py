"""The cost summary the Train page shows before launch: steps, evaluations, FLOPs and a
wall-clock estimate for a grid of runs.

The cost model itself (FLOPs per run, seconds at a rate, throughput) lives in
covnoise.results; this module feeds it the data set sizes, caches the per-architecture FLOP
count, and calibrates the FLOP rate on the finished runs this machine has timed.
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from covnoise import results
from covnoise.config import RunConfig
from covnoise.data import DATASETS as DATASET_SPECS
from covnoise.ui.resources import device_found
from covnoise.ui.runsdata import OWN_SOURCE

#: FLOP rate assumed before any run has been timed on this machine.
DEFAULT_RATE = {"cpu": 2e9, "gpu": 2e11}
#: How many of the latest finished runs calibrate the FLOP rate.
CALIBRATION_RUNS = 50


@st.cache_data(show_spinner=False, max_entries=64)
def forward_flops(dataset: str, model: str, width: int, depth: int) -> float:
    """FLOPs of one example's forward pass (cached; counted once per architecture)."""
    spec = DATASET_SPECS[dataset]
    return results.forward_flops(spec.input_shape, spec.num_classes, model, width, depth)


def cost_summary(configs: Sequence[RunConfig], past: pd.DataFrame, workers: int) -> dict[str, Any]:
    """Steps, evaluations, FLOPs and a wall-clock estimate for launching `configs`.

    The FLOP rate is calibrated on this machine's own finished runs in `past` (their
    predicted FLOPs over their measured wall time; cached and uploaded runs ran elsewhere);
    without any it is a fixed guess for the device.
    """
    costs = [_cost(cfg) for cfg in configs]
    base = _default_rate()
    factor, calibrated = _calibration_factor(past)
    factor = factor or 1.0
    secs = [factor * results.run_seconds(c, base) for c in costs]
    split = {"training": 0.0, "evaluation": 0.0, "curvature": 0.0}
    for c in costs:
        for part, t in c.split_seconds(base).items():
            split[part] += factor * t
    rate = base / factor
    return {
        "split": split,
        "runs": len(configs),
        "steps": sum(c.steps for c in costs),
        "evaluations": sum(c.evaluations for c in costs),
        "sharpness_evaluations": sum(c.sharpness_evaluations for c in costs),
        "examples": sum(c.examples for c in costs),
        "flops": sum(c.flops for c in costs),
        "seconds": results.grid_seconds(secs, workers),
        "rate": rate,
        "calibrated_on": calibrated,
    }


def _cost(cfg: RunConfig) -> results.Cost:
    spec = DATASET_SPECS[cfg.dataset]
    f = forward_flops(cfg.dataset, cfg.model, cfg.width, cfg.depth)
    return results.run_cost(cfg, spec.n_train, spec.n_test, f)


def to_run(configs: Sequence[RunConfig], statuses: dict[str, str | None]) -> list[RunConfig]:
    """The configs a launch will actually run: those whose run is not already queued,
    running, finished or diverged in the store (`statuses`: run id → status)."""
    from covnoise.runs import ACTIVE, COMPLETED

    return [c for c in configs if statuses.get(c.run_id()) not in ACTIVE | COMPLETED]


def _default_rate() -> float:
    return DEFAULT_RATE["gpu" if device_found().startswith("GPU") else "cpu"]


def _calibration_factor(past: pd.DataFrame) -> tuple[float | None, int]:
    """How much longer (> 1) or shorter this machine's own finished runs took than the model
    predicts at the default rate: the median of measured / predicted wall time (scaling the
    whole prediction, its fixed per-step overheads too, keeps small and large runs on one
    footing); None without any such run. Also the number of runs it rests on."""
    if past is None or past.empty:
        return None, 0
    done = past[(past["status"] == "finished") & past["wall_time"].notna()]
    done = done[done["cfg_dataset"].isin(list(DATASET_SPECS))]
    # only this machine's own runs: cached and uploaded runs were timed elsewhere
    if "source" in done:
        done = done[done["source"] == OWN_SOURCE]
    if "host" in done:
        done = done[done["host"].isna() | (done["host"] == socket.gethostname())]
    done = done.tail(CALIBRATION_RUNS)
    costs, secs = [], []
    for row in done.to_dict("records"):
        try:
            costs.append(_cost(results.config_from_row(row)))
            secs.append(float(row["wall_time"]))
        except Exception:  # noqa: BLE001 - an odd past run just does not calibrate
            continue
    if not costs:
        return None, 0
    base = _default_rate()
    ratios = [t / results.run_seconds(c, base) for c, t in zip(costs, secs, strict=True)]
    ratios = [r for r in ratios if r > 0]
    return (float(pd.Series(ratios).median()) if ratios else None), len(ratios)
