"""When ‖Σ‖_F orders the quadratic's stationary losses: a seeded search over problems.

Several hundred instances (power, two-cluster, near-degenerate-top, uniform and log-uniform
spectra; Haar and partial rotations; step sizes up to the stability edge) check the exact
statements of covnoise/theory/ordering.py: full ≥ diag (and ≥ isotropic) always; the
second-order expansion is off by Θ(α³); the sign of diag_iso_gap says exactly when diag noise
beats isotropic noise; near the edge that sign is the sign of edge_covariance. References:
the eigenbasis criterion written out here, scipy's discrete Lyapunov solver on the dense
recursion, and tr(A²Σ')/16 for the cubic term.
"""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy.linalg import solve_discrete_lyapunov

from covnoise.theory import covariance as cv
from covnoise.theory import ordering as o
from covnoise.theory import quadratic as q
from covnoise.theory import quadratic_report as qr

FRACTIONS = (0.05, 0.3, 0.6, 0.85, 0.95, 0.99, 0.999, 0.9999)  # α as a fraction of 2/λ_max
#: Problems per family; λ₂ near λ_max is where diag most often beats isotropic.
FAMILIES = {"power": 16, "two-cluster": 10, "top-pair": 60, "uniform": 12, "log-uniform": 10}
AUDIT = qr.QuadraticSettings(
    P=3, spectrum="power", exponent=0.5, rotation=1.0, seed=56, alpha=1.8, L=1000, M=10
)
SWAP = ("isotropic", "diag")


@dataclass(frozen=True)
class Instance:
    family: str
    problem: q.Quadratic
    rotation: float
    opt: q.Optimizer


def _custom(lam: np.ndarray, rotation: float, seed: int, sigma: float) -> q.Quadratic:
    Q = q.rotation_matrix(len(lam), rotation, seed)
    A = (Q * lam) @ Q.T
    return q.Quadratic(A=0.5 * (A + A.T), eigvals=lam, Q=Q, sigma=sigma)


def _problem(family: str, rng: np.random.Generator, seed: int) -> tuple[q.Quadratic, float]:
    P = int(rng.integers(2, 9))
    rotation = float(rng.choice([1.0, 1.0, 0.2, 0.5, 0.8]))
    sigma = float(rng.uniform(0.3, 2.0))
    if family == "power":
        exponent = float(rng.choice([0.1, 0.25, 0.5, 1.0, 2.0]))
        pr = q.make_problem(
            P, "power", exponent=exponent, rotation=rotation, sigma=sigma, seed=seed
        )
    elif family == "two-cluster":
        low, top = float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.1, 0.9))
        pr = q.make_problem(
            P, "two-cluster", low=low, top_fraction=top, rotation=rotation, sigma=sigma, seed=seed
        )
    elif family == "top-pair":  # λ₂ close to λ_max, mostly rotated fully
        P = int(rng.integers(3, 5))
        rotation = 0.8 if rotation == 0.2 else rotation
        rest = rng.uniform(0.02, 0.3, P - 2)
        lam = np.r_[1.0, rng.uniform(0.8, 0.999), np.sort(rest)[::-1]]
        pr = _custom(lam, rotation, seed, sigma)
    elif family == "uniform":
        pr = _custom(np.sort(rng.uniform(0.01, 2.0, P))[::-1], rotation, seed, sigma)
    else:  # log-uniform over four decades
        pr = _custom(np.sort(10 ** rng.uniform(-4, 0, P))[::-1], rotation, seed, sigma)
    return pr, rotation


def _search() -> list[Instance]:
    rng = np.random.default_rng(2020)
    out = []
    for f, (family, count) in enumerate(FAMILIES.items()):
        for k in range(count):
            pr, rotation = _problem(family, rng, seed=100 * f + k)
            L = int(rng.choice([100, 1000]))
            M = int(rng.choice([1, 8, 32]))
            s = float(rng.choice([0.5, 1.0, 3.0]))
            for frac in FRACTIONS:
                opt = q.Optimizer(alpha=frac * pr.stability_limit, L=L, M=M, s=s)
                out.append(Instance(family, pr, rotation, opt))
    return out


