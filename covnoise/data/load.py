"""The entry point :func:`load_dataset`: one loader per registry key, then the common record.

Each loader returns a :class:`Prepared` split; this module validates the request, holds out
the validation split (:mod:`covnoise.data.validation`), adds the fields every record shares
(sizes, shape, options, class counts) and moves the tensors to the device, so those steps
happen once for every dataset.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from covnoise.data.cifar import prepare_cifar10
from covnoise.data.dataset import Dataset, DatasetError
from covnoise.data.digits import prepare_digits
from covnoise.data.idx import prepare_idx
from covnoise.data.mnist1d import prepare_mnist1d
from covnoise.data.mnist5k import prepare_mnist5k
from covnoise.data.prepared import Prepared
from covnoise.data.registry import canonical_name, default_data_dir, resolve_options
from covnoise.data.teacher import prepare_teacher
from covnoise.data.validation import hold_out

#: The loader of each registry key: (data_dir, split_seed, resolved options) -> Prepared.
LOADERS: dict[str, Callable[[Path, int, dict], Prepared]] = {
    "digits": prepare_digits,
    "mnist1d": prepare_mnist1d,
    "teacher": prepare_teacher,
    "mnist": lambda root, seed, o: prepare_idx("mnist", root),
    "fashion-mnist": lambda root, seed, o: prepare_idx("fashion-mnist", root),
    "cifar10": prepare_cifar10,
    "mnist-5k": prepare_mnist5k,
}


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
    options: dict | None = None,
    val_fraction: float = 0.0,
) -> Dataset:
    """Load dataset ``name`` with its train/validation/test split as tensors on ``device``.

    ``data_dir`` holds downloaded files and generated caches (default
    :func:`default_data_dir`). ``split_seed`` picks the split of datasets without an official
    one (digits, teacher); it is recorded either way. ``options`` override the dataset's
    ``default_options``. ``val_fraction`` of the training set (stratified, chosen by
    ``split_seed``) becomes the validation split, and the inputs are standardised with the
    statistics of the remaining training examples; 0 (the default) leaves the training set
    whole and the validation split empty. Raises :class:`DatasetError` for unknown names or
    options, and for missing or malformed files (naming the path and the download command).
    """
    key = canonical_name(name)
    opts = resolve_options(key, options)
    if (
        isinstance(split_seed, bool)
        or not isinstance(split_seed, (int, np.integer))
        or split_seed < 0
    ):
        raise DatasetError(f"split_seed: needs an integer >= 0, got {split_seed!r}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DatasetError(f"device: {device!r} is not a torch device ({exc})") from exc
    prep, x_val, y_val_np = hold_out(
        LOADERS[key](root, int(split_seed), opts), val_fraction, int(split_seed)
    )
    y_val = torch.from_numpy(np.ascontiguousarray(y_val_np, dtype=np.int64))
    y_train = torch.from_numpy(np.ascontiguousarray(prep.y_train, dtype=np.int64))
    y_test = torch.from_numpy(np.ascontiguousarray(prep.y_test, dtype=np.int64))
    k = prep.num_classes
    info = {
        "name": key,
        **prep.info,
        "n_train": int(len(y_train)),
        "n_val": int(len(y_val)),
        "n_test": int(len(y_test)),
        "num_classes": int(k),
        "input_shape": [int(s) for s in prep.input_shape],
        "split_seed": int(split_seed),
        "options": opts,
        "class_counts": {
            "train": np.bincount(prep.y_train, minlength=k).tolist(),
            "val": np.bincount(y_val_np, minlength=k).tolist(),
            "test": np.bincount(prep.y_test, minlength=k).tolist(),
        },
    }
    return Dataset(
        name=key,
        x_train=prep.x_train.to(dev),
        y_train=y_train.to(dev),
        x_test=prep.x_test.to(dev),
        y_test=y_test.to(dev),
        num_classes=int(k),
        input_shape=tuple(int(s) for s in prep.input_shape),
        info=info,
        x_val=x_val.to(dev),
        y_val=y_val.to(dev),
    )
