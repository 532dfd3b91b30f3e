"""The Monte-Carlo twin of the quadratic's exact moments: independent chains of noisy SGD.

Simulates x⁺ = x − α (A x + ε + ξ) with Gaussian ε and ξ for several noise settings at once,
sharing the random draws between them (common random numbers), and reports the mean loss
over chains with its standard error. The tests and the quadratic page compare it with the
closed forms of quadratic.py, so the simulation is an independent check of the algebra.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from covnoise.theory.covariance import psd_factor
from covnoise.theory.quadratic import check_step_size


@dataclass(frozen=True, eq=False)
class MonteCarlo:
    """Per-step mean loss over independent chains and its standard error, one row per run."""

    loss_mean: np.ndarray  # (K, T+1)
    loss_se: np.ndarray  # (K, T+1)
    n_chains: int


def _is_diagonal(M: np.ndarray, rtol: float = 1e-12) -> bool:
    """Off-diagonal entries negligible (≤ rtol · largest entry): exact zeros or rounding."""
    scale = float(np.abs(M).max())
    off = M - np.diag(np.diag(M))
    return scale == 0.0 or float(np.abs(off).max()) <= rtol * scale


def _noise_factor(cov: np.ndarray) -> np.ndarray:
    """Row-vector sampling factor: z @ F ~ N(0, cov) for z ~ N(0, I) rows (F = Rᵀ).

    A diagonal covariance gives the vector of standard deviations (z * F, no matmul).
    """
    if _is_diagonal(cov):
        return np.sqrt(np.clip(np.diag(cov), 0.0, None))
    return psd_factor(cov).T


def _apply(z: np.ndarray, F: np.ndarray) -> np.ndarray:
    return z * F if F.ndim == 1 else z @ F


def monte_carlo(
    A: np.ndarray,
    batch_covs: list[np.ndarray],
    injected_covs: list[np.ndarray],
    alpha: float,
    m0: np.ndarray,
    T: int,
    n_chains: int,
    seed: int | tuple[int, ...] = 0,
    basis: np.ndarray | None = None,
) -> MonteCarlo:
    """Simulate x⁺ = x − α (A x + ε + ξ) with n_chains independent chains for K noise settings.

    Run k draws ε ~ N(0, batch_covs[k]) and ξ ~ N(0, injected_covs[k]) separately each step
    (ε = R_ε z₁, ξ = R_ξ z₂, R from eigh). The K runs share z₁, z₂ (common random numbers):
    each run is an exact simulation with independent chains, the draws (the costly part) are
    made once, and differences between runs are less noisy.

    basis: an orthogonal U, e.g. A's eigenvectors. The chains then run on Uᵀx, with Uᵀ A U and
    Uᵀ cov U, which is the same process rotated (the loss is rotation invariant); matrices
    that are diagonal in that basis are applied elementwise, which is much cheaper. With
    basis=None the simulation runs in the original coordinates.
    Returns the mean loss over chains and its standard error std/√n per run and step.
    """
    check_step_size(alpha, float(np.linalg.eigvalsh(A).max()))
    if n_chains < 2:
        raise ValueError(f"need at least 2 chains for a standard error, got {n_chains}")
    if len(batch_covs) != len(injected_covs):
        raise ValueError("batch_covs and injected_covs must have the same length")
    m0 = np.asarray(m0, dtype=np.float64)
    if basis is not None:
        A = basis.T @ A @ basis
        batch_covs = [basis.T @ c @ basis for c in batch_covs]
        injected_covs = [basis.T @ c @ basis for c in injected_covs]
        m0 = basis.T @ m0
    rng = np.random.default_rng(seed)
    P = A.shape[0]
    K = len(batch_covs)
    a_diag = np.diag(A).copy() if _is_diagonal(A) else None
    F_eps = [_noise_factor(c) for c in batch_covs]
    F_xi = [None if not np.any(c) else _noise_factor(c) for c in injected_covs]
    x = np.broadcast_to(m0, (K, n_chains, P)).copy()
    mean = np.empty((K, T + 1))
    se = np.empty((K, T + 1))
    # The products are small (n_chains × P by P × P): one BLAS thread is fastest, and
    # threaded BLAS on a busy 2-core machine was measured up to 8× slower.
    with threadpool_limits(limits=1, user_api="blas"):
        _simulate(x, a_diag, A, F_eps, F_xi, alpha, T, rng, mean, se)
    return MonteCarlo(loss_mean=mean, loss_se=se, n_chains=n_chains)


def _simulate(x, a_diag, A, F_eps, F_xi, alpha, T, rng, mean, se) -> None:
    """The Monte-Carlo loop of monte_carlo: updates x in place, fills mean and se."""
    K, n_chains, P = x.shape
    root_n = np.sqrt(n_chains)
    for k in range(T + 1):
        g = x * a_diag if a_diag is not None else (x.reshape(-1, P) @ A).reshape(x.shape)
        losses = 0.5 * np.einsum("knp,knp->kn", g, x)
        mean[:, k] = losses.mean(axis=1)
        se[:, k] = losses.std(axis=1, ddof=1) / root_n
        if k == T:
            break
        z1 = rng.standard_normal((n_chains, P))
        z2 = rng.standard_normal((n_chains, P)) if any(F is not None for F in F_xi) else None
        for j in range(K):
            g[j] += _apply(z1, F_eps[j])
            if F_xi[j] is not None:
                g[j] += _apply(z2, F_xi[j])
        x -= alpha * g
