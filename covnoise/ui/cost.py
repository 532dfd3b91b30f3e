"""The cost summary the Train page shows before launch: steps, evaluations, FLOPs and a
wall-clock estimate for a grid of runs.

The counts and FLOPs come from the cost model in covnoise.results. Seconds come from timing
each setting's operations on this machine (covnoise.core.timing: set-up, a few steps, an
evaluation with and without λ_max; a fraction of a second per setting, cached), scaled by how
this machine's own finished runs of the same settings compared with that prediction. A
setting that cannot be timed here (more than `TIMED_SETTINGS` of them, or a data file not yet
present) falls back on the FLOP model, scaled to the settings that were timed.
"""

from __future__ import annotations

import functools
import json
import os
import socket
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from covnoise import results
from covnoise.config import RunConfig
from covnoise.data import DATASETS as DATASET_SPECS
from covnoise.ui.resources import device_found
from covnoise.ui.runsdata import OWN_SOURCE

if TYPE_CHECKING:
    from covnoise.core.timing import OperationTimes

#: FLOP rate assumed for a setting that cannot be timed, before any setting is.
DEFAULT_RATE = {"cpu": 2e9, "gpu": 2e11}
#: How many of the latest finished runs calibrate the estimate.
CALIBRATION_RUNS = 50
#: Distinct settings timed for one estimate (each takes about 0.1–1 s on a CPU, once).
TIMED_SETTINGS = 8
#: A setting's evaluations are timed whole when the FLOP model at the assumed rate
#: (pessimistic on a CPU by 25–80×, measured) puts that timing (three evaluations, two with
#: curvature, a few steps) under this; otherwise timed in parts (a forward pass on a sample,
#: two Hessian-vector products, the noise statistics) when that is under `PARTS_LIMIT`;
#: otherwise not timed.
WHOLE_LIMIT_SECONDS = 150.0
PARTS_LIMIT_SECONDS = 300.0


@st.cache_data(show_spinner=False, max_entries=64)
def forward_flops(dataset: str, model: str, width: int, depth: int) -> float:
    """FLOPs of one example's forward pass (cached; counted once per architecture)."""
    spec = DATASET_SPECS[dataset]
    return results.forward_flops(spec.input_shape, spec.num_classes, model, width, depth)


@st.cache_data(show_spinner="Timing a step of each setting on this machine…", max_entries=256)
def operation_times(timing_json: str, threads: int, whole: bool = True) -> OperationTimes | None:
    """The OperationTimes of one timing setting (a `timing_config` as JSON), measured once
    per server with `threads` torch threads (evaluations `whole` or in parts, see
    covnoise.core.timing); None where the setting cannot run here (its error shows when it
    is launched)."""
    from covnoise.core.timing import time_operations

    try:
        cfg = RunConfig(**json.loads(timing_json))
        return time_operations(cfg, threads=threads, whole=whole)
    except Exception:  # noqa: BLE001 - an untimable setting falls back on the FLOP model
        return None


def _timing_key(cfg: RunConfig) -> str:
    from covnoise.core.timing import timing_config

    return timing_config(cfg).to_json()


@functools.lru_cache(maxsize=4096)
def _stored_timing_key(config_json: str) -> str | None:
    """The timing key of a stored run's config JSON (None when it does not parse), memoised:
    the page asks for every past run's key at each rerun."""
    try:
        return _timing_key(results.config_from_row({"config": config_json}))
    except Exception:  # noqa: BLE001 - an odd past run just does not count
        return None


def _times(key: str, threads: int, c: results.Cost) -> OperationTimes | None:
    """The setting's OperationTimes, timed whole or in parts as its size allows; None when
    it is too large to time on a page view or cannot run here."""
    whole, parts = _probe_seconds(c)
    if whole > WHOLE_LIMIT_SECONDS and parts > PARTS_LIMIT_SECONDS:
        return None
    return operation_times(key, threads, whole <= WHOLE_LIMIT_SECONDS)