SEARCH = _search()


def _distinct(lam: np.ndarray) -> int:
    return len(np.unique(np.round(lam / lam.max(), 12)))


def _lyapunov_loss(A: np.ndarray, noise: np.ndarray, alpha: float) -> float:
    """½ tr(A S), S solving S = (I − αA) S (I − αA) + α² N with scipy (dense)."""
    B = np.eye(A.shape[0]) - alpha * A
    S = solve_discrete_lyapunov(B, alpha**2 * noise)
    return 0.5 * float(np.sum(A * S))


def _noise(inst: Instance, structure: str) -> np.ndarray:
    C = inst.problem.C
    return C / inst.opt.L + cv.noise_covariance(C, structure, inst.opt.c)  # type: ignore[arg-type]


def test_search_is_large_and_reaches_the_stability_edge():
    assert len(SEARCH) >= 500
    edge = [i.opt.alpha * i.problem.lam_max for i in SEARCH]
    assert max(edge) == pytest.approx(2 * 0.9999)
    assert {i.family for i in SEARCH} == set(FAMILIES)
    assert {i.rotation for i in SEARCH} >= {1.0, 0.2, 0.5, 0.8}


# ---------------------------------------------------------------- (a) full ≥ diag, exactly


def test_full_is_never_below_diag_or_isotropic():
    for inst in SEARCH:
        order = o.stationary_order(inst.problem, inst.opt)
        loss = order.loss
        tol = 1e-12 * loss["full"]
        assert loss["full"] >= loss["diag"] - tol, inst
        assert loss["full"] >= loss["isotropic"] - tol, inst
        assert not {("diag", "full"), ("isotropic", "full")} & set(order.inversions)
        if inst.rotation == 1.0 and _distinct(inst.problem.eigvals) > 1:
            # A is not diagonal: the inequality is strict
            assert loss["full"] - loss["diag"] > 1e-9 * loss["full"], inst


def test_full_minus_diag_is_the_summed_covariance_of_the_proof():
    # full − diag = cσ² Σ_j Cov_j(λ, f(λ)), row j of D = Q∘Q a distribution over eigenvalues
    for inst in SEARCH[::5]:
        pr, opt = inst.problem, inst.opt
        D = pr.Q**2
        lam = pr.eigvals
        f = opt.alpha / (2 * (2 - opt.alpha * lam))
        cov = D @ (lam * f) - (D @ lam) * (D @ f)
        assert (cov >= -1e-12 * np.max(lam * f)).all()
        order = o.stationary_order(pr, opt)
        gap = order.loss["full"] - order.loss["diag"]
        ref = opt.c * pr.sigma**2 * cov.sum()
        assert gap == pytest.approx(ref, rel=1e-7, abs=1e-13 * order.loss["full"])


def test_exact_losses_match_an_independent_lyapunov_solve():
    checked = 0
    for inst in SEARCH[::4]:
        if inst.opt.alpha * inst.problem.lam_max > 2 * 0.99:
            continue
        order = o.stationary_order(inst.problem, inst.opt)
        for structure in cv.NOISY_STRUCTURES:
            ref = _lyapunov_loss(inst.problem.A, _noise(inst, structure), inst.opt.alpha)
            assert order.loss[structure] == pytest.approx(ref, rel=1e-8)
        checked += 1
    assert checked >= 100


# ---------------------------------------------------------------- (b) second order in α


def test_second_order_expansion_is_off_by_order_alpha_cubed():
    for inst in SEARCH[:: len(FRACTIONS) * 3]:  # one instance per problem, every third problem
        pr = inst.problem
        A = pr.A
        for structure in cv.NOISY_STRUCTURES:
            N = _noise(inst, structure)
            cubic = float(np.trace(A @ A @ N)) / 16  # the limit of the remainder / α³
            ratios = []
            for frac in (0.5, 0.1, 0.02, 0.004):
                alpha = frac * pr.stability_limit
                second = alpha / 4 * np.trace(N) + alpha**2 / 8 * np.trace(A @ N)
                assert o.second_order_loss(A, N, alpha) == pytest.approx(second, rel=1e-12)
                ratio = (q.stationary_loss(pr, N, alpha) - second) / alpha**3
                upper = cubic / (1 - alpha * pr.lam_max / 2)
                assert cubic * (1 - 1e-6) <= ratio <= upper * (1 + 1e-6)
                ratios.append(ratio)
            assert ratios[-1] == pytest.approx(cubic, rel=0.01)  # bounded, and converging


