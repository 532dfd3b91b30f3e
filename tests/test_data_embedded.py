"""The embedded data sets without scikit-learn: the shipped digits arrays and the own
stratified split hold against scikit-learn (a dev dependency) for many seeds and sizes."""

from __future__ import annotations

import numpy as np
import pytest

from covnoise.data.digits import digits_arrays, stratified_split

sklearn = pytest.importorskip("sklearn")
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402


def _sklearn_split(labels, test_size, seed):
    index = np.arange(len(labels))
    return train_test_split(index, test_size=test_size, stratify=labels, random_state=seed)


def test_shipped_digits_equal_sklearn():
    images, labels = digits_arrays()
    bunch = load_digits()
    assert images.shape == (1797, 8, 8) and labels.dtype == np.int64
    np.testing.assert_array_equal(images.astype(np.float64), bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)


@pytest.mark.parametrize("fraction", [0.01, 0.1, 0.25, 0.3, 1 / 3, 0.5, 0.77, 0.9, 0.99])
def test_digits_split_equals_sklearn(fraction):
    _, labels = digits_arrays()
    for seed in [0, 1, 2, 3, 7, 42, 123, 2024, 99991, 2**31 - 1]:
        ours = stratified_split(labels, fraction, seed)
        ref = _sklearn_split(labels, fraction, seed)
        for a, b in zip(ours, ref, strict=True):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == np.int64


@pytest.mark.parametrize("test_size", [10, 100, 999, 1000, 1001, 2500, 4990])
def test_integer_sizes_and_uneven_classes_equal_sklearn(test_size):
    rng = np.random.default_rng(test_size)
    balanced = np.repeat(np.arange(10), 500)  # mnist-5k's labels: 500 per class
    uneven = rng.choice(7, size=5000, p=[0.3, 0.2, 0.15, 0.15, 0.1, 0.05, 0.05])
    for labels in (balanced, rng.permutation(balanced), uneven):
        for seed in range(6):
            ours = stratified_split(labels, test_size, seed)
            ref = _sklearn_split(labels, test_size, seed)
            for a, b in zip(ours, ref, strict=True):
                np.testing.assert_array_equal(a, b)


def test_impossible_splits_raise_like_sklearn():
    _, labels = digits_arrays()
    tiny = np.array([0, 0, 1, 1, 2])
    for lab, size in [(labels, 0.001), (labels, 0.999), (labels, 0.0), (labels, 1.0), (tiny, 0.5)]:
        with pytest.raises(ValueError):
            _sklearn_split(lab, size, 0)
        with pytest.raises(ValueError):
            stratified_split(lab, size, 0)


def test_digits_split_hash_unchanged():
    """prepare_digits gives the split sklearn gave (the hash stored runs record)."""
    from covnoise.data.digits import prepare_digits
    from covnoise.data.prepared import split_hash

    _, labels = digits_arrays()
    for seed in (0, 5):
        prepared = prepare_digits(None, seed, {"test_fraction": 0.25})  # type: ignore[arg-type]
        _, test_idx = _sklearn_split(labels, 0.25, seed)
        assert prepared.info["split_hash"] == split_hash(test_idx)
