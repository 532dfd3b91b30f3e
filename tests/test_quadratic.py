"""Exact moments of noisy SGD on the quadratic, checked against independent references.

References: dense eigendecompositions and scipy's expm/logm, the plain matrix recursion,
scipy's discrete Lyapunov solver, Taylor expansion of the closed form, and Monte Carlo with
its standard error.
"""

import numpy as np
import pytest
from scipy.linalg import expm, logm

from covnoise.theory import covariance as cv
from covnoise.theory import montecarlo
from covnoise.theory import quadratic as q
from covnoise.theory import quadratic_report as qr


def _problem(P=6, rotation=1.0, seed=3, sigma=0.7, spectrum="power"):
    return q.make_problem(P, spectrum, exponent=1.0, rotation=rotation, sigma=sigma, seed=seed)


# ---------------------------------------------------------------- the problem


def test_spectra():
    np.testing.assert_allclose(q.eigenvalues(4, "power", exponent=2.0), [1, 1 / 4, 1 / 9, 1 / 16])
    lam = q.eigenvalues(5, "two-cluster", lam_max=2.0, low=0.1, top_fraction=0.4)
    np.testing.assert_allclose(lam, [2.0, 2.0, 0.2, 0.2, 0.2])
    with pytest.raises(ValueError, match="unknown spectrum"):
        q.eigenvalues(3, "flat")


@pytest.mark.parametrize("P", [2, 5, 12])
def test_rotation_path_is_orthogonal_geodesic_from_identity_to_haar(P):
    Q1 = q.haar_orthogonal(P, np.random.default_rng(4))
    assert np.linalg.det(Q1) == pytest.approx(1.0)
    np.testing.assert_array_equal(q.rotation_matrix(P, 0.0, 4), np.eye(P))
    np.testing.assert_allclose(q.rotation_matrix(P, 1.0, 4), Q1, atol=1e-12)
    X = np.real(logm(Q1))  # independent reference: exp(t log Q1)
    for t in (0.1, 0.5, 0.9):
        Qt = q.rotation_matrix(P, t, 4)
        np.testing.assert_allclose(Qt @ Qt.T, np.eye(P), atol=1e-12)
        np.testing.assert_allclose(Qt, expm(t * X), atol=1e-10)
    # continuity: a small change of t moves Q(t) by O(h)
    h = 1e-4
    step = np.linalg.norm(q.rotation_matrix(P, 0.5 + h, 4) - q.rotation_matrix(P, 0.5, 4))
    assert step < 10 * h * np.linalg.norm(X)


def test_haar_sign_fix_gives_symmetric_entries():
    # Without the sign fix, QR's first column has Q[0, 0] < 0 always; Haar makes it symmetric
    # with E[Q00] = 0 and E[Q00²] = 1/P.
    rng = np.random.default_rng(0)
    P, n = 3, 3000
    q00 = np.array([q.haar_orthogonal(P, rng)[0, 0] for _ in range(n)])
    se_mean = q00.std(ddof=1) / np.sqrt(n)
    assert abs(q00.mean()) < 4 * se_mean
    sq = q00**2
    assert abs(sq.mean() - 1 / P) < 4 * sq.std(ddof=1) / np.sqrt(n)


@pytest.mark.parametrize("rotation", [0.0, 0.4, 1.0])
def test_build_A_has_the_requested_spectrum(rotation):
    A = q.build_A(7, "two-cluster", low=0.2, rotation=rotation, seed=1)
    np.testing.assert_allclose(A, A.T)
    np.testing.assert_allclose(
        np.sort(np.linalg.eigvalsh(A)),
        np.sort(q.eigenvalues(7, "two-cluster", low=0.2)),
        atol=1e-12,
    )
    if rotation == 0.0:
        np.testing.assert_array_equal(A, np.diag(np.diag(A)))
    else:
        assert np.abs(A - np.diag(np.diag(A))).max() > 1e-3


# ---------------------------------------------------------------- noise structures


