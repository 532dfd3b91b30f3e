"""Every page of the app under streamlit's AppTest, on a temporary store and a small fixed set
of runs (tests/data/demo-digits.parquet) split over two cached files (plus one damaged file the
app must skip).

Train drives its widgets and launches a real tiny run on digits through the local engine;
Live then draws that run's stored metrics; Compare and Noise vs generalisation are checked
against numbers computed here with pandas/scipy straight from the cached file.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import streamlit as st
from scipy import stats as sps
from streamlit.testing.v1 import AppTest

from covnoise import viz
from covnoise.config import ConfigError, RunConfig
from covnoise.runs import RunStore, read_runs_parquet, write_runs_parquet
from covnoise.ui import filters, formatting, presets, resources, runsdata, trainform
from covnoise.ui.urlstate import BadValue, ListParam, TextParam

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "app.py")
DEMO = ROOT / "tests" / "data" / "demo-digits.parquet"  # made by python -m covnoise.results.demo
PAGES = [
    "pages/home.py",
    "pages/train.py",
    "pages/live.py",
    "pages/compare.py",
    "pages/noise_vs_generalisation.py",
    "pages/findings.py",
    "pages/quadratic.py",
    "pages/geometry.py",
]
# the tiny run the Train test launches (epochs: digits has 1347 training examples; the form's
# validation fraction 0.1 holds out 135, leaving 1212, so 2 epochs at L = 128 are
# round(2 · 1212 / 128) = 19 steps of the continuous stream)
CACHED = "a.parquet,b.parquet"  # the source filter that keeps the cached runs only
TINY_FORM = {
    "width": 16,
    "depth": 2,
    "batch_size": 128,
    "small_batch": 16,
    "epochs": 2.0,
    "eval_every": 5,
    "probe_size": 32,
    "seeds": 1,
}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("app")
    mp = pytest.MonkeyPatch()
    mp.setenv("COVNOISE_STORE", str(tmp / "runs.sqlite"))
    mp.setenv("COVNOISE_WORKERS", "2")
    mp.setenv("COVNOISE_DATA_DIR", str(tmp / "data"))
    cached = tmp / "cached"
    cached.mkdir()
    runs, metrics = read_runs_parquet(DEMO)
    first = set(runs["run_id"][: len(runs) // 2])
    write_runs_parquet(
        cached / "a.parquet", runs[runs.run_id.isin(first)], metrics[metrics.run_id.isin(first)]
    )
    write_runs_parquet(
        cached / "b.parquet", runs[~runs.run_id.isin(first)], metrics[~metrics.run_id.isin(first)]
    )
    (cached / "c-damaged.parquet").write_bytes(b"PAR1 this is not a parquet file")
    mp.setenv("COVNOISE_CACHED_RUNS", str(cached))
    yield {"tmp": tmp, "runs": runs, "metrics": metrics}
    try:
        resources.get_engine().close(cancel_running=True, timeout=20)
    finally:
        st.cache_resource.clear()
        mp.undo()


def open_page(page: str, params: dict[str, str] | None = None, timeout: float = 60) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=timeout).run()
    for k, v in (params or {}).items():
        at.query_params[k] = v
    return at.switch_page(page).run()


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]


def figure(at: AppTest, key: str) -> dict:
    for el in at.get("plotly_chart"):
        if el.proto.id.endswith(key) or key in el.proto.id:
            return json.loads(el.proto.spec)
    raise AssertionError(f"no chart {key}")


def arr(value) -> np.ndarray:
    """A trace's x or y as an array (Plotly writes numpy data as base64 typed arrays)."""
    if isinstance(value, dict) and "bdata" in value:
        data = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return data.reshape(value["shape"]) if "shape" in value else data
    return np.asarray(value)


def traces(fig: dict) -> dict[str, dict]:
    """Traces by name, with x and y decoded to arrays."""
    out = {}
    for t in fig["data"]:
        t = dict(t)
        for axis in ("x", "y"):
            if axis in t:
                t[axis] = arr(t[axis])
        out[t.get("name", "")] = t
    return out


# --------------------------------------------------------------------------------------------


def sidebar_status(at: AppTest) -> str:
    return " ".join(c.value for c in at.sidebar.caption)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_renders_without_error(env, page):
    at = open_page(page)
    assert_clean(at)
    assert at.title, "the page drew nothing"


def test_sidebar_names_engine_device_and_queue(env):
    # (AppTest keeps the entry script's own elements only on the first page it draws)
    at = AppTest.from_file(APP, default_timeout=60).run()
    assert_clean(at)
    status = sidebar_status(at)
    assert "**Engine:** local (2 parallel runs)" in status
    assert re.search(r"\*\*Device:\*\* (CPU \(\d+ cores\)|GPU: .+)", status)
    assert "**Runs:** 0 running · 0 queued" in status


