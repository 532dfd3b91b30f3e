"""The B×B Gram matrix G Gᵀ of per-example gradients, layer by layer.

The full noise structure's statistics need tr C and ‖C‖_F, which follow from the centred
Gram matrix without forming the P×P covariance. Accumulated in float64.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from covnoise.core.pergrad.layers import (
    chunks,
    is_plain_linear,
    per_example_bias,
    per_example_weight,
)
from covnoise.core.pergrad.recorder import Layer, LayerRecorder


def _add_layer_gram(gram: Tensor, m: nn.Module, a: Tensor, d: Tensor) -> None:
    """Blocks G_i G_jᵀ of one layer's per-example gradients, chunk by chunk; when the
    layer's gradients do not fit in one chunk, chunks are recomputed rather than stored."""
    parts = chunks(m, a, d)
    if len(parts) == 1:
        g = per_example_weight(m, a, d).flatten(1)
        gram += g.mm(g.t()).double()
        return
    for i, ci in enumerate(parts):
        gi = per_example_weight(m, a[ci], d[ci]).flatten(1)
        gram[ci, ci] += gi.mm(gi.t()).double()
        for cj in parts[i + 1 :]:
            block = gi.mm(per_example_weight(m, a[cj], d[cj]).flatten(1).t()).double()
            gram[ci, cj] += block
            gram[cj, ci] += block.t()


class GramRecorder(LayerRecorder):
    """Context manager: records the Gram matrix G Gᵀ of per-example gradients (all tracked
    parameters), layer by layer, over `rows` (None = the whole batch).

    For a linear layer on (b, in) inputs the layer's Gram is (δδᵀ) ⊙ (aaᵀ) (+ δδᵀ for the
    bias), with no per-example gradient formed; convolutions form one layer's per-example
    gradients at a time. Accumulated in float64.
    """

    def __init__(
        self,
        model: nn.Module,
        weights: Tensor | float,
        params: list[Tensor] | None = None,
        rows: Tensor | None = None,
    ):
        super().__init__(model, rows, weights, params)
        self._gram: Tensor | None = None

    def __enter__(self) -> GramRecorder:
        return super().__enter__()

    def _accumulate(self, layer: Layer, a: Tensor, d: Tensor) -> None:
        m = layer.module
        b = d.shape[0]
        gram = torch.zeros(b, b, dtype=torch.float64, device=d.device)
        if layer.weight is not None:
            if is_plain_linear(m, a):
                gram += (d.mm(d.t()) * a.mm(a.t())).double()
            else:
                _add_layer_gram(gram, m, a, d)
        if layer.bias is not None:
            gb = per_example_bias(m, d)
            gram += gb.mm(gb.t()).double()
        self._gram = gram if self._gram is None else self._gram + gram

    def result(self) -> Tensor:
        """The b×b Gram matrix (float64), b = len(rows) or the batch size."""
        self._check_recorded()
        if self._gram is None:
            dev = self.params[0].device if self.params else None
            return torch.zeros(self.count, self.count, dtype=torch.float64, device=dev)
        return self._gram
