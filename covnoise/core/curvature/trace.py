"""Stochastic trace estimators on a curvature operator: Tr(HΣ) and Hutchinson's tr H.

Tr(HΣ) = E[ξᵀHξ] for zero-mean ξ with covariance Σ is the first-order loss increase a noise
of covariance Σ causes; it is estimated from draws of ξ, each costing one matvec.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from covnoise.core.curvature.operators import LinearOperator, op_device, op_dtype


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
    device, dtype = op_device(op), op_dtype(op)
    gen_device = generator.device if generator is not None else torch.device("cpu")

    def rademacher(gen: torch.Generator | None) -> Tensor:
        z = torch.randint(0, 2, (op.dim,), generator=gen, device=gen_device)
        return (2 * z - 1).to(device=device, dtype=dtype)

    return trace_h_sigma(op, rademacher, n_samples, generator)
