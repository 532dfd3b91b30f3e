"""The analysis of covnoise.results (labels, curves, summaries, correlations, cost) against
independent references: closed-form and recursive smoothing, numpy/scipy statistics, a
hand-written percentile bootstrap and the Monte-Carlo coverage of the intervals, forward-hook
FLOP counts, and a real training run's events for the cost counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats as sps

from covnoise import results
from covnoise.config import MODELS, RunConfig
from covnoise.core.models import build_model
from covnoise.core.train import run
from covnoise.data import DATASETS

# --------------------------------------------------------------------------------------------
# helpers: frames in the store's layout
# --------------------------------------------------------------------------------------------


def runs_frame(configs: list[RunConfig]) -> pd.DataFrame:
    """A runs frame as RunStore.runs() gives it: run_id, config JSON and cfg_ columns."""
    rows = []
    for cfg in configs:
        row = {"run_id": cfg.run_id(), "config": cfg.to_json(), "status": "finished"}
        row.update({f"cfg_{k}": v for k, v in cfg.to_dict().items() if k != "name"})
        rows.append(row)
    return pd.DataFrame(rows)


def long_metrics(rows: list[tuple[str, int, str, float]]) -> pd.DataFrame:
    """Long metrics from (run_id, step, name, value); epoch = step / 10, wall = step * 0.5."""
    df = pd.DataFrame(rows, columns=["run_id", "step", "name", "value"])
    df["epoch"] = df["step"] / 10
    df["examples_seen"] = df["step"] * 100
    df["wall_time"] = df["step"] * 0.5
    return df


BASE = RunConfig(
    dataset="digits",
    model="mlp",
    width=16,
    depth=2,
    batch_size=128,
    small_batch=16,
    steps=20,
    epochs=None,
    eval_every=5,
    probe_size=32,
)


# --------------------------------------------------------------------------------------------
# smoothing
# --------------------------------------------------------------------------------------------


def test_ema_matches_the_closed_form_weighted_average():
    rng = np.random.default_rng(0)
    x = rng.normal(size=40)
    x[[3, 17]] = np.nan
    w = 0.8
    got = results.ema(x, w)
    finite = x[np.isfinite(x)]
    # closed form over the finite points: (1-w) Σ_i w^{k-i} x_i / (1 - w^k)
    ref = [
        (1 - w) * sum(w ** (k - 1 - i) * finite[i] for i in range(k)) / (1 - w**k)
        for k in range(1, finite.size + 1)
    ]
    assert np.isnan(got[[3, 17]]).all()
    np.testing.assert_allclose(got[np.isfinite(x)], ref, rtol=1e-12)
    # a constant series is unchanged (debiasing), weight 0 is the identity
    np.testing.assert_allclose(results.ema(np.full(10, 3.0), 0.9), 3.0, rtol=1e-12)
    np.testing.assert_array_equal(results.ema(finite, 0.0), finite)
    with pytest.raises(ValueError, match="weight"):
        results.ema(finite, 1.0)


def _recursive_ema(x: np.ndarray, w: float) -> np.ndarray:
    """Reference: the debiased EMA as a recursion over the finite points (NaN, ±inf skipped)."""
    out = np.full_like(x, np.nan)
    s, k = 0.0, 0
    for i, v in enumerate(x):
        if not np.isfinite(v):
            continue
        s = w * s + (1.0 - w) * v
        k += 1
        out[i] = s / (1.0 - w**k) if w > 0 else v
    return out


def test_ema_equals_the_recursive_debiased_average():
    rng = np.random.default_rng(6)
    for trial in range(40):
        n = int(rng.integers(1, 600))
        x = rng.normal(size=n) * 10 ** rng.uniform(-3, 3) + rng.normal()
        x[rng.random(n) < rng.uniform(0, 0.5)] = np.nan
        if trial % 4 == 0:
            x[rng.integers(0, n)] = np.inf
        if trial % 5 == 0:
            x[: min(n, 3)] = np.nan
        scale = np.nanmax(np.abs(np.where(np.isfinite(x), x, np.nan)), initial=1.0)
        for w in (0.0, 0.3, 0.9, 0.99, float(rng.uniform(0, 1))):
            got, ref = results.ema(x, w), _recursive_ema(x, w)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12 * scale)


def test_smooth_runs_each_run_separately():
    m = long_metrics(
        [("a", s, "test_loss", float(s)) for s in range(5)]
        + [("b", s, "test_loss", 100.0 - s) for s in range(5)]
    )
    c = results.curves(m, "test_loss", "step")
    sm = results.smooth(c, 0.5)
    for rid in ("a", "b"):
        raw = c.loc[c.run_id == rid, "value"].to_numpy()
        np.testing.assert_allclose(sm.loc[sm.run_id == rid, "value"], results.ema(raw, 0.5))


# --------------------------------------------------------------------------------------------
# curves and seed aggregation
# --------------------------------------------------------------------------------------------


def test_curves_picks_the_x_axis_and_sorts():
    m = long_metrics(
        [("a", 10, "train_loss", 1.0), ("a", 0, "train_loss", 2.0), ("a", 5, "test_loss", 9.0)]
    )
    for x, scale in (("step", 1), ("epoch", 0.1), ("examples_seen", 100), ("wall_time", 0.5)):
        c = results.curves(m, "train_loss", x)
        np.testing.assert_allclose(c["x"], [0, 10 * scale])
        np.testing.assert_allclose(c["value"], [2.0, 1.0])
    with pytest.raises(ValueError, match="x"):
        results.curves(m, "train_loss", "minutes")


def test_aggregate_seeds_mean_and_sample_std_on_shared_steps():
    rng = np.random.default_rng(1)
    steps = [0, 5, 10, 15]
    values = rng.normal(size=(3, 4))
    m = long_metrics(
        [(f"r{i}", s, "test_loss", values[i, j]) for i in range(3) for j, s in enumerate(steps)]
        + [("solo", s, "test_loss", 7.0) for s in steps]
    )
    labels = pd.Series({"r0": "g", "r1": "g", "r2": "g", "solo": "h"})
    agg = results.aggregate_seeds(results.curves(m, "test_loss"), labels)
    g = agg[agg.group == "g"]
    np.testing.assert_allclose(g["x"], steps)
    np.testing.assert_allclose(g["mean"], values.mean(0), rtol=1e-12)
    np.testing.assert_allclose(g["std"], values.std(0, ddof=1), rtol=1e-12)
    assert (g["n"] == 3).all()
    h = agg[agg.group == "h"]
    assert (h["n"] == 1).all() and h["std"].isna().all()


def test_aggregate_seeds_interpolates_runs_on_different_grids():
    # two runs logged at different x (wall time): the common grid is the union inside the
    # overlap and each run is interpolated linearly there
    xa, ya = np.array([0.0, 1.0, 2.0, 3.0]), np.array([4.0, 3.0, 1.0, 0.0])
    xb, yb = np.array([0.5, 1.5, 2.5]), np.array([5.0, 2.0, 1.0])
    c = pd.DataFrame({"run_id": ["a"] * 4 + ["b"] * 3, "x": np.r_[xa, xb], "value": np.r_[ya, yb]})
    agg = results.aggregate_seeds(c, pd.Series({"a": "g", "b": "g"}))
    grid = np.array([0.5, 1.0, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(agg["x"], grid)
    ref = np.vstack([np.interp(grid, xa, ya), np.interp(grid, xb, yb)])
    np.testing.assert_allclose(agg["mean"], ref.mean(0))
    np.testing.assert_allclose(agg["std"], ref.std(0, ddof=1))


def test_varying_keys_and_group_labels():
    configs = [BASE.replace(noise=n, seed=s) for n in ("none", "full") for s in (0, 1)]
    runs = runs_frame(configs)
    assert results.varying_keys(runs) == ["noise"]  # the seed is not an experiment key
    labels = results.group_labels(runs, ["noise", "batch_size"])
    assert labels[configs[0].run_id()] == "noise=none · L=128"
    assert labels[configs[3].run_id()] == "noise=full · L=128"
    assert set(results.group_labels(runs, [])) == {"all runs"}
    # how often a run is measured does not change its trajectory: not a label by default
    runs2 = runs_frame([*configs, BASE.replace(noise="none", eval_every=50, probe_size=64)])
    assert results.varying_keys(runs2) == ["noise"]
    assert "eval_every" in results.varying_keys(runs2, exclude=["seed"])


def test_labels_tag_drop_last_and_fisher_only_where_they_differ_from_the_default():
    plain = BASE.replace(noise="full")
    fisher = BASE.replace(noise="full", noise_source="fisher")
    dropped = BASE.replace(noise="diag", drop_last=True)
    both = BASE.replace(noise="diag", noise_source="fisher", drop_last=True)
    quiet = BASE.replace(noise="none", noise_source="fisher")  # no noise: no source to name
    configs = [plain, fisher, dropped, both, quiet]
    runs = runs_frame(configs)
    tags = results.run_tags(runs)
    assert [tags[c.run_id()] for c in configs] == [
        "",
        "fisher",
        "drop-last",
        "fisher · drop-last",
        "",
    ]
    assert results.config_tags(both.to_dict()) == ["fisher", "drop-last"]
    # the tags follow the keys; a tagged key is named by its tag alone
    labels = results.group_labels(runs, ["noise"])
    assert [labels[c.run_id()] for c in configs] == [
        "noise=full",
        "noise=full · fisher",
        "noise=diag · drop-last",
        "noise=diag · fisher · drop-last",
        "noise=none",
    ]
    by_tag = results.group_labels(runs, ["noise", "drop_last", "noise_source"])
    assert by_tag[dropped.run_id()] == "noise=diag · drop-last"
    # grouped by a tagged key alone, a default run still gets a non-empty label
    alone = results.group_labels(runs, ["drop_last"])
    assert alone[plain.run_id()] == "drop-last=False" and alone[dropped.run_id()] == "drop-last"
    assert set(results.group_labels(runs, [])) == {"all runs"}
    # the seed-free label of each run: the fields that vary, then the tags
    assert set(results.varying_keys(runs)) == {"noise", "noise_source", "drop_last"}
    assert results.experiment_labels(runs)[both.run_id()] == "noise=diag · fisher · drop-last"
    # validation fraction is a plain key; readable names come from the config metadata
    val = runs_frame([BASE, BASE.replace(val_fraction=0.0)])
    assert results.varying_keys(val) == ["val_fraction"]
    assert results.group_labels(val, ["val_fraction"]).tolist() == ["val=0.1", "val=0"]
    assert results.key_label("val_fraction") == "validation fraction"
    assert results.key_label("drop_last") == "drop the last partial batch"
    assert results.key_label("not_a_field") == "not_a_field"
    assert results.metric_label("val_acc") == "validation accuracy"
    assert results.metric_label("val_loss") == "validation loss"


# --------------------------------------------------------------------------------------------
# per-run points and seed groups
# --------------------------------------------------------------------------------------------


def test_run_points_final_and_mean_values():
    configs = [BASE.replace(noise="diag", seed=s) for s in (0, 1)]
    runs = runs_frame(configs)
    a, b = (c.run_id() for c in configs)
    rows = []
    for rid, k in ((a, 1.0), (b, 2.0)):
        for step in (0, 5, 10):
            rows += [
                (rid, step, "train_loss", k / (step + 1)),
                (rid, step, "test_loss", k),
                (rid, step, "test_acc", 0.1 * step),
                (rid, step, "noise_fro", k * step),
                (rid, step, "noise_trace", 3.0),
                (rid, step, "noise_trace_hsigma", k),
            ]
    m = long_metrics(rows)
    pts = results.run_points(runs, m, how="mean").set_index("run_id")
    assert pts.loc[a, "noise_fro"] == pytest.approx(np.mean([0, 5, 10]))
    assert pts.loc[b, "noise_fro"] == pytest.approx(2 * np.mean([0, 5, 10]))
    assert pts.loc[a, "train_loss"] == pytest.approx(1 / 11)  # last evaluation
    assert pts.loc[b, "gen_gap"] == pytest.approx(2 - 2 / 11)
    assert pts.loc[a, "test_acc"] == pytest.approx(1.0)
    assert pts.loc[a, "batch_size"] == 128
    fin = results.run_points(runs, m, how="final").set_index("run_id")
    assert fin.loc[b, "noise_fro"] == pytest.approx(20.0)
    grouped = results.group_seeds(pts.reset_index(), ["noise_fro", "gen_gap"])
    assert len(grouped) == 1 and grouped["n"].iloc[0] == 2
    assert grouped["noise_fro"].iloc[0] == pytest.approx(np.mean([5, 10]))
    assert grouped["noise_fro_std"].iloc[0] == pytest.approx(np.std([5, 10], ddof=1))


# --------------------------------------------------------------------------------------------
# correlations
# --------------------------------------------------------------------------------------------


def test_correlation_point_estimates_match_scipy():
    rng = np.random.default_rng(2)
    x = rng.normal(size=30)
    y = 0.6 * x + rng.normal(size=30)
    y[4] = np.nan  # dropped with its pair
    keep = np.isfinite(y)
    p = results.correlation(x, y, "pearson", n_boot=500)
    s = results.correlation(x, y, "spearman", n_boot=500)
    assert p.n == 29
    assert p.r == pytest.approx(sps.pearsonr(x[keep], y[keep])[0], abs=1e-12)
    assert s.r == pytest.approx(sps.spearmanr(x[keep], y[keep])[0], abs=1e-12)
    assert p.lo < p.r < p.hi and s.lo < s.r < s.hi


def _percentile_bootstrap(stat, columns, n_boot: int, level: float, seed: int):
    """Reference: resample whole points `n_boot` times, leave out undefined (NaN) resamples,
    take the percentile interval; NaN with fewer than max(10, n_boot / 10) left."""
    n = len(columns[0])
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boot = stat(*(c[idx] for c in columns))
    boot = boot[np.isfinite(boot)]
    if boot.size < max(10, n_boot // 10):
        return math.nan, math.nan
    alpha = (1 - level) / 2
    return tuple(np.quantile(boot, [alpha, 1 - alpha]))


def _bootstrap_data():
    """A few data sets: strong and weak dependence, ties, and three points (where about one
    resample in nine has a constant variable)."""
    rng = np.random.default_rng(7)
    out = []
    for n, rho in ((40, 0.6), (25, 0.1), (12, 0.8), (3, 0.5)):
        x = rng.normal(size=n)
        y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)
        out.append((x, y, rng.normal(size=n)))
    x = np.round(rng.normal(size=15))
    out.append((x, x + rng.normal(size=15), rng.normal(size=15)))
    return out


@pytest.mark.parametrize("method", ["pearson", "spearman"])
def test_correlation_intervals_agree_with_the_percentile_bootstrap(method):
    # each reference interval with 20 seeds gives the Monte-Carlo spread of its ends; the
    # library's interval must lie within four of those standard deviations of the reference
    def stat(u, v):
        return results.coefficients(u, v, method)

    for x, y, _ in _bootstrap_data():
        got = results.correlation(x, y, method, n_boot=1000, seed=3)
        refs = np.array([_percentile_bootstrap(stat, (x, y), 1000, 0.95, s) for s in range(20)])
        ref = _percentile_bootstrap(stat, (x, y), 1000, 0.95, 3)
        spread = np.maximum(refs.std(axis=0, ddof=1), 1e-9)
        assert np.all(np.isfinite([got.lo, got.hi]))
        assert abs(got.lo - ref[0]) <= 4 * spread[0] + 1e-12
        assert abs(got.hi - ref[1]) <= 4 * spread[1] + 1e-12


def test_correlation_difference_is_a_paired_bootstrap():
    def stat(u1, u2, v):
        return np.abs(results.coefficients(u1, v, "spearman")) - np.abs(
            results.coefficients(u2, v, "spearman")
        )

    for x, y, x2 in _bootstrap_data():
        d, lo, hi = results.correlation_difference(x, x2, y, n_boot=1000, seed=5)
        cols = (x, x2, y)
        refs = np.array([_percentile_bootstrap(stat, cols, 1000, 0.95, s) for s in range(20)])
        ref = _percentile_bootstrap(stat, cols, 1000, 0.95, 5)
        spread = np.maximum(refs.std(axis=0, ddof=1), 1e-9)
        assert d == pytest.approx(stat(x[None], x2[None], y[None])[0], abs=1e-12)
        assert abs(lo - ref[0]) <= 4 * spread[0] + 1e-12
        assert abs(hi - ref[1]) <= 4 * spread[1] + 1e-12
        # paired: both coefficients see the same resampled points, so a statistic compared
        # with itself (or its mirror image) differs by exactly zero in every resample
        assert results.correlation_difference(x, x, y, n_boot=200) == (0.0, 0.0, 0.0)
        assert results.correlation_difference(x, -x, y, n_boot=200) == (0.0, 0.0, 0.0)


def test_bootstrap_ci_agrees_with_fisher_z_for_a_large_sample():
    # n = 400 bivariate normal: the Fisher-z interval is accurate, and the percentile bootstrap
    # must agree with it to within its Monte-Carlo error (~0.01 with 4000 resamples)
    rng = np.random.default_rng(3)
    n, rho = 400, 0.5
    x = rng.normal(size=n)
    y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)
    c = results.correlation(x, y, "pearson", n_boot=4000, seed=1)
    z, half = np.arctanh(c.r), 1.959964 / np.sqrt(n - 3)
    assert c.lo == pytest.approx(np.tanh(z - half), abs=0.02)
    assert c.hi == pytest.approx(np.tanh(z + half), abs=0.02)


def test_bootstrap_ci_covers_the_true_correlation_about_95_percent_of_the_time():
    # 300 independent samples of n = 40 with ρ = 0.5. The percentile bootstrap is known to
    # under-cover slightly at this n (about 93%); the Monte-Carlo standard error of the
    # coverage is √(0.95·0.05/300) ≈ 1.3%, so [0.88, 0.99] is about ±4 s.e. around that.
    rng = np.random.default_rng(4)
    n, rho, reps, hits = 40, 0.5, 300, 0
    for rep in range(reps):
        x = rng.normal(size=n)
        y = rho * x + np.sqrt(1 - rho**2) * rng.normal(size=n)
        c = results.correlation(x, y, "pearson", n_boot=400, seed=rep)
        hits += c.lo <= rho <= c.hi
    assert 0.88 <= hits / reps <= 0.99


def test_degenerate_correlations_are_nan():
    assert np.isnan(results.correlation([1, 2], [3, 4]).r)
    c = results.correlation([1, 1, 1, 1], [1, 2, 3, 4])
    assert np.isnan(c.r) and np.isnan(c.lo)


def test_correlation_table_columns():
    rng = np.random.default_rng(5)
    pts = pd.DataFrame({"noise_fro": rng.normal(size=12), "noise_trace": rng.normal(size=12)})
    pts["gen_gap"] = 2 * pts["noise_fro"] + 0.1 * rng.normal(size=12)
    t = results.correlation_table(pts, ["noise_fro", "noise_trace"], "gen_gap", n_boot=300)
    assert list(t["statistic"]) == ["noise_fro", "noise_trace"]
    assert list(t["label"]) == ["‖Σ‖_F", "tr Σ"]
    np.testing.assert_allclose(t["r2"], t["pearson"] ** 2)
    assert t.loc[0, "pearson"] == pytest.approx(sps.pearsonr(pts.noise_fro, pts.gen_gap)[0])
    assert t.loc[0, "r2"] > t.loc[1, "r2"]


# --------------------------------------------------------------------------------------------
# cost of a run
# --------------------------------------------------------------------------------------------


def test_run_cost_counts_match_a_real_run():
    cfg = BASE.replace(
        steps=12, eval_every=5, sharpness_every=2, lanczos_iters=4, noise_samples=2, noise="full"
    )
    events: list[dict] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        run(cfg, events.append)
    finally:
        torch.set_num_threads(threads)
    metric_events = [e for e in events if e["event"] == "metric"]
    cost = results.run_cost(cfg, n_train=1347, n_test=450, forward_flops=1.0)
    assert cost.steps == events[0]["total_steps"] == 12
    assert cost.evaluations == len(metric_events) == 4  # steps 0, 5, 10, 12
    assert cost.sharpness_evaluations == sum("sharpness" in e["metrics"] for e in metric_events)
    assert cost.examples == 12 * 128
    assert cost.hvps == cost.sharpness_evaluations * (4 + 1 + 128)  # a bound on what ran
    lanczos = sum(e["metrics"].get("sharpness_hvps", 0) for e in metric_events)
    assert 0 < lanczos <= cost.sharpness_evaluations * (4 + 1)
    draws = sum(e["metrics"].get("noise_trace_hsigma_draws", 0) for e in metric_events)
    assert 2 * cost.sharpness_evaluations <= draws and lanczos + draws <= cost.hvps
    # by epochs: digits has 1347 training examples; a validation fraction of 0.1 holds out
    # 135, and the continuous stream gives round(2.5 · 1212 / 128) = 24 steps
    by_epochs = results.run_cost(cfg.replace(steps=None, epochs=2.5), 1347, 450, 1.0)
    assert by_epochs.steps == 24
    # drop-last on the whole training set (the cached runs): ⌊1347 / 128⌋ = 10 steps per epoch
    legacy = cfg.replace(steps=None, epochs=2.5, drop_last=True, val_fraction=0.0)
    assert results.run_cost(legacy, 1347, 450, 1.0).steps == 25
    assert results.evaluation_count(25, 5) == 6 and results.evaluation_count(26, 5) == 7


def test_forward_flops_of_an_mlp_is_two_per_weight():
    flops = results.forward_flops((1, 8, 8), 10, "mlp", width=16, depth=2)
    net = build_model("mlp", (1, 8, 8), 10, width=16, depth=2)
    ref = sum(
        2 * m.in_features * m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)
    )
    assert flops == ref == 2 * (64 * 16 + 16 * 10)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 40)])
def test_forward_flops_of_a_cnn_matches_torch_flop_counter(shape):
    from torch.utils.flop_counter import FlopCounterMode

    net = build_model("cnn", shape, 10, width=16, depth=2)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        net(torch.zeros(1, *shape))
    # torch counts the convolutions and matrix products only, as the hooks do
    assert results.forward_flops(shape, 10, "cnn", 16, 2) == counter.get_total_flops()


def _hook_flops(net: torch.nn.Module, shape: tuple[int, ...]) -> float:
    """Reference: 2 × fan-in per output value of every linear and convolution layer, counted
    with forward hooks on one zero input."""
    total = [0.0]

    def count(module, inputs, output):
        if isinstance(module, torch.nn.Linear):
            total[0] += 2.0 * module.in_features * output.numel()
        else:  # each output value of a convolution is a dot product over (C_in/groups)·kernel
            fan_in = module.in_channels // module.groups * math.prod(module.kernel_size)
            total[0] += 2.0 * fan_in * output.numel()

    layers = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)
    hooks = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            net.eval()(torch.zeros(1, *shape))
    finally:
        for h in hooks:
            h.remove()
    return total[0]


def _architectures():
    """Every (data set, model) the cost model is asked about that builds, at two sizes."""
    out = []
    for name, spec in DATASETS.items():
        for model in MODELS:
            for width, depth in ((256, 3), (24, 1)):
                try:
                    build_model(model, spec.input_shape, spec.num_classes, width=width, depth=depth)
                except ValueError:  # e.g. a CNN on flat inputs
                    continue
                out.append(
                    pytest.param(
                        spec.input_shape,
                        spec.num_classes,
                        model,
                        width,
                        depth,
                        id=f"{name}-{model}-{width}x{depth}",
                    )
                )
    return out


@pytest.mark.parametrize(("shape", "classes", "model", "width", "depth"), _architectures())
def test_forward_flops_equal_the_hook_count_for_every_architecture(
    shape, classes, model, width, depth
):
    torch.manual_seed(0)
    net = build_model(model, shape, classes, width=width, depth=depth)
    got = results.forward_flops(shape, classes, model, width, depth)
    assert isinstance(got, float)
    assert got == _hook_flops(net, shape)


def test_run_seconds_and_grid_seconds():
    o = results.OVERHEAD_SECONDS
    cost = results.Cost(
        steps=100, evaluations=11, sharpness_evaluations=11, hvps=308, examples=100 * 128, flops=4e9
    )
    fixed = 100 * o["step"] + 308 * o["hvp"] + 11 * o["evaluation"]
    assert cost.fixed_seconds() == pytest.approx(fixed)
    assert results.run_seconds(cost, 2e9) == pytest.approx(2.0 + fixed)
    secs = [4.0, 3.0, 2.0, 1.0]
    # one worker: everything in sequence; as many workers as runs: the longest run
    # one worker: one cold start, three queued starts
    assert results.grid_seconds(secs, 1, 3.0, 0.5) == pytest.approx(10 + 3.0 + 3 * 0.5)
    assert results.grid_seconds(secs, 4, 3.0, 0.5) == pytest.approx(4 + 3.0)
    # a started, idle worker pays only the hand-over for its first run too
    assert results.grid_seconds(secs, 1, 3.0, 0.5, warm=1) == pytest.approx(10 + 4 * 0.5)
    # two workers, the first warm: 4 (+0.5) and 2 (+0.5) on it, 3 (+3 cold) and 1 (+0.5)
    assert results.grid_seconds(secs, 2, 3.0, 0.5, warm=1) == pytest.approx(3 + 3.0 + 1 + 0.5)
    assert results.grid_seconds(secs, 2, 0.0, 0.0) == pytest.approx(5.0)
    assert results.grid_seconds([], 2) == 0.0


def test_config_from_row_round_trips():
    cfg = BASE.replace(noise="diag", noise_scale=2.0, seed=3)
    row = runs_frame([cfg]).iloc[0].to_dict()
    assert results.config_from_row(row).run_id() == cfg.run_id()
    assert json.loads(row["config"])["seed"] == 3


def test_run_flags_mark_diverged_and_chance_runs():
    points = pd.DataFrame(
        {
            "run_id": ["ok", "blown", "chance", "teacher-chance", "low-but-learning"],
            "test_acc": [0.9, 0.95, 0.12, 0.14, 0.16],
            "cfg_dataset": ["digits", "digits", "mnist1d", "teacher", "digits"],
        }
    )
    runs = pd.DataFrame(
        {"run_id": points["run_id"], "status": ["finished", "diverged", *["finished"] * 3]}
    )
    flags = results.run_flags(points, runs)
    # every data set here has 10 classes (chance 0.1, flagged up to 0.15)
    assert flags.to_dict() == {
        "ok": "",
        "blown": "diverged",
        "chance": "at chance",
        "teacher-chance": "at chance",
        "low-but-learning": "",
    }


def test_setting_labels_name_only_the_setting_fields_that_differ():
    rows = [
        dict(dataset="digits", lr=0.4, noise="diag", seed=0),
        dict(dataset="digits", lr=0.4, noise="full", seed=1),
        dict(dataset="mnist1d", lr=0.4, noise="diag", seed=0),
        dict(dataset="mnist1d", lr=0.8, noise="none", seed=0),
    ]
    runs = pd.DataFrame(
        {"run_id": list("abcd"), **{f"cfg_{k}": [r[k] for r in rows] for k in rows[0]}}
    )
    # noise and seed differ too, but they are what a comparison compares, not its setting
    assert results.setting_fields(runs) == ["dataset", "lr"]
    labels = results.setting_labels(runs)
    assert labels.to_dict() == {
        "a": "dataset=digits · lr=0.4",
        "b": "dataset=digits · lr=0.4",
        "c": "dataset=mnist1d · lr=0.4",
        "d": "dataset=mnist1d · lr=0.8",
    }
    one = runs[runs["cfg_dataset"] == "digits"]
    assert results.setting_fields(one) == [] and set(results.setting_labels(one)) == {"all runs"}
