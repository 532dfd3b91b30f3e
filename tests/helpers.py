"""Small helpers shared by several test modules."""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy (reduction none)."""
    return F.cross_entropy(logits, y, reduction="none")


def wait_for(predicate, timeout: float, poll: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")
