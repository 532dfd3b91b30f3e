"""CIFAR-10: readers of its python and binary batches, and the loader of the official split.

The python batches are pickles, read with :mod:`covnoise.data.restricted_pickle`, which
rebuilds plain data and numpy arrays only. The binary batches need no pickle at all: each
record is one label byte followed by 3072 pixel bytes (channel-major 3x32x32); the loader
prefers them whenever ``<data_dir>/cifar-10-batches-bin`` exists.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from covnoise.data import restricted_pickle
from covnoise.data.dataset import DatasetError
from covnoise.data.layout import (
    CIFAR10_BIN_TEST_BATCH,
    CIFAR10_BIN_TRAIN_BATCHES,
    CIFAR10_TEST_BATCH,
    CIFAR10_TRAIN_BATCHES,
    cifar10_binary,
    download_hint,
    locate,
)
from covnoise.data.normalise import standardise_uint8
from covnoise.data.prepared import Prepared

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_IMAGE_SHAPE = (3, 32, 32)
#: Bytes per record of the binary version: one label byte, then the 3x32x32 pixels.
CIFAR10_RECORD_BYTES = 1 + 3 * 32 * 32
#: Most images one python batch may hold: the whole data set (the official batches hold 10000).
CIFAR10_MAX_BATCH = 60_000


def _get(d: dict, key: str) -> Any:
    if key.encode() in d:
        return d[key.encode()]
    if key in d:
        return d[key]
    raise KeyError(key)


def _check_labels(path: Path, y: np.ndarray) -> None:
    if y.size and (y.min() < 0 or y.max() >= 10):
        raise DatasetError(f"cifar10: {path}: labels must be in 0..9, got {y.min()}..{y.max()}")


def _refuse_pickle(path: Path, exc: Exception) -> DatasetError:
    """The one-line DatasetError for a pickle the restricted loader refused or failed on."""
    if isinstance(exc, restricted_pickle.RestrictedUnpicklingError):
        what = f"the global {exc.module}.{exc.name}" if exc.module else "a persistent id"
        return DatasetError(
            f"cifar10: refused to load {path}: it references {what}; only plain data (dict, "
            "list, tuple, str, bytes, int, float, bool, None) and numpy arrays are allowed"
        )
    if isinstance(exc, restricted_pickle.PickleLimitError):
        return DatasetError(f"cifar10: refused to load {path}: {exc}")
    return DatasetError(f"cifar10: {path} is not a readable pickle: {exc!r}")


def _batch_data(path: Path, data: Any) -> np.ndarray:
    """``data`` checked as a uint8 array (N, 3072) with N <= CIFAR10_MAX_BATCH."""
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != 3 * 32 * 32
    ):
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"cifar10: {path}: 'data' must be a uint8 array (N, 3072), got {got}")
    if len(data) > CIFAR10_MAX_BATCH:
        raise DatasetError(
            f"cifar10: {path}: 'data' holds {len(data)} images; allowed: at most "
            f"{CIFAR10_MAX_BATCH} per batch"
        )
    return data


def _batch_labels(path: Path, labels: Any, n: int) -> np.ndarray:
    """``labels`` checked as a flat list (or tuple, or 1-D integer array) of ``n`` ints,
    before any conversion: the length and the type of each element are checked first."""
    if isinstance(labels, np.ndarray):
        ok = labels.ndim == 1 and len(labels) == n and (not n or labels.dtype.kind in "iu")
        got = f"{labels.dtype} {labels.shape}"
    else:
        ok = type(labels) in (list, tuple) and len(labels) == n
        ok = ok and all(type(v) is int for v in labels)
        got = f"a {type(labels).__name__}" + (
            f" of {len(labels)}" if type(labels) in (list, tuple) else ""
        )
    if not ok:
        raise DatasetError(
            f"cifar10: {path}: 'labels' must be {n} integers (a flat list), got {got}"
        )
    y = np.asarray(labels, dtype=np.int64) if n else np.zeros(0, np.int64)
    _check_labels(path, y)
    return y


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 images (N, 3, 32, 32), int64 labels (N,)).

    The pickle is read with :mod:`covnoise.data.restricted_pickle`; a file that references any
    global other than numpy's array-rebuilding ones, or that is too large or shares its
    containers too much (see :class:`~covnoise.data.pickle_scan.PickleLimits`), is refused
    before anything runs. ``data`` and ``labels`` are checked for type and size before any
    conversion.
    """
    path = Path(path)
    try:
        obj = restricted_pickle.load_path(path)
    except Exception as exc:  # a malformed pickle can fail in many ways
        raise _refuse_pickle(path, exc) from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"cifar10: {path} must hold a dict, got {type(obj).__name__}")
    try:
        data, labels = _get(obj, "data"), _get(obj, "labels")
    except KeyError as exc:
        raise DatasetError(f"cifar10: {path} has no {exc.args[0]!r} entry") from None
    data = _batch_data(path, data)
    y = _batch_labels(path, labels, len(data))
    return data.reshape(-1, *CIFAR10_IMAGE_SHAPE), y


