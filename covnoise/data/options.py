"""Validation of each dataset's options: types, ranges and the constraints between options.

A validator takes the defaults already merged with the caller's options and returns a clean,
JSON-serialisable dict, or raises :class:`DatasetError` naming the option and what is allowed.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from covnoise.data.dataset import DatasetError


def _int_opt(ds: str, key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DatasetError(f"options.{key}: {ds} needs an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DatasetError(f"options.{key}: {ds} needs an integer >= {minimum}, got {value}")
    return int(value)


def _float_opt(
    ds: str,
    key: str,
    value: Any,
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise DatasetError(f"options.{key}: {ds} needs a number, got {value!r}")
    v = float(value)
    ok = (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    if not math.isfinite(v) or not ok:
        interval = f"{'(' if lo_open else '['}{lo}, {hi}{')' if hi_open else ']'}"
        raise DatasetError(f"options.{key}: {ds} needs a number in {interval}, got {value!r}")
    return v


def _bool_opt(ds: str, key: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise DatasetError(f"options.{key}: {ds} needs true or false, got {value!r}")
    return bool(value)


def _validate_digits(o: dict) -> dict:
    return {
        "test_fraction": _float_opt(
            "digits", "test_fraction", o["test_fraction"], 0.0, 1.0, lo_open=True, hi_open=True
        )
    }


def _validate_mnist1d(o: dict) -> dict:
    ds = "mnist1d"
    pad = o["padding"]
    if not isinstance(pad, (list, tuple)) or len(pad) != 2:
        raise DatasetError(f"options.padding: {ds} needs two integers [low, high], got {pad!r}")
    low = _int_opt(ds, "padding[0]", pad[0], 0)
    high = _int_opt(ds, "padding[1]", pad[1], low)
    out = {
        "num_samples": _int_opt(ds, "num_samples", o["num_samples"], 20),
        "train_split": _float_opt(
            ds, "train_split", o["train_split"], 0.0, 1.0, lo_open=True, hi_open=True
        ),
        "template_len": _int_opt(ds, "template_len", o["template_len"], 2),
        "padding": [low, high],
        "scale_coeff": _float_opt(ds, "scale_coeff", o["scale_coeff"], 0.0, 1.99),
        "max_translation": _int_opt(ds, "max_translation", o["max_translation"], 1),
        "corr_noise_scale": _float_opt(ds, "corr_noise_scale", o["corr_noise_scale"], 0.0, 1e6),
        "iid_noise_scale": _float_opt(ds, "iid_noise_scale", o["iid_noise_scale"], 0.0, 1e6),
        "shear_scale": _float_opt(ds, "shear_scale", o["shear_scale"], 0.0, 1e6),
        "shuffle_seq": _bool_opt(ds, "shuffle_seq", o["shuffle_seq"]),
        "final_seq_length": _int_opt(ds, "final_seq_length", o["final_seq_length"], 2),
        "seed": _int_opt(ds, "seed", o["seed"], 0),
    }
    dilated = out["template_len"] + high
    if out["max_translation"] > dilated:
        raise DatasetError(
            f"options.max_translation: {ds} needs at most template_len + padding[1] = "
            f"{dilated}, got {out['max_translation']}"
        )
    n = (out["num_samples"] // 10) * 10
    split = int(n * out["train_split"])
    if split < 1 or split >= n:
        raise DatasetError(
            f"options.train_split: {ds} leaves {split} of {n} examples for training; both "
            "splits need at least one example"
        )
    return out


def _validate_teacher(o: dict) -> dict:
    ds = "teacher"
    return {
        "n_train": _int_opt(ds, "n_train", o["n_train"], 1),
        "n_test": _int_opt(ds, "n_test", o["n_test"], 1),
        "dim": _int_opt(ds, "dim", o["dim"], 1),
        "classes": _int_opt(ds, "classes", o["classes"], 2),
        "hidden": _int_opt(ds, "hidden", o["hidden"], 1),
        "label_noise": _float_opt(ds, "label_noise", o["label_noise"], 0.0, 1.0),
        "seed": _int_opt(ds, "seed", o["seed"], 0),
    }


def _validate_mnist5k(o: dict) -> dict:
    ds = "mnist-5k"
    test_size = _int_opt(ds, "test_size", o["test_size"], 10)
    if test_size > 4990:
        raise DatasetError(
            f"options.test_size: {ds} needs at most 4990 (10 training images per class), "
            f"got {test_size}"
        )
    return {"test_size": test_size}


def _validate_none(o: dict) -> dict:
    return dict(o)


#: The validator of each registry key.
VALIDATORS: dict[str, Callable[[dict], dict]] = {
    "digits": _validate_digits,
    "mnist1d": _validate_mnist1d,
    "teacher": _validate_teacher,
    "mnist": _validate_none,
    "fashion-mnist": _validate_none,
    "cifar10": _validate_none,
    "mnist-5k": _validate_mnist5k,
}
