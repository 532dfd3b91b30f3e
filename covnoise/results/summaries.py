"""One number per run: last and mean values of its metrics, its point in the noise-vs-
generalisation plane, and those points averaged over seeds.

The noise statistics of a run (‖Σ‖_F, tr Σ, Tr(HΣ)) change along training, so a run is
summarised by their mean over its evaluations (or their last value); generalisation is read
at the last evaluation. Runs that differ only by seed are replicates and are averaged.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from covnoise.results.labels import (
    NOISE_STATISTICS,
    NON_EXPERIMENT_FIELDS,
    config_keys,
    group_labels,
    hashable,
    varying_keys,
)


def final_values(metrics: pd.DataFrame, names: Iterable[str] | None = None) -> pd.DataFrame:
    """Each run's value of each metric at its last evaluation (index run_id, one column each)."""
    df = metrics if names is None else metrics[metrics["name"].isin(list(names))]
    df = df.dropna(subset=["value"])
    if df.empty:
        return pd.DataFrame(index=pd.Index([], name="run_id"))
    df = df.sort_values(["run_id", "name", "step"], kind="stable")
    last = df.groupby(["run_id", "name"], sort=False)["value"].last()
    return last.unstack("name")


def mean_values(metrics: pd.DataFrame, names: Iterable[str]) -> pd.DataFrame:
    """Each run's mean of each metric over its evaluations (index run_id)."""
    df = metrics[metrics["name"].isin(list(names))].dropna(subset=["value"])
    if df.empty:
        return pd.DataFrame(index=pd.Index([], name="run_id"))
    return df.groupby(["run_id", "name"])["value"].mean().unstack("name")


def run_points(runs: pd.DataFrame, metrics: pd.DataFrame, how: str = "mean") -> pd.DataFrame:
    """One row per run: its noise statistics and generalisation measures.

    Noise statistics (‖Σ‖_F, tr Σ, Tr(HΣ)) are averaged over the run's evaluations
    (`how="mean"`) or taken at the last one (`how="final"`); the batch size comes from the
    config; generalisation measures are taken at the last evaluation. Columns: run_id, the
    NOISE_STATISTICS and GENERALISATION keys, and the runs' cfg_ columns.
    """
    if how not in ("mean", "final"):
        raise ValueError(f"how: {how!r} is not one of mean, final")
    stat_names = [k for k in NOISE_STATISTICS if k != "batch_size"]
    if how == "mean":
        noise = mean_values(metrics, stat_names)
    else:
        noise = final_values(metrics, stat_names)
    final = final_values(metrics, ["train_loss", "test_loss", "test_acc"])
    out = runs[["run_id"]].copy().set_index("run_id")
    for name in stat_names:
        out[name] = noise[name] if name in noise else np.nan
    by_id = runs.set_index("run_id")
    if "cfg_batch_size" in by_id:
        out["batch_size"] = pd.to_numeric(by_id["cfg_batch_size"], errors="coerce")
    else:
        out["batch_size"] = np.nan
    for name in ("train_loss", "test_loss", "test_acc"):
        out[name] = final[name] if name in final else np.nan
    out["gen_gap"] = out["test_loss"] - out["train_loss"]
    out = out.drop(columns=["test_loss"])
    cfg = by_id[[c for c in runs.columns if c.startswith("cfg_")]]
    return out.join(cfg).reset_index()


def group_seeds(points: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Average `columns` over runs that differ only by seed.

    Returns one row per experiment with [group, n, <col>, <col>_std, cfg_ columns of the
    first run]; the group label names the fields that vary between experiments.
    """
    if points.empty:
        return pd.DataFrame(columns=["group", "n", *columns, *(f"{c}_std" for c in columns)])
    keys = [k for k in config_keys(points) if k not in NON_EXPERIMENT_FIELDS]
    ident = points[[f"cfg_{k}" for k in keys]].map(hashable).astype(str).agg("|".join, axis=1)
    labels = group_labels(points, varying_keys(points))
    rows = []
    for _, idx in points.groupby(ident, sort=False).groups.items():
        g = points.loc[idx]
        row = {"group": labels.loc[g["run_id"].iloc[0]], "n": len(g)}
        for c in columns:
            vals = g[c].astype(float)
            row[c] = vals.mean()
            row[f"{c}_std"] = vals.std(ddof=1) if len(g) > 1 else np.nan
        row.update({c: g[c].iloc[0] for c in g.columns if c.startswith("cfg_")})
        rows.append(row)
    return pd.DataFrame(rows)


#: A run is "at chance" when its final test accuracy is at most this multiple of 1/classes.
CHANCE_FACTOR = 1.5


def run_flags(points: pd.DataFrame, runs: pd.DataFrame) -> pd.Series:
    """Why a run should not count in a comparison, by run_id ("" when it should): "diverged"
    (its status), "at chance" (final test accuracy at most CHANCE_FACTOR / classes of its
    data set: it learned nothing). `points` are run_points (run_id, test_acc, cfg_dataset)."""
    from covnoise.data import DATASETS, num_classes

    flags = pd.Series("", index=pd.Index(points["run_id"], name="run_id"), dtype=object)
    status = runs.set_index("run_id")["status"] if "status" in runs else pd.Series(dtype=object)
    for row in points.itertuples(index=False):
        rid, dataset = row.run_id, getattr(row, "cfg_dataset", None)
        if status.get(rid) == "diverged":
            flags[rid] = "diverged"
        elif dataset in DATASETS and np.isfinite(row.test_acc):
            try:
                chance = 1.0 / num_classes(dataset)
            except Exception:  # noqa: BLE001 - a data set whose classes need its options
                continue
            if row.test_acc <= CHANCE_FACTOR * chance:
                flags[rid] = "at chance"
    return flags


#: Config fields that make runs a different experimental setting: points of one comparison
#: (a noise-vs-generalisation correlation) share them unless the user pools settings, since a
#: relation across settings can reverse within each (Simpson's paradox).
SETTING_FIELDS = ("dataset", "model", "lr", "epochs", "steps", "noise_source", "drop_last")


def setting_fields(runs: pd.DataFrame, exclude: Iterable[str] = ()) -> list[str]:
    """The SETTING_FIELDS whose values differ across `runs` (less `exclude`: fields the user
    compares on purpose, e.g. the learning rate when grouping by it)."""
    skip = set(exclude)
    return [k for k in varying_keys(runs, exclude=()) if k in SETTING_FIELDS and k not in skip]


def setting_labels(runs: pd.DataFrame, exclude: Iterable[str] = ()) -> pd.Series:
    """Per run (index run_id) a label of its setting: its values of the SETTING_FIELDS that
    differ across `runs`, less `exclude` ("all runs" when none does)."""
    keys = setting_fields(runs, exclude)
    if not keys:
        return pd.Series("all runs", index=runs["run_id"].to_numpy(), name="setting")
    values = runs[[f"cfg_{k}" for k in keys]].map(hashable)
    text = [
        " · ".join(f"{k}={v}" for k, v in zip(keys, row, strict=True))
        for row in values.itertuples(index=False)
    ]
    return pd.Series(text, index=runs["run_id"].to_numpy(), name="setting", dtype=object)
