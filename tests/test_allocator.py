"""keep_freed_memory against the kernel's own count of page faults: after it, a step-like
pattern of large allocations reuses freed memory instead of faulting in new pages."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from covnoise.core.allocator import keep_freed_memory

ROOT = Path(__file__).resolve().parents[1]

# 1 M, 2 M and 1.5 M float32 entries per "step": 4,608 pages of 4 KiB touched each time
_SCRIPT = textwrap.dedent(
    """
    import resource, sys, torch
    if sys.argv[1] == "tuned":
        from covnoise.core.allocator import keep_freed_memory
        assert keep_freed_memory()
    def step():
        a = torch.empty(1 << 20).fill_(1.0)
        b = torch.empty(1 << 21).fill_(1.0)
        del a
        c = torch.empty(3 << 19).fill_(1.0)
        del b, c
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
    """
)
PAGES_PER_STEP = (1 + 2 + 1.5) * (1 << 20) * 4 / 4096


def _faults_per_step(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT, mode],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_blocks_are_reused_without_page_faults():
    if not keep_freed_memory():
        pytest.skip("this C library has no mallopt")
    tuned = _faults_per_step("tuned")
    default = _faults_per_step("default")
    assert tuned < 0.01 * PAGES_PER_STEP, (tuned, default)
    # glibc's own thresholds fault some of those pages back in every step
    assert default > tuned


_BLOCK_SCRIPT = textwrap.dedent(
    """
    import contextlib, sys, psutil, torch
    from covnoise.core.allocator import freed_memory_kept, keep_freed_memory
    rss = lambda: psutil.Process().memory_info().rss / 2**20
    def churn():  # 8 × 16 MiB freed: 128 MiB, below TRIM_BYTES, so nothing trims it
        held = [torch.empty(1 << 22).fill_(1.0) for _ in range(8)]
        del held
    torch.empty(1).fill_(0.0)
    base = rss()
    mode = sys.argv[1]
    if mode == "process-first":
        keep_freed_memory()
    with freed_memory_kept() as kept:
        if mode == "nested":
            with freed_memory_kept():
                churn()
        churn()
        if mode == "process-inside":
            keep_freed_memory()
        inside = rss()
    after = rss()
    print(kept, inside - base, after - base)
    """
)


def _block(mode: str) -> tuple[str, float, float]:
    out = subprocess.run(
        [sys.executable, "-c", _BLOCK_SCRIPT, mode],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    kept, inside, after = out.stdout.split()
    return kept, float(inside), float(after)


def test_memory_kept_for_a_block_is_given_back_after_it():
    """freed_memory_kept (the app's cost timing): 128 MiB of 16 MiB tensors freed inside the
    block stay with the process while it lasts (to be reused) and leave it when the last open
    block ends (a nested one ending first gives nothing back); where keep_freed_memory made
    the thresholds the process's own, before or during the block, the memory stays (RSS from
    the kernel's own count)."""
    kept, inside, after = _block("block")
    if kept != "True":
        pytest.skip("not glibc: malloc's thresholds cannot be set here")
    assert inside > 100 and after < 50
    _, inside, after = _block("nested")
    assert inside > 100 and after < 50
    for mode in ("process-first", "process-inside"):
        _, inside, after = _block(mode)
        assert inside > 100 and after > 100, mode
