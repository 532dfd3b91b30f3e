"""The top eigenpair of a curvature operator: Lanczos, power iteration and a chooser.

Both methods stop on the same rule (relative change of the estimate and relative residual
both ≤ tol) and report the evidence for trusting the answer (an explicit residual, the
matvecs spent, the estimate after each iteration), so they can be compared fairly
(bench.curvature) and the sharpness a run logs comes with its residual.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from covnoise.core.curvature.operators import LinearOperator, op_device, op_dtype


@dataclass
class EigResult:
    """Top (largest algebraic) eigenpair estimate and the evidence for trusting it."""

    value: float  # top eigenvalue estimate (largest algebraic)
    vector: Tensor  # unit eigenvector estimate
    residual: float  # ‖H v − λ v‖ from an explicit matvec on the returned v
    n_matvecs: int  # matvecs used, including the residual check
    converged: bool
    iterations: int
    history: list[float] = field(default_factory=list)  # estimate after each iteration


def _random_start(
    dim: int, generator: torch.Generator | None, device: torch.device, dtype: torch.dtype
) -> Tensor:
    gen_device = generator.device if generator is not None else torch.device("cpu")
    v = torch.randn(dim, generator=generator, device=gen_device, dtype=dtype)
    return v.to(device)


def _start_vector(
    op: LinearOperator,
    v0: Tensor | None,
    generator: torch.Generator | None,
    dtype: torch.dtype,
) -> Tensor:
    device = op_device(op)
    if v0 is None:
        v = _random_start(op.dim, generator, device, dtype)
    else:
        v = v0.detach().reshape(-1).to(device=device, dtype=dtype).clone()
        if v.numel() != op.dim:
            raise ValueError(f"v0 has {v.numel()} entries, the operator has dim {op.dim}")
    norm = torch.linalg.vector_norm(v)
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("the start vector must be finite and non-zero")
    return v / norm


def _converged(theta: float, prev: float | None, bound: float, tol: float) -> bool:
    denom = max(abs(theta), torch.finfo(torch.float64).tiny)
    if prev is None:
        return False
    return abs(theta - prev) / denom <= tol and bound / denom <= tol


def _orthogonalise(w: Tensor, active: Tensor) -> Tensor:
    """w minus its projection on the rows of `active`, twice (classical Gram-Schmidt)."""
    for _ in range(2):
        w = w - active.T @ (active @ w)
    return w


class _Krylov:
    """The Lanczos basis and tridiagonal matrix, built one vector at a time."""

    def __init__(self, op: LinearOperator, k_cap: int, dtype: torch.dtype) -> None:
        self.op, self.n, self.device = op, op.dim, op_device(op)
        self.basis = torch.zeros(k_cap, self.n, device=self.device, dtype=dtype)
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0 where restarted
        self.eps = torch.finfo(op_dtype(op)).eps
        self.scale = 0.0

    def extend(self, q: Tensor) -> tuple[Tensor, float, bool]:
        """Add q to the basis and apply the operator: (next residual w, β = ‖w‖, invariant)."""
        k = len(self.alphas)
        self.basis[k] = q
        w = self.op.matvec(q).to(device=self.device, dtype=self.basis.dtype)
        alpha = float(torch.dot(q, w))
        self.alphas.append(alpha)
        w = _orthogonalise(w, self.basis[: k + 1])
        beta = float(torch.linalg.vector_norm(w))
        self.scale = max(self.scale, abs(alpha), beta, self.betas[-1] if self.betas else 0.0)
        invariant = beta <= 100 * self.eps * self.scale or k + 1 == self.n
        return w, beta, invariant

    def top_ritz(self) -> tuple[float, Tensor]:
        """The largest eigenvalue of the tridiagonal matrix and its eigenvector."""
        tri = torch.diag(torch.tensor(self.alphas, dtype=torch.float64))
        if self.betas:
            off = torch.tensor(self.betas, dtype=torch.float64)
            tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(tri)
        return float(evals[-1]), evecs[:, -1]

    def next_vector(
        self, w: Tensor, beta: float, invariant: bool, generator: torch.Generator | None
    ) -> Tensor | None:
        """The next basis vector; None when an invariant basis already spans the space.

        After an invariant subspace the iteration restarts in the orthogonal complement
        from a fresh random vector; the new block is decoupled (β = 0).
        """
        if not invariant:
            self.betas.append(beta)
            return w / beta
        active = self.basis[: len(self.alphas)]
        w = _orthogonalise(_random_start(self.n, generator, self.device, self.basis.dtype), active)
        beta_new = float(torch.linalg.vector_norm(w))
        if beta_new <= 100 * self.eps * math.sqrt(self.n):
            return None
        self.betas.append(0.0)
        return w / beta_new

    def ritz_vector(self, y: Tensor) -> Tensor:
        """The basis combination with coefficients y."""
        k_used = len(self.alphas)
        return self.basis[:k_used].T @ y.to(device=self.device, dtype=self.basis.dtype)


def lanczos(
    op: LinearOperator,
    k_max: int = 20,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    v0: Tensor | None = None,
    basis_dtype: torch.dtype = torch.float64,
) -> EigResult:
    """Top eigenpair by Lanczos with full reorthogonalisation.

    Stops when the relative change of the top Ritz value between iterations and the Lanczos
    residual bound β_k|e_kᵀy|/|θ| are both ≤ ``tol``, or after ``k_max`` steps. The basis and
    tridiagonal matrix are kept in ``basis_dtype`` (float64 by default); matvecs run in the
    operator's own precision. If the Krylov space becomes invariant (β ≈ 0) the iteration
    continues from a fresh random vector orthogonal to the basis, so a start vector without a
    component along the top eigenvector does not stop it early; when the basis spans the whole
    space the result is exact. One extra matvec on the returned vector gives an honest
    residual ‖Hv − λv‖, and λ is that vector's Rayleigh quotient.
    """
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    n = op.dim
    k_cap = min(k_max, n)
    q: Tensor | None = _start_vector(op, v0, generator, basis_dtype)
    krylov = _Krylov(op, k_cap, basis_dtype)
    history: list[float] = []
    prev: float | None = None
    converged = False
    y = torch.ones(1, dtype=torch.float64)
    for k in range(k_cap):
        w, beta, invariant = krylov.extend(q)
        theta, y = krylov.top_ritz()
        bound = 0.0 if invariant else beta * abs(float(y[-1]))
        history.append(theta)
        if _converged(theta, prev, bound, tol) or k + 1 == n:
            converged = True
            break
        prev = theta
        if k + 1 == k_cap:
            break
        q = krylov.next_vector(w, beta, invariant, generator)
        if q is None:
            converged = True
            break
    k_used = len(krylov.alphas)
    vec, value, residual = _explicit_residual(op, krylov.ritz_vector(y))
    return EigResult(value, vec, residual, k_used + 1, converged, k_used, history)


def _explicit_residual(op: LinearOperator, v: Tensor) -> tuple[Tensor, float, float]:
    """Normalise ``v`` in the operator's dtype, apply the operator once, return (v, λ, ‖Hv−λv‖)."""
    out_dtype = getattr(op, "dtype", v.dtype)
    vec = v.to(out_dtype)
    vec = vec / torch.linalg.vector_norm(vec)
    v64 = vec.to(torch.float64)
    hv = op.matvec(vec).to(torch.float64)
    value = float(torch.dot(v64, hv) / torch.dot(v64, v64))
    residual = float(torch.linalg.vector_norm(hv - value * v64))
    return vec, value, residual


