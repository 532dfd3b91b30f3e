"""Fewer points for the browser where it cannot change what a figure says.

A line of n points drawn into a plot a thousand or so pixels wide shows, in each horizontal
slice, the range between the slice's smallest and largest value. Keeping, in each of a few
hundred consecutive slices of the points, the one with the smallest and the one with the
largest value (of every series that shares the x values), plus the first and the last point,
draws the same envelope: no spike, dip or end point is lost, and every point drawn is a
real one (never an average). A slice that holds a missing value keeps one, so a gap in a line
stays a gap.

Clouds of many markers (scatters) are not thinned, since their density is what they show:
they are drawn with WebGL instead (`scatter_trace`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

#: Most points per line trace sent to the browser (a few per pixel of a wide figure).
MAX_LINE_POINTS = 2000
#: Marker traces with more points than this are drawn with WebGL (go.Scattergl).
WEBGL_MIN_POINTS = 1000


def extreme_indices(columns: Sequence[np.ndarray], max_points: int | None) -> np.ndarray:
    """Indices of at most `max_points` rows that keep the first and last row and, in each of
    equal consecutive slices of the rows between them, the rows of each column's smallest and
    largest value (and the slice's first missing value, if it has one). Sorted, unique.

    All of `range(n)` when n ≤ max_points (or max_points is None). Columns are 1-D, of equal
    length n, in the order the points are drawn.
    """
    cols = [np.asarray(c, dtype=float) for c in columns]
    n = len(cols[0]) if cols else 0
    if max_points is None or n <= max_points:
        return np.arange(n)
    if max_points < 2:
        raise ValueError(f"max_points must be at least 2, got {max_points}")
    if n <= 2:
        return np.arange(n)
    missing = np.zeros(n, dtype=bool)
    for c in cols:
        missing |= ~np.isfinite(c)
    per_slice = 2 * len(cols) + int(missing.any())
    slices = (max_points - 2) // per_slice
    if slices == 0:  # too few points for one slice: the ends only
        return np.array([0, n - 1])
    inner = n - 2
    size = -(-inner // slices)  # ceil: every slice but the last holds `size` rows
    slices = -(-inner // size)
    pad = slices * size - inner
    starts = 1 + np.arange(slices) * size
    keep = [np.array([0, n - 1])]
    for c in cols:
        v = np.concatenate([c[1:-1], np.full(pad, np.nan)]).reshape(slices, size)
        lo = np.where(np.isfinite(v), v, np.inf).argmin(axis=1)
        hi = np.where(np.isfinite(v), v, -np.inf).argmax(axis=1)
        keep += [starts + lo, starts + hi]
    if missing.any():
        m = np.concatenate([missing[1:-1], np.zeros(pad, dtype=bool)]).reshape(slices, size)
        has = m.any(axis=1)
        keep.append((starts + m.argmax(axis=1))[has])
    idx = np.unique(np.concatenate(keep))
    return idx[idx < n]


def scatter_trace(n_points: int, **kwargs) -> go.Scatter | go.Scattergl:
    """A marker trace: go.Scattergl (drawn by the browser's WebGL) when it has more than
    WEBGL_MIN_POINTS points, go.Scatter (SVG, one element per point) otherwise."""
    cls = go.Scattergl if n_points > WEBGL_MIN_POINTS else go.Scatter
    return cls(**kwargs)