def test_compare_reads_every_cached_file_and_draws_seed_bands(env):
    at = open_page("pages/compare.py", {"metric": "test_loss", "x": "epoch", "source": CACHED})
    assert_clean(at)
    assert at.caption[0].value.startswith("16 runs from 2 source(s); 8 group(s)")
    fig = figure(at, "compare-curves")
    named = traces(fig)
    # the cached runs cut each epoch into full batches: their labels say so
    label = "L=1024 · noise=full · s=1 · drop-last (n=2)"
    assert label in named and "L=1024 · noise=full · s=1 · drop-last ± std" in named
    assert len([n for n in named if n.endswith(")")]) == 8
    # reference: the two seeds' last test loss, straight from the file with pandas
    runs, metrics = env["runs"], env["metrics"]
    cfg = runs["config"].map(json.loads)
    ids = runs.run_id[
        [c["noise"] == "full" and c["noise_scale"] == 1.0 and c["batch_size"] == 1024 for c in cfg]
    ]
    last = (
        metrics[(metrics.run_id.isin(ids)) & (metrics.name == "test_loss")]
        .sort_values("step")
        .groupby("run_id")["value"]
        .last()
    )
    assert len(last) == 2
    assert named[label]["y"][-1] == pytest.approx(last.mean(), rel=1e-12)
    assert named[label]["x"][-1] == pytest.approx(80.0)  # epochs
    # the band that follows the mean line is mean ± the sample std of the two seeds
    at_label = [t.get("name") for t in fig["data"]].index(label)
    upper, lower = (arr(fig["data"][at_label + k]["y"])[-1] for k in (1, 2))
    assert upper == pytest.approx(last.mean() + last.std(ddof=1), rel=1e-12)
    assert lower == pytest.approx(last.mean() - last.std(ddof=1), rel=1e-12)
    # the final-metrics table has one row per run with the same numbers
    table = at.dataframe[0].value.set_index("run id")
    assert len(table) == 16
    np.testing.assert_allclose(table.loc[last.index, "test loss"], last.to_numpy())
    assert set(table["source"]) == {"a.parquet", "b.parquet"}


def test_compare_state_from_the_link(env):
    at = open_page(
        "pages/compare.py",
        {
            "metric": "train_acc",
            "draw": "runs",
            "noise": "full",
            "source": CACHED,
            "smooth": "0.5",
            "log_y": "true",
        },
    )
    assert_clean(at)
    fig = figure(at, "compare-curves")
    assert len(fig["data"]) == 4  # full noise: 2 multipliers × 2 seeds, one line each
    assert fig["layout"]["yaxis"]["title"]["text"] == "train accuracy"
    assert fig["layout"]["yaxis"]["type"] == "log"
    assert at.slider(key="compare.smooth").value == 0.5
    # a malformed value falls back to the default with a notice
    bad = open_page("pages/compare.py", {"metric": "bogus"})
    assert any("Ignored metric='bogus'" in i.value for i in bad.info)
    assert_clean(bad)


def test_noise_vs_generalisation_numbers(env):
    at = open_page("pages/noise_vs_generalisation.py", {"source": CACHED})
    assert_clean(at)
    assert at.caption[0].value == "16 runs in 8 settings."
    # reference points: per run the mean ‖Σ‖_F / tr Σ over evaluations and the final
    # test − train loss, averaged over the two seeds of each setting
    runs, metrics = env["runs"], env["metrics"]
    cfg = pd.DataFrame(list(runs["config"].map(json.loads)), index=runs.run_id)
    wide = metrics.pivot_table(index=["run_id", "step"], columns="name", values="value")
    per_run = pd.DataFrame(
        {
            "noise_fro": wide["noise_fro"].groupby("run_id").mean(),
            "noise_trace": wide["noise_trace"].groupby("run_id").mean(),
            "gap": (wide["test_loss"] - wide["train_loss"]).groupby("run_id").last(),
        }
    ).join(cfg[["batch_size", "noise", "noise_scale"]])
    per_run.loc[per_run.noise == "none", "noise_scale"] = 1.0
    setting = per_run.groupby(["batch_size", "noise", "noise_scale"]).mean()
    assert len(setting) == 8
    table = at.dataframe[0].value.set_index("statistic")
    for stat, label in (("noise_fro", "‖Σ‖_F"), ("noise_trace", "tr Σ")):
        r = sps.pearsonr(setting[stat], setting["gap"])[0]
        rho = sps.spearmanr(setting[stat], setting["gap"])[0]
        assert table.loc[label, "Pearson r"] == pytest.approx(r, abs=1e-9)
        assert table.loc[label, "Spearman ρ"] == pytest.approx(rho, abs=1e-9)
        assert table.loc[label, "R²"] == pytest.approx(r * r, abs=1e-9)
        lo, hi = (float(t) for t in re.findall(r"-?\d\.\d\d", table.loc[label, "95% CI"]))
        assert -1 <= lo <= round(r, 2) <= hi <= 1
    r_fro = sps.pearsonr(setting["noise_fro"], setting["gap"])[0]
    assert f"Pearson r = {r_fro:.2f}" in at.caption[1].value
    scatter = figure(at, "noise-scatter")
    assert set(traces(scatter)) == {"none", "isotropic", "diag", "full", "least-squares fit"}
    pair = figure(at, "noise-pair")
    titles = [a["text"] for a in pair["layout"]["annotations"]]
    assert titles[0].startswith(f"‖Σ‖_F: r = {r_fro:.2f}")
    assert titles[1].startswith("tr Σ: r = ")


def test_train_widgets_take_labels_and_ranges_from_the_config_metadata(env):
    """RunConfig's field metadata is the one source of the form's labels and ranges: every
    numeric input on the Train page that sets a config field shows that field's label and
    says its range in its help (lower bound, or the form's smallest value above a strict one,
    and maximum). The widgets carry no min/max: the browser would keep the old value when a
    typed one falls outside them, so the form checks the range itself (next test)."""
    from covnoise.config import field_info
    from covnoise.ui import trainform

    at = open_page("pages/train.py")
    assert_clean(at)
    checked = 0
    for widget in at.number_input:
        name = widget.key.removeprefix("train.")
        if name not in RunConfig.__dataclass_fields__:
            continue
        info = field_info(name)
        param = {p.name: p for p in trainform.TRAIN_PARAMS}[name]
        assert widget.label == info.label, name
        assert param.hi == info.high, name
        assert param.lo == info.low or (info.strict and param.lo > info.low), name
        assert f"Allowed: {trainform.allowed_range(name)}." in widget.help, name
        assert not widget.proto.has_min and not widget.proto.has_max, name
        checked += 1
    assert checked >= 10
    for widget in at.selectbox:
        name = widget.key.removeprefix("train.")
        if name in RunConfig.__dataclass_fields__:
            assert widget.label == field_info(name).label, name
            assert tuple(widget.options) == field_info(name).choices, name
            checked += 1
    assert checked >= 16
    drop = at.checkbox(key="train.drop_last")
    assert drop.label == field_info("drop_last").label and drop.value is False
    val = at.number_input(key="train.val_fraction")
    assert val.value == 0.1 and "Allowed: 0 to 0.5." in val.help