def test_structures_equal_trace_frobenius_order_and_identity():
    pr = _problem(P=8, rotation=1.0)
    C, A, sigma = pr.C, pr.A, pr.sigma
    c = cv.scale_factor(M=4, L=64, s=1.5)
    assert c == pytest.approx(1.5 * (1 / 4 - 1 / 64))
    S = {k: cv.noise_covariance(C, k, c) for k in cv.STRUCTURES}
    np.testing.assert_array_equal(S["none"], 0.0)
    traces = [np.trace(S[k]) for k in cv.NOISY_STRUCTURES]
    np.testing.assert_allclose(traces, c * np.trace(C), rtol=1e-12)
    fro = {k: np.linalg.norm(S[k], "fro") for k in cv.NOISY_STRUCTURES}
    assert fro["isotropic"] < fro["diag"] < fro["full"]
    # tr(AΣ) = ‖Σ‖_F²/(cσ²), and the closed forms of docs/design.md
    closed = {
        "full": c * sigma**2 * np.sum(A * A),
        "diag": c * sigma**2 * np.sum(np.diag(A) ** 2),
        "isotropic": c * sigma**2 * np.trace(A) ** 2 / pr.P,
    }
    for k in cv.NOISY_STRUCTURES:
        tr_AS = np.trace(A @ S[k])
        assert tr_AS == pytest.approx(fro[k] ** 2 / (c * sigma**2), rel=1e-12)
        assert tr_AS == pytest.approx(closed[k], rel=1e-12)


def test_noise_table_shows_the_identity_and_order():
    pr = _problem(P=10, rotation=1.0)
    table = qr.noise_table(pr, q.Optimizer(alpha=1.2, L=500, M=8)).set_index("structure")
    noisy = table.loc[list(cv.NOISY_STRUCTURES)]
    np.testing.assert_allclose(noisy["tr_A_sigma"], noisy["fro2_over_c_sigma2"], rtol=1e-12)
    np.testing.assert_allclose(noisy["trace"], noisy["trace"].iloc[0], rtol=1e-12)
    assert table.loc["none", "fro"] == 0.0
    loss = table["stationary_loss"]
    assert loss["none"] < loss["isotropic"] < loss["diag"] < loss["full"]


def test_axis_aligned_A_makes_diag_and_full_coincide():
    pr = _problem(P=6, rotation=0.0)
    opt = q.Optimizer(alpha=1.0, L=100, M=5)
    _, diag = q.method_noise(pr, opt, "diag")
    _, full = q.method_noise(pr, opt, "full")
    np.testing.assert_array_equal(diag, full)
    m0 = q.initial_offset(pr.P)
    np.testing.assert_array_equal(
        q.expected_loss(pr, pr.C / opt.L + diag, opt.alpha, m0, 30),
        q.expected_loss(pr, pr.C / opt.L + full, opt.alpha, m0, 30),
    )


@pytest.mark.parametrize("seed", range(8))
def test_stationary_losses_follow_the_frobenius_order(seed):
    # full ≥ diag holds at every stable α; diag ≥ isotropic holds for these problems but can
    # invert near αλ_max = 2 (covnoise/theory/ordering.py, tests/test_ordering.py)
    pr = _problem(P=12, rotation=1.0, seed=seed, spectrum="power")
    for alpha in (0.3, 1.0, 1.9):
        opt = q.Optimizer(alpha=alpha, L=256, M=16)
        losses = {}
        for k in cv.NOISY_STRUCTURES:
            b, x = q.method_noise(pr, opt, k)
            losses[k] = q.stationary_loss(pr, b + x, alpha)
        assert losses["isotropic"] <= losses["diag"] <= losses["full"]


# ---------------------------------------------------------------- exact moments


def _opt_for(pr, alpha_frac=0.75, L=200, M=10, s=1.0):
    return q.Optimizer(alpha=alpha_frac * pr.stability_limit, L=L, M=M, s=s)


@pytest.mark.parametrize("alpha_frac", [0.3, 0.5, 0.9])  # 0.5: αλ_max = 1, d = 0
def test_eigenbasis_loss_matches_matrix_recursion(alpha_frac):
    pr = _problem(P=7, rotation=0.8)
    opt = _opt_for(pr, alpha_frac)
    m0 = q.initial_offset(pr.P, 1.3, seed=2)
    for method in q.METHODS:
        b, x = q.method_noise(pr, opt, method)
        ref = q.moments(pr.A, b + x, opt.alpha, m0, 60)
        fast = q.expected_loss(pr, b + x, opt.alpha, m0, 60)
        np.testing.assert_allclose(fast, ref.loss, rtol=1e-10, atol=1e-14)
        # the mean and the covariance are those of the recursion
        np.testing.assert_allclose(
            ref.mean[3], np.linalg.matrix_power(np.eye(7) - opt.alpha * pr.A, 3) @ m0
        )


