"""Input standardisation with statistics of the train split only, and the record of it.

Every loader scales its raw inputs, then subtracts the per-channel mean and divides by the
per-channel standard deviation of the train split; the statistics are recorded in
``Dataset.info`` so a run can be reproduced and its inputs mapped back to raw values.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor


def _channel_stats_float(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) std of ``x`` with shape (N, C, ...), in float64."""
    axes = (0,) + tuple(range(2, x.ndim))
    x64 = x.astype(np.float64, copy=False)
    mean = x64.mean(axis=axes)
    std = x64.std(axis=axes)
    return mean, std


def _channel_stats_uint8(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Exact per-channel mean and std of ``scale * x`` for uint8 ``x`` of shape (N, C, ...).

    Uses a 256-bin histogram per channel, so no float copy of the images is made.
    """
    values = np.arange(256, dtype=np.float64) * scale
    means, stds = [], []
    for c in range(x.shape[1]):
        counts = np.bincount(x[:, c].reshape(-1), minlength=256).astype(np.float64)
        n = counts.sum()
        mean = (counts @ values) / n
        var = max((counts @ (values - mean) ** 2) / n, 0.0)
        means.append(mean)
        stds.append(math.sqrt(var))
    return np.asarray(means), np.asarray(stds)


def _safe_std(std: np.ndarray) -> np.ndarray:
    return np.where(std > 0, std, 1.0)


def _normalisation_record(scale: float, mean: np.ndarray, std: np.ndarray) -> dict:
    return {
        "formula": "x = (raw * scale - mean[c]) / std[c]",
        "scale": float(scale),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in _safe_std(std)],
        "per": "channel",
        "computed_on": "train",
    }


def standardise_float(
    x_train: np.ndarray, x_test: np.ndarray, scale: float = 1.0
) -> tuple[Tensor, Tensor, dict]:
    """Scale, then standardise per channel with the train statistics; returns float32 tensors."""
    xtr = x_train.astype(np.float64) * scale
    xte = x_test.astype(np.float64) * scale
    mean, std = _channel_stats_float(xtr)
    shape = (1, -1) + (1,) * (xtr.ndim - 2)
    m, s = mean.reshape(shape), _safe_std(std).reshape(shape)
    tr = torch.from_numpy(((xtr - m) / s).astype(np.float32))
    te = torch.from_numpy(((xte - m) / s).astype(np.float32))
    return tr, te, _normalisation_record(scale, mean, std)


def standardise_uint8(x_train: np.ndarray, x_test: np.ndarray) -> tuple[Tensor, Tensor, dict]:
    """uint8 images (N, C, H, W) -> float32 tensors scaled to [0, 1] and standardised per
    channel with the train statistics, converting in place to keep peak memory low."""
    scale = 1.0 / 255.0
    mean, std = _channel_stats_uint8(x_train, scale)
    shape = (1, -1) + (1,) * (x_train.ndim - 2)
    m = torch.from_numpy(mean).reshape(shape).to(torch.float32)
    s = torch.from_numpy(_safe_std(std)).reshape(shape).to(torch.float32)
    out = []
    for x in (x_train, x_test):
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        t.mul_(scale).sub_(m).div_(s)
        out.append(t)
    return out[0], out[1], _normalisation_record(scale, mean, std)
