"""Findings: what the shipped study runs show about the four claims, computed from the runs."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from covnoise import results, viz
from covnoise.results.study import ALL_STUDIES
from covnoise.ui import guards, runsdata


@st.cache_resource(show_spinner="Computing the findings from the cached runs…", max_entries=4)
def computed(signature: tuple) -> list[results.StudyFindings]:
    runs, metrics = runsdata.cached_runs()
    return results.all_findings(runs, metrics)


def verdict_frame(found: results.StudyFindings) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"claim": f"{v.claim}. {v.statement}", "verdict": v.verdict, "numbers": v.evidence}
            for v in found.verdicts
        ]
    )


def arms_frame(arms: pd.DataFrame) -> pd.DataFrame:
    def pm(col: str, digits: int = 3) -> list[str]:
        return [
            results.format_pm(m, s, digits)
            for m, s in zip(arms[col], arms[f"{col}_std"], strict=True)
        ]

    val = {"val acc": pm("val_acc")} if arms["val_acc"].notna().any() else {}
    return pd.DataFrame(
        {
            "arm": arms["arm"],
            "runs": arms["runs"],
            "diverged": arms["diverged"],
            "test acc": pm("test_acc"),
            **val,
            "gap to SB": arms["acc_gap"],
            "train acc": pm("train_acc"),
            "test − train loss": pm("gen_gap"),
            "steps to target": pm("steps_to_target", 0),
            "reached": [f"{r}/{f}" for r, f in zip(arms["reached"], arms["finished"], strict=True)],
            "mean ‖Σ‖_F": arms["noise_fro"],
            "mean tr Σ": arms["noise_trace"],
        }
    )


def design_section(found: results.StudyFindings) -> None:
    """Claim 4's test: the equal-trace and equal-Frobenius arms, figure and table."""
    s = found.study
    st.subheader("Equal trace against equal Frobenius (claim 4's test)")
    st.plotly_chart(viz.design_figure(found.designs), key=f"design-{s.name}")
    if found.design is not None:
        d = found.design
        st.markdown(
            f"D = spread(equal trace) − spread(equal Frobenius) = **{d.d:+.3f}** "
            f"[{d.lo:+.3f}, {d.hi:+.3f}] → **{results.design_verdict(d)}**."
        )
    ratios = ", ".join(f"{k} {v:.3g}" for k, v in sorted(found.ratios.items()) if k != "full")
    st.caption(
        "Left: the three structures at one multiplier s (same tr Σ). Right: full noise at s, "
        "isotropic and diagonal noise at s·r, where r = ‖K_full‖_F / ‖K‖_F was measured on "
        f"the pilot ({ratios}), so their ‖Σ‖_F matches full noise's at the start of training. "
        "Spread = range of the three arms' mean test accuracy (a diverged run counts at "
        "chance); the interval resamples the runs within each arm. If ‖Σ‖_F characterises "
        "generalisation, the right panel bunches and D > 0."
    )
    table = found.designs.assign(
        test_acc=[
            results.format_pm(m, sd)
            for m, sd in zip(found.designs["test_acc"], found.designs["test_acc_std"], strict=True)
        ]
    )
    st.dataframe(
        table[
            [
                "matched_scale",
                "design",
                "arm",
                "runs",
                "diverged",
                "test_acc",
                "noise_fro",
                "noise_trace",
            ]
        ],
        hide_index=True,
        key=f"designs-{s.name}",
        column_config={
            "matched_scale": "full noise's s",
            "test_acc": "test acc (± std)",
            "noise_fro": st.column_config.NumberColumn("mean ‖Σ‖_F", format="%.3g"),
            "noise_trace": st.column_config.NumberColumn("mean tr Σ", format="%.3g"),
        },
    )


def sources_section(found: results.StudyFindings) -> None:
    """Claims 2 and 3 again with noise that imitates the true Fisher."""
    st.subheader("Does the noise source change claims 2 and 3?")
    batch = {v.claim: v.verdict for v in found.verdicts}
    st.table(
        pd.DataFrame(
            [
                {
                    "claim": f"{v.claim}. {v.statement}",
                    "batch covariance": batch[v.claim],
                    "true Fisher": v.verdict,
                    "numbers (true Fisher)": v.evidence,
                }
                for v in found.sources
            ]
        ).set_index("claim")
    )


