"""Per-example gradients of one layer from its input a and its output gradient δ.

The recorders (covnoise.core.pergrad.recorder) call these from inside a backward hook. A
linear layer's per-example weight gradient is δ_n ⊗ a_n; a convolution's is δ_n times the
unfolded input. Padding modes that `F.unfold` cannot express are applied to the input first.
Convolutions form per-example weight gradients for a bounded number of examples at a time
(`_CHUNK_ELEMENTS`) so memory stays flat whatever the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

SUPPORTED_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d)

# Largest number of elements of per-example weight gradients formed at once (conv layers).
_CHUNK_ELEMENTS = 1 << 24


def _conv_input_padded(module: nn.Module, a: Tensor) -> tuple[Tensor, tuple[int, ...]]:
    """The conv input with explicit padding where unfold cannot pad, and the padding left."""
    nd = a.dim() - 2
    kernel, dilation = module.kernel_size, module.dilation
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return a, (0,) * nd
        pads: list[int] = []  # "same": left = total // 2, the extra one on the right
        for d, k in zip(reversed(dilation), reversed(kernel), strict=True):
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        return F.pad(a, pads, mode=mode), (0,) * nd
    if module.padding_mode != "zeros":
        pads = [p for p in reversed(module.padding) for _ in range(2)]
        return F.pad(a, pads, mode=module.padding_mode), (0,) * nd
    return a, tuple(module.padding)


def _unfold(module: nn.Module, a: Tensor) -> Tensor:
    """Unfolded conv input (b, C_in·k, L), rows ordered like weight.view(C_out, -1)."""
    a, padding = _conv_input_padded(module, a)
    if isinstance(module, nn.Conv1d):
        return F.unfold(
            a.unsqueeze(2),
            kernel_size=(1, module.kernel_size[0]),
            dilation=(1, module.dilation[0]),
            padding=(0, padding[0]),
            stride=(1, module.stride[0]),
        )
    return F.unfold(
        a,
        kernel_size=module.kernel_size,
        dilation=module.dilation,
        padding=padding,
        stride=module.stride,
    )


def is_plain_linear(module: nn.Module, a: Tensor) -> bool:
    """A linear layer on (b, in) inputs: statistics without per-example gradients."""
    return isinstance(module, nn.Linear) and a.dim() == 2


def per_example_weight(module: nn.Module, a: Tensor, d: Tensor) -> Tensor:
    """Per-example weight gradients (b, C_out, fan_in) from the layer input a and δ."""
    b = a.shape[0]
    if isinstance(module, nn.Linear):
        if a.dim() == 2:
            return d.unsqueeze(2) * a.unsqueeze(1)
        a = a.reshape(b, -1, a.shape[-1])
        return torch.bmm(d.reshape(b, -1, d.shape[-1]).transpose(1, 2), a)
    cols = _unfold(module, a)  # (b, C_in·k, L)
    return torch.bmm(d.reshape(b, d.shape[1], -1), cols.transpose(1, 2))


def per_example_bias(module: nn.Module, d: Tensor) -> Tensor:
    """Per-example bias gradients (b, C_out)."""
    if isinstance(module, nn.Linear):
        return d if d.dim() == 2 else d.reshape(d.shape[0], -1, d.shape[-1]).sum(1)
    return d.reshape(d.shape[0], d.shape[1], -1).sum(2)


def chunks(module: nn.Module, a: Tensor, d: Tensor) -> list[slice]:
    """Slices of examples whose per-example weight gradients (and unfolded inputs) stay
    within _CHUNK_ELEMENTS elements."""
    b = a.shape[0]
    per_example = module.weight.numel() + a[:1].numel() * math.prod(module.weight.shape[2:])
    step = max(1, _CHUNK_ELEMENTS // max(1, per_example))
    return [slice(i, min(b, i + step)) for i in range(0, b, step)]
