"""The run, noise and palette figures of covnoise.viz: traces carry exactly the data they are
given, bands are mean ± std, the stability line is 2(1+β)/η, the fit line is the least-squares
line."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from covnoise import results, viz


def long_metrics(spec: dict[str, dict[str, list[float]]], steps: list[int]) -> pd.DataFrame:
    rows = []
    for rid, metrics in spec.items():
        for name, values in metrics.items():
            for step, v in zip(steps, values, strict=True):
                rows.append(
                    {"run_id": rid, "step": step, "epoch": step / 4, "name": name, "value": v}
                )
    return pd.DataFrame(rows)


def test_run_lines_figure_one_trace_per_run_in_label_order():
    curves = pd.DataFrame(
        {
            "run_id": ["a", "a", "b", "b", "b"],
            "x": [0, 1, 0, 1, 2],
            "value": [3.0, 2.0, 5.0, 4.0, 1.0],
        }
    )
    fig = viz.run_lines_figure(
        curves, {"b": "run B", "a": "run A", "c": "no data"}, "steps", "loss", log_y=True
    )
    assert [t.name for t in fig.data] == ["run B", "run A"]
    np.testing.assert_array_equal(fig.data[0].y, [5.0, 4.0, 1.0])
    np.testing.assert_array_equal(fig.data[1].x, [0, 1])
    assert fig.layout.yaxis.type == "log" and fig.layout.xaxis.title.text == "steps"
    assert fig.data[0].line.color != fig.data[1].line.color


def test_group_bands_figure_draws_mean_and_std_band():
    rng = np.random.default_rng(0)
    vals = rng.normal(size=(3, 5)) + 5
    curves = pd.DataFrame(
        {
            "run_id": np.repeat(["r0", "r1", "r2"], 5),
            "x": np.tile(np.arange(5.0), 3),
            "value": vals.ravel(),
        }
    )
    curves = pd.concat([curves, pd.DataFrame({"run_id": "s", "x": np.arange(5.0), "value": 1.0})])
    labels = pd.Series({"r0": "diag", "r1": "diag", "r2": "diag", "s": "none"})
    agg = results.aggregate_seeds(curves, labels)
    fig = viz.group_bands_figure(agg, "steps", "test loss")
    names = [t.name for t in fig.data]
    assert names == ["diag (n=3)", "", "diag ± std", "none (n=1)"]  # no band for one run
    mean, std = vals.mean(0), vals.std(0, ddof=1)
    np.testing.assert_allclose(fig.data[0].y, mean)
    np.testing.assert_allclose(fig.data[1].y, mean + std)
    np.testing.assert_allclose(fig.data[2].y, mean - std)
    assert fig.data[2].fill == "tonexty"
    # a log axis clips the lower band edge above zero
    agg.loc[agg.group == "diag", "std"] = 100.0
    low = viz.group_bands_figure(agg, "steps", "test loss", log_y=True).data[2].y
    assert np.all(np.asarray(low) > 0)


def test_live_figure_panels_and_stability_line():
    steps = [0, 5, 10]
    spec = {
        rid: {
            "train_loss": [2, 1, 0.5],
            "test_loss": [2.1, 1.2, 0.7],
            "train_acc": [0.1, 0.5, 0.8],
            "test_acc": [0.1, 0.4, 0.7],
            "sharpness": [1.0, 2.0, 3.0],
            "lr": lr,
            "noise_fro": [0, 0.1, 0.2],
            "noise_trace": [0, 1, 2],
            "noise_trace_hsigma": [0, 0.3, 0.6],
        }
        for rid, lr in (("a", [0.5, 0.5, 0.25]), ("b", [0.1, 0.1, 0.1]))
    }
    m = long_metrics(spec, steps)
    fig = viz.live_figure(m, {"a": "A", "b": "B"}, x="step", momentum={"a": 0.9})
    # the same axes keep the user's zoom across redraws; another axis or scale resets it
    again = viz.live_figure(m.iloc[:-3], {"a": "A", "b": "B"}, x="step")
    assert fig.layout.uirevision == again.layout.uirevision
    assert viz.live_figure(m, {"a": "A"}, x="step", log_loss=True).layout.uirevision not in (
        fig.layout.uirevision,
        None,
    )
    by_name = {t.name: t for t in fig.data}
    for label in ("A", "B"):
        for suffix in (
            "train loss",
            "test loss",
            "train acc",
            "test acc",
            "λ_max",
            "‖Σ‖_F",
            "tr Σ",
            "Tr(HΣ)",
            "2(1+β)/η",
        ):
            assert f"{label} · {suffix}" in by_name
    np.testing.assert_allclose(by_name["A · 2(1+β)/η"].y, 2 * 1.9 / np.array([0.5, 0.5, 0.25]))
    np.testing.assert_allclose(by_name["B · 2(1+β)/η"].y, 2 / 0.1)
    np.testing.assert_allclose(by_name["B · tr Σ"].y, [0, 1, 2])
    np.testing.assert_array_equal(by_name["A · test loss"].x, steps)
    assert by_name["A · test loss"].line.dash == "dash"
    # λ_max and its stability line share the third panel
    assert by_name["A · λ_max"].xaxis == by_name["A · 2(1+β)/η"].xaxis == "x3"
    # the epoch axis reads the epoch column
    fig_e = viz.live_figure(m, {"a": "A"}, x="epoch", x_label="epochs")
    np.testing.assert_allclose(fig_e.data[0].x, np.array(steps) / 4)


def test_live_figure_thins_long_traces_keeping_the_ends():
    steps = list(range(1001))
    m = long_metrics({"a": {"train_loss": [float(s) for s in steps]}}, steps)
    trace = viz.live_figure(m, {"a": "A"}, max_points=100).data[0]
    assert 50 <= len(trace.x) <= 100 and trace.x[0] == 0 and trace.x[-1] == 1000
    np.testing.assert_array_equal(trace.y, trace.x)  # the points kept are the real ones
    assert np.all(np.diff(trace.x) > 0)
    assert len(viz.live_figure(m, {"a": "A"}, max_points=None).data[0].x) == 1001


def test_live_figure_with_a_run_without_rows():
    fig = viz.live_figure(
        long_metrics({"a": {"train_loss": [1.0]}}, [0]), {"a": "A", "queued": "Q"}
    )
    assert [t.name for t in fig.data] == ["A · train loss"]


def test_live_figure_draws_validation_beside_train_and_test_only_when_logged():
    steps = [0, 5, 10]
    base = {
        "train_loss": [2, 1, 0.5],
        "test_loss": [2.1, 1.2, 0.7],
        "train_acc": [0.1, 0.5, 0.8],
        "test_acc": [0.1, 0.4, 0.7],
    }
    nan = [float("nan")] * 3
    spec = {
        "v": {**base, "val_loss": [2.2, 1.3, 0.9], "val_acc": [0.1, 0.3, 0.6]},
        "n": {**base, "val_loss": nan, "val_acc": nan},  # no split: NaN in every event
        "o": dict(base),  # stored before validation existed: no rows at all
    }
    m = long_metrics(spec, steps)
    fig = viz.live_figure(m, {"v": "V", "n": "N", "o": "O"})
    by_name = {t.name: t for t in fig.data}
    np.testing.assert_allclose(by_name["V · val loss"].y, [2.2, 1.3, 0.9])
    np.testing.assert_allclose(by_name["V · val acc"].y, [0.1, 0.3, 0.6])
    np.testing.assert_array_equal(by_name["V · val acc"].x, steps)
    assert by_name["V · val loss"].line.dash == "dot"
    # beside train and test: the same panel
    assert by_name["V · val loss"].xaxis == by_name["V · test loss"].xaxis == "x"
    assert by_name["V · val acc"].yaxis == by_name["V · test acc"].yaxis == "y2"
    assert not [n for n in by_name if n.startswith(("N · val", "O · val"))]
    titles = [a.text for a in fig.layout.annotations]
    assert titles[:2] == ["loss", "accuracy"]
    # short enough for three panels side by side at 1024 px; the styles are said below
    assert max(len(t) for t in titles) <= 12
    assert "dotted validation" in viz.live_key(True) and "validation" not in viz.live_key(False)
    # runs without validation draw exactly as before: same traces, same titles
    plain = viz.live_figure(m[m.run_id != "v"], {"n": "N", "o": "O"})
    assert [t.name for t in plain.data] == [
        f"{label} · {suffix}"
        for label in ("N", "O")
        for suffix in ("train loss", "test loss", "train acc", "test acc")
    ]
    assert [a.text for a in plain.layout.annotations] == [p[0] for p in viz.LIVE_PANELS]
    assert all(np.isfinite(np.asarray(t.y, dtype=float)).all() for t in plain.data)


def test_run_lines_figure_skips_runs_without_a_value():
    curves = pd.DataFrame(
        {"run_id": ["a", "a", "b", "b"], "x": [0, 1, 0, 1], "value": [1.0, 0.5, np.nan, np.nan]}
    )
    fig = viz.run_lines_figure(curves, {"a": "A", "b": "B"}, "steps", "validation loss")
    assert [t.name for t in fig.data] == ["A"]


def grouped_points() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "group": ["iso", "diag", "full", "none"],
            "n": [2, 2, 2, 2],
            "cfg_noise": ["isotropic", "diag", "full", "none"],
            "noise_fro": [0.01, 0.02, 0.15, 0.0],
            "noise_fro_std": [0.001] * 4,
            "noise_trace": [0.5, 0.5, 0.55, 0.0],
            "noise_trace_std": [0.01] * 4,
            "gen_gap": [0.045, 0.048, 0.04, 0.044],
            "gen_gap_std": [0.002] * 4,
        }
    )


def test_noise_scatter_figure_points_errors_and_fit():
    pts = grouped_points()
    fig = viz.noise_scatter_figure(pts, "noise_fro", "gen_gap", "‖Σ‖_F", "test − train loss")
    names = [t.name for t in fig.data]
    assert names == ["isotropic", "diag", "full", "none", "least-squares fit"]
    full = fig.data[2]
    assert full.x[0] == 0.15 and full.y[0] == 0.04 and full.error_y.array[0] == 0.002
    assert full.marker.color == viz.COLORS["full"]
    slope, intercept = np.polyfit(pts.noise_fro, pts.gen_gap, 1)
    line = fig.data[-1]
    np.testing.assert_allclose(line.y, slope * np.asarray(line.x) + intercept)
    # on a log axis the fit is in log10(x) and leaves out x = 0
    logfig = viz.noise_scatter_figure(pts, "noise_fro", "gen_gap", "x", "y", log_x=True)
    keep = pts.noise_fro > 0
    s2, i2 = np.polyfit(np.log10(pts.noise_fro[keep]), pts.gen_gap[keep], 1)
    np.testing.assert_allclose(logfig.data[-1].y, s2 * np.log10(logfig.data[-1].x) + i2)
    assert logfig.layout.xaxis.type == "log"


def test_noise_pair_figure_titles_carry_the_table():
    pts = grouped_points()
    table = results.correlation_table(pts, ["noise_fro", "noise_trace"], "gen_gap", n_boot=200)
    fig = viz.noise_pair_figure(pts, "gen_gap", "gap", table, labels=results.NOISE_STATISTICS)
    titles = [a.text for a in fig.layout.annotations]
    r = table.set_index("statistic").loc["noise_fro"]
    assert titles[0].startswith(f"‖Σ‖_F: r = {r.pearson:.2f} [{r.pearson_lo:.2f}, ")
    assert titles[1].startswith("tr Σ: r = ")
    assert len(fig.data) == 8  # four structures × two panels
    assert [t.showlegend for t in fig.data[:4]] == [True] * 4
    assert fig.data[4].xaxis == "x2"
    np.testing.assert_array_equal([t.x[0] for t in fig.data[4:]], pts.noise_trace)


def test_noise_pair_figure_with_undefined_correlation():
    pts = grouped_points().iloc[:2]
    table = results.correlation_table(pts, ["noise_fro", "noise_trace"], "gen_gap", n_boot=50)
    fig = viz.noise_pair_figure(pts, "gen_gap", "gap", table)
    assert [a.text for a in fig.layout.annotations] == [
        "noise_fro: r undefined",
        "noise_trace: r undefined",
    ]


@pytest.mark.parametrize("n", [1, 10, 16, 17, 40])
def test_palette_is_distinct_and_cycles_in_rounds(n):
    labels = [f"l{i}" for i in range(n)]
    pal = viz.palette(labels + labels[::-1])
    assert list(pal) == labels  # order of first appearance
    k = len(viz.RUN_PALETTE)
    ordered = sorted(labels)
    for start in range(0, n, k):  # each round of k keys (in sorted order) is distinct
        chunk = [pal[x] for x in ordered[start : start + k]]
        assert len(set(chunk)) == len(chunk)


def test_a_key_keeps_its_colour_whatever_is_drawn_beside_it():
    """A key alone gets its home colour; drawn with keys of other homes it keeps it; where
    two keys share a home, the one that sorts first keeps it and the other moves on."""
    from covnoise.viz.style import home_color

    ids = [f"run{i:03d}" for i in range(60)]
    home = {r: home_color(r) for r in ids}
    for r in ids:
        assert viz.palette([r])[r] == viz.RUN_PALETTE[home[r]]
    by_home: dict[int, list[str]] = {}
    for r in ids:
        by_home.setdefault(home[r], []).append(r)
    one_each = [group[0] for group in by_home.values()]  # distinct homes
    pal = viz.palette(one_each[::-1])
    assert all(pal[r] == viz.RUN_PALETTE[home[r]] for r in one_each)
    a, b = sorted(next(g for g in by_home.values() if len(g) > 1))[:2]
    pal = viz.palette([b, a])
    assert pal[a] == viz.RUN_PALETTE[home[a]] and pal[b] != pal[a]


def test_runs_keep_their_colour_across_figures_with_other_labels():
    curves = pd.DataFrame(
        [{"run_id": r, "x": x, "value": float(x)} for r in ("a1", "b2", "c3") for x in (0, 1)]
    )
    one = viz.run_lines_figure(curves, {"a1": "η=0.1 [a1]", "b2": "η=0.2 [b2]"}, "x", "y")
    two = viz.run_lines_figure(curves, {"c3": "other [c3]", "b2": "another label [b2]"}, "x", "y")
    colour = {t.name: t.line.color for t in [*one.data, *two.data]}
    assert colour["η=0.2 [b2]"] == colour["another label [b2]"]


def test_live_figure_marks_the_points_where_lanczos_did_not_converge():
    rows = []
    for step, sharp, ok in ((0, 1.0, 0.0), (10, 2.0, 1.0), (20, 3.0, 0.0)):
        rows += [
            {"run_id": "r", "step": step, "name": "sharpness", "value": sharp},
            {"run_id": "r", "step": step, "name": "sharpness_converged", "value": ok},
            {"run_id": "r", "step": step, "name": "lr", "value": 0.1},
        ]
    fig = viz.live_figure(pd.DataFrame(rows), {"r": "run"})
    missed = [t for t in fig.data if t.name == "run · λ_max not converged"]
    assert len(missed) == 1
    assert list(missed[0].x) == [0.0, 20.0] and list(missed[0].y) == [1.0, 3.0]
    done = [r if r["name"] != "sharpness_converged" else {**r, "value": 1.0} for r in rows]
    fig = viz.live_figure(pd.DataFrame(done), {"r": "run"})
    assert not [t for t in fig.data if "not converged" in (t.name or "")]
