"""Curves of logged metrics: one metric against an x axis, smoothed, and averaged over seeds.

Input is the store's long metrics table [run_id, step, epoch, examples_seen, wall_time, name,
value]; output is [run_id, x, value] (or [group, x, mean, std, n] after aggregation), so a
page draws exactly what a test checks.

- Exponential smoothing is the debiased moving average s_t = w s_{t−1} + (1 − w) x_t divided
  by 1 − w^t, so the first points are not pulled towards zero. That is pandas' adjusted EWM
  with α = 1 − w (a weighted mean with weights w^{t−i}), which computes it.
- Seeds are replicates: runs of one group are drawn as mean ± sample standard deviation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from covnoise.results.labels import X_AXES


def curves(metrics: pd.DataFrame, name: str, x: str = "step") -> pd.DataFrame:
    """One metric as [run_id, x, value] rows sorted by run and x (rows without x dropped)."""
    if x not in X_AXES:
        raise ValueError(f"x: {x!r} is not one of {', '.join(X_AXES)}")
    df = metrics.loc[metrics["name"] == name, ["run_id", x, "value"]]
    df = df.rename(columns={x: "x"})
    df["x"] = pd.to_numeric(df["x"], errors="coerce").astype(float)
    df = df.dropna(subset=["x"])
    return df.sort_values(["run_id", "x"], kind="stable").reset_index(drop=True)


def ema(values: Sequence[float] | np.ndarray, weight: float) -> np.ndarray:
    """Debiased exponential moving average with weight `weight` in [0, 1); NaN stays NaN.

    s_t = w s_{t−1} + (1 − w) x_t over the finite x, reported as s_t / (1 − w^k) with k the
    number of finite points so far. weight 0 returns the values unchanged.
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"weight: {weight} is not allowed; use 0 <= weight < 1")
    x = np.asarray(values, dtype=float)
    finite = np.isfinite(x)
    if weight == 0:
        return np.where(finite, x, np.nan)
    series = pd.Series(np.where(finite, x, np.nan))
    # ignore_na: the weights count finite points only, as if the non-finite ones were absent
    smoothed = series.ewm(alpha=1.0 - weight, adjust=True, ignore_na=True).mean()
    return np.where(finite, smoothed.to_numpy(), np.nan)


def smooth(curve_frame: pd.DataFrame, weight: float) -> pd.DataFrame:
    """`curves` output with each run's values replaced by their debiased EMA."""
    if weight <= 0 or curve_frame.empty:
        return curve_frame
    out = curve_frame.copy()
    for _, idx in out.groupby("run_id", sort=False).groups.items():
        out.loc[idx, "value"] = ema(out.loc[idx, "value"].to_numpy(), weight)
    return out


def aggregate_seeds(curve_frame: pd.DataFrame, labels: pd.Series) -> pd.DataFrame:
    """Mean ± sample std per group and x: [group, x, mean, std, n].

    `labels` maps run_id → group. Runs of a group are put on a common x grid: the union of
    their x values inside the range every run covers, each run linearly interpolated there
    (runs evaluated at the same steps keep their exact values). std is NaN when n = 1.
    """
    frames = []
    df = curve_frame[curve_frame["run_id"].isin(labels.index)]
    df = df.dropna(subset=["value"])
    for group, g in df.groupby(df["run_id"].map(labels), sort=False):
        per_run = [(rid, r.groupby("x")["value"].mean()) for rid, r in g.groupby("run_id")]
        lo = max(s.index.min() for _, s in per_run)
        hi = min(s.index.max() for _, s in per_run)
        grid = np.unique(np.concatenate([s.index.to_numpy() for _, s in per_run]))
        grid = grid[(grid >= lo) & (grid <= hi)]
        if grid.size == 0:
            continue
        stack = np.vstack([np.interp(grid, s.index.to_numpy(), s.to_numpy()) for _, s in per_run])
        n = stack.shape[0]
        std = stack.std(axis=0, ddof=1) if n > 1 else np.full(grid.size, np.nan)
        frames.append(
            pd.DataFrame(
                {"group": group, "x": grid, "mean": stack.mean(axis=0), "std": std, "n": n}
            )
        )
    if not frames:
        return pd.DataFrame({"group": [], "x": [], "mean": [], "std": [], "n": []})
    return pd.concat(frames, ignore_index=True)
