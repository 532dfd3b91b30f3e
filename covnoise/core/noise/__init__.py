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
diag(C) estimate and its schedule (`diagstats`). `registry` maps names to classes.
"""

from covnoise.config import RunConfig
from covnoise.core.noise.base import NoiseState, NoiseStructure, StepPlan, Structure
from covnoise.core.noise.diag import DiagNoise
from covnoise.core.noise.full import FullNoise
from covnoise.core.noise.isotropic import IsotropicNoise
from covnoise.core.noise.none import NoNoise
from covnoise.core.noise.probe import Probe, ProbeNoise
from covnoise.core.noise.registry import STRUCTURES, make_structure
from covnoise.core.noise.statistics import noise_statistics

# The run defaults for diag and isotropic (RunConfig is their home), tuned with
# `python -m bench.steps` on a 2-core CPU: 128 rows every 4 steps keeps both within 1.3× of a
# plain step for the MLP at B = 1024 and the small CNN at B = 512 (exact v every step costs
# 2–3×). Per refresh, v̂ on 128 rows has about 20% relative error and tr C about 1%; the
# injected covariance stays unbiased.
RECOMMENDED_STATS_ROWS = RunConfig().stats_rows
RECOMMENDED_STATS_EVERY = RunConfig().stats_every

__all__ = [
    "RECOMMENDED_STATS_EVERY",
    "RECOMMENDED_STATS_ROWS",
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
]
