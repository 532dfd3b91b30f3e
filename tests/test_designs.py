"""Round two of the study: the pilot's calibration, claim 4's equal-trace vs equal-Frobenius
test, the noise-source verdicts and the run-level correlations.

Synthetic studies in the store's layout with known answers; the references are hand-computed
ranges, scipy's Spearman coefficient, and the coverage of the bootstrap interval over many
simulated studies with a known true D.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from covnoise import results
from covnoise.results.calibration import matched_scale, pilot_ratios
from covnoise.results.designs import (
    CHANCE_ACCURACY,
    design_test,
    design_verdict,
)
from covnoise.results.study import EQUAL_FROBENIUS, PILOT, Study

STUDY = Study(
    name="d",
    dataset="digits",
    small_batch=32,
    large_batch=1024,
    base_lr=0.4,
    tuned_lrs=(),
    epochs=10,
    target_train_loss=0.1,
    common={},
    small_eval_every=10,
    large_eval_every=10,
    description="synthetic round-two study",
    seeds=tuple(range(8)),
    matched_scales=(0.25, 0.5),
    sources=("fisher",),
    pilot_epochs=1,
)
RATIOS = {"isotropic": 40.0, "diag": 8.0, "full": 1.0}


def _runs(sweep, batch, noise, scale, accs, fro=0.0, trace=0.0, source="batch", status=None):
    """One arm's runs and long metrics (final test accuracy `accs[i]` for seed i)."""
    runs, rows = [], []
    for seed, acc in enumerate(accs):
        rid = f"{sweep}-{batch}-{noise}-{scale}-{source}-{seed}"
        runs.append(
            {
                "run_id": rid,
                "status": status[seed] if status else "finished",
                "cfg_batch_size": batch,
                "cfg_noise": noise,
                "cfg_noise_scale": scale,
                "cfg_noise_source": source,
                "cfg_lr": 0.4,
                "cfg_seed": seed,
                "name": STUDY.run_name(sweep),
            }
        )
        for step in (0, 10):
            values = {
                "train_loss": 1.0 if step == 0 else 0.05,
                "test_loss": 0.5,
                "train_acc": 1.0,
                "test_acc": acc,
                "val_acc": acc,
                "noise_fro": fro,
                "noise_trace": trace,
            }
            rows += [
                {"run_id": rid, "step": step, "name": k, "value": v} for k, v in values.items()
            ]
    return runs, rows


def _frame(parts):
    runs, rows = [], []
    for r, m in parts:
        runs += r
        rows += m
    return pd.DataFrame(runs), pd.DataFrame(rows)


def _seeds(mean, rng, sd=0.004, n=8):
    return list(mean + sd * rng.standard_normal(n))


def _design_study(trace_accs, frob_accs, rng, status=None):
    """SB, LB and the two designs at s = 0.25 and 0.5: `trace_accs[structure]` and
    `frob_accs[structure]` are the arm means (full noise's arm is shared by both designs)."""
    parts = [
        _runs("small batch", 32, "none", 1.0, _seeds(0.72, rng)),
        _runs("large batch, base learning rate", 1024, "none", 1.0, _seeds(0.66, rng)),
    ]
    for s in (0.25, 0.5, 1.0, 2.0):
        for noise in ("isotropic", "diag", "full"):
            parts.append(
                _runs(
                    "large batch + noise",
                    1024,
                    noise,
                    s,
                    _seeds(trace_accs[noise] * (1 if s < 1 else 0.99), rng),
                    fro=s / RATIOS[noise],
                    trace=s,
                )
            )
    for noise in ("isotropic", "diag"):
        for s in (0.25, 0.5):
            m = matched_scale(s, RATIOS[noise])
            parts.append(
                _runs(
                    f"{EQUAL_FROBENIUS}, {noise} (ratio {RATIOS[noise]})",
                    1024,
                    noise,
                    m,
                    _seeds(frob_accs[noise], rng),
                    fro=s,
                    trace=m,
                    status=status,
                )
            )
    for noise, acc in (("diag", 0.67), ("full", 0.70)):
        parts.append(
            _runs("noise source fisher", 1024, noise, 1.0, _seeds(acc, rng), source="fisher")
        )
    return _frame(parts)


FROBENIUS_WINS = (
    {"isotropic": 0.66, "diag": 0.675, "full": 0.70},  # equal trace: spread 0.04
    {"isotropic": 0.70, "diag": 0.70, "full": 0.70},  # equal Frobenius: together
)


