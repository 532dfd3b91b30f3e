"""The equal-Frobenius design's calibration: multipliers at which ‖Σ‖_F matches full noise's.

Σ = c·K with c = s(1/M − 1/L) and K the structure's covariance (C, diag C, tr C/P·I), so at
one multiplier the structures share tr Σ but not ‖Σ‖_F: ‖K‖_F is largest for full noise.
A study's pilot trains LB with each structure at s = 1 for the first few epochs and logs
‖Σ‖_F at every evaluation; the ratio r = mean ‖Σ_full‖_F / mean ‖Σ_structure‖_F over the
pilot's runs is the factor by which a structure's multiplier must grow for its ‖Σ‖_F to
match full noise's, so the equal-Frobenius arm of full noise at s is the structure at
s·r (rounded to three significant digits, the value recorded in the run's config). The
pilot runs are exported with the study, so the findings recompute the ratios from them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the study definitions import this module; the CLI must not pay for pandas
    import pandas as pd

#: The structure whose ‖Σ‖_F the others are matched to.
MATCH_TO = "full"


def matched_scale(scale: float, ratio: float) -> float:
    """The multiplier s·r, rounded to three significant digits."""
    if not (math.isfinite(ratio) and ratio > 0):
        raise ValueError(f"ratio: {ratio!r} is not a positive number")
    return float(f"{scale * ratio:.3g}")


def pilot_ratios(runs: pd.DataFrame, metrics: pd.DataFrame) -> dict[str, float]:
    """‖K_full‖_F / ‖K_structure‖_F for each structure of the pilot `runs` (with ``cfg_noise``
    and ``cfg_noise_scale`` columns): the mean over runs of each run's mean logged ‖Σ‖_F,
    divided by the run's multiplier (so pilots at any s compare K). Runs read straight from
    a Parquet file (config JSON, no ``cfg_`` columns) are expanded first."""
    if "cfg_noise" not in runs:
        from covnoise.runs.frames import expand_runs

        runs = expand_runs(runs)
    fro = metrics[(metrics["name"] == "noise_fro") & metrics["run_id"].isin(set(runs["run_id"]))]
    per_run = fro.dropna(subset=["value"]).groupby("run_id")["value"].mean()
    table = runs.set_index("run_id")
    k = (
        (per_run / table.loc[per_run.index, "cfg_noise_scale"].astype(float))
        .groupby(table.loc[per_run.index, "cfg_noise"].astype(str))
        .mean()
    )
    if MATCH_TO not in k or not k[MATCH_TO] > 0:
        raise ValueError(f"the pilot has no {MATCH_TO}-noise run with a logged ‖Σ‖_F")
    return {str(name): float(k[MATCH_TO] / value) for name, value in k.items() if value > 0}
