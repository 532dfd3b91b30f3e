"""Exact moments of noisy SGD on a convex quadratic: the problem and its closed forms.

Loss L(θ) = ½ (θ − θ*)ᵀ A (θ − θ*), A = Q Λ Qᵀ, per-example gradient covariance C = σ² A.
All quantities are in offset coordinates x = θ − θ*, so the update

    x⁺ = x − α (A x + ε + ξ),   Cov(ε) = C / B (minibatch noise),   Cov(ξ) = Σ (injected)

is linear and its mean and covariance evolve in closed form. Large-batch runs use B = L and
Σ = c · K from the covariance table (covnoise.theory.covariance); the small-batch reference
is B = M with no ξ. This module builds the problem (spectra, rotations), gives each method
its noise, and computes the exact mean, covariance and expected loss, transient and
stationary; montecarlo.py simulates the same process, ordering.py states exactly when ‖Σ‖_F
orders the stationary losses, and quadratic_report.py tabulates them all.
See docs/design.md, "The convex quadratic".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.linalg import expm, logm, schur, solve_discrete_lyapunov

from covnoise.theory.covariance import STRUCTURES, noise_covariance, scale_factor

Spectrum = Literal["power", "two-cluster"]

SPECTRA: tuple[str, ...] = ("power", "two-cluster")
#: "sgd-M" is small-batch SGD at the target batch M; the others are batch L plus a structure.
METHODS: tuple[str, ...] = ("sgd-M", *STRUCTURES)


class UnstableStepError(ValueError):
    """The step size is at or beyond the stability limit 2/λ_max: the iterates diverge."""


# --------------------------------------------------------------------------------------------
# The problem
# --------------------------------------------------------------------------------------------


def eigenvalues(
    P: int,
    spectrum: Spectrum = "power",
    *,
    lam_max: float = 1.0,
    exponent: float = 1.0,
    low: float = 0.05,
    top_fraction: float = 0.5,
) -> np.ndarray:
    """Eigenvalues of A in decreasing order.

    "power": λ_i = lam_max · i^(−exponent), i = 1..P (a spread-out, ill-conditioned spectrum).
    "two-cluster": ⌈top_fraction · P⌉ eigenvalues at lam_max, the rest at low · lam_max.
    """
    if P < 1:
        raise ValueError(f"P must be at least 1, got {P}")
    if not lam_max > 0:
        raise ValueError(f"lam_max must be positive, got {lam_max}")
    if spectrum == "power":
        if exponent < 0:
            raise ValueError(f"exponent must be non-negative, got {exponent}")
        return lam_max * np.arange(1, P + 1, dtype=np.float64) ** (-exponent)
    if spectrum == "two-cluster":
        if not 0 < low <= 1:
            raise ValueError(f"low must be in (0, 1], got {low}")
        if not 0 <= top_fraction <= 1:
            raise ValueError(f"top_fraction must be in [0, 1], got {top_fraction}")
        n_top = max(1, int(np.ceil(top_fraction * P)))
        lam = np.full(P, low * lam_max)
        lam[:n_top] = lam_max
        return lam
    raise ValueError(f"unknown spectrum {spectrum!r}; choose one of {SPECTRA}")


def haar_orthogonal(P: int, rng: np.random.Generator) -> np.ndarray:
    """A Haar-random rotation in SO(P): QR of a Gaussian matrix with the sign fix.

    Multiplying column j by sign(R_jj) makes the QR factor Haar on O(P); flipping the first
    column when det = −1 maps it to Haar on SO(P) (and leaves Q Λ Qᵀ unchanged).
    """
    Z = rng.standard_normal((P, P))
    Q, R = np.linalg.qr(Z)
    Q = Q * np.sign(np.diag(R))
    if np.linalg.det(Q) < 0:
        Q[:, 0] = -Q[:, 0]
    return Q


def rotation_matrix(P: int, rotation: float, seed: int = 0) -> np.ndarray:
    """Orthogonal Q(t) moving continuously from I (t = 0) to a Haar rotation Q_1 (t = 1).

    Q(t) = exp(t · log Q_1), the geodesic of SO(P) through Q_1: with the real Schur form
    Q_1 = Z R Zᵀ (R block diagonal with 2×2 rotations by angles θ_j, and 1×1 blocks +1),
    Q(t) = Z R(t) Zᵀ with every angle scaled to t θ_j. Each Q(t) is exactly orthogonal, and
    Q_1 depends only on (P, seed), so varying t alone interpolates between the axis-aligned
    and the fully rotated problem.
    """
    if not 0.0 <= rotation <= 1.0:
        raise ValueError(f"rotation must be in [0, 1], got {rotation}")
    if rotation == 0.0 or P == 1:
        return np.eye(P)
    Q1 = haar_orthogonal(P, np.random.default_rng(seed))
    if rotation == 1.0:
        return Q1
    R, Z = schur(Q1, output="real")
    Rt = np.eye(P)
    i = 0
    while i < P:
        if i + 1 < P and abs(R[i + 1, i]) > 1e-12:  # a 2×2 rotation block
            theta = rotation * np.arctan2(R[i + 1, i], R[i, i])
            c, s = np.cos(theta), np.sin(theta)
            Rt[i : i + 2, i : i + 2] = [[c, -s], [s, c]]
            i += 2
        else:  # a real eigenvalue: +1 stays 1; −1 (probability zero) has no real path
            if R[i, i] < 0:
                X = np.real(logm(Q1))
                return expm(rotation * 0.5 * (X - X.T))
            i += 1
    Qt = Z @ Rt @ Z.T
    return Qt


def build_A(
    P: int,
    spectrum: Spectrum = "power",
    *,
    lam_max: float = 1.0,
    exponent: float = 1.0,
    low: float = 0.05,
    top_fraction: float = 0.5,
    rotation: float = 1.0,
    seed: int = 0,
) -> np.ndarray:
    """A = Q Λ Qᵀ with the chosen spectrum and rotation (see eigenvalues, rotation_matrix)."""
    return make_problem(
        P,
        spectrum,
        lam_max=lam_max,
        exponent=exponent,
        low=low,
        top_fraction=top_fraction,
        rotation=rotation,
        seed=seed,
    ).A


@dataclass(frozen=True, eq=False)
class Quadratic:
    """A convex quadratic with its eigendecomposition A = Q diag(eigvals) Qᵀ and C = σ² A."""

    A: np.ndarray
    eigvals: np.ndarray
    Q: np.ndarray
    sigma: float = 1.0

    @property
    def P(self) -> int:
        return int(self.A.shape[0])

    @property
    def C(self) -> np.ndarray:
        """Per-example gradient covariance σ² A (linear regression with label noise)."""
        return self.sigma**2 * self.A

    @property
    def lam_max(self) -> float:
        return float(self.eigvals.max())

    @property
    def stability_limit(self) -> float:
        """Largest stable step size (exclusive): 2 / λ_max."""
        return 2.0 / self.lam_max


def make_problem(
    P: int,
    spectrum: Spectrum = "power",
    *,
    lam_max: float = 1.0,
    exponent: float = 1.0,
    low: float = 0.05,
    top_fraction: float = 0.5,
    rotation: float = 1.0,
    sigma: float = 1.0,
    seed: int = 0,
) -> Quadratic:
    """Build the quadratic, keeping Q and Λ exactly (no numerical eigendecomposition)."""
    if sigma < 0:
        raise ValueError(f"sigma must be non-negative, got {sigma}")
    lam = eigenvalues(
        P, spectrum, lam_max=lam_max, exponent=exponent, low=low, top_fraction=top_fraction
    )
    Q = rotation_matrix(P, rotation, seed)
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    return Quadratic(A=A, eigvals=lam, Q=Q, sigma=float(sigma))


def initial_offset(P: int, scale: float = 1.0, seed: int = 0) -> np.ndarray:
    """Starting offset m_0 = θ_0 − θ*: a fixed Gaussian vector (independent of A's rotation)."""
    return scale * np.random.default_rng([seed, 1]).standard_normal(P)


# --------------------------------------------------------------------------------------------
# Noise per method
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Optimizer:
    """Step size, batch sizes and noise multiplier of a run (target batch M < large batch L)."""

    alpha: float
    L: int
    M: int
    s: float = 1.0

    @property
    def c(self) -> float:
        return scale_factor(self.M, self.L, self.s)


def method_noise(problem: Quadratic, opt: Optimizer, method: str) -> tuple[np.ndarray, np.ndarray]:
    """(Cov ε, Cov ξ) of one step: minibatch noise C/B and injected noise Σ for a method."""
    C = problem.C
    if method == "sgd-M":
        return C / opt.M, np.zeros_like(C)
    if method in STRUCTURES:
        return C / opt.L, noise_covariance(C, method, opt.c)  # type: ignore[arg-type]
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def check_step_size(alpha: float, lam_max: float) -> None:
    """Raise UnstableStepError unless 0 < α < 2/λ_max."""
    if not alpha > 0:
        raise ValueError(f"the step size must be positive, got {alpha}")
    if alpha * lam_max >= 2.0 * (1.0 - 1e-12):  # at the limit up to rounding: unstable
        raise UnstableStepError(
            f"step size α = {alpha:g} is unstable: α must be below 2/λ_max = "
            f"{2.0 / lam_max:.4g} (here α·λ_max = {alpha * lam_max:.3g} ≥ 2), so the "
            "iterates and the expected loss diverge."
        )


# --------------------------------------------------------------------------------------------
# Exact moments
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Moments:
    """Exact mean m_k, covariance S_k and expected loss E[L_k] for k = 0..T."""

    mean: np.ndarray  # (T+1, P)
    cov: np.ndarray  # (T+1, P, P)
    loss: np.ndarray  # (T+1,)


def moments(
    A: np.ndarray,
    noise: np.ndarray,
    alpha: float,
    m0: np.ndarray,
    T: int,
    S0: np.ndarray | None = None,
) -> Moments:
    """Iterate m⁺ = (I − αA) m, S⁺ = (I − αA) S (I − αA) + α² N in the original basis.

    N = Cov(ε) + Cov(ξ) is the total gradient-noise covariance. O(T P³): the reference
    implementation; expected_loss is the fast eigenbasis form of the same quantity.
    """
    check_step_size(alpha, float(np.linalg.eigvalsh(A).max()))
    P = A.shape[0]
    B = np.eye(P) - alpha * A
    Q = alpha**2 * noise
    mean = np.empty((T + 1, P))
    cov = np.empty((T + 1, P, P))
    mean[0] = m0
    cov[0] = np.zeros((P, P)) if S0 is None else S0
    for k in range(T):
        mean[k + 1] = B @ mean[k]
        cov[k + 1] = B @ cov[k] @ B.T + Q
    loss = 0.5 * np.einsum("ki,ij,kj->k", mean, A, mean) + 0.5 * np.einsum("ij,kji->k", A, cov)
    return Moments(mean=mean, cov=cov, loss=loss)


def _eig_diag(problem: Quadratic, M: np.ndarray) -> np.ndarray:
    """Diagonal of Qᵀ M Q (M expressed in A's eigenbasis)."""
    return np.einsum("ji,jk,ki->i", problem.Q, M, problem.Q)


def expected_loss(
    problem: Quadratic, noise: np.ndarray, alpha: float, m0: np.ndarray, T: int
) -> np.ndarray:
    """E[L_k], k = 0..T, from a deterministic start m0, in closed form in A's eigenbasis.

    With d_i = 1 − αλ_i, n = diag(Qᵀ N Q) and m' = Qᵀ m0 each coordinate decouples:
    E[L_k] = ½ Σ_i λ_i (d_i^{2k} m'_i² + α² n_i (1 − d_i^{2k}) / (1 − d_i²)).  O(T P).
    """
    check_step_size(alpha, problem.lam_max)
    lam = problem.eigvals
    n = _eig_diag(problem, noise)
    m = problem.Q.T @ m0
    one_minus_d2 = alpha * lam * (2.0 - alpha * lam)  # 1 − d², exact for small αλ
    k = np.arange(T + 1)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_d2 = np.log1p(-one_minus_d2)  # −inf where αλ = 1 (d = 0)
        k_log_d2 = np.where(k == 0, 0.0, k * log_d2)
    decay = np.exp(k_log_d2)  # d^{2k}, with 0⁰ = 1
    var = alpha**2 * n * (-np.expm1(k_log_d2)) / one_minus_d2
    return 0.5 * ((decay * m**2 + var) @ lam)


def stationary_covariance(A: np.ndarray, noise: np.ndarray, alpha: float) -> np.ndarray:
    """S∞ solving the discrete Lyapunov equation S = (I − αA) S (I − αA) + α² N (scipy)."""
    check_step_size(alpha, float(np.linalg.eigvalsh(A).max()))
    B = np.eye(A.shape[0]) - alpha * A
    S = solve_discrete_lyapunov(B, alpha**2 * noise)
    return 0.5 * (S + S.T)


def stationary_covariance_eig(problem: Quadratic, noise: np.ndarray, alpha: float) -> np.ndarray:
    """S∞ in closed form: in A's eigenbasis S'_ij = α² N'_ij / (1 − d_i d_j)."""
    check_step_size(alpha, problem.lam_max)
    Q = problem.Q
    d = 1.0 - alpha * problem.eigvals
    Np = Q.T @ noise @ Q
    Sp = alpha**2 * Np / (1.0 - np.outer(d, d))
    return Q @ Sp @ Q.T


def stationary_loss(problem: Quadratic, noise: np.ndarray, alpha: float) -> float:
    """E[L∞] = Σ_i α N'_ii / (2 (2 − α λ_i)) with N' the total noise in A's eigenbasis."""
    check_step_size(alpha, problem.lam_max)
    n = _eig_diag(problem, noise)
    return float(np.sum(alpha * n / (2.0 * (2.0 - alpha * problem.eigvals))))


def loss_of_covariance(A: np.ndarray, S: np.ndarray) -> float:
    """½ tr(A S): the expected loss of a zero-mean distribution with covariance S."""
    return 0.5 * float(np.sum(A * S))
