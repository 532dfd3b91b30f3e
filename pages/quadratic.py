"""Convex quadratic: exact expected loss vs Monte Carlo, and how ‖Σ‖_F (not tr Σ) orders it."""

from __future__ import annotations

import streamlit as st

from covnoise import viz
from covnoise.theory import quadratic, quadratic_report
from covnoise.ui.urlstate import BoolParam, ChoiceParam, FloatParam, IntParam, UrlState

STATE = UrlState(
    "quadratic",
    [
        IntParam("P", 20, 2, 64),
        ChoiceParam("spectrum", "power", quadratic.SPECTRA),
        FloatParam("exponent", 1.0, 0.0, 3.0),
        FloatParam("low", 0.05, 0.01, 1.0),
        FloatParam("rotation", 1.0, 0.0, 1.0),
        FloatParam("alpha", 1.5, 0.001, 100.0),
        IntParam("L", 1000, 1, 100_000),
        IntParam("M", 10, 1, 100_000),
        FloatParam("s", 1.0, 0.0, 100.0),
        FloatParam("sigma", 1.0, 0.0, 100.0),
        IntParam("T", 200, 10, 1000),
        IntParam("chains", 500, 0, 4000),
        IntParam("seed", 0, 0, 1_000_000),
        BoolParam("log_y", True),
    ],
)

TABLE_COLUMNS = {
    "structure": "structure",
    "trace": "tr Σ",
    "fro": "‖Σ‖_F",
    "tr_A_sigma": "tr(AΣ)",
    "fro2_over_c_sigma2": "‖Σ‖_F² / (cσ²)",
    "stationary_loss": "E[L∞]",
}


@st.cache_data(max_entries=32, show_spinner=False)
def compute(settings: quadratic_report.QuadraticSettings) -> quadratic_report.QuadraticReport:
    return quadratic_report.report(settings)


def controls() -> quadratic_report.QuadraticSettings:
    """Sidebar widgets, bound to the URL; returns the chosen settings."""
    k = STATE.key
    with st.sidebar:
        st.header("Problem")
        st.slider("dimension P", 2, 64, key=k("P"))
        st.selectbox("spectrum", quadratic.SPECTRA, key=k("spectrum"))
        st.slider(
            "power exponent (λᵢ = i^−p)",
            0.0,
            3.0,
            step=0.1,
            key=k("exponent"),
            help="Used by the power spectrum.",
        )
        st.slider(
            "low cluster (× λ_max)",
            0.01,
            1.0,
            step=0.01,
            key=k("low"),
            help="Used by the two-cluster spectrum: half the eigenvalues sit here.",
        )
        st.slider(
            "rotation",
            0.0,
            1.0,
            step=0.05,
            key=k("rotation"),
            help="0: A diagonal (diag and full noise coincide); 1: a random rotation.",
        )
        st.number_input("label-noise scale σ (C = σ²A)", 0.0, 100.0, step=0.1, key=k("sigma"))
        st.header("Optimiser")
        st.number_input("step size α", 0.001, 100.0, step=0.05, format="%.3f", key=k("alpha"))
        st.number_input("large batch L", 1, 100_000, step=100, key=k("L"))
        st.number_input("target batch M", 1, 100_000, step=1, key=k("M"))
        st.number_input("noise multiplier s", 0.0, 100.0, step=0.25, key=k("s"))
        st.header("Simulation")
        st.slider("steps T", 10, 1000, step=10, key=k("T"))
        st.slider("Monte-Carlo chains (0: off)", 0, 4000, step=100, key=k("chains"))
        st.number_input("seed", 0, 1_000_000, step=1, key=k("seed"))
        st.checkbox("log scale", key=k("log_y"))
    v = STATE.values()
    return quadratic_report.QuadraticSettings(
        P=v["P"],
        spectrum=v["spectrum"],
        exponent=v["exponent"],
        low=v["low"],
        rotation=v["rotation"],
        sigma=v["sigma"],
        alpha=v["alpha"],
        L=v["L"],
        M=v["M"],
        s=v["s"],
        T=v["T"],
        n_chains=quadratic_report.affordable_chains(v["P"], v["T"], v["chains"]),
        seed=v["seed"],
    )


def main() -> None:
    st.title("Convex quadratic")
    st.markdown(
        "SGD on L(θ) = ½ (θ − θ*)ᵀ A (θ − θ*) with gradient noise C = σ²A: a large batch L "
        "plus injected noise Σ = c·K, c = s(1/M − 1/L), K ∈ {(tr C/P) I, diag C, C}. All "
        "structures have the same tr Σ, yet each step adds (α²/2) tr(AΣ) = (α²/2) ‖Σ‖_F²/(cσ²) "
        "to the expected loss. Lines are exact; bands are Monte Carlo (±2 standard errors)."
    )
    for notice in STATE.load():
        st.info(notice)
    settings = controls()
    STATE.save()

    requested = STATE.values()["chains"]
    if settings.n_chains < requested:
        st.caption(
            f"Monte Carlo uses {settings.n_chains} chains (of {requested}) to keep the page "
            "responsive at this P and T."
        )
    if settings.M > settings.L:
        st.error(
            f"The target batch M = {settings.M} must not exceed the large batch L = {settings.L}."
        )
        return
    try:
        rep = compute(settings)
    except quadratic.UnstableStepError as err:
        st.warning(f"Unstable step size: {err} Choose a smaller α to see the curves.")
        return
    st.caption(
        f"λ_max = {rep.lam_max:.4g}, λ_min = {rep.lam_min:.4g}; stable for α < 2/λ_max = "
        f"{rep.stability_limit:.4g} (here α·λ_max = {settings.alpha * rep.lam_max:.3g})."
    )

    st.subheader("Expected loss per step")
    st.plotly_chart(viz.loss_curves_figure(rep.curves, log_y=STATE.values()["log_y"]), key="curves")
    st.caption("LB + full with s = 1 follows SGD at batch M exactly: C/L + (1/M − 1/L)C = C/M.")

    st.subheader("Stationary loss: Frobenius norm vs trace")
    st.plotly_chart(viz.stationary_figure(rep.sweep), key="stationary")
    inversion = rep.order.message()
    if inversion:
        st.info(inversion, icon=":material/swap_vert:")
    st.caption(
        "Multipliers s × (¼, ½, 1, 2, 4). At equal tr Σ the structures differ. To second "
        "order in α the stationary loss is ordered by ‖Σ‖_F (isotropic ≤ diag ≤ full); "
        "exactly, full ≥ diag and full ≥ isotropic at every stable α, while diag and isotropic "
        "can swap as α·λ_max approaches 2 (only with three or more distinct eigenvalues). "
        "Which order holds depends on A and α only, so it is the same for every s."
    )

    st.subheader("Noise statistics per structure")
    st.dataframe(
        rep.table.rename(columns=TABLE_COLUMNS),
        hide_index=True,
        column_config={
            c: st.column_config.NumberColumn(format="%.5g")
            for c in list(TABLE_COLUMNS.values())[1:]
        },
    )
    st.caption("The columns tr(AΣ) and ‖Σ‖_F²/(cσ²) are computed independently and agree.")


try:
    main()
except Exception as err:  # a page never shows a raw traceback
    st.error(f"Could not draw this page: {type(err).__name__}: {err}")
