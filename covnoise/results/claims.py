"""The four claims and how each is judged from a study's runs.

Each claim has its own function, which returns a :class:`Verdict` (reproduced, partly, not
reproduced, not testable) with the numbers it rests on as evidence. The rules:

- a difference of two arms' means is *clear* when it exceeds the two-sided 95% Welch t
  critical value (at the Welch–Satterthwaite degrees of freedom: 2.78 at df 4, 2.31 at df 8,
  not the lenient 2 of a normal approximation) times its standard error, and the larger of
  the two seed standard deviations;
- a statistic *tracks* generalisation only in the predicted direction: more noise of the
  stated kind, a smaller test-accuracy gap to SB (a negative Spearman ρ with the gap), so
  claim 4 compares −ρ, not |ρ|;
- an arm keeps large-batch speed or optimises more slowly by SPEED_TOLERANCE;
- claims 2–4 explain the gap between SB and LB at the base learning rate, so without a clear
  gap there they are not testable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats as sps

from covnoise.results.correlations import correlation_difference
from covnoise.results.designs import design_test, design_verdict
from covnoise.results.study import Study
from covnoise.results.tables import (
    PICKED_ON,
    arm_label,
    best_arm,
    claim4_table,
    noise_settings,
    pick_column,
)

#: Speed-up band: an arm "keeps large-batch speed" when it needs at most this many times the
#: steps of plain LB to reach the target, and "optimises more slowly" above it.
SPEED_TOLERANCE = 1.25

CLAIMS = {
    1: "large batch (learning rate tuned) generalises worse than small batch at equal epochs",
    2: "LB + diagonal Fisher noise narrows the gap and keeps large-batch optimisation speed",
    3: "LB + full Fisher noise narrows the gap but optimises more slowly",
    4: "across structures and multipliers, ‖Σ‖_F tracks generalisation better than tr Σ",
}


@dataclass(frozen=True)
class Verdict:
    claim: int
    statement: str
    verdict: str  # reproduced, partly, not reproduced, not testable
    evidence: str


#: Two-sided level of "clear".
CLEAR_LEVEL = 0.95


@dataclass(frozen=True)
class Difference:
    """Difference of two arms' means with its Welch standard error and degrees of freedom."""

    a: str
    b: str
    diff: float
    se: float
    spread: float
    df: float = math.nan

    @property
    def critical(self) -> float:
        """The two-sided CLEAR_LEVEL Welch t critical value at `df`."""
        if not np.isfinite(self.df) or self.df <= 0:
            return math.nan
        return float(sps.t.ppf(0.5 + CLEAR_LEVEL / 2, self.df))

    @property
    def clear(self) -> bool:
        """Larger than the t critical value times its standard error (Welch's test rejects
        equal means at CLEAR_LEVEL, in this direction) and than the seeds' spread."""
        return bool(
            np.isfinite(self.diff)
            and self.diff > self.critical * self.se
            and self.diff > self.spread
        )

    def text(self) -> str:
        return f"{self.diff:+.3f} ± {self.se:.3f} (se, df {self.df:.1f})"


def difference(per_run: pd.DataFrame, a: str, b: str, column: str = "test_acc") -> Difference:
    """mean(a) − mean(b) of `column` over the finished runs of two arms, with Welch's
    standard error and Welch–Satterthwaite degrees of freedom."""
    ok = per_run[per_run["status"] == "finished"]
    xa = ok.loc[ok["arm"] == a, column].dropna().astype(float)
    xb = ok.loc[ok["arm"] == b, column].dropna().astype(float)
    if len(xa) < 2 or len(xb) < 2:
        return Difference(a, b, math.nan, math.nan, math.nan)
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    se = math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(xa) - 1) + vb**2 / (len(xb) - 1)) if se > 0 else math.nan
    spread = max(xa.std(ddof=1), xb.std(ddof=1))
    return Difference(a, b, float(xa.mean() - xb.mean()), se, float(spread), float(df))


def _picked(candidates: pd.DataFrame) -> str:
    """The note ", picked on validation accuracy" when a best arm among `candidates` is picked
    on it; nothing when it is picked on test accuracy (the rule of runs without a split)."""
    column = pick_column(candidates)
    return f", picked on {PICKED_ON[column]}" if column != "test_acc" else ""


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _sb(study: Study) -> str:
    return f"SB M={study.small_batch}"


def _base(study: Study) -> str:
    return f"LB η={study.base_lr:g}"


def _speed(arms: pd.DataFrame, arm: str, base: str) -> tuple[float, str]:
    """Steps-to-target ratio of `arm` to `base` and a phrase describing it."""
    a, b = arms.set_index("arm").loc[arm], arms.set_index("arm").loc[base]
    if a["reached"] < a["finished"] or a["finished"] == 0:
        return math.inf, f"{a['reached']}/{a['finished']} of its runs reach the target"
    ratio = a["steps_to_target"] / b["steps_to_target"]
    return float(ratio), (
        f"{a['steps_to_target']:.0f} vs {b['steps_to_target']:.0f} steps to "
        f"the target ({ratio:.2f}×)"
    )