def test_full_noise_with_s1_reproduces_small_batch_sgd_exactly():
    pr = _problem(P=9, rotation=1.0)
    opt = _opt_for(pr, 0.8, L=1024, M=16, s=1.0)
    m0 = q.initial_offset(pr.P)
    b_sgd, x_sgd = q.method_noise(pr, opt, "sgd-M")
    b_full, x_full = q.method_noise(pr, opt, "full")
    np.testing.assert_allclose(b_full + x_full, b_sgd + x_sgd, atol=1e-15)
    sgd = q.expected_loss(pr, b_sgd + x_sgd, opt.alpha, m0, 300)
    full = q.expected_loss(pr, b_full + x_full, opt.alpha, m0, 300)
    np.testing.assert_allclose(full, sgd, rtol=0, atol=1e-12)
    mom_sgd = q.moments(pr.A, b_sgd + x_sgd, opt.alpha, m0, 50)
    mom_full = q.moments(pr.A, b_full + x_full, opt.alpha, m0, 50)
    np.testing.assert_allclose(mom_full.loss, mom_sgd.loss, rtol=0, atol=1e-12)
    # and s ≠ 1 does not
    opt2 = q.Optimizer(opt.alpha, opt.L, opt.M, s=1.5)
    b2, x2 = q.method_noise(pr, opt2, "full")
    assert q.stationary_loss(pr, b2 + x2, opt.alpha) > 1.2 * q.stationary_loss(pr, b_sgd, opt.alpha)


