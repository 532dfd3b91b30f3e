"""Curvature operators and eigen/trace algorithms against dense, independent references.

References: matrices with a known spectrum Q diag(λ) Qᵀ; dense Hessians of the mean loss from
torch.autograd.functional.hessian over the flat parameter vector (torch.func.functional_call);
torch.linalg.eigvalsh; exact traces; call counts taken by a wrapper around the operator.
"""

from __future__ import annotations

import copy
import math
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from covnoise.core.curvature import (
    EigResult,
    HessianOperator,
    LinearOperator,
    MatrixOperator,
    hutchinson_trace,
    lanczos,
    power_iteration,
    top_eigenvalue,
    trace_h_sigma,
)

F64 = torch.float64


def per_example_ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def spectrum_matrix(eigs: Tensor, seed: int) -> tuple[Tensor, Tensor]:
    """Q diag(eigs) Qᵀ with a random orthogonal Q; returns (matrix, Q)."""
    gen = torch.Generator().manual_seed(seed)
    n = eigs.numel()
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=F64))
    a = q @ torch.diag(eigs.to(F64)) @ q.T
    return (a + a.T) / 2, q


class Counting:
    """Wraps an operator and counts matvec calls independently of the operator's counter."""

    def __init__(self, op: LinearOperator) -> None:
        self.op = op
        self.dim = op.dim
        self.n_matvecs = 0
        self.calls = 0
        self.device = getattr(op, "device", torch.device("cpu"))
        self.dtype = getattr(op, "dtype", F64)

    def matvec(self, v: Tensor) -> Tensor:
        self.calls += 1
        return self.op.matvec(v)


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    # 8·12+12 + 12·10+10 + 10·3+3 = 271 parameters
    return nn.Sequential(
        nn.Linear(8, 12), nn.Tanh(), nn.Linear(12, 10), nn.Tanh(), nn.Linear(10, 3)
    )


def tiny_convnet() -> nn.Module:
    torch.manual_seed(1)
    # conv 1→3 (3x3): 30; linear 3·4·4 → 4: 196; 226 parameters
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.Tanh(), nn.Flatten(), nn.Linear(48, 4))


def mlp_data(n: int = 21) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(2)
    return torch.randn(n, 8, generator=gen), torch.randint(0, 3, (n,), generator=gen)


def conv_data(n: int = 13) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    return torch.randn(n, 1, 6, 6, generator=gen), torch.randint(0, 4, (n,), generator=gen)