def test_stationary_order_reports_the_second_order_losses():
    inst = SEARCH[10]
    order = o.stationary_order(inst.problem, inst.opt)
    for structure in cv.NOISY_STRUCTURES:
        N = _noise(inst, structure)
        a = inst.opt.alpha
        ref = a / 4 * np.trace(N) + a**2 / 8 * np.trace(inst.problem.A @ N)
        assert order.second_order[structure] == pytest.approx(ref, rel=1e-12)
    # the second-order losses are ordered by ‖Σ‖_F, always
    assert order.second_order["isotropic"] <= order.second_order["diag"]
    assert order.second_order["diag"] <= order.second_order["full"]


# ---------------------------------------------------------------- (c) the inversion criterion


def _eigenbasis_criterion(inst: Instance) -> float:
    """Σ_i w_i (K_diag − K_iso)'_ii, w_i = α/(2(2 − αλ_i)), in A's eigenbasis."""
    pr, alpha = inst.problem, inst.opt.alpha
    C = pr.C
    K = np.diag(np.diag(C)) - np.trace(C) / pr.P * np.eye(pr.P)
    w = alpha / (2 * (2 - alpha * pr.eigvals))
    return float(np.sum(w * np.diag(pr.Q.T @ K @ pr.Q)))


def test_criterion_predicts_exactly_when_diag_beats_isotropic():
    inverted, ties = [], 0
    for inst in SEARCH:
        pr, opt = inst.problem, inst.opt
        order = o.stationary_order(pr, opt)
        gap = o.diag_iso_gap(pr.A, opt.alpha)
        loss = order.loss
        scale = loss["full"]
        assert _eigenbasis_criterion(inst) == pytest.approx(
            pr.sigma**2 * gap, rel=1e-7, abs=1e-13 * scale
        )
        diff = loss["diag"] - loss["isotropic"]
        assert diff == pytest.approx(opt.c * pr.sigma**2 * gap, rel=1e-7, abs=1e-13 * scale)
        if abs(diff) <= 1e-9 * scale:  # a tie only where diag A is constant (e.g. A = λI)
            assert np.ptp(np.diag(pr.A)) < 1e-12 and order.agrees, inst
            ties += 1
            continue
        assert (gap < 0) == (diff < 0) == (SWAP in order.inversions), inst
        assert set(order.inversions) <= {SWAP}
        assert order.agrees == (gap >= 0)
        if gap < 0:
            inverted.append(inst)
    # the search finds both outcomes, and inversions only where the theory allows them
    assert 15 <= len(inverted) <= len(SEARCH) - 15
    assert ties <= len(SEARCH) // 20
    for inst in inverted:
        assert _distinct(inst.problem.eigvals) >= 3
        assert inst.problem.P >= 3 and inst.family != "two-cluster"
        assert inst.opt.alpha * inst.problem.lam_max > 1.0


def test_inversions_agree_with_the_lyapunov_solve():
    checked = 0
    for inst in SEARCH:
        if inst.opt.alpha * inst.problem.lam_max > 2 * 0.99 or inst.problem.P < 3:
            continue
        iso = _lyapunov_loss(inst.problem.A, _noise(inst, "isotropic"), inst.opt.alpha)
        diag = _lyapunov_loss(inst.problem.A, _noise(inst, "diag"), inst.opt.alpha)
        if abs(diag - iso) < 1e-7 * iso:
            continue  # below the solver's accuracy
        gap = o.diag_iso_gap(inst.problem.A, inst.opt.alpha)
        assert (diag < iso) == (gap < 0), inst
        checked += 1
    assert checked >= 150


