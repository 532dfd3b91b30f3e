"""Small helpers shared by several test modules."""

from __future__ import annotations

import gzip
import pickle
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from covnoise.config import RunConfig

#: A run of a few seconds on digits, for tests of engines and workers (no curvature).
TINY_RUN = RunConfig(
    dataset="digits",
    model="mlp",
    width=16,
    depth=2,
    batch_size=64,
    small_batch=16,
    steps=30,
    epochs=None,
    eval_every=5,
    sharpness_every=0,
)


def ce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Per-example cross-entropy (reduction none)."""
    return F.cross_entropy(logits, y, reduction="none")


def wait_for(predicate, timeout: float, poll: float = 0.05):
    """Poll `predicate` until it returns something truthy; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll)
    raise AssertionError(f"condition not met within {timeout} s")


def py2_batch_pickle(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch pickled the way the official files are (Python 2, protocol 2, str keys,
    numpy.core.multiarray._reconstruct), written opcode by opcode."""

    def s(b: bytes) -> bytes:
        return b"U" + bytes([len(b)]) + b if len(b) < 256 else b"T" + struct.pack("<i", len(b)) + b

    def i(v: int) -> bytes:
        if 0 <= v < 256:
            return b"K" + bytes([v])
        if 0 <= v < 65536:
            return b"M" + struct.pack("<H", v)
        return b"J" + struct.pack("<i", v)

    def g(module: bytes, name: bytes) -> bytes:
        return b"c" + module + b"\n" + name + b"\n"

    mark, tup, tup1, tup3, red, build = b"(", b"t", b"\x85", b"\x87", b"R", b"b"
    dtype = (
        g(b"numpy", b"dtype")
        + s(b"u1")
        + i(0)
        + i(1)
        + tup3
        + red
        + mark
        + i(3)
        + s(b"|")
        + b"NNN"
        + i(-1)
        + i(-1)
        + i(0)
        + tup
        + build
    )
    array = (
        g(b"numpy.core.multiarray", b"_reconstruct")
        + g(b"numpy", b"ndarray")
        + i(0)
        + tup1
        + s(b"b")
        + tup3
        + red
        + mark
        + i(1)
        + mark
        + i(data.shape[0])
        + i(data.shape[1])
        + tup
        + dtype
        + b"\x89"
        + s(data.tobytes())
        + tup
        + build
    )
    label_list = b"]" + mark + b"".join(i(v) for v in labels) + b"e"
    return (
        b"\x80\x02}"
        + mark
        + s(b"batch_label")
        + s(b"training batch 1 of 5")
        + s(b"data")
        + array
        + s(b"labels")
        + label_list
        + b"u."
    )


def make_cifar(root: Path, rng, per_batch=4, n_test=3) -> tuple[np.ndarray, ...]:
    """Five training batches and a test batch of random images in the CIFAR-10 python format
    (the first one pickled the official Python 2 way) under root/cifar-10-batches-py."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    xs, ys = [], []
    for b in range(1, 7):
        n = n_test if b == 6 else per_batch
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        name = "test_batch" if b == 6 else f"data_batch_{b}"
        if b == 1:  # one batch in the official Python 2 format
            (folder / name).write_bytes(py2_batch_pickle(data, labels))
        else:
            with open(folder / name, "wb") as fh:
                pickle.dump(
                    {
                        b"batch_label": name.encode(),
                        b"labels": labels,
                        b"data": data,
                        b"filenames": [f"img{i}.png".encode() for i in range(n)],
                    },
                    fh,
                )
        xs.append(data)
        ys.append(labels)
    x_train, y_train = np.concatenate(xs[:5]), np.concatenate(ys[:5])
    return x_train, y_train, xs[5], np.asarray(ys[5])


IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int16): 0x0B, np.dtype(np.float32): 0x0D}


def idx_bytes(arr: np.ndarray) -> bytes:
    """``arr`` as an IDX file: magic, big-endian sizes, big-endian data."""
    code = IDX_CODES[arr.dtype]
    head = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(arr.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, arr: np.ndarray, gz: bool) -> Path:
    """Write ``arr`` as an IDX file at ``path`` (``path.gz``, gzipped, if ``gz``)."""
    data = idx_bytes(arr)
    if gz:
        path = path.with_name(path.name + ".gz")
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def make_idx_set(folder: Path, rng, n_train=12, n_test=5, gz=(True, True, False, False)):
    """The four MNIST IDX files of random 28x28 images in ``folder``; returns the arrays."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": rng.integers(0, 10, n_train).astype(np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    for (name, arr), z in zip(arrays.items(), gz, strict=True):
        write_idx(folder / name, arr, z)
    return arrays


def cifar_bin_bytes(data: np.ndarray, labels) -> bytes:
    """Records of CIFAR-10's binary version, one per row of ``data`` (N, 3072): the label
    byte, then the 3072 pixel bytes (channel-major 3x32x32)."""
    return b"".join(bytes([int(y)]) + row.tobytes() for row, y in zip(data, labels, strict=True))


def make_cifar_bin(root: Path, x_train, y_train, x_test, y_test) -> Path:
    """The given images as CIFAR-10 binary batches under root/cifar-10-batches-bin: the train
    images split in order over data_batch_1..5.bin, the test images in test_batch.bin."""
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True, exist_ok=True)
    parts = zip(
        np.array_split(np.asarray(x_train), 5), np.array_split(np.asarray(y_train), 5), strict=True
    )
    for b, (x, y) in enumerate(parts, start=1):
        (folder / f"data_batch_{b}.bin").write_bytes(cifar_bin_bytes(x, y))
    (folder / "test_batch.bin").write_bytes(cifar_bin_bytes(x_test, y_test))
    return folder
