"""One training step: SGD on the large-batch gradient plus the structure's noise.

The structure's plan fixes the loss weights and whether statistics are recorded during the
backward (DiagStats, or TraceStats where tr C is all the structure needs); its update turns
the gradient into ḡ + ξ. A step whose loss or noisy gradient is not finite leaves the
parameters alone, so a diverging run stops on its last good state.
Under uniform weights (no noise, diag and isotropic) the backward is that of one fused mean
cross-entropy, as in a plain PyTorch loop; per-example losses are formed only where the
weights differ (full noise) or the labels are sampled ("fisher"). The step returns the mean
batch loss, read on the host together with the gradients' norms (one read-back per step).

With source "fisher" the step draws labels ŷ_n ~ softmax(logits_n) from the forward pass
with the noise generator, and the noise is built from the losses at ŷ while the gradient
trained on stays at the labels y:
- full: one backward of Σ_n [w_n l(x_n, y_n) + u_n l(x_n, ŷ_n)] (u = the plan's
  `label_weights`), from the same forward;
- diag, isotropic: when the statistics are refreshed, one extra backward of the
  sampled-label loss of the statistics rows records them; it stops at the layers' outputs
  (no parameter gradients) and reuses the forward.

The update is :class:`SGD`, plain SGD with momentum and weight decay written out with the
same tensor operations torch.optim.SGD runs (so the same numbers), without torch.optim: its
first step imports torch._dynamo (2.6 s of a fresh process) and its per-step Python costs a
tenth of a small MLP's step. On the CPU the finiteness check is read on the host (free there);
on an accelerator it stays on the device: the update is applied through ``torch.where`` on a
0-d flag, so a step needs no read-back and the caller reads the losses when it likes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

import torch
from torch import Tensor, nn

from covnoise.core.losses import fisher_losses, mean_loss, per_example_loss
from covnoise.core.noise import NoiseStructure, StepPlan
from covnoise.core.pergrad import (
    DiagStats,
    DiagStatsRecorder,
    TraceStats,
    TraceStatsRecorder,
    is_uniform,
)

#: the recorder of each kind of statistics a plan can ask for (StepPlan.stats_kind)
RECORDERS = {"diag": DiagStatsRecorder, "trace": TraceStatsRecorder}


def _batch_backward(
    model: nn.Module, params: list[Tensor], plan: StepPlan, x: Tensor, y: Tensor
) -> tuple[Tensor, DiagStats | TraceStats | None]:
    """The backward of Σ w_n l_n, recording the plan's statistics of the same loss when
    planned; returns the mean loss (0-d, detached) and the statistics. Uniform weights (1/B)
    back-propagate one fused mean cross-entropy: no per-example losses, one autograd node
    fewer."""
    recorder = (
        RECORDERS[plan.stats_kind](model, plan.rows, plan.weights, params, read_grads=True)
        if plan.record_stats
        else nullcontext()
    )
    with recorder:
        if is_uniform(plan.weights):
            loss = mean_loss(model(x), y)
            loss.backward()
        else:
            losses = per_example_loss(model(x), y)
            _weighted_backward([losses], [plan.weights])
            loss = losses.detach().mean()
    return loss.detach(), recorder.result() if plan.record_stats else None


def _fisher_backward(
    model: nn.Module,
    params: list[Tensor],
    plan: StepPlan,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, DiagStats | TraceStats | None]:
    """One forward; labels ŷ for the whole batch; the plan's statistics of the sampled-label
    loss of the planned rows when planned; then the backward of
    Σ w_n l(x_n, y_n) + Σ u_n l(x_n, ŷ_n). (A "fisher" step that neither records nor weights
    ŷ is a batch step: `noisy_step`.)"""
    record = plan.record_stats
    recorder = (
        RECORDERS[plan.stats_kind](model, plan.rows, 1.0, params) if record else nullcontext()
    )
    with recorder:
        losses, sampled = fisher_losses(model(x), y, generator)
        if record:
            rows = sampled if plan.rows is None else sampled[plan.rows.to(sampled.device)]
            recorder.backward(rows.sum())
    if plan.label_weights is None:
        _weighted_backward([losses], [plan.weights])
    else:
        _weighted_backward([losses, sampled], [plan.weights, plan.label_weights])
    return losses.detach().mean(), recorder.result() if record else None


def _weighted_backward(losses: list[Tensor], weights: list[Tensor]) -> None:
    """The backward of Σ_k Σ_n w_kn l_kn: the weights are handed to autograd as the losses'
    output gradients (no product node, one backward from all the roots); where a weight's
    dtype differs from its losses' the sum is formed as torch promotes it."""
    if all(w.dtype == t.dtype for w, t in zip(weights, losses, strict=True)):
        torch.autograd.backward(losses, weights)
        return
    sum(((w * t).sum() for w, t in zip(weights, losses, strict=True)), start=0).backward()


