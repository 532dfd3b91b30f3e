"""The torch layer: noise structures, per-example statistics, curvature, models and the
training loop ``covnoise.core.train.run(config, emit)``.

Packages and modules, each with one job: `noise` (the structures: sampling and logged
statistics), `pergrad` (per-example gradient statistics from layer hooks), `curvature`
(operators, eigen and trace algorithms), `models`, `losses`, `step` (one noisy SGD step),
`schedule`, `evaluation` (the metrics), `provenance` and `train` (the loop). This face
re-exports the names the other layers use.
"""

from covnoise.core.curvature import HessianOperator, lanczos, power_iteration
from covnoise.core.losses import per_example_loss
from covnoise.core.models import build_model, count_parameters
from covnoise.core.noise import STRUCTURES, make_structure, noise_statistics
from covnoise.core.provenance import code_revision, describe_device, versions
from covnoise.core.step import noisy_step
from covnoise.core.train import resolve_device, run

__all__ = [
    "STRUCTURES",
    "HessianOperator",
    "build_model",
    "code_revision",
    "count_parameters",
    "describe_device",
    "lanczos",
    "make_structure",
    "noise_statistics",
    "noisy_step",
    "per_example_loss",
    "power_iteration",
    "resolve_device",
    "run",
    "versions",
]
