"""Noise structures as gradient transformations, and the noise statistics logged at evaluation.

Each step trains on the large-batch gradient ḡ plus ξ with Cov(ξ) = c·K, c = s(1/M − 1/L),
C the covariance of the batch's per-example gradients (DESIGN.md, "Noise structures"):

- none:      K = 0.
- isotropic: K = (tr C / P) I;   ξ = √(c·tr C/P) z.
- diag:      K = diag(C);        ξ = √c √v ⊙ z.
- full:      K = C;              per-example loss weights 1/B + √(c/B)(z − z̄), one backward.

A structure is a small stateless object with `init(params) -> state` and
`update(grads, state, stats, generator) -> (noisy_grads, state)`. v (and tr C = Σv) comes
from `DiagStats` recorded on a random sub-batch of `stats_rows` rows every `stats_every`
steps and kept in the state in between. The sub-batch estimate v̂ is unbiased for diag(C),
and since ξ = √c √v̂ ⊙ z with z independent of v̂, Cov(ξ) = c·E[diag(v̂)] = c·diag(C) exactly
(likewise c·E[Σv̂]/P·I for isotropic): the sub-batch changes the noise's distribution, not
its covariance. Refreshing every k steps reuses an estimate that is k − 1 steps old.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from covnoise.core.pergrad import DiagStats, DiagStatsRecorder, GramRecorder

# Defaults for diag and isotropic, tuned with `python -m bench.steps` on a 2-core CPU:
# 128 rows every 4 steps keeps both within 1.3× of a plain step for the MLP at B = 1024 and
# the small CNN at B = 512 (exact v every step costs 2–3×). Per refresh, v̂ on 128 rows has
# about 20% relative error and tr C about 1%; the injected covariance stays unbiased.
RECOMMENDED_STATS_ROWS = 128
RECOMMENDED_STATS_EVERY = 4


@dataclass
class NoiseState:
    """Per-run state of a structure: the step count and the last diag(C) estimate."""

    step: int = 0
    shapes: tuple[torch.Size, ...] = ()
    scale: Tensor | None = None  # ξ = scale ⊙ z: √(c·v) flat (diag), √(c·Σv/P) 0-d (isotropic)
    refreshes: int = 0  # how many times the statistics were refreshed
    last_stats_step: int | None = None


@runtime_checkable
class NoiseStructure(Protocol):
    """The interface of a noise structure (see the module docstring)."""

    name: str
    c: float

    def init(self, params: list[Tensor]) -> NoiseState: ...

    def needs_stats(self, state: NoiseState) -> bool: ...

    def stats_rows(self, batch_size: int, generator: torch.Generator) -> Tensor | None: ...

    def loss_weights(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> Tensor: ...

    def update(
        self,
        grads: list[Tensor],
        state: NoiseState,
        stats: DiagStats | None,
        generator: torch.Generator,
    ) -> tuple[list[Tensor], NoiseState]: ...


def _uniform_weights(
    batch_size: int, generator: torch.Generator, dtype: torch.dtype | None
) -> Tensor:
    return torch.full((batch_size,), 1.0 / batch_size, dtype=dtype, device=generator.device)


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


class _Base:
    """Shared bookkeeping: name, scale c and the statistics schedule."""

    name = "base"
    uses_stats = False

    def __init__(self, c: float, *, stats_rows: int | None = None, stats_every: int = 1):
        if not (math.isfinite(c) and c >= 0):
            raise ValueError(f"noise scale c must be finite and >= 0, got {c}")
        if stats_rows is not None and int(stats_rows) < 2:
            raise ValueError(f"stats_rows must be >= 2 or None (whole batch), got {stats_rows}")
        if int(stats_every) < 1:
            raise ValueError(f"stats_every must be >= 1, got {stats_every}")
        self.c = float(c)
        self.stats_subbatch = None if stats_rows is None else int(stats_rows)
        self.stats_every = int(stats_every)

    def describe(self) -> dict[str, Any]:
        """The choices a run should record with its results."""
        return {
            "structure": self.name,
            "c": self.c,
            "stats_rows": self.stats_subbatch if self.uses_stats else None,
            "stats_every": self.stats_every if self.uses_stats else None,
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "structure")
        return f"{type(self).__name__}({args})"

    def init(self, params: list[Tensor]) -> NoiseState:
        """Fresh state for parameters shaped like `params`."""
        return NoiseState(shapes=tuple(p.shape for p in params))

    def needs_stats(self, state: NoiseState) -> bool:
        """Whether this step must record DiagStats."""
        return False

    def stats_rows(self, batch_size: int, generator: torch.Generator) -> Tensor | None:
        """Sorted indices of the sub-batch to record statistics on (all rows if None)."""
        b = self.stats_subbatch
        if b is None or b >= batch_size:
            return torch.arange(batch_size, device=generator.device)
        perm = torch.randperm(batch_size, generator=generator, device=generator.device)
        return perm[:b].sort().values

    def loss_weights(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """Per-example loss weights (B,), summing to one: 1/B unless the structure says so."""
        return _uniform_weights(batch_size, generator, dtype)

    def _advance(self, state: NoiseState, **changes: Any) -> NoiseState:
        fields = {**state.__dict__, **changes, "step": state.step + 1}
        return NoiseState(**fields)


class NoNoise(_Base):
    """Plain large-batch SGD: K = 0."""

    name = "none"

    def update(
        self,
        grads: list[Tensor],
        state: NoiseState,
        stats: DiagStats | None,
        generator: torch.Generator,
    ) -> tuple[list[Tensor], NoiseState]:
        """Gradients unchanged."""
        return list(grads), self._advance(state)


class FullNoise(_Base):
    """K = C, sampled by reweighting the per-example losses (the noise is in the gradient)."""

    name = "full"

    def loss_weights(
        self,
        batch_size: int,
        state: NoiseState,
        generator: torch.Generator,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """w = 1/B + √(c/B)(z − z̄): ∇Σ w_n l_n = ḡ + ξ with Cov(ξ) = c·C exactly."""
        z = torch.randn(batch_size, generator=generator, device=generator.device, dtype=dtype)
        w = (z - z.mean()).mul_(math.sqrt(self.c / batch_size))
        return w.add_(1.0 / batch_size)

    def update(
        self,
        grads: list[Tensor],
        state: NoiseState,
        stats: DiagStats | None,
        generator: torch.Generator,
    ) -> tuple[list[Tensor], NoiseState]:
        """Identity: the weighted backward already produced ḡ + ξ."""
        return list(grads), self._advance(state)


class _StatsNoise(_Base):
    """Structures built from v = diag(C): refresh v on schedule, add fresh noise every step."""

    uses_stats = True

    def needs_stats(self, state: NoiseState) -> bool:
        """True on the first step and every `stats_every` steps after it."""
        return state.last_stats_step is None or state.step % self.stats_every == 0

    def _scale(self, v: Tensor) -> Tensor:
        """The noise scale from the flat v."""
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
        noise = [t.view(g.shape) for t, g in zip(z.split([g.numel() for g in grads]), grads,
                                                 strict=True)]  # fmt: skip
        return list(torch._foreach_add(grads, noise)), new_state


class DiagNoise(_StatsNoise):
    """K = diag(C): ξ = √c √v ⊙ z."""

    name = "diag"

    def _scale(self, v: Tensor) -> Tensor:
        return v.mul(self.c).sqrt_()


class IsotropicNoise(_StatsNoise):
    """K = (tr C / P) I: ξ = √(c·tr C/P) z, the same trace as diag and full."""

    name = "isotropic"

    def _scale(self, v: Tensor) -> Tensor:
        return (v.sum(dtype=torch.float64) * (self.c / v.numel())).sqrt().to(v.dtype)


STRUCTURES: dict[str, type] = {
    "none": NoNoise,
    "isotropic": IsotropicNoise,
    "diag": DiagNoise,
    "full": FullNoise,
}


def make_structure(
    name: str, c: float, *, stats_rows: int | None = None, stats_every: int = 1
) -> NoiseStructure:
    """The structure `name` with scale c = s(1/M − 1/L) and its statistics schedule.

    stats_rows: sub-batch size for v (None = the whole batch); stats_every: refresh v every
    k steps. Both only matter for diag and isotropic.
    """
    try:
        cls = STRUCTURES[name]
    except KeyError:
        raise ValueError(
            f"noise structure {name!r} is not one of {', '.join(STRUCTURES)}"
        ) from None
    return cls(c, stats_rows=stats_rows, stats_every=stats_every)


# --------------------------------------------------------------------------- statistics
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
    two draws). The model's .grad fields are left untouched.
    """
    name, c = structure.name, float(structure.c)
    params = [p for p in model.parameters() if p.requires_grad]
    n_params = sum(p.numel() for p in params)
    B = x.shape[0]
    nan = float("nan")
    out = {
        "noise_trace": 0.0,
        "noise_fro": 0.0,
        "noise_trace_hsigma": 0.0,
        "noise_trace_hsigma_se": 0.0,
    }
    if name == "none":
        return out
    if name not in ("isotropic", "diag", "full"):
        raise ValueError(f"noise_statistics: unknown structure {name!r}")

    rec = GramRecorder(model, 1.0 / B, params) if name == "full" else None
    if rec is None:
        rec = DiagStatsRecorder(model, None, 1.0 / B, params)
    with rec:
        losses = loss_fn(model(x), y)
        torch.autograd.grad(losses.sum() / B, params, retain_graph=True, allow_unused=True)
    scale: list[Tensor] = []
    if name == "full":
        gram = rec.result()
        centred = gram - gram.mean(0, keepdim=True)
        centred = centred - centred.mean(1, keepdim=True)
        trace_c = float(centred.diagonal().sum()) / B
        out["noise_fro"] = c / B * float(torch.linalg.matrix_norm(centred))
    else:
        v = rec.result().variance(B)
        trace_c = float(sum(t.double().sum() for t in v))
        if name == "diag":
            out["noise_fro"] = c * math.sqrt(sum(float(t.double().pow(2).sum()) for t in v))
            scale = [t.mul(c).sqrt() for t in v]
        else:
            out["noise_fro"] = c * trace_c / math.sqrt(n_params)
            iso = math.sqrt(c * trace_c / n_params)
            scale = [torch.full_like(t, iso) for t in v]
    out["noise_trace"] = c * trace_c

    if hvp is None or n_samples < 1:
        out["noise_trace_hsigma"] = out["noise_trace_hsigma_se"] = nan
        return out
    device = params[0].device
    draws = []
    for _ in range(n_samples):
        if name == "full":
            z = torch.randn(B, generator=generator, device=generator.device, dtype=losses.dtype)
            w = (z - z.mean()).mul_(math.sqrt(c / B)).to(losses.device)
            xi = torch.autograd.grad(
                (w * losses).sum(), params, retain_graph=True, allow_unused=True
            )
            xi = [
                torch.zeros_like(p) if g is None else g.detach()
                for p, g in zip(params, xi, strict=True)
            ]
        else:
            xi = [
                s * torch.randn(s.shape, generator=generator, device=generator.device,
                                dtype=s.dtype).to(device)
                for s in scale
            ]  # fmt: skip
        draws.append(_dot(xi, [h.detach() for h in hvp(xi)]))
    t = torch.tensor(draws, dtype=torch.float64)
    out["noise_trace_hsigma"] = float(t.mean())
    out["noise_trace_hsigma_se"] = float(t.std() / math.sqrt(len(draws))) if len(draws) > 1 else nan
    return out