def test_pilot_ratios_divide_full_noise_norm_by_each_structure_per_unit_multiplier():
    parts = [
        _runs(PILOT, 1024, "full", 1.0, [0.5, 0.5], fro=2.0),
        _runs(PILOT, 1024, "diag", 1.0, [0.5, 0.5], fro=0.25),
        _runs(PILOT, 1024, "isotropic", 0.5, [0.5, 0.5], fro=0.025),  # K_F = 0.05
    ]
    runs, metrics = _frame(parts)
    got = pilot_ratios(runs, metrics)
    assert got == pytest.approx({"full": 1.0, "diag": 8.0, "isotropic": 40.0})
    assert matched_scale(0.25, 35.65) == 8.91 and matched_scale(0.5, 6.551) == 3.28
    with pytest.raises(ValueError, match="ratio"):
        matched_scale(0.5, float("nan"))
    with pytest.raises(ValueError, match="full-noise"):
        pilot_ratios(runs[runs["cfg_noise"] != "full"], metrics)


def test_the_study_runs_its_equal_frobenius_arms_at_the_pilots_multipliers():
    configs = STUDY.configs(RATIOS)
    frob = [c for c in configs if EQUAL_FROBENIUS in c.name]
    assert {(c.noise, c.noise_scale) for c in frob} == {
        ("isotropic", 10.0),
        ("isotropic", 20.0),
        ("diag", 2.0),
        ("diag", 4.0),
    }
    assert all(len({c.seed for c in frob if c.noise == n}) == 8 for n in ("isotropic", "diag"))
    fisher = [c for c in configs if c.noise_source == "fisher"]
    assert {(c.noise, c.noise_scale) for c in fisher} == {("diag", 1.0), ("full", 1.0)}
    pilot = [c for c in configs if c.name.endswith(f"sweep: {PILOT}")]
    assert {c.noise for c in pilot} == {"isotropic", "diag", "full"}
    assert all(c.epochs == 1 and c.sharpness_every == 1 for c in pilot)
    # without the pilot's ratios the equal-Frobenius arms cannot be named yet
    assert not [c for c in STUDY.configs() if EQUAL_FROBENIUS in c.name]


def test_design_test_spreads_are_the_ranges_of_the_arm_means():
    rng = np.random.default_rng(0)
    runs, metrics = _design_study(*FROBENIUS_WINS, rng)
    per_run = results.run_table(runs, metrics, STUDY)
    test = design_test(per_run, STUDY, n_boot=500)
    means = per_run.groupby("arm")["test_acc"].mean()
    for s in (0.25, 0.5):
        trace = [means[f"LB + {n} s={s:g}"] for n in ("isotropic", "diag", "full")]
        frob = [
            means[f"LB + isotropic s={matched_scale(s, 40):g} (F-matched)"],
            means[f"LB + diag s={matched_scale(s, 8):g} (F-matched)"],
            means[f"LB + full s={s:g}"],
        ]
        got = test.spreads.set_index(["matched_scale", "design"])["spread"]
        assert got[(s, "equal trace")] == pytest.approx(max(trace) - min(trace))
        assert got[(s, "equal Frobenius")] == pytest.approx(max(frob) - min(frob))
    assert test.d == pytest.approx(
        test.spreads.groupby("design")["spread"].mean().loc["equal trace"]
        - test.spreads.groupby("design")["spread"].mean().loc["equal Frobenius"]
    )
    assert test.lo > 0 and design_verdict(test) == "reproduced"


def test_the_verdict_follows_the_design_that_lands_together():
    rng = np.random.default_rng(1)
    trace_wins = (FROBENIUS_WINS[1], FROBENIUS_WINS[0])
    runs, metrics = _design_study(*trace_wins, rng)
    found = results.study_findings(runs, metrics, STUDY)
    assert found.design.hi < 0 and design_verdict(found.design) == "reversed"
    assert found.verdicts[3].verdict == "reversed" and "D = " in found.verdicts[3].evidence
    # no structure matters: both spreads are seed noise, the interval straddles 0
    same = {"isotropic": 0.68, "diag": 0.68, "full": 0.68}
    runs, metrics = _design_study(same, same, np.random.default_rng(2))
    test = results.study_findings(runs, metrics, STUDY).design
    assert test.lo < 0 < test.hi
    assert design_verdict(test) in {"partly", "not reproduced"}


def test_diverged_runs_count_at_chance_in_the_design_test():
    rng = np.random.default_rng(3)
    status = ["diverged"] * 8
    runs, metrics = _design_study(*FROBENIUS_WINS, rng, status=status)
    per_run = results.run_table(runs, metrics, STUDY)
    test = design_test(per_run, STUDY, n_boot=200)
    frob = test.spreads[test.spreads["design"] == "equal Frobenius"]
    # the equal-Frobenius isotropic and diag arms all diverged: full noise (≈0.70) vs chance
    assert frob["spread"].to_numpy() == pytest.approx(0.70 - CHANCE_ACCURACY, abs=0.01)
    assert design_verdict(test) == "reversed"
    table = results.design_table(per_run, STUDY)
    assert set(table.loc[table["diverged"] > 0, "noise"]) == {"isotropic", "diag"}


