"""The top eigenpair of a curvature operator: Lanczos, power iteration and a chooser.

Lanczos stops on what its residuals guarantee for the top Ritz value at the requested
relative tolerance (Kato–Temple with the Ritz gap, or the residual alone; see `lanczos`);
power iteration, which has no gap estimate, on relative change and relative residual both
≤ tol. Both report the evidence for trusting the answer (an explicit residual, the matvecs
spent, the estimate after each iteration), so they can be compared fairly (bench.curvature)
and the sharpness a run logs comes with its residual.
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
    # Lanczos: the bound its stopping rule checked at the last step, min(r₁, r₁²/δ) (see
    # `lanczos`); power iteration: the residual; inf where none applies.
    error_bound: float = math.inf


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
    """w minus its projection on the rows of `active`, a second pass only if the first removed
    most of w (the "twice is enough" test: ‖w′‖ < ‖w‖/√2)."""
    before = torch.linalg.vector_norm(w)
    w = w.addmv(active.T, active @ w, alpha=-1)
    if torch.linalg.vector_norm(w) < 0.7071 * before:
        w.addmv_(active.T, active @ w, alpha=-1)
    return w


@dataclass
class _Ritz:
    """The Ritz pairs of the tridiagonal matrix and the residual of each, best first."""

    values: Tensor  # Ritz values, descending
    vectors: Tensor  # their eigenvectors in the Krylov basis (columns)
    residuals: Tensor  # β_k |s_kj| = ‖H y_j − θ_j y_j‖ for each Ritz pair (exact arithmetic)

    @property
    def top(self) -> float:
        return float(self.values[0])

    def error_bound(self) -> float:
        """min(r₁, r₁²/δ) with δ = θ₁ − max_{j≥2}(θ_j + r_j): the residual bound on the top
        Ritz value's distance to an eigenvalue, sharpened by Kato–Temple when the rest of the
        Ritz spectrum, widened by its own residuals, lies below θ₁ (∞ if it does not)."""
        r1 = float(self.residuals[0])
        if self.values.numel() < 2:
            return math.inf
        rest = float((self.values[1:] + self.residuals[1:]).max())
        gap = self.top - rest
        return r1 * r1 / gap if gap > 0 else math.inf


class _Krylov:
    """The Lanczos basis and tridiagonal matrix, built one vector at a time."""

    def __init__(self, op: LinearOperator, k_cap: int, dtype: torch.dtype) -> None:
        self.op, self.n, self.device = op, op.dim, op_device(op)
        self.op_dtype = op_dtype(op)
        self.basis = torch.empty(k_cap, self.n, device=self.device, dtype=dtype)  # rows as used
        self.alphas: list[float] = []
        self.betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0 where restarted
        self.eps = torch.finfo(self.op_dtype).eps
        self.scale = 0.0

    def extend(self, q: Tensor) -> tuple[Tensor, float, bool]:
        """Add q to the basis and apply the operator: (next residual w, β = ‖w‖, invariant).

        The three-term recurrence removes the large components (α q_k, β q_{k−1}); one pass
        of full reorthogonalisation against the basis then removes the round-off ones.
        """
        k = len(self.alphas)
        self.basis[k] = q
        w = self.op.matvec(q.to(self.op_dtype)).to(device=self.device, dtype=self.basis.dtype)
        alpha = float(torch.dot(q, w))
        self.alphas.append(alpha)
        w = torch.sub(w, q, alpha=alpha)  # a fresh tensor: the operator's output is not touched
        if k and self.betas[-1]:
            w.sub_(self.basis[k - 1], alpha=self.betas[-1])
        w = _orthogonalise(w, self.basis[: k + 1])
        beta = float(torch.linalg.vector_norm(w))
        self.scale = max(self.scale, abs(alpha), beta, self.betas[-1] if self.betas else 0.0)
        invariant = beta <= 100 * self.eps * self.scale or k + 1 == self.n
        return w, beta, invariant

    def ritz(self, beta: float) -> _Ritz:
        """The Ritz pairs of the tridiagonal matrix (descending) with residuals β|s_kj|."""
        tri = torch.diag(torch.tensor(self.alphas, dtype=torch.float64))
        if self.betas:
            off = torch.tensor(self.betas, dtype=torch.float64)
            tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(tri)
        evals, evecs = evals.flip(0), evecs.flip(1)
        return _Ritz(evals, evecs, beta * evecs[-1].abs())

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


def _stop(ritz: _Ritz, prev: float | None, invariant: bool, tol: float) -> bool:
    """The stopping rule of :func:`lanczos` (see there)."""
    if prev is None:
        return False
    theta = ritz.top
    scale = tol * max(abs(theta), torch.finfo(torch.float64).tiny)
    if not invariant and ritz.error_bound() <= scale:
        return True
    return float(ritz.residuals[0]) <= scale and abs(theta - prev) <= scale


def lanczos(
    op: LinearOperator,
    k_max: int = 20,
    tol: float = 1e-3,
    generator: torch.Generator | None = None,
    v0: Tensor | None = None,
    basis_dtype: torch.dtype | None = None,
    explicit_residual: bool | None = None,
) -> EigResult:
    """Top eigenpair by Lanczos with full reorthogonalisation.

    **Stopping rule.** After step k (k ≥ 2) let θ₁ ≥ θ₂ ≥ … be the Ritz values, s_j their
    eigenvectors of the tridiagonal matrix and r_j = β_k|s_kj| their residuals
    (r_j = ‖H y_j − θ_j y_j‖ for the Ritz vector y_j, exactly so in exact arithmetic). It stops
    when either

    * (gap) r₁²/δ ≤ tol·|θ₁| with δ = θ₁ − max_{j≥2}(θ_j + r_j) > 0, or
    * (no gap) r₁ ≤ tol·|θ₁| and |θ₁ − θ₁ of step k−1| ≤ tol·|θ₁|,

    or when the basis spans the whole space (then the answer is exact), and otherwise after
    ``k_max`` steps with ``converged`` false.

    **Guarantee.** Always θ₁ ≤ λ_max (θ₁ is a Rayleigh quotient) and some eigenvalue of H lies
    within r₁ of θ₁, so the no-gap branch puts θ₁ within tol·|θ₁| of an eigenvalue. Each θ_j
    has an eigenvalue within r_j; if the eigenvalue near θ₁ is λ_max and no eigenvalue other
    than λ_max lies above max_{j≥2}(θ_j + r_j) (the Krylov space has seen the top of the
    spectrum: the assumption of every Krylov method, which a start vector with no component
    along the top eigenvectors breaks), the Kato–Temple inequality gives
    0 ≤ λ_max − θ₁ ≤ r₁²/δ, so the gap branch stops with relative error ≤ tol. A cluster at
    the top that the Krylov space has not yet split (λ₂ within a few percent of λ_max, hidden
    in y₁) breaks the assumption too: the stop can then come early by up to the cluster's
    width (tests/test_curvature.py holds the rule to tol on resolved spectra only). The residual
    alone would need r₁ ≤ tol·|θ₁|, i.e. an error near tol²·|θ₁|/gap, several HVPs later.
    A small r₁ by itself bounds the distance to *some* eigenvalue, so one step never stops,
    and a step whose Krylov space became invariant (β ≈ 0, every r_j = 0) stops only by the
    no-gap branch, i.e. if θ₁ did not move: otherwise the iteration continues from a fresh
    random vector orthogonal to the basis, so a start vector without a component along the
    top eigenvector does not end it early.

    The basis is kept in ``basis_dtype`` (default: the operator's dtype, at least float32:
    a float32 HVP carries no more digits than a float32 basis keeps, and the reorthogonal-
    isation then reads half the memory), the tridiagonal matrix in float64; matvecs run in
    the operator's own precision.

    **Residual.** With full reorthogonalisation ‖H y₁ − θ₁ y₁‖ = r₁ holds to round-off, so a
    converged run returns λ = θ₁ and residual r₁ without another matvec. An unconverged one
    (``converged`` false: the budget ran out) spends one extra matvec on the returned vector
    for an explicit residual ‖Hv − λv‖, λ then being that vector's Rayleigh quotient, so what a
    run logs next to an unconverged λ does not rest on the recurrence. ``explicit_residual``
    True or False forces the check on or off.
    """
    if k_max < 1:
        raise ValueError(f"k_max must be >= 1, got {k_max}")
    n = op.dim
    k_cap = min(k_max, n)
    if basis_dtype is None:
        basis_dtype = torch.promote_types(op_dtype(op), torch.float32)
    q: Tensor | None = _start_vector(op, v0, generator, basis_dtype)
    krylov = _Krylov(op, k_cap, basis_dtype)
    history: list[float] = []
    prev: float | None = None
    converged = False
    ritz = _Ritz(torch.ones(1), torch.ones(1, 1, dtype=torch.float64), torch.zeros(1))
    for k in range(k_cap):
        w, beta, invariant = krylov.extend(q)
        ritz = krylov.ritz(0.0 if invariant else beta)
        history.append(ritz.top)
        if k + 1 == n or _stop(ritz, prev, invariant, tol):
            converged = True
            break
        prev = ritz.top
        if k + 1 == k_cap:
            break
        q = krylov.next_vector(w, beta, invariant, generator)
        if q is None:
            converged = True
            break
    k_used = len(krylov.alphas)
    check = not converged if explicit_residual is None else explicit_residual
    y = krylov.ritz_vector(ritz.vectors[:, 0])
    if check:
        vec, value, residual = _explicit_residual(op, y)
    else:
        vec = y.to(op_dtype(op))
        vec, value, residual = vec / torch.linalg.vector_norm(vec), ritz.top, ritz.residuals[0]
    bound = min(float(ritz.residuals[0]), ritz.error_bound())
    n_matvecs = k_used + int(check)
    return EigResult(value, vec, float(residual), n_matvecs, converged, k_used, history, bound)


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

    Stops when the relative change of the Rayleigh quotient and ‖Hv − ρv‖/|ρ| are both
    ≤ ``tol`` (the no-gap branch of :func:`lanczos`'s rule). Each iteration's matvec is
    applied to the vector that would be returned, so the residual is exact without an extra
    matvec. Power iteration finds the
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
    return EigResult(value, vec, residual, total, converged, total, history, residual)


def top_eigenvalue(op: LinearOperator, method: str = "lanczos", **kw) -> EigResult:
    """Top eigenpair by ``method`` ("lanczos" or "power"); keyword arguments pass through."""
    if method == "lanczos":
        return lanczos(op, **kw)
    if method in ("power", "power_iteration"):
        return power_iteration(op, **kw)
    raise ValueError(f"unknown method {method!r}; use 'lanczos' or 'power'")
