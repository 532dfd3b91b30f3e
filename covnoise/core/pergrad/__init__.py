"""Per-example gradient statistics from layer hooks, without materialising B×P gradients.

The diagonal noise structure needs v = per-coordinate variance of the per-example gradients
g_n, and the full structure's noise statistics need the B×B Gram matrix of the g_n. Both are
computed layer by layer from what autograd already has: the layer input a_n (kept by a
forward hook) and the output gradient δ_n (seen by a tensor hook on the layer output).

The backpropagated loss is Σ_n w_n l_n with known weights w_n (1/B for a plain mean), so
δ_n / w_n is the output gradient of l_n alone. For a linear layer g_n = (δ_n/w_n) ⊗ a_n and
Σ_n g_n² = (δ²/w²)ᵀ(a²): one extra matrix product. Convolutions use the unfolded input and
form per-example weight gradients for one layer at a time. Statistics may be restricted to a
sub-batch `rows`, which makes the extra cost proportional to len(rows)/B.

Supported layers: nn.Linear (any number of leading dimensions per example), nn.Conv1d and
nn.Conv2d (stride, padding incl. "same" and non-zero padding modes, dilation; groups=1), with
or without bias. Layers that mix examples (BatchNorm in training mode) make the per-layer
"per-example gradient" differ from the gradient of l_n; models here avoid them.

A recorder can also take the statistics of a loss other than the one trained on, from the
same forward pass: `recorder.backward(loss)` backpropagates it only as far as the recorded
layers' outputs (no parameter gradients, graph kept), as the true-Fisher source does with
the loss at sampled labels (covnoise.core.step).

Modules: `layers` (one layer's per-example gradients), `recorder` (the hooks, and
`uniform_weights`: the shared read-only 1/B loss weights a recorder knows without reading
them back, which the noise structures' plans hand out), `diag`
(DiagStats, DiagStatsRecorder), `trace` (TraceStats, TraceStatsRecorder: tr C from
per-example gradient norms, without the per-coordinate product), `gram` (GramRecorder),
`reference` (`per_example_grads`, the dense torch.func reference used by tests and small
probes).
"""

from covnoise.core.pergrad.diag import DiagStats, DiagStatsRecorder
from covnoise.core.pergrad.gram import GramRecorder
from covnoise.core.pergrad.layers import SUPPORTED_LAYERS
from covnoise.core.pergrad.recorder import is_uniform, uniform_weights
from covnoise.core.pergrad.reference import per_example_grads
from covnoise.core.pergrad.trace import TraceStats, TraceStatsRecorder

__all__ = [
    "SUPPORTED_LAYERS",
    "DiagStats",
    "DiagStatsRecorder",
    "GramRecorder",
    "TraceStats",
    "TraceStatsRecorder",
    "per_example_grads",
    "is_uniform",
    "uniform_weights",
]
