"""The tables of a study's findings: one row per run, one row per arm, the noisy settings.

The verdicts read these tables, and the findings page and FINDINGS.md show them; arms, gaps
and steps to target are defined in covnoise.results.findings. The claim-4 table correlates
the noisy arms' noise statistics with their generalisation gaps.

A "best" arm (the tuned LB learning rate, the best multiplier) is picked on validation
accuracy when the arms' runs held out a validation split, so the test set that reports it
did not choose it; runs without a split are picked on test accuracy, as before splits existed.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from covnoise.results.correlations import correlation_table
from covnoise.results.study import EQUAL_FROBENIUS, PILOT, Study
from covnoise.results.summaries import final_values, mean_values

#: Order of the structures in the tables (plain LB first, then by how much of Σ is kept).
STRUCTURE_ORDER = {"none": 0, "isotropic": 1, "diag": 2, "full": 3}

#: Final metrics of each run in the run table (validation ones are NaN without a split).
FINAL_METRICS = (
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "val_loss",
    "val_acc",
    "sharpness",
)
#: Readable name of each column a best arm can be picked on.
PICKED_ON = {"val_acc": "validation accuracy", "test_acc": "test accuracy"}

#: Generalisation measures of claim 4: the test-accuracy gap to SB (the gap of claims 1–3)
#: first, then the loss gap of each run.
GAPS = {"acc_gap": "test-acc gap to SB", "gen_gap": "test − train loss"}
#: Suffix of the arms of the equal-Frobenius design (their multiplier may equal an
#: equal-trace arm's, and the two must not be pooled).
F_MATCHED = " (F-matched)"
#: Readable names of the noise sources in arm labels.
SOURCE_NAMES = {"batch": "batch", "fisher": "Fisher"}


def study_runs(runs: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The runs of `runs` made by `study` (its name is recorded in each run's config)."""
    if runs.empty or "name" not in runs:
        return runs.iloc[0:0]
    prefix = f"study {study.name} ("
    names = runs["name"].fillna("").astype(str)
    return runs[names.str.startswith(prefix)]


def steps_to_target(metrics: pd.DataFrame, target: float) -> pd.Series:
    """Per run, the first evaluated step whose train loss is ≤ `target` (NaN if never)."""
    df = metrics[metrics["name"] == "train_loss"].dropna(subset=["value"])
    out = {}
    for rid, g in df.sort_values("step", kind="stable").groupby("run_id", sort=False):
        hit = g.loc[g["value"] <= target, "step"]
        out[rid] = float(hit.iloc[0]) if len(hit) else math.nan
    return pd.Series(out, name="steps_to_target", dtype=float)


def arm_label(
    batch_size: int, small_batch: int, noise: str, scale: float, lr: float, source: str = "batch"
) -> str:
    """Short name of an arm, e.g. 'SB M=32', 'LB η=0.4', 'LB + diag s=1', 'LB + diag s=1
    (Fisher)' for noise that imitates the true Fisher rather than the batch covariance."""
    if noise == "none" and batch_size <= small_batch:
        return f"SB M={batch_size}"
    if noise == "none":
        return f"LB η={lr:g}"
    return f"LB + {noise} s={scale:g}" + (f" ({SOURCE_NAMES[source]})" if source != "batch" else "")


def sweep_label(name: str) -> str:
    """The sweep a study run came from, as recorded at the end of its name."""
    return name.rsplit("; sweep: ", 1)[-1] if "; sweep: " in name else ""


def sweep_labels(runs: pd.DataFrame) -> pd.Series:
    """sweep_label of each run of a runs frame."""
    return runs["name"].fillna("").astype(str).map(sweep_label)


def is_pilot(runs: pd.DataFrame) -> pd.Series:
    """Which runs of a runs frame are a study's calibration pilot (not arms)."""
    return sweep_labels(runs) == PILOT