@pytest.mark.parametrize(
    ("name", "typed", "label"),
    [("seeds", 50, "seeds"), ("val_fraction", 0.9, "validation fraction"), ("lr", 0.0, None)],
)
def test_a_typed_value_out_of_range_is_refused_by_name_and_launch_is_off(env, name, typed, label):
    """What the user typed reaches the form (no browser clamp keeping the old value): a value
    outside the range gets a message naming the field and the range next to it, a page-level
    one where Launch is, and Launch is disabled; back in range, Launch is on again."""
    from covnoise.ui import trainform

    at = open_page("pages/train.py")
    assert_clean(at)
    before = at.number_input(key=f"train.{name}").value
    at.number_input(key=f"train.{name}").set_value(typed).run()
    assert not at.exception
    messages = [e.value for e in at.error]
    label = label or trainform.short_field(name)
    assert any(m.startswith(f"{label}:") and "outside the allowed range" in m for m in messages)
    assert any(m.startswith("Launch is off until this is fixed") for m in messages)
    assert at.button(key="launch-disabled").disabled
    assert not [b for b in at.button if b.key in ("launch-one", "launch-grid")]
    at.number_input(key=f"train.{name}").set_value(before).run()
    assert not at.error and not at.button(key="launch-grid").disabled


def test_train_validation_shows_next_to_the_widget_and_blocks_launch(env):
    at = open_page("pages/train.py")
    assert_clean(at)
    at.multiselect(key="train.noises").set_value(["diag"])
    at.number_input(key="train.small_batch").set_value(2048).run()
    assert len(at.error) == 2  # next to the widget, and where Launch is
    message = at.error[0].value
    assert message.startswith("target small batch M:") and "must be smaller" in message
    assert at.error[1].value == f"Launch is off until this is fixed — {message}"
    # the message sits right after the M input, in the same column
    column = next(
        c
        for c in at.columns
        if "train.small_batch" in [getattr(n, "key", None) for n in c.children.values()]
    )
    children = list(column.children.values())
    at_m = [getattr(n, "key", None) for n in children].index("train.small_batch")
    assert children[at_m + 1].type == "error"
    assert at.button(key="launch-disabled").disabled
    assert not [b for b in at.button if b.key in ("launch-one", "launch-grid")]
    with RunStore(env["tmp"] / "runs.sqlite") as store:
        assert store.runs().empty
    # a bad multiplier list is explained next to its own widget
    at.number_input(key="train.small_batch").set_value(32)
    at.text_input(key="train.noise_scales").set_value("1, two").run()
    assert [e.value for e in at.error][:1] == [
        "multipliers s: 'two' is not a number; use e.g. 1, 4"
    ]
    # a file-backed data set whose files are not in the (empty) data folder
    at.text_input(key="train.noise_scales").set_value("1")
    at.selectbox(key="train.dataset").set_value("fashion-mnist").run()
    assert len(at.error) == 2
    assert at.error[0].value.startswith(
        f"data set: its files are not in {env['tmp'] / 'data' / 'fashion-mnist'}"
    )
    assert "python -m covnoise data download fashion-mnist" in at.error[0].value


def test_presets_fill_the_form(env):
    at = open_page("pages/train.py")
    at.button(key="preset-gap").click().run()
    assert_clean(at)
    assert at.multiselect(key="train.noises").value == ["none"]
    assert at.checkbox(key="train.baseline").value is True
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["runs"] == "4"  # large batch and baseline × 2 seeds
    # a preset link opens Train filled in
    link = open_page("pages/train.py", {"preset": "full-noise"})
    assert link.multiselect(key="train.noises").value == ["none", "isotropic", "full"]
    assert link.selectbox(key="train.dataset").value == "mnist1d"


