"""Compare: overlay your runs and the cached ones, grouped, with seeds as mean ± std bands."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from covnoise import results, viz
from covnoise.runs import FileTooLargeError, StoreFormatError
from covnoise.ui import filters, formatting, guards, manage, memo, resources, runsdata
from covnoise.ui.urlstate import (
    BoolParam,
    ChoiceParam,
    FloatParam,
    ListParam,
    TextParam,
    UrlState,
)

METRICS = tuple(results.METRIC_LABELS)
STATE = UrlState(
    "compare",
    [
        *filters.filter_params(),
        ChoiceParam("metric", "test_loss", METRICS),
        ChoiceParam("x", "epoch", tuple(results.X_AXES)),
        ListParam("group", ["batch_size", "noise", "noise_scale"]),
        ChoiceParam("draw", "groups", ("groups", "runs")),
        FloatParam("smooth", 0.0, 0.0, 0.99),
        BoolParam("log_y", False),
        TextParam("setting", ""),
    ],
)
K = STATE.key
TABLE_METRICS = (
    "train_loss",
    "test_loss",
    "val_loss",
    "gen_gap",
    "train_acc",
    "test_acc",
    "val_acc",
    "sharpness",
    "noise_fro",
    "noise_trace",
    "noise_trace_hsigma",
)
TAGS_NOTE = (
    " Labels say drop-last for runs that cut each epoch into full batches (dropping the rest) "
    "and fisher for noise drawn from the true Fisher; runs that differ in these are never "
    "averaged together."
)
#: Table columns shown only when some run logged them (runs without a validation split do not).
OPTIONAL_METRICS = ("val_loss", "val_acc")


def upload_box() -> None:
    with st.sidebar.expander("Add runs from a file"):
        up = st.file_uploader("covnoise runs file (.parquet)", type=["parquet"], key="upload")
        if up is not None and up.name not in runsdata.uploads():
            try:
                runsdata.uploads()[up.name] = runsdata.read_upload(up.name, up.getvalue())
            except FileTooLargeError as err:
                st.error(f"{up.name} was not added: {err}")
            except StoreFormatError as err:
                st.error(f"{up.name} is not a covnoise runs file: {err}")
        for name, (runs, _) in runsdata.uploads().items():
            st.caption(f"{name}: {len(runs)} runs")


def final_table(
    runs: pd.DataFrame, metrics: pd.DataFrame, labels: pd.Series, groups: pd.Series
) -> pd.DataFrame:
    final = results.final_values(metrics, TABLE_METRICS)
    table = pd.DataFrame(
        {
            "run": runs["run_id"].map(labels).to_numpy(),
            "group": runs["run_id"].map(groups).to_numpy(),
            "source": runs["source"].to_numpy(),
            "tags": runs["tags"].to_numpy() if "tags" in runs else "",
            "status": runs["status"].to_numpy(),
            "steps": runs["steps"].to_numpy(),
            "wall time (s)": runs["wall_time"].to_numpy(),
        },
        index=runs["run_id"].to_numpy(),
    )
    for name in TABLE_METRICS:
        if name in OPTIONAL_METRICS and name not in final:
            continue
        table[results.metric_label(name)] = final[name] if name in final else float("nan")
    return table.rename_axis("run id").reset_index()


def controls(keys: list[str]) -> None:
    with st.sidebar:
        st.header("Figure")
        st.selectbox("metric", METRICS, key=K("metric"), format_func=results.metric_label)
        st.selectbox("x axis", list(results.X_AXES), key=K("x"), format_func=results.X_AXES.get)
        current = [k for k in st.session_state.get(K("group"), []) if k in keys]
        st.session_state[K("group")] = current
        st.multiselect(
            "group by (seeds are averaged)",
            keys,
            key=K("group"),
            format_func=results.group_key_label,
            placeholder="no grouping: one group",
        )
        st.radio(
            "draw",
            ["groups", "runs"],
            key=K("draw"),
            horizontal=True,
            format_func={"groups": "groups: mean ± std", "runs": "every run"}.get,
        )
        st.slider("exponential smoothing", 0.0, 0.99, step=0.01, key=K("smooth"))
        st.checkbox("log scale", key=K("log_y"))


def main() -> None:
    st.title("Compare runs")
    for notice in STATE.load():
        st.info(notice)
    store = resources.get_store()
    upload_box()
    every = runsdata.all_runs(store)
    runs = filters.run_filter_widgets(STATE, every)
    if not runs.empty:  # fields the user groups by are compared on purpose
        grouped = st.session_state.get(K("group")) or []
        runs = filters.one_setting(STATE, runs, compared=grouped)
    controls(results.group_keys(runs if not runs.empty else every))
    STATE.save()
    v = STATE.values()
    if runs.empty:
        st.info(
            "No runs match the filters. Cached runs live in cached_runs/; launch your own on Train."
        )
        return
    keys = list(v["group"])
    split = results.SOURCE_KEY not in keys and runs["source"].map(results.origin).nunique() > 1
    if split:  # your runs are never averaged into the cached ones silently
        keys.append(results.SOURCE_KEY)
    with st.spinner(f"Working… reading {len(runs)} runs' metrics", show_time=True):
        metrics = runsdata.metrics_for(store, runs)
        curve = results.smooth(results.curves(metrics, v["metric"], v["x"]), v["smooth"])
    x_label, y_label = results.X_AXES[v["x"]], results.metric_label(v["metric"])
    groups = results.group_labels(runs, keys)
    labels = formatting.run_labels(runs)
    tagged = results.run_tags(runs)
    st.caption(
        f"{len(runs)} runs from {runs['source'].nunique()} source(s); {groups.nunique()} group(s)."
        + (TAGS_NOTE if tagged.astype(bool).any() else "")
        + (
            " Groups are split by source: runs from different places are never averaged together."
            if split
            else ""
        )
    )
    if not curve["value"].notna().any():  # nothing logged (validation without a split)
        st.warning(f"None of these runs logged {y_label}.")
    elif v["draw"] == "groups":
        agg = memo.aggregate_seeds(curve, groups)
        fig = viz.group_bands_figure(agg, x_label, y_label, log_y=v["log_y"])
        st.plotly_chart(fig, key="compare-curves")
        st.caption("Lines: mean over the runs of a group (seeds); bands: ± one sample std.")
    else:
        order = runs.sort_values(["submitted_at"])["run_id"]
        fig = viz.run_lines_figure(
            curve, {r: labels[r] for r in order}, x_label, y_label, log_y=v["log_y"]
        )
        st.plotly_chart(fig, key="compare-curves")

    st.subheader("Final metrics")
    table = final_table(runs, metrics, labels, groups)
    st.dataframe(
        table,
        hide_index=True,
        key="compare-table",
        column_config={c: st.column_config.NumberColumn(format="%.4g") for c in table.columns[8:]},
    )
    manage.manage_box(store, runs, labels)
    a, b = st.columns(2)
    a.download_button(
        "Download the table (CSV)",
        table.to_csv(index=False).encode(),
        "covnoise-final-metrics.csv",
        "text/csv",
        on_click="ignore",
        icon=":material/download:",
    )
    b.download_button(
        "Download runs and metrics (Parquet)",
        lambda: runsdata.parquet_bytes(runs, metrics),
        "covnoise-runs.parquet",
        "application/octet-stream",
        on_click="ignore",
        icon=":material/download:",
    )


guards.guarded(main, "the Compare page")
