"""covnoise — the Streamlit entry point: navigation over pages/ and the engine's status.

Streamlit serves a `pages/` folder next to the main script as an automatic page list, and
keeps doing so for the whole server until the main script calls st.navigation. A deep link
as the first request (`/compare` on a fresh server) would run pages/compare.py alone, without
this navigation or the engine status. So this file has two roles: run as the app's script
(``__main__``) it draws the navigation; imported by `streamlit run app.py` to find the server
(the `app` below, an st.App serving this same file) it turns the page-folder mode off before
any browser connects, so every URL path runs this script first.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from covnoise.ui import guards, resources

HERE = Path(__file__).resolve().parent
PAGES = HERE / "pages"


def page(file: str, title: str, icon: str, **kw) -> st.Page:
    return st.Page(str(PAGES / file), title=title, icon=icon, **kw)


def navigation() -> dict[str, list[st.Page]]:
    """The app's sections and pages (built in a script run: st.Page needs a session)."""
    return {
        "Training runs": [
            page("home.py", "Home", ":material/home:", default=True),
            page("train.py", "Train", ":material/play_arrow:"),
            page("live.py", "Live", ":material/monitoring:"),
            page("compare.py", "Compare", ":material/stacked_line_chart:"),
            page(
                "noise_vs_generalisation.py", "Noise vs generalisation", ":material/scatter_plot:"
            ),
            page("findings.py", "Findings", ":material/fact_check:"),
        ],
        "Theory": [
            page("quadratic.py", "Quadratic", ":material/functions:"),
            page("geometry.py", "Noise geometry", ":material/blur_on:"),
        ],
    }


#: Seconds between redraws of the sidebar's run counts while runs are queued or running.
STATUS_REFRESH_SECONDS = 3.0


def draw_status(counts: dict[str, int] | None = None) -> None:
    """Engine in use, device found, and the queue (`counts`, or counted now), at the top of
    the sidebar."""
    engine = resources.get_engine()
    info = resources.engine_info(engine)
    counts = resources.queue_counts(engine.store) if counts is None else counts
    st.caption(
        f"**Engine:** {resources.engine_description(engine, info)}  \n"
        f"**Device:** {resources.device_found()}  \n"
        f"**Runs:** {counts['running']} running · {counts['queued']} queued"
    )
    problem = resources.engine_problem(info)
    if problem:
        st.warning(problem, icon=":material/warning:")


def sidebar_status() -> None:
    """The status box, redrawn on its own every few seconds while runs are queued or running
    (a page that refreshes only a fragment, like Live, would otherwise leave stale counts)."""
    counts = resources.queue_counts(resources.get_engine().store)
    every = STATUS_REFRESH_SECONDS if counts["running"] + counts["queued"] else None
    unread = [counts]  # the page's run draws the counts just read; the fragment's reruns count

    @st.fragment(run_every=every)
    def status() -> None:
        counts = unread.pop() if unread else None
        guards.guarded(lambda: draw_status(counts), "the engine status")

    with st.sidebar:
        status()


def main() -> None:
    """Draw the navigation and the sidebar status, then the chosen page."""
    st.set_page_config(page_title="covnoise", page_icon=":material/scatter_plot:", layout="wide")
    nav = st.navigation(navigation())
    guards.guarded(sidebar_status, "the engine status")
    nav.run()


if __name__ == "__main__":  # a script run: every page of every session starts here
    main()
else:  # `streamlit run app.py` imports this file at start-up to find the server
    from streamlit.runtime.pages_manager import PagesManager

    PagesManager.uses_pages_directory = False  # app.py's st.navigation decides, not pages/
    app = st.App(__file__)