def _untestable(arms: pd.DataFrame, study: Study) -> str | None:
    """Why no claim can be judged (no runs, or no finished SB or LB runs), or None."""
    if arms.empty:
        return "no runs"
    lb = arms[(arms["noise"] == "none") & (arms["batch_size"] == study.large_batch)]
    if lb[lb["finished"] > 0].empty or _sb(study) not in set(arms["arm"]):
        return "no finished small-batch or large-batch runs"
    return None


def large_batch_gap(per_run: pd.DataFrame, arms: pd.DataFrame, study: Study) -> Verdict:
    """Claim 1: SB beats the best LB arm (reproduced), beats LB at the base learning rate or
    the best LB arm without a clear margin (partly)."""
    sb, base = _sb(study), _base(study)
    lb = arms[(arms["noise"] == "none") & (arms["batch_size"] == study.large_batch)]
    lb = lb[lb["finished"] > 0]
    tuned = best_arm(lb)["arm"]
    d_tuned, d_base = difference(per_run, sb, tuned), difference(per_run, sb, base)
    if d_tuned.clear:
        v = "reproduced"
    elif d_base.clear or d_tuned.diff > 0:
        v = "partly"
    else:
        v = "not reproduced"
    return Verdict(
        1,
        CLAIMS[1],
        v,
        f"test accuracy SB − best LB ({tuned}{_picked(lb)}): {d_tuned.text()}, clear: "
        f"{_yes(d_tuned.clear)}; SB − {base}: {d_base.text()}, clear: "
        f"{_yes(d_base.clear)}",
    )


def _noise_evidence(
    per_run: pd.DataFrame,
    arms: pd.DataFrame,
    structure: str,
    base: str,
    gap: Difference,
    source: str = "batch",
) -> tuple[bool, float, str]:
    """Whether LB + `structure` at s = 1 (noise from `source`) clearly beats `base`, its
    steps-to-target ratio to `base`, and the evidence text."""
    arm = arm_label(2, 1, structure, 1.0, 0.0, source)
    gain = difference(per_run, arm, base)
    ratio, speed_text = _speed(arms, arm, base)
    share = gain.diff / gap.diff if gap.clear else math.nan
    candidates = arms[
        (arms["noise"] == structure) & (arms["finished"] > 0) & (arms["noise_source"] == source)
    ]
    best, picked = best_arm(candidates), _picked(candidates)
    evidence = (
        f"test accuracy {arm} − {base}: {gain.text()} (clear: {_yes(gain.clear)}"
        + (f"; {share:.0%} of the SB − {base} gap" if np.isfinite(share) else "")
        + f"); {speed_text}; best multiplier s={best['noise_scale']:g} at "
        f"{best['test_acc']:.3f}" + (f" test accuracy{picked}" if picked else "")
    )
    return gain.clear, ratio, evidence


def _noise_claim(
    claim: int,
    structure: str,
    want_fast: bool,
    per_run: pd.DataFrame,
    arms: pd.DataFrame,
    study: Study,
    source: str = "batch",
) -> Verdict:
    """Claims 2 and 3: LB + `structure` at s = 1 (noise from `source`) narrows the SB − LB
    gap, at large-batch speed (`want_fast`) or more slowly."""
    arm, base = arm_label(2, 1, structure, 1.0, 0.0, source), _base(study)
    if arm not in set(arms["arm"]):
        return Verdict(claim, CLAIMS[claim], "not testable", f"no {arm} runs")
    finished = arms.set_index("arm")["finished"]
    if finished[arm] < 2:
        return Verdict(claim, CLAIMS[claim], "not testable", f"fewer than two finished {arm} runs")
    if base not in finished.index or finished[base] < 2:
        return Verdict(
            claim,
            CLAIMS[claim],
            "not testable",
            f"fewer than two finished {base} runs: the noise arms are judged against large "
            "batches at the base learning rate",
        )
    gap = difference(per_run, _sb(study), base)
    narrows, ratio, evidence = _noise_evidence(per_run, arms, structure, base, gap, source)
    fast = ratio <= SPEED_TOLERANCE
    speed_ok = fast if want_fast else not fast
    if not gap.clear:  # nothing to narrow: the speed half alone cannot carry the claim
        return Verdict(
            claim,
            CLAIMS[claim],
            "not testable",
            f"no clear gap between SB and {base} to narrow; " + evidence,
        )
    v = (
        "reproduced"
        if narrows and speed_ok
        else "partly"
        if narrows or speed_ok
        else "not reproduced"
    )
    return Verdict(claim, CLAIMS[claim], v, evidence)


def diagonal_noise(per_run: pd.DataFrame, arms: pd.DataFrame, study: Study) -> Verdict:
    """Claim 2: diagonal Fisher noise narrows the gap and keeps large-batch speed."""
    return _noise_claim(2, "diag", True, per_run, arms, study)


