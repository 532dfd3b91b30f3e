"""The per-example loss every part of training and measurement uses.

The noise structures, the per-example recorders and the curvature operators all work with
per-example losses l_n (reduction none), so there is one definition of them.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def per_example_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of each example (reduction none): the l_n of docs/design.md."""
    return F.cross_entropy(logits, y, reduction="none")
