"""2-D noise geometry: clouds of one-step updates for SGD and large batch + structured noise."""

from __future__ import annotations

import streamlit as st

from covnoise import viz
from covnoise.theory import geometry
from covnoise.ui.urlstate import ChoiceParam, FloatParam, IntParam, UrlState

ISO_MODE_LABELS = {"sigma": "σ chosen below", "trace": "same trace as full"}

STATE = UrlState(
    "geometry",
    [
        IntParam("samples", 1000, 100, 5000),
        FloatParam("sigma", 0.1, 0.0, 1.0),
        ChoiceParam("iso", "sigma", geometry.ISO_MODES),
        FloatParam("rho", 0.8, -0.95, 0.95),
        FloatParam("alpha", 0.5, 0.01, 1.5),
        IntParam("M", 10, 1, 1000),
        IntParam("L", 250, 1, 1000),
        FloatParam("s", 1.0, 0.0, 10.0),
        IntParam("seed", 0, 0, 1_000_000),
    ],
)


@st.cache_data(max_entries=32, show_spinner=False)
def compute(settings: geometry.GeometrySettings) -> dict:
    return geometry.geometry_frames(geometry.one_step_clouds(settings))


def controls() -> geometry.GeometrySettings:
    """Sidebar widgets, bound to the URL; returns the chosen settings."""
    k = STATE.key
    with st.sidebar:
        st.header("Clouds")
        st.slider("number of samples", 100, 5000, step=100, key=k("samples"))
        st.radio(
            "isotropic noise",
            geometry.ISO_MODES,
            format_func=ISO_MODE_LABELS.get,
            key=k("iso"),
            help="σ² I with σ chosen (0.1 in the paper), or c·(tr C/2)·I, the trace of the "
            "full and diagonal Fisher noise.",
        )
        st.slider(
            "isotropic σ",
            0.0,
            1.0,
            step=0.01,
            key=k("sigma"),
            disabled=st.session_state[k("iso")] != "sigma",
        )
        st.header("Problem and step")
        st.slider("input correlation ρ", -0.95, 0.95, step=0.05, key=k("rho"))
        st.slider("step size α", 0.01, 1.5, step=0.01, key=k("alpha"))
        st.number_input("target batch M", 1, 1000, step=1, key=k("M"))
        st.number_input("large batch L", 1, 1000, step=10, key=k("L"))
        st.number_input("noise multiplier s", 0.0, 10.0, step=0.25, key=k("s"))
        st.number_input("seed", 0, 1_000_000, step=1, key=k("seed"))
    v = STATE.values()
    return geometry.GeometrySettings(
        n_samples=v["samples"],
        sigma_iso=v["sigma"],
        iso_mode=v["iso"],
        rho=v["rho"],
        alpha=v["alpha"],
        M=v["M"],
        L=v["L"],
        s=v["s"],
        seed=v["seed"],
    )


def main() -> None:
    st.title("Noise geometry in two dimensions")
    st.markdown(
        "Linear regression with two correlated inputs. From one point θ, each panel draws "
        "one-step updates θ⁺ = θ − α·(gradient estimate) over the loss contours, with the "
        "2-σ ellipse of their exact covariance. Full Fisher noise on a large batch nearly "
        "recovers the SGD cloud and lies along the curvature; diagonal noise is axis-aligned."
    )
    for notice in STATE.load():
        st.info(notice)
    settings = controls()
    STATE.save()
    if not settings.M <= settings.L <= settings.N:
        st.error(
            f"Need target batch M ≤ large batch L ≤ N = {settings.N}; "
            f"got M = {settings.M}, L = {settings.L}."
        )
        return
    frames = compute(settings)
    summary = frames["summary"].set_index("method")
    columns = st.columns(2)
    for i, method in enumerate(geometry.METHODS):
        with columns[i % 2]:
            fig = viz.geometry_panel_figure(
                method, frames["samples"], frames["ellipses"], frames["points"], frames["contours"]
            )
            st.plotly_chart(fig, key=f"cloud-{method}")
            row = summary.loc[method]
            st.markdown(f"tr Σ = {row['trace']:.4g} · ‖Σ‖_F = {row['fro']:.4g}")
            if method != "sgd":
                st.caption(
                    f"injected noise only: tr = {row['injected_trace']:.4g}, "
                    f"‖·‖_F = {row['injected_fro']:.4g}"
                )
    st.caption(
        "Σ is the covariance of the step's gradient noise: minibatch sampling (without "
        f"replacement, from N = {settings.N} examples) plus injected noise; the cloud's "
        "covariance is α²Σ."
    )


try:
    main()
except Exception as err:  # a page never shows a raw traceback
    st.error(f"Could not draw this page: {type(err).__name__}: {err}")