def show(found: results.StudyFindings) -> None:
    s = found.study
    timing = found.timing
    made = (
        f" The study took {timing['elapsed_h']:.2f} h on its machine "
        f"({timing['work_h']:.2f} h of run time)."
        if timing
        else ""
    )
    st.caption(
        f"{s.description}. {len(found.per_run)} runs from `{s.output}`, made by "
        f"`{s.command}`.{made}"
    )
    st.subheader("The four claims")
    st.table(verdict_frame(found).set_index("claim"))  # a static table wraps the long cells
    st.caption(
        "A difference is *clear* when Welch's t-test rejects equal means at 5% in that "
        "direction (t critical value at its degrees of freedom, df) and it exceeds the "
        "larger seed standard deviation. Claim 4 counts a statistic only when it tracks the "
        "accuracy gap the predicted way (more noise, smaller gap). 'Keeps large-batch speed' "
        "means at most "
        f"{results.SPEED_TOLERANCE}× the steps of plain LB to reach train loss "
        f"{s.target_train_loss:g}. Claims 2–3 use the paper's multiplier s = 1 at η = "
        f"{s.base_lr:g}. The tuned LB and the best multipliers are picked on validation "
        "accuracy when the runs held out a validation split (the numbers shown are test "
        "accuracy), else on test accuracy."
    )
    sb = f"SB M={s.small_batch}"
    left, right = st.columns(2)
    left.plotly_chart(
        viz.arm_metric_figure(
            found.arms, "test_acc", "final test accuracy", s.small_batch, reference=sb
        ),
        key=f"acc-{s.name}",
    )
    right.plotly_chart(
        viz.arm_metric_figure(
            found.arms,
            "steps_to_target",
            f"steps to train loss ≤ {s.target_train_loss:g}",
            s.small_batch,
            reference=f"LB η={s.base_lr:g}",
            missing="not reached",
        ),
        key=f"steps-{s.name}",
    )
    st.subheader("Every arm (mean ± std over seeds)")
    st.dataframe(
        arms_frame(found.arms),
        hide_index=True,
        key=f"arms-{s.name}",
        column_config={
            c: st.column_config.NumberColumn(format="%.3g")
            for c in ("gap to SB", "mean ‖Σ‖_F", "mean tr Σ")
        },
    )
    if len(found.designs):
        design_section(found)
    if found.sources:
        sources_section(found)
    if len(found.correlations):
        st.subheader("‖Σ‖_F and tr Σ against the test-accuracy gap to SB")
        pts = found.settings.rename(columns={"noise": "cfg_noise"})
        table = found.correlations[found.correlations["measure"] == "acc_gap"]
        st.plotly_chart(
            viz.noise_pair_figure(
                pts,
                "acc_gap",
                "SB test acc − test acc",
                table,
                labels={"noise_fro": "‖Σ‖_F", "noise_trace": "tr Σ"},
            ),
            key=f"pair-{s.name}",
        )
        st.caption(
            f"One point per noisy setting at η = {s.base_lr:g} (seed means). Titles: "
            "Pearson r with its 95% bootstrap interval."
        )
        if len(found.run_correlations):
            st.dataframe(
                found.run_correlations,
                hide_index=True,
                key=f"runcorr-{s.name}",
                column_config={
                    "spearman": st.column_config.NumberColumn("Spearman ρ", format="%+.2f"),
                    "lo": st.column_config.NumberColumn("95% low", format="%+.2f"),
                    "hi": st.column_config.NumberColumn("95% high", format="%+.2f"),
                    "n": "settings",
                },
            )
            st.caption(
                "Intervals from a two-level bootstrap: the settings, and within each the runs "
                "(and the SB runs the gap is measured from), so seed noise enters them. A "
                "statistic tracks generalisation only with ρ < 0 (more noise, smaller gap)."
            )
        corr = found.correlations.assign(measure=found.correlations["measure"].map(results.GAPS))
        st.dataframe(
            corr[
                [
                    "measure",
                    "label",
                    "n",
                    "pearson",
                    "pearson_lo",
                    "pearson_hi",
                    "spearman",
                    "spearman_lo",
                    "spearman_hi",
                ]
            ],
            hide_index=True,
            key=f"corr-{s.name}",
            column_config={
                c: st.column_config.NumberColumn(format="%.2f")
                for c in (
                    "pearson",
                    "pearson_lo",
                    "pearson_hi",
                    "spearman",
                    "spearman_lo",
                    "spearman_hi",
                )
            },
        )


def main() -> None:
    st.title("Findings")
    st.markdown(
        "What the runs shipped in `cached_runs/` show, next to what the paper claims. Every "
        "number here is computed from those runs when the page opens; FINDINGS.md holds the "
        "same tables."
    )
    folder = runsdata.cached_runs_dir()
    found = computed(runsdata.cached_signature())
    if not found:
        st.info(
            f"No study runs in {folder}/. Make them with "
            + ", ".join(f"`{s.command}`" for s in ALL_STUDIES.values())
            + "."
        )
        return
    missing = [s.name for s in ALL_STUDIES.values() if s.name not in {f.study.name for f in found}]
    if missing:
        st.caption(
            "Studies without cached runs: " + ", ".join(missing) + " (the GPU study "
            "needs a CUDA machine; FINDINGS.md says what is missing and why)."
        )
    tabs = st.tabs([f.study.name for f in found])
    for tab, f in zip(tabs, found, strict=True):
        with tab:
            show(f)


guards.guarded(main, "the Findings page")