def run_table(runs: pd.DataFrame, metrics: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per run of the study (its pilot runs left out): its arm, sweep, status, final
    metrics, noise means, speed."""
    runs = study_runs(runs, study)
    runs = runs[~is_pilot(runs)]
    if runs.empty:
        return pd.DataFrame()
    metrics = metrics[metrics["run_id"].isin(set(runs["run_id"]))]
    final = final_values(metrics, FINAL_METRICS)
    noise = mean_values(metrics, ["noise_fro", "noise_trace", "noise_trace_hsigma"])
    steps = steps_to_target(metrics, study.target_train_loss)
    last_step = metrics.groupby("run_id")["step"].max()
    out = pd.DataFrame(
        {
            "run_id": runs["run_id"].to_numpy(),
            "status": runs["status"].to_numpy(),
            "batch_size": runs["cfg_batch_size"].astype(int).to_numpy(),
            "noise": runs["cfg_noise"].astype(str).to_numpy(),
            "noise_scale": runs["cfg_noise_scale"].astype(float).to_numpy(),
            "lr": runs["cfg_lr"].astype(float).to_numpy(),
            "seed": runs["cfg_seed"].astype(int).to_numpy(),
            "noise_source": _column(runs, "cfg_noise_source", "batch"),
            "sweep": sweep_labels(runs).to_numpy(),
            "device": _column(runs, "device", "–"),
        }
    )
    out["noise_scale"] = np.where(out["noise"] == "none", 0.0, out["noise_scale"])
    out["arm"] = [
        arm_label(b, study.small_batch, n, s, lr, src)
        + (F_MATCHED if sweep.startswith(EQUAL_FROBENIUS) else "")
        for b, n, s, lr, src, sweep in zip(
            out.batch_size,
            out.noise,
            out.noise_scale,
            out.lr,
            out.noise_source,
            out.sweep,
            strict=True,
        )
    ]
    ids = out["run_id"]
    for name in FINAL_METRICS:
        out[name] = ids.map(final[name]) if name in final else np.nan
    for name in ("noise_fro", "noise_trace", "noise_trace_hsigma"):
        out[name] = ids.map(noise[name]) if name in noise else np.nan
    no_noise = out["noise"] == "none"
    out.loc[no_noise, ["noise_fro", "noise_trace"]] = 0.0
    out["gen_gap"] = out["test_loss"] - out["train_loss"]
    out["steps_to_target"] = ids.map(steps)
    out["steps"] = ids.map(last_step)
    return out.sort_values(
        ["batch_size", "noise_source", "noise", "noise_scale", "lr", "seed"], key=_sort_key
    ).reset_index(drop=True)


def _column(runs: pd.DataFrame, name: str, default: str) -> np.ndarray:
    """A config column as text, `default` where a run has none (runs made before the field)."""
    if name not in runs:
        return np.full(len(runs), default, dtype=object)
    return runs[name].where(runs[name].notna(), default).astype(str).to_numpy()


def _sort_key(col: pd.Series) -> pd.Series:
    return col.map(STRUCTURE_ORDER) if col.name == "noise" else col


def _mean_std(values: pd.Series) -> tuple[float, float]:
    v = values.dropna().astype(float)
    if v.empty:
        return math.nan, math.nan
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan


def arm_table(per_run: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: seeds, diverged count, mean ± std of the final numbers, the test-acc
    gap to SB, steps to target (mean ± std over the runs that reach it, and how many do)."""
    if per_run.empty:
        return pd.DataFrame()
    rows = []
    for arm, g in per_run.groupby("arm", sort=False):
        ok = g[g["status"] == "finished"]
        row = {
            "arm": arm,
            "noise": g["noise"].iloc[0],
            "noise_source": g["noise_source"].iloc[0],
            "sweep": g["sweep"].iloc[0],
            "noise_scale": g["noise_scale"].iloc[0],
            "lr": g["lr"].iloc[0],
            "batch_size": g["batch_size"].iloc[0],
            "runs": len(g),
            "diverged": int((g["status"] == "diverged").sum()),
        }
        for name in (
            "test_acc",
            "val_acc",
            "train_acc",
            "train_loss",
            "gen_gap",
            "noise_fro",
            "noise_trace",
            "sharpness",
        ):
            row[name], row[f"{name}_std"] = _mean_std(ok[name])
        row["steps_to_target"], row["steps_to_target_std"] = _mean_std(ok["steps_to_target"])
        row["reached"] = int(ok["steps_to_target"].notna().sum())
        row["finished"] = len(ok)
        rows.append(row)
    table = pd.DataFrame(rows)
    sb = table[(table["noise"] == "none") & (table["batch_size"] == table["batch_size"].min())]
    sb_acc = float(sb["test_acc"].iloc[0]) if len(sb) else math.nan
    table["acc_gap"] = sb_acc - table["test_acc"]
    return table


def pick_column(candidates: pd.DataFrame) -> str:
    """The column a best arm among `candidates` (rows of arm_table) is picked on: "val_acc"
    when every candidate has a validation accuracy, else "test_acc"."""
    if len(candidates) and "val_acc" in candidates and candidates["val_acc"].notna().all():
        return "val_acc"
    return "test_acc"


def best_arm(candidates: pd.DataFrame) -> pd.Series:
    """The candidate arm (a row of arm_table) with the highest mean of pick_column; of equals,
    the last in table order (the larger learning rate or multiplier). Its test accuracy is
    what a finding reports."""
    values = candidates[pick_column(candidates)].to_numpy(dtype=float)
    if not np.isfinite(values).any():
        return candidates.iloc[-1]
    top = np.flatnonzero(values == np.nanmax(values))
    return candidates.iloc[int(top[-1])]


def noise_settings(per_run: pd.DataFrame, study: Study) -> pd.DataFrame:
    """Seed means of the noisy LB arms at the base learning rate (the claim-4 points), with
    their test-accuracy gap to the SB mean."""
    done = per_run[per_run["status"] == "finished"]
    ok = done[
        (done["noise"] != "none")
        & np.isclose(done["lr"], study.base_lr)
        & (done["noise_source"] == "batch")
    ]
    cols = ["noise_fro", "noise_trace", "gen_gap", "test_acc"]
    if ok.empty:
        return pd.DataFrame(columns=["arm", "noise", "noise_scale", *cols, "acc_gap"])
    sb = done[(done["noise"] == "none") & (done["batch_size"] == study.small_batch)]
    out = ok.groupby(["arm", "noise", "noise_scale"], sort=False)[cols].mean().reset_index()
    out["acc_gap"] = sb["test_acc"].mean() - out["test_acc"] if len(sb) else np.nan
    return out


def claim4_table(settings: pd.DataFrame) -> pd.DataFrame:
    """Pearson and Spearman r (95% bootstrap CIs) of ‖Σ‖_F and tr Σ with each of GAPS over
    the noisy settings."""
    parts = []
    for measure in GAPS:
        t = correlation_table(settings, ["noise_fro", "noise_trace"], measure)
        t.insert(0, "measure", measure)
        parts.append(t)
    return pd.concat(parts, ignore_index=True)
