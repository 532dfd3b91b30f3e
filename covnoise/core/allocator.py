"""Keep large freed blocks inside the process, so each step's fresh tensors do not page-fault.

PyTorch's CPU allocator hands every tensor to malloc and frees it as soon as the tensor dies.
glibc serves a block above its mmap threshold with a fresh mapping and unmaps it on free,
and gives the top of the heap back to the kernel once more than its trim threshold is free;
both thresholds start small (128 KiB) and only partly adapt. A training step allocates the
same large buffers every step (activations, gradients, the noise draw), so they arrive as
new pages that the kernel zero-fills on first touch: about 0.6 µs per 4 KiB page on the
development machine, 0.6 ms for a 4 MB buffer, which made a diag-noise step of a
10⁶-parameter MLP 2.4× a plain step instead of 1.8×, and a plain CNN step 1.25× slower.
`keep_freed_memory` raises the mmap threshold to glibc's largest (32 MiB) and the trim
threshold to `TRIM_BYTES`, so freed blocks are reused. It changes no result, only where
memory comes from, and costs up to `TRIM_BYTES` of freed memory kept by the process.
The training loop calls it; elsewhere than glibc it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: glibc's largest mmap threshold on 64-bit systems (DEFAULT_MMAP_THRESHOLD_MAX).
MMAP_BYTES = 32 << 20
#: Freed memory at the top of the heap kept for reuse before any is returned.
TRIM_BYTES = 256 << 20


@functools.cache
def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep and reuse large freed blocks; True when it agreed.

    Idempotent and process-wide (the first call does the work)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS, Windows)
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_BYTES)
    )
