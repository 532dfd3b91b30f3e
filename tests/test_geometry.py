"""The 2-D noise clouds: gradients against torch.func, clouds against their exact covariances."""

import numpy as np
import pytest
import torch
from torch.func import grad, vmap

from covnoise.theory import geometry as g


def _small(**kw):
    base = dict(N=300, n_samples=6000, M=8, L=60, seed=2)
    base.update(kw)
    return g.GeometrySettings(**base)


def test_per_example_gradients_match_torch_func():
    data = g.make_data(N=50, rho=0.6, seed=1)
    theta = np.array([0.3, -0.7])

    def loss(w, x, y):
        return 0.5 * (x @ w - y) ** 2

    X, y = torch.tensor(data.X), torch.tensor(data.y)
    ref = vmap(grad(loss), in_dims=(None, 0, 0))(torch.tensor(theta), X, y).numpy()
    G = g.per_example_gradients(data, theta)
    np.testing.assert_allclose(G, ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(g.gradient_covariance(G), np.cov(G.T, bias=True), rtol=1e-12)


def test_loss_grid_is_the_mean_per_example_loss():
    data = g.make_data(N=40, seed=3)
    xs, ys = np.linspace(-1, 2, 5), np.linspace(0, 1, 4)
    Z = g.loss_grid(data, xs, ys)
    assert Z.shape == (4, 5)
    for i, b in enumerate(ys):
        for j, a in enumerate(xs):
            direct = 0.5 * np.mean((data.X @ np.array([a, b]) - data.y) ** 2)
            assert Z[i, j] == pytest.approx(direct, rel=1e-12)


def test_data_has_the_requested_input_correlation():
    data = g.make_data(N=20000, rho=0.8, scales=(1.0, 0.5), seed=0)
    cov = np.cov(data.X.T)
    np.testing.assert_allclose(cov, [[1.0, 0.4], [0.4, 0.25]], atol=0.03)


def test_ellipse_is_the_level_set_of_the_covariance():
    mean, cov = np.array([1.0, -2.0]), np.array([[0.5, 0.2], [0.2, 0.3]])
    pts = g.covariance_ellipse(mean, cov, n_std=2.0)
    d = pts - mean
    mahal = np.einsum("ni,ij,nj->n", d, np.linalg.inv(cov), d)
    np.testing.assert_allclose(mahal, 4.0, rtol=1e-10)


def _cov_entry_z(samples, target):
    """z-scores of the sample covariance entries against a target.

    The standard error of entry (i, j) is sqrt((m_iijj − S_ij²)/n), with the fourth moment
    m_iijj estimated from the samples (valid for non-Gaussian clouds such as SGD's).
    """
    n = samples.shape[0]
    d = samples - samples.mean(axis=0)
    S = d.T @ d / (n - 1)
    z = np.empty((2, 2))
    for i in range(2):
        for j in range(2):
            m4 = np.mean(d[:, i] ** 2 * d[:, j] ** 2)
            z[i, j] = (S[i, j] - target[i, j]) / np.sqrt((m4 - S[i, j] ** 2) / n)
    return z


@pytest.mark.parametrize("iso_mode", ["sigma", "trace"])
def test_cloud_covariances_match_their_targets(iso_mode):
    geom = g.one_step_clouds(_small(iso_mode=iso_mode, sigma_iso=0.2))
    assert set(geom.clouds) == set(g.METHODS)
    for method, cloud in geom.clouds.items():
        z = _cov_entry_z(cloud.samples, cloud.target_cov)
        assert np.all(np.abs(z) < 4), (method, z)
        se_mean = np.sqrt(np.diag(cloud.target_cov) / len(cloud.samples))
        assert np.all(np.abs(cloud.samples.mean(axis=0) - cloud.mean) < 4 * se_mean), method


def test_batches_are_uniform_subsets_without_replacement():
    # With G = I each batch mean is the indicator of the subset / B: every one of the
    # C(6, 3) = 20 subsets must be equally likely (chi-square, 19 d.o.f., p = 0.001 → 43.8).
    N, B, n = 6, 3, 20000
    picked = np.rint(g.batch_means(np.eye(N), B, n, np.random.default_rng(0)) * B)
    assert (picked.sum(axis=1) == B).all() and set(np.unique(picked)) == {0.0, 1.0}
    _, counts = np.unique(picked, axis=0, return_counts=True)
    assert len(counts) == 20
    expected = n / 20
    assert ((counts - expected) ** 2 / expected).sum() < 43.8


def test_sgd_cloud_uses_sampling_without_replacement():
    # N = 100, M = 50: the finite-population factor halves the variance; the naive C/M target
    # is rejected by the same test.
    st = g.GeometrySettings(N=100, M=50, L=100, n_samples=6000, seed=4)
    geom = g.one_step_clouds(st)
    sgd = geom.clouds["sgd"]
    np.testing.assert_allclose(sgd.noise_cov, geom.C / 50 * (50 / 99))
    assert np.all(np.abs(_cov_entry_z(sgd.samples, sgd.target_cov)) < 4)
    naive = st.alpha**2 * geom.C / 50
    assert np.abs(_cov_entry_z(sgd.samples, naive)).max() > 10
    # L = N: the large batch is the full gradient, so LB clouds carry only injected noise
    np.testing.assert_allclose(geom.clouds["full"].noise_cov, geom.clouds["full"].injected_cov)


def test_injected_noise_structures():
    geom = g.one_step_clouds(_small(iso_mode="trace", n_samples=100))
    C, c = geom.C, 1.0 * (1 / 8 - 1 / 60)
    inj = {m: geom.clouds[m].injected_cov for m in ("isotropic", "full", "diag")}
    np.testing.assert_allclose(inj["full"], c * C)
    np.testing.assert_allclose(inj["diag"], c * np.diag(np.diag(C)))
    np.testing.assert_allclose(np.trace(inj["isotropic"]), c * np.trace(C))
    fro = {m: np.linalg.norm(v) for m, v in inj.items()}
    assert fro["isotropic"] <= fro["diag"] <= fro["full"]
    # full noise on a large batch nearly recovers small-batch SGD: C/L·f_L + (1/M−1/L)C ≈ C/M·f_M
    np.testing.assert_allclose(
        geom.clouds["full"].noise_cov, geom.clouds["sgd"].noise_cov, rtol=0.05
    )
    iso = g.one_step_clouds(_small(iso_mode="sigma", sigma_iso=0.3, n_samples=100))
    np.testing.assert_allclose(iso.clouds["isotropic"].injected_cov, 0.09 * np.eye(2))


def test_frames_for_plotting():
    geom = g.one_step_clouds(_small(n_samples=200))
    frames = g.geometry_frames(geom, grid=30)
    assert len(frames["samples"]) == 200 * 4
    assert len(frames["contours"]) == 30 * 30
    assert set(frames["points"]["kind"]) == {"start", "mean"}
    summary = frames["summary"].set_index("method")
    for method, cloud in geom.clouds.items():
        assert summary.loc[method, "trace"] == pytest.approx(np.trace(cloud.noise_cov))
        assert summary.loc[method, "fro"] == pytest.approx(np.linalg.norm(cloud.noise_cov))
    # the window holds θ and every ellipse
    (x0, x1), (y0, y1) = g.view_window(geom)
    for pts in [geom.theta[None, :], *(c.ellipse for c in geom.clouds.values())]:
        assert (pts[:, 0] >= x0).all() and (pts[:, 0] <= x1).all()
        assert (pts[:, 1] >= y0).all() and (pts[:, 1] <= y1).all()


def test_invalid_settings_raise():
    with pytest.raises(ValueError, match="M ≤ L ≤ N"):
        g.one_step_clouds(g.GeometrySettings(M=20, L=10))
    with pytest.raises(ValueError, match="isotropic mode"):
        g.one_step_clouds(g.GeometrySettings(iso_mode="bogus", n_samples=10))
