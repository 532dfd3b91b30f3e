"""Curvature of the training loss: Hessian-vector products and the algorithms that use them.

Operators and algorithms are kept apart. An operator is anything with ``dim``, ``n_matvecs``
and ``matvec(v)`` on flat 1-D tensors (optionally ``device`` and ``dtype``, which the
algorithms use to place their work); the algorithms (Lanczos, power iteration, Hutchinson,
Tr(HΣ)) accept any operator, so they are tested against explicit matrices and used on
Hessians of networks without change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = [
    "EigResult",
    "HessianOperator",
    "LinearOperator",
    "MatrixOperator",
    "hutchinson_trace",
    "lanczos",
    "power_iteration",
    "top_eigenvalue",
    "trace_h_sigma",
]


@runtime_checkable
class LinearOperator(Protocol):
    """A symmetric linear map on flat vectors of length ``dim``; ``n_matvecs`` counts calls."""

    dim: int
    n_matvecs: int

    def matvec(self, v: Tensor) -> Tensor: ...


def _op_device(op: LinearOperator) -> torch.device:
    return torch.device(getattr(op, "device", "cpu"))


def _op_dtype(op: LinearOperator) -> torch.dtype:
    return getattr(op, "dtype", torch.float64)


class MatrixOperator:
    """An explicit symmetric matrix as an operator (tests, the convex quadratic).

    ``matvec`` accepts a vector of any floating dtype/device and returns the product in the
    dtype and device of that vector; the product itself is computed in the matrix's dtype.
    """

    def __init__(self, matrix: Tensor, check_symmetric: bool = True) -> None:
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"MatrixOperator needs a square matrix, got {tuple(matrix.shape)}")
        if check_symmetric:
            scale = matrix.abs().max().clamp_min(torch.finfo(matrix.dtype).tiny)
            asym = (matrix - matrix.T).abs().max() / scale
            if asym > 100 * torch.finfo(matrix.dtype).eps:
                raise ValueError(f"MatrixOperator needs a symmetric matrix (asymmetry {asym:.2e})")
        self.matrix = matrix
        self.dim = int(matrix.shape[0])
        self.device = matrix.device
        self.dtype = matrix.dtype
        self.n_matvecs = 0

    def matvec(self, v: Tensor) -> Tensor:
        """Return ``matrix @ v``."""
        self.n_matvecs += 1
        out = self.matrix @ v.to(device=self.device, dtype=self.dtype)
        return out.to(device=v.device, dtype=v.dtype)


class HessianOperator:
    """H of the mean training loss of ``model`` on ``(x, y)`` w.r.t. its trainable params,
    applied by double backprop (Pearlmutter). Flat vectors; ``n_matvecs`` counts HVPs.

    ``loss_fn(logits, y)`` returns per-example losses; the operator uses their mean.
    ``chunk_size`` evaluates the probe in chunks (each weighted by its size) to bound memory.

    With a single chunk the graph of the first gradient is built once and kept, so each HVP is
    one backward pass through it (``cache_graph``, default: on iff there is a single chunk).
    The cache belongs to this object only: ``close()`` (or leaving a ``with`` block, or
    dropping the operator) frees it, and it is rebuilt automatically if any parameter is
    modified in place, so the operator always applies the Hessian at the current parameters.

    The model is used in whatever mode it is in; put it in ``eval()`` if it has dropout, or
    the operator is not a fixed matrix. Work happens on the device and dtype of the params;
    ``matvec`` returns its result in the dtype and device of its argument.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        params: list[Tensor] | None = None,
        chunk_size: int | None = None,
        cache_graph: bool | None = None,
    ) -> None:
        if params is None:
            params = [p for p in model.parameters() if p.requires_grad]
        params = list(params)
        if not params:
            raise ValueError("HessianOperator needs at least one trainable parameter")
        if not all(p.requires_grad for p in params):
            raise ValueError("every parameter of a HessianOperator must have requires_grad=True")
        n = int(x.shape[0])
        if n == 0 or int(y.shape[0]) != n:
            raise ValueError(f"x and y need the same non-zero row count ({n}, {y.shape[0]})")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")

        self.model = model
        self.loss_fn = loss_fn
        self.params = params
        self.device = params[0].device
        self.dtype = params[0].dtype
        x = x.to(self.device)
        self.x = x.to(self.dtype) if x.is_floating_point() else x
        self.y = y.to(self.device)
        self.n_examples = n
        self.shapes = [p.shape for p in params]
        self.numels = [p.numel() for p in params]
        self.dim = sum(self.numels)
        self.n_matvecs = 0
        step = n if chunk_size is None else min(chunk_size, n)
        self.chunks = [(start, min(start + step, n)) for start in range(0, n, step)]
        self.cache_graph = len(self.chunks) == 1 if cache_graph is None else bool(cache_graph)
        self._cache: list[Sequence[Tensor]] | None = None  # first-gradient graph per chunk
        self._cache_versions: list[int] | None = None

    # -- public API -------------------------------------------------------------------------

    def matvec(self, v: Tensor) -> Tensor:
        """Return H v for a flat vector ``v`` (in ``v``'s dtype and device)."""
        if v.shape != (self.dim,):
            raise ValueError(f"matvec expects a flat vector of length {self.dim}, got {v.shape}")
        vw = v.detach().to(device=self.device, dtype=self.dtype)
        vs = [t.view(s) for t, s in zip(torch.split(vw, self.numels), self.shapes, strict=True)]
        out = torch.cat([h.reshape(-1) for h in self.hvp_list(vs)])
        return out.to(device=v.device, dtype=v.dtype)

    def hvp_list(self, vs: list[Tensor]) -> list[Tensor]:
        """Return H v with ``v`` and the result given as tensors shaped like the params."""
        if len(vs) != len(self.params):
            raise ValueError(f"hvp_list expects {len(self.params)} tensors, got {len(vs)}")
        vs = [
            t.detach().to(device=self.device, dtype=self.dtype).reshape(s)
            for t, s in zip(vs, self.shapes, strict=True)
        ]
        self.n_matvecs += 1
        total: list[Tensor] | None = None
        with torch.enable_grad():
            for grads in self._chunk_grads():
                hv = self._grad_of_dot(grads, vs)
                total = hv if total is None else [a.add_(b) for a, b in zip(total, hv, strict=True)]
        assert total is not None
        return total

    def gradient(self) -> Tensor:
        """Return the flat gradient of the mean loss (no graph kept; a timing reference)."""
        flat: Tensor | None = None
        with torch.enable_grad():
            for start, end in self.chunks:
                loss = self._chunk_loss(start, end)
                g = torch.autograd.grad(
                    loss, self.params, allow_unused=True, materialize_grads=True
                )
                gf = torch.cat([t.reshape(-1) for t in g])
                flat = gf if flat is None else flat.add_(gf)
        assert flat is not None
        return flat.detach()

    def close(self) -> None:
        """Free the cached gradient graph (it is rebuilt on the next matvec if needed)."""
        self._cache = None
        self._cache_versions = None

    def __enter__(self) -> HessianOperator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals --------------------------------------------------------------------------

    def _chunk_loss(self, start: int, end: int) -> Tensor:
        xc, yc = self.x[start:end], self.y[start:end]
        losses = self.loss_fn(self.model(xc), yc)
        if losses.ndim == 0 or losses.shape[0] != end - start:
            raise ValueError(
                "loss_fn must return per-example losses (reduction='none'), "
                f"got shape {tuple(losses.shape)} for {end - start} examples"
            )
        # Sum over the chunk divided by the probe size: chunks weighted by size give the mean.
        return losses.sum() / self.n_examples

    def _first_grads(self, start: int, end: int) -> Sequence[Tensor]:
        loss = self._chunk_loss(start, end)
        return torch.autograd.grad(
            loss, self.params, create_graph=True, allow_unused=True, materialize_grads=True
        )

    def _versions(self) -> list[int]:
        return [p._version for p in self.params]

    def _chunk_grads(self) -> Iterator[Sequence[Tensor]]:
        """Yield the first-gradient graph of each chunk (kept between calls if caching)."""
        if not self.cache_graph:
            for s, e in self.chunks:
                yield self._first_grads(s, e)
            return
        if self._cache is None or self._cache_versions != self._versions():
            self._cache = None  # drop the stale graph before building the new one
            self._cache = [self._first_grads(s, e) for s, e in self.chunks]
            self._cache_versions = self._versions()
        yield from self._cache

    def _grad_of_dot(self, grads: Sequence[Tensor], vs: list[Tensor]) -> list[Tensor]:
        """d/dθ ⟨g(θ), v⟩ = H v. Gradients that do not depend on θ contribute zero."""
        live = [(g, v) for g, v in zip(grads, vs, strict=True) if g.requires_grad]
        if not live:
            return [torch.zeros_like(p) for p in self.params]
        return list(
            torch.autograd.grad(
                [g for g, _ in live],
                self.params,
                grad_outputs=[v for _, v in live],
                retain_graph=self.cache_graph,
                allow_unused=True,
                materialize_grads=True,
            )
        )


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
    device = _op_device(op)
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
    n, device = op.dim, _op_device(op)
    k_cap = min(k_max, n)
    q = _start_vector(op, v0, generator, basis_dtype)
    basis = torch.zeros(k_cap, n, device=device, dtype=basis_dtype)
    alphas: list[float] = []
    betas: list[float] = []  # betas[j] couples q_j and q_{j+1}; 0 where the space restarted
    history: list[float] = []
    eps = torch.finfo(_op_dtype(op)).eps
    scale = 0.0
    prev: float | None = None
    converged = False
    matvecs = 0
    theta, y = 0.0, torch.ones(1, dtype=torch.float64)
    for k in range(k_cap):
        basis[k] = q
        w = op.matvec(q).to(device=device, dtype=basis_dtype)
        matvecs += 1
        alpha = float(torch.dot(q, w))
        alphas.append(alpha)
        # Full reorthogonalisation against the whole basis, twice (classical Gram-Schmidt).
        active = basis[: k + 1]
        for _ in range(2):
            w = w - active.T @ (active @ w)
        beta = float(torch.linalg.vector_norm(w))
        scale = max(scale, abs(alpha), beta, betas[-1] if betas else 0.0)
        invariant = beta <= 100 * eps * scale or k + 1 == n

        tri = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            tri = tri + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(tri)
        theta, y = float(evals[-1]), evecs[:, -1]
        bound = 0.0 if invariant else beta * abs(float(y[-1]))
        history.append(theta)
        if _converged(theta, prev, bound, tol) or k + 1 == n:
            converged = True
            break
        prev = theta
        if k + 1 == k_cap:
            break
        if invariant:
            # Restart in the orthogonal complement; the new block is decoupled (β = 0).
            w = _random_start(n, generator, device, basis_dtype)
            for _ in range(2):
                w = w - active.T @ (active @ w)
            beta_new = float(torch.linalg.vector_norm(w))
            if beta_new <= 100 * eps * math.sqrt(n):
                converged = True
                break
            betas.append(0.0)
            q = w / beta_new
        else:
            betas.append(beta)
            q = w / beta

    k_used = len(alphas)
    ritz = basis[:k_used].T @ y.to(device=device, dtype=basis_dtype)
    vec, value, residual = _explicit_residual(op, ritz)
    return EigResult(value, vec, residual, matvecs + 1, converged, k_used, history)


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
    dtype = _op_dtype(op)
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