class SGD:
    """Plain SGD: ``d = g + weight_decay·θ``; with momentum ``b ← momentum·b + d`` (b = d at
    the first step) and ``d = b``; then ``θ ← θ − lr·d``, in place under no_grad.

    The same operations in the same order as ``torch.optim.SGD(params, lr, momentum,
    weight_decay)`` (no dampening, no Nesterov): per tensor where it loops over tensors (CPU),
    ``torch._foreach_*`` where it takes its foreach path (CUDA, XPU), so the parameters are
    bit for bit the same (tests/test_train_step.py). ``lr`` may be changed between steps.
    ``step()`` updates; ``step(ok)`` with a 0-d bool tensor updates only where ``ok`` holds,
    without reading it back (the parameters and momentum are then left as they were).
    """

    def __init__(
        self, params: Iterable[Tensor], lr: float, momentum: float = 0.0, weight_decay: float = 0.0
    ) -> None:
        self.params = list(params)
        self.lr, self.momentum, self.weight_decay = lr, momentum, weight_decay
        self.buffers: list[Tensor] | None = None
        # torch._foreach_* everywhere: on the CPU they run torch.optim.SGD's per-tensor
        # operations in its order (the same numbers), with one dispatch instead of one per
        # tensor (a tenth of a small MLP's step)
        self.foreach = bool(self.params)
        #: whether noisy_step should gate this optimiser on the device (no read-back)
        self.on_device = bool(self.params) and all(
            p.device.type in ("cuda", "xpu") for p in self.params
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (they are always replaced by the next backward)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, ok: Tensor | None = None) -> None:
        """One update from the parameters' ``.grad``; with ``ok`` only where ``ok`` is true."""
        grads = [p.grad for p in self.params]
        if ok is None and not self.foreach:
            self._loop(grads)
            return
        params, wd, m = self.params, self.weight_decay, self.momentum
        if wd != 0:
            grads = torch._foreach_add(grads, params, alpha=wd)
        if m != 0:
            if self.buffers is None:
                bufs = [g.detach().clone() for g in grads]
            elif ok is None:
                bufs = self.buffers
                torch._foreach_mul_(bufs, m)
                torch._foreach_add_(bufs, grads, alpha=1)
            else:
                bufs = torch._foreach_mul(self.buffers, m)
                torch._foreach_add_(bufs, grads, alpha=1)
            grads = bufs
        if ok is None:
            torch._foreach_add_(params, grads, alpha=-self.lr)
            self.buffers = grads if m != 0 else None
            return
        moved = torch._foreach_add(params, grads, alpha=-self.lr)
        for p, q in zip(params, moved, strict=True):
            p.copy_(torch.where(ok, q, p))
        if m != 0:
            old = self.buffers if self.buffers is not None else [torch.zeros_like(b) for b in grads]
            self.buffers = [torch.where(ok, b, o) for b, o in zip(grads, old, strict=True)]

    def _loop(self, grads: list[Tensor | None]) -> None:
        """torch.optim.SGD's single-tensor update, tensor by tensor."""
        wd, m, lr = self.weight_decay, self.momentum, self.lr
        first = self.buffers is None
        if m != 0 and first:
            self.buffers = []
        for i, (p, g) in enumerate(zip(self.params, grads, strict=True)):
            if wd != 0:
                g = g.add(p, alpha=wd)
            if m != 0:
                if first:
                    buf = g.detach().clone()
                    self.buffers.append(buf)  # type: ignore[union-attr]
                else:
                    buf = self.buffers[i].mul_(m).add_(g, alpha=1)  # type: ignore[index]
                g = buf
            p.add_(g, alpha=-lr)


Optimizer = torch.optim.Optimizer | SGD


def noisy_step(
    model: nn.Module,
    params: list[Tensor],
    opt: Optimizer,
    structure: NoiseStructure,
    state: Any,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
) -> tuple[float | Tensor, Any]:
    """One SGD step on the batch (x, y) with the structure's noise added to the gradient.

    Returns the batch's mean loss and the new noise state. The parameters are not updated
    when the loss or the noisy gradient is not finite (the loss returned is then not finite
    either), so a diverging run stops on its last good state. `opt` is an :class:`SGD` or a
    torch optimiser. On the host the loss comes back as a float (it is read anyway, with the
    finiteness check); an :class:`SGD` on an accelerator is gated on the device, with no
    read-back, and the loss comes back as a 0-d tensor on the device.
    """
    plan = structure.plan(len(x), state, generator)
    opt.zero_grad(set_to_none=True)
    if plan.source == "fisher" and (plan.record_stats or plan.label_weights is not None):
        loss, stats = _fisher_backward(model, params, plan, x, y, generator)
    else:
        loss, stats = _batch_backward(model, params, plan, x, y)
    grads = [p.grad for p in params]
    # the noise goes into the fresh .grad tensors themselves (no P-sized buffers per step)
    noisy, state = structure.update(grads, state, stats, generator, inplace=True)
    for p, g, old in zip(params, noisy, grads, strict=True):
        if g is not old:
            p.grad = g
    # One fused norm per gradient and one read-back, instead of an isfinite pass per tensor
    # (that cost 0.4 of a plain step on a small MLP, bench.epoch). A gradient whose norm
    # overflows (entries beyond ~1e19 in float32) counts as non-finite too. On the host the
    # norms are read as they are (the total norm and its stack cost a twentieth of a small
    # step); on an accelerator they are reduced to one flag that gates the update there.
    norms = torch._foreach_norm(noisy)
    if isinstance(opt, SGD) and opt.on_device:
        total = torch.linalg.vector_norm(torch.stack(norms))
        finite = torch.isfinite(torch.stack([loss, total.to(loss.dtype)]))
        opt.step(finite.all())
        return torch.where(finite[0] & ~finite[1], math.nan, loss), state
    # on the host: the loss and each gradient's norm in one read-back
    value, *grad_norms = torch.stack([loss, *norms]).tolist()
    loss_ok = math.isfinite(value)
    if loss_ok and all(map(math.isfinite, grad_norms)):
        opt.step()
        return value, state
    # keep the last good parameters; the caller sees a non-finite loss and stops
    return (math.nan if loss_ok else value), state