def read_cifar_bin(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 binary batch -> (uint8 images (N, 3, 32, 32), int64 labels (N,)).

    Each record is 3073 bytes: the label (0..9), then the red, green and blue planes of
    32x32 pixels each, rows top to bottom. The size must be a whole number of records.
    """
    path = Path(path)
    limit = CIFAR10_MAX_BATCH * CIFAR10_RECORD_BYTES
    try:
        size = path.stat().st_size
        if size > limit:
            raise DatasetError(
                f"cifar10: {path} holds {size} bytes; allowed: at most {limit} "
                f"({CIFAR10_MAX_BATCH} records of {CIFAR10_RECORD_BYTES} bytes)"
            )
        buf = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"cifar10: cannot read {path} ({exc})") from exc
    if not buf:
        raise DatasetError(
            f"cifar10: {path} is empty; a CIFAR-10 binary batch holds at least one "
            f"{CIFAR10_RECORD_BYTES}-byte record"
        )
    if len(buf) % CIFAR10_RECORD_BYTES:
        raise DatasetError(
            f"cifar10: {path} holds {len(buf)} bytes, which is not a whole number of "
            f"{CIFAR10_RECORD_BYTES}-byte records (1 label byte + 3072 pixel bytes); the file "
            "is truncated or not a CIFAR-10 binary batch"
        )
    records = np.frombuffer(buf, dtype=np.uint8).reshape(-1, CIFAR10_RECORD_BYTES)
    y = records[:, 0].astype(np.int64)
    _check_labels(path, y)
    return records[:, 1:].reshape(-1, *CIFAR10_IMAGE_SHAPE).copy(), y


class _Version(NamedTuple):
    """One of CIFAR-10's distributed versions: how its batches are named and read."""

    kind: str
    reader: Callable[[Path], tuple[np.ndarray, np.ndarray]]
    train: tuple[str, ...]
    test: str
    train_text: str  # how messages and records name the train batches


_PYTHON = _Version(
    "python", read_cifar_batch, CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH, "data_batch_1..5"
)
_BINARY = _Version(
    "binary",
    read_cifar_bin,
    CIFAR10_BIN_TRAIN_BATCHES,
    CIFAR10_BIN_TEST_BATCH,
    "data_batch_1..5.bin",
)


def prepare_cifar10(root: Path, split_seed: int, o: dict) -> Prepared:
    """The official split of CIFAR-10 under ``root``: the binary batches if their folder
    exists, else the python batches; standardised with the train statistics."""
    version = _BINARY if cifar10_binary(root) else _PYTHON
    folder, found = locate("cifar10", root)
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise DatasetError(
            f"data_dir: cifar10 needs the files {version.train_text} and {version.test} in "
            f"{folder} (missing: {', '.join(missing)}); {download_hint('cifar10', root)}"
        )
    train = [version.reader(folder / f) for f in version.train]
    x_test, y_test = version.reader(folder / version.test)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    del train
    xtr, xte, norm = standardise_uint8(x_train, x_test)
    return Prepared(
        xtr,
        y_train,
        xte,
        y_test,
        10,
        CIFAR10_IMAGE_SHAPE,
        {
            "source": f"CIFAR-10 {version.kind} batches in {folder}",
            "split": f"official ({version.train_text} for training, {version.test} for test); "
            "split_seed is not used",
            "classes": list(CIFAR10_CLASSES),
            "normalisation": norm,
        },
    )
