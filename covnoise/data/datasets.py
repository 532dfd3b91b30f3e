"""Dataset registry: embedded datasets (digits, MNIST-1D, teacher) and file-backed ones.

Every loader returns a :class:`Dataset` whose tensors already live on the training device, with
a train/test split that is fixed by a seed (or by the dataset's official split) and recorded in
``Dataset.info``. Inputs are standardised with statistics of the train split only, and the
statistics are recorded so a run can be reproduced and its inputs interpreted.

File-backed datasets (MNIST, Fashion-MNIST, CIFAR-10) are read from ``data_dir`` in the layout
that :func:`download` produces. CIFAR-10's pickled batches go through
:mod:`covnoise.data.restricted_pickle`, which rebuilds plain data and numpy arrays only.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import struct
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from torch import Tensor

from covnoise.data import restricted_pickle

DATA_DIR_ENV = "COVNOISE_DATA_DIR"


class DatasetError(ValueError):
    """A dataset request that cannot be served; the message names the field and what is allowed."""


# --------------------------------------------------------------------------------------------
# Public containers
# --------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """A train/test split as tensors on one device, with a JSON-serialisable record in ``info``.

    ``x_*`` are float32 with shape ``(N, *input_shape)``; ``y_*`` are int64 class labels.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != tuple(self.input_shape):
                raise DatasetError(
                    f"{self.name}: x_{split} has shape {tuple(x.shape)} and y_{split} "
                    f"{tuple(y.shape)}; expected (N, *{tuple(self.input_shape)}) and (N,)"
                )

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.x_train.device

    def to(self, device: str | torch.device) -> Dataset:
        """Return a copy with every tensor moved to ``device`` (``info`` is shared, not copied)."""
        dev = torch.device(device)
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(dev),
            y_train=self.y_train.to(dev),
            x_test=self.x_test.to(dev),
            y_test=self.y_test.to(dev),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_test={self.n_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"device={str(self.device)!r})"
        )


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: whether the dataset needs no files, what it is, and its options."""

    name: str
    embedded: bool
    description: str
    default_options: dict


def default_data_dir() -> Path:
    """Folder for downloaded files and generated caches: ``$COVNOISE_DATA_DIR`` or
    ``~/.cache/covnoise``."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "covnoise"


# --------------------------------------------------------------------------------------------
# Option validation
# --------------------------------------------------------------------------------------------


