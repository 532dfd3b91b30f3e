"""Claim 4's decisive test: equal-trace against equal-Frobenius arms, bootstrapped over runs.

At each matched multiplier s the study holds two designs of three arms each:

- *equal trace*: isotropic, diagonal and full noise at s (one tr Σ, ‖Σ‖_F far apart);
- *equal Frobenius*: full noise at s, isotropic and diagonal noise at s·r (one ‖Σ‖_F at the
  start of training, tr Σ far apart; r from the study's pilot, covnoise.results.calibration).

If ‖Σ‖_F characterises generalisation, the equal-Frobenius arms land close together while
the equal-trace arms spread; if tr Σ does, the reverse. The *spread* of a design is the range
(max − min) of its arms' mean test accuracies, where a diverged run counts at chance accuracy
(it generalises no better than a guess). D = mean over the matched s of
spread(equal trace) − spread(equal Frobenius); its interval is the percentile interval of
bootstrap resamples of the runs within each arm (the arms are fixed by the design, the seeds
are the random part), so seed noise enters it. The verdict rule is :func:`design_verdict`.

The rank correlation of the gap with ‖Σ‖_F and tr Σ over every noisy setting is kept as
supporting evidence; :func:`run_bootstrap_correlations` resamples the settings and, within
each, its runs (and the SB runs the gap is measured from), so the interval carries seed noise
as well as the choice of settings.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from covnoise.results.correlations import coefficients
from covnoise.results.study import EQUAL_FROBENIUS, MATCHED, Study

#: Accuracy a diverged run counts at in the design test: a guess among the classes.
CHANCE_ACCURACY = 0.1
#: Bootstrap resamples and level of the design test and the run-level correlations.
N_BOOT = 2000
LEVEL = 0.95
#: The two designs, in the order the tables show them.
DESIGNS = ("equal trace", "equal Frobenius")


@dataclass(frozen=True)
class DesignTest:
    """D = mean spread(equal trace) − mean spread(equal Frobenius) with its interval, and
    the spread of each design at each matched multiplier (point estimates)."""

    d: float
    lo: float
    hi: float
    spreads: pd.DataFrame  # matched_scale, design, spread, lo, hi
    n_boot: int


def design_arms(per_run: pd.DataFrame, study: Study) -> pd.DataFrame:
    """The runs of the two designs, with columns design and matched_scale (full noise's s that
    the arm's design is built around). Empty when the study has no equal-Frobenius arms."""
    if per_run.empty or not study.matched_scales or "sweep" not in per_run:
        return pd.DataFrame()
    base = per_run[np.isclose(per_run["lr"], study.base_lr) & (per_run["noise_source"] == "batch")]
    parts = []
    for s in study.matched_scales:
        trace = base[
            base["noise"].isin(["isotropic", "diag", "full"])
            & np.isclose(base["noise_scale"], s)
            & (base["sweep"] == "large batch + noise")
        ]
        full = trace[trace["noise"] == "full"]
        frob = base[base["sweep"].str.startswith(EQUAL_FROBENIUS)]
        frob = frob[frob["noise"].isin(MATCHED) & _matched(frob, s, study)]
        parts.append(trace.assign(design=DESIGNS[0], matched_scale=s))
        parts.append(pd.concat([full, frob]).assign(design=DESIGNS[1], matched_scale=s))
    return pd.concat(parts, ignore_index=True)


def _matched(frob: pd.DataFrame, s: float, study: Study) -> pd.Series:
    """Which equal-Frobenius runs match full noise at `s`: the i-th smallest multiplier of a
    structure belongs to the i-th matched scale (the ratio is the same for every s)."""
    order = sorted(study.matched_scales)
    rank = frob.groupby("noise")["noise_scale"].rank(method="dense").astype(int) - 1
    return rank == order.index(s)


def _accuracy(runs: pd.DataFrame) -> np.ndarray:
    """Final test accuracy, chance for a diverged run."""
    acc = runs["test_acc"].to_numpy(dtype=float)
    return np.where(runs["status"].to_numpy() == "diverged", CHANCE_ACCURACY, acc)


def _spread_draws(
    arms: list[np.ndarray], rng: np.random.Generator, n_boot: int
) -> tuple[float, np.ndarray]:
    """The range of the arms' mean accuracy, and its bootstrap draws (runs resampled with
    replacement within each arm)."""
    point = max(a.mean() for a in arms) - min(a.mean() for a in arms)
    means = np.stack([rng.choice(a, size=(n_boot, a.size)).mean(axis=1) for a in arms])
    return float(point), means.max(axis=0) - means.min(axis=0)


def design_test(
    per_run: pd.DataFrame, study: Study, n_boot: int = N_BOOT, seed: int = 0
) -> DesignTest | None:
    """The equal-trace vs equal-Frobenius test (None when the study lacks a design's arm or an
    arm has no completed run)."""
    runs = design_arms(per_run, study)
    if runs.empty:
        return None
    runs = runs[runs["status"].isin(["finished", "diverged"])]
    rng = np.random.default_rng(seed)
    alpha = (1 - LEVEL) / 2
    rows, draws = [], {d: [] for d in DESIGNS}
    for (s, design), g in runs.groupby(["matched_scale", "design"], sort=False):
        arms = [_accuracy(a) for _, a in g.groupby("arm", sort=False)]
        if len(arms) < 3 or any(a.size == 0 for a in arms):
            return None
        point, boot = _spread_draws(arms, rng, n_boot)
        lo, hi = np.quantile(boot, [alpha, 1 - alpha])
        rows.append({"matched_scale": s, "design": design, "spread": point, "lo": lo, "hi": hi})
        draws[design].append((point, boot))
    d = np.mean([p for p, _ in draws[DESIGNS[0]]]) - np.mean([p for p, _ in draws[DESIGNS[1]]])
    boot_d = np.mean([b for _, b in draws[DESIGNS[0]]], axis=0) - np.mean(
        [b for _, b in draws[DESIGNS[1]]], axis=0
    )
    lo, hi = np.quantile(boot_d, [alpha, 1 - alpha])
    return DesignTest(float(d), float(lo), float(hi), pd.DataFrame(rows), n_boot)


def design_verdict(test: DesignTest) -> str:
    """Reproduced when the interval of D lies above 0 (the equal-Frobenius arms land closer
    together than the equal-trace arms); "reversed" when it lies below 0 (tr Σ characterises
    the outcome better); partly when D > 0 but its interval includes 0; not reproduced when
    D ≤ 0 and the interval includes 0."""
    if test.lo > 0:
        return "reproduced"
    if test.hi < 0:
        return "reversed"
    return "partly" if test.d > 0 else "not reproduced"


def design_table(per_run: pd.DataFrame, study: Study) -> pd.DataFrame:
    """One row per (matched s, design, arm): runs, diverged, mean ± std test accuracy (with
    diverged runs at chance), mean ‖Σ‖_F and tr Σ over the run."""
    runs = design_arms(per_run, study)
    if runs.empty:
        return pd.DataFrame()
    runs = runs[runs["status"].isin(["finished", "diverged"])]
    rows = []
    for (s, design, arm), g in runs.groupby(["matched_scale", "design", "arm"], sort=False):
        acc = _accuracy(g)
        ok = g[g["status"] == "finished"]
        rows.append(
            {
                "matched_scale": s,
                "design": design,
                "arm": arm,
                "noise": g["noise"].iloc[0],
                "noise_scale": g["noise_scale"].iloc[0],
                "runs": len(g),
                "diverged": int((g["status"] == "diverged").sum()),
                "test_acc": float(acc.mean()),
                "test_acc_std": float(acc.std(ddof=1)) if acc.size > 1 else math.nan,
                "noise_fro": float(ok["noise_fro"].mean()) if len(ok) else math.nan,
                "noise_trace": float(ok["noise_trace"].mean()) if len(ok) else math.nan,
            }
        )
    return pd.DataFrame(rows)


def run_bootstrap_correlations(
    per_run: pd.DataFrame,
    settings: pd.DataFrame,
    sb_arm: str,
    n_boot: int = N_BOOT,
    seed: int = 0,
) -> pd.DataFrame:
    """Spearman ρ of the test-accuracy gap to SB with ‖Σ‖_F and with tr Σ over `settings`
    (rows of noise_settings: one per noisy arm), and the signed difference (−ρ_F) − (−ρ_tr),
    each with a two-level bootstrap interval: resample the settings, and within each drawn
    setting (and SB) its finished runs, then recompute the seed means and the coefficients."""
    ok = per_run[per_run["status"] == "finished"]
    arms = list(settings["arm"])
    if len(arms) < 3:
        return pd.DataFrame()
    by_arm = {a: ok[ok["arm"] == a] for a in arms}
    sb = ok.loc[ok["arm"] == sb_arm, "test_acc"].to_numpy(dtype=float)
    if sb.size == 0 or any(len(g) == 0 for g in by_arm.values()):
        return pd.DataFrame()
    cols = ("test_acc", "noise_fro", "noise_trace")
    values = {a: {c: by_arm[a][c].to_numpy(dtype=float) for c in cols} for a in arms}
    rng = np.random.default_rng(seed)
    k = len(arms)
    # means[c][b, i]: the resampled seed mean of column c of arm i in resample b
    means = {c: np.empty((n_boot, k)) for c in cols}
    for i, a in enumerate(arms):
        n = values[a]["test_acc"].size
        idx = rng.integers(0, n, size=(n_boot, n))
        for c in cols:
            means[c][:, i] = values[a][c][idx].mean(axis=1)
    sb_means = sb[rng.integers(0, sb.size, size=(n_boot, sb.size))].mean(axis=1)
    pick = rng.integers(0, k, size=(n_boot, k))
    rows_b = np.arange(n_boot)[:, None]
    gap = sb_means[:, None] - means["test_acc"][rows_b, pick]
    rho_f = coefficients(means["noise_fro"][rows_b, pick], gap, "spearman")
    rho_t = coefficients(means["noise_trace"][rows_b, pick], gap, "spearman")
    point_gap = (sb.mean() - settings["test_acc"]).to_numpy(dtype=float)
    point_f, point_t = (
        float(coefficients(settings[c].to_numpy(dtype=float)[None], point_gap[None], "spearman")[0])
        for c in ("noise_fro", "noise_trace")
    )
    alpha = (1 - LEVEL) / 2
    out = []
    for name, point, boot in (
        ("‖Σ‖_F", point_f, rho_f),
        ("tr Σ", point_t, rho_t),
        ("(−ρ_F) − (−ρ_tr)", point_t - point_f, rho_t - rho_f),
    ):
        finite = boot[np.isfinite(boot)]
        lo, hi = np.quantile(finite, [alpha, 1 - alpha]) if finite.size else (math.nan,) * 2
        out.append({"statistic": name, "spearman": point, "lo": float(lo), "hi": float(hi), "n": k})
    return pd.DataFrame(out)