def cost_summary(
    configs: Sequence[RunConfig],
    past: pd.DataFrame,
    workers: int,
    threads: int | None = None,
    warm: int = 0,
    metrics_of: Callable[[pd.DataFrame], pd.DataFrame] | None = None,
) -> dict[str, Any]:
    """Steps, evaluations, FLOPs and a wall-clock estimate for launching `configs` on
    `workers` parallel workers of `threads` torch threads each (default: the cores shared
    out, as the local engine does), `warm` of them already started (the rest pay an
    interpreter's start-up).

    Each distinct setting (up to TIMED_SETTINGS) is timed on this machine. Its curvature
    evaluations are scaled to the Hessian-vector products earlier runs of the setting took
    on average (any source: a count, not a time; `metrics_of(runs)` gives their long
    metrics), and the whole prediction by the median measured / predicted wall time of this
    machine's own finished runs of the setting in `past`, or of all the timed settings where
    it has none (cached and uploaded runs ran elsewhere).
    """
    threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers))
    costs = [_cost(cfg) for cfg in configs]
    keys = [_timing_key(cfg) for cfg in configs]
    timed: dict[str, OperationTimes] = {}
    for key, c in dict(zip(keys, costs, strict=True)).items():
        if len(timed) >= TIMED_SETTINGS:
            break
        if (t := _times(key, threads, c)) is not None:
            timed[key] = t
    past = _with_keys(past, timed)
    products = _mean_products(past, metrics_of)
    ratios = _calibration_ratios(past, timed, products)
    every = [r for rs in ratios.values() for r in rs]
    overall = float(pd.Series(every).median()) if every else 1.0
    factors = {k: float(pd.Series(rs).median()) for k, rs in ratios.items()}
    # the FLOP model, for settings not timed, scaled to the ones that were
    base = _default_rate()
    flop_ratios = [
        results.timed_seconds(c, timed[k], products.get(k)) / results.run_seconds(c, base)
        for c, k in zip(costs, keys, strict=True)
        if k in timed and results.run_seconds(c, base) > 0
    ]
    scale = float(pd.Series(flop_ratios).median()) if flop_ratios else 1.0
    split = {"training": 0.0, "evaluation": 0.0, "curvature": 0.0}
    secs = []
    for c, k in zip(costs, keys, strict=True):
        factor = factors.get(k, overall)  # own runs of the setting, else of all timed ones
        parts = (
            results.timed_split(c, timed[k], products.get(k))
            if k in timed
            else {p: scale * t for p, t in c.split_seconds(base).items()}
        )
        for part, t in parts.items():
            split[part] += factor * t
        secs.append(factor * sum(parts.values()))
    flops = sum(c.flops for c in costs)
    return {
        "split": split,
        "runs": len(configs),
        "steps": sum(c.steps for c in costs),
        "evaluations": sum(c.evaluations for c in costs),
        "sharpness_evaluations": sum(c.sharpness_evaluations for c in costs),
        "examples": sum(c.examples for c in costs),
        "flops": flops,
        "seconds": results.grid_seconds(secs, workers, warm=warm),
        "rate": flops / sum(secs) if sum(secs) > 0 else base,
        "timed": sum(k in timed for k in keys),
        "settings": len(set(keys)),
        "counted_on": int(past["_key"].isin(products).sum()) if len(past) else 0,
        "calibrated_on": len(every),
    }


def _probe_seconds(c: results.Cost) -> tuple[float, float]:
    """What timing a setting would take by the FLOP model at the assumed rate, whole (three
    evaluations, two with curvature, eight steps) and in parts (eight steps, a forward pass
    on a sample of the data, three Hessian-vector products)."""
    split = c.split_seconds(_default_rate())
    step = split["training"] / max(1, c.steps)
    evaluation = split["evaluation"] / max(1, c.evaluations)
    curvature = split["curvature"] / max(1, c.sharpness_evaluations)
    product = split["curvature"] / max(1, c.hvps)
    whole = 8 * step + 3 * evaluation + 2 * curvature
    return whole, 8 * step + 0.1 * evaluation + 3 * product


def _with_keys(past: pd.DataFrame | None, timed: dict[str, OperationTimes]) -> pd.DataFrame:
    """The finished runs of `past` whose setting was timed, with their timing key (`_key`)."""
    if past is None or past.empty or not timed:
        return pd.DataFrame(columns=["_key"])
    done = past[(past["status"] == "finished") & past["cfg_dataset"].isin(list(DATASET_SPECS))]
    keys = done["config"].astype(str).map(_stored_timing_key)
    return done.assign(_key=keys)[keys.isin(list(timed))]


def _mean_products(
    past: pd.DataFrame, metrics_of: Callable[[pd.DataFrame], pd.DataFrame] | None
) -> dict[str, float]:
    """Mean Hessian-vector products per curvature evaluation (Lanczos' plus the Tr(HΣ)
    draws') in the latest CALIBRATION_RUNS runs of each timing key in `past`."""
    if metrics_of is None or past.empty:
        return {}
    runs = past.groupby("_key").tail(CALIBRATION_RUNS)
    m = metrics_of(runs)
    m = m[m["name"].isin(["sharpness_hvps", "noise_trace_hsigma_draws"])]
    if m.empty:
        return {}
    per_eval = m.groupby(["run_id", "step"])["value"].sum().reset_index()
    per_eval["_key"] = per_eval["run_id"].map(runs.set_index("run_id")["_key"])
    return per_eval.groupby("_key")["value"].mean().to_dict()


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


def _calibration_ratios(
    past: pd.DataFrame, timed: dict[str, OperationTimes], products: dict[str, float]
) -> dict[str, list[float]]:
    """Measured / predicted wall time of this machine's own finished runs in `past` (from
    `_with_keys`), by timing key: how much longer (> 1) or shorter they took than their
    setting's timing predicts."""
    if past.empty:
        return {}
    own = past[past["wall_time"].notna()]
    # only this machine's own runs: cached and uploaded runs were timed elsewhere
    if "source" in own:
        own = own[own["source"] == OWN_SOURCE]
    if "host" in own:
        own = own[own["host"].isna() | (own["host"] == socket.gethostname())]
    ratios: dict[str, list[float]] = {}
    for row in own.tail(CALIBRATION_RUNS).to_dict("records"):
        key = row["_key"]
        try:
            cost = _cost(results.config_from_row(row))
        except Exception:  # noqa: BLE001 - an odd past run just does not calibrate
            continue
        predicted = results.timed_seconds(cost, timed[key], products.get(key))
        if predicted > 0 and float(row["wall_time"]) > 0:
            ratios.setdefault(key, []).append(float(row["wall_time"]) / predicted)
    return ratios
