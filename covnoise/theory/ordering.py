"""When the stationary loss of the quadratic is ordered by ‖Σ‖_F, exactly.

Setting (quadratic.py): A = Q Λ Qᵀ, C = σ² A, total noise Σ' = C/L + Σ with Σ = c K and
K ∈ {(tr C/P) I, diag C, C}, all of trace tr C. With f(λ) = α / (2 (2 − αλ)), increasing and
convex on the stable range 0 ≤ αλ < 2,

    E[L∞] = Σ_i f(λ_i) Σ'_ii (A's eigenbasis) = tr(f(A) Σ'),
    f(λ) = α/4 + α²λ/8 + α³λ² / (16 (1 − αλ/2)),

so E[L∞] = (α/4) tr Σ' + (α²/8) tr(AΣ') + R with 0 ≤ R = (α³/16) Σ_i λ_i² Σ'_ii / (1 − αλ_i/2).
At equal trace the first term is common and tr(AΣ) = ‖Σ‖_F² / (cσ²): to second order in α
the structures are ordered by ‖Σ‖_F, i.e. isotropic ≤ diag ≤ full.

Exactly, only c tr(f(A) K) differs between structures (c ≥ 0):

    full: σ² Σ_i λ_i f(λ_i)   diag: σ² Σ_j A_jj f(A)_jj   isotropic: σ² (tr A / P) tr f(A).

Let D_ji = Q_ji² (doubly stochastic). Row j is a distribution over eigenvalues, with means
A_jj = E_j[λ] and f(A)_jj = E_j[f(λ)]: diag C is the pinching of C onto the coordinate axes.

- full ≥ diag at every stable α: full − diag = σ² Σ_j Cov_j(λ, f(λ)) ≥ 0 (the columns of D
  sum to 1), and two increasing functions of one variable are non-negatively correlated
  (Chebyshev). Equality iff every coordinate axis lies in one eigenspace, i.e. A is diagonal.
- full ≥ isotropic likewise: full − isotropic = σ² P Cov(λ, f(λ)) over i uniform.
- diag − isotropic = σ² P Cov_j(A_jj, f(A)_jj), j uniform over coordinates: two different
  averages, with no sign in general. With at most two distinct eigenvalues (P = 2, the
  two-cluster spectrum) f is affine on the spectrum, f(A) = aI + bA with b > 0, so the gap is
  σ² b P Var_j(A_jj) ≥ 0 and the ‖Σ‖_F order is exact at every α. With three or more it can
  invert: for small α the gap is (α²/8) σ² P Var_j(A_jj) + O(α³) ≥ 0, while as αλ_max → 2,
  f(A) ≈ (α/2) Π / (2 − αλ_max) with Π the projector on the top eigenspace, so diag beats
  isotropic near the edge iff Cov_j(A_jj, Π_jj) < 0 (edge_covariance): the coordinates that
  carry most of the top eigenvector have below-average curvature. In between the sign may
  change more than once; inversions appear at large αλ_max (above 1 in the seeded search of
  tests/test_ordering.py).

The criterion at any α is the sign of diag_iso_gap, equal to Σ_i w_i (K_diag − K_iso)'_ii / σ²
in the eigenbasis with w_i = f(λ_i). It depends on A and α only, not on σ, s, L or M (c > 0):
one sign holds for the whole sweep over s.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from covnoise.theory.covariance import NOISY_STRUCTURES
from covnoise.theory.quadratic import (
    Optimizer,
    Quadratic,
    check_step_size,
    method_noise,
    stationary_loss,
)

#: Relative size below which two losses or two norms count as equal.
TIE_RTOL = 1e-10


def stationary_weights(eigvals: np.ndarray, alpha: float) -> np.ndarray:
    """w_i = α / (2 (2 − αλ_i)): E[L∞] = Σ_i w_i Σ'_ii in A's eigenbasis."""
    return alpha / (2.0 * (2.0 - alpha * np.asarray(eigvals, dtype=np.float64)))


def second_order_loss(A: np.ndarray, noise: np.ndarray, alpha: float) -> float:
    """(α/4) tr Σ' + (α²/8) tr(AΣ'): the stationary loss to second order in α."""
    return alpha / 4.0 * float(np.trace(noise)) + alpha**2 / 8.0 * float(np.sum(A * noise))


def diag_iso_gap(A: np.ndarray, alpha: float) -> float:
    """(E[L∞]_diag − E[L∞]_isotropic) / (cσ²) = P · Cov_j(A_jj, f(A)_jj), j uniform.

    f(A) = (α/2)(2I − αA)⁻¹ comes from one linear solve in the coordinate basis (no
    eigendecomposition). Negative exactly when diag noise gives the lower stationary loss.
    """
    check_step_size(alpha, float(np.linalg.eigvalsh(A).max()))
    P = A.shape[0]
    fA = 0.5 * alpha * np.linalg.solve(2.0 * np.eye(P) - alpha * A, np.eye(P))
    a, f = np.diag(A), np.diag(fA)
    return float(np.sum((a - a.mean()) * (f - f.mean())))


def edge_covariance(problem: Quadratic, rtol: float = 1e-9) -> float:
    """Cov_j(A_jj, Π_jj), Π the projector on A's top eigenspace.

    Its sign is the sign of diag_iso_gap as αλ_max → 2: negative means diag noise beats
    isotropic noise close enough to the stability edge.
    """
    lam = problem.eigvals
    top = lam >= lam.max() * (1.0 - rtol)
    pi = np.sum(problem.Q[:, top] ** 2, axis=1)
    a = np.diag(problem.A)
    return float(np.mean((a - a.mean()) * (pi - pi.mean())))


def _tied(x: float, y: float, scale: float) -> bool:
    return abs(x - y) <= TIE_RTOL * scale


@dataclass(frozen=True)
class StationaryOrder:
    """Exact stationary losses per noisy structure and whether ‖Σ‖_F orders them.

    inversions lists pairs (a, b) with ‖Σ_a‖_F < ‖Σ_b‖_F but E[L∞]_a > E[L∞]_b.
    """

    alpha: float
    alpha_lam_max: float
    fro: dict[str, float]
    loss: dict[str, float]
    second_order: dict[str, float]
    inversions: tuple[tuple[str, str], ...] = field(default=())

    @property
    def agrees(self) -> bool:
        """True when the loss order is the ‖Σ‖_F order (ties allowed)."""
        return not self.inversions

    def message(self) -> str | None:
        """A plain sentence per inversion, or None when the orders agree."""
        if self.agrees:
            return None
        parts = [
            f"At this step size {b} noise gives a lower stationary loss than {a} although its "
            f"‖Σ‖_F is larger (E[L∞] = {self.loss[b]:.6g} vs {self.loss[a]:.6g})."
            for a, b in self.inversions
        ]
        return (
            " ".join(parts) + f" Here α·λ_max = {self.alpha_lam_max:.3g}: the ordering by "
            "‖Σ‖_F holds to second order in α and can invert as α·λ_max approaches 2."
        )


def _inversions(fro: dict[str, float], loss: dict[str, float]) -> tuple[tuple[str, str], ...]:
    fro_scale = max(fro.values(), default=0.0)
    loss_scale = max(loss.values(), default=0.0)
    found = []
    for i, a in enumerate(NOISY_STRUCTURES):
        for b in NOISY_STRUCTURES[i + 1 :]:
            lo, hi = (a, b) if fro[a] <= fro[b] else (b, a)
            if _tied(fro[lo], fro[hi], fro_scale) or _tied(loss[lo], loss[hi], loss_scale):
                continue
            if loss[lo] > loss[hi]:
                found.append((lo, hi))
    return tuple(found)


def stationary_order(problem: Quadratic, opt: Optimizer) -> StationaryOrder:
    """Exact and second-order stationary losses of isotropic, diag and full noise at opt.

    Raises UnstableStepError for α ≥ 2/λ_max.
    """
    check_step_size(opt.alpha, problem.lam_max)
    fro, loss, second = {}, {}, {}
    for structure in NOISY_STRUCTURES:
        batch_cov, Sigma = method_noise(problem, opt, structure)
        fro[structure] = float(np.linalg.norm(Sigma, "fro"))
        loss[structure] = stationary_loss(problem, batch_cov + Sigma, opt.alpha)
        second[structure] = second_order_loss(problem.A, batch_cov + Sigma, opt.alpha)
    return StationaryOrder(
        alpha=opt.alpha,
        alpha_lam_max=opt.alpha * problem.lam_max,
        fro=fro,
        loss=loss,
        second_order=second,
        inversions=_inversions(fro, loss),
    )
