"""The per-example loss every part of training and measurement uses, and its label sampler.

The noise structures, the per-example recorders and the curvature operators all work with
per-example losses l_n (reduction none), so there is one definition of them. The true-Fisher
noise source needs labels drawn from the distribution this loss models, softmax(logits):
`sample_labels` is that draw, and `fisher_losses` gives the losses at the labels and at the
drawn labels from one log-softmax (cross-entropy is the negative log-likelihood of the
log-softmax, so the loss at the labels is exactly `per_example_loss`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def per_example_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of each example (reduction none): the l_n of docs/design.md."""
    return F.cross_entropy(logits, y, reduction="none")


def mean_loss(logits: Tensor, y: Tensor) -> Tensor:
    """The mean of `per_example_loss` as one fused cross-entropy (the step's objective under
    uniform weights: one autograd node fewer than a mean over the per-example losses)."""
    return F.cross_entropy(logits, y)


def sample_labels(logits: Tensor, generator: torch.Generator, log_probs: bool = False) -> Tensor:
    """One label ŷ_n ~ p(y | x_n) = softmax(logits_n) per row, by inversion of the CDF.

    One uniform u_n per row from `generator` (on its device); ŷ_n is the first class whose
    cumulative probability exceeds u_n times the total. The CDF is formed in float64 and
    scaled by its last entry, so rounding can neither pick a class of zero probability nor
    run past the last class. `log_probs`: the rows are already log-probabilities (exp
    replaces the softmax). Reproducible from the generator's state; no gradient flows.
    """
    with torch.no_grad():
        z = logits.detach().double()
        cdf = (z.exp() if log_probs else torch.softmax(z, dim=-1)).cumsum_(-1)
        u = torch.rand(logits.shape[:-1], generator=generator, device=generator.device)
        u = u.to(device=cdf.device, dtype=cdf.dtype).mul_(cdf[..., -1])
        y = torch.searchsorted(cdf, u.unsqueeze(-1), right=True).squeeze(-1)
        return y.clamp_(max=logits.shape[-1] - 1)


def fisher_losses(logits: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """(l(x_n, y_n), l(x_n, ŷ_n)) with ŷ_n ~ softmax(logits_n) drawn by `sample_labels`.

    One log-softmax serves both losses and the draw (a second cross-entropy and a softmax
    would cost about a tenth of a small MLP's step); the first loss equals
    `per_example_loss(logits, y)` bit for bit.
    """
    logp = F.log_softmax(logits, dim=-1)
    y_hat = sample_labels(logp, generator, log_probs=True)
    return F.nll_loss(logp, y, reduction="none"), F.nll_loss(logp, y_hat, reduction="none")