def _mean_and_se(samples: list[float]) -> tuple[float, float]:
    t = torch.tensor(samples, dtype=torch.float64)
    mean = float(t.mean())
    se = float(t.std(correction=1) / math.sqrt(len(samples))) if len(samples) > 1 else math.inf
    return mean, se


def trace_h_sigma(
    op: LinearOperator,
    sample: Callable[[torch.Generator | None], Tensor],
    n_samples: int,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Tr(HΣ) = E[ξᵀHξ] for zero-mean ξ with E[ξξᵀ] = Σ; returns (estimate, standard error).

    ``sample(generator)`` draws one flat ξ (e.g. a random combination of per-example
    gradients). The standard error is the sample standard deviation over √n_samples.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    values = []
    for _ in range(n_samples):
        xi = sample(generator).reshape(-1)
        hxi = op.matvec(xi)
        values.append(float(torch.dot(xi.to(torch.float64), hxi.to(torch.float64))))
    return _mean_and_se(values)


def hutchinson_trace(
    op: LinearOperator, n_samples: int, generator: torch.Generator | None = None
) -> tuple[float, float]:
    """tr H by Hutchinson's estimator with Rademacher probes; returns (estimate, standard error)."""
    device, dtype = _op_device(op), _op_dtype(op)
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def rademacher(gen: torch.Generator | None) -> Tensor:
        z = torch.randint(0, 2, (op.dim,), generator=gen, device=gen_device)
        return (2 * z - 1).to(device=device, dtype=dtype)

    return trace_h_sigma(op, rademacher, n_samples, generator)
