"""The 2-D noise geometry of one SGD step (the paper's Figure 1).

Two-weight linear regression with correlated inputs: x ~ N(0, D R D), R = [[1, ρ], [ρ, 1]],
D = diag(scales), y = xᵀw* + label noise, per-example loss l_n(θ) = ½ (x_nᵀθ − y_n)². At a fixed
θ the per-example gradients g_n = x_n (x_nᵀθ − y_n) give the gradient covariance
C = (1/N) Σ (g_n − ḡ)(g_n − ḡ)ᵀ, and the one-step updates θ⁺ = θ − α·(gradient estimate) form a
cloud for each method:

- SGD with batch M: the mean gradient of a minibatch drawn without replacement from the data,
- LB + isotropic / full Fisher / diagonal Fisher: a minibatch of L drawn the same way plus
  injected noise ξ ~ N(0, Σ), Σ = c · K from the covariance table (covnoise.theory.covariance)
  with K = (tr C / 2) I, C or diag(C); the isotropic cloud may instead take Σ = σ² I with a
  chosen σ.

Each cloud's exact covariance is α² Σ_total with Σ_total = f_B C / B + Σ, where
f_B = (N − B)/(N − 1) is the finite-population factor of sampling without replacement.
See docs/design.md, "Two-dimensional geometry".
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from covnoise.theory.covariance import psd_factor, scale_factor, structure_matrix

#: "sgd" is batch M; the others are batch L plus the structure of the same name.
METHODS: tuple[str, ...] = ("sgd", "isotropic", "full", "diag")
NOISY_METHODS: tuple[str, ...] = METHODS[1:]
ISO_MODES: tuple[str, ...] = ("sigma", "trace")


@dataclass(frozen=True, eq=False)
class RegressionData:
    """Inputs X (N × 2), targets y (N,), and the true weights w*."""

    X: np.ndarray
    y: np.ndarray
    w_star: np.ndarray

    @property
    def N(self) -> int:
        return int(self.X.shape[0])


def make_data(
    N: int = 1000,
    rho: float = 0.8,
    scales: tuple[float, float] = (1.0, 0.5),
    w_star: tuple[float, float] = (1.0, -0.5),
    label_noise: float = 0.5,
    seed: int = 0,
) -> RegressionData:
    """Draw the correlated-input regression data set."""
    if N < 2:
        raise ValueError(f"need at least 2 examples, got N={N}")
    if not -1.0 < rho < 1.0:
        raise ValueError(f"rho must be in (−1, 1), got {rho}")
    rng = np.random.default_rng(seed)
    D = np.diag(scales)
    cov = D @ np.array([[1.0, rho], [rho, 1.0]]) @ D
    X = rng.multivariate_normal(np.zeros(2), cov, size=N)
    w = np.asarray(w_star, dtype=np.float64)
    y = X @ w + label_noise * rng.standard_normal(N)
    return RegressionData(X=X, y=y, w_star=w)


def per_example_gradients(data: RegressionData, theta: np.ndarray) -> np.ndarray:
    """g_n = x_n (x_nᵀθ − y_n), shape (N, 2)."""
    residual = data.X @ np.asarray(theta, dtype=np.float64) - data.y
    return data.X * residual[:, None]


def gradient_covariance(G: np.ndarray) -> np.ndarray:
    """C = (1/N) Σ (g_n − ḡ)(g_n − ḡ)ᵀ (population covariance of the data's gradients)."""
    centred = G - G.mean(axis=0)
    return centred.T @ centred / G.shape[0]


def loss_grid(data: RegressionData, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Training loss ½ mean (xᵀθ − y)² on the grid θ = (xs[j], ys[i]); shape (len(ys), len(xs)).

    Uses L(θ) = ½ θᵀHθ − bᵀθ + ½ mean y², H = XᵀX/N, b = Xᵀy/N.
    """
    H = data.X.T @ data.X / data.N
    b = data.X.T @ data.y / data.N
    T0, T1 = np.meshgrid(xs, ys)
    quad = H[0, 0] * T0**2 + 2.0 * H[0, 1] * T0 * T1 + H[1, 1] * T1**2
    return 0.5 * quad - (b[0] * T0 + b[1] * T1) + 0.5 * float(np.mean(data.y**2))


def covariance_ellipse(
    mean: np.ndarray, cov: np.ndarray, n_std: float = 2.0, n_points: int = 121
) -> np.ndarray:
    """Points (n_points × 2) of the ellipse {mean + n_std · R u : ‖u‖ = 1}, R Rᵀ = cov."""
    R = psd_factor(cov)
    t = np.linspace(0.0, 2.0 * np.pi, n_points)
    circle = np.stack([np.cos(t), np.sin(t)])
    return np.asarray(mean) + n_std * (R @ circle).T


def fpc(N: int, B: int) -> float:
    """(N − B)/(N − 1): without replacement, Cov(batch mean) = fpc · C / B."""
    return (N - B) / (N - 1)


def batch_means(G: np.ndarray, B: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """n means of B rows of G drawn without replacement (an independent batch each), (n, 2).

    Floyd's algorithm, vectorised over the n batches: for j = N−B, …, N−1 draw t uniform in
    [0, j] and take t, or j if t is already taken. Every B-subset is equally likely, and the
    cost is O(n·B) draws instead of the O(n·N) of shuffling every row.
    """
    N = G.shape[0]
    if not 1 <= B <= N:
        raise ValueError(f"batch size must be in [1, N={N}], got {B}")
    taken = np.zeros((n, N), dtype=bool)
    idx = np.empty((n, B), dtype=np.intp)
    rows = np.arange(n)
    for col, j in enumerate(range(N - B, N)):
        t = rng.integers(0, j + 1, size=n)
        pick = np.where(taken[rows, t], j, t)
        taken[rows, pick] = True
        idx[:, col] = pick
    return G[idx].mean(axis=1)


@dataclass(frozen=True)
class GeometrySettings:
    """Everything the geometry page controls; plain values so it caches and hashes well."""

    N: int = 1000
    rho: float = 0.8
    scale2: float = 0.5
    label_noise: float = 0.5
    theta: tuple[float, float] = (0.2, 0.3)
    alpha: float = 0.5
    M: int = 10
    L: int = 250
    s: float = 1.0
    sigma_iso: float = 0.1
    iso_mode: str = "sigma"
    n_samples: int = 1000
    n_std: float = 2.0
    seed: int = 0


@dataclass(frozen=True, eq=False)
class Cloud:
    """One method's one-step updates and their exact distribution."""

    method: str
    samples: np.ndarray  # (n, 2) updated parameters θ⁺
    mean: np.ndarray  # (2,) exact E[θ⁺] = θ − α ḡ
    target_cov: np.ndarray  # (2, 2) exact Cov(θ⁺) = α² Σ_total
    noise_cov: np.ndarray  # (2, 2) Σ_total: minibatch + injected gradient noise
    injected_cov: np.ndarray  # (2, 2) Σ (zero for SGD)
    ellipse: np.ndarray  # (k, 2) n_std ellipse of target_cov around mean


@dataclass(frozen=True, eq=False)
class Geometry:
    """The data, the point θ, its gradient statistics and the four clouds."""

    data: RegressionData
    theta: np.ndarray
    grad_mean: np.ndarray
    C: np.ndarray
    clouds: dict[str, Cloud]


def injected_covariance(
    C: np.ndarray, method: str, c: float, sigma_iso: float, iso_mode: str
) -> np.ndarray:
    """Σ of a large-batch method: c · K from the covariance table, or σ² I (iso_mode "sigma")."""
    if method == "isotropic" and iso_mode not in ISO_MODES:
        raise ValueError(f"unknown isotropic mode {iso_mode!r}; choose one of {ISO_MODES}")
    if method == "isotropic" and iso_mode == "sigma":
        return sigma_iso**2 * np.eye(2)
    if method not in NOISY_METHODS:
        raise ValueError(f"no injected noise for method {method!r}")
    return c * structure_matrix(C, method)  # type: ignore[arg-type]


def one_step_clouds(settings: GeometrySettings) -> Geometry:
    """Draw the four one-step clouds at settings.theta, with their exact targets.

    The three large-batch clouds share their minibatch draws (common random numbers) and
    differ only in the injected noise, which is drawn independently per cloud.
    """
    cfg = settings
    if not 1 <= cfg.M <= cfg.L <= cfg.N:
        raise ValueError(f"need 1 ≤ M ≤ L ≤ N, got M={cfg.M}, L={cfg.L}, N={cfg.N}")
    if cfg.alpha <= 0 or cfg.s < 0 or cfg.sigma_iso < 0 or cfg.n_samples < 2:
        raise ValueError("need α > 0, s ≥ 0, σ ≥ 0 and at least 2 samples")
    data = make_data(cfg.N, cfg.rho, (1.0, cfg.scale2), label_noise=cfg.label_noise, seed=cfg.seed)
    theta = np.asarray(cfg.theta, dtype=np.float64)
    G = per_example_gradients(data, theta)
    g_bar = G.mean(axis=0)
    C = gradient_covariance(G)
    c = scale_factor(cfg.M, cfg.L, cfg.s)
    mean = theta - cfg.alpha * g_bar
    rng = np.random.default_rng([cfg.seed, 1])
    n = cfg.n_samples

    clouds: dict[str, Cloud] = {}
    sgd_noise = fpc(cfg.N, cfg.M) * C / cfg.M
    clouds["sgd"] = _cloud(
        "sgd", theta - cfg.alpha * batch_means(G, cfg.M, n, rng), mean, cfg, sgd_noise, None
    )
    lb_means = batch_means(G, cfg.L, n, rng)
    lb_noise = fpc(cfg.N, cfg.L) * C / cfg.L
    for method in NOISY_METHODS:
        Sigma = injected_covariance(C, method, c, cfg.sigma_iso, cfg.iso_mode)
        xi = rng.standard_normal((n, 2)) @ psd_factor(Sigma).T
        samples = theta - cfg.alpha * (lb_means + xi)
        clouds[method] = _cloud(method, samples, mean, cfg, lb_noise + Sigma, Sigma)
    return Geometry(data=data, theta=theta, grad_mean=g_bar, C=C, clouds=clouds)


def _cloud(
    method: str,
    samples: np.ndarray,
    mean: np.ndarray,
    settings: GeometrySettings,
    noise_cov: np.ndarray,
    injected: np.ndarray | None,
) -> Cloud:
    target = settings.alpha**2 * noise_cov
    return Cloud(
        method=method,
        samples=samples,
        mean=mean,
        target_cov=target,
        noise_cov=noise_cov,
        injected_cov=np.zeros((2, 2)) if injected is None else injected,
        ellipse=covariance_ellipse(mean, target, settings.n_std),
    )


def view_window(geom: Geometry, pad: float = 0.15) -> tuple[tuple[float, float], ...]:
    """A square window holding θ, every ellipse and 99% of every cloud, padded."""
    pts = [geom.theta[None, :]]
    for cloud in geom.clouds.values():
        pts.append(cloud.ellipse)
        pts.append(np.percentile(cloud.samples, [0.5, 99.5], axis=0))
    allp = np.concatenate(pts)
    lo, hi = allp.min(axis=0), allp.max(axis=0)
    centre = 0.5 * (lo + hi)
    half = 0.5 * float((hi - lo).max()) * (1.0 + 2.0 * pad) + 1e-9
    return (centre[0] - half, centre[0] + half), (centre[1] - half, centre[1] + half)


def geometry_frames(geom: Geometry, grid: int = 60) -> dict[str, pd.DataFrame]:
    """Tidy tables for plotting: samples, ellipses, points, contours and a summary.

    samples/ellipses: (method, x, y); points: (method, kind ∈ {start, mean}, x, y);
    contours: (x, y, loss) on a grid × grid lattice over view_window; summary: per method
    tr Σ and ‖Σ‖_F of the total and the injected gradient-noise covariance.
    """
    (x0, x1), (y0, y1) = view_window(geom)
    xs, ys = np.linspace(x0, x1, grid), np.linspace(y0, y1, grid)
    Z = loss_grid(geom.data, xs, ys)
    X, Y = np.meshgrid(xs, ys)
    samples, ellipses, points, summary = [], [], [], []
    for method, cloud in geom.clouds.items():
        samples.append(
            pd.DataFrame({"method": method, "x": cloud.samples[:, 0], "y": cloud.samples[:, 1]})
        )
        ellipses.append(
            pd.DataFrame({"method": method, "x": cloud.ellipse[:, 0], "y": cloud.ellipse[:, 1]})
        )
        points.append(
            pd.DataFrame(
                {
                    "method": method,
                    "kind": ["start", "mean"],
                    "x": [geom.theta[0], cloud.mean[0]],
                    "y": [geom.theta[1], cloud.mean[1]],
                }
            )
        )
        summary.append(
            {
                "method": method,
                "trace": float(np.trace(cloud.noise_cov)),
                "fro": float(np.linalg.norm(cloud.noise_cov, "fro")),
                "injected_trace": float(np.trace(cloud.injected_cov)),
                "injected_fro": float(np.linalg.norm(cloud.injected_cov, "fro")),
            }
        )
    return {
        "samples": pd.concat(samples, ignore_index=True),
        "ellipses": pd.concat(ellipses, ignore_index=True),
        "points": pd.concat(points, ignore_index=True),
        "contours": pd.DataFrame({"x": X.ravel(), "y": Y.ravel(), "loss": Z.ravel()}),
        "summary": pd.DataFrame(summary),
    }
