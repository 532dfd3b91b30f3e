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

from dataclasses import dataclass

import pandas as pd

from covnoise.results.claims import Verdict, verdicts
from covnoise.results.markdown import render, replace_block
from covnoise.results.study import ALL_STUDIES, Study
from covnoise.results.tables import arm_table, claim4_table, noise_settings, run_table

__all__ = ["StudyFindings", "all_findings", "render", "replace_block", "study_findings"]


@dataclass(frozen=True)
class StudyFindings:
    """One study's findings: its run and arm tables, claim-4 settings and correlations, and
    the verdicts."""

    study: Study
    per_run: pd.DataFrame
    arms: pd.DataFrame
    settings: pd.DataFrame
    correlations: pd.DataFrame
    verdicts: list[Verdict]


def study_findings(runs: pd.DataFrame, metrics: pd.DataFrame, study: Study) -> StudyFindings:
    """Everything the findings page and FINDINGS.md show about one study."""
    per_run = run_table(runs, metrics, study)
    arms = arm_table(per_run)
    settings = noise_settings(per_run, study) if len(per_run) else pd.DataFrame()
    corr = claim4_table(settings) if len(settings) >= 3 else pd.DataFrame()
    return StudyFindings(study, per_run, arms, settings, corr, verdicts(per_run, arms, study))


def all_findings(runs: pd.DataFrame, metrics: pd.DataFrame) -> list[StudyFindings]:
    """Findings of every registered study that has runs among `runs`."""
    found = [study_findings(runs, metrics, s) for s in ALL_STUDIES.values()]
    return [f for f in found if len(f.per_run)]
