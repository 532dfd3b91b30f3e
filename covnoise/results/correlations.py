"""Correlations of a noise statistic with a generalisation measure, with bootstrap intervals.

Pearson and Spearman coefficients come with percentile-bootstrap confidence intervals that
resample whole points (pairs), the usual choice when nothing is known about the joint law;
scipy.stats.bootstrap draws the resamples. A resample in which a variable is constant has no
coefficient and is left out of the interval; with too few usable resamples (under a tenth, or
ten) the interval is NaN. The difference of two statistics' |r| with one measure resamples
the same points for both, so the interval is paired.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from covnoise.results.labels import NOISE_STATISTICS, metric_label


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


def _finite_pairs(*columns: Sequence[float] | np.ndarray) -> list[np.ndarray]:
    """The columns as float arrays, keeping only the points where every column is finite."""
    arrays = [np.asarray(c, dtype=float) for c in columns]
    keep = np.logical_and.reduce([np.isfinite(a) for a in arrays])
    return [a[keep] for a in arrays]


def _interval(
    samples: Sequence[np.ndarray],
    statistic: Callable[..., np.ndarray],
    n_boot: int,
    level: float,
    seed: int,
) -> tuple[float, float]:
    """Percentile-bootstrap interval of `statistic` over `n_boot` paired resamples.

    `statistic` takes the resampled columns (one resample per row) and returns one value per
    row, NaN where it is undefined; those resamples are left out.
    """
    with warnings.catch_warnings():  # scipy warns when a resample's statistic is NaN
        warnings.simplefilter("ignore", sps.DegenerateDataWarning)
        res = sps.bootstrap(
            tuple(samples),
            lambda *cols, axis=-1: statistic(*cols),
            n_resamples=n_boot,
            paired=True,
            vectorized=True,
            confidence_level=level,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
    boot = res.bootstrap_distribution
    finite = np.isfinite(boot)
    if finite.sum() < max(10, n_boot // 10):
        return math.nan, math.nan
    lo, hi = res.confidence_interval
    if not finite.all():  # scipy's interval is NaN then: take it over the usable resamples
        alpha = (1.0 - level) / 2.0
        lo, hi = np.quantile(boot[finite], [alpha, 1.0 - alpha])
    return float(lo), float(hi)


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
    xa, ya = _finite_pairs(x, y)
    n = int(xa.size)
    nan = float("nan")
    if n < 3:
        return Correlation(method, nan, nan, nan, n, level)
    r = float(coefficients(xa[None, :], ya[None, :], method)[0])
    if not np.isfinite(r):
        return Correlation(method, nan, nan, nan, n, level)
    lo, hi = _interval((xa, ya), lambda u, v: coefficients(u, v, method), n_boot, level, seed)
    return Correlation(method, r, lo, hi, n, level)


def correlation_difference(
    x1: np.ndarray,
    x2: np.ndarray,
    y: np.ndarray,
    method: str = "spearman",
    n_boot: int = 2000,
    level: float = 0.95,
    seed: int = 0,
    direction: int | None = None,
) -> tuple[float, float, float]:
    """|r(x1, y)| − |r(x2, y)| with a paired percentile-bootstrap CI (same resampled points
    for both coefficients). With `direction` (+1 or −1) the coefficients keep their sign:
    direction · (r(x1, y) − r(x2, y)), so a statistic counts only when it tracks y the
    predicted way."""
    x1, x2, y = _finite_pairs(x1, x2, y)
    if len(y) < 3:
        return math.nan, math.nan, math.nan
    if direction not in (None, 1, -1):
        raise ValueError(f"direction: {direction!r} is not one of None, 1, -1")

    def score(r: np.ndarray) -> np.ndarray:
        return np.abs(r) if direction is None else direction * r

    def gain(u1: np.ndarray, u2: np.ndarray, v: np.ndarray) -> np.ndarray:
        return score(coefficients(u1, v, method)) - score(coefficients(u2, v, method))

    point = float(gain(x1[None], x2[None], y[None])[0])
    lo, hi = _interval((x1, x2, y), gain, n_boot, level, seed)
    return point, lo, hi


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
        rows.append(
            {
                "statistic": stat,
                "label": NOISE_STATISTICS.get(stat, metric_label(stat)),
                "n": p.n,
                "pearson": p.r,
                "pearson_lo": p.lo,
                "pearson_hi": p.hi,
                "spearman": s.r,
                "spearman_lo": s.lo,
                "spearman_hi": s.hi,
                "r2": p.r**2,
            }
        )
    return pd.DataFrame(rows)
