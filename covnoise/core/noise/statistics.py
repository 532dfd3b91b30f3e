"""The noise statistics logged at evaluation: tr Σ, ‖Σ‖_F and a Monte-Carlo Tr(HΣ).

The structure measures Σ = c·K on the probe and supplies the sampler of ξ
(`NoiseStructure.statistics`); this module turns the draws into Tr(HΣ) = E[ξᵀHξ] with its
standard error, the same way for every structure.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from covnoise.core.noise.base import NoiseStructure
from covnoise.core.noise.probe import Probe


def _dot(a: list[Tensor], b: list[Tensor]) -> float:
    return float(sum((x.double() * y.double()).sum() for x, y in zip(a, b, strict=True)))


def noise_statistics(
    structure: NoiseStructure,
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    hvp: Callable[[list[Tensor]], list[Tensor]] | None,
    n_samples: int,
    generator: torch.Generator,
) -> dict[str, float]:
    """tr Σ, ‖Σ‖_F and a Monte-Carlo Tr(HΣ) for Σ = c·K computed exactly on the probe (x, y).

    `loss_fn(logits, y)` gives per-example losses; `hvp` maps a list shaped like the trainable
    parameters to H times it. Tr(HΣ) is the mean of ξᵀHξ over `n_samples` draws of ξ from the
    structure on the whole probe, with its standard error (NaN when hvp is None or fewer than
    two draws; all zero when Σ = 0). The model's .grad fields are left untouched.
    """
    noise = structure.statistics(Probe(model, loss_fn, x, y))
    out = {
        "noise_trace": noise.trace,
        "noise_fro": noise.fro,
        "noise_trace_hsigma": 0.0,
        "noise_trace_hsigma_se": 0.0,
    }
    if noise.draw is None:
        return out
    nan = float("nan")
    if hvp is None or n_samples < 1:
        out["noise_trace_hsigma"] = out["noise_trace_hsigma_se"] = nan
        return out
    draws = []
    for _ in range(n_samples):
        xi = noise.draw(generator)
        draws.append(_dot(xi, [h.detach() for h in hvp(xi)]))
    t = torch.tensor(draws, dtype=torch.float64)
    out["noise_trace_hsigma"] = float(t.mean())
    out["noise_trace_hsigma_se"] = float(t.std() / math.sqrt(len(draws))) if len(draws) > 1 else nan
    return out
