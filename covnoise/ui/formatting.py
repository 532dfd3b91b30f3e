"""Text and tables for people: durations, short run ids, run labels, one-line config
summaries and the table of a grid of configs.

Pages show runs by these labels (not by their 64-character ids), so the same run reads the
same on Live, Compare and Train.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from covnoise import results
from covnoise.config import RunConfig


def fmt_seconds(seconds: float) -> str:
    """A duration for people: 45 s, 3.2 min, 1.5 h."""
    if not math.isfinite(seconds):
        return "unknown"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def short_id(run_id: str) -> str:
    """The first eight characters of a run id, enough to tell runs apart on a page."""
    return str(run_id)[:8]


def run_labels(runs: pd.DataFrame) -> pd.Series:
    """A readable label per run (index run_id): its varying config values, its tags
    ("fisher", "drop-last" where they apply) and its short id."""
    keys = results.varying_keys(runs)
    if "seed" in results.config_keys(runs) and runs["cfg_seed"].nunique() > 1:
        keys = [*keys, "seed"]
    labels = results.group_labels(runs, keys) if keys else results.run_tags(runs)
    ids = runs["run_id"].map(short_id).to_numpy()
    return pd.Series(
        [f"{lab} [{i}]" if lab else i for lab, i in zip(labels, ids, strict=True)],
        index=labels.index,
    )


def describe_config(cfg: RunConfig) -> str:
    """One line naming a run's main settings (and its tags: "fisher", "drop-last")."""
    noise = "no noise" if cfg.noise == "none" else f"{cfg.noise} noise ×{cfg.noise_scale:g}"
    tags = "".join(f", {t}" for t in results.config_tags(cfg.to_dict()))
    return (
        f"{cfg.dataset}, {cfg.model}, L={cfg.batch_size}, M={cfg.small_batch}, {noise}, "
        f"η={cfg.effective_lr:g}{tags}, seed {cfg.seed}"
    )


def configs_table(configs: Sequence[RunConfig]) -> pd.DataFrame:
    """The grid as a table: id and the fields that matter for the comparison, the validation
    fraction and the tags ("fisher", "drop-last")."""
    return pd.DataFrame(
        [
            {
                "run id": c.run_id(),
                "L": c.batch_size,
                "M": c.small_batch,
                "noise": c.noise,
                "s": c.noise_scale if c.noise != "none" else None,
                "η": c.effective_lr,
                "epochs": c.epochs,
                "eval every": c.eval_every,
                "val fraction": c.val_fraction,
                "notes": " · ".join(results.config_tags(c.to_dict())),
                "seed": c.seed,
            }
            for c in configs
        ]
    )
