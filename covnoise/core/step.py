"""One training step: SGD on the large-batch gradient plus the structure's noise.

The structure's plan fixes the loss weights and whether DiagStats are recorded during the
backward; its update turns the gradient into ḡ + ξ. A step whose loss or noisy gradient is
not finite leaves the parameters alone, so a diverging run stops on its last good state.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from covnoise.core.losses import per_example_loss
from covnoise.core.noise import NoiseStructure
from covnoise.core.pergrad import DiagStatsRecorder


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
    recorder = (
        DiagStatsRecorder(model, plan.rows, plan.weights, params)
        if plan.record_stats
        else nullcontext()
    )
    with recorder:
        losses = per_example_loss(model(x), y)
        (plan.weights * losses).sum().backward()
    stats = recorder.result() if plan.record_stats else None
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
