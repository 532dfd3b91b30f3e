"""Exact moments of noisy SGD on a convex quadratic, and their Monte-Carlo twin.

Loss L(θ) = ½ (θ − θ*)ᵀ A (θ − θ*), A = Q Λ Qᵀ, per-example gradient covariance C = σ² A.
All quantities are in offset coordinates x = θ − θ*, so the update

    x⁺ = x − α (A x + ε + ξ),   Cov(ε) = C / B (minibatch noise),   Cov(ξ) = Σ (injected)

is linear and its mean and covariance evolve in closed form. Large-batch runs use B = L and
Σ = c · K with c = s (1/M − 1/L); the small-batch reference is B = M with no ξ.
See DESIGN.md, "The convex quadratic".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from scipy.linalg import expm, logm, schur, solve_discrete_lyapunov
from threadpoolctl import threadpool_limits

Spectrum = Literal["power", "two-cluster"]
Structure = Literal["none", "isotropic", "diag", "full"]

SPECTRA: tuple[str, ...] = ("power", "two-cluster")
STRUCTURES: tuple[str, ...] = ("none", "isotropic", "diag", "full")
#: "sgd-M" is small-batch SGD at the target batch M; the others are batch L plus a structure.
METHODS: tuple[str, ...] = ("sgd-M", *STRUCTURES)
NOISY_STRUCTURES: tuple[str, ...] = ("isotropic", "diag", "full")


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
# Noise
# --------------------------------------------------------------------------------------------


def scale_factor(M: int, L: int, s: float = 1.0) -> float:
    """c = s (1/M − 1/L): the variance a batch of L misses relative to a batch of M."""
    if not 1 <= M <= L:
        raise ValueError(f"need 1 ≤ M ≤ L, got M={M}, L={L}")
    if s < 0:
        raise ValueError(f"the multiplier s must be non-negative, got {s}")
    return s * (1.0 / M - 1.0 / L)


def structure_matrix(C: np.ndarray, structure: Structure) -> np.ndarray:
    """K for a structure: 0, (tr C / P) I, diag(C) or C. All non-zero ones share tr K = tr C."""
    P = C.shape[0]
    if structure == "none":
        return np.zeros_like(C)
    if structure == "isotropic":
        return (np.trace(C) / P) * np.eye(P)
    if structure == "diag":
        return np.diag(np.diag(C))
    if structure == "full":
        return C.copy()
    raise ValueError(f"unknown structure {structure!r}; choose one of {STRUCTURES}")


def noise_covariance(C: np.ndarray, structure: Structure, c: float) -> np.ndarray:
    """Injected covariance Σ = c · K."""
    return c * structure_matrix(C, structure)


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


# --------------------------------------------------------------------------------------------
# Monte Carlo
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class MonteCarlo:
    """Per-step mean loss over independent chains and its standard error, one row per run."""

    loss_mean: np.ndarray  # (K, T+1)
    loss_se: np.ndarray  # (K, T+1)
    n_chains: int


def sqrt_factor(cov: np.ndarray) -> np.ndarray:
    """R with R Rᵀ = cov for a symmetric PSD matrix (eigh; tolerates singular covariances)."""
    w, V = np.linalg.eigh(0.5 * (cov + cov.T))
    return V * np.sqrt(np.clip(w, 0.0, None))


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
    return sqrt_factor(cov).T


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


# --------------------------------------------------------------------------------------------
# Summaries for the app (tidy DataFrames)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QuadraticSettings:
    """Everything the quadratic page controls; plain values so it caches and hashes well."""

    P: int = 20
    spectrum: str = "power"
    exponent: float = 1.0
    low: float = 0.05
    rotation: float = 1.0
    sigma: float = 1.0
    alpha: float = 1.0
    L: int = 1000
    M: int = 10
    s: float = 1.0
    T: int = 200
    n_chains: int = 500
    seed: int = 0
    init_scale: float = 1.0

    def problem(self) -> Quadratic:
        return make_problem(
            self.P,
            self.spectrum,  # type: ignore[arg-type]
            exponent=self.exponent,
            low=self.low,
            rotation=self.rotation,
            sigma=self.sigma,
            seed=self.seed,
        )

    def optimizer(self) -> Optimizer:
        return Optimizer(alpha=self.alpha, L=self.L, M=self.M, s=self.s)


def loss_curves(
    problem: Quadratic,
    opt: Optimizer,
    m0: np.ndarray,
    T: int,
    n_chains: int = 0,
    seed: int = 0,
    methods: tuple[str, ...] = METHODS,
) -> pd.DataFrame:
    """Long table (method, step, exact, mc_mean, mc_se) of expected-loss curves.

    The Monte-Carlo columns are NaN when n_chains = 0; the methods share their random draws
    (see monte_carlo).
    """
    check_step_size(opt.alpha, problem.lam_max)
    noises = [method_noise(problem, opt, method) for method in methods]
    if n_chains > 0:
        mc = monte_carlo(
            problem.A,
            [b for b, _ in noises],
            [x for _, x in noises],
            opt.alpha,
            m0,
            T,
            n_chains,
            seed,
            basis=problem.Q,
        )
    steps = np.arange(T + 1)
    frames = []
    for i, (method, (batch_cov, injected)) in enumerate(zip(methods, noises, strict=True)):
        exact = expected_loss(problem, batch_cov + injected, opt.alpha, m0, T)
        nan = np.full(T + 1, np.nan)
        frames.append(
            pd.DataFrame(
                {
                    "method": method,
                    "step": steps,
                    "exact": exact,
                    "mc_mean": mc.loss_mean[i] if n_chains > 0 else nan,
                    "mc_se": mc.loss_se[i] if n_chains > 0 else nan,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def noise_table(problem: Quadratic, opt: Optimizer) -> pd.DataFrame:
    """Per structure: tr Σ, ‖Σ‖_F, tr(AΣ), ‖Σ‖_F²/(cσ²) and the stationary loss E[L∞].

    The identity tr(AΣ) = ‖Σ‖_F²/(cσ²) holds for every structure because Σ = cK with K built
    from C = σ²A; the two columns are computed independently so a reader can see it hold.
    """
    check_step_size(opt.alpha, problem.lam_max)
    c = opt.c
    rows = []
    for structure in STRUCTURES:
        batch_cov, Sigma = method_noise(problem, opt, structure)
        fro = float(np.linalg.norm(Sigma, "fro"))
        denom = c * problem.sigma**2
        rows.append(
            {
                "structure": structure,
                "trace": float(np.trace(Sigma)),
                "fro": fro,
                "tr_A_sigma": float(np.sum(problem.A * Sigma)),
                "fro2_over_c_sigma2": fro**2 / denom if denom > 0 else np.nan,
                "stationary_loss": stationary_loss(problem, batch_cov + Sigma, opt.alpha),
            }
        )
    return pd.DataFrame(rows)


def stationary_sweep(
    problem: Quadratic,
    opt: Optimizer,
    multipliers: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0),
) -> pd.DataFrame:
    """Stationary loss of each noisy structure for s = opt.s × multipliers.

    Returns (structure, s, trace, fro, stationary_loss): plotted against tr Σ the structures
    separate at equal trace; against ‖Σ‖_F they are ordered by it.
    """
    check_step_size(opt.alpha, problem.lam_max)
    C = problem.C
    rows = []
    for mult in multipliers:
        s = opt.s * mult
        c = scale_factor(opt.M, opt.L, s)
        for structure in NOISY_STRUCTURES:
            Sigma = noise_covariance(C, structure, c)  # type: ignore[arg-type]
            rows.append(
                {
                    "structure": structure,
                    "s": s,
                    "trace": float(np.trace(Sigma)),
                    "fro": float(np.linalg.norm(Sigma, "fro")),
                    "stationary_loss": stationary_loss(problem, C / opt.L + Sigma, opt.alpha),
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True, eq=False)
class QuadraticReport:
    """All tables the quadratic page shows."""

    curves: pd.DataFrame
    table: pd.DataFrame
    sweep: pd.DataFrame
    stability_limit: float
    lam_max: float
    lam_min: float


#: Monte-Carlo work (chains × steps × P) that keeps a page update well under a second.
MC_BUDGET = 4_000_000


def affordable_chains(P: int, T: int, n_chains: int, budget: int = MC_BUDGET) -> int:
    """n_chains, reduced (to at least 2, or kept at 0) so chains × T × P stays within budget."""
    if n_chains <= 0:
        return 0
    return max(2, min(n_chains, budget // max(1, P * T)))


def report(settings: QuadraticSettings) -> QuadraticReport:
    """Compute every table of the quadratic page; raises UnstableStepError for α ≥ 2/λ_max."""
    lam = eigenvalues(settings.P, settings.spectrum, exponent=settings.exponent, low=settings.low)  # type: ignore[arg-type]
    check_step_size(settings.alpha, float(lam.max()))
    problem = settings.problem()
    opt = settings.optimizer()
    m0 = initial_offset(problem.P, settings.init_scale, settings.seed)
    return QuadraticReport(
        curves=loss_curves(problem, opt, m0, settings.T, settings.n_chains, settings.seed),
        table=noise_table(problem, opt),
        sweep=stationary_sweep(problem, opt),
        stability_limit=problem.stability_limit,
        lam_max=problem.lam_max,
        lam_min=float(problem.eigvals.min()),
    )
