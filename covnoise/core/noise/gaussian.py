"""Fast standard-normal draws on the CPU: numpy's SFC64 bits and Box–Muller, compiled or in numpy.

torch's `normal_` on the CPU draws one uniform per entry from a serial mt19937 (3.4–7 ns per
entry on the development machines: 3.4–7.0 ms for P = 10⁶, about half a plain step of a
10⁶-parameter MLP at B = 128). `gaussian_` draws the same distribution with the same method,
Box–Muller on 24-bit uniforms, but takes the random bits from numpy's SFC64 generator, on
one of two paths that draw the same numbers up to a few float32 roundings:
- compiled (`covnoise.core.noise.compiled`, kernels.c built once per machine with the C
  compiler): the bits and the transform in one vectorised pass, about 75 µs for 10⁵ entries
  on the development machine;
- numpy, where no compiler is found or the compiled draw fails its check: the bits in one
  bulk call (about 1 ns per 32 bits) and the transform in place with numpy's SIMD float32
  log, sqrt, sin and cos, about 210 µs for 10⁵ entries.
Both run on one thread. Splitting the numpy draw over two threads was slower below 10⁶
entries (waking the second core costs 40–100 µs on the development machine, and torch's
OpenMP threads spin there after each parallel region); an earlier version did the transform
with torch's intra-op threads, which inside a training step made it slower than `normal_`
below P ≈ 10⁵. `python -m bench.steps --draw` gives the speed-ups.

The method, for n entries and h = ⌈n/2⌉ pairs: 2h uniform 32-bit words; the low 23 bits m₁
of word i and m₂ of word h + i give u₁ = (2m₁ + 1)·2⁻²⁴ ∈ (0, 1) (exact in float32, never 0
or 1) and θ = 2π·m₂·2⁻²³ (numpy rounds 2π(1 + m₂·2⁻²³) to float32, the compiled draw takes
the quarter turn from m₂'s bits exactly); then r = √(−2 ln u₁), and z_i = r cos θ and
z_{h+i} = r sin θ are independent N(0, 1). Like torch's, the largest |z| is √(48 ln 2) ≈
5.77. The bits come from an SFC64 whose state is three 63-bit words drawn from the run's
torch generator: either one kept by the caller for the whole run (`new_bits`, passed as
`bits`; a training run keeps one in its noise state, since seeding one costs 20–30 µs a step
right after a backward) or, without `bits`, a fresh one seeded from `generator` for the call.
Either way a run stays reproducible from its seed (bit for bit on one machine with the same
path; numpy picks its SIMD kernels by CPU and the compiled draw is built for it, so the last
bit of a draw may differ between machines, like the matrix products). Below `MIN_ENTRIES`
entries, for other dtypes and off the CPU (CUDA's Philox `normal_` is fast), torch's own
`normal_` is used.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from covnoise.core.noise import compiled

#: Below this many entries the fixed cost of the fast path (≈ 20 µs: the generator's state,
#: numpy's call overheads) exceeds what it saves.
MIN_ENTRIES = 1 << 14

_MANTISSA = 0x007FFFFF
_ONE = 0x3F800000  # float32 1.0: OR-ing a 23-bit mantissa into it gives 1 + m·2⁻²³
_TWO_PI = 2.0 * math.pi


def uses_bits(out: Tensor) -> bool:
    """Whether `gaussian_` fills `out` from SFC64 bits (else torch's own `normal_`)."""
    return (
        out.device.type == "cpu"
        and out.dtype == torch.float32
        and out.numel() >= MIN_ENTRIES
        and out.is_contiguous()
    )


def new_bits(generator: torch.Generator) -> np.random.SFC64:
    """An SFC64 for a whole run's draws, its state three words drawn from `generator`
    (counter 1)."""
    words = torch.empty(3, dtype=torch.int64).random_(generator=generator).tolist()
    return compiled.sfc64(np.array([*words, 1], dtype=np.uint64))


def gaussian_(
    out: Tensor, generator: torch.Generator, bits: np.random.SFC64 | None = None
) -> Tensor:
    """Fill the contiguous float32 tensor `out` with independent N(0, 1) draws, in place.

    With `bits` (from `new_bits`) the draw continues that generator's stream and `generator`
    is not used; without it a fresh SFC64 is seeded from `generator` for this draw (13–30 µs:
    a run keeps one instead). Where `uses_bits(out)` is false, torch's `normal_` with
    `generator` fills it either way."""
    if not uses_bits(out):
        return out.normal_(generator=generator)
    source = bits if bits is not None else new_bits(generator)
    kernel = compiled.load()
    if kernel is None:
        return fill_numpy(out, source)
    return fill_compiled(out, source, kernel)


def fill_compiled(out: Tensor, source: np.random.SFC64, kernel: compiled.Kernel) -> Tensor:
    """The draw by kernels.c: `source`'s state is read, advanced there and written back,
    under the generator's own lock (as numpy's draws are), so threads sharing it never draw
    the same words. `out` must be what `uses_bits` accepts (contiguous float32 on the CPU):
    the kernel writes through its pointer."""
    if not uses_bits(out):
        raise ValueError(
            "fill_compiled: out must be a contiguous float32 CPU tensor of at "
            f"least {MIN_ENTRIES} entries, got {out.dtype} {tuple(out.shape)}"
        )
    with source.lock:
        state = source.state
        words = state["state"]["state"]  # a fresh uint64 array (a, b, c, counter)
        kernel(out.data_ptr(), out.numel(), words)
        source.state = state
    return out


def fill_numpy(out: Tensor, source: np.random.SFC64) -> Tensor:
    """The draw in numpy: SFC64 bits in one bulk call, the transform with its SIMD functions."""
    flat = out.view(-1)
    n = flat.numel()
    h = (n + 1) // 2
    words = source.random_raw(h).view(np.uint32)  # 2h words, a fresh array
    words &= _MANTISSA
    words |= _ONE
    u = words.view(np.float32)  # [1, 2)
    # u₁ − (1 − 2⁻²⁴) = (2m + 1)·2⁻²⁴ exactly (Sterbenz), so ln never sees 0
    r = u[:h]
    r -= np.float32(1.0 - 2.0**-24)
    np.log(r, out=r)
    r *= np.float32(-2.0)
    np.sqrt(r, out=r)
    theta = u[h:]
    theta *= np.float32(_TWO_PI)
    z = flat.numpy()
    np.sin(theta[: n - h], out=z[h:])
    z[h:] *= r[: n - h]
    np.cos(theta, out=z[:h])
    z[:h] *= r
    return out