SEPARATED = (
    {"isotropic": 0.66, "diag": 0.68, "full": 0.70},  # equal trace: range 0.04
    {"isotropic": 0.685, "diag": 0.67, "full": 0.70},  # equal Frobenius: range 0.03
)


def test_the_design_interval_covers_the_true_difference():
    """Over simulated studies with known arm means whose extremes are well apart (true
    D = 0.04 − 0.03), the 95% interval of D covers the truth in at least 85% of them (the
    percentile bootstrap at 8 seeds is known to be a little narrow)."""
    cover, n_studies = 0, 60
    for k in range(n_studies):
        runs, metrics = _design_study(*SEPARATED, np.random.default_rng(100 + k))
        test = design_test(results.run_table(runs, metrics, STUDY), STUDY, n_boot=400, seed=k)
        cover += test.lo <= 0.01 <= test.hi
    assert cover >= 0.85 * n_studies


def test_arms_that_coincide_bias_d_towards_zero_never_past_it():
    """The range of arms with equal means is inflated by seed noise (≈ 1.7 σ/√n for three
    arms), so D is pulled towards 0 when one design's arms coincide: conservative, and
    still clearly positive when the other design spreads."""
    ds = []
    for k in range(30):
        runs, metrics = _design_study(*FROBENIUS_WINS, np.random.default_rng(200 + k))
        test = design_test(results.run_table(runs, metrics, STUDY), STUDY, n_boot=200, seed=k)
        ds.append(test.d)
        assert test.lo > 0
    bias = 0.04 - float(np.mean(ds))
    assert 0 < bias < 0.004  # 1.7 · 0.004/√8 ≈ 0.0024


def test_the_fisher_source_is_judged_apart_from_the_batch_source():
    runs, metrics = _design_study(*FROBENIUS_WINS, np.random.default_rng(4))
    found = results.study_findings(runs, metrics, STUDY)
    assert "LB + diag s=1 (Fisher)" in set(found.arms["arm"])
    assert [v.claim for v in found.sources] == [2, 3]
    assert "LB + full s=1 (Fisher) − LB η=0.4" in found.sources[1].evidence
    assert "(Fisher)" not in found.verdicts[1].evidence
    # the claim-4 points are the batch-noise settings only (12 equal-trace + 4 equal-Frobenius)
    assert len(found.settings) == 16 and not found.settings["arm"].str.contains("Fisher").any()


def test_run_bootstrap_correlations_point_is_spearman_of_the_seed_means():
    runs, metrics = _design_study(*FROBENIUS_WINS, np.random.default_rng(5))
    found = results.study_findings(runs, metrics, STUDY)
    table = found.run_correlations.set_index("statistic")
    gap = found.per_run.query("arm == 'SB M=32'")["test_acc"].mean() - found.settings["test_acc"]
    rho_f = sps.spearmanr(found.settings["noise_fro"], gap).statistic
    rho_t = sps.spearmanr(found.settings["noise_trace"], gap).statistic
    assert table.loc["‖Σ‖_F", "spearman"] == pytest.approx(rho_f)
    assert table.loc["tr Σ", "spearman"] == pytest.approx(rho_t)
    assert table.loc["(−ρ_F) − (−ρ_tr)", "spearman"] == pytest.approx(rho_t - rho_f)
    for row in table.itertuples():
        assert row.lo <= row.spearman <= row.hi
    # ‖Σ‖_F orders these arms by accuracy: its interval lies below 0
    assert table.loc["‖Σ‖_F", "hi"] < 0


def test_the_round_two_sections_render():
    runs, metrics = _design_study(*FROBENIUS_WINS, np.random.default_rng(6))
    pilot = _frame(
        [
            _runs(PILOT, 1024, "full", 1.0, [0.5, 0.5], fro=2.0),
            _runs(PILOT, 1024, "diag", 1.0, [0.5, 0.5], fro=0.25),
            _runs(PILOT, 1024, "isotropic", 1.0, [0.5, 0.5], fro=0.05),
        ]
    )
    runs = pd.concat([runs, pilot[0]], ignore_index=True)
    metrics = pd.concat([metrics, pilot[1]], ignore_index=True)
    found = results.study_findings(runs, metrics, STUDY)
    assert found.ratios == pytest.approx(RATIOS)
    assert PILOT not in set(found.per_run["sweep"])  # the pilot is calibration, not an arm
    block = results.render([found])
    assert "Pilot calibration" in block and "diag 8, isotropic 40" in block
    assert "| 0.25 | equal Frobenius | LB + isotropic s=10 (F-matched) |" in block
    assert "Claims 2 and 3 with noise that imitates the true Fisher" in block
    assert "two-level bootstrap" in block


