"""The validation split: a seeded, stratified part of the training set held out from training.

:func:`hold_out` takes a loader's :class:`Prepared` split and moves a fraction of each class
of the training set to a validation split, chosen by ``split_seed`` (so it is fixed for a
data set and seed, and independent of the training seed). Loaders standardise their inputs
with statistics of the whole training set; since standardisation is an affine map per
channel, :func:`hold_out` recomputes the statistics on the kept training rows only and maps
every split onto them, which equals carving the split before standardising (up to float32
rounding) for every loader, without the loaders knowing about validation. With a fraction of
0 the split is returned untouched, bit for bit.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch
from torch import Tensor

from covnoise.data.dataset import DatasetError
from covnoise.data.prepared import Prepared, split_hash

#: Mixed into ``split_seed`` so the validation choice is its own random stream, apart from
#: the train/test split a loader draws from the same seed.
_VALIDATION_STREAM = 0x56414C  # "VAL"


def validation_size(n_train: int, fraction: float) -> int:
    """Examples held out of ``n_train`` at ``fraction``: fraction · N rounded half up."""
    return int(math.floor(fraction * n_train + 0.5))


def class_quotas(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Validation examples per class: ⌊f·n_c⌋ each, plus one for the classes with the
    largest remainders (ties to the lower class) until the total is validation_size(N, f),
    so every class is within one example of f·n_c."""
    counts = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    exact = fraction * counts
    quotas = np.floor(exact).astype(np.int64)
    extra = validation_size(len(labels), fraction) - int(quotas.sum())
    order = np.argsort(-(exact - quotas), kind="stable")
    quotas[order[:extra]] += 1
    return quotas


def stratified_indices(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held): sorted row indices of the training set, ``held`` drawing its class
    quota (:func:`class_quotas`) uniformly from each class with the stream of ``seed``."""
    labels = np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng([int(seed), _VALIDATION_STREAM])
    held = [
        rng.permutation(np.flatnonzero(labels == c))[:q]
        for c, q in enumerate(class_quotas(labels, fraction))
    ]
    held_idx = np.sort(np.concatenate([np.zeros(0, dtype=np.int64), *held]))
    mask = np.ones(len(labels), dtype=bool)
    mask[held_idx] = False
    return np.flatnonzero(mask), held_idx


def _channel_moments(x: Tensor, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (population) variance of ``x`` (N, C, ...) in float64, two
    passes over row chunks so no float64 copy of the whole tensor is made."""
    axes = (0, *range(2, x.ndim))
    count = x.shape[0] * math.prod(x.shape[2:])
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for i in range(0, len(x), chunk):
        total += x[i : i + chunk].double().sum(dim=axes).cpu()
    mean = total / count
    shape = (1, -1) + (1,) * (x.ndim - 2)
    sq = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        sq += (x[i : i + chunk].double() - mean.reshape(shape)).pow(2).sum(dim=axes).cpu()
    return mean.numpy(), (sq / count).numpy()


def _restandardise(
    x_kept: Tensor, others: list[Tensor], record: dict
) -> tuple[Tensor, list[Tensor], dict]:
    """Map inputs standardised with ``record``'s statistics onto those of ``x_kept``.

    With x = (raw·scale − m)/s and kept rows of mean μ and variance v (in x), the kept rows'
    raw statistics are m' = m + s·μ and s' = s·√v, and (raw·scale − m')/s' = x·(s/s') +
    (m − m')/s'. Returns the mapped tensors and the updated record.
    """
    m, s = np.asarray(record["mean"]), np.asarray(record["std"])
    mu, var = _channel_moments(x_kept)
    m_new, s_new = m + s * mu, s * np.sqrt(var)
    s_safe = np.where(s_new > 0, s_new, 1.0)
    shape = (1, -1) + (1,) * (x_kept.ndim - 2)

    def as_tensor(a: np.ndarray) -> Tensor:
        return torch.from_numpy(a.astype(np.float32)).reshape(shape).to(x_kept.device)

    a, b = as_tensor(s / s_safe), as_tensor((m - m_new) / s_safe)
    new_record = {
        **record,
        "mean": [float(v) for v in m_new],
        "std": [float(v) for v in s_safe],
        "computed_on": "train (validation split excluded)",
    }
    return x_kept.mul_(a).add_(b), [x * a + b for x in others], new_record


def hold_out(prep: Prepared, fraction: float, seed: int) -> tuple[Prepared, Tensor, np.ndarray]:
    """(the split without its validation rows, x_val, y_val) at ``fraction`` of the training
    set, stratified and chosen by ``seed``; ``info["validation"]`` records the size, the
    fraction and a fingerprint of the held-out indices (into the loader's training set), and
    the normalisation record the statistics of the kept rows."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise DatasetError(f"val_fraction: needs a number in [0, 1), got {fraction!r}")
    if not 0.0 <= fraction < 1.0:
        raise DatasetError(f"val_fraction: {fraction} is not allowed; use 0 <= val_fraction < 1")
    kept, held = stratified_indices(prep.y_train, float(fraction), seed)
    if len(kept) == 0:
        raise DatasetError(f"val_fraction: {fraction} leaves no training examples")
    record = {
        "size": int(len(held)),
        "fraction": float(fraction),
        "stratified": True,
        "seed": int(seed),
        "indices_hash": split_hash(held),
    }
    info = {**prep.info, "validation": record}
    if len(held) == 0:
        empty = prep.x_train[:0]
        return dataclasses.replace(prep, info=info), empty, prep.y_train[:0]
    rows, val_rows = torch.from_numpy(kept), torch.from_numpy(held)
    x_train, x_val = prep.x_train[rows], prep.x_train[val_rows]
    x_test = prep.x_test
    norm = prep.info.get("normalisation", {})
    if "mean" in norm and "std" in norm:
        x_train, (x_val, x_test), info["normalisation"] = _restandardise(
            x_train, [x_val, x_test], norm
        )
    out = dataclasses.replace(
        prep, x_train=x_train, y_train=prep.y_train[kept], x_test=x_test, info=info
    )
    return out, x_val, prep.y_train[held]
