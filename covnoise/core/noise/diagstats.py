"""Structures built from v = diag(C): the statistics schedule and the noise ξ = scale ⊙ z.

v comes from `DiagStats` (diag) and tr C = Σv from `TraceStats` (isotropic: per-example
gradient norms, no per-coordinate product; `Structure.stats_kind` says which the step
records), recorded on a random sub-batch of `stats_rows` rows every `stats_every` steps and
kept in the state in between. The sub-batch estimate v̂ is unbiased for diag(C), and since
ξ = √c √v̂ ⊙ z with z independent of v̂, Cov(ξ) = c·E[diag(v̂)] = c·diag(C) exactly
(likewise c·E[Σv̂]/P·I for isotropic): the sub-batch changes the noise's distribution, not
its covariance. Refreshing every k steps reuses an estimate that is k − 1 steps old. With
source "fisher" the statistics are those of the losses at labels sampled from the model's
predictions, recorded on the same sub-batch by one extra backward of that loss in the steps
that refresh them (covnoise.core.step). A subclass says how v becomes the noise scale, in a
step (`_scale_from`) and on the probe (`_probe_scale`).

Schedule at small batches and small models (`stats_interval`): the default schedule
(RunConfig: 128 rows every 4 steps) refreshes every 4 · (512 // B) steps below B = 512 (8 at
B = 256, 16 at B = 128, 32 at B = 64) and every 4 steps from B = 512 up, except that it
refreshes every 8 steps when B · P < 2²³ (≈ 8.4·10⁶: B = 512 at P < 16384, B = 1024 at
P < 8192), P the number of parameters. At B ≤ 128 the default records the whole batch, and a
diag refresh then costs 0.4–1.6 plain steps (a third of its matrix products, plus a fixed
cost per refresh that dominates at small P; isotropic's TraceStats add no matrix product,
only that fixed cost), so every 4 steps it alone takes 0.1–0.4 of a plain step (MLP at
P = 1e6 and 1e4, bench.steps --bp-grid). At small B · P a plain step is about a millisecond
and the refresh's fixed cost (hooks, the sub-batch's row selection, the variance and scale,
≈ 1 plain step at B = 512, P = 10⁴) is what every 4 steps costs 0.25 of a plain step; every
8 steps halves it, the interval B = 256 already has. The rule changes only how long an
estimate is reused: each refresh is the same unbiased estimate of diag(C) at the step that
records it (the whole-batch or sub-batch v̂, drawn afresh), and z is drawn afresh every step
independently of v̂, so Cov(ξ) = c·E[diag(v̂)] = c·K as above; the estimate is up to
interval − 1 steps old. What the staleness costs is measured by
`python -m bench.steps --stale-errors` (the kept v̂ and tr C against each step's batch,
plain SGD at lr 0.1 from initialisation, MLP and CNN at P ≈ 10⁴, B = 512): v̂ 0.20–0.27
relative error (mostly the 128-row sub-batch's own), tr C 2–3% over 4 steps and 7–9% over 8.
Any other (stats_rows, stats_every) is used as given, at every batch size and model size.

The noise itself: z ~ N(0, I_P) is drawn fresh every step into the run's one flat buffer
(kept in the state with its per-parameter views) by `gaussian_` (on the CPU from P = 2¹⁴ up:
numpy's SFC64 bits and Box–Muller with numpy's SIMD functions on one thread, the same method
as torch's `normal_` at 1.3–1.6× its speed from P = 3·10⁴ to 10⁶, from one SFC64 per run
seeded from the run's generator at its first draw and kept in the state; below that, and off
the CPU, torch's `normal_` with the run's generator). g + ξ is formed as new tensors by one
fused list operation over the parameters (isotropic: g + σ z, σ read as a number on the CPU;
diag: g + s ⊙ z, s = √(c·v̂) kept per parameter from the refresh, where `DiagStats.std`
makes it in four fused list operations); the inputs are left alone. Small models gain most
from the fused operations: each torch call costs several microseconds right after a
backward, and a 0.5 ms step of a 10⁴-parameter MLP paid for about 25 of them. The draw is
still the largest part of a non-refreshing step's extra cost (2.1–2.4 ms for P = 10⁶ on the
development machines, a quarter of a plain step of a 10⁶-parameter MLP at B = 128), so
≤ 1.3× stays out of reach at B ≲ 128 and large P whatever the statistics schedule.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from covnoise.config import RunConfig
from covnoise.core.noise.base import NoiseState, Structure
from covnoise.core.noise.gaussian import gaussian_, new_bits, uses_bits
from covnoise.core.noise.probe import Draw, Probe, ProbeNoise
from covnoise.core.pergrad import DiagStats, DiagStatsRecorder, TraceStats

#: The default schedule (RunConfig.stats_rows, RunConfig.stats_every): the one that
#: `stats_interval` stretches at small batches.
DEFAULT_SCHEDULE = (RunConfig().stats_rows, RunConfig().stats_every)
#: Below this batch size the default schedule refreshes less often.
STRETCH_BELOW = 512
#: Below this B · P the default schedule refreshes every 8 steps (see the module docstring).
SMALL_WORK = 2**23


def stats_interval(
    batch_size: int | None, stats_rows: int | None, stats_every: int, n_params: int | None = None
) -> int:
    """Steps between refreshes of v̂: `stats_every`, except for the default schedule
    (128 rows every 4 steps): 4 · (512 // B) below B = 512 (8 at B = 256, 16 at B = 128),
    and at least 8 when B · P < 2²³ (P = `n_params`; not applied when it is None).

    At B ≤ 128 the default records the whole batch, a third of a plain step's matrix products
    (diag; isotropic's trace needs none) plus a fixed cost per refresh, every 4 steps;
    stretching the interval keeps that cost per step at what it is at B = 512. At small
    B · P the refresh's fixed cost is about a plain step, and every 8 steps halves it. v̂
    stays the unbiased whole-batch (or sub-batch) estimate of diag(C) at the step that
    records it; it is only reused for longer (at most interval − 1 steps old). Other
    schedules are taken as given.
    """
    if (stats_rows, stats_every) != DEFAULT_SCHEDULE or not batch_size:
        return stats_every
    factor = max(1, STRETCH_BELOW // batch_size)
    if n_params is not None and batch_size * n_params < SMALL_WORK:
        factor = max(factor, 2)
    return stats_every * factor


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


def shaped_like(parts: tuple[Tensor, ...] | list[Tensor], like: list[Tensor]) -> list[Tensor]:
    """The flat parts viewed in the shapes of `like` (1-D parts as they are: a view costs
    about 2 µs, a tenth of a small model's noise step for all of them)."""
    return [t if g.dim() == 1 else t.view(g.shape) for t, g in zip(parts, like, strict=True)]


def _draw_buffer(like: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """A flat buffer for one draw of z and its views shaped like `like` (made once per run)."""
    sizes = [g.numel() for g in like]
    z = torch.empty(sum(sizes), dtype=like[0].dtype, device=like[0].device)
    return z, shaped_like(z.split(sizes), like)


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
        """True on the first step and every `stats_interval(B, ...)` steps after a refresh
        (`stats_every` steps, except for the default schedule at small batches)."""
        if state.last_stats_step is None:
            return True
        every = self.stats_every if state.stats_interval is None else state.stats_interval
        return state.step - state.last_stats_step >= every

    def _probe_scale(
        self, v: list[Tensor], trace_c: float, n_params: int
    ) -> tuple[float, list[Tensor]]:
        """(‖Σ‖_F, the noise scale per parameter) on the probe, from v and tr C."""
        raise NotImplementedError

    def update(
        self,
        grads: list[Tensor],
        state: NoiseState,
        stats: DiagStats | TraceStats | None,
        generator: torch.Generator,
        *,
        inplace: bool = False,
    ) -> tuple[list[Tensor], NoiseState]:
        """grads + scale ⊙ z with fresh z; refreshes the kept scale when `stats` are given.

        z is drawn into the run's one flat buffer, kept in the state with its per-parameter
        views and overwritten every step (on the CPU from P = 2¹⁴ up by `gaussian_` from the
        run's SFC64, seeded once from `generator` and kept in the state; otherwise by
        torch's `normal_` with `generator`, the same numbers as torch.randn of P); the
        subclass's `_add_noise` forms grads + scale ⊙ z in one fused list operation: as new
        tensors, leaving the inputs as they were, or with `inplace` into `grads` themselves
        (the training step's own .grad tensors: no fresh P-sized buffers, 0.04 of a plain
        step at B = 128, P ≈ 10⁶)."""
        changes: dict[str, Any] = {}
        if stats is not None:
            changes = {
                "scale": self._scale_from(stats),
                "refreshes": state.refreshes + 1,
                "last_stats_step": state.step,
                "stats_interval": stats_interval(
                    stats.batch_size,
                    self.stats_subbatch,
                    self.stats_every,
                    stats.n_params,
                ),
            }
        elif self.needs_stats(state):
            raise ValueError(f"{self.name} noise needs statistics at step {state.step}")
        like = _first(grads)
        if any(g is None for g in grads):
            grads = _materialise(grads, state, like)
        buffer = state.buffer
        if (
            buffer is None
            or len(buffer[1]) != len(grads)
            or buffer[0].dtype != like.dtype
            or buffer[0].device != like.device
        ):
            buffer = changes["buffer"] = _draw_buffer(grads)
        bits = state.bits
        if bits is None and uses_bits(buffer[0]):  # seeded once, from the run's generator
            bits = changes["bits"] = new_bits(generator)
        new_state = self._advance(state, **changes)
        gaussian_(buffer[0], generator, bits)
        return self._add_noise(grads, buffer[1], new_state.scale, inplace), new_state

    def _add_noise(
        self, grads: list[Tensor], z: list[Tensor], scale: Any, inplace: bool
    ) -> list[Tensor]:
        """grads + scale ⊙ z, as new tensors or (`inplace`) into `grads` (z: the step's
        draw, viewed per parameter)."""
        raise NotImplementedError

    def _scale_from(self, stats: DiagStats | TraceStats) -> Any:
        """The kept noise scale from freshly recorded statistics."""
        raise NotImplementedError

    def statistics(self, probe: Probe) -> ProbeNoise:
        """v on the whole probe (at its sampled labels for source "fisher"); tr Σ = c·Σv,
        ‖Σ‖_F and ξ from the subclass's scale."""
        B = probe.size
        recorder = DiagStatsRecorder(probe.model, None, 1.0 / B, probe.params)
        v = probe.record(recorder, self.source).variance(B)
        trace_c = float(sum(t.double().sum() for t in v))
        fro, scale = self._probe_scale(v, trace_c, probe.n_params)
        return ProbeNoise(trace=self.c * trace_c, fro=fro, draw=gaussian_draw(scale, probe.device))
