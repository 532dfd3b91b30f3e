"""Hiding, tagging and deleting runs from the app (Compare's "Manage runs" box).

Notes (tags, hidden) apply to any run the app shows, cached runs included, and live in the
store's notes table; deleting applies only to the runs of this app's own store that are not
queued or running (cached files ship with the app and are never changed: hide those). The
widgets call the store's own methods, so what the app does is what `covnoise runs rm` does.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from covnoise.results.labels import OWN_SOURCE
from covnoise.runs import ACTIVE, RunStore

#: Confirmation text a user ticks before a delete.
CONFIRM = "I understand: deleting removes these runs and their metrics for good"


def with_notes(runs: pd.DataFrame, store: RunStore) -> pd.DataFrame:
    """`runs` with a ``tags`` column (comma-separated text, "" without) and a boolean
    ``hidden`` column from the store's notes."""
    notes = store.notes()
    out = runs.copy()
    out["tags"] = [",".join(notes.get(r, ((), False))[0]) for r in out["run_id"]]
    out["hidden"] = [notes.get(r, ((), False))[1] for r in out["run_id"]]
    return out


def deletable(runs: pd.DataFrame) -> tuple[list[str], str]:
    """The ids among `runs` that may be deleted (own, not queued or running) and a sentence
    about those that may not ("" when all may)."""
    own = runs["source"] == OWN_SOURCE
    active = runs["status"].isin(ACTIVE)
    ok = runs.loc[own & ~active, "run_id"].tolist()
    why = []
    if (~own).any():
        why.append(f"{int((~own).sum())} come from files (cached or uploaded): hide them instead")
    if (own & active).any():
        why.append(f"{int((own & active).sum())} are queued or running: cancel them on Live first")
    return ok, "; ".join(why)


def manage_box(store: RunStore, runs: pd.DataFrame, labels: pd.Series) -> None:
    """The expander under Compare's table: pick runs, then hide/show, tag, or delete them."""
    with st.expander("Manage runs: hide, tag or delete", icon=":material/edit_note:"):
        chosen = st.multiselect(
            "runs",
            runs["run_id"].tolist(),
            key="manage.runs",
            format_func=lambda r: str(labels.get(r, r)),
            placeholder="choose runs",
        )
        picked = runs[runs["run_id"].isin(chosen)]
        hide, show, tag = st.columns(3)
        if hide.button("Hide", key="manage.hide", disabled=not chosen):
            store.set_hidden(chosen, True)
            st.toast(f"Hid {len(chosen)} run(s); tick 'show hidden runs' to see them again.")
            st.rerun()
        if show.button("Show again", key="manage.show", disabled=not chosen):
            store.set_hidden(chosen, False)
            st.rerun()
        text = tag.text_input("tags (comma-separated)", key="manage.tagtext")
        if tag.button("Set tags", key="manage.tag", disabled=not chosen):
            store.set_tags(chosen, text.split(","))
            st.rerun()
        ok, why = deletable(picked)
        if why:
            st.caption(f"Of the chosen runs, {why}.")
        sure = st.checkbox(CONFIRM, key="manage.confirm", disabled=not ok)
        if st.button(
            f"Delete {len(ok)} run(s)",
            key="manage.delete",
            type="primary",
            disabled=not (ok and sure),
        ):
            n = store.delete(ok)
            st.session_state.pop("manage.runs", None)
            st.session_state.pop("manage.confirm", None)
            st.toast(f"Deleted {n} run(s).")
            st.rerun()