def test_the_design_figure_shows_each_designs_arms_at_their_means():
    from covnoise import viz

    runs, metrics = _design_study(*FROBENIUS_WINS, np.random.default_rng(7))
    per_run = results.run_table(runs, metrics, STUDY)
    table = results.design_table(per_run, STUDY)
    fig = viz.design_figure(table)
    assert [a.text for a in fig.layout.annotations] == ["equal trace", "equal Frobenius"]
    drawn = {}
    for trace in fig.data:
        panel = "equal trace" if trace.xaxis == "x" else "equal Frobenius"
        for arm, y, sd in zip(trace.text, trace.y, trace.error_y.array, strict=True):
            drawn[(panel, arm)] = (y, sd)
    expected = {(r.design, r.arm): (r.test_acc, r.test_acc_std) for r in table.itertuples()}
    assert drawn.keys() == expected.keys() and len(drawn) == 12
    for key, (y, sd) in expected.items():
        assert drawn[key] == pytest.approx((y, sd))
    # colours are the structures', the same in both panels
    colours = {(t.name, t.marker.color) for t in fig.data}
    assert len(colours) == 3


def test_the_design_svg_draws_every_arm_at_its_height():
    """The static figure of FINDINGS.md: one titled circle per (design, arm), higher accuracy
    drawn higher, deterministic text."""
    import re

    from covnoise import viz

    runs, metrics = _design_study(*FROBENIUS_WINS, np.random.default_rng(8))
    table = results.design_table(results.run_table(runs, metrics, STUDY), STUDY)
    svg = viz.design_svg(table, "t")
    assert svg == viz.design_svg(table, "t") and svg.startswith("<svg")
    circles = re.findall(
        r'<circle cx="([\d.]+)" cy="([\d.]+)" r="5" fill="[^"]+"><title>(.+?): ', svg
    )
    assert len(circles) == len(table) == 12
    drawn = pd.concat([table[table["design"] == d] for d in ("equal trace", "equal Frobenius")])
    pairs = []
    for (_, y, arm), row in zip(circles, drawn.itertuples(), strict=True):
        assert arm == row.arm
        pairs.append((float(y), row.test_acc))
    pairs.sort(key=lambda p: p[1])
    assert all(a[0] >= b[0] for a, b in zip(pairs, pairs[1:], strict=False))


def test_findings_check_fails_on_a_stale_or_missing_figure(tmp_path):
    """`covnoise findings --write` draws the design figures next to FINDINGS.md; --check
    fails when one is missing or differs, and passes after a write."""
    import json

    from covnoise.cli.main import main
    from covnoise.runs import write_runs_parquet
    from covnoise.runs.schema import PARQUET_RUN_COLUMNS

    runs, metrics = _design_study(*FROBENIUS_WINS, np.random.default_rng(9))
    folder = tmp_path / "cached"
    folder.mkdir()
    real = results.STUDIES["mnist1d"]
    runs["name"] = runs["name"].str.replace(STUDY.run_name(""), real.run_name(""), regex=False)
    fields = {"batch_size", "noise", "noise_scale", "noise_source", "lr", "seed"}
    runs["config"] = [
        json.dumps({"name": row["name"], **{f: row[f"cfg_{f}"] for f in fields}})
        for row in runs.to_dict("records")
    ]
    for column in PARQUET_RUN_COLUMNS:
        if column not in runs:
            runs[column] = 1.0 if column.endswith("_at") else None
    metrics = metrics.assign(
        epoch=metrics["step"] / 10.0, examples_seen=metrics["step"] * 1024, wall_time=0.1
    )
    write_runs_parquet(folder / "x.parquet", runs[list(PARQUET_RUN_COLUMNS)], metrics)
    doc = tmp_path / "FINDINGS.md"
    doc.write_text(f"# x\n{results.BEGIN}\n{results.END}\n")
    assert main(["findings", "--runs", str(folder), "--write", str(doc)]) == 0
    svg = tmp_path / "docs" / "figures" / "claim4-mnist1d.svg"
    assert svg.is_file() and "docs/figures/claim4-mnist1d.svg" in doc.read_text()
    assert main(["findings", "--runs", str(folder), "--check", str(doc)]) == 0
    svg.write_text(svg.read_text().replace("circle", "rect", 1))
    assert main(["findings", "--runs", str(folder), "--check", str(doc)]) == 1
    svg.unlink()
    assert main(["findings", "--runs", str(folder), "--check", str(doc)]) == 1
