"""The mathematics without torch (numpy only): the noise covariance table, the exact convex
quadratic and the two-weight geometry of the paper's Figure 1.

The face re-exports the covariance table only (numpy alone), so that RunConfig can use it
without loading scipy or pandas; the quadratic, ordering, montecarlo, quadratic_report and
geometry modules are imported by name where they are needed.
"""

from covnoise.theory.covariance import (
    NOISY_STRUCTURES,
    STRUCTURES,
    Structure,
    noise_covariance,
    noise_fro,
    noise_trace,
    psd_factor,
    scale_factor,
    structure_matrix,
)

__all__ = [
    "NOISY_STRUCTURES",
    "STRUCTURES",
    "Structure",
    "noise_covariance",
    "noise_fro",
    "noise_trace",
    "psd_factor",
    "scale_factor",
    "structure_matrix",
]