def full_noise(per_run: pd.DataFrame, arms: pd.DataFrame, study: Study) -> Verdict:
    """Claim 3: full Fisher noise narrows the gap but optimises more slowly."""
    return _noise_claim(3, "full", False, per_run, arms, study)


def frobenius_tracks(per_run: pd.DataFrame, arms: pd.DataFrame, study: Study) -> Verdict:
    """Claim 4: ‖Σ‖_F rather than tr Σ characterises the effect of the noise.

    With the equal-Frobenius design (covnoise.results.designs) the verdict is the design
    test's: reproduced when the equal-Frobenius arms land clearly closer together than the
    equal-trace arms (the interval of D lies above 0), reversed when clearly farther apart,
    partly or not reproduced by the sign of D otherwise. Without it (studies made before the
    design), the rank-correlation rule: reproduced when ‖Σ‖_F tracks the test-accuracy gap
    in the predicted direction (the interval of ρ_F below 0) and the paired bootstrap
    interval of (−ρ_F) − (−ρ_tr) is above 0; partly when only that difference's estimate is
    above 0. Not testable without a clear SB − LB gap at the base learning rate."""
    settings = noise_settings(per_run, study)
    if len(settings) < 3:
        return Verdict(4, CLAIMS[4], "not testable", "fewer than three noisy settings")
    lead, base = "", _base(study)
    gap_clear = difference(per_run, _sb(study), base).clear
    if not gap_clear:
        lead = f"no clear gap between SB and {base} to explain; "
    test = design_test(per_run, study)
    if test is not None:
        v = design_verdict(test) if gap_clear else "not testable"
        t = test.spreads
        spreads = "; ".join(
            f"s={s:g}: equal trace {_spread(t, s, 'equal trace')}, equal Frobenius "
            f"{_spread(t, s, 'equal Frobenius')}"
            for s in study.matched_scales
        )
        return Verdict(
            4,
            CLAIMS[4],
            v,
            lead + f"spread (range) of the arms' mean test accuracy — {spreads}; "
            f"D = spread(equal trace) − spread(equal Frobenius) = {test.d:+.3f} "
            f"[{test.lo:+.3f}, {test.hi:+.3f}] ({test.n_boot} bootstrap resamples of runs)",
        )
    table = claim4_table(settings).set_index(["measure", "statistic"])
    d, lo, hi = correlation_difference(
        settings["noise_fro"], settings["noise_trace"], settings["acc_gap"], direction=-1
    )
    rf = table.loc[("acc_gap", "noise_fro")]
    rt = table.loc[("acc_gap", "noise_trace")]
    tracks = rf["spearman_hi"] < 0
    v = "reproduced" if lo > 0 and tracks else "partly" if d > 0 else "not reproduced"
    if not gap_clear:
        v = "not testable"
    return Verdict(
        4,
        CLAIMS[4],
        v,
        lead + f"Spearman ρ with the test-acc gap to SB over {len(settings)} settings: ‖Σ‖_F "
        f"{rf['spearman']:+.2f} [{rf['spearman_lo']:+.2f}, {rf['spearman_hi']:+.2f}], tr Σ "
        f"{rt['spearman']:+.2f} [{rt['spearman_lo']:+.2f}, {rt['spearman_hi']:+.2f}]; "
        f"(−ρ_F) − (−ρ_tr) = {d:+.2f} [{lo:+.2f}, {hi:+.2f}]",
    )


def _spread(spreads: pd.DataFrame, s: float, design: str) -> str:
    row = spreads[np.isclose(spreads["matched_scale"], s) & (spreads["design"] == design)]
    if row.empty:
        return "–"
    r = row.iloc[0]
    return f"{r['spread']:.3f} [{r['lo']:.3f}, {r['hi']:.3f}]"


def source_verdicts(per_run: pd.DataFrame, arms: pd.DataFrame, study: Study) -> list[Verdict]:
    """Claims 2 and 3 judged again with the noise of each further source of the study (the
    true Fisher): does the source change them? Same rules as with batch noise."""
    out = []
    for source in study.sources:
        out.append(_noise_claim(2, "diag", True, per_run, arms, study, source))
        out.append(_noise_claim(3, "full", False, per_run, arms, study, source))
    return out


#: The judge of each claim, in the order of CLAIMS.
JUDGES = (large_batch_gap, diagonal_noise, full_noise, frobenius_tracks)


def verdicts(per_run: pd.DataFrame, arms: pd.DataFrame, study: Study) -> list[Verdict]:
    """The four claims, each judged from the study's runs with the rules in this module."""
    reason = _untestable(arms, study)
    if reason is not None:
        return [Verdict(k, s, "not testable", reason) for k, s in CLAIMS.items()]
    return [judge(per_run, arms, study) for judge in JUDGES]
