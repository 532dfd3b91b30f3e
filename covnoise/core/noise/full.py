"""Full noise, K = C, sampled by reweighting the per-example losses.

With loss weights w = 1/B + √(c/B)(z − z̄) one ordinary backward gives ∇Σ w_n l_n = ḡ + ξ
with Cov(ξ) = c·C exactly: no per-example gradient is formed during training. The z of 64
steps are drawn at once (`WeightRows`, kept in the run's state), each step taking its row.
With source "fisher" the noise weights move to the losses at the sampled labels ŷ_n, in the same
backward of the same forward: Σ_n [l(x_n, y_n)/B + √(c/B)(z_n − z̄) l(x_n, ŷ_n)], whose
gradient is ḡ + ξ with Cov(ξ) = c·C_F, C_F the covariance of the sampled-label gradients.
Its logged statistics come from the B×B Gram matrix of the probe's per-example gradients (at
the probe's sampled labels for "fisher").
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import Tensor

from covnoise.core.noise.base import NoiseState, Structure, WeightRows, centred_weights
from covnoise.core.noise.probe import Probe, ProbeNoise
from covnoise.core.pergrad import DiagStats, GramRecorder, TraceStats


class FullNoise(Structure):
    """K = C, sampled by reweighting the per-example losses (the noise is in the gradient)."""

    name = "full"

    def init(self, params: list[Tensor]) -> NoiseState:
        """Fresh state, with the run's block of centred weights (`WeightRows`)."""
        return replace(super().init(params), weights=WeightRows())

    def loss_weights(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """w = 1/B + √(c/B)(z − z̄): ∇Σ w_n l_n = ḡ + ξ with Cov(ξ) = c·C exactly.

        Source "fisher": 1/B (the noise weights go to the sampled-label losses)."""
        if self.source == "fisher":
            return super().loss_weights(batch_size, state, generator, dtype)
        return state.weights.next(batch_size, self.c, generator, dtype, 1.0 / batch_size)

    def label_weights(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> Tensor | None:
        """Source "fisher": u = √(c/B)(z − z̄) on the sampled-label losses; otherwise None."""
        if self.source != "fisher":
            return None
        return state.weights.next(batch_size, self.c, generator, dtype)

    def update(
        self,
        grads: list[Tensor],
        state: NoiseState,
        stats: DiagStats | TraceStats | None,
        generator: torch.Generator,
        *,
        inplace: bool = False,
    ) -> tuple[list[Tensor], NoiseState]:
        """Identity: the weighted backward already produced ḡ + ξ."""
        return list(grads), self._advance(state)

    def statistics(self, probe: Probe) -> ProbeNoise:
        """tr Σ and ‖Σ‖_F from the doubly centred Gram matrix; ξ = ∇Σ √(c/B)(z_n − z̄) l_n."""
        B, c = probe.size, self.c
        gram = probe.record(GramRecorder(probe.model, 1.0 / B, probe.params), self.source)
        centred = gram - gram.mean(0, keepdim=True)
        centred = centred - centred.mean(1, keepdim=True)
        trace_c = float(centred.diagonal().sum()) / B
        fro = c / B * float(torch.linalg.matrix_norm(centred))

        def draw(generator: torch.Generator) -> list[Tensor]:
            losses = probe.losses
            w = centred_weights(B, c, generator, losses.dtype).to(losses.device)
            return probe.weighted_grad(w)

        return ProbeNoise(trace=c * trace_c, fro=fro, draw=draw)
