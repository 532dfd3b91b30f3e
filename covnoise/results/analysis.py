"""Analysis of stored runs for the app: curves, smoothing, seed aggregation, correlations, cost.

Everything here is a pure function of DataFrames in the store's layout (runs with
``cfg_<field>`` columns, long metrics [run_id, step, epoch, examples_seen, wall_time, name,
value]) so pages stay free of mathematics and every number a page shows can be tested.

- Seeds are replicates: runs whose configs differ only in the seed form one group, drawn as
  mean ± sample standard deviation over its runs.
- Exponential smoothing is the debiased moving average s_t = w s_{t−1} + (1 − w) x_t divided
  by 1 − w^t, so the first points are not pulled towards zero.
- Correlations (Pearson, Spearman) come with percentile-bootstrap confidence intervals that
  resample whole points (pairs), the usual choice when nothing is known about the joint law.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

#: X axes a curve can be drawn against (column of the metrics table → label).
X_AXES: dict[str, str] = {
    "step": "steps",
    "epoch": "epochs",
    "examples_seen": "examples seen",
    "wall_time": "wall time (s)",
}

#: Display names of the metrics the training loop logs.
METRIC_LABELS: dict[str, str] = {
    "train_loss": "train loss",
    "test_loss": "test loss",
    "train_acc": "train accuracy",
    "test_acc": "test accuracy",
    "gen_gap": "test − train loss",
    "batch_loss": "batch loss",
    "sharpness": "λ_max(H)",
    "sharpness_residual": "Lanczos residual ‖Hv − λv‖",
    "noise_fro": "‖Σ‖_F",
    "noise_trace": "tr Σ",
    "noise_trace_hsigma": "Tr(HΣ)",
    "grad_norm": "‖∇L‖",
    "dist_init": "‖θ − θ₀‖",
    "lr": "learning rate",
}

#: Noise statistics a run can be summarised by (x of the noise-vs-generalisation scatter).
NOISE_STATISTICS: dict[str, str] = {
    "noise_fro": "‖Σ‖_F",
    "noise_trace": "tr Σ",
    "noise_trace_hsigma": "Tr(HΣ)",
    "batch_size": "batch size L",
}

#: Generalisation measures (y of the scatter), all taken at the run's last evaluation.
GENERALISATION: dict[str, str] = {
    "gen_gap": "test − train loss",
    "test_acc": "test accuracy",
    "train_loss": "final train loss",
}

#: Config fields that label a run but do not make it a different experiment.
NON_EXPERIMENT_FIELDS = ("seed", "name", "device", "data_dir")
#: Config fields that change what is measured, not the training trajectory; left out of
#: automatic labels.
MEASUREMENT_FIELDS = ("eval_every", "sharpness_every", "probe_size", "lanczos_iters",
                      "noise_samples")  # fmt: skip
#: Short names of config fields in labels.
KEY_NAMES: dict[str, str] = {"batch_size": "L", "small_batch": "M", "noise_scale": "s",
                             "lr": "η"}  # fmt: skip


def metric_label(name: str) -> str:
    """Display name of a metric (the raw name when unknown)."""
    return METRIC_LABELS.get(name, name)


# --------------------------------------------------------------------------------------------
# Config keys and groups
# --------------------------------------------------------------------------------------------


def config_keys(runs: pd.DataFrame) -> list[str]:
    """Config field names present in a runs frame (its ``cfg_<field>`` columns)."""
    return [c[4:] for c in runs.columns if c.startswith("cfg_")]


def _hashable(value: object) -> object:
    """A value usable as a group key (dicts and lists become canonical JSON)."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "None"
    return value


def varying_keys(
    runs: pd.DataFrame, exclude: Iterable[str] = NON_EXPERIMENT_FIELDS + MEASUREMENT_FIELDS
) -> list[str]:
    """Config fields that take more than one value across `runs` (minus `exclude`)."""
    skip = set(exclude)
    out = []
    for key in config_keys(runs):
        if key in skip:
            continue
        if runs[f"cfg_{key}"].map(_hashable).nunique(dropna=False) > 1:
            out.append(key)
    return out


