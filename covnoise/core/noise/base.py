"""What every noise structure is: its state, its step plan and the shared base class.

A structure is a small stateless object, optax-style: `init(params) -> state` and
`update(grads, state, stats, generator) -> (noisy_grads, state)`. Before the backward,
`plan(batch_size, state, generator)` says what the step needs from it (the per-example loss
weights, whether and on which rows to record statistics and of which kind, and with source
"fisher" the weights of the sampled-label losses); at evaluation, `statistics(probe)` gives
Σ = c·K on a probe batch and a sampler of ξ (see covnoise.core.noise.probe). `Structure`
holds what they share: the scale c, the source of C, the statistics schedule, the default
plan (uniform weights, no statistics) and the bookkeeping.

The source says whose per-example gradients C is the covariance of: "batch", the batch's
own (at its labels y_n), or "fisher", the gradients at labels ŷ_n ~ p(y | x_n) drawn from the
model's predictions (their batch covariance estimates the true Fisher, since they have zero
mean over ŷ). The gradient trained on always uses the labels y_n.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from torch import Tensor

from covnoise.config import NOISE_SOURCES
from covnoise.core.noise.probe import Probe, ProbeNoise
from covnoise.core.pergrad import DiagStats, TraceStats, uniform_weights

#: The statistics a plan can ask the step to record (StepPlan.stats_kind).
StatsKind = Literal["diag", "trace"]

#: Whose per-example gradients the noise's C is the covariance of (see the module docstring);
#: the choices of RunConfig.noise_source.
SOURCES: tuple[str, ...] = NOISE_SOURCES


@dataclass
class NoiseState:
    """Per-run state of a structure: the step count, the last diag(C) estimate and the run's
    working memory (diag, isotropic: the buffer z is drawn into and, on the CPU, the bit
    generator it is drawn from; full: its block of weights).

    Each update returns a new state, but the working memory is shared by all the states of
    one run and changed in place, so a state belongs to one run: start another run (or a
    replay) from `init`, never from a state of a run in progress."""

    step: int = 0
    shapes: tuple[torch.Size, ...] = ()
    # ξ = scale ⊙ z: √(c·v) per parameter (diag), √(c·Σv/P) 0-d (isotropic)
    scale: list[Tensor] | Tensor | None = None
    refreshes: int = 0  # how many times the statistics were refreshed
    last_stats_step: int | None = None
    stats_interval: int | None = None  # steps until the next refresh, set at each refresh
    # the flat buffer z is drawn into every step, and its per-parameter views (made once)
    buffer: tuple[Tensor, list[Tensor]] | None = None
    # the bit generator z is drawn from on the CPU (gaussian.new_bits), seeded once per run
    bits: Any = None
    weights: WeightRows | None = None  # full noise: its centred weights, drawn in blocks


@dataclass(frozen=True)
class StepPlan:
    """What one step's backward must do for the structure.

    `weights` (B,) are the per-example loss weights of the backpropagated Σ_n w_n l_n;
    when `record_stats` is set, statistics of the kind `stats_kind` (DiagStats or
    TraceStats) are recorded on the batch rows `rows` (None: all of them). With source
    "fisher" the step draws labels ŷ from the model's predictions: the statistics are then
    recorded on the sampled-label loss of `rows` (one extra backward), and `label_weights`
    (B,), when given, add Σ_n u_n l(x_n, ŷ_n) to the same backward.
    """

    weights: Tensor
    record_stats: bool = False
    rows: Tensor | None = None
    source: str = "batch"
    label_weights: Tensor | None = None
    stats_kind: StatsKind = "diag"  # "diag": DiagStats; "trace": TraceStats (tr C only)


@runtime_checkable
class NoiseStructure(Protocol):
    """The interface of a noise structure (see the module docstring)."""

    name: str
    c: float
    source: str

    def init(self, params: list[Tensor]) -> NoiseState: ...

    def plan(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> StepPlan: ...

    def update(
        self,
        grads: list[Tensor],
        state: NoiseState,
        stats: DiagStats | TraceStats | None,
        generator: torch.Generator,
        *,
        inplace: bool = False,
    ) -> tuple[list[Tensor], NoiseState]: ...

    def statistics(self, probe: Probe) -> ProbeNoise: ...

    def describe(self) -> dict[str, Any]: ...


def centred_weights(
    n: int,
    c: float,
    generator: torch.Generator,
    dtype: torch.dtype | None,
    rows: int | None = None,
) -> Tensor:
    """√(c/n)(z − z̄) for a fresh z ~ N(0, I_n), on the generator's device; with `rows`, that
    many independent such rows at once, (rows, n).

    ∇Σ_n w_n l_n with these weights is ξ = √(c/n) Σ_n (z_n − z̄) g_n, and Cov(ξ) = c·C exactly.
    """
    shape = (n,) if rows is None else (rows, n)
    z = torch.randn(shape, generator=generator, device=generator.device, dtype=dtype)
    return z.sub_(z.mean(-1, keepdim=True)).mul_(math.sqrt(c / n))


#: Full noise draws the centred weights of this many steps at once.
WEIGHT_ROWS = 64


class WeightRows:
    """Centred weights √(c/n)(z − z̄) + offset drawn for WEIGHT_ROWS steps at once, one row
    handed out per step: one draw and four operations per block instead of per step (they
    were a tenth of a small model's step). The rows are independent, so each step's weights
    have the distribution of `centred_weights`; the generator advances by WEIGHT_ROWS · n
    normals per block. One per run (in its NoiseState); a new block is drawn when n, c, the
    offset, the dtype, the device or the generator change, and the rest of the old block is
    dropped."""

    def __init__(self) -> None:
        self._rows: list[Tensor] = []
        self._key: tuple[Any, ...] | None = None

    def next(
        self,
        n: int,
        c: float,
        generator: torch.Generator,
        dtype: torch.dtype | None,
        offset: float = 0.0,
    ) -> Tensor:
        """The next row of weights (n,), drawing a new block when needed."""
        key = (n, c, dtype, generator.device, id(generator), offset)
        if not self._rows or key != self._key:
            z = centred_weights(n, c, generator, dtype, rows=WEIGHT_ROWS)
            if offset:
                z.add_(offset)
            self._rows, self._key = list(reversed(z.unbind(0))), key
        return self._rows.pop()


class Structure:
    """Shared bookkeeping: name, scale c and the statistics schedule."""

    name = "base"
    uses_stats = False
    #: which statistics the step records for it: "diag" (DiagStats, diag(C)) or "trace"
    #: (TraceStats, tr C only: per-example gradient norms, no per-coordinate product)
    stats_kind: StatsKind = "diag"

    def __init__(
        self,
        c: float,
        *,
        stats_rows: int | None = None,
        stats_every: int = 1,
        source: str = "batch",
    ):
        if source not in SOURCES:
            raise ValueError(f"noise source {source!r} is not one of {', '.join(SOURCES)}")
        if not (math.isfinite(c) and c >= 0):
            raise ValueError(f"noise scale c must be finite and >= 0, got {c}")
        if stats_rows is not None and int(stats_rows) < 2:
            raise ValueError(f"stats_rows must be >= 2 or None (whole batch), got {stats_rows}")
        if int(stats_every) < 1:
            raise ValueError(f"stats_every must be >= 1, got {stats_every}")
        self.c = float(c)
        self.stats_subbatch = None if stats_rows is None else int(stats_rows)
        self.stats_every = int(stats_every)
        self.source = source

    def describe(self) -> dict[str, Any]:
        """The choices a run should record with its results."""
        return {
            "structure": self.name,
            "c": self.c,
            "source": self.source,
            "stats_rows": self.stats_subbatch if self.uses_stats else None,
            "stats_every": self.stats_every if self.uses_stats else None,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "structure")
        return f"{type(self).__name__}({args})"

    def init(self, params: list[Tensor]) -> NoiseState:
        """Fresh state for parameters shaped like `params`."""
        return NoiseState(shapes=tuple(p.shape for p in params))

    def plan(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> StepPlan:
        """The step's plan; draws the statistics rows first, then the loss weights, then the
        sampled-label weights (full noise draws these for 64 steps at once: `WeightRows`)."""
        record = self.needs_stats(state)
        rows = self.stats_rows(batch_size, generator) if record else None
        weights = self.loss_weights(batch_size, state, generator, dtype)
        label_weights = self.label_weights(batch_size, state, generator, dtype)
        return StepPlan(
            weights=weights,
            record_stats=record,
            rows=rows,
            source=self.source,
            label_weights=label_weights,
            stats_kind=self.stats_kind,
        )

    def needs_stats(self, state: NoiseState) -> bool:
        """Whether this step must record statistics (of the kind `stats_kind`)."""
        return False

    def stats_rows(self, batch_size: int, generator: torch.Generator) -> Tensor | None:
        """Sorted indices of the sub-batch to record statistics on; None: the whole batch
        (a recorder given None selects no rows and checks no indices)."""
        b = self.stats_subbatch
        if b is None or b >= batch_size:
            return None
        perm = torch.randperm(batch_size, generator=generator, device=generator.device)
        return perm[:b].sort().values

    def loss_weights(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Per-example loss weights (B,), summing to one: 1/B unless the structure says so.

        The uniform weights are one shared read-only tensor per (B, dtype, device)
        (`pergrad.uniform_weights`), which a statistics recorder knows without a read-back."""
        return uniform_weights(batch_size, dtype, generator.device)

    def label_weights(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> Tensor | None:
        """Weights (B,) of the sampled-label losses in the step's backward; None: none."""
        return None

    def _advance(self, state: NoiseState, **changes: Any) -> NoiseState:
        fields = {**state.__dict__, **changes, "step": state.step + 1}
        return NoiseState(**fields)
