"""MNIST-1D (Greydanus 2020, "Scaling down deep learning"): generated locally and cached.

:func:`make_mnist1d` follows the published recipe draw for draw, so a seed gives the
recipe's dataset; :func:`mnist1d_arrays` caches the arrays under ``data_dir`` keyed by the
options and the generator version, since generation takes seconds and runs repeat.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from covnoise.data.normalise import standardise_float
from covnoise.data.prepared import Prepared
from covnoise.data.registry import resolve_options
from covnoise.files import atomic_write

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


def mnist1d_arrays(
    root: str | Path, options: Mapping[str, Any] | None = None
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
        with atomic_write(path) as fh:
            np.savez(fh, **arrays)
    except OSError:
        pass
    return arrays, path, False


def prepare_mnist1d(root: Path, split_seed: int, o: dict) -> Prepared:
    """MNIST-1D for options ``o`` (cached under ``root``), with the recipe's split,
    standardised with the train statistics."""
    arrays, path, was_cached = mnist1d_arrays(root, o)
    xtr, xte, norm = standardise_float(arrays["x"][:, None, :], arrays["x_test"][:, None, :])
    return Prepared(
        xtr,
        arrays["y"].astype(np.int64),
        xte,
        arrays["y_test"].astype(np.int64),
        10,
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
