"""A one-line description of the machine a benchmark ran on (printed with every table)."""

from __future__ import annotations

import os
import platform

import torch


def describe_machine(device: str = "cpu") -> str:
    """CPU model and core count (or the GPU name), torch version and thread count."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    text = f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__}, "
    text += f"{torch.get_num_threads()} threads"
    if device.startswith("cuda") and torch.cuda.is_available():
        text += f", GPU {torch.cuda.get_device_name(0)}"
    return text
