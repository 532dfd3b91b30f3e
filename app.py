"""covnoise — the Streamlit entry point: navigation over the pages in pages/."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

HERE = Path(__file__).resolve().parent

st.set_page_config(page_title="covnoise", page_icon=":material/scatter_plot:", layout="wide")


def _home() -> None:
    st.title("covnoise")
    st.markdown(
        "Large-batch SGD generalises worse than small-batch SGD. Adding noise whose covariance "
        "is shaped like small-batch gradient noise — isotropic, diagonal Fisher or full Fisher — "
        "can close the gap, and on the convex quadratic the effect is ordered by the Frobenius "
        "norm of the noise covariance, not by its trace.\n\n"
        "Use the pages on the left: **Quadratic** plays the exact convex-quadratic model, "
        "**Noise geometry** draws the one-step noise clouds of a two-weight regression."
    )


PAGES = [
    st.Page(_home, title="Home", icon=":material/home:", default=True),
    st.Page(str(HERE / "pages" / "quadratic.py"), title="Quadratic", icon=":material/functions:"),
    st.Page(str(HERE / "pages" / "geometry.py"), title="Noise geometry", icon=":material/blur_on:"),
]

st.navigation(PAGES).run()
