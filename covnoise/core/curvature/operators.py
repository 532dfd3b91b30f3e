"""Curvature operators: symmetric linear maps on flat vectors, kept apart from the algorithms.

An operator is anything with ``dim``, ``n_matvecs`` and ``matvec(v)`` on flat 1-D tensors
(optionally ``device`` and ``dtype``, which the algorithms use to place their work). Here:
an explicit matrix (tests, the convex quadratic) and the Hessian of a network's mean loss
applied by double backprop, so the algorithms are tested on known spectra and used on
networks without change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn


@runtime_checkable
class LinearOperator(Protocol):
    """A symmetric linear map on flat vectors of length ``dim``; ``n_matvecs`` counts calls."""

    dim: int
    n_matvecs: int

    def matvec(self, v: Tensor) -> Tensor: ...


def op_device(op: LinearOperator) -> torch.device:
    """Where the operator works (the CPU unless it says otherwise)."""
    return torch.device(getattr(op, "device", "cpu"))


def op_dtype(op: LinearOperator) -> torch.dtype:
    """The operator's precision (float64 unless it says otherwise)."""
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
        """Return H v for a flat ``v`` (in ``v``'s dtype and device).

        ``v`` is cut into per-parameter views (no copy) that go straight to autograd as
        ``grad_outputs``; the only copy is the one ``cat`` of the result.
        """
        if v.shape != (self.dim,):
            raise ValueError(f"matvec expects a flat vector of length {self.dim}, got {v.shape}")
        vw = v.detach()
        if vw.device != self.device or vw.dtype != self.dtype:
            vw = vw.to(device=self.device, dtype=self.dtype)
        vs = [t.view(s) for t, s in zip(torch.split(vw, self.numels), self.shapes, strict=True)]
        hv = self._hvp(vs)
        out = torch.cat([h.reshape(-1) for h in hv]) if len(hv) > 1 else hv[0].reshape(-1)
        if out.device != v.device or out.dtype != v.dtype:
            out = out.to(device=v.device, dtype=v.dtype)
        return out

    def hvp_list(self, vs: list[Tensor]) -> list[Tensor]:
        """Return H v with ``v`` and the result given as tensors shaped like the params."""
        if len(vs) != len(self.params):
            raise ValueError(f"hvp_list expects {len(self.params)} tensors, got {len(vs)}")
        vs = [
            t.detach().to(device=self.device, dtype=self.dtype).reshape(s)
            for t, s in zip(vs, self.shapes, strict=True)
        ]
        return self._hvp(vs)

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

    def _hvp(self, vs: list[Tensor]) -> list[Tensor]:
        """H v for ``vs`` already detached, shaped, on the params' device and dtype."""
        self.n_matvecs += 1
        cache = self._cache
        if cache is not None and len(cache) == 1 and self._cache_versions == self._versions():
            return self._grad_of_dot(cache[0], vs)  # the common case: one kept graph, no loop
        total: list[Tensor] | None = None
        with torch.enable_grad():
            for grads in self._chunk_grads():
                hv = self._grad_of_dot(grads, vs)
                total = hv if total is None else [a.add_(b) for a, b in zip(total, hv, strict=True)]
        assert total is not None
        return total

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
        outs, gos = grads, vs
        if not all(g.requires_grad for g in grads):
            live = [(g, v) for g, v in zip(grads, vs, strict=True) if g.requires_grad]
            if not live:
                return [torch.zeros_like(p) for p in self.params]
            outs, gos = [g for g, _ in live], [v for _, v in live]
        return list(
            torch.autograd.grad(
                outs,
                self.params,
                grad_outputs=gos,
                retain_graph=self.cache_graph,
                allow_unused=True,
                materialize_grads=True,
            )
        )