def test_train_launches_a_real_run_and_live_draws_it(env):
    at = open_page("pages/train.py")
    for key, value in TINY_FORM.items():
        at.number_input(key=f"train.{key}").set_value(value)
    at.multiselect(key="train.noises").set_value(["full"])
    at.checkbox(key="train.baseline").set_value(False).run()
    assert_clean(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["runs"] == "1" and metrics["training steps"] == "19"
    assert metrics["evaluations (with λ_max)"] == "5 (5)"
    at.button(key="launch-one").click().run()
    assert_clean(at)
    assert at.success[0].value.startswith("Queued 1 run(s)")
    expected = RunConfig(
        dataset="digits",
        model="mlp",
        width=16,
        depth=2,
        batch_size=128,
        small_batch=16,
        noise="full",
        noise_scale=1.0,
        lr=0.5,
        epochs=2.0,
        eval_every=5,
        sharpness_every=1,  # the form's own default: every evaluation
        probe_size=32,
        seed=0,
    )
    rid = expected.run_id()
    engine = resources.get_engine()
    assert engine.store.status(rid) in ("queued", "running", "finished")
    assert engine.wait([rid], timeout=240)[rid] == "finished"

    live = open_page("pages/live.py")
    assert_clean(live)
    fig = figure(live, "live-curves")
    named = traces(fig)
    stored = engine.store.metrics([rid])
    for metric, suffix in (
        ("train_loss", "train loss"),
        ("test_acc", "test acc"),
        ("val_loss", "val loss"),
        ("sharpness", "λ_max"),
        ("noise_fro", "‖Σ‖_F"),
    ):
        name = next(n for n in named if n.endswith(f"· {suffix}"))
        ref = stored[stored.name == metric].sort_values("step")
        # Live opens on epochs, where small- and large-batch curves share one scale
        np.testing.assert_allclose(named[name]["x"], ref["epoch"].to_numpy())
        np.testing.assert_allclose(named[name]["y"], ref["value"].to_numpy())
    assert ref["step"].tolist() == [0, 5, 10, 15, 19]
    np.testing.assert_allclose(named[name]["x"], [s * 128 / 1212 for s in (0, 5, 10, 15, 19)])
    stability = next(t for n, t in named.items() if n.endswith("2(1+β)/η"))
    np.testing.assert_allclose(stability["y"], 2 / 0.5)
    table = live.dataframe[0].value
    assert table["status"].tolist() == ["finished"] and table["progress"].tolist() == [1.0]


def test_live_cancel_button_and_failure_message(env):
    store = RunStore(env["tmp"] / "runs.sqlite")
    # a failed run recorded by some earlier engine: its message must show
    failed = RunConfig(dataset="digits", width=8, steps=3, epochs=None, seed=99, name="f")
    frame = pd.DataFrame(
        [
            {
                "run_id": failed.run_id(),
                "name": "f",
                "config": failed.to_json(),
                "status": "failed",
                "engine": "local",
                "submitted_at": time.time(),
                "message": "RuntimeError: out of memory on the probe batch",
            }
        ]
    )
    store.import_frames(
        frame,
        pd.DataFrame(
            columns=["run_id", "step", "epoch", "examples_seen", "wall_time", "name", "value"]
        ),
    )
    engine = resources.get_engine()
    long = RunConfig(
        dataset="digits",
        model="mlp",
        width=16,
        depth=2,
        batch_size=128,
        small_batch=16,
        steps=100_000,
        epochs=None,
        eval_every=50,
        sharpness_every=0,
        seed=7,
    )
    rid = engine.submit(long)
    deadline = time.monotonic() + 120
    while store.status(rid) != "running" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.status(rid) == "running"
    assert "**Runs:** 1 running · 0 queued" in sidebar_status(AppTest.from_file(APP).run())
    at = open_page("pages/live.py")
    assert any("out of memory on the probe batch" in e.value for e in at.error)
    assert not at.exception
    at.button(key=f"cancel-{rid}").click().run()
    assert engine.wait([rid], timeout=60)[rid] == "cancelled"
    store.delete([failed.run_id(), rid])  # leave the store as the other tests expect it
    store.close()


def test_compare_upload_adds_runs_and_rejects_other_files(env):
    runs, metrics = env["runs"], env["metrics"]
    pick = runs.iloc[:3].copy()
    renamed = {rid: f"upload{i:02d}" for i, rid in enumerate(pick["run_id"])}
    pick["run_id"] = pick["run_id"].map(renamed)
    mine = metrics[metrics.run_id.isin(renamed)].copy()
    mine["run_id"] = mine["run_id"].map(renamed)
    path = env["tmp"] / "upload.parquet"
    write_runs_parquet(path, pick, mine)
    pooled = {"setting": "all settings (pooled)"}  # the store may hold other settings' runs
    at = open_page("pages/compare.py", pooled)
    at.sidebar.get("file_uploader")[0].upload("mine.parquet", path.read_bytes()).run()
    assert_clean(at)
    with RunStore(env["tmp"] / "runs.sqlite") as store:
        own = len(store.runs())
    sources = 3 + (own > 0)
    assert at.caption[0].value.startswith(f"{19 + own} runs from {sources} source(s)")
    table = at.dataframe[0].value.set_index("run id")
    assert set(table.loc[list(renamed.values()), "source"]) == {"upload: mine.parquet"}
    bad = open_page("pages/compare.py", pooled)
    bad.sidebar.get("file_uploader")[0].upload("notes.parquet", b"import os").run()
    assert not bad.exception
    assert len(bad.error) == 1
    assert bad.error[0].value.startswith("notes.parquet is not a covnoise runs file: ")
    assert bad.caption[0].value.startswith(f"{16 + own} runs from {sources - 1} source(s)")


def test_parquet_download_round_trips(env):
    runs, metrics = env["runs"], env["metrics"]
    data = runsdata.parquet_bytes(runs, metrics)
    path = env["tmp"] / "download.parquet"
    path.write_bytes(data)
    back_runs, back_metrics = read_runs_parquet(path)
    assert back_runs["run_id"].tolist() == runs["run_id"].tolist()
    pd.testing.assert_frame_equal(
        back_metrics.reset_index(drop=True), metrics.reset_index(drop=True)
    )


def test_presets_name_only_train_form_parameters():
    names = {p.name for p in trainform.TRAIN_PARAMS}
    for preset in presets.PRESETS.values():
        assert set(preset.values) <= names
        assert set(preset.values) <= set(trainform.PARAM_LABELS)


def test_every_preset_makes_valid_runs_and_says_what_to_expect():
    """Each preset, over the form's defaults, is a grid the form accepts; the teaching ones run
    on MNIST-1D (where the gap shows), the quick one on digits; each says what to look for and
    how long it takes."""
    defaults = {p.name: p.default for p in trainform.TRAIN_PARAMS}
    for key, preset in presets.PRESETS.items():
        configs = trainform.form_configs({**defaults, **preset.values})
        assert configs, key
        assert preset.expect and preset.takes, key
        data = {c.dataset for c in configs}
        assert data == ({"digits"} if key == "quick" else {"mnist1d"}), key


def test_parse_floats_and_error_texts():
    assert trainform.parse_floats("1; 4, 1", "noise_scale") == [1.0, 4.0]
    for text, why in (
        ("", "give at least one number"),
        ("1, x", "'x' is not a number"),
        ("-1", "'-1' is not allowed"),
        ("inf", "'inf' is not allowed"),
        (",".join(str(i) for i in range(11)), "at most 10 multipliers"),
    ):
        with pytest.raises(ConfigError) as err:
            trainform.parse_floats(text, "noise_scale")
        assert err.value.field == "noise_scale"
        assert trainform.error_text(err.value).startswith(why)
    assert trainform.short_field("small_batch") == "target small batch M"
    assert trainform.short_field("other") == "other"
    assert trainform.missing_data("digits") is None


def test_list_and_text_params():
    noises = ListParam("noises", [], ("none", "full"))
    assert noises.parse(" none, full ,") == ["none", "full"]
    assert noises.format(["none", "full"]) == "none,full"
    with pytest.raises(BadValue, match="'diag' is not one of none, full"):
        noises.parse("none,diag")
    with pytest.raises(BadValue, match="too many items"):
        ListParam("x", []).parse(",".join(["a"] * 201))
    assert TextParam("t", "", max_len=3).parse("abc") == "abc"
    with pytest.raises(BadValue, match="longer than 3 characters"):
        TextParam("t", "", max_len=3).parse("abcd")


def test_filters_compare_values_as_text():
    runs = pd.DataFrame(
        {
            "run_id": ["a", "b", "c"],
            "cfg_batch_size": [1024.0, 32.0, 1024.0],
            "cfg_noise": ["full", "none", "diag"],
            "cfg_drop_last": [True, False, True],
        }
    )
    assert filters.filter_runs(runs, {"cfg_batch_size": ["1024"]})["run_id"].tolist() == ["a", "c"]
    kept = filters.filter_runs(runs, {"cfg_batch_size": [1024], "cfg_noise": ["diag"]})
    assert kept["run_id"].tolist() == ["c"]
    assert len(filters.filter_runs(runs, {"cfg_noise": [], "missing": ["x"]})) == 3
    options = filters.filter_options(runs)
    assert options["cfg_batch_size"] == ["32", "1024"] and options["source"] == []
    # the data choices filter too, by their config labels
    assert options["cfg_drop_last"] == ["False", "True"]
    assert filters.filter_runs(runs, {"cfg_drop_last": ["True"]})["run_id"].tolist() == ["a", "c"]
    assert filters.FILTER_COLUMNS["cfg_noise_source"] == "noise source"
    assert filters.FILTER_COLUMNS["cfg_val_fraction"] == "validation fraction"
    assert {p.name for p in filters.filter_params()} == {
        *filters.FILTER_PARAM.values(),
        filters.TAGS_PARAM,
        filters.HIDDEN_PARAM,
    }
    assert set(filters.FILTER_PARAM) == set(filters.FILTER_COLUMNS)


def test_formatting():
    assert [formatting.fmt_seconds(s) for s in (45, 192, 5400, float("nan"))] == [
        "45 s",
        "3.2 min",
        "1.5 h",
        "unknown",
    ]
    assert formatting.short_id("0123456789abcdef") == "01234567"
    cfg = RunConfig(
        dataset="digits",
        batch_size=1024,
        small_batch=32,
        noise="full",
        noise_scale=4.0,
        lr=0.5,
        seed=1,
    )
    assert formatting.describe_config(cfg) == (
        "digits, mlp, L=1024, M=32, full noise ×4, η=0.5, seed 1"
    )
    table = formatting.configs_table([cfg, cfg.replace(noise="none")])
    assert table["run id"].tolist() == [cfg.run_id(), cfg.replace(noise="none").run_id()]
    assert table["s"].isna().tolist() == [False, True]


def test_train_form_carries_noise_source_validation_and_drop_last(env):
    at = open_page("pages/train.py")
    at.selectbox(key="train.noise_source").set_value("fisher")
    at.number_input(key="train.val_fraction").set_value(0.2)
    at.checkbox(key="train.drop_last").set_value(True).run()
    assert_clean(at)
    table = at.dataframe[0].value
    assert table["noise"].tolist() == ["none", "full", "none"]  # LB grid, then the baseline
    assert table["val fraction"].tolist() == [0.2, 0.2, 0.2]
    # a run without injected noise has no noise source to name
    assert table["notes"].tolist() == ["drop-last", "fisher · drop-last", "drop-last"]
    values = {p.name: p.default for p in trainform.TRAIN_PARAMS}
    values.update(noise_source="fisher", val_fraction=0.2, drop_last=True)
    configs = trainform.form_configs(values)
    assert table["run id"].tolist() == [c.run_id() for c in configs]
    full = next(c for c in configs if c.noise == "full")
    assert (full.noise_source, full.val_fraction, full.drop_last) == ("fisher", 0.2, True)
    assert formatting.describe_config(full).endswith("η=0.5, fisher, drop-last, seed 0")
    plain = [c for c in configs if c.noise == "none"]
    assert {c.noise_source for c in plain} == {"batch"} and all(c.drop_last for c in plain)
    assert plain[0] == full.replace(noise="none", noise_source="batch")


#: Runs with a validation split, one pair with Fisher-source noise and one drop-last run.
VALIDATED = [
    *(
        RunConfig(
            dataset="digits",
            width=8,
            batch_size=128,
            small_batch=16,
            noise="full",
            noise_source="fisher",
            val_fraction=0.2,
            steps=10,
            epochs=None,
            eval_every=5,
            seed=seed,
            name="validated",
        )
        for seed in (0, 1)
    ),
    RunConfig(
        dataset="digits",
        width=8,
        batch_size=128,
        small_batch=16,
        noise="diag",
        drop_last=True,
        val_fraction=0.2,
        steps=10,
        epochs=None,
        eval_every=5,
        name="validated",
    ),
]


def validated_metrics(i: int, step: int) -> dict[str, float]:
    """The metrics run `i` of VALIDATED logs at `step` (distinct per run and step)."""
    k = 1.0 + 0.1 * i
    return {
        "train_loss": k / (1 + step),
        "test_loss": k / (1 + step) + 0.3,
        "val_loss": k / (1 + step) + 0.2,
        "train_acc": 0.5 + 0.04 * step,
        "test_acc": 0.4 + 0.03 * step + 0.01 * i,
        "val_acc": 0.45 + 0.02 * step + 0.02 * i,
        "lr": 0.5,
        "sharpness": 1.0 + step,
        "noise_fro": 0.1 * k,
        "noise_trace": 0.2 * k,
        "noise_trace_hsigma": 0.05 * k,
    }


def store_validated_runs(store: RunStore) -> list[str]:
    """Write VALIDATED into the store as finished runs, their metrics one event at a time."""
    now = time.time()
    frame = pd.DataFrame(
        [
            {
                "run_id": cfg.run_id(),
                "name": cfg.name,
                "config": cfg.to_json(),
                "status": "finished",
                "engine": "local",
                "submitted_at": now + i,
                "total_steps": 10,
                "steps": 10,
                "wall_time": 1.0,
            }
            for i, cfg in enumerate(VALIDATED)
        ]
    )
    store.import_frames(
        frame,
        pd.DataFrame(
            columns=["run_id", "step", "epoch", "examples_seen", "wall_time", "name", "value"]
        ),
    )
    for i, cfg in enumerate(VALIDATED):
        for step in (0, 5, 10):
            event = {"step": step, "epoch": step / 10, "examples_seen": step * 128}
            event.update(wall_time=step / 10, metrics=validated_metrics(i, step))
            store.add_metric_event(cfg.run_id(), event)
    return [cfg.run_id() for cfg in VALIDATED]


def test_pages_show_validation_metrics_and_the_data_choices(env):
    store = RunStore(env["tmp"] / "runs.sqlite")
    ids = store_validated_runs(store)
    try:
        for page in PAGES:
            assert_clean(open_page(page))
        # Live: validation beside train and test, labels naming fisher and drop-last
        live = open_page("pages/live.py")
        assert_clean(live)
        named = traces(figure(live, "live-curves"))
        labels = formatting.run_labels(store.runs())
        assert all("fisher" in labels[r] for r in ids[:2]) and "drop-last" in labels[ids[2]]
        assert not any("drop-last" in labels[r] for r in ids[:2])
        for i, rid in enumerate(ids):
            for metric, suffix in (("val_loss", "val loss"), ("val_acc", "val acc")):
                trace = named[f"{labels[rid]} · {suffix}"]
                np.testing.assert_allclose(trace["x"], [0.0, 0.5, 1.0])  # epochs
                expected = [validated_metrics(i, s)[metric] for s in (0, 5, 10)]
                np.testing.assert_allclose(trace["y"], expected)
        assert set(live.dataframe[0].value["run"]) >= {labels[r] for r in ids}
        # Compare: validation accuracy, grouped by the noise source and drop-last
        at = open_page(
            "pages/compare.py",
            {"metric": "val_acc", "source": runsdata.OWN_SOURCE, "group": "noise_source,drop_last"},
        )
        assert_clean(at)
        fig = figure(at, "compare-curves")
        assert fig["layout"]["yaxis"]["title"]["text"] == "validation accuracy"
        named = traces(fig)
        fisher = [np.mean([validated_metrics(i, s)["val_acc"] for i in (0, 1)]) for s in (0, 5, 10)]
        np.testing.assert_allclose(named["fisher (n=2)"]["y"], fisher)
        dropped = [validated_metrics(2, s)["val_acc"] for s in (0, 5, 10)]
        np.testing.assert_allclose(named["drop-last (n=1)"]["y"], dropped)
        assert "drop-last for runs that cut each epoch" in at.caption[0].value
        table = at.dataframe[0].value.set_index("run id")
        np.testing.assert_allclose(
            table.loc[ids, "validation accuracy"],
            [validated_metrics(i, 10)["val_acc"] for i in range(3)],
        )
        assert at.multiselect(key="compare.group").value == ["noise_source", "drop_last"]
        # Noise vs generalisation: the choices filter the runs
        at = open_page(
            "pages/noise_vs_generalisation.py",
            {"source": runsdata.OWN_SOURCE, "noise_source": "fisher"},
        )
        assert_clean(at)
        assert at.caption[0].value == "2 runs in 1 settings."
        at = open_page(
            "pages/noise_vs_generalisation.py",
            {"source": runsdata.OWN_SOURCE, "drop_last": "True", "val_fraction": "0.2"},
        )
        assert_clean(at)
        assert at.caption[0].value == "1 runs in 1 settings."
    finally:
        store.delete(ids)  # leave the store as the other tests expect it
        store.close()


def test_cached_runs_draw_without_validation_and_are_labelled_drop_last(env):
    runs = runsdata.cached_runs()[0]
    assert len(runs) == 16
    labels = formatting.run_labels(runs)
    assert all("drop-last" in label for label in labels)
    fig = viz.live_figure(env["metrics"], labels.to_dict())
    names = [t.name for t in fig.data]
    assert names and not [n for n in names if " · val " in n]
    assert [a.text for a in fig.layout.annotations] == [p[0] for p in viz.LIVE_PANELS]
    # Compare asked for validation accuracy says none was logged, and draws nothing
    at = open_page("pages/compare.py", {"metric": "val_acc", "source": CACHED})
    assert_clean(at)
    assert [w.value for w in at.warning] == ["None of these runs logged validation accuracy."]
    assert not at.get("plotly_chart")
    assert "validation accuracy" not in at.dataframe[0].value.columns


def test_the_form_checks_the_batch_against_the_examples_a_run_trains_on():
    """The validation split is carved from the training set, so L is checked against what is
    left (digits: 1347 - 135 = 1212 at the default 10%), and the baseline is evaluated as
    often per epoch as the large batch (L/M times the steps of the continuous stream)."""
    values = {p.name: p.default for p in trainform.TRAIN_PARAMS}
    values.update(dataset="digits", noises=["none"], baseline=True, batch_size=1300)
    with pytest.raises(ConfigError) as err:
        trainform.form_configs(values)
    assert err.value.field == "batch_size" and "1212" in str(err.value)
    values.update(val_fraction=0.0)
    assert trainform.form_configs(values)  # 1300 <= 1347 without a validation split
    values.update(batch_size=1024, val_fraction=0.1, eval_every=4, small_batch=32)
    configs = trainform.form_configs(values)
    baseline = [c for c in configs if c.batch_size == 32]
    assert baseline and all(c.eval_every == 4 * 1024 // 32 for c in baseline)


@pytest.mark.parametrize("dataset", ["teacher", "mnist1d", "digits", "mnist-5k"])
@pytest.mark.parametrize("model", ["mlp", "cnn", "vgg", "resnet"])
def test_every_data_set_and_model_the_form_allows_runs_or_is_refused_by_field(dataset, model):
    """Each data set × model pair of the form either builds (checked by building the model on
    the meta device) or is refused with a ConfigError naming the model, never a ValueError."""
    import torch

    from covnoise.core.models import build_model
    from covnoise.data import input_shape, num_classes

    values = {p.name: p.default for p in trainform.TRAIN_PARAMS}
    values.update(dataset=dataset, model=model, width=8, depth=2, batch_size=128, small_batch=32)
    try:
        with torch.device("meta"):
            build_model(model, input_shape(dataset), num_classes(dataset), width=8, depth=2)
        builds = True
    except ValueError:
        builds = False
    if builds:
        assert trainform.form_configs(values)
    else:
        with pytest.raises(ConfigError) as err:
            trainform.form_configs(values)
        assert err.value.field == "model"


def test_noise_page_compares_one_setting_unless_the_user_pools(env):
    """Cached runs at two learning rates are two settings: the page shows one (with its own
    correlations) and pools them only when asked, saying which fields differ."""
    runs, metrics = env["runs"], env["metrics"]
    configs = runs["config"].map(json.loads)
    for c in configs:
        c["lr"] = 2 * c["lr"]
    ids = {rid: "f" + rid[1:] for rid in runs["run_id"]}
    other = runs.assign(config=configs.map(json.dumps), run_id=runs["run_id"].map(ids))
    extra = env["tmp"] / "cached" / "d-lr.parquet"
    write_runs_parquet(extra, other, metrics.assign(run_id=metrics["run_id"].map(ids)))
    try:
        source = {"source": CACHED + ",d-lr.parquet"}
        at = open_page("pages/noise_vs_generalisation.py", source)
        assert_clean(at)
        assert at.caption[0].value == "16 runs in 8 settings."  # one learning rate
        box = at.selectbox(key="noise.setting")
        assert len(box.options) == 3 and box.options[-1] == "all settings (pooled)"
        assert {o.split("=")[0] for o in box.options[:2]} == {"lr"}
        pooled = box.set_value("all settings (pooled)").run()
        assert_clean(pooled)
        assert pooled.caption[0].value == "32 runs in 16 settings."
        assert "learning rate" in pooled.warning[0].value
    finally:
        extra.unlink()


def test_the_show_me_links_open_the_views_they_promise(tmp_path, monkeypatch):
    """Home's guided tour: every link's parameters are accepted by its page (no notice, no
    error), and the study views show the groups the tour describes."""
    from covnoise.ui import presets

    monkeypatch.setenv("COVNOISE_CACHED_RUNS", str(ROOT / "cached_runs"))
    monkeypatch.setenv("COVNOISE_STORE", str(tmp_path / "runs.sqlite"))
    home = AppTest.from_file(APP, default_timeout=120).run()
    assert_clean(home)
    # (groups, runs): SB and LB at η = 0.4 (eight seeds) and LB at 0.8 and 1.6 (five);
    # SB, LB and the three structures at s = 0.5 and 1, eight seeds each
    want = {0: (4, 8 + 8 + 5 + 5), 1: (8, 8 * 8)}
    for i, (page, _, _, params) in enumerate(presets.SHOW_ME):
        at = open_page(page, params, timeout=120)
        assert_clean(at)
        assert not [x.value for x in at.info if "Ignored" in x.value], page
        if i in want:
            table = at.dataframe[0].value  # one row per run
            assert (table["group"].nunique(), len(table)) == want[i], page
        if page.endswith("noise_vs_generalisation.py"):
            # the batch-noise arms at 600 epochs: 12 equal-trace and 4 equal-Frobenius settings
            assert at.caption[0].value == "128 runs in 16 settings."


def test_compare_shows_one_setting_and_never_pools_sources_silently(env):
    """Cached runs at two learning rates are two settings: Compare shows the larger one and
    pools them only when asked, naming the fields that differ. Runs of that setting in the
    app's own store are never averaged into the cached groups: groups split by source."""
    from covnoise.runs import RunStore

    runs, metrics = env["runs"], env["metrics"]
    half = runs.iloc[: len(runs) // 2]
    configs = half["config"].map(json.loads)
    for c in configs:
        c["lr"] = 2 * c["lr"]
    ids = {rid: "g" + rid[1:] for rid in half["run_id"]}
    other = half.assign(config=configs.map(json.dumps), run_id=half["run_id"].map(ids))
    mine = metrics[metrics["run_id"].isin(ids)]
    extra = env["tmp"] / "cached" / "e-lr.parquet"
    write_runs_parquet(extra, other, mine.assign(run_id=mine["run_id"].map(ids)))
    try:
        params = {"source": CACHED + ",e-lr.parquet", "group": "noise"}
        at = open_page("pages/compare.py", params)
        assert_clean(at)
        box = at.selectbox(key="compare.setting")
        assert box.options[-1] == "all settings (pooled)" and box.value == box.options[0]
        table = at.dataframe[0].value
        assert len(table) == len(runs) and "split by source" not in at.caption[0].value
        offered = set(at.multiselect(key="compare.group").options)  # readable names
        assert {"noise structure", "multiplier s"} <= offered
        assert not offered & {"seed", "name", "learning rate η", "lr", "noise_scale"}
        pooled = box.set_value("all settings (pooled)").run()
        assert_clean(pooled)
        assert len(pooled.dataframe[0].value) == len(runs) + len(half)
        assert "learning rate" in pooled.warning[0].value
        # the same runs in the app's own store: same setting, but never one group with them
        copy = {rid: "h" + rid[1:] for rid in half["run_id"]}
        own = half.assign(run_id=half["run_id"].map(copy))
        store = RunStore(env["tmp"] / "runs.sqlite")
        store.import_frames(own, mine.assign(run_id=mine["run_id"].map(copy)))
        params["source"] += ",this store"
        st.cache_resource.clear()
        at = open_page("pages/compare.py", params)
        assert_clean(at)
        table = at.dataframe[0].value
        yours = table["source"] == "this store"
        assert yours.sum() == len(half)
        assert table.loc[yours, "group"].str.endswith(" · yours").all()
        assert table.loc[~yours, "group"].str.endswith(" · cached").all()
        assert "split by source" in at.caption[0].value
        assert "source (cached / yours / file)" in at.multiselect(key="compare.group").options
        store.delete(own["run_id"])
        store.close()
    finally:
        extra.unlink()


def test_runs_are_hidden_tagged_and_deleted_from_compare(env):
    """Compare's manage box: hiding a cached run drops it from the views until 'show hidden
    runs'; tags become a filter; only the app's own finished runs can be deleted, after the
    confirmation, and then they are gone from the store."""
    from covnoise.runs import RunStore

    runs, metrics = env["runs"], env["metrics"]
    store = RunStore(env["tmp"] / "runs.sqlite")
    own = runs.iloc[:1].assign(run_id="own" + runs["run_id"].iloc[0][3:])
    store.import_frames(
        own,
        metrics[metrics["run_id"] == runs["run_id"].iloc[0]].assign(run_id=own["run_id"].iloc[0]),
    )
    mine, cached = own["run_id"].iloc[0], runs["run_id"].iloc[1]
    try:
        at = open_page("pages/compare.py", {"group": "noise"})
        assert_clean(at)
        total = len(at.dataframe[0].value)
        pick = at.multiselect(key="manage.runs")
        pick.set_value([cached]).run()
        at.button(key="manage.hide").click().run()
        assert_clean(at)
        table = at.dataframe[0].value
        assert len(table) == total - 1 and cached not in set(table["run id"])
        at.checkbox(key="compare.show_hidden").check().run()
        assert cached in set(at.dataframe[0].value["run id"])
        # tags: set on two runs, then filter by the tag
        at.multiselect(key="manage.runs").set_value([cached, mine]).run()
        at.text_input(key="manage.tagtext").input("class demo, week 1").run()
        at.button(key="manage.tag").click().run()
        assert store.notes()[mine][0] == ("class demo", "week 1")
        at.multiselect(key="compare.tags").set_value(["week 1"]).run()
        assert set(at.dataframe[0].value["run id"]) == {cached, mine}
        # delete: the cached run is refused, the own one needs the confirmation
        at.multiselect(key="manage.runs").set_value([cached, mine]).run()
        assert "come from files" in " ".join(c.value for c in at.caption)
        delete = at.button(key="manage.delete")
        assert delete.disabled and delete.label == "Delete 1 run(s)"
        at.checkbox(key="manage.confirm").check().run()
        assert not at.button(key="manage.delete").disabled
        at.button(key="manage.delete").click().run()
        assert_clean(at)
        assert store.get_run(mine) is None and mine not in store.notes()
        assert cached in store.notes()  # a cached run's note stays
    finally:
        store.delete([mine])
        store.set_hidden([cached], False)
        store.set_tags([cached], [])
        store.close()


def test_train_warns_before_launch_when_earlier_runs_say_it_will_diverge(env):
    """The cached digits runs of the form's default model measured λ_max ≈ 1.86 at the start:
    η = 5 is above 2/λ_max ≈ 1.07, and a multiplier of 20 is far outside the studied range.
    Both are said above the cost estimate; Launch stays available (a warning, not an error)."""
    at = open_page("pages/train.py")
    assert_clean(at)
    assert not [w for w in at.warning if "λ_max" in w.value]
    at.number_input(key="train.lr").set_value(5.0)
    at.text_input(key="train.noise_scales").set_value("1, 20").run()
    texts = [w.value for w in at.warning]
    assert any("η = 5 is above 2(1+β)/λ_max ≈ 1.07" in t for t in texts), texts
    assert any("s = 20 is far above the studied range" in t for t in texts), texts
    assert not at.button(key="launch-grid").disabled
