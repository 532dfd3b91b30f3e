"""What a run records about where and with what it ran: device, versions, code revision.

A run's results are only comparable with others made by the same code on known software,
so every run's start and summary events carry these.
"""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

import covnoise
from covnoise.core.noise import compiled


def describe_device(device: torch.device) -> str:
    """The device in words: the GPU's name, or the CPU's kind and thread count."""
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    """Versions of Python, torch, numpy and covnoise, and which N(0, 1) draw the CPU uses
    from 2¹⁴ entries up (compiled or numpy: the same numbers up to float32 roundings)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "covnoise": covnoise.__version__,
        "cpu_draw": compiled.describe(),
    }


def code_revision() -> str:
    """The git commit of the package (with `-dirty` when the tree has changes), or unknown."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev + ("-dirty" if dirty else "")) if rev else "unknown"


def provenance(device: torch.device) -> dict[str, object]:
    """The device, versions and code revision, as a run's events record them."""
    return {
        "device": describe_device(device),
        "versions": versions(),
        "code_revision": code_revision(),
    }
