"""Home: what the app is for, the teaching presets, and what data it has."""

from __future__ import annotations

import streamlit as st

from covnoise.ui import guards, presets, resources, runsdata


def main() -> None:
    st.title("covnoise")
    st.markdown(
        "Large-batch SGD optimises well per step but generalises worse than small-batch SGD. "
        "Here you train with a large batch **L** and add noise whose covariance is shaped like "
        "the gradient noise of a small batch **M** — isotropic, diagonal Fisher or full "
        "Fisher — and see which structure closes the gap. On the convex quadratic, at equal "
        "trace, the stationary loss is ordered by the Frobenius norm ‖Σ‖_F of the noise "
        "covariance to second order in the step size α: full Fisher noise always gives at "
        "least the loss of diagonal or isotropic noise, while diagonal and isotropic can swap "
        "as α·λ_max approaches the stability edge 2."
    )
    st.markdown(
        "- **Train**: choose batch sizes and noise structures, see the cost, launch runs.\n"
        "- **Live**: watch loss, accuracy, sharpness λ_max (with its 2/η stability line) and "
        "the noise statistics while runs go; cancel them.\n"
        "- **Compare**: overlay your runs and the cached ones, grouped, with seed bands.\n"
        "- **Noise vs generalisation**: does ‖Σ‖_F or tr Σ explain the generalisation gap?\n"
        "- **Findings**: what the shipped study runs show about the paper's four claims.\n"
        "- **Quadratic** and **Noise geometry**: the exact theory behind it."
    )
    st.subheader("Show me: the story in ten minutes")
    st.caption(
        "Views of the cached MNIST-1D study (eight seeds per deciding arm), then the theory; "
        "then try it yourself with a preset below."
    )
    for page, label, shows, params in presets.SHOW_ME:
        st.page_link(page, label=label, icon=":material/arrow_forward:", query_params=params)
        st.caption(shows)
    st.subheader("Teaching presets")
    cols = st.columns(len(presets.PRESETS))
    for col, (key, preset) in zip(cols, presets.PRESETS.items(), strict=True):
        with col.container(border=True):
            st.markdown(f"**{preset.title}**")
            st.caption(preset.explains)
            st.caption(f"**You should see:** {preset.expect} **Takes** {preset.takes}.")
            st.page_link(
                "pages/train.py",
                label="Open in Train",
                icon=":material/tune:",
                query_params={"preset": key},
            )
    runs, _ = runsdata.cached_runs()
    own = resources.get_store().runs()
    st.caption(
        f"{len(runs)} cached runs from {runs['source'].nunique() if len(runs) else 0} file(s) "
        f"in {runsdata.cached_runs_dir().name}/, {len(own)} runs in this app's store."
    )


guards.guarded(main, "the home page")
