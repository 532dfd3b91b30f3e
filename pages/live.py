"""Live: running and recent runs with their progress, curves that update while they go."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from covnoise import results, viz
from covnoise.runs import ACTIVE
from covnoise.ui import formatting, guards, livemetrics, resources
from covnoise.ui.urlstate import BoolParam, ChoiceParam, FloatParam, IntParam, UrlState

STATE = UrlState(
    "live",
    [
        IntParam("recent", 6, 1, 50),
        # epochs: a small-batch run takes L/M times the steps of a large-batch one, so on a
        # step axis the large-batch curves would be squeezed into the left edge
        ChoiceParam("x", "epoch", tuple(results.X_AXES)),
        BoolParam("log_loss", False),
        FloatParam("every", 2.0, 0.5, 60.0),
    ],
)
K = STATE.key
#: Statuses whose stored message the page shows, and how.
ALERTS = {"failed": st.error, "diverged": st.warning}


@guards.guarded_callback("the cancel request")
def cancel(run_id: str) -> None:
    """Button callback: ask the engine to stop a run."""
    status = resources.get_engine().cancel(run_id)
    st.session_state["live.cancelled"] = (run_id, status)


def shown_runs(runs: pd.DataFrame, recent: int) -> pd.DataFrame:
    """Every active run and the `recent` most recently submitted others, oldest first."""
    active = runs[runs["status"].isin(ACTIVE)]
    others = runs[~runs["status"].isin(ACTIVE)].sort_values("submitted_at").tail(recent)
    return pd.concat([others, active]).sort_values("submitted_at").reset_index(drop=True)


def status_table(runs: pd.DataFrame, labels: pd.Series, progress: pd.Series) -> None:
    table = pd.DataFrame(
        {
            "run": runs["run_id"].map(labels),
            "status": runs["status"],
            "progress": runs["run_id"].map(progress).fillna(0.0),
            "wall time (s)": runs["wall_time"],
            "device": runs["device"],
            "message": runs["message"].fillna(""),
        }
    )
    st.dataframe(
        table,
        hide_index=True,
        key="live-table",
        column_config={
            "progress": st.column_config.ProgressColumn(
                "progress", min_value=0.0, max_value=1.0, format="percent"
            ),
            "wall time (s)": st.column_config.NumberColumn(format="%.1f"),
        },
    )


def body() -> None:
    """One refresh: the table, cancel buttons, failure messages and the curves."""
    store = resources.get_store()
    v = STATE.values()
    runs = store.runs()
    if runs.empty:
        st.info("No runs in this store yet. Launch some on Train; cached runs are on Compare.")
        st.page_link("pages/train.py", label="Go to Train", icon=":material/play_arrow:")
        return
    shown = shown_runs(runs, v["recent"])
    labels = formatting.run_labels(shown)
    cache = st.session_state.setdefault(
        f"live.metrics.{resources.store_path()}", livemetrics.LiveMetrics()
    )
    requeued = shown.loc[shown["status"] == "queued", "run_id"]
    cache.forget(requeued)
    metrics = cache.update(store, shown["run_id"])
    progress = livemetrics.run_progress(shown, metrics)
    active = shown[shown["status"].isin(ACTIVE)]
    counts = shown["status"].value_counts()
    st.caption(" · ".join(f"{counts[s]} {s}" for s in counts.index))
    status_table(shown, labels, progress)

    if len(active):
        st.markdown("**Cancel a run**")
        cols = st.columns(min(4, len(active)))
        for i, row in enumerate(active.itertuples()):
            cols[i % len(cols)].button(
                f"Cancel {labels[row.run_id]}",
                key=f"cancel-{row.run_id}",
                on_click=cancel,
                args=(row.run_id,),
                icon=":material/stop_circle:",
            )
    for row in shown[shown["status"].isin(list(ALERTS))].itertuples():
        text = f"{labels[row.run_id]} {row.status}: {row.message or 'no message recorded'}"
        ALERTS[row.status](text)

    beta = shown["cfg_momentum"].fillna(0.0) if "cfg_momentum" in shown else [0.0] * len(shown)
    momentum = dict(zip(shown["run_id"], beta, strict=True))
    fig = viz.live_figure(
        metrics,
        labels.to_dict(),
        x=v["x"],
        x_label=results.X_AXES[v["x"]],
        momentum=momentum,
        log_loss=v["log_loss"],
    )
    st.plotly_chart(fig, key="live-curves")
    validation = (
        bool(metrics["name"].isin(["val_loss", "val_acc"]).any()) if len(metrics) else False
    )
    st.caption(viz.live_key(validation))
    if st.session_state.get("live.was_active") and active.empty:
        st.session_state["live.was_active"] = False
        st.rerun()  # everything stopped: redraw the page without the timer
    st.session_state["live.was_active"] = not active.empty


def main() -> None:
    st.title("Live")
    for notice in STATE.load():
        st.info(notice)
    with st.sidebar:
        st.header("Live view")
        st.slider("recent finished runs shown", 1, 50, key=K("recent"))
        st.selectbox("x axis", list(results.X_AXES), key=K("x"), format_func=results.X_AXES.get)
        st.checkbox("log-scale loss", key=K("log_loss"))
        st.number_input("refresh every (s)", 0.5, 60.0, step=0.5, key=K("every"))
        st.button("Refresh now", icon=":material/refresh:")
    STATE.save()
    cancelled = st.session_state.pop("live.cancelled", None)
    if cancelled:
        st.toast(f"Cancel requested for {formatting.short_id(cancelled[0])} ({cancelled[1]}).")
    store = resources.get_store()
    going = sum(resources.queue_counts(store).values()) > 0
    every = STATE.values()["every"] if going else None
    if going:
        st.caption(f"Updating every {every:g} s while runs are queued or running.")

    @st.fragment(run_every=every)
    def live() -> None:
        guards.guarded(body, "the live view")

    live()


guards.guarded(main, "the Live page")