def test_stationary_covariance_three_ways():
    pr = _problem(P=6, rotation=1.0, spectrum="two-cluster")
    opt = _opt_for(pr, 0.7)
    for method in ("isotropic", "diag", "full"):
        b, x = q.method_noise(pr, opt, method)
        N = b + x
        lyap = q.stationary_covariance(pr.A, N, opt.alpha)
        eig = q.stationary_covariance_eig(pr, N, opt.alpha)
        # iterate long enough: contraction per step is max_i (1 − αλ_i)² ≤ 0.94
        it = q.moments(pr.A, N, opt.alpha, np.zeros(pr.P), 1200).cov[-1]
        np.testing.assert_allclose(eig, lyap, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(it, lyap, rtol=1e-9, atol=1e-15)
        loss = q.stationary_loss(pr, N, opt.alpha)
        assert loss == pytest.approx(q.loss_of_covariance(pr.A, lyap), rel=1e-10)
        m0 = q.initial_offset(pr.P)
        assert q.expected_loss(pr, N, opt.alpha, m0, 1200)[-1] == pytest.approx(loss, rel=1e-9)


def test_stationary_loss_expansion_in_alpha():
    # E[L∞] = (α/4) tr N' + (α²/8) tr(A N') + O(α³): the remainder shrinks 8× when α halves.
    pr = _problem(P=8, rotation=1.0)
    N = pr.C / 100 + cv.noise_covariance(pr.C, "diag", 0.05)
    remainders = []
    for alpha in (0.2, 0.1, 0.05):
        first = alpha / 4 * np.trace(N) + alpha**2 / 8 * np.trace(pr.A @ N)
        remainders.append(q.stationary_loss(pr, N, alpha) - first)
    assert remainders[0] / remainders[1] == pytest.approx(8, rel=0.1)
    assert remainders[1] / remainders[2] == pytest.approx(8, rel=0.05)


# ---------------------------------------------------------------- Monte Carlo


@pytest.mark.parametrize("in_eigenbasis", [False, True])
def test_monte_carlo_matches_exact_within_four_standard_errors(in_eigenbasis):
    pr = _problem(P=6, rotation=1.0)
    opt = _opt_for(pr, 0.75, L=400, M=4, s=1.0)
    m0 = q.initial_offset(pr.P, 1.0, seed=5)
    T, steps = 40, [1, 3, 10, 25, 40]
    noises = [q.method_noise(pr, opt, m) for m in q.METHODS]
    mc = montecarlo.monte_carlo(
        pr.A,
        [b for b, _ in noises],
        [x for _, x in noises],
        opt.alpha,
        m0,
        T,
        n_chains=4000,
        seed=11,
        basis=pr.Q if in_eigenbasis else None,
    )
    for i, (b, x) in enumerate(noises):
        exact = q.moments(pr.A, b + x, opt.alpha, m0, T).loss
        z = (mc.loss_mean[i, steps] - exact[steps]) / mc.loss_se[i, steps]
        assert np.all(np.abs(z) < 4), (q.METHODS[i], z)
    # the comparison has power: isotropic's simulation is many s.e. away from full's exact loss
    iso, full = q.METHODS.index("isotropic"), q.METHODS.index("full")
    b, x = noises[full]
    exact_full = q.moments(pr.A, b + x, opt.alpha, m0, T).loss
    assert abs(mc.loss_mean[iso, T] - exact_full[T]) > 10 * mc.loss_se[iso, T]


def test_monte_carlo_standard_error_matches_spread_of_repeats():
    # The reported s.e. is the actual sampling spread of the mean: repeat with 40 seeds.
    pr = _problem(P=4, rotation=1.0)
    opt = _opt_for(pr, 0.6)
    b, x = q.method_noise(pr, opt, "diag")
    m0 = q.initial_offset(pr.P)
    means, ses = [], []
    for seed in range(40):
        mc = montecarlo.monte_carlo(pr.A, [b], [x], opt.alpha, m0, 15, n_chains=200, seed=seed)
        means.append(mc.loss_mean[0, -1])
        ses.append(mc.loss_se[0, -1])
    ratio = np.std(means, ddof=1) / np.mean(ses)
    # the sample s.d. of 40 values is within ±30% of the truth with probability > 0.99
    assert 0.7 < ratio < 1.3


def test_loss_curves_table():
    pr = _problem(P=5, rotation=1.0)
    opt = _opt_for(pr, 0.5)
    m0 = q.initial_offset(pr.P)
    df = qr.loss_curves(pr, opt, m0, T=20, n_chains=0)
    assert list(df["method"].unique()) == list(q.METHODS)
    assert len(df) == 21 * len(q.METHODS)
    assert df["mc_mean"].isna().all()
    sub = df[df["method"] == "isotropic"]
    b, x = q.method_noise(pr, opt, "isotropic")
    np.testing.assert_allclose(sub["exact"], q.moments(pr.A, b + x, opt.alpha, m0, 20).loss)


# ---------------------------------------------------------------- stability and validation


def test_step_size_at_or_beyond_limit_is_reported_unstable():
    pr = _problem(P=5)
    limit = pr.stability_limit
    assert limit == pytest.approx(2 / np.linalg.eigvalsh(pr.A).max())
    N, m0 = pr.C, q.initial_offset(pr.P)
    for alpha in (limit, 1.01 * limit):
        with pytest.raises(q.UnstableStepError, match="unstable"):
            q.expected_loss(pr, N, alpha, m0, 10)
        with pytest.raises(q.UnstableStepError):
            q.stationary_loss(pr, N, alpha)
        with pytest.raises(q.UnstableStepError):
            montecarlo.monte_carlo(pr.A, [N], [N], alpha, m0, 5, 10)
    with pytest.raises(q.UnstableStepError):
        qr.report(qr.QuadraticSettings(P=5, alpha=2.0, T=10, n_chains=0))
    # just below the limit the moments stay finite
    assert np.isfinite(q.expected_loss(pr, N, 0.999 * limit, m0, 200)).all()


def test_affordable_chains_respects_budget():
    assert qr.affordable_chains(20, 200, 500, budget=4_000_000) == 500
    assert qr.affordable_chains(64, 1000, 4000, budget=4_000_000) == 62
    assert qr.affordable_chains(64, 1000, 0) == 0
    assert qr.affordable_chains(64, 1000, 4000, budget=10) == 2


def test_report_runs_at_page_defaults():
    rep = qr.report(qr.QuadraticSettings(T=30, n_chains=50))
    assert set(rep.curves["method"]) == set(q.METHODS)
    assert len(rep.sweep) == 5 * len(cv.NOISY_STRUCTURES)
    for _, grp in rep.sweep.groupby("s"):
        np.testing.assert_allclose(grp["trace"], grp["trace"].iloc[0], rtol=1e-12)
        assert list(grp.sort_values("fro")["structure"]) == ["isotropic", "diag", "full"]
    # at the defaults the exact stationary losses follow ‖Σ‖_F
    assert rep.order.agrees and rep.order.message() is None
    table = rep.table.set_index("structure")["stationary_loss"]
    for structure in cv.NOISY_STRUCTURES:
        assert rep.order.loss[structure] == pytest.approx(table[structure], rel=1e-12)
