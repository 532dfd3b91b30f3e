"""digits: scikit-learn's 8x8 handwritten digits, shipped with covnoise, with a stratified
train/test split chosen by ``split_seed``.

The 1797 images and labels are ``sklearn.datasets.load_digits()`` stored as uint8 in
``digits.npz`` next to this module (pixel values 0..16; tests/test_data_embedded.py holds them
against scikit-learn), so loading them imports neither scikit-learn nor scipy (3 s of a fresh
process). :func:`stratified_split` is scikit-learn's ``train_test_split(index,
test_size=..., stratify=labels, random_state=seed)`` re-implemented with numpy: the same
indices in the same order for every seed and test size, so the split hashes stored runs
record still hold.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np

from covnoise.data.dataset import DatasetError
from covnoise.data.normalise import standardise_float
from covnoise.data.prepared import Prepared, split_hash

#: The shipped arrays: images uint8 (1797, 8, 8), labels uint8 (1797,).
DIGITS_FILE = "digits.npz"


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 (N, 8, 8) with values 0..16, labels int64 (N,)) from the shipped file."""
    with resources.files("covnoise.data").joinpath(DIGITS_FILE).open("rb") as fh:
        with np.load(fh, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    return images, labels.astype(np.int64)


def _test_count(n: int, test_size: float | int) -> int:
    """Test rows for ``test_size`` (a fraction in (0, 1): ⌈f·n⌉; an int: that many), checked
    as scikit-learn's _validate_shuffle_split checks it."""
    kind = np.asarray(test_size).dtype.kind
    if (kind == "i" and not 0 < test_size < n) or (kind == "f" and not 0 < test_size < 1):
        raise ValueError(
            f"test_size={test_size} should be either positive and smaller than the number "
            f"of samples {n} or a float in the (0, 1) range"
        )
    if kind not in ("i", "f"):
        raise ValueError(f"Invalid value for test_size: {test_size}")
    n_test = math.ceil(test_size * n) if kind == "f" else int(test_size)
    if n - n_test == 0:
        raise ValueError(f"With n_samples={n}, test_size={test_size} the train set is empty")
    return n_test


def _approximate_mode(counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Draws per class: ⌊counts/N · draws⌋, plus one for the largest remainders, ties broken
    by ``rng`` (scikit-learn's _approximate_mode, same draws from ``rng``)."""
    continuous = counts / counts.sum() * draws
    floored = np.floor(continuous)
    need = int(draws - floored.sum())
    if need > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (inds,) = np.where(remainder == value)
            add_now = min(len(inds), need)
            floored[rng.choice(inds, size=add_now, replace=False)] += 1
            need -= add_now
            if need == 0:
                break
    return floored.astype(int)


def stratified_split(
    labels: np.ndarray, test_size: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) row indices (int64), stratified by ``labels`` and fixed by ``seed``:
    exactly ``sklearn.model_selection.train_test_split(np.arange(N), test_size=test_size,
    stratify=labels, random_state=seed)``. Raises ValueError where scikit-learn would (a
    class with one member, fewer train or test rows than classes, a bad test size)."""
    labels = np.asarray(labels)
    n = len(labels)
    n_test = _test_count(n, test_size)
    n_train = n - n_test
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    if counts.min() < 2:
        raise ValueError(
            "The least populated classes in y have only 1 member, which is too few: "
            f"{classes[counts < 2].tolist()}"
        )
    for name, size in (("train_size", n_train), ("test_size", n_test)):
        if size < len(classes):
            raise ValueError(
                f"The {name} = {size} should be greater or equal to the number of "
                f"classes = {len(classes)}"
            )
    members = np.split(np.argsort(inverse, kind="stable"), np.cumsum(counts)[:-1])
    rng = np.random.RandomState(seed)
    n_i = _approximate_mode(counts, n_train, rng)
    t_i = _approximate_mode(counts - n_i, n_test, rng)
    train: list[int] = []
    test: list[int] = []
    for i in range(len(classes)):
        rows = members[i].take(rng.permutation(counts[i]), mode="clip")
        train.extend(rows[: n_i[i]])
        test.extend(rows[n_i[i] : n_i[i] + t_i[i]])
    train_idx = rng.permutation(np.asarray(train, dtype=np.int64))
    test_idx = rng.permutation(np.asarray(test, dtype=np.int64))
    return train_idx, test_idx


def prepare_digits(root: Path, split_seed: int, o: dict) -> Prepared:
    """The digits split by ``split_seed`` (stratified), pixels scaled to [0, 1] and
    standardised with the train statistics."""
    images_u8, labels = digits_arrays()
    images = images_u8.astype(np.float64)[:, None, :, :]  # (N, 1, 8, 8), 0..16
    try:
        train_idx, test_idx = stratified_split(labels, o["test_fraction"], split_seed)
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