def _format_value(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def group_labels(runs: pd.DataFrame, keys: Sequence[str]) -> pd.Series:
    """A label per run (index run_id) naming its values of `keys`, e.g. "noise=diag · η=0.5"
    (batch_size, small_batch, noise_scale and lr are shown as L, M, s and η).

    With no keys every run is in one group, "all runs".
    """
    if not keys:
        return pd.Series("all runs", index=runs["run_id"].to_numpy(), name="group")
    parts = []
    for key in keys:
        col = runs[f"cfg_{key}"] if f"cfg_{key}" in runs else pd.Series(None, index=runs.index)
        name = KEY_NAMES.get(key, key)
        parts.append(col.map(lambda v, k=name: f"{k}={_format_value(_hashable(v))}"))
    labels = parts[0]
    for p in parts[1:]:
        labels = labels + " · " + p
    return pd.Series(labels.to_numpy(), index=runs["run_id"].to_numpy(), name="group")


def experiment_labels(runs: pd.DataFrame) -> pd.Series:
    """Seed-free group label per run: the fields that vary across `runs`, seed excluded."""
    return group_labels(runs, varying_keys(runs))


# --------------------------------------------------------------------------------------------
# Curves
# --------------------------------------------------------------------------------------------


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
    out = np.full_like(x, np.nan)
    s, k = 0.0, 0
    for i, v in enumerate(x):
        if not np.isfinite(v):
            continue
        s = weight * s + (1.0 - weight) * v
        k += 1
        out[i] = s / (1.0 - weight**k) if weight > 0 else v
    return out


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


# --------------------------------------------------------------------------------------------
# Per-run summaries
# --------------------------------------------------------------------------------------------


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
    ident = points[[f"cfg_{k}" for k in keys]].map(_hashable).astype(str).agg("|".join, axis=1)
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


# --------------------------------------------------------------------------------------------
# Correlations with bootstrap confidence intervals
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Correlation:
    """A correlation coefficient with its percentile-bootstrap confidence interval."""

    method: str
    r: float
    lo: float
    hi: float
    n: int
    level: float


def _rowwise_pearson(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    xc = x - x.mean(axis=-1, keepdims=True)
    yc = y - y.mean(axis=-1, keepdims=True)
    den = np.sqrt((xc * xc).sum(-1) * (yc * yc).sum(-1))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (xc * yc).sum(-1) / den
    r[~(den > 0)] = np.nan
    return np.clip(r, -1.0, 1.0)


def coefficients(x: np.ndarray, y: np.ndarray, method: str) -> np.ndarray:
    """Row-wise Pearson or Spearman coefficient of 2-D arrays (one sample per row)."""
    if method == "spearman":
        x = sps.rankdata(x, axis=-1)
        y = sps.rankdata(y, axis=-1)
    elif method != "pearson":
        raise ValueError(f"method: {method!r} is not one of pearson, spearman")
    return _rowwise_pearson(np.asarray(x, float), np.asarray(y, float))


def correlation(
    x: Sequence[float] | np.ndarray,
    y: Sequence[float] | np.ndarray,
    method: str = "pearson",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> Correlation:
    """Pearson or Spearman r of the finite (x, y) pairs with a percentile-bootstrap CI.

    The CI resamples pairs with replacement `n_boot` times; resamples in which x or y is
    constant have no coefficient and are left out. r and the CI are NaN with fewer than three
    pairs or a constant variable.
    """
    xa, ya = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(xa) & np.isfinite(ya)
    xa, ya = xa[keep], ya[keep]
    n = int(xa.size)
    nan = float("nan")
    if n < 3:
        return Correlation(method, nan, nan, nan, n, level)
    r = float(coefficients(xa[None, :], ya[None, :], method)[0])
    if not np.isfinite(r):
        return Correlation(method, nan, nan, nan, n, level)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(n_boot, n))
    boot = coefficients(xa[idx], ya[idx], method)
    boot = boot[np.isfinite(boot)]
    if boot.size < max(10, n_boot // 10):
        return Correlation(method, r, nan, nan, n, level)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(boot, [alpha, 1.0 - alpha])
    return Correlation(method, r, float(lo), float(hi), n, level)


def correlation_difference(
    x1: np.ndarray, x2: np.ndarray, y: np.ndarray, method: str = "spearman",
    n_boot: int = 2000, level: float = 0.95, seed: int = 0,
) -> tuple[float, float, float]:
    """|r(x1, y)| − |r(x2, y)| with a paired percentile-bootstrap CI (same resampled points
    for both coefficients)."""
    x1, x2, y = (np.asarray(v, dtype=float) for v in (x1, x2, y))
    keep = np.isfinite(x1) & np.isfinite(x2) & np.isfinite(y)
    x1, x2, y = x1[keep], x2[keep], y[keep]
    n = len(y)
    if n < 3:
        return math.nan, math.nan, math.nan
    point = float(abs(coefficients(x1[None], y[None], method)[0])
                  - abs(coefficients(x2[None], y[None], method)[0]))  # fmt: skip
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = (np.abs(coefficients(x1[idx], y[idx], method))
            - np.abs(coefficients(x2[idx], y[idx], method)))  # fmt: skip
    boot = boot[np.isfinite(boot)]
    if boot.size < max(10, n_boot // 10):
        return point, math.nan, math.nan
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boot, [alpha, 1 - alpha])
    return point, float(lo), float(hi)


def correlation_table(
    points: pd.DataFrame,
    statistics: Sequence[str],
    measure: str,
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Pearson and Spearman r of each statistic against `measure`, with bootstrap CIs.

    Columns: statistic, label, n, pearson, pearson_lo, pearson_hi, spearman, spearman_lo,
    spearman_hi, r2 (Pearson r², the share of the measure's variance a line explains).
    """
    rows = []
    for stat in statistics:
        p = correlation(points[stat], points[measure], "pearson", n_boot, level, seed)
        s = correlation(points[stat], points[measure], "spearman", n_boot, level, seed)
        rows.append({
            "statistic": stat, "label": NOISE_STATISTICS.get(stat, metric_label(stat)),
            "n": p.n, "pearson": p.r, "pearson_lo": p.lo, "pearson_hi": p.hi,
            "spearman": s.r, "spearman_lo": s.lo, "spearman_hi": s.hi, "r2": p.r**2,
        })  # fmt: skip
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Cost of a run before it is launched
# --------------------------------------------------------------------------------------------

#: Step time relative to a plain step, per structure (the design's cost targets).
STRUCTURE_COST: dict[str, float] = {"none": 1.0, "isotropic": 1.3, "diag": 1.3, "full": 1.1}


#: Fixed time per operation on a small model, where Python and kernel-launch overheads and
#: not FLOPs set the pace (measured on a 2-core CPU with a 2-layer MLP on digits: about 2 ms
#: per training step, 4 ms per Hessian-vector product, 5 ms per evaluation).
OVERHEAD_SECONDS: dict[str, float] = {"step": 2e-3, "hvp": 4e-3, "evaluation": 5e-3}


@dataclass(frozen=True)
class Cost:
    """The work of one run: counts from the training loop's schedule and a FLOP estimate."""

    steps: int
    evaluations: int
    sharpness_evaluations: int
    hvps: int
    examples: int
    flops: float

    def fixed_seconds(self) -> float:
        """Time the per-operation overheads take whatever the FLOP rate."""
        o = OVERHEAD_SECONDS
        return self.steps * o["step"] + self.hvps * o["hvp"] + self.evaluations * o["evaluation"]


def evaluation_count(steps: int, eval_every: int) -> int:
    """Evaluations of a run: step 0, every `eval_every` steps, and the last step."""
    return 1 + steps // eval_every + (1 if steps % eval_every else 0)


def run_cost(config, n_train: int, n_test: int, forward_flops: float) -> Cost:
    """Work of one run of `config` (a RunConfig) on a data set of the given sizes.

    FLOPs: a training step is ≈ 3 forward passes per example times the structure's cost
    factor; an evaluation is a forward pass over train and test sets plus a gradient on the
    probe; a sharpness evaluation adds at most lanczos_iters + 1 (Lanczos and its residual
    check) + noise_samples Hessian-vector products on the probe at ≈ 6 forward passes each.
    `forward_flops` is one example's forward pass.
    """
    per_epoch = max(1, n_train // config.batch_size)
    steps = config.steps if config.steps is not None else max(1, round(config.epochs * per_epoch))
    evals = evaluation_count(steps, config.eval_every)
    every = config.sharpness_every
    sharp = 0 if every == 0 else -(-evals // every)
    hvps = sharp * (config.lanczos_iters + 1 + config.noise_samples)  # +1: Lanczos residual
    probe = min(config.probe_size, n_train)
    f = float(forward_flops)
    flops = steps * 3 * f * config.batch_size * STRUCTURE_COST.get(config.noise, 1.3)
    flops += evals * (f * (n_train + n_test) + 3 * f * probe)
    flops += hvps * 6 * f * probe
    return Cost(steps, evals, sharp, hvps, steps * config.batch_size, flops)


def run_seconds(cost: Cost, rate: float) -> float:
    """Estimated wall time of a run: its FLOPs at `rate` plus its fixed overheads."""
    return cost.flops / rate + cost.fixed_seconds()


def throughput(costs: Sequence[Cost], seconds: Sequence[float]) -> float | None:
    """Median FLOP rate of past runs: predicted FLOPs over the measured wall time left after
    the fixed overheads (runs with no time left are skipped); None without any."""
    rates = []
    for c, s in zip(costs, seconds, strict=True):
        left = (s or 0.0) - c.fixed_seconds()
        if left > 0 and c.flops > 0:
            rates.append(c.flops / left)
    return float(np.median(rates)) if rates else None


def grid_seconds(run_secs: Sequence[float], workers: int, overhead: float = 2.0) -> float:
    """Wall-clock estimate of a grid: runs (each its time + a start overhead) spread over
    `workers`, longest first onto the least-loaded worker."""
    per_run = sorted((t + overhead for t in run_secs), reverse=True)
    lanes = [0.0] * max(1, workers)
    for t in per_run:
        lanes[lanes.index(min(lanes))] += t
    return max(lanes) if per_run else 0.0


def forward_flops(dataset_shape: Sequence[int], num_classes: int, model: str, width: int,
                  depth: int) -> float:
    """Multiply-add FLOPs (2 per multiply-add) of one example's forward pass through the
    linear and convolution layers, counted with forward hooks on a zero input. Activations,
    pooling and normalisation are left out (a few percent)."""
    import torch
    from torch import nn

    from covnoise.core.models import build_model

    net = build_model(model, tuple(dataset_shape), num_classes, width=width, depth=depth)
    net.eval()
    total = [0.0]

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            total[0] += 2.0 * module.in_features * output.numel()
        else:  # convolution: each output value is a dot product over (C_in / groups) · kernel
            fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
            total[0] += 2.0 * fan_in * output.numel()

    layers = (nn.Linear, nn.Conv1d, nn.Conv2d)
    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, *dataset_shape))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def config_from_row(row: Mapping[str, object]):
    """The RunConfig stored in a runs-frame row (its ``config`` JSON), without validation."""
    from covnoise.config import RunConfig

    data = json.loads(str(row["config"]))
    known = set(RunConfig.__dataclass_fields__)
    return RunConfig(**{k: v for k, v in data.items() if k in known})
