"""digits: scikit-learn's 8x8 handwritten digits (shipped with it, so no download), with a
stratified train/test split chosen by ``split_seed``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from covnoise.data.dataset import DatasetError
from covnoise.data.normalise import standardise_float
from covnoise.data.prepared import Prepared, split_hash


def prepare_digits(root: Path, split_seed: int, o: dict) -> Prepared:
    """The digits split by ``split_seed`` (stratified), pixels scaled to [0, 1] and
    standardised with the train statistics."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.asarray(bunch.images, dtype=np.float64)[:, None, :, :]  # (N, 1, 8, 8), 0..16
    labels = np.asarray(bunch.target, dtype=np.int64)
    index = np.arange(len(labels))
    try:
        train_idx, test_idx = train_test_split(
            index, test_size=o["test_fraction"], stratify=labels, random_state=split_seed
        )
    except ValueError as exc:
        raise DatasetError(
            f"options.test_fraction: digits cannot be split that way: {exc}"
        ) from exc
    xtr, xte, norm = standardise_float(images[train_idx], images[test_idx], scale=1.0 / 16.0)
    return Prepared(
        xtr,
        labels[train_idx],
        xte,
        labels[test_idx],
        10,
        (1, 8, 8),
        {
            "source": "sklearn.datasets.load_digits (UCI optical recognition of handwritten "
            "digits, 8x8, pixel values 0..16)",
            "split": "stratified random (sklearn train_test_split)",
            "split_hash": split_hash(test_idx),
            "normalisation": norm,
        },
    )
