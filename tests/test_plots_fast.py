"""What the browser is sent for many points: long lines are thinned without changing what they
show (every point kept is a real one; the first, last and each stretch's extremes are kept, so
the envelope at any window is the same), and big clouds are WebGL traces carrying every sample.

The checks are independent of how the thinning picks its slices: they compare the kept points
with the input by their x values, and the envelope over windows of the input."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covnoise import viz
from covnoise.theory import geometry
from covnoise.viz.thinning import MAX_LINE_POINTS, WEBGL_MIN_POINTS, extreme_indices


def spiky_walk(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y = np.cumsum(rng.normal(size=n))
    y[rng.choice(n, 12, replace=False)] += rng.choice([-50.0, 50.0], 12)  # isolated spikes
    return y


def assert_same_envelope(y: np.ndarray, keep: np.ndarray, slack: int) -> None:
    """Over any window of the input wider than 2·slack points, the kept points inside it reach
    at least the input's extremes over the window shrunk by `slack` on each side."""
    rng = np.random.default_rng(1)
    kept = np.zeros(len(y), dtype=bool)
    kept[keep] = True
    for _ in range(300):
        a = int(rng.integers(0, len(y) - 4 * slack))
        b = int(rng.integers(a + 4 * slack, len(y) + 1))
        inner = y[a + slack : b - slack]
        shown = y[a:b][kept[a:b]]
        assert shown.max() >= inner.max() and shown.min() <= inner.min()


def test_extreme_indices_keeps_ends_extremes_and_the_envelope():
    y = spiky_walk(100_000)
    keep = extreme_indices([y], 2000)
    assert len(keep) <= 2000 and np.all(np.diff(keep) > 0)
    assert keep[0] == 0 and keep[-1] == len(y) - 1
    assert y.argmax() in keep and y.argmin() in keep
    # the 12 spikes are local extremes of their neighbourhood: all still drawn
    spikes = np.flatnonzero(np.abs(y - np.convolve(y, np.ones(9) / 9, mode="same")) > 20)
    assert set(spikes[(spikes > 4) & (spikes < len(y) - 5)]) <= set(keep)
    assert_same_envelope(y, keep, slack=len(y) // 900)


def test_extreme_indices_keeps_short_series_whole_and_gaps():
    np.testing.assert_array_equal(extreme_indices([np.arange(10.0)], 10), np.arange(10))
    np.testing.assert_array_equal(extreme_indices([np.arange(10.0)], None), np.arange(10))
    y = spiky_walk(10_000)
    y[5000:5003] = np.nan  # a gap in the line stays a gap
    keep = extreme_indices([y], 300)
    assert len(keep) <= 300
    assert np.isnan(y[keep]).any()
    # two columns: the extremes of each are kept
    z = -spiky_walk(10_000, seed=3)
    both = extreme_indices([np.nan_to_num(y), z], 500)
    assert len(both) <= 500 and z.argmax() in both and z.argmin() in both
    with pytest.raises(ValueError):
        extreme_indices([np.arange(10.0)], 1)


def test_run_lines_figure_thins_long_runs_to_real_points():
    n = 50_000
    x = np.arange(n) * 3.0
    ya, yb = spiky_walk(n), spiky_walk(300, seed=2)
    curves = pd.concat(
        [
            pd.DataFrame({"run_id": "a", "x": x, "value": ya}),
            pd.DataFrame({"run_id": "b", "x": x[:300], "value": yb}),
        ]
    )
    fig = viz.run_lines_figure(curves, {"a": "A", "b": "B"}, "steps", "loss")
    long, short = fig.data
    assert len(long.x) <= MAX_LINE_POINTS and long.mode == "lines"
    # the points kept are the input's, read back by their x values
    truth = dict(zip(x, ya, strict=True))
    np.testing.assert_array_equal(long.y, [truth[v] for v in long.x])
    assert long.x[0] == x[0] and long.x[-1] == x[-1]
    assert long.y.max() == ya.max() and long.y.min() == ya.min()
    # a short run is drawn whole, with its markers
    np.testing.assert_array_equal(short.y, yb)
    assert short.mode == "lines+markers"
    assert len(viz.run_lines_figure(curves, {"a": "A"}, "s", "l", max_points=None).data[0].x) == n


def test_group_bands_figure_thins_mean_and_band_at_the_same_x():
    n = 30_000
    x = np.arange(n, dtype=float)
    mean, std = spiky_walk(n), np.abs(spiky_walk(n, seed=5)) / 10
    agg = pd.DataFrame({"group": "g", "x": x, "mean": mean, "std": std, "n": 3})
    fig = viz.group_bands_figure(agg, "steps", "loss", max_points=1200)
    line, upper, lower = fig.data
    assert len(line.x) <= 1200
    np.testing.assert_array_equal(line.x, upper.x)
    np.testing.assert_array_equal(line.x, lower.x)
    at = np.searchsorted(x, line.x)
    np.testing.assert_array_equal(line.y, mean[at])
    np.testing.assert_allclose(upper.y, (mean + std)[at])
    np.testing.assert_allclose(lower.y, (mean - std)[at])
    assert upper.y.max() == pytest.approx((mean + std).max())
    assert lower.y.min() == pytest.approx((mean - std).min())


def test_live_figure_keeps_a_spike_that_even_spacing_would_drop():
    steps = list(range(5001))
    values = [1.0] * 5001
    values[1234] = 40.0  # one diverging evaluation between evenly spaced picks
    rows = pd.DataFrame({"run_id": "a", "step": steps, "name": "train_loss", "value": values})
    trace = viz.live_figure(rows, {"a": "A"}, max_points=400).data[0]
    assert len(trace.x) <= 400 and 1234 in trace.x and max(trace.y) == 40.0


def geometry_figure(n_samples: int):
    frames = geometry.geometry_frames(
        geometry.one_step_clouds(geometry.GeometrySettings(n_samples=n_samples))
    )
    fig = viz.geometry_panel_figure(
        "full", frames["samples"], frames["ellipses"], frames["points"], frames["contours"]
    )
    cloud = frames["samples"][frames["samples"]["method"] == "full"]
    return fig, cloud


@pytest.mark.parametrize("n_samples", [5000, 300])
def test_geometry_cloud_is_webgl_when_large_and_carries_every_sample(n_samples):
    fig, cloud = geometry_figure(n_samples)
    (updates,) = [t for t in fig.data if t.name == "updates"]
    assert len(cloud) == n_samples
    assert updates.type == ("scattergl" if n_samples > WEBGL_MIN_POINTS else "scatter")
    np.testing.assert_array_equal(updates.x, cloud["x"].to_numpy())
    np.testing.assert_array_equal(updates.y, cloud["y"].to_numpy())
