"""The probe batch a structure's logged statistics are measured on, and what it reports.

At each evaluation a structure computes Σ = c·K exactly on a fixed probe batch: its trace
and Frobenius norm, and a sampler of ξ with Cov(ξ) = Σ for the Monte-Carlo Tr(HΣ)
(covnoise.core.noise.statistics). `Probe` runs the one recorded forward/backward a structure
needs and keeps the per-example losses' graph for weighted backward passes. For a structure
with source "fisher" the recorded losses are at labels ŷ_n ~ softmax(logits_n) drawn with the
probe's generator from that same forward, so tr Σ, ‖Σ‖_F and the draws of ξ all describe the
sampled-label covariance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from covnoise.config import NOISE_SOURCES
from covnoise.core.losses import sample_labels
from covnoise.core.pergrad.recorder import LayerRecorder

#: Draws one ξ ~ (0, Σ), as tensors shaped like the trainable parameters.
Draw = Callable[[torch.Generator], list[Tensor]]


@dataclass
class ProbeNoise:
    """Σ = c·K of a structure on a probe: tr Σ, ‖Σ‖_F and a sampler of ξ (None when Σ = 0)."""

    trace: float
    fro: float
    draw: Draw | None = None


class Probe:
    """A fixed batch (x, y) of `model` with per-example losses `loss_fn(logits, y)`.

    `generator` draws the labels of a "fisher" recording (`record`); `labels` holds the
    labels of the last recording.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        x: Tensor,
        y: Tensor,
        generator: torch.Generator | None = None,
    ) -> None:
        self.model, self.loss_fn, self.x, self.y = model, loss_fn, x, y
        self.generator = generator
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.size = x.shape[0]
        self.losses: Tensor | None = None
        self.labels: Tensor | None = None

    @property
    def n_params(self) -> int:
        """The number of trainable parameters P."""
        return sum(p.numel() for p in self.params)

    @property
    def device(self) -> torch.device:
        """Where the parameters live."""
        return self.params[0].device

    def record(self, recorder: LayerRecorder, source: str = "batch") -> Any:
        """One forward and a backward of the mean loss under `recorder`; its result.

        source "batch": the losses at the probe's labels y; "fisher": at labels drawn from
        softmax(logits) of this forward with `generator`. The graph of the per-example losses
        is kept for `weighted_grad`; the model's .grad fields are left untouched.
        """
        if source not in NOISE_SOURCES:
            raise ValueError(f"noise source {source!r} is not one of {', '.join(NOISE_SOURCES)}")
        if source == "fisher" and self.generator is None:
            raise ValueError("a fisher probe needs a generator to draw its labels")
        with recorder:
            logits = self.model(self.x)
            self.labels = self.y if source == "batch" else sample_labels(logits, self.generator)
            self.losses = self.loss_fn(logits, self.labels)
            torch.autograd.grad(
                self.losses.sum() / self.size, self.params, retain_graph=True, allow_unused=True
            )
        return recorder.result()

    def weighted_grad(self, weights: Tensor) -> list[Tensor]:
        """∇Σ_n w_n l_n through the kept graph (zeros for parameters the loss does not use)."""
        if self.losses is None:
            raise RuntimeError("weighted_grad needs a recorded forward pass")
        grads = torch.autograd.grad(
            (weights * self.losses).sum(), self.params, retain_graph=True, allow_unused=True
        )
        return [
            torch.zeros_like(p) if g is None else g.detach()
            for p, g in zip(self.params, grads, strict=True)
        ]
