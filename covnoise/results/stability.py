"""Warnings before launch: settings that past runs say will diverge or leave the studied range.

Gradient descent with heavy-ball momentum β is stable on a quadratic only while
η·λ_max < 2(1+β). The first λ_max logged by earlier runs of the same data set and model (width
and depth too) at initialisation gives that limit for a new run; a learning rate above it
either catapults the run to a flatter region or makes it diverge. Earlier runs of the same
model that diverged at a learning rate at or below the new one are a plainer warning still.
Multipliers far above the studied range (s ≤ 2) inject noise larger than any small batch's.

Pure functions of the runs frame (``cfg_`` columns, ``status``) and the first λ_max per run,
so the Train page only draws what they return.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from covnoise.config import RunConfig
from covnoise.results.labels import config_from_row

#: Fields that must match for an earlier run's λ_max or divergence to speak for a new run.
MODEL_FIELDS = ("dataset", "model", "width", "depth")
#: The multipliers the studies cover; a warning past FAR_SCALE.
STUDIED_SCALES = (0.25, 2.0)
FAR_SCALE = 4.0


def _same_model(runs: pd.DataFrame, cfg: RunConfig) -> pd.Series:
    keep = pd.Series(True, index=runs.index)
    for f in MODEL_FIELDS:
        column = f"cfg_{f}"
        if column not in runs:
            return pd.Series(False, index=runs.index)
        keep &= runs[column].astype(str) == str(getattr(cfg, f))
    return keep


def _effective_lr(runs: pd.DataFrame) -> pd.Series:
    """Each run's learning rate after its scaling rule (RunConfig.effective_lr of its stored
    config)."""
    return pd.Series(
        [config_from_row(row).effective_lr for row in runs.to_dict("records")],
        index=runs.index,
        dtype=float,
    )


def model_runs(runs: pd.DataFrame, configs: Sequence[RunConfig]) -> pd.DataFrame:
    """The runs of the same data set and model (MODEL_FIELDS) as any of `configs`: the only
    ones whose metrics launch_warnings reads."""
    if runs.empty or not all(f"cfg_{f}" in runs for f in MODEL_FIELDS):
        return runs.iloc[0:0]
    wanted = {tuple(str(getattr(c, f)) for f in MODEL_FIELDS) for c in configs}
    keys = runs[[f"cfg_{f}" for f in MODEL_FIELDS]].astype(str).apply(tuple, axis=1)
    return runs[keys.isin(wanted)]


def launch_warnings(
    configs: Sequence[RunConfig], runs: pd.DataFrame, first_sharpness: pd.Series
) -> list[str]:
    """One sentence per distinct risk among `configs`: a learning rate above 2(1+β)/λ_max as
    measured at initialisation by earlier runs of the same model, a learning rate at which
    such runs diverged, a multiplier far above the studied range."""
    out: list[str] = []
    seen: set[tuple] = set()
    for cfg in configs:
        eta, beta = cfg.effective_lr, cfg.momentum
        key = (*(getattr(cfg, f) for f in MODEL_FIELDS), eta, beta)
        if key in seen or runs.empty:
            continue
        seen.add(key)
        same = runs[_same_model(runs, cfg)]
        lam = first_sharpness.reindex(same["run_id"]).dropna()
        model = f"{cfg.model} {cfg.width}×{cfg.depth} on {cfg.dataset}"
        if len(lam):
            lam0 = float(lam.median())
            limit = 2 * (1 + beta) / lam0
            if eta > limit:
                out.append(
                    f"η = {eta:g} is above 2(1+β)/λ_max ≈ {limit:.3g}: {len(lam)} earlier "
                    f"run(s) of the {model} measured λ_max ≈ {lam0:.3g} at the start. Such a "
                    "run either jumps to a flatter region or diverges."
                )
        diverged = same[same["status"] == "diverged"]
        if len(diverged):
            rates = _effective_lr(diverged)
            low = rates[rates <= eta * (1 + 1e-9)]
            if len(low):
                out.append(
                    f"{len(low)} earlier run(s) of the {model} diverged at η ≤ {eta:g} "
                    f"(lowest {low.min():g})."
                )
    scales = sorted({c.noise_scale for c in configs if c.noise != "none"})
    far = [s for s in scales if s > FAR_SCALE]
    if far:
        out.append(
            f"multiplier s = {', '.join(f'{s:g}' for s in far)} is far above the studied "
            f"range ({STUDIED_SCALES[0]:g}–{STUDIED_SCALES[1]:g}): noise larger than any "
            "small batch's, which usually stops the run from fitting."
        )
    return out


def first_values(metrics: pd.DataFrame, name: str = "sharpness") -> pd.Series:
    """Per run, the first logged finite value of metric `name` (by step)."""
    if not {"run_id", "step", "name", "value"} <= set(metrics.columns):
        return pd.Series(dtype=float)
    df = metrics[metrics["name"] == name].dropna(subset=["value"])
    if df.empty:
        return pd.Series(dtype=float)
    return df.sort_values("step", kind="stable").groupby("run_id")["value"].first()