def test_two_distinct_eigenvalues_never_invert():
    rng = np.random.default_rng(7)
    for seed in range(40):
        P = int(rng.integers(2, 10))
        pr = q.make_problem(
            P, "two-cluster", low=float(rng.uniform(0.01, 0.99)), rotation=1.0, seed=seed
        )
        for frac in (0.5, 0.9, 0.999, 1 - 1e-7):
            assert o.diag_iso_gap(pr.A, frac * pr.stability_limit) >= 0
        pr2 = q.make_problem(2, "power", exponent=float(rng.uniform(0.1, 3)), seed=seed)
        assert o.diag_iso_gap(pr2.A, 0.9999 * pr2.stability_limit) >= 0
        assert o.edge_covariance(pr) >= -1e-15 and o.edge_covariance(pr2) >= -1e-15


def test_sign_at_the_stability_edge_is_the_edge_covariance():
    # (2 − αλ_max)(2/α) gap → P · Cov_j(A_jj, Π_jj) as αλ_max → 2
    seen = set()
    for inst in SEARCH[:: len(FRACTIONS)]:
        pr = inst.problem
        edge = o.edge_covariance(pr)
        if abs(edge) < 1e-6:
            continue
        eps = 1e-9
        alpha = (1 - eps) * pr.stability_limit
        scaled = (2 - alpha * pr.lam_max) * (2 / alpha) * o.diag_iso_gap(pr.A, alpha)
        assert scaled == pytest.approx(pr.P * edge, rel=1e-3)
        seen.add(edge < 0)
    assert seen == {True, False}


def test_order_does_not_depend_on_sigma_s_or_the_batch_sizes():
    pr = AUDIT.problem()
    for sigma, s, L, M in ((0.3, 1.0, 1000, 10), (2.0, 0.25, 64, 1), (1.0, 5.0, 512, 128)):
        pr_s = q.Quadratic(A=pr.A, eigvals=pr.eigvals, Q=pr.Q, sigma=sigma)
        order = o.stationary_order(pr_s, q.Optimizer(AUDIT.alpha, L, M, s))
        assert order.inversions == (SWAP,)
    # no injected noise (s = 0): the structures coincide and nothing inverts
    order = o.stationary_order(pr, q.Optimizer(AUDIT.alpha, 1000, 10, 0.0))
    assert order.agrees and order.message() is None


# ---------------------------------------------------------------- (d) the audit's instance


def test_audit_instance_inverts():
    pr, opt = AUDIT.problem(), AUDIT.optimizer()
    order = o.stationary_order(pr, opt)
    assert order.fro["isotropic"] < order.fro["diag"] < order.fro["full"]
    assert order.loss["diag"] < order.loss["isotropic"] < order.loss["full"]
    assert order.inversions == (SWAP,)
    assert o.diag_iso_gap(pr.A, opt.alpha) < 0
    assert o.edge_covariance(pr) < 0  # and it stays inverted up to the edge
    # an independent solve agrees
    inst = Instance("audit", pr, 1.0, opt)
    iso = _lyapunov_loss(pr.A, _noise(inst, "isotropic"), opt.alpha)
    diag = _lyapunov_loss(pr.A, _noise(inst, "diag"), opt.alpha)
    assert diag < iso
    assert (diag, iso) == pytest.approx((order.loss["diag"], order.loss["isotropic"]), rel=1e-9)
    msg = order.message()
    assert "diag noise gives a lower stationary loss than isotropic" in msg
    assert "second order in α" in msg and "α·λ_max = 1.8" in msg
    # at a small step the same problem is ordered by ‖Σ‖_F
    small = o.stationary_order(pr, q.Optimizer(0.5, AUDIT.L, AUDIT.M))
    assert small.agrees and small.message() is None
    # the page's report carries the same verdict
    rep = qr.report(qr.QuadraticSettings(**{**AUDIT.__dict__, "T": 20, "n_chains": 0}))
    assert rep.order.inversions == (SWAP,)