def _power_run(
    op: LinearOperator,
    v: Tensor,
    shift: float,
    max_iter: int,
    tol: float,
    history: list[float],
) -> tuple[Tensor, float, float, int, bool]:
    """Power iteration on H − shift·I; returns (v, λ of H, ‖Hv − λv‖, matvecs, converged)."""
    prev: float | None = None
    value, residual = 0.0, float("inf")
    for i in range(max_iter):
        w = op.matvec(v).to(v.dtype) - shift * v
        rq = float(torch.dot(v, w))
        value = rq + shift
        residual = float(torch.linalg.vector_norm(w - rq * v))
        history.append(value)
        if _converged(value, prev, residual, tol):
            return v, value, residual, i + 1, True
        prev = value
        norm = torch.linalg.vector_norm(w)
        if i + 1 < max_iter and norm > 0:
            v = w / norm
    return v, value, residual, max_iter, False


def power_iteration(
    op: LinearOperator,
    max_iter: int = 1000,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    v0: Tensor | None = None,
) -> EigResult:
    """Top (largest algebraic) eigenpair by power iteration on the Rayleigh quotient.

    Same stopping rule as :func:`lanczos`: relative change of the Rayleigh quotient and
    ‖Hv − ρv‖/|ρ| both ≤ ``tol``. Each iteration's matvec is applied to the vector that would
    be returned, so the residual is exact without an extra matvec. Power iteration finds the
    eigenvalue of largest magnitude; if that is negative the run is repeated on H − λ·I
    (matvecs counted), whose dominant eigenvalue is the largest algebraic one of H.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    dtype = op_dtype(op)
    start = _start_vector(op, v0, generator, dtype)
    history: list[float] = []
    vec, value, residual, used, converged = _power_run(op, start, 0.0, max_iter, tol, history)
    total = used
    if value < 0 and converged:
        # Restart from the original vector: the converged one is nearly orthogonal to the top.
        vec, value, residual, used, converged = _power_run(op, start, value, max_iter, tol, history)
        total += used
    return EigResult(value, vec, residual, total, converged, total, history)


def top_eigenvalue(op: LinearOperator, method: str = "lanczos", **kw) -> EigResult:
    """Top eigenpair by ``method`` ("lanczos" or "power"); keyword arguments pass through."""
    if method == "lanczos":
        return lanczos(op, **kw)
    if method in ("power", "power_iteration"):
        return power_iteration(op, **kw)
    raise ValueError(f"unknown method {method!r}; use 'lanczos' or 'power'")
