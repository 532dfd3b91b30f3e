"""Train: choose a grid of runs, see what it costs, launch it on the engine."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import streamlit as st

from covnoise.config import NOISES, ConfigError
from covnoise.data import DATASETS as DATASET_SPECS
from covnoise.runs import ACTIVE, COMPLETED
from covnoise.ui import cost, formatting, guards, presets, resources, runsdata, trainform
from covnoise.ui.urlstate import UrlState

STATE = UrlState("train", trainform.TRAIN_PARAMS)
K = STATE.key


@guards.guarded_callback("the preset")
def apply_preset(name: str) -> None:
    """Fill the form with a preset (a button callback, so it runs before the widgets)."""
    for param, value in presets.PRESETS[name].values.items():
        st.session_state[K(param)] = value
    st.session_state["train.preset"] = name


@guards.guarded_callback("the launch")
def launch(configs: list, which: str) -> None:
    """Queue the configs on the engine and remember what happened for the message."""
    engine = resources.get_engine()
    before = engine.store.statuses([c.run_id() for c in configs])
    ids = engine.submit_many(configs)
    reused = [i for i in ids if before.get(i) in ACTIVE | COMPLETED]
    st.session_state["train.launched"] = {"which": which, "ids": ids, "reused": reused}


def form() -> dict[str, st.delta_generator.DeltaGenerator]:
    """The widgets, each followed by an empty slot for its validation message."""
    slots: dict[str, st.delta_generator.DeltaGenerator] = {}

    def slot(name: str) -> None:
        slots[name] = st.empty()

    c1, c2, c3 = st.columns(3)
    with c1:
        _data_and_model(slot)
    with c2:
        _batch_and_noise(slot)
    with c3:
        _optimiser_and_evaluation(slot)
    return slots


def _data_and_model(slot: Callable[[str], None]) -> None:
    """Data set, its validation fraction, model, width, depth."""
    st.subheader("Data and model")
    st.selectbox(
        **trainform.choice_field(
            "dataset",
            help="Embedded sets need no files; mnist, fashion-mnist and cifar10 "
            "read files from the data folder.",
        ),
        key=K("dataset"),
    )
    slot("dataset")
    spec = DATASET_SPECS.get(st.session_state[K("dataset")])
    if spec is not None:
        st.caption(spec.description)
    st.number_input(
        **trainform.number_field("val_fraction"), step=0.05, format="%.2f", key=K("val_fraction")
    )
    slot("val_fraction")
    st.selectbox(**trainform.choice_field("model"), key=K("model"))
    slot("model")
    st.number_input(**trainform.number_field("width"), step=16, key=K("width"))
    slot("width")
    st.number_input(**trainform.number_field("depth"), key=K("depth"))
    slot("depth")


def _batch_and_noise(slot: Callable[[str], None]) -> None:
    """L, M, drop-last, structures, noise source, multipliers, baseline, seeds."""
    st.subheader("Batch and noise")
    st.number_input(**trainform.number_field("batch_size"), step=64, key=K("batch_size"))
    slot("batch_size")
    st.number_input(**trainform.number_field("small_batch"), step=8, key=K("small_batch"))
    slot("small_batch")
    st.checkbox(**trainform.checkbox_field("drop_last"), key=K("drop_last"))
    slot("drop_last")
    st.multiselect(
        "noise structures",
        NOISES,
        key=K("noises"),
        help="none: plain large-batch SGD; isotropic: (tr C/P)·I; "
        "diag: diag(C); full: C. All have the same trace.",
    )
    slot("noises")
    st.selectbox(
        **trainform.choice_field(
            "noise_source",
            help="batch: the covariance of the batch's per-example gradients; fisher: the true "
            "Fisher, from gradients at labels sampled from the model's own predictions. Runs "
            "without injected noise have no source.",
        ),
        key=K("noise_source"),
    )
    slot("noise_source")
    st.text_input(
        "multipliers s (comma-separated)",
        key=K("noise_scales"),
        help="c = s·(1/M − 1/L) scales the injected covariance.",
    )
    slot("noise_scales")
    st.checkbox("also run plain SGD at the small batch M (the baseline)", key=K("baseline"))
    slot("baseline")
    st.number_input(
        **trainform.number_field("seeds", help="Seeds 0, 1, … per setting."), key=K("seeds")
    )
    slot("seeds")


def _optimiser_and_evaluation(slot: Callable[[str], None]) -> None:
    """Learning rate and its scaling, momentum, schedule, length, evaluation cadence."""
    st.subheader("Optimiser and evaluation")
    st.number_input(**trainform.number_field("lr"), step=0.05, format="%.4g", key=K("lr"))
    slot("lr")
    st.selectbox(**trainform.choice_field("lr_scaling"), key=K("lr_scaling"))
    slot("lr_scaling")
    st.number_input(**trainform.number_field("momentum"), step=0.1, key=K("momentum"))
    slot("momentum")
    schedule = st.selectbox(**trainform.choice_field("schedule"), key=K("schedule"))
    slot("schedule")
    st.number_input(
        **trainform.number_field("warmup_epochs"),
        key=K("warmup_epochs"),
        disabled=schedule != "warmup_cosine",
    )
    slot("warmup_epochs")
    st.number_input(
        **trainform.number_field("step_every_epochs"),
        key=K("step_every_epochs"),
        disabled=schedule != "step",
    )
    slot("step_every_epochs")
    st.number_input(**trainform.number_field("epochs"), step=10.0, key=K("epochs"))
    slot("epochs")
    st.number_input(
        **trainform.number_field(
            "eval_every",
            help="Steps of L between evaluations; the baseline is evaluated as often per epoch.",
        ),
        key=K("eval_every"),
    )
    slot("eval_every")
    st.number_input(**trainform.number_field("sharpness_every"), key=K("sharpness_every"))
    slot("sharpness_every")
    st.number_input(**trainform.number_field("probe_size"), step=64, key=K("probe_size"))
    slot("probe_size")


def risk_panel(configs: list) -> None:
    """Warnings from earlier runs of the same model: η above 2(1+β)/λ_max at the start, η at
    which they diverged; multipliers far above the studied range."""
    from covnoise.results.stability import first_values, launch_warnings, model_runs

    engine = resources.get_engine()
    past = model_runs(runsdata.all_runs(engine.store), configs)
    metrics = runsdata.metrics_for(engine.store, past) if len(past) else pd.DataFrame()
    lam = first_values(metrics)
    for text in launch_warnings(configs, past, lam):
        st.warning(text, icon=":material/warning:")


def cost_panel(configs: list) -> None:
    engine = resources.get_engine()
    past = runsdata.all_runs(engine.store)
    workers = getattr(engine, "workers", None) or 1
    new = cost.to_run(configs, engine.store.statuses([c.run_id() for c in configs]))
    if len(new) < len(configs):
        st.caption(
            f"{len(configs) - len(new)} of these runs are already in the store (queued, "
            "running or done) and will not run again: the estimate counts the other "
            f"{len(new)}."
        )
    warm = int(engine.info().get("warm_spares") or 0)  # idle workers: no start-up to pay
    summary = cost.cost_summary(
        new,
        past,
        workers,
        getattr(engine, "threads", None),
        warm,
        metrics_of=lambda runs: runsdata.metrics_for(engine.store, runs),
    )
    a, b, c, d = st.columns(4)
    a.metric("runs", summary["runs"])
    b.metric("training steps", f"{summary['steps']:,}")
    c.metric(
        "evaluations (with λ_max)",
        f"{summary['evaluations']:,} ({summary['sharpness_evaluations']:,})",
    )
    d.metric("estimated time", formatting.fmt_seconds(summary["seconds"]))
    st.caption(cost_basis(summary, workers))


def cost_basis(summary: dict, workers: int) -> str:
    """What the estimate rests on, in a sentence or three."""
    runs, timed = summary["runs"], summary["timed"]
    if timed == runs:
        basis = "each setting's step and evaluations timed on this machine"
    elif timed:
        basis = (
            f"{timed} of {runs} runs' settings timed on this machine, the others from their "
            f"FLOPs at the rate those showed ({summary['rate'] / 1e9:.2g} GFLOP/s)"
        )
    else:
        basis = f"FLOPs at an assumed {summary['rate'] / 1e9:.2g} GFLOP/s (no setting timed)"
    if summary["counted_on"]:
        basis += (
            f"; λ_max and noise statistics at the Hessian-vector products {summary['counted_on']}"
            " earlier runs of the same settings took"
        )
    if summary["calibrated_on"]:
        basis += f"; scaled to {summary['calibrated_on']} finished runs of this machine"
    split = summary["split"]
    total = sum(split.values()) or 1.0
    shares = ", ".join(f"{part} {t / total:.0%}" for part, t in split.items())
    return (
        f"≈ {summary['flops'] / 1e9:,.1f} GFLOP over {workers} parallel run(s): {basis}; "
        f"plus worker start-up where no started worker waits. Of the time: {shares} (λ_max "
        "and noise statistics at every *sharpness every*-th evaluation)."
    )


def main() -> None:
    st.title("Train")
    wanted = st.query_params.get("preset")
    if wanted in presets.PRESETS and st.session_state.get("train.preset_link") != wanted:
        st.session_state["train.preset_link"] = wanted
        apply_preset(wanted)
    if "preset" in st.query_params:
        del st.query_params["preset"]
    for notice in STATE.load():
        st.info(notice)

    st.caption("Teaching presets fill the form:")
    cols = st.columns(len(presets.PRESETS))
    for col, (name, preset) in zip(cols, presets.PRESETS.items(), strict=True):
        col.button(
            preset.title,
            key=f"preset-{name}",
            on_click=apply_preset,
            args=(name,),
            help=preset.explains,
            width="stretch",
        )
    chosen = st.session_state.get("train.preset")
    if chosen in presets.PRESETS:
        st.info(f"**{presets.PRESETS[chosen].title}.** {presets.PRESETS[chosen].explains}")

    slots = form()
    STATE.save()
    general = st.empty()
    try:
        configs = trainform.form_configs(STATE.values())
    except ConfigError as err:
        message = f"{trainform.short_field(err.field)}: {trainform.error_text(err)}"
        target = slots.get(err.field, general)
        target.error(message, icon=":material/error:")
        if target is not general:  # also where Launch is, so it is seen without scrolling
            st.error(f"Launch is off until this is fixed — {message}", icon=":material/block:")
        st.button(
            "Launch",
            disabled=True,
            key="launch-disabled",
            help="Fix the highlighted setting first.",
        )
        return

    st.subheader("Before launch")
    risk_panel(configs)
    cost_panel(configs)
    a, b = st.columns(2)
    a.button(
        "Launch one run",
        key="launch-one",
        on_click=launch,
        args=(configs[:1], "one"),
        icon=":material/play_arrow:",
        help=formatting.describe_config(configs[0]),
    )
    b.button(
        f"Launch the whole grid ({len(configs)} runs)",
        key="launch-grid",
        on_click=launch,
        args=(configs, "grid"),
        type="primary",
        icon=":material/playlist_play:",
    )
    done = st.session_state.get("train.launched")
    if done:
        n, reused = len(done["ids"]), len(done["reused"])
        text = f"Queued {n - reused} run(s) on the engine."
        if reused:
            text += f" {reused} already in the store (queued, running or done) were not rerun."
        st.success(text, icon=":material/check_circle:")
        st.page_link("pages/live.py", label="Watch them on Live", icon=":material/monitoring:")
    with st.expander(f"The {len(configs)} run(s) of this grid"):
        st.dataframe(formatting.configs_table(configs), hide_index=True)


guards.guarded(main, "the Train page")