def dense_hessian(model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Hessian of the mean per-example loss w.r.t. the flat parameter vector."""
    names = [n for n, _ in model.named_parameters()]
    params = [p.detach() for _, p in model.named_parameters()]
    shapes, numels = [p.shape for p in params], [p.numel() for p in params]
    flat = torch.cat([p.reshape(-1) for p in params])

    def loss(theta: Tensor) -> Tensor:
        chunks = torch.split(theta, numels)
        named = {n: c.view(s) for n, c, s in zip(names, chunks, shapes, strict=True)}
        return per_example_ce(functional_call(model, named, (x,)), y).mean()

    return torch.autograd.functional.hessian(loss, flat, vectorize=True)


@pytest.fixture(scope="module")
def mlp_case() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """Float64 tiny MLP, its probe, and the dense Hessian there (computed once)."""
    model = tiny_mlp().double()
    x, y = mlp_data()
    x = x.double()
    return model, x, y, dense_hessian(model, x, y)


@pytest.fixture(scope="module")
def conv_case() -> tuple[nn.Module, Tensor, Tensor, Tensor]:
    """Float64 tiny conv net, its probe, and the dense Hessian there (computed once)."""
    model = tiny_convnet().double()
    x, y = conv_data()
    x = x.double()
    return model, x, y, dense_hessian(model, x, y)


# -- Lanczos and power iteration on explicit matrices ---------------------------------------


def test_lanczos_spd_matches_known_spectrum() -> None:
    gen = torch.Generator().manual_seed(10)
    eigs = torch.cat([torch.tensor([9.0, 6.5]), 5.0 * torch.rand(58, generator=gen)])
    a, q = spectrum_matrix(eigs, seed=11)
    res = lanczos(MatrixOperator(a), k_max=60, tol=1e-10, generator=gen)
    assert res.converged
    assert abs(res.value - 9.0) / 9.0 < 1e-6
    assert abs(float(res.vector @ q[:, 0])) > 1 - 1e-6
    assert abs(float(torch.linalg.vector_norm(res.vector)) - 1) < 1e-12


def test_lanczos_and_power_find_largest_algebraic_of_indefinite() -> None:
    # The eigenvalue of largest magnitude is negative; the answer is the largest algebraic.
    gen = torch.Generator().manual_seed(20)
    eigs = torch.cat([torch.tensor([4.0, -10.0, 2.0]), 3.0 * torch.rand(37, generator=gen) - 2])
    a, q = spectrum_matrix(eigs, seed=21)
    top = float(torch.linalg.eigvalsh(a)[-1])
    assert abs(top - 4.0) < 1e-12
    lz = lanczos(MatrixOperator(a), k_max=40, tol=1e-10, generator=gen)
    assert abs(lz.value - 4.0) / 4.0 < 1e-6
    assert abs(float(lz.vector @ q[:, 0])) > 1 - 1e-6
    pw = power_iteration(MatrixOperator(a), tol=1e-10, generator=gen)
    assert pw.converged
    assert abs(pw.value - 4.0) / 4.0 < 1e-6
    assert abs(float(pw.vector @ q[:, 0])) > 1 - 1e-6


def test_power_iteration_with_spectral_gap() -> None:
    gen = torch.Generator().manual_seed(30)
    eigs = torch.cat([torch.tensor([10.0]), 5.0 * torch.rand(49, generator=gen)])
    a, q = spectrum_matrix(eigs, seed=31)
    res = power_iteration(MatrixOperator(a), tol=1e-10, generator=gen)
    assert res.converged
    assert abs(res.value - 10.0) / 10.0 < 1e-6
    assert abs(float(res.vector @ q[:, 0])) > 1 - 1e-6
    # The stopping rule bounds the reported residual; it is also the true residual.
    true_res = float(torch.linalg.vector_norm(a @ res.vector - res.value * res.vector))
    assert res.residual <= 1e-10 * 10.0 and abs(res.residual - true_res) <= 1e-12


def test_lanczos_residual_is_honest_and_bounded_by_tol_rule() -> None:
    gen = torch.Generator().manual_seed(40)
    eigs = torch.linspace(0.1, 3.0, 80, dtype=F64)
    a, _ = spectrum_matrix(eigs, seed=41)
    res = lanczos(MatrixOperator(a), k_max=15, tol=1e-3, generator=gen)
    true_res = float(torch.linalg.vector_norm(a @ res.vector - res.value * res.vector))
    assert abs(res.residual - true_res) < 1e-12
    assert abs(res.value - float(res.vector @ a @ res.vector)) < 1e-12
    # Ritz values of Lanczos increase monotonically towards λ_max.
    assert all(b >= a_ - 1e-12 for a_, b in zip(res.history, res.history[1:], strict=False))
    assert res.value <= 3.0 + 1e-12


def test_lanczos_invariant_subspace_low_rank() -> None:
    gen = torch.Generator().manual_seed(50)
    eigs = torch.zeros(50, dtype=F64)
    eigs[:3] = torch.tensor([3.0, 2.0, 1.0])
    a, q = spectrum_matrix(eigs, seed=51)
    res = lanczos(MatrixOperator(a), k_max=30, tol=1e-10, generator=gen)
    # Krylov space of a rank-3 matrix from a random start: 4 directions, then β ≈ 0.
    assert res.converged and res.iterations <= 6
    assert abs(res.value - 3.0) < 1e-10
    assert abs(float(res.vector @ q[:, 0])) > 1 - 1e-8


def test_lanczos_start_orthogonal_to_top_eigenvector_still_finds_it() -> None:
    a = torch.diag(torch.tensor([1.0, 5.0, 2.0, 3.0, 0.5, 4.0], dtype=F64))
    v0 = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 0.0], dtype=F64)  # spans an invariant subspace
    res = lanczos(MatrixOperator(a), k_max=20, tol=1e-10, v0=v0, generator=torch.Generator())
    assert abs(res.value - 5.0) < 1e-10
    assert abs(float(res.vector[1])) > 1 - 1e-10


def test_lanczos_dim_smaller_than_k_max_and_scaled_identity() -> None:
    a, _ = spectrum_matrix(torch.tensor([2.0, -1.0, 0.5, 1.5]), seed=60)
    res = lanczos(MatrixOperator(a), k_max=20, tol=0.0, generator=torch.Generator())
    assert res.converged and res.iterations == 4 and abs(res.value - 2.0) < 1e-12
    ident = lanczos(MatrixOperator(3.0 * torch.eye(30, dtype=F64)), generator=torch.Generator())
    assert ident.converged and abs(ident.value - 3.0) < 1e-12 and ident.residual < 1e-12


def test_lanczos_converged_means_it_stopped_on_its_tolerance_not_its_budget() -> None:
    """An evenly spaced spectrum (no gap): 3 iterations cannot meet tol 1e-3, a budget of 200
    does, and stops well before it. `converged` is what runs log as sharpness_converged."""
    a, _ = spectrum_matrix(torch.linspace(0.1, 3.0, 200, dtype=F64), seed=90)
    lam = float(torch.linalg.eigvalsh(a)[-1])
    tiny = lanczos(MatrixOperator(a), k_max=3, tol=1e-3, generator=torch.Generator().manual_seed(1))
    assert not tiny.converged and tiny.iterations == 3
    assert (lam - tiny.value) / lam > 1e-2  # far from λ_max, as the flag says
    full = lanczos(
        MatrixOperator(a), k_max=200, tol=1e-3, generator=torch.Generator().manual_seed(1)
    )
    assert full.converged and full.iterations < 100
    assert abs(full.value - lam) / lam < 1e-3
    # A small residual bounds the distance to *some* eigenvalue, not to λ_max: a start along
    # the second eigenvector gives a tiny residual at λ_2 after one iteration, unconverged.
    d = torch.diag(torch.linspace(1.0, 5.0, 50, dtype=F64))
    v0 = torch.zeros(50, dtype=F64)
    v0[-2], v0[-1] = 1.0, 1e-9
    one = lanczos(MatrixOperator(d), k_max=1, tol=1e-3, v0=v0, generator=torch.Generator())
    assert one.residual < 1e-8 and abs(one.value - float(d[-2, -2])) < 1e-8
    assert not one.converged and 5.0 - one.value > 0.05
    more = lanczos(MatrixOperator(d), k_max=20, tol=1e-3, v0=v0, generator=torch.Generator())
    assert more.converged and abs(more.value - 5.0) < 1e-10


def first_within(history: list[float], lam: float, tol: float) -> int:
    """The first iteration (1-based) whose Ritz value is within tol of λ (relative)."""
    return next(k + 1 for k, h in enumerate(history) if abs(h - lam) <= tol * abs(lam))


def resolved_top_spectrum(seed: int) -> Tensor:
    """150 eigenvalues whose top is resolved from the rest: a clear second eigenvalue, a
    lone top over a bulk, or a Hessian-like power law (λ_i ∝ 1/i with jitter); λ_max = 10."""
    gen = torch.Generator().manual_seed(1000 + seed)
    kind = seed % 3
    if kind == 2:
        eigs = torch.arange(1, 151, dtype=F64) ** -1.0 * (1 + 0.3 * torch.rand(150, generator=gen))
        return 10.0 * eigs / eigs.max()
    top = torch.tensor([10.0, 8.0]) if kind == 0 else torch.tensor([10.0])
    return torch.cat([top, 7.0 * torch.rand(150 - top.numel(), generator=gen)]).to(F64)


@pytest.mark.parametrize("tol", [1e-2, 1e-3, 1e-4])
def test_lanczos_stops_when_its_bound_reaches_tol_not_far_beyond(tol: float) -> None:
    """Whenever Lanczos says it converged, λ_max is within tol and within the bound it
    reports (the guarantee), and it stops at most two steps, on average at most one, after
    the first Ritz value within tol of λ_max: it does not run on to tol²."""
    late = 0
    for seed in range(24):
        a, _ = spectrum_matrix(resolved_top_spectrum(seed), seed=2000 + seed)
        lam = float(torch.linalg.eigvalsh(a)[-1])
        res = lanczos(MatrixOperator(a), k_max=150, tol=tol, generator=torch.Generator())
        ref = lanczos(MatrixOperator(a), k_max=150, tol=1e-13, generator=torch.Generator())
        assert res.converged and res.history == ref.history[: res.iterations]
        assert 0 <= lam - res.value <= tol * lam
        assert lam - res.history[-1] <= res.error_bound * (1 + 1e-9)
        first = first_within(ref.history, lam, tol)
        assert first <= res.iterations <= first + 2
        late += res.iterations - first
    assert late <= 24


@pytest.mark.parametrize("seed", range(6))
def test_lanczos_network_lambda_max_matches_dense_hessian_at_tol(seed: int) -> None:
    """λ_max of a trained tiny MLP against the top eigenvalue of its dense Hessian
    (torch.autograd.functional.hessian): within tol = 1e-3, stopping near the first Ritz
    value that is (not near 1e-7)."""
    model = tiny_mlp().double()
    x, y = mlp_data(40)
    x = x.double()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        per_example_ce(model(x), y).mean().backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    h = dense_hessian(model, x, y)
    lam = float(torch.linalg.eigvalsh((h + h.T) / 2)[-1])
    op = HessianOperator(model, per_example_ce, x, y)
    res = lanczos(op, tol=1e-3, generator=torch.Generator().manual_seed(seed))
    assert res.converged
    assert abs(res.value - lam) / lam <= 1e-3
    # The bound uses the Ritz gap, which exceeds the true gap until θ₂ has converged: an
    # estimate here, not a certificate (seed 2: true error 1.04× the bound).
    assert abs(res.value - lam) <= 2 * res.error_bound
    long = lanczos(op, k_max=60, tol=1e-12, generator=torch.Generator().manual_seed(seed))
    assert res.iterations <= first_within(long.history, lam, 1e-3) + 1
    assert res.n_matvecs == res.iterations  # converged: no extra residual matvec
    v = res.vector
    assert abs(float(torch.linalg.vector_norm(h @ v - res.value * v)) - res.residual) < 1e-10


def test_n_matvecs_counts_are_exact() -> None:
    gen = torch.Generator().manual_seed(70)
    eigs = torch.cat([torch.tensor([5.0]), torch.rand(39, generator=gen, dtype=F64)])
    a, _ = spectrum_matrix(eigs, seed=71)
    # The explicit residual check costs one matvec, spent only when Lanczos did not converge.
    for tol, k_max, check, extra in [
        (1e-3, 20, None, 0),
        (0.0, 7, None, 1),
        (1e-3, 20, True, 1),
        (0.0, 7, False, 0),
    ]:
        op = Counting(MatrixOperator(a))
        res = lanczos(op, k_max=k_max, tol=tol, generator=gen, explicit_residual=check)
        assert res.converged == (tol > 0)
        assert res.n_matvecs == op.calls == res.iterations + extra
        assert len(res.history) == res.iterations
    op = Counting(MatrixOperator(a))
    res = power_iteration(op, tol=1e-6, generator=gen)
    assert res.n_matvecs == op.calls == len(res.history)
    # With the automatic shift (negative dominant eigenvalue) both runs are counted.
    b, _ = spectrum_matrix(torch.cat([torch.tensor([-6.0, 2.0]), torch.rand(20, dtype=F64)]), 72)
    op = Counting(MatrixOperator(b))
    res = power_iteration(op, tol=1e-8, generator=gen)
    assert abs(res.value - 2.0) < 1e-6 and res.n_matvecs == op.calls
    op = Counting(MatrixOperator(a))
    hutchinson_trace(op, 17, generator=gen)
    assert op.calls == 17 == op.op.n_matvecs


def test_deterministic_given_generator() -> None:
    a, _ = spectrum_matrix(torch.linspace(-1.0, 2.0, 30, dtype=F64), seed=80)
    r1 = lanczos(MatrixOperator(a), tol=1e-2, generator=torch.Generator().manual_seed(5))
    r2 = lanczos(MatrixOperator(a), tol=1e-2, generator=torch.Generator().manual_seed(5))
    assert r1.history == r2.history and torch.equal(r1.vector, r2.vector)
    h1 = hutchinson_trace(MatrixOperator(a), 5, torch.Generator().manual_seed(6))
    h2 = hutchinson_trace(MatrixOperator(a), 5, torch.Generator().manual_seed(6))
    assert h1 == h2


def test_top_eigenvalue_dispatch() -> None:
    a, _ = spectrum_matrix(torch.tensor([7.0, 1.0, 0.5, 0.2]), seed=90)
    for method in ("lanczos", "power"):
        res = top_eigenvalue(
            MatrixOperator(a), method=method, tol=1e-10, generator=torch.Generator()
        )
        assert isinstance(res, EigResult) and abs(res.value - 7.0) < 1e-8
    with pytest.raises(ValueError, match="unknown method"):
        top_eigenvalue(MatrixOperator(a), method="arnoldi")


def test_matrix_operator_rejects_nonsymmetric() -> None:
    with pytest.raises(ValueError, match="symmetric"):
        MatrixOperator(torch.tensor([[1.0, 2.0], [0.0, 1.0]]))


# -- HessianOperator against dense Hessians -------------------------------------------------


@pytest.mark.parametrize("chunk_size", [None, 5, 100])
@pytest.mark.parametrize("case", ["mlp_case", "conv_case"])
def test_hessian_matvec_matches_dense(
    case: str, chunk_size: int | None, request: pytest.FixtureRequest
) -> None:
    model, x, y, h = request.getfixturevalue(case)
    op = HessianOperator(model, per_example_ce, x, y, chunk_size=chunk_size)
    assert op.dim == h.shape[0] and op.dim > 200
    gen = torch.Generator().manual_seed(100)
    for _ in range(2):
        v = torch.randn(op.dim, generator=gen, dtype=F64)
        torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-10, atol=1e-12)
    assert op.n_matvecs == 2


def test_hessian_float32_matches_dense_and_keeps_dtypes(mlp_case) -> None:
    *_, h = mlp_case
    model = tiny_mlp()  # same weights in float32
    x, y = mlp_data()
    op = HessianOperator(model, per_example_ce, x, y, chunk_size=8)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(101), dtype=F64)
    hv = op.matvec(v)
    assert hv.dtype == F64  # returned in the argument's dtype, computed in float32
    err = torch.linalg.vector_norm(hv - h @ v) / torch.linalg.vector_norm(h @ v)
    assert err < 1e-5  # float32 round-off, a few hundred terms
    assert op.matvec(v.float()).dtype == torch.float32


def test_hvp_list_matches_matvec_and_is_shaped_like_params() -> None:
    model = tiny_convnet().double()
    x, y = conv_data()
    op = HessianOperator(model, per_example_ce, x, y)
    params = list(model.parameters())
    gen = torch.Generator().manual_seed(102)
    vs = [torch.randn(p.shape, generator=gen, dtype=F64) for p in params]
    out = op.hvp_list(vs)
    assert [o.shape for o in out] == [p.shape for p in params]
    flat = op.matvec(torch.cat([v.reshape(-1) for v in vs]))
    torch.testing.assert_close(torch.cat([o.reshape(-1) for o in out]), flat, rtol=0, atol=1e-14)
    assert op.n_matvecs == 2
    assert all(p.grad is None for p in params)  # no gradient accumulated into the model


def test_hessian_subset_of_params_and_no_grad_context(mlp_case) -> None:
    model, x, y, h = mlp_case
    last = list(model.parameters())[-2:]  # final weight and bias: the trailing 33 coordinates
    op = HessianOperator(model, per_example_ce, x, y, params=last)
    assert op.dim == 33
    v = torch.randn(33, generator=torch.Generator().manual_seed(103), dtype=F64)
    with torch.no_grad():
        hv = op.matvec(v)
        hv_kept = op.matvec(v)  # the second product reuses the kept graph
    torch.testing.assert_close(hv, h[-33:, -33:] @ v, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(hv_kept, hv, rtol=0, atol=0)


def test_cached_graph_follows_parameter_updates_and_is_freed() -> None:
    model = tiny_mlp().double()
    x, y = mlp_data()
    op = HessianOperator(model, per_example_ce, x, y)
    assert op.cache_graph
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(104), dtype=F64)
    op.matvec(v)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)
    h_new = dense_hessian(model, x.double(), y)
    torch.testing.assert_close(op.matvec(v), h_new @ v, rtol=1e-10, atol=1e-12)
    with op:
        op.matvec(v)
        assert op._cache is not None
        graph_alive = weakref.ref(op._cache[0][0])
    assert op._cache is None
    assert graph_alive() is None  # freed at once: no reference cycle keeps the graph alive
    torch.testing.assert_close(op.matvec(v), h_new @ v, rtol=1e-10, atol=1e-12)


def test_hessian_with_a_parameter_the_loss_does_not_use(mlp_case) -> None:
    """A trainable parameter outside the forward pass has zero rows and columns in H."""
    model, x, y, h = mlp_case
    model = copy.deepcopy(model)
    model.register_parameter("unused", nn.Parameter(torch.ones(6, dtype=F64)))  # never read
    op = HessianOperator(model, per_example_ce, x, y)
    assert op.dim == h.shape[0] + 6
    gen = torch.Generator().manual_seed(112)
    for _ in range(2):  # building the graph, then reusing it
        v = torch.randn(op.dim, generator=gen, dtype=F64)
        hv = op.matvec(v)  # the module's own parameter comes first, before its children's
        torch.testing.assert_close(hv[6:], h @ v[6:], rtol=1e-10, atol=1e-12)
        assert torch.equal(hv[:6], torch.zeros(6, dtype=F64))


def test_hessian_operator_rejects_mean_reduced_loss() -> None:
    model = tiny_mlp()
    x, y = mlp_data()
    op = HessianOperator(model, lambda o, t: F.cross_entropy(o, t), x, y)
    with pytest.raises(ValueError, match="per-example"):
        op.matvec(torch.zeros(op.dim))


def test_lanczos_on_network_hessian_matches_eigvalsh() -> None:
    model = tiny_mlp()
    x, y = mlp_data(40)
    # A few steps of gradient descent so the Hessian is not the one at initialisation.
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(30):
        opt.zero_grad()
        per_example_ce(model(x), y).mean().backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    h = dense_hessian(copy.deepcopy(model).double(), x.double(), y)
    h = (h + h.T) / 2
    lam_max = float(torch.linalg.eigvalsh(h)[-1])
    op = HessianOperator(model, per_example_ce, x, y)  # float32 model, float32 HVPs
    res = lanczos(op, generator=torch.Generator().manual_seed(105))
    assert res.converged and res.n_matvecs <= 21
    assert abs(res.value - lam_max) / lam_max < 1e-3
    assert res.vector.dtype == torch.float32 and res.vector.shape == (op.dim,)
    v = res.vector.double()
    recomputed = float(torch.linalg.vector_norm(h @ v - res.value * v))
    # Equal up to float32 round-off in the HVP (relative 1e-6 of ‖Hv‖ ≈ λ_max).
    assert abs(res.residual - recomputed) < 1e-5 * lam_max
    assert res.residual < 0.05 * lam_max


# -- Hutchinson and Tr(HΣ) ------------------------------------------------------------------


def test_hutchinson_within_four_standard_errors_of_dense_trace(conv_case) -> None:
    model, x, y, h = conv_case
    op = HessianOperator(model, per_example_ce, x, y)
    est, se = hutchinson_trace(op, 60, generator=torch.Generator().manual_seed(106))
    # Rademacher variance is 2 Σ_{i≠j} H_ij²; the estimate's SE must be near its square root.
    exact_se = math.sqrt(2 * float((h**2).sum() - (torch.diagonal(h) ** 2).sum()) / 60)
    assert 0.6 * exact_se < se < 1.5 * exact_se
    assert abs(est - float(torch.trace(h))) < 4 * se


def test_hutchinson_standard_error_is_honest(mlp_case) -> None:
    # z-scores over repeated seeds: mean ≈ 0, std ≈ 1 (t with 19 dof has std 1.056).
    # With 300 repeats the std of the sample std is ≈ 0.045, so [0.85, 1.25] is a ±4σ band.
    *_, h = mlp_case
    op = MatrixOperator((h + h.T) / 2)
    exact = float(torch.trace(h))
    gen = torch.Generator().manual_seed(107)
    z = torch.tensor(
        [(lambda e: (e[0] - exact) / e[1])(hutchinson_trace(op, 20, gen)) for _ in range(300)]
    )
    assert abs(float(z.mean())) < 4 * 1.056 / math.sqrt(300)
    assert 0.85 < float(z.std()) < 1.25


def test_trace_h_sigma_matches_exact_for_gaussian_noise() -> None:
    gen = torch.Generator().manual_seed(108)
    eigs = torch.linspace(0.1, 4.0, 30, dtype=F64)
    a, _ = spectrum_matrix(eigs, seed=109)
    factor = torch.randn(30, 6, generator=gen, dtype=F64)  # Σ = L Lᵀ, rank 6
    sigma = factor @ factor.T
    exact = float(torch.trace(a @ sigma))

    def sample(g: torch.Generator | None) -> Tensor:
        return factor @ torch.randn(6, generator=g, dtype=F64)

    est, se = trace_h_sigma(MatrixOperator(a), sample, 400, generator=gen)
    assert abs(est - exact) < 4 * se
    # Gaussian ξ: Var(ξᵀAξ) = 2 tr((AΣ)²).
    exact_se = math.sqrt(2 * float(torch.trace(a @ sigma @ a @ sigma)) / 400)
    assert 0.8 * exact_se < se < 1.2 * exact_se


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_hessian_and_lanczos_match_cpu(mlp_case) -> None:
    _, x, y, h = mlp_case
    cuda_model = tiny_mlp().double().cuda()
    op = HessianOperator(cuda_model, per_example_ce, x, y, chunk_size=8)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(110), dtype=F64)
    torch.testing.assert_close(op.matvec(v.cuda()).cpu(), h @ v, rtol=1e-9, atol=1e-11)
    res = lanczos(op, k_max=60, tol=1e-8, generator=torch.Generator().manual_seed(111))
    assert res.vector.is_cuda
    assert abs(res.value - float(torch.linalg.eigvalsh(h)[-1])) < 1e-6
    est, se = hutchinson_trace(op, 30, generator=torch.Generator(device="cuda").manual_seed(1))
    assert abs(est - float(torch.trace(h))) < 4 * se
