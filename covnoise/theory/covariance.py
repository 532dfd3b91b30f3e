"""The noise covariance table: structure names, the scale c, K per structure and Σ = c · K.

Large-batch SGD at batch L imitates small-batch SGD at batch M < L by adding ξ ~ N(0, Σ) to
the gradient, with Σ = c · K: c = s (1/M − 1/L) is the variance a batch of L misses relative to
a batch of M (s a multiplier, 1 for an exact match), and K is the per-example gradient
covariance C reduced to a structure of P × P matrices:

    none        0
    isotropic   (tr C / P) · I
    diag        diag(C)
    full        C

Every noisy structure has tr K = tr C, so tr Σ = c · tr C is the same for all of them, while
‖Σ‖_F = c ‖K‖_F is ordered isotropic ≤ diag ≤ full. This module is the one home of that table
(the quadratic, the 2-D geometry and RunConfig.noise_c use it) and of the PSD square-root
factor used to draw ξ. It needs numpy only, so it sits below every other layer.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Structure = Literal["none", "isotropic", "diag", "full"]

STRUCTURES: tuple[str, ...] = ("none", "isotropic", "diag", "full")
#: The structures that inject noise (all but "none").
NOISY_STRUCTURES: tuple[str, ...] = ("isotropic", "diag", "full")


def scale_factor(M: int, L: int, s: float = 1.0) -> float:
    """c = s (1/M − 1/L): the variance a batch of L misses relative to a batch of M."""
    if not 1 <= M <= L:
        raise ValueError(f"need 1 ≤ M ≤ L, got M={M}, L={L}")
    if s < 0:
        raise ValueError(f"the multiplier s must be non-negative, got {s}")
    return s * (1.0 / M - 1.0 / L)


def _check(structure: str) -> None:
    if structure not in STRUCTURES:
        raise ValueError(f"unknown structure {structure!r}; choose one of {STRUCTURES}")


def structure_matrix(C: np.ndarray, structure: Structure) -> np.ndarray:
    """K for a structure: 0, (tr C / P) I, diag(C) or C. All non-zero ones share tr K = tr C."""
    _check(structure)
    P = C.shape[0]
    if structure == "none":
        return np.zeros_like(C)
    if structure == "isotropic":
        return (np.trace(C) / P) * np.eye(P)
    if structure == "diag":
        return np.diag(np.diag(C))
    return C.copy()


def noise_covariance(C: np.ndarray, structure: Structure, c: float) -> np.ndarray:
    """Injected covariance Σ = c · K."""
    return c * structure_matrix(C, structure)


def noise_trace(C: np.ndarray, structure: Structure, c: float) -> float:
    """tr Σ without forming Σ: c · tr C for every noisy structure, 0 for none."""
    _check(structure)
    return 0.0 if structure == "none" else c * float(np.trace(C))


def noise_fro(C: np.ndarray, structure: Structure, c: float) -> float:
    """‖Σ‖_F without forming Σ: c · tr C / √P, c ‖diag C‖₂, c ‖C‖_F, or 0 for none.

    With C PSD these are ordered isotropic ≤ diag ≤ full (Cauchy–Schwarz on the diagonal,
    then dropping the off-diagonal entries), although the traces are equal.
    """
    _check(structure)
    if structure == "none":
        return 0.0
    if structure == "isotropic":
        return c * float(np.trace(C)) / float(np.sqrt(C.shape[0]))
    if structure == "diag":
        return c * float(np.linalg.norm(np.diag(C)))
    return c * float(np.linalg.norm(C, "fro"))


def psd_factor(cov: np.ndarray) -> np.ndarray:
    """R with R Rᵀ = cov for a symmetric PSD matrix (eigh; tolerates singular covariances).

    R = V diag(√w) from cov = V diag(w) Vᵀ, with rounding-level negative eigenvalues clipped
    to 0; then z @ Rᵀ ~ N(0, cov) for rows z ~ N(0, I).
    """
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    return V * np.sqrt(np.clip(w, 0.0, None))
