"""Noise structures as gradient transformations, and the noise statistics logged at evaluation.

Each step trains on the large-batch gradient ḡ plus ξ with Cov(ξ) = c·K, c = s(1/M − 1/L),
C the covariance of the batch's per-example gradients (docs/design.md, "Noise structures"):

- none:      K = 0.
- isotropic: K = (tr C / P) I;   ξ = √(c·tr C/P) z.
- diag:      K = diag(C);        ξ = √c √v ⊙ z.
- full:      K = C;              per-example loss weights 1/B + √(c/B)(z − z̄), one backward.

A structure is one class in its own module (none, isotropic, diag, full) that owns both its
sampling (`plan`, `init`, `update`; the interface and shared base are in `base`) and its
logged statistics (`statistics(probe)`: tr Σ, ‖Σ‖_F and a sampler of ξ on a probe batch,
see `probe`; `statistics` turns the draws into Tr(HΣ)). diag and isotropic share the
statistics schedule and the draw (`diagstats`); diag records diag(C) per coordinate,
isotropic only tr C. `registry` maps names to classes.

Source (`make_structure(..., source=)`, RunConfig.noise_source): "batch" takes C from the
batch's per-example gradients at their labels; "fisher" from the gradients at labels
ŷ_n ~ p(y | x_n) drawn from the model's own predictions with the noise generator (zero mean
over ŷ, so their batch covariance estimates the true Fisher). Same sub-batch and refresh
options, same cost discipline (full: one backward of Σ_n [l(x_n, y_n)/B +
√(c/B)(z_n − z̄) l(x_n, ŷ_n)] from the same forward; diag/isotropic: one extra backward of the
sampled-label loss of the statistics rows, only in the steps that refresh them); the
gradient trained on always uses y. The logged tr Σ, ‖Σ‖_F and Tr(HΣ) follow the source (the
probe's labels are drawn the same way).

Tr(HΣ) precision (`statistics`): the logged value is a Monte-Carlo mean of ξᵀHξ whose draws
continue, in blocks of RunConfig.noise_samples, until its standard error is at most 5% of
|mean| or 128 draws are made; the standard error and the number of draws are logged with it
(`noise_trace_hsigma_se`, `noise_trace_hsigma_draws`). One draw's relative spread is 0.4–0.7
on the digits MLP, so this is about 5–7% where 8 fixed draws gave 15–25%; at the cap the
logged standard error states the precision reached. mean ± 2 SE covered the exact value in
92–99% of evaluations against a dense Hessian (tests/test_noise_scale.py).
"""

from covnoise.config import RunConfig
from covnoise.core.noise.base import SOURCES, NoiseState, NoiseStructure, StepPlan, Structure
from covnoise.core.noise.diag import DiagNoise
from covnoise.core.noise.diagstats import stats_interval
from covnoise.core.noise.full import FullNoise
from covnoise.core.noise.isotropic import IsotropicNoise
from covnoise.core.noise.none import NoNoise
from covnoise.core.noise.probe import Probe, ProbeNoise
from covnoise.core.noise.registry import STRUCTURES, make_structure
from covnoise.core.noise.statistics import HSIGMA_MAX_DRAWS, HSIGMA_REL_SE, noise_statistics

# The run defaults for diag and isotropic (RunConfig is their home), tuned with
# `python -m bench.steps` on a 2-core CPU: 128 rows every 4 steps keeps both within 1.3× of a
# plain step for the MLP at B = 1024 and the small CNN at B = 512 (exact v every step costs
# about 1.5× for the MLP since Σg is taken from the batch gradient). Per refresh, v̂ on 128
# rows has about 20% relative error and tr C about 1%; the injected covariance stays
# unbiased. Below B = 512, and when B · P < 2²³, the default schedule refreshes less often
# (diagstats.stats_interval).
RECOMMENDED_STATS_ROWS = RunConfig().stats_rows
RECOMMENDED_STATS_EVERY = RunConfig().stats_every

__all__ = [
    "HSIGMA_MAX_DRAWS",
    "HSIGMA_REL_SE",
    "RECOMMENDED_STATS_EVERY",
    "RECOMMENDED_STATS_ROWS",
    "SOURCES",
    "STRUCTURES",
    "DiagNoise",
    "FullNoise",
    "IsotropicNoise",
    "NoNoise",
    "NoiseState",
    "NoiseStructure",
    "Probe",
    "ProbeNoise",
    "StepPlan",
    "Structure",
    "make_structure",
    "noise_statistics",
    "stats_interval",
]
