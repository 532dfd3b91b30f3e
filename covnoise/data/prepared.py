"""What a loader hands to :func:`covnoise.data.load_dataset`, and the split fingerprint.

Loaders return host tensors and numpy labels plus their part of the record; ``load_dataset``
adds the common fields, checks shapes and moves everything to the device in one place.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from torch import Tensor


@dataclass
class Prepared:
    """What a loader hands to :func:`load_dataset` before tensors go to the device."""

    x_train: Tensor
    y_train: np.ndarray
    x_test: Tensor
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    info: dict


def split_hash(test_index: np.ndarray) -> str:
    """Short fingerprint of a split (the sorted test indices), to compare splits across runs."""
    idx = np.sort(np.asarray(test_index, dtype=np.int64))
    return hashlib.sha256(idx.tobytes()).hexdigest()[:16]