def _int_opt(ds: str, key: str, value: Any, minimum: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise DatasetError(f"options.{key}: {ds} needs an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise DatasetError(f"options.{key}: {ds} needs an integer >= {minimum}, got {value}")
    return int(value)


def _float_opt(
    ds: str, key: str, value: Any, lo: float, hi: float, *, lo_open: bool = False,
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
    return {"test_fraction": _float_opt("digits", "test_fraction", o["test_fraction"], 0.0, 1.0,
                                        lo_open=True, hi_open=True)}


def _validate_mnist1d(o: dict) -> dict:
    ds = "mnist1d"
    pad = o["padding"]
    if not isinstance(pad, (list, tuple)) or len(pad) != 2:
        raise DatasetError(f"options.padding: {ds} needs two integers [low, high], got {pad!r}")
    low = _int_opt(ds, "padding[0]", pad[0], 0)
    high = _int_opt(ds, "padding[1]", pad[1], low)
    out = {
        "num_samples": _int_opt(ds, "num_samples", o["num_samples"], 20),
        "train_split": _float_opt(ds, "train_split", o["train_split"], 0.0, 1.0,
                                  lo_open=True, hi_open=True),
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


def _validate_none(o: dict) -> dict:
    return dict(o)


_VALIDATORS: dict[str, Callable[[dict], dict]] = {
    "digits": _validate_digits,
    "mnist1d": _validate_mnist1d,
    "teacher": _validate_teacher,
    "mnist": _validate_none,
    "fashion-mnist": _validate_none,
    "cifar10": _validate_none,
}


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
    return _VALIDATORS[key]({**spec.default_options, **given})


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


# --------------------------------------------------------------------------------------------
# Standardisation (statistics from the train split only)
# --------------------------------------------------------------------------------------------


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


def _standardise_float(
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


def _standardise_uint8(x_train: np.ndarray, x_test: np.ndarray) -> tuple[Tensor, Tensor, dict]:
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


def _split_hash(test_index: np.ndarray) -> str:
    """Short fingerprint of a split (the sorted test indices), to compare splits across runs."""
    idx = np.sort(np.asarray(test_index, dtype=np.int64))
    return hashlib.sha256(idx.tobytes()).hexdigest()[:16]


@dataclass
class _Prepared:
    """What a loader hands to :func:`load_dataset` before tensors go to the device."""

    x_train: Tensor
    y_train: np.ndarray
    x_test: Tensor
    y_test: np.ndarray
    num_classes: int
    input_shape: tuple[int, ...]
    info: dict


# --------------------------------------------------------------------------------------------
# digits (scikit-learn's 8x8 handwritten digits, shipped with the package)
# --------------------------------------------------------------------------------------------


def _load_digits(root: Path, split_seed: int, o: dict) -> _Prepared:
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
    xtr, xte, norm = _standardise_float(images[train_idx], images[test_idx], scale=1.0 / 16.0)
    return _Prepared(
        xtr, labels[train_idx], xte, labels[test_idx], 10, (1, 8, 8),
        {
            "source": "sklearn.datasets.load_digits (UCI optical recognition of handwritten "
                      "digits, 8x8, pixel values 0..16)",
            "split": "stratified random (sklearn train_test_split)",
            "split_hash": _split_hash(test_idx),
            "normalisation": norm,
        },
    )


# --------------------------------------------------------------------------------------------
# MNIST-1D (Greydanus 2020, "Scaling down deep learning"): generated locally and cached
# --------------------------------------------------------------------------------------------

# Bumped whenever the generator changes, so stale caches are not reused.
MNIST1D_GENERATOR_VERSION = 1

# The ten hand-made digit-like patterns of the recipe, one row per class, length 12.
_MNIST1D_PATTERNS = (
    (5, 6, 6.5, 6.75, 7, 7, 7, 7, 6.75, 6.5, 6, 5),
    (5, 3, 3, 3.4, 3.8, 4.2, 4.6, 5, 5.4, 5.8, 5, 5),
    (5, 6, 6.5, 6.5, 6, 5.25, 4.75, 4, 3.5, 3.5, 4, 5),
    (5, 6, 6.5, 6.5, 6, 5, 5, 6, 6.5, 6.5, 6, 5),
    (5, 4.4, 3.8, 3.2, 2.6, 2.6, 5, 5, 5, 5, 5, 5),
    (5, 3, 3, 3, 3, 5, 6, 6.5, 6.5, 6, 4.5, 5),
    (5, 4, 3.5, 3.25, 3, 3, 3, 3, 3.25, 3.5, 4, 5),
    (5, 7, 7, 6.6, 6.2, 5.8, 5.4, 5, 4.6, 4.2, 5, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 4, 3.5, 3.5, 4, 5),
    (5, 4, 3.5, 3.5, 4, 5, 5, 5, 5, 4.7, 4.3, 5),
)


def mnist1d_templates() -> np.ndarray:
    """The 10 MNIST-1D templates, shape (10, 12): each pattern whitened, shifted to start at
    zero and divided by 6, as in the recipe."""
    x = np.asarray(_MNIST1D_PATTERNS, dtype=np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    x = x / x.std(axis=1, keepdims=True)
    x = x - x[:, :1]
    return x / 6.0


def _resample(x: np.ndarray, n: int) -> np.ndarray:
    """Linear interpolation of each row of ``x`` (samples on an even grid of [0, 1]) onto
    ``n`` evenly spaced points of [0, 1]."""
    m = x.shape[-1]
    pos = np.linspace(0.0, 1.0, n) * (m - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), m - 2)
    frac = pos - i0
    return x[..., i0] * (1.0 - frac) + x[..., i0 + 1] * frac


def make_mnist1d(options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Generate MNIST-1D with the published recipe; returns unnormalised float64 arrays
    ``x`` (n_train, L), ``y``, ``x_test``, ``y_test``.

    Each example is a template padded with a random number of zeros, dilated, scaled,
    translated (circularly), filled with correlated noise where it is zero, given iid noise
    and a linear shear, and subsampled to ``final_seq_length``. ``num_samples // 10`` examples
    per class are shuffled with the recipe's RNG and the first ``train_split`` fraction is the
    train split. The random numbers are drawn in the recipe's order from numpy's legacy
    stream, so a seed gives the recipe's dataset. The recipe's final whole-dataset
    standardisation is left out: :func:`load_dataset` standardises with train statistics.
    """
    from scipy.ndimage import gaussian_filter1d

    o = resolve_options("mnist1d", options)
    rs = np.random.RandomState(o["seed"])  # the legacy stream the recipe seeds globally
    templates = mnist1d_templates()
    n_cls = len(templates)
    ys = np.repeat(np.arange(n_cls, dtype=np.int64), o["num_samples"] // n_cls)
    n = len(ys)
    low, high = o["padding"]
    dilated = o["template_len"] + high
    pads = np.empty(n, dtype=np.int64)
    scales, shears = np.empty(n), np.empty(n)
    shifts = np.empty(n, dtype=np.int64)
    corr, iid = np.empty((n, dilated)), np.empty((n, dilated))
    for i in range(n):  # the draws, per example, in the recipe's order
        pads[i] = low + int(rs.rand() * (high - low + 1))
        scales[i] = 1.0 + o["scale_coeff"] * (rs.rand() - 0.5)
        shifts[i] = rs.choice(o["max_translation"])
        corr[i] = rs.randn(dilated)
        iid[i] = rs.randn(dilated)
        shears[i] = o["shear_scale"] * (rs.rand() - 0.5)
    order = rs.permutation(n)
    seq_order = rs.permutation(o["final_seq_length"]) if o["shuffle_seq"] else None

    # pad with p zeros and dilate to a fixed length; +1e-8 marks the signal as non-zero
    x = np.empty((n, dilated))
    for p in np.unique(pads):
        padded = np.concatenate([templates + 1e-8, np.zeros((n_cls, p))], axis=1)
        rows = pads == p
        x[rows] = _resample(padded, dilated)[ys[rows]]
    x *= scales[:, None]
    x = np.take_along_axis(x, (np.arange(dilated) - shifts[:, None]) % dilated, axis=1)
    noise = gaussian_filter1d(o["corr_noise_scale"] * corr, 2, axis=1)
    x = np.where(x != 0, x, noise)
    x = x + o["iid_noise_scale"] * iid
    x = x - shears[:, None] * np.linspace(-0.5, 0.5, dilated)
    x = _resample(x, o["final_seq_length"])

    x, ys = x[order], ys[order]
    if seq_order is not None:
        x = x[:, seq_order]
    split = int(n * o["train_split"])
    return {"x": x[:split], "y": ys[:split], "x_test": x[split:], "y_test": ys[split:]}


def mnist1d_cache_path(root: str | Path, options: Mapping[str, Any] | None = None) -> Path:
    """Where the generated arrays for these options are cached under ``root``."""
    o = resolve_options("mnist1d", options)
    key = json.dumps({"generator": MNIST1D_GENERATOR_VERSION, **o}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return Path(root) / "mnist1d" / f"mnist1d-{digest}.npz"


def _read_mnist1d_cache(path: Path, o: dict) -> dict[str, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in ("x", "y", "x_test", "y_test")}
    except (OSError, KeyError, ValueError, EOFError):
        return None
    n = (o["num_samples"] // 10) * 10
    n_train = int(n * o["train_split"])
    L = o["final_seq_length"]
    if (
        arrays["x"].shape != (n_train, L)
        or arrays["x_test"].shape != (n - n_train, L)
        or arrays["y"].shape != (n_train,)
        or arrays["y_test"].shape != (n - n_train,)
    ):
        return None
    return arrays


def _write_atomically(path: Path, write: Callable[[Any], None], suffix: str) -> None:
    """Write through a temporary file in the same folder, then rename over ``path``, so a
    concurrent reader never sees a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def mnist1d_arrays(root: str | Path, options: Mapping[str, Any] | None = None
                   ) -> tuple[dict[str, np.ndarray], Path, bool]:
    """MNIST-1D arrays from the cache under ``root``, generating and caching them if needed.

    Returns ``(arrays, cache_path, was_cached)``. A cache that cannot be written (read-only
    folder) is not an error: the arrays are returned anyway.
    """
    o = resolve_options("mnist1d", options)
    path = mnist1d_cache_path(root, o)
    cached = _read_mnist1d_cache(path, o) if path.exists() else None
    if cached is not None:
        return cached, path, True
    raw = make_mnist1d(o)
    arrays = {k: (v.astype(np.float32) if k.startswith("x") else v) for k, v in raw.items()}
    try:
        _write_atomically(path, lambda fh: np.savez(fh, **arrays), ".npz.part")
    except OSError:
        pass
    return arrays, path, False


def _load_mnist1d(root: Path, split_seed: int, o: dict) -> _Prepared:
    arrays, path, was_cached = mnist1d_arrays(root, o)
    xtr, xte, norm = _standardise_float(arrays["x"][:, None, :], arrays["x_test"][:, None, :])
    return _Prepared(
        xtr, arrays["y"].astype(np.int64), xte, arrays["y_test"].astype(np.int64), 10,
        (1, o["final_seq_length"]),
        {
            "source": "MNIST-1D recipe (Greydanus 2020, 'Scaling down deep learning'), "
                      "generated locally",
            "split": "recipe (shuffled with the recipe seed; first train_split fraction is "
                     "train); split_seed is not used",
            "cache": str(path),
            "cache_hit": was_cached,
            "generator_version": MNIST1D_GENERATOR_VERSION,
            "normalisation": norm,
        },
    )


# --------------------------------------------------------------------------------------------
# teacher: Gaussian inputs labelled by a fixed random MLP
# --------------------------------------------------------------------------------------------

_TEACHER_BALANCE_SAMPLES = 10000
_TEACHER_BALANCE_STEPS = 100


def teacher_logits(x: np.ndarray, net: Mapping[str, np.ndarray]) -> np.ndarray:
    """Teacher logits ``tanh(x W1^T) W2^T + b2`` for inputs ``x`` of shape (N, dim)."""
    h = np.tanh(np.asarray(x, dtype=np.float64) @ net["w1"].T)
    return h @ net["w2"].T + net["b2"]


def teacher_network(options: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The teacher's weights for these options (they depend on seed, dim, hidden, classes).

    ``w1`` (hidden, dim) ~ N(0, 1/dim), ``w2`` (classes, hidden) ~ N(0, 1/hidden); the output
    bias ``b2`` is tuned on a reference sample so that each class takes about 1/classes of the
    input distribution (a random MLP's argmax is otherwise very unbalanced).
    """
    o = resolve_options("teacher", options)
    net_seq = np.random.SeedSequence(o["seed"]).spawn(3)[0]
    rng = np.random.default_rng(net_seq)
    k = o["classes"]
    w1 = rng.standard_normal((o["hidden"], o["dim"])) / math.sqrt(o["dim"])
    w2 = rng.standard_normal((k, o["hidden"])) / math.sqrt(o["hidden"])
    reference = rng.standard_normal((_TEACHER_BALANCE_SAMPLES, o["dim"]))
    logits = np.tanh(reference @ w1.T) @ w2.T
    b2 = np.zeros(k)
    for _ in range(_TEACHER_BALANCE_STEPS):
        freq = np.bincount((logits + b2).argmax(axis=1), minlength=k) / len(reference)
        b2 -= 0.1 * (np.log(freq + 1e-3) - math.log(1.0 / k))
    return {"w1": w1, "w2": w2, "b2": b2}


def _load_teacher(root: Path, split_seed: int, o: dict) -> _Prepared:
    net = teacher_network(o)
    _, data_seq, noise_seq = np.random.SeedSequence(o["seed"]).spawn(3)
    n_total = o["n_train"] + o["n_test"]
    x = np.random.default_rng(data_seq).standard_normal((n_total, o["dim"])).astype(np.float32)
    y = teacher_logits(x, net).argmax(axis=1).astype(np.int64)
    order = np.random.default_rng(split_seed).permutation(n_total)
    train_idx, test_idx = order[: o["n_train"]], order[o["n_train"]:]
    y_train = y[train_idx].copy()
    rng = np.random.default_rng(noise_seq)
    n_noisy = int(round(o["label_noise"] * o["n_train"]))
    noisy = rng.choice(o["n_train"], size=n_noisy, replace=False)
    # a uniformly random *different* class, so exactly n_noisy labels disagree with the teacher
    y_train[noisy] = (y_train[noisy] + rng.integers(1, o["classes"], size=n_noisy)) % o["classes"]
    return _Prepared(
        torch.from_numpy(x[train_idx]), y_train, torch.from_numpy(x[test_idx]), y[test_idx],
        o["classes"], (o["dim"],),
        {
            "source": "synthetic: x ~ N(0, I_dim); y = argmax of a fixed random tanh-MLP "
                      "teacher (covnoise.data.teacher_network)",
            "split": "random permutation of one i.i.d. pool by split_seed",
            "split_hash": _split_hash(test_idx),
            "label_noise": {"fraction": o["label_noise"], "n_flipped": n_noisy,
                            "applied_to": "train"},
            "normalisation": {"formula": "none (inputs are standard normal by construction)"},
        },
    )


# --------------------------------------------------------------------------------------------
# IDX files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------

IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def _read_bytes_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as exc:
            raise DatasetError(f"{path}: corrupt gzip data ({exc})") from exc
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic ``00 00 <dtype code> <ndim>``, ``ndim``
    big-endian uint32 sizes, then the data in big-endian order. Sizes are checked exactly."""
    path = Path(path)
    buf = _read_bytes_maybe_gzip(path)
    if len(buf) < 4:
        raise DatasetError(f"{path}: {len(buf)} bytes is too short for an IDX header")
    if buf[0] != 0 or buf[1] != 0:
        raise DatasetError(
            f"{path}: bad IDX magic {buf[:4].hex()}: the first two bytes must be zero"
        )
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DatasetError(f"{path}: unknown IDX data type 0x{code:02X}; allowed: {allowed}")
    if ndim == 0:
        raise DatasetError(f"{path}: IDX header declares 0 dimensions")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise DatasetError(f"{path}: truncated IDX header ({len(buf)} bytes, need {header})")
    dims = struct.unpack(f">{ndim}I", buf[4:header])
    dtype = IDX_DTYPES[code]
    expected = math.prod(dims) * dtype.itemsize
    if len(buf) - header != expected:
        shape = "x".join(map(str, dims))
        raise DatasetError(
            f"{path}: IDX header declares {shape} {dtype.name} ({expected} bytes of data) but "
            f"the file holds {len(buf) - header} bytes of data"
        )
    arr = np.frombuffer(buf, dtype=dtype, count=math.prod(dims), offset=header)
    return arr.reshape(dims).astype(dtype.newbyteorder("="), copy=False)


def _find_idx(folder: Path, base: str) -> Path | None:
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _download_hint(name: str, root: Path) -> str:
    return f"run `python -m covnoise data download {name} --data-dir {root}`"


def _load_idx_dataset(name: str, root: Path) -> _Prepared:
    folder = root / name
    paths = {k: _find_idx(folder, base) for k, base in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DatasetError(
            f"data_dir: {name} needs the files {', '.join(IDX_FILES.values())} (each optionally "
            f".gz) in {folder}; missing: {', '.join(missing)}; {_download_hint(name, root)}"
        )
    arrays = {k: read_idx(p) for k, p in paths.items()}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        ip, lp = paths[f"{split}_images"], paths[f"{split}_labels"]
        if images.ndim != 3 or images.dtype != np.uint8:
            raise DatasetError(
                f"{name}: {ip} must hold uint8 images of shape (N, H, W), got "
                f"{images.dtype} {images.shape}"
            )
        if labels.ndim != 1 or labels.dtype != np.uint8:
            raise DatasetError(
                f"{name}: {lp} must hold uint8 labels of shape (N,), got "
                f"{labels.dtype} {labels.shape}"
            )
        if len(images) != len(labels):
            raise DatasetError(
                f"{name}: {ip} holds {len(images)} images but {lp} holds {len(labels)} labels"
            )
        if labels.size and labels.max() >= 10:
            raise DatasetError(f"{name}: {lp} has label {labels.max()}; allowed: 0..9")
    if arrays["train_images"].shape[1:] != arrays["test_images"].shape[1:]:
        raise DatasetError(
            f"{name}: train images are {arrays['train_images'].shape[1:]} but test images are "
            f"{arrays['test_images'].shape[1:]}"
        )
    if len(arrays["train_images"]) == 0 or len(arrays["test_images"]) == 0:
        raise DatasetError(f"{name}: the IDX files in {folder} hold no images")
    xtr, xte, norm = _standardise_uint8(
        arrays["train_images"][:, None], arrays["test_images"][:, None]
    )
    h, w = arrays["train_images"].shape[1:]
    return _Prepared(
        xtr, arrays["train_labels"].astype(np.int64), xte, arrays["test_labels"].astype(np.int64),
        10, (1, int(h), int(w)),
        {
            "source": f"IDX files in {folder}",
            "files": {k: str(p) for k, p in paths.items()},
            "split": "official (train-* files for training, t10k-* files for test); "
                     "split_seed is not used",
            "normalisation": norm,
        },
    )


# --------------------------------------------------------------------------------------------
# CIFAR-10 (python batches, read with the restricted unpickler)
# --------------------------------------------------------------------------------------------

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)


def _get(d: dict, key: str) -> Any:
    if key.encode() in d:
        return d[key.encode()]
    if key in d:
        return d[key]
    raise KeyError(key)


def read_cifar_batch(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch -> (uint8 images (N, 3, 32, 32), int64 labels (N,)).

    The pickle is read with :mod:`covnoise.data.restricted_pickle`; a file that references any
    global other than numpy's array-rebuilding ones is refused before anything runs.
    """
    path = Path(path)
    try:
        obj = restricted_pickle.load_path(path)
    except restricted_pickle.RestrictedUnpicklingError as exc:
        what = f"the global {exc.module}.{exc.name}" if exc.module else "a persistent id"
        raise DatasetError(
            f"cifar10: refused to load {path}: it references {what}; only plain data (dict, "
            "list, tuple, str, bytes, int, float, bool, None) and numpy arrays are allowed"
        ) from exc
    except Exception as exc:  # a malformed pickle can fail in many ways
        raise DatasetError(f"cifar10: {path} is not a readable pickle: {exc!r}") from exc
    if not isinstance(obj, dict):
        raise DatasetError(f"cifar10: {path} must hold a dict, got {type(obj).__name__}")
    try:
        data, labels = _get(obj, "data"), _get(obj, "labels")
    except KeyError as exc:
        raise DatasetError(f"cifar10: {path} has no {exc.args[0]!r} entry") from None
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 \
            or data.shape[1] != 3 * 32 * 32:
        got = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"cifar10: {path}: 'data' must be a uint8 array (N, 3072), got {got}")
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != len(data) or (y.size and y.dtype.kind not in "iu"):
        raise DatasetError(
            f"cifar10: {path}: 'labels' must be {len(data)} integers, got {y.dtype} {y.shape}"
        )
    y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= 10):
        raise DatasetError(f"cifar10: {path}: labels must be in 0..9, got {y.min()}..{y.max()}")
    return data.reshape(-1, 3, 32, 32), y


def _load_cifar10(root: Path, split_seed: int, o: dict) -> _Prepared:
    folder = root / CIFAR10_FOLDER
    needed = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
    missing = [f for f in needed if not (folder / f).is_file()]
    if missing:
        raise DatasetError(
            f"data_dir: cifar10 needs the files data_batch_1..5 and test_batch in {folder} "
            f"(missing: {', '.join(missing)}); {_download_hint('cifar10', root)}"
        )
    train = [read_cifar_batch(folder / f) for f in CIFAR10_TRAIN_BATCHES]
    x_test, y_test = read_cifar_batch(folder / CIFAR10_TEST_BATCH)
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    del train
    xtr, xte, norm = _standardise_uint8(x_train, x_test)
    return _Prepared(
        xtr, y_train, xte, y_test, 10, (3, 32, 32),
        {
            "source": f"CIFAR-10 python batches in {folder}",
            "split": "official (data_batch_1..5 for training, test_batch for test); "
                     "split_seed is not used",
            "classes": list(CIFAR10_CLASSES),
            "normalisation": norm,
        },
    )


# --------------------------------------------------------------------------------------------
# Registry and entry point
# --------------------------------------------------------------------------------------------

DATASETS: dict[str, DatasetSpec] = {
    "digits": DatasetSpec(
        "digits", True,
        "8x8 handwritten digits shipped with scikit-learn (1797 images, 10 classes); "
        "stratified split by split_seed",
        {"test_fraction": 0.25},
    ),
    "mnist1d": DatasetSpec(
        "mnist1d", True,
        "MNIST-1D (Greydanus 2020): 1-D digit-like signals of length 40, generated locally "
        "from the published recipe and cached",
        {
            "num_samples": 5000, "train_split": 0.8, "template_len": 12, "padding": [36, 60],
            "scale_coeff": 0.4, "max_translation": 48, "corr_noise_scale": 0.25,
            "iid_noise_scale": 2e-2, "shear_scale": 0.75, "shuffle_seq": False,
            "final_seq_length": 40, "seed": 42,
        },
    ),
    "teacher": DatasetSpec(
        "teacher", True,
        "Synthetic: Gaussian inputs labelled by a fixed random tanh-MLP teacher, optional "
        "label noise on the train split",
        {"n_train": 8192, "n_test": 2048, "dim": 32, "classes": 10, "hidden": 64,
         "label_noise": 0.0, "seed": 0},
    ),
    "mnist": DatasetSpec(
        "mnist", False,
        "MNIST handwritten digits (28x28, 60000/10000), IDX files in <data_dir>/mnist",
        {},
    ),
    "fashion-mnist": DatasetSpec(
        "fashion-mnist", False,
        "Fashion-MNIST clothing images (28x28, 60000/10000), IDX files in "
        "<data_dir>/fashion-mnist",
        {},
    ),
    "cifar10": DatasetSpec(
        "cifar10", False,
        "CIFAR-10 colour images (3x32x32, 50000/10000), python batches in "
        "<data_dir>/cifar-10-batches-py",
        {},
    ),
}

_LOADERS: dict[str, Callable[[Path, int, dict], _Prepared]] = {
    "digits": _load_digits,
    "mnist1d": _load_mnist1d,
    "teacher": _load_teacher,
    "mnist": lambda root, seed, o: _load_idx_dataset("mnist", root),
    "fashion-mnist": lambda root, seed, o: _load_idx_dataset("fashion-mnist", root),
    "cifar10": _load_cifar10,
}


def load_dataset(
    name: str,
    *,
    data_dir: str | Path | None = None,
    split_seed: int = 0,
    device: str | torch.device = "cpu",
    options: dict | None = None,
) -> Dataset:
    """Load dataset ``name`` with its train/test split as tensors on ``device``.

    ``data_dir`` holds downloaded files and generated caches (default
    :func:`default_data_dir`). ``split_seed`` picks the split of datasets without an official
    one (digits, teacher); it is recorded either way. ``options`` override the dataset's
    ``default_options``. Raises :class:`DatasetError` for unknown names or options, and for
    missing or malformed files (naming the path and the download command).
    """
    key = canonical_name(name)
    opts = resolve_options(key, options)
    if isinstance(split_seed, bool) or not isinstance(split_seed, (int, np.integer)) \
            or split_seed < 0:
        raise DatasetError(f"split_seed: needs an integer >= 0, got {split_seed!r}")
    root = Path(data_dir).expanduser() if data_dir is not None else default_data_dir()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DatasetError(f"device: {device!r} is not a torch device ({exc})") from exc
    prep = _LOADERS[key](root, int(split_seed), opts)
    y_train = torch.from_numpy(np.ascontiguousarray(prep.y_train, dtype=np.int64))
    y_test = torch.from_numpy(np.ascontiguousarray(prep.y_test, dtype=np.int64))
    k = prep.num_classes
    info = {
        "name": key,
        **prep.info,
        "n_train": int(len(y_train)),
        "n_test": int(len(y_test)),
        "num_classes": int(k),
        "input_shape": [int(s) for s in prep.input_shape],
        "split_seed": int(split_seed),
        "options": opts,
        "class_counts": {
            "train": np.bincount(prep.y_train, minlength=k).tolist(),
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
    )


# --------------------------------------------------------------------------------------------
# download
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RemoteFile:
    """One official file and its published checksum (``"md5:<hex>"`` or ``"sha256:<hex>"``)."""

    filename: str
    checksum: str


@dataclass(frozen=True)
class RemoteSource:
    """Where a dataset's files come from and where they go under ``data_dir``.

    ``subdir``: folder under data_dir for the downloaded files (the loader's layout).
    ``extract``: for a tar archive, the single top-level folder its members must live in.
    """

    base_url: str
    files: tuple[RemoteFile, ...]
    subdir: str = ""
    extract: str | None = None


REMOTE_SOURCES: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            RemoteFile("train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "md5:d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "md5:9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        subdir="mnist",
    ),
    "fashion-mnist": RemoteSource(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        (
            RemoteFile("train-images-idx3-ubyte.gz", "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "md5:25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "md5:bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        subdir="fashion-mnist",
    ),
    "cifar10": RemoteSource(
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-python.tar.gz", "md5:c58f30108f718f92721af3b95e74349a"),),
        extract=CIFAR10_FOLDER,
    ),
}

_CHUNK = 1 << 20


def _parse_checksum(spec: str, where: str) -> tuple[str, str]:
    """``"md5:<hex>"``, ``"sha256:<hex>"`` or a bare hex digest (md5 if 32 digits, sha256 if
    64) -> (algorithm, lower-case hex)."""
    algo, sep, digest = spec.partition(":")
    if not sep:
        algo, digest = {32: "md5", 64: "sha256"}.get(len(spec), ""), spec
    algo, digest = algo.lower(), digest.lower()
    lengths = {"md5": 32, "sha256": 64}
    if algo not in lengths or len(digest) != lengths[algo] \
            or any(c not in "0123456789abcdef" for c in digest):
        raise DatasetError(
            f"checksums[{where!r}]: expected 'md5:<32 hex>' or 'sha256:<64 hex>', got {spec!r}"
        )
    return algo, digest


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, algo: str, digest: str, progress: bool) -> None:
    """Stream ``url`` into ``dest`` through a temporary file; keep it only if the checksum
    matches."""
    from tqdm import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    request = urllib.request.Request(url, headers={"User-Agent": "covnoise-data"})
    h = hashlib.new(algo)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=dest.name + ".", suffix=".part")
    tmp_path = Path(tmp)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=60) as resp:
            total = resp.headers.get("Content-Length")
            with tqdm(total=int(total) if total and total.isdigit() else None, unit="B",
                      unit_scale=True, desc=dest.name, disable=not progress,
                      file=sys.stderr) as bar:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
        got = h.hexdigest()
        if got != digest:
            raise DatasetError(
                f"download: checksum mismatch for {url}: expected {algo} {digest}, got {got}; "
                "the file was discarded"
            )
        os.replace(tmp_path, dest)
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetError(
            f"download: could not fetch {url} ({exc}); place {dest.name} in {dest.parent} by "
            "hand or pass base_url for a mirror"
        ) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


def _extract_tar(archive: Path, root: Path, top: str) -> list[Path]:
    """Extract the regular files of ``archive`` that live in ``top/`` into ``root``.

    Every member must be a regular file or folder inside ``top`` with a plain relative name;
    links, devices, absolute paths and '..' are refused before anything is written.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                bad_name = (
                    m.name.startswith(("/", "\\")) or ".." in parts or not parts
                    or parts[0] != top or "\\" in m.name or ":" in m.name
                )
                if bad_name or not (m.isfile() or m.isdir()):
                    raise DatasetError(
                        f"download: {archive} contains {m.name!r}, which is not a plain file "
                        f"or folder inside {top}/; refusing to extract"
                    )
            written = []
            for m in members:
                if not m.isfile():
                    continue
                target = root.joinpath(*PurePosixPath(m.name).parts)
                src = tar.extractfile(m)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                with src:
                    _write_atomically(target, lambda fh, s=src: _copy(s, fh), ".part")
                written.append(target)
    except tarfile.TarError as exc:
        raise DatasetError(f"download: {archive} is not a readable tar archive ({exc})") from exc
    return written


def _copy(src: Any, dst: Any) -> None:
    for block in iter(lambda: src.read(_CHUNK), b""):
        dst.write(block)


def download(
    name: str,
    data_dir: str | Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
    checksums: Mapping[str, str] | None = None,
) -> list[Path]:
    """Fetch a file-backed dataset's official files into ``data_dir`` and verify them.

    Files already present with the right checksum are not fetched again. Each download is
    checked against the published checksum (``checksums`` overrides it per file name, e.g.
    for a mirror of modified files) and discarded on mismatch; archives are then extracted
    into the layout :func:`load_dataset` reads. ``base_url`` replaces the official location
    (http or https). For mnist1d the generated cache is written; digits and teacher need
    nothing. Returns the paths of the files in place.
    """
    key = canonical_name(name)
    root = Path(data_dir).expanduser()
    if key == "mnist1d":
        _, path, _ = mnist1d_arrays(root)
        return [path] if path.exists() else []
    if key not in REMOTE_SOURCES:
        return []
    source = REMOTE_SOURCES[key]
    base = base_url if base_url is not None else source.base_url
    if not base.startswith(("https://", "http://")):
        raise DatasetError(f"base_url: must start with https:// or http://, got {base!r}")
    if not base.endswith("/"):
        base += "/"
    overrides = dict(checksums or {})
    unknown = sorted(set(overrides) - {f.filename for f in source.files})
    if unknown:
        raise DatasetError(
            f"checksums: {key} has no file {', '.join(map(repr, unknown))}; files: "
            f"{', '.join(f.filename for f in source.files)}"
        )
    folder = root / source.subdir if source.subdir else root
    written: list[Path] = []
    for remote in source.files:
        algo, digest = _parse_checksum(overrides.get(remote.filename, remote.checksum),
                                       remote.filename)
        dest = folder / remote.filename
        if not (dest.is_file() and _file_digest(dest, algo) == digest):
            _fetch(base + remote.filename, dest, algo, digest, progress)
        if source.extract:
            written.extend(_extract_tar(dest, root, source.extract))
        else:
            written.append(dest)
    return written
