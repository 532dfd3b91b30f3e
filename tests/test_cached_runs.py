"""The runs shipped in cached_runs/: each file loads, each run is what its command makes, its
metrics are complete, and the findings (FINDINGS.md and the Findings page) are computed from
these runs, not typed in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from covnoise import results
from covnoise.cli.main import main
from covnoise.config import RunConfig
from covnoise.results.study import STUDIES
from covnoise.runs import COMPLETED, read_cached_runs, read_runs_parquet

ROOT = Path(__file__).resolve().parent.parent
CACHED = ROOT / "cached_runs"
FILES = sorted(CACHED.glob("*.parquet"))
CORE = {
    "train_loss",
    "test_loss",
    "train_acc",
    "test_acc",
    "gen_gap",
    "lr",
    "dist_init",
    "grad_norm",
}
CURVATURE = {
    "sharpness",
    "sharpness_residual",
    "sharpness_hvps",
    "noise_trace",
    "noise_fro",
    "noise_trace_hsigma",
    "noise_trace_hsigma_se",
}
MAX_BYTES = 30 * 2**20  # the repository keeps cached runs to tens of MB


def test_the_cached_runs_are_small_and_every_study_has_its_file():
    assert sum(p.stat().st_size for p in FILES) < MAX_BYTES
    names = {p.name for p in FILES}
    for study in STUDIES.values():
        assert Path(study.output).name in names, f"{study.output} is missing; run {study.command}"


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_cached_run_loads_with_complete_metrics(path):
    runs, metrics = read_runs_parquet(path)
    assert len(runs)
    by_run = dict(tuple(metrics.groupby("run_id")))
    for row in runs.itertuples():
        cfg = RunConfig.from_stored(json.loads(row.config))
        assert cfg.run_id() == row.run_id
        assert row.status in COMPLETED, (row.run_id, row.status, row.message)
        assert row.code_revision and row.code_revision != "unknown"
        assert row.device and json.loads(row.versions)["torch"]
        m = by_run[row.run_id]
        steps = sorted(m["step"].unique())
        expected = sorted(
            {0, row.total_steps, *range(cfg.eval_every, row.total_steps + 1, cfg.eval_every)}
        )
        if row.status == "finished":
            assert steps == expected, row.run_id
        else:  # diverged: stops early, on an evaluation point
            assert steps == [s for s in expected if s <= steps[-1]]
        names = m.groupby("step")["name"].agg(set)
        for i, step in enumerate(steps):
            assert CORE <= names[step], (row.run_id, step, CORE - names[step])
            if cfg.sharpness_every and i % cfg.sharpness_every == 0:
                assert CURVATURE <= names[step], (row.run_id, step, CURVATURE - names[step])
        final = m[m["step"] == steps[-1]].set_index("name")["value"]
        if row.status == "finished":
            assert np.isfinite(final[list(CORE)].to_numpy(float)).all(), row.run_id


@pytest.mark.parametrize("name", sorted(STUDIES))
def test_a_study_file_holds_exactly_the_runs_its_command_makes(name):
    study = STUDIES[name]
    path = ROOT / study.output
    if not path.exists():
        pytest.fail(f"{study.output} is missing; run {study.command}")
    runs, metrics = read_runs_parquet(path)
    pilot = runs[runs["name"].map(results.sweep_label) == results.PILOT]
    # the equal-Frobenius multipliers follow from the pilot's runs, shipped in the same file
    ratios = results.pilot_ratios(pilot, metrics) if study.matched_scales else None
    configs = {cfg.run_id(): cfg for cfg in study.configs(ratios)}
    assert set(runs["run_id"]) == set(configs)
    for row in runs.itertuples():
        assert json.loads(row.config)["name"] == configs[row.run_id].name
        assert row.name == configs[row.run_id].name
        assert not row.code_revision.endswith("-dirty"), row.run_id


def test_findings_md_is_generated_from_the_cached_runs():
    assert main(["findings", "--runs", str(CACHED), "--check", str(ROOT / "FINDINGS.md")]) == 0
    runs, metrics = read_cached_runs(CACHED)
    found = results.all_findings(runs, metrics)
    assert {f.study.name for f in found} == set(STUDIES)
    text = (ROOT / "FINDINGS.md").read_text()
    for f in found:
        for v in f.verdicts:
            assert f"**{v.verdict}** | {v.evidence} |" in text


@pytest.fixture
def cached_env(monkeypatch, tmp_path):
    monkeypatch.setenv("COVNOISE_STORE", str(tmp_path / "runs.sqlite"))
    monkeypatch.setenv("COVNOISE_CACHED_RUNS", str(CACHED))
    monkeypatch.setenv("COVNOISE_WORKERS", "1")
    yield
    from covnoise.ui import resources

    try:
        resources.get_engine().close(cancel_running=True, timeout=20)
    finally:
        st.cache_resource.clear()


def test_findings_page_shows_the_verdicts_computed_from_the_cached_runs(cached_env):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at = at.switch_page("pages/findings.py").run()
    assert not at.exception, [e.value for e in at.exception]
    runs, metrics = read_cached_runs(CACHED)
    found = results.all_findings(runs, metrics)
    tables = [t.value for t in at.table]
    verdict_tables = [t for t in tables if "numbers" in t.columns]  # one per study tab
    source_tables = [t for t in tables if "true Fisher" in t.columns]
    arm_tables = [d.value for d in at.dataframe if "gap to SB" in d.value.columns]
    assert len(verdict_tables) == len(arm_tables) == len(found)
    for f, shown, arms in zip(found, verdict_tables, arm_tables, strict=True):
        assert list(shown["numbers"]) == [v.evidence for v in f.verdicts]
        assert list(shown["verdict"]) == [v.verdict for v in f.verdicts]
        assert list(arms["arm"]) == list(f.arms["arm"])
        assert np.allclose(arms["gap to SB"], f.arms["acc_gap"], equal_nan=True)
    with_sources = [f for f in found if f.sources]
    assert len(source_tables) == len(with_sources)
    for f, shown in zip(with_sources, source_tables, strict=True):
        assert list(shown["true Fisher"]) == [v.verdict for v in f.sources]
    page_text = " ".join(m.value for m in at.markdown)
    for f in found:
        if f.design is not None:
            assert f"= **{f.design.d:+.3f}** [{f.design.lo:+.3f}, {f.design.hi:+.3f}]" in page_text
