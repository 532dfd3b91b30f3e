"""covnoise — the Streamlit entry point: navigation over pages/ and the engine's status."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from covnoise.ui import guards, resources

HERE = Path(__file__).resolve().parent
PAGES = HERE / "pages"

st.set_page_config(page_title="covnoise", page_icon=":material/scatter_plot:", layout="wide")


def page(file: str, title: str, icon: str, **kw) -> st.Page:
    return st.Page(str(PAGES / file), title=title, icon=icon, **kw)


NAVIGATION = {
    "Training runs": [
        page("home.py", "Home", ":material/home:", default=True),
        page("train.py", "Train", ":material/play_arrow:"),
        page("live.py", "Live", ":material/monitoring:"),
        page("compare.py", "Compare", ":material/stacked_line_chart:"),
        page("noise_vs_generalisation.py", "Noise vs generalisation", ":material/scatter_plot:"),
        page("findings.py", "Findings", ":material/fact_check:"),
    ],
    "Theory": [
        page("quadratic.py", "Quadratic", ":material/functions:"),
        page("geometry.py", "Noise geometry", ":material/blur_on:"),
    ],
}


def sidebar_status() -> None:
    """Engine in use, device found, and the queue, at the top of the sidebar."""
    engine = resources.get_engine()
    info = resources.engine_info(engine)
    counts = resources.queue_counts(engine.store)
    with st.sidebar.container():
        st.caption(
            f"**Engine:** {resources.engine_description(engine, info)}  \n"
            f"**Device:** {resources.device_found()}  \n"
            f"**Runs:** {counts['running']} running · {counts['queued']} queued"
        )
        problem = resources.engine_problem(info)
        if problem:
            st.warning(problem, icon=":material/warning:")


nav = st.navigation(NAVIGATION)
guards.guarded(sidebar_status, "the engine status")
nav.run()
