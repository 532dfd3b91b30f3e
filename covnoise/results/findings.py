"""What the cached study runs show: every table and verdict of one study, for each study.

Pure functions of the store's DataFrames (runs with ``cfg_<field>`` columns, long metrics),
so the findings page and FINDINGS.md show numbers computed from the shipped runs, never typed
in. ``covnoise findings --write FINDINGS.md`` rewrites the generated part of
FINDINGS.md from ``cached_runs/``; ``--check`` exits 1 when that part is stale.

Definitions (per data set, one study of covnoise.results.study):
- an *arm* is a setting without its seed: SB (batch M), LB at one learning rate, or LB with
  one structure at one multiplier s; its numbers are mean ± sample std over seeds of the
  runs that finished (diverged runs are counted, not averaged);
- *test-acc gap* = SB mean test accuracy − the arm's (the gap of the claims); *loss gap* =
  final test loss − final train loss;
- a *best* arm (the tuned LB learning rate, a structure's best multiplier) is the one with
  the highest mean validation accuracy when its runs held out a validation split, else the
  highest mean test accuracy; the findings report its test accuracy;
- *steps to target* = the first evaluated step at which the full-training-set loss is at or
  below the study's target (runs that never reach it are counted apart).

The tables are built in covnoise.results.tables, the claims judged in
covnoise.results.claims (with the rules that say when a difference is clear) and the
Markdown written in covnoise.results.markdown.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from covnoise.results.calibration import pilot_ratios
from covnoise.results.claims import Verdict, source_verdicts, verdicts
from covnoise.results.designs import (
    DesignTest,
    design_table,
    design_test,
    run_bootstrap_correlations,
)
from covnoise.results.study import ALL_STUDIES, Study
from covnoise.results.tables import (
    arm_table,
    claim4_table,
    is_pilot,
    noise_settings,
    run_table,
    study_runs,
)

__all__ = ["StudyFindings", "all_findings", "study_findings"]


@dataclass(frozen=True)
class StudyFindings:
    """One study's findings: its run and arm tables, claim-4 settings and correlations, the
    verdicts, and (for studies with them) the pilot's ratios, the equal-trace vs
    equal-Frobenius test, the run-level correlations, the verdicts of claims 2–3 with each
    further noise source, and how long the study took."""

    study: Study
    per_run: pd.DataFrame
    arms: pd.DataFrame
    settings: pd.DataFrame
    correlations: pd.DataFrame
    verdicts: list[Verdict]
    ratios: dict[str, float] = field(default_factory=dict)
    designs: pd.DataFrame = field(default_factory=pd.DataFrame)
    design: DesignTest | None = None
    run_correlations: pd.DataFrame = field(default_factory=pd.DataFrame)
    sources: list[Verdict] = field(default_factory=list)
    timing: dict[str, float] = field(default_factory=dict)


def study_timing(runs: pd.DataFrame) -> dict[str, float]:
    """Hours from the first run's start to the last run's end, and the runs' summed wall
    time in hours (the work; the first figure is what the machine's workers took)."""
    if runs.empty or not {"started_at", "ended_at", "wall_time"} <= set(runs):
        return {}
    start = pd.to_numeric(runs["started_at"], errors="coerce")  # Unix seconds
    end = pd.to_numeric(runs["ended_at"], errors="coerce")
    return {
        "elapsed_h": float((end.max() - start.min()) / 3600),
        "work_h": float(pd.to_numeric(runs["wall_time"], errors="coerce").sum() / 3600),
        "runs": float(len(runs)),
    }


def study_findings(runs: pd.DataFrame, metrics: pd.DataFrame, study: Study) -> StudyFindings:
    """Everything the findings page and FINDINGS.md show about one study."""
    per_run = run_table(runs, metrics, study)
    arms = arm_table(per_run)
    settings = noise_settings(per_run, study) if len(per_run) else pd.DataFrame()
    corr = claim4_table(settings) if len(settings) >= 3 else pd.DataFrame()
    mine = study_runs(runs, study)
    pilot = mine[is_pilot(mine)]
    ratios = pilot_ratios(pilot, metrics) if len(pilot) else {}
    sb = f"SB M={study.small_batch}"
    run_corr = (
        run_bootstrap_correlations(per_run, settings, sb) if len(settings) >= 3 else pd.DataFrame()
    )
    return StudyFindings(
        study,
        per_run,
        arms,
        settings,
        corr,
        verdicts(per_run, arms, study),
        ratios=ratios,
        designs=design_table(per_run, study),
        design=design_test(per_run, study) if len(per_run) else None,
        run_correlations=run_corr,
        sources=source_verdicts(per_run, arms, study) if len(arms) else [],
        timing=study_timing(mine),
    )


def all_findings(runs: pd.DataFrame, metrics: pd.DataFrame) -> list[StudyFindings]:
    """Findings of every registered study that has runs among `runs`."""
    found = [study_findings(runs, metrics, s) for s in ALL_STUDIES.values()]
    return [f for f in found if len(f.per_run)]
