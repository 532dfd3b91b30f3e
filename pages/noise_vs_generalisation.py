"""Noise vs generalisation: which noise statistic explains the generalisation of the runs?"""

from __future__ import annotations

import numpy as np
import streamlit as st

from covnoise import results, viz
from covnoise.runs import COMPLETED
from covnoise.ui import filters, guards, memo, resources, runsdata
from covnoise.ui.urlstate import BoolParam, ChoiceParam, TextParam, UrlState

STATE = UrlState(
    "noise",
    [
        *filters.filter_params(),
        ChoiceParam("stat", "noise_fro", tuple(results.NOISE_STATISTICS)),
        ChoiceParam("measure", "gen_gap", tuple(results.GENERALISATION)),
        ChoiceParam("how", "mean", ("mean", "final")),
        BoolParam("noisy_only", False),
        BoolParam("flagged", False),
        TextParam("setting", ""),
        BoolParam("log_x", False),
    ],
)
K = STATE.key
PAIR = ("noise_fro", "noise_trace")


@st.cache_data(show_spinner=False, max_entries=32)
def correlations(points, measure: str):
    return results.correlation_table(points, list(results.NOISE_STATISTICS), measure)


def controls() -> None:
    with st.sidebar:
        st.header("Axes")
        st.selectbox(
            "noise statistic (x)",
            list(results.NOISE_STATISTICS),
            key=K("stat"),
            format_func=results.NOISE_STATISTICS.get,
        )
        st.selectbox(
            "generalisation measure (y)",
            list(results.GENERALISATION),
            key=K("measure"),
            format_func=results.GENERALISATION.get,
        )
        st.radio(
            "noise statistic over a run",
            ["mean", "final"],
            key=K("how"),
            format_func={"mean": "mean over evaluations", "final": "last evaluation"}.get,
        )
        st.checkbox(
            "only runs with injected noise",
            key=K("noisy_only"),
            help="Runs without injected noise have ‖Σ‖_F = tr Σ = 0.",
        )
        st.checkbox(
            "include diverged and at-chance runs",
            key=K("flagged"),
            help="Runs that blew up or learned nothing (final test accuracy at most "
            f"{results.CHANCE_FACTOR:g} / classes) are left out of the points and the "
            "correlations unless this is on.",
        )
        st.checkbox("log-scale x", key=K("log_x"))


def main() -> None:
    st.title("Noise vs generalisation")
    st.markdown(
        "Each point is one setting with its seeds averaged (bars: ± one std over seeds). "
        "At equal trace the structures differ in ‖Σ‖_F; if the Frobenius norm is what "
        "matters, ‖Σ‖_F should explain the generalisation measure better than tr Σ."
    )
    for notice in STATE.load():
        st.info(notice)
    store = resources.get_store()
    runs = filters.run_filter_widgets(STATE, runsdata.all_runs(store))
    controls()
    STATE.save()
    v = STATE.values()
    runs = runs[runs["status"].isin(COMPLETED)]
    if v["noisy_only"] and "cfg_noise" in runs:
        runs = runs[runs["cfg_noise"] != "none"]
    if runs.empty:
        st.info("No finished runs match the filters.")
        return
    runs = filters.one_setting(STATE, runs)
    columns = [*results.NOISE_STATISTICS, *results.GENERALISATION]
    with st.spinner(f"Working… summarising {len(runs)} runs", show_time=True):
        metrics = runsdata.metrics_for(store, runs)
        points, grouped = memo.seed_points(runs, metrics, v["how"], columns)
    flags = results.run_flags(points, runs)
    flagged = flags[flags != ""]
    if len(flagged) and not v["flagged"]:
        runs = runs[~runs["run_id"].isin(flagged.index)]
        if runs.empty:
            st.info("Every run that matches the filters diverged or is at chance accuracy.")
            return
        metrics = metrics[metrics["run_id"].isin(runs["run_id"])]
        points, grouped = memo.seed_points(runs, metrics, v["how"], columns)
        counts = flagged.value_counts()
        st.caption(
            "Left out: "
            + ", ".join(f"{n} {why}" for why, n in counts.items())
            + " run(s) (sidebar: include diverged and at-chance runs)."
        )
    stat, measure = v["stat"], v["measure"]
    x_label, y_label = results.NOISE_STATISTICS[stat], results.GENERALISATION[measure]
    table = correlations(grouped[["group", "n", *columns]], measure)
    st.caption(f"{len(points)} runs in {len(grouped)} settings.")

    st.plotly_chart(
        viz.noise_scatter_figure(grouped, stat, measure, x_label, y_label, log_x=v["log_x"]),
        key="noise-scatter",
    )
    row = table.set_index("statistic").loc[stat]
    if np.isfinite(row["pearson"]):
        st.caption(
            f"Pearson r = {row['pearson']:.2f} (95% CI {row['pearson_lo']:.2f} to "
            f"{row['pearson_hi']:.2f}), Spearman ρ = {row['spearman']:.2f} "
            f"({row['spearman_lo']:.2f} to {row['spearman_hi']:.2f}), n = {row['n']} settings."
        )
    else:
        st.caption(
            "The correlation is undefined here (fewer than three settings, or a "
            "constant statistic)."
        )

    st.subheader("‖Σ‖_F and tr Σ side by side")
    st.plotly_chart(
        viz.noise_pair_figure(
            grouped, measure, y_label, table, PAIR, labels=results.NOISE_STATISTICS
        ),
        key="noise-pair",
    )
    r2 = table.set_index("statistic")["r2"]
    if np.isfinite(r2.get("noise_fro", np.nan)) and np.isfinite(r2.get("noise_trace", np.nan)):
        better = "‖Σ‖_F" if r2["noise_fro"] > r2["noise_trace"] else "tr Σ"
        st.caption(
            f"A straight line in ‖Σ‖_F explains {r2['noise_fro']:.0%} of the variation of "
            f"{y_label}; one in tr Σ explains {r2['noise_trace']:.0%}. Here {better} explains "
            "more (look at the intervals before concluding)."
        )

    st.subheader("Correlations with 95% bootstrap confidence intervals")
    shown = table.assign(
        pearson_ci=[
            f"[{a:.2f}, {b:.2f}]" for a, b in zip(table.pearson_lo, table.pearson_hi, strict=True)
        ],
        spearman_ci=[
            f"[{a:.2f}, {b:.2f}]" for a, b in zip(table.spearman_lo, table.spearman_hi, strict=True)
        ],
    )[["label", "n", "pearson", "pearson_ci", "spearman", "spearman_ci", "r2"]]
    st.dataframe(
        shown.rename(
            columns={
                "label": "statistic",
                "pearson": "Pearson r",
                "pearson_ci": "95% CI",
                "spearman": "Spearman ρ",
                "spearman_ci": "95% CI ",
                "r2": "R²",
            }
        ),
        hide_index=True,
        key="noise-table",
        column_config={
            c: st.column_config.NumberColumn(format="%.3f")
            for c in ("Pearson r", "Spearman ρ", "R²")
        },
    )
    st.caption(
        "Percentile bootstrap over settings (2000 resamples of the points, seed 0). With few "
        "settings the intervals are wide."
    )


guards.guarded(main, "the Noise vs generalisation page")
