"""MNIST and Fashion-MNIST: the IDX file reader and the loader of the official split.

:func:`read_idx` checks the header against the file size exactly, so a truncated or
mislabelled file is refused with its path rather than read as garbage.
"""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from covnoise.data.dataset import DatasetError
from covnoise.data.layout import IDX_FILES, download_hint, locate
from covnoise.data.normalise import standardise_uint8
from covnoise.data.prepared import Prepared

#: IDX data-type codes and the numpy dtypes they stand for (big-endian).
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
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


def prepare_idx(name: str, root: Path) -> Prepared:
    """The official split of ``name`` (mnist or fashion-mnist) from its IDX files under
    ``root``, as uint8 images standardised with the train statistics."""
    folder, found = locate(name, root)
    paths = {k: found[base] for k, base in IDX_FILES.items()}
    missing = [IDX_FILES[k] for k, p in paths.items() if p is None]
    if missing:
        raise DatasetError(
            f"data_dir: {name} needs the files {', '.join(IDX_FILES.values())} (each optionally "
            f".gz) in {folder}; missing: {', '.join(missing)}; {download_hint(name, root)}"
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
    xtr, xte, norm = standardise_uint8(
        arrays["train_images"][:, None], arrays["test_images"][:, None]
    )
    h, w = arrays["train_images"].shape[1:]
    return Prepared(
        xtr,
        arrays["train_labels"].astype(np.int64),
        xte,
        arrays["test_labels"].astype(np.int64),
        10,
        (1, int(h), int(w)),
        {
            "source": f"IDX files in {folder}",
            "files": {k: str(p) for k, p in paths.items()},
            "split": "official (train-* files for training, t10k-* files for test); "
            "split_seed is not used",
            "normalisation": norm,
        },
    )
