"""MNIST and Fashion-MNIST: the IDX file reader and the loader of the official split.

:func:`read_idx` checks the header against the file size exactly, so a truncated or
mislabelled file is refused with its path rather than read as garbage; it reads a gzipped file
as a stream bounded by what the header declares (at most :data:`MAX_IDX_DATA_BYTES`).
"""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

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


#: Most data bytes an IDX file may declare: 256 MiB, about 5.7 times MNIST's largest file
#: (train-images, 60000 x 28 x 28 = 47 040 000 bytes). A header over it is refused unread.
MAX_IDX_DATA_BYTES = 256 * 2**20
_CHUNK = 2**20


def _open(path: Path) -> BinaryIO:
    """``path`` as a binary stream: a gzip stream (decompressed as it is read, so never more
    than what is asked for) when it starts with the gzip magic, else the file itself."""
    fh = open(path, "rb")  # noqa: SIM115 - returned to the caller, who closes it
    if fh.read(2) == b"\x1f\x8b":
        fh.seek(0)
        return gzip.GzipFile(fileobj=fh, mode="rb")  # type: ignore[return-value]
    fh.seek(0)
    return fh


def _read_exact(stream: BinaryIO, out: memoryview) -> int:
    """Fill ``out`` from ``stream`` in chunks; return how many bytes were read."""
    got = 0
    while got < len(out):
        n = stream.readinto(out[got : got + _CHUNK])  # type: ignore[attr-defined]
        if not n:
            break
        got += n
    return got


def _header(path: Path, stream: BinaryIO) -> tuple[np.dtype, tuple[int, ...]]:
    magic = stream.read(4)
    if len(magic) < 4:
        raise DatasetError(f"{path}: {len(magic)} bytes is too short for an IDX header")
    if magic[0] != 0 or magic[1] != 0:
        raise DatasetError(f"{path}: bad IDX magic {magic.hex()}: the first two bytes must be zero")
    code, ndim = magic[2], magic[3]
    if code not in IDX_DTYPES:
        allowed = ", ".join(f"0x{c:02X}" for c in IDX_DTYPES)
        raise DatasetError(f"{path}: unknown IDX data type 0x{code:02X}; allowed: {allowed}")
    if ndim == 0:
        raise DatasetError(f"{path}: IDX header declares 0 dimensions")
    raw = stream.read(4 * ndim)
    if len(raw) < 4 * ndim:
        raise DatasetError(
            f"{path}: truncated IDX header ({4 + len(raw)} bytes, need {4 + 4 * ndim})"
        )
    return IDX_DTYPES[code], struct.unpack(f">{ndim}I", raw)


def _read_idx_stream(path: Path, stream: BinaryIO, max_bytes: int) -> np.ndarray:
    dtype, dims = _header(path, stream)
    count = math.prod(dims)
    expected = count * dtype.itemsize
    shape = "x".join(map(str, dims))
    declared = f"IDX header declares {shape} {dtype.name} ({expected} bytes of data)"
    if expected > max_bytes:
        raise DatasetError(f"{path}: {declared}; allowed: at most {max_bytes} bytes")
    if not isinstance(stream, gzip.GzipFile):  # a plain file: its size tells before reading
        size = path.stat().st_size - 4 - 4 * len(dims)
        if size != expected:
            raise DatasetError(f"{path}: {declared} but the file holds {size} bytes of data")
    buf = np.empty(expected, dtype=np.uint8)
    got = _read_exact(stream, memoryview(buf))
    if got < expected:
        raise DatasetError(f"{path}: {declared} but the file holds {got} bytes of data")
    if stream.read(1):  # stop here: the rest of the stream is never decompressed
        raise DatasetError(
            f"{path}: {declared} but the file holds more (at least {expected + 1} bytes of "
            "data when decompressed)"
        )
    arr = buf.view(dtype).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path: str | Path, *, max_bytes: int = MAX_IDX_DATA_BYTES) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic ``00 00 <dtype code> <ndim>``, ``ndim``
    big-endian uint32 sizes, then the data in big-endian order. Sizes are checked exactly.

    A gzipped file is decompressed as a stream: the header is read first, a declared size
    over ``max_bytes`` is refused before any data is read, and reading stops one byte past
    the declared size, so a small file that inflates to gigabytes costs at most
    ``max_bytes`` of memory (and of decompression).
    """
    path = Path(path)
    try:
        with _open(path) as stream:
            return _read_idx_stream(path, stream, max_bytes)
    except (gzip.BadGzipFile, EOFError, zlib.error) as exc:
        raise DatasetError(f"{path}: corrupt gzip data ({exc})") from exc
    except OSError as exc:
        raise DatasetError(f"{path}: cannot read the file ({exc})") from exc


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
