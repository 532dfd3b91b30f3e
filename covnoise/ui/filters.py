"""The run filters that Compare and Noise vs generalisation share: which columns can be
filtered, their URL parameters, the sidebar multiselects and the filtering itself.

Filter values are compared as text, so a float column filtered by "1024" matches 1024.0, and
a link with filters opens the page with the same runs selected.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd
import streamlit as st

from covnoise.config import field_info
from covnoise.ui.urlstate import BoolParam, ListParam, Param, UrlState

#: Columns the run filters offer (column → label).
FILTER_COLUMNS: dict[str, str] = {
    "source": "source",
    "status": "status",
    "cfg_dataset": "data set",
    "cfg_model": "model",
    "cfg_batch_size": "large batch L",
    "cfg_noise": "noise structure",
    "cfg_noise_scale": "multiplier s",
    "cfg_lr": "learning rate",
    **{f"cfg_{k}": field_info(k).label for k in ("noise_source", "drop_last", "val_fraction")},
}

#: URL parameter of each filter column.
FILTER_PARAM: dict[str, str] = {
    "source": "source",
    "status": "status",
    "cfg_dataset": "dataset",
    "cfg_model": "model",
    "cfg_batch_size": "L",
    "cfg_noise": "noise",
    "cfg_noise_scale": "s",
    "cfg_lr": "lr",
    "cfg_noise_source": "noise_source",
    "cfg_drop_last": "drop_last",
    "cfg_val_fraction": "val_fraction",
}


def _as_text(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _sort_key(text: str) -> tuple:
    try:
        return (0, float(text), "")
    except ValueError:
        return (1, 0.0, text)


def filter_runs(runs: pd.DataFrame, filters: dict[str, Sequence[Any]]) -> pd.DataFrame:
    """Runs whose column values are in each filter's list (an empty list keeps everything)."""
    keep = pd.Series(True, index=runs.index)
    for column, allowed in filters.items():
        if allowed and column in runs:
            text = runs[column].map(_as_text)
            keep &= text.isin({_as_text(v) for v in allowed})
    return runs[keep].reset_index(drop=True)


def filter_options(runs: pd.DataFrame) -> dict[str, list[str]]:
    """The values each filter column takes in `runs`, as sorted text."""
    out = {}
    for column in FILTER_COLUMNS:
        if column not in runs:
            out[column] = []
            continue
        values = runs[column].dropna().map(_as_text).unique().tolist()
        out[column] = sorted(values, key=_sort_key)
    return out


#: URL parameter of the tag filter (runs with any of the chosen tags) and of showing hidden runs.
TAGS_PARAM, HIDDEN_PARAM = "tags", "show_hidden"


def filter_params() -> list[Param]:
    """URL parameters of the run filters (each a list of allowed values, empty = all), the
    tag filter and whether hidden runs are shown."""
    return [
        *(ListParam(name, []) for name in FILTER_PARAM.values()),
        ListParam(TAGS_PARAM, []),
        BoolParam(HIDDEN_PARAM, False),
    ]


def tag_options(runs: pd.DataFrame) -> list[str]:
    """Every tag the runs carry, sorted."""
    if "tags" not in runs:
        return []
    return sorted({t for text in runs["tags"].fillna("") for t in str(text).split(",") if t})


def notes_filter(runs: pd.DataFrame, tags: Sequence[str], show_hidden: bool) -> pd.DataFrame:
    """Runs that carry any of `tags` (all runs when empty), hidden ones only if `show_hidden`."""
    keep = pd.Series(True, index=runs.index)
    if "hidden" in runs and not show_hidden:
        keep &= ~runs["hidden"].astype(bool)
    if tags and "tags" in runs:
        wanted = set(tags)
        keep &= runs["tags"].fillna("").map(lambda t: bool(wanted & set(str(t).split(","))))
    return runs[keep].reset_index(drop=True)


def run_filter_widgets(state: UrlState, runs: pd.DataFrame) -> pd.DataFrame:
    """Multiselect filters in the sidebar, bound to `state` (a UrlState holding
    filter_params()); returns the runs that pass. Values no longer present are dropped."""
    options = filter_options(runs)
    chosen: dict[str, list[str]] = {}
    with st.sidebar:
        st.header("Runs")
        for column, label in FILTER_COLUMNS.items():
            key = state.key(FILTER_PARAM[column])
            current = [v for v in st.session_state.get(key, []) if v in options[column]]
            st.session_state[key] = current
            if len(options[column]) <= 1 and not current:
                continue  # nothing to choose between
            chosen[column] = st.multiselect(label, options[column], key=key, placeholder="all")
        tags = tag_options(runs)
        key = state.key(TAGS_PARAM)
        st.session_state[key] = [t for t in st.session_state.get(key, []) if t in tags]
        wanted = st.multiselect("tags", tags, key=key, placeholder="any") if tags else []
        hidden = int(runs["hidden"].sum()) if "hidden" in runs else 0
        show = (
            st.checkbox(f"show hidden runs ({hidden})", key=state.key(HIDDEN_PARAM))
            if hidden
            else False
        )
    return filter_runs(notes_filter(runs, wanted, show), chosen)


#: The setting choice that pools every setting the filters let through.
POOLED = "all settings (pooled)"


def one_setting(
    state: UrlState, runs: pd.DataFrame, param: str = "setting", compared: Sequence[str] = ()
) -> pd.DataFrame:
    """The runs of the setting chosen in the sidebar (by default the one with the most runs),
    or all of them, with a warning naming the fields that differ, when the user pools.
    Fields in `compared` (what the user groups by) are compared on purpose and do not split
    settings: grouping by learning rate shows every learning rate, each its own group.

    A setting is the data set, model, learning rate, length and noise source
    (results.SETTING_FIELDS): runs that differ in these are different experiments, and a
    relation across them can reverse within each (Simpson's paradox)."""
    from covnoise import results

    labels = results.setting_labels(runs, exclude=compared)
    options = labels.value_counts().index.tolist()
    if len(options) <= 1:
        return runs
    key = state.key(param)
    if st.session_state.get(key) not in [*options, POOLED]:
        st.session_state[key] = options[0]
    with st.sidebar:
        st.selectbox(
            "setting",
            [*options, POOLED],
            key=key,
            help="Runs that differ in data set, model, learning rate, length or noise source "
            "are different experiments; a relation across them can reverse within each.",
        )
    chosen = st.session_state[key]
    if chosen == POOLED:
        fields = ", ".join(
            field_info(k).label for k in results.setting_fields(runs, exclude=compared)
        )
        st.warning(
            f"These runs pool settings that differ in {fields}. A comparison across settings "
            "can reverse within each of them (Simpson's paradox); choose one setting in the "
            "sidebar to compare like with like.",
            icon=":material/warning:",
        )
        return runs
    return runs[runs["run_id"].map(labels).to_numpy() == chosen].reset_index(drop=True)
