"""The noise covariance table, checked against independent references.

References: the formula c = s (1/M − 1/L) written out and RunConfig.noise_c, dense matrices
built entry by entry, numpy's norms and traces of the dense Σ, and F Fᵀ for the PSD factor.
"""

import numpy as np
import pytest

from covnoise import theory
from covnoise.config import RunConfig
from covnoise.theory import covariance as cv


def _psd(P, rank=None, seed=0):
    """A random PSD matrix of the given rank (full rank by default)."""
    G = np.random.default_rng(seed).standard_normal((P, rank or P))
    return G @ G.T


def _dense_K(C, structure):
    """K written entry by entry, independent of structure_matrix."""
    P = C.shape[0]
    K = np.zeros((P, P))
    for i in range(P):
        for j in range(P):
            if structure == "full" or (structure == "diag" and i == j):
                K[i, j] = C[i, j]
            elif structure == "isotropic" and i == j:
                K[i, j] = sum(C[k, k] for k in range(P)) / P
    return K


# ---------------------------------------------------------------- names and the scale c


def test_structure_names():
    assert cv.STRUCTURES == ("none", "isotropic", "diag", "full")
    assert cv.NOISY_STRUCTURES == tuple(k for k in cv.STRUCTURES if k != "none")
    assert theory.STRUCTURES is cv.STRUCTURES  # the face re-exports the one home


@pytest.mark.parametrize("M, L, s", [(1, 1, 1.0), (4, 64, 1.5), (32, 1024, 2.0), (10, 1000, 0.0)])
def test_scale_factor_matches_the_formula_and_run_config(M, L, s):
    c = cv.scale_factor(M, L, s)
    assert c == pytest.approx(s * (1 / M - 1 / L), rel=1e-15, abs=0.0)
    if M < L:
        cfg = RunConfig(batch_size=L, small_batch=M, noise="diag", noise_scale=s)
        assert cfg.noise_c == c
    assert RunConfig(batch_size=L, small_batch=M, noise="none", noise_scale=s).noise_c == 0.0


def test_batch_sizes_are_validated():
    with pytest.raises(ValueError, match="M ≤ L"):
        cv.scale_factor(M=64, L=32)
    with pytest.raises(ValueError, match="non-negative"):
        cv.scale_factor(M=4, L=32, s=-1)
    with pytest.raises(ValueError, match="M ≤ L"):
        cv.scale_factor(M=0, L=32)


# ---------------------------------------------------------------- the K table and Σ = c K


@pytest.mark.parametrize("structure", ["none", "isotropic", "diag", "full"])
def test_structure_matrix_matches_the_dense_table(structure):
    C = _psd(6, seed=1)
    K = cv.structure_matrix(C, structure)
    np.testing.assert_allclose(K, _dense_K(C, structure), rtol=1e-14, atol=0.0)
    c = 0.3
    np.testing.assert_array_equal(
        cv.noise_covariance(C, structure, c), c * cv.structure_matrix(C, structure)
    )


def test_full_is_a_copy_and_unknown_structures_are_named():
    C = _psd(3)
    K = cv.structure_matrix(C, "full")
    K[0, 0] += 1.0
    assert C[0, 0] != K[0, 0]
    with pytest.raises(ValueError, match="unknown structure 'fisher'"):
        cv.structure_matrix(C, "fisher")
    for fn in (cv.noise_covariance, cv.noise_trace, cv.noise_fro):
        with pytest.raises(ValueError, match="unknown structure 'fisher'"):
            fn(C, "fisher", 1.0)


@pytest.mark.parametrize("seed", range(4))
def test_traces_are_equal_and_frobenius_norms_are_ordered(seed):
    P, c = 7, 0.05
    C = _psd(P, seed=seed)
    traces = [np.trace(cv.noise_covariance(C, k, c)) for k in cv.NOISY_STRUCTURES]
    np.testing.assert_allclose(traces, c * np.trace(C), rtol=1e-13)
    fro = {k: np.linalg.norm(cv.noise_covariance(C, k, c), "fro") for k in cv.NOISY_STRUCTURES}
    assert fro["isotropic"] <= fro["diag"] <= fro["full"]


@pytest.mark.parametrize("structure", ["none", "isotropic", "diag", "full"])
@pytest.mark.parametrize("rank", [None, 2])
def test_closed_forms_match_the_dense_sigma(structure, rank):
    C, c = _psd(5, rank=rank, seed=3), 0.7
    Sigma = _dense_K(C, structure) * c
    assert cv.noise_trace(C, structure, c) == pytest.approx(np.trace(Sigma), rel=1e-13, abs=0)
    assert cv.noise_fro(C, structure, c) == pytest.approx(
        np.linalg.norm(Sigma, "fro"), rel=1e-13, abs=0
    )


# ---------------------------------------------------------------- the PSD factor


@pytest.mark.parametrize("P, rank", [(1, None), (4, None), (6, 2), (5, 1)])
def test_psd_factor_reproduces_the_matrix(P, rank):
    S = _psd(P, rank=rank, seed=P)
    F = cv.psd_factor(S)
    assert F.shape == (P, P)
    np.testing.assert_allclose(F @ F.T, S, rtol=0, atol=1e-12 * np.abs(S).max())


def test_psd_factor_of_zero_diagonal_and_noise_covariances():
    np.testing.assert_array_equal(cv.psd_factor(np.zeros((3, 3))), np.zeros((3, 3)))
    d = np.diag([4.0, 0.0, 1.0])
    F = cv.psd_factor(d)
    np.testing.assert_allclose(F @ F.T, d, atol=1e-15)
    C = _psd(4, seed=9)
    for k in cv.STRUCTURES:
        Sigma = cv.noise_covariance(C, k, 0.2)
        F = cv.psd_factor(Sigma)
        np.testing.assert_allclose(F @ F.T, Sigma, atol=1e-12 * max(1.0, np.abs(Sigma).max()))


def test_psd_factor_draws_have_the_covariance():
    # z @ Fᵀ ~ N(0, Σ): the sample covariance of many draws is within 4 standard errors.
    S = _psd(3, rank=2, seed=5)
    n = 20000
    x = np.random.default_rng(0).standard_normal((n, 3)) @ cv.psd_factor(S).T
    emp = x.T @ x / n
    se = np.sqrt((S**2 + np.outer(np.diag(S), np.diag(S))) / n)  # Gaussian: Var(x_i x_j)
    assert np.all(np.abs(emp - S) < 4 * se + 1e-15)
