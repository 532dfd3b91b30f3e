"""Small helpers shared by several test modules."""

from __future__ import annotations

import pickle
import struct
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


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
    dtype = (g(b"numpy", b"dtype") + s(b"u1") + i(0) + i(1) + tup3 + red
             + mark + i(3) + s(b"|") + b"NNN" + i(-1) + i(-1) + i(0) + tup + build)
    array = (g(b"numpy.core.multiarray", b"_reconstruct") + g(b"numpy", b"ndarray")
             + i(0) + tup1 + s(b"b") + tup3 + red
             + mark + i(1) + mark + i(data.shape[0]) + i(data.shape[1]) + tup + dtype
             + b"\x89" + s(data.tobytes()) + tup + build)
    label_list = b"]" + mark + b"".join(i(v) for v in labels) + b"e"
    return (b"\x80\x02}" + mark + s(b"batch_label") + s(b"training batch 1 of 5")
            + s(b"data") + array + s(b"labels") + label_list + b"u.")


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
                pickle.dump({b"batch_label": name.encode(), b"labels": labels, b"data": data,
                             b"filenames": [f"img{i}.png".encode() for i in range(n)]}, fh)
        xs.append(data)
        ys.append(labels)
    x_train, y_train = np.concatenate(xs[:5]), np.concatenate(ys[:5])
    return x_train, y_train, xs[5], np.asarray(ys[5])
