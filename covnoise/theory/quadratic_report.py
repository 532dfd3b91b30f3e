"""The quadratic page's tables: its settings, loss curves, the noise table and the sweep.

Everything here is a tidy DataFrame built from the exact moments (quadratic.py) and, where
asked, their Monte-Carlo twin (montecarlo.py), so the page only draws. QuadraticSettings holds
plain values so the page can cache a report by its settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from covnoise.theory.covariance import (
    NOISY_STRUCTURES,
    STRUCTURES,
    noise_covariance,
    scale_factor,
)
from covnoise.theory.montecarlo import monte_carlo
from covnoise.theory.ordering import StationaryOrder, stationary_order
from covnoise.theory.quadratic import (
    METHODS,
    Optimizer,
    Quadratic,
    check_step_size,
    eigenvalues,
    expected_loss,
    initial_offset,
    make_problem,
    method_noise,
    stationary_loss,
)


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
    separate at equal trace; against ‖Σ‖_F they are ordered by it to second order in α (the
    exact order, the same for every s > 0, is in ordering.py).
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
    """All tables the quadratic page shows, and whether ‖Σ‖_F orders the stationary losses."""

    curves: pd.DataFrame
    table: pd.DataFrame
    sweep: pd.DataFrame
    order: StationaryOrder
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
        order=stationary_order(problem, opt),
        stability_limit=problem.stability_limit,
        lam_max=problem.lam_max,
        lam_min=float(problem.eigvals.min()),
    )
