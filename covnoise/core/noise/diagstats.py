"""Structures built from v = diag(C): the statistics schedule and the noise ξ = scale ⊙ z.

v (and tr C = Σv) comes from `DiagStats` recorded on a random sub-batch of `stats_rows` rows
every `stats_every` steps and kept in the state in between. The sub-batch estimate v̂ is
unbiased for diag(C), and since ξ = √c √v̂ ⊙ z with z independent of v̂,
Cov(ξ) = c·E[diag(v̂)] = c·diag(C) exactly (likewise c·E[Σv̂]/P·I for isotropic): the
sub-batch changes the noise's distribution, not its covariance. Refreshing every k steps
reuses an estimate that is k − 1 steps old. With source "fisher" the statistics are those of
the losses at labels sampled from the model's predictions, recorded on the same sub-batch by
one extra backward of that loss in the steps that refresh them (covnoise.core.step). A
subclass says how v becomes the noise scale, in a step (`_scale`) and on the probe
(`_probe_scale`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from covnoise.core.noise.base import NoiseState, Structure
from covnoise.core.noise.probe import Draw, Probe, ProbeNoise
from covnoise.core.pergrad import DiagStats, DiagStatsRecorder


def _materialise(grads: list[Tensor | None], state: NoiseState, like: Tensor) -> list[Tensor]:
    """Grads with None (unused parameters) replaced by zeros of the recorded shape."""
    return [
        torch.zeros(s, dtype=like.dtype, device=like.device) if g is None else g
        for g, s in zip(grads, state.shapes, strict=True)
    ]


def _first(grads: list[Tensor | None]) -> Tensor:
    for g in grads:
        if g is not None:
            return g
    raise ValueError("update: all gradients are None")


def gaussian_draw(scale: list[Tensor], device: torch.device) -> Draw:
    """The sampler ξ = scale ⊙ z with z ~ N(0, I), one tensor per parameter."""

    def draw(generator: torch.Generator) -> list[Tensor]:
        return [
            s
            * torch.randn(s.shape, generator=generator, device=generator.device, dtype=s.dtype).to(
                device
            )
            for s in scale
        ]

    return draw


class DiagStatsNoise(Structure):
    """Structures built from v = diag(C): refresh v on schedule, add fresh noise every step."""

    uses_stats = True

    def needs_stats(self, state: NoiseState) -> bool:
        """True on the first step and every `stats_every` steps after it."""
        return state.last_stats_step is None or state.step % self.stats_every == 0

    def _scale(self, v: Tensor) -> Tensor:
        """The step's noise scale from the flat v."""
        raise NotImplementedError

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """(‖Σ‖_F, the noise scale per parameter) on the probe, from v and tr C."""
        raise NotImplementedError

    def update(
        self,
        grads: list[Tensor],
        state: NoiseState,
        stats: DiagStats | None,
        generator: torch.Generator,
    ) -> tuple[list[Tensor], NoiseState]:
        """grads + scale ⊙ z with fresh z; refreshes the kept scale when `stats` are given."""
        changes: dict[str, Any] = {}
        if stats is not None:
            v = torch.cat([t.reshape(-1) for t in stats.variance()])
            changes = {
                "scale": self._scale(v),
                "refreshes": state.refreshes + 1,
                "last_stats_step": state.step,
            }
        elif self.needs_stats(state):
            raise ValueError(f"{self.name} noise needs DiagStats at step {state.step}")
        new_state = self._advance(state, **changes)
        like = _first(grads)
        grads = _materialise(grads, new_state, like)
        z = torch.randn(
            sum(g.numel() for g in grads), generator=generator, device=like.device, dtype=like.dtype
        )
        z.mul_(new_state.scale.to(like.dtype))
        noise = [
            t.view(g.shape) for t, g in zip(z.split([g.numel() for g in grads]), grads, strict=True)
        ]
        return list(torch._foreach_add(grads, noise)), new_state

    def statistics(self, probe: Probe) -> ProbeNoise:
        """v on the whole probe (at its sampled labels for source "fisher"); tr Σ = c·Σv,
        ‖Σ‖_F and ξ from the subclass's scale."""
        B = probe.size
        recorder = DiagStatsRecorder(probe.model, None, 1.0 / B, probe.params)
        v = probe.record(recorder, self.source).variance(B)
        trace_c = float(sum(t.double().sum() for t in v))
        fro, scale = self._probe_scale(v, trace_c, probe.n_params)
        return ProbeNoise(trace=self.c * trace_c, fro=fro, draw=gaussian_draw(scale, probe.device))
