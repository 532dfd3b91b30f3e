"""One training step: SGD on the large-batch gradient plus the structure's noise.

The structure's plan fixes the loss weights and whether DiagStats are recorded during the
backward; its update turns the gradient into ḡ + ξ. A step whose loss or noisy gradient is
not finite leaves the parameters alone, so a diverging run stops on its last good state.

With source "fisher" the step draws labels ŷ_n ~ softmax(logits_n) from the forward pass
with the noise generator, and the noise is built from the losses at ŷ while the gradient
trained on stays at the labels y:
- full: one backward of Σ_n [w_n l(x_n, y_n) + u_n l(x_n, ŷ_n)] (u = the plan's
  `label_weights`), from the same forward;
- diag, isotropic: when the statistics are refreshed, one extra backward of the
  sampled-label loss of the statistics rows records them; it stops at the layers' outputs
  (no parameter gradients) and reuses the forward.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from covnoise.core.losses import fisher_losses, per_example_loss
from covnoise.core.noise import NoiseStructure, StepPlan
from covnoise.core.pergrad import DiagStats, DiagStatsRecorder


def _batch_backward(
    model: nn.Module, params: list[Tensor], plan: StepPlan, x: Tensor, y: Tensor
) -> tuple[Tensor, DiagStats | None]:
    """The backward of Σ w_n l_n, recording DiagStats of the same loss when planned."""
    recorder = (
        DiagStatsRecorder(model, plan.rows, plan.weights, params)
        if plan.record_stats
        else nullcontext()
    )
    with recorder:
        losses = per_example_loss(model(x), y)
        (plan.weights * losses).sum().backward()
    return losses, recorder.result() if plan.record_stats else None


def _fisher_backward(
    model: nn.Module,
    params: list[Tensor],
    plan: StepPlan,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, DiagStats | None]:
    """One forward; labels ŷ for the whole batch when the plan needs them; DiagStats of the
    sampled-label loss of the planned rows when planned; then the backward of
    Σ w_n l(x_n, y_n) + Σ u_n l(x_n, ŷ_n)."""
    record = plan.record_stats
    recorder = DiagStatsRecorder(model, plan.rows, 1.0, params) if record else nullcontext()
    with recorder:
        logits = model(x)
        if record or plan.label_weights is not None:
            losses, sampled = fisher_losses(logits, y, generator)
        else:
            losses, sampled = per_example_loss(logits, y), None
        if record:
            rows = sampled if plan.rows is None else sampled[plan.rows.to(sampled.device)]
            recorder.backward(rows.sum())
    objective = (plan.weights * losses).sum()
    if plan.label_weights is not None:
        objective = objective + (plan.label_weights * sampled).sum()
    objective.backward()
    return losses, recorder.result() if record else None


def noisy_step(
    model: nn.Module,
    params: list[Tensor],
    opt: torch.optim.Optimizer,
    structure: NoiseStructure,
    state: Any,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, Any]:
    """One SGD step on the batch (x, y) with the structure's noise added to the gradient.

    Returns the per-example losses (detached) and the new noise state. The parameters are
    not updated when the loss or the noisy gradient is not finite (the losses returned are
    then NaN), so a diverging run stops on its last good state.
    """
    plan = structure.plan(len(x), state, generator)
    opt.zero_grad(set_to_none=True)
    if plan.source == "fisher":
        losses, stats = _fisher_backward(model, params, plan, x, y, generator)
    else:
        losses, stats = _batch_backward(model, params, plan, x, y)
    noisy, state = structure.update([p.grad for p in params], state, stats, generator)
    for p, g in zip(params, noisy, strict=True):
        p.grad = g
    losses = losses.detach()
    # One fused norm over all gradients and one read-back, instead of an isfinite pass per
    # tensor (that cost 0.4 of a plain step on a small MLP, bench.epoch). A gradient whose
    # norm overflows (entries beyond ~1e19 in float32) counts as non-finite too.
    checks = torch.stack([losses.sum(), torch.nn.utils.get_total_norm(noisy).to(losses.dtype)])
    loss_ok, grad_ok = torch.isfinite(checks).tolist()
    if loss_ok and grad_ok:
        opt.step()
    else:  # keep the last good parameters; the caller sees a non-finite loss and stops
        losses = torch.full_like(losses, float("nan")) if loss_ok else losses
    return losses, state
