"""Hostile data files: bounded work and memory when reading CIFAR-10 pickles and IDX files.

Each hostile file is written here and loaded in a subprocess under a 1.5 GiB address-space
limit and a wall-clock timeout; the loader must exit with a one-line DatasetError naming the
file, in a few seconds, not with a MemoryError, a traceback or a timeout. Before this bound,
the shared-reference batch below (a 3.7 KB file) ran for more than 87 s and reached 13.9 GB
before it was killed, and a 1 MB .gz that inflates to 1 GiB was decompressed whole.
"""

from __future__ import annotations

import pickle
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from covnoise.data import DatasetError
from covnoise.data.cifar import read_cifar_batch
from covnoise.data.idx import MAX_IDX_DATA_BYTES, read_idx
from covnoise.data.restricted_pickle import PickleLimitError, PickleLimits, loads
from tests.helpers import make_cifar, py2_batch_pickle, write_idx

AS_LIMIT = int(1.5 * 2**30)
LOAD_SECONDS = 5.0  # the bound on the loader itself (imports are not counted)

# The child imports first, then limits its address space, times the loader and reports.
CHILD = """
import resource, sys, time
from covnoise.data import DatasetError
from covnoise.data.cifar import read_cifar_batch
from covnoise.data.idx import read_idx
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[3]), int(sys.argv[3])))
loader = {"cifar": read_cifar_batch, "idx": read_idx, "gunzip": None}[sys.argv[1]]
t = time.perf_counter()
try:
    if loader is None:  # the unbounded way, as a control: decompress the whole file
        import gzip
        gzip.decompress(open(sys.argv[2], "rb").read())
    else:
        loader(sys.argv[2])
except DatasetError as exc:
    print(f"{time.perf_counter() - t:.3f}")
    print(f"DatasetError: {exc}")
    sys.exit(3)
print(f"{time.perf_counter() - t:.3f}")
print("loaded")
"""


def run_child(kind: str, path: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CHILD, kind, str(path), str(AS_LIMIT)],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_refused(kind: str, path: Path, *messages: str) -> float:
    """Load ``path`` in a limited child; it must end in a one-line DatasetError naming the
    file and holding each of ``messages``, within LOAD_SECONDS. Returns the loader's seconds."""
    proc = run_child(kind, path)
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert proc.returncode == 3, (proc.returncode, proc.stdout, proc.stderr[-2000:])
    seconds, line = proc.stdout.strip().split("\n")
    assert line.startswith("DatasetError: ") and str(path) in line
    assert all(m in line for m in messages), line
    assert float(seconds) < LOAD_SECONDS, (seconds, line)
    return float(seconds)


# ------------------------------------------------------------------------------- CIFAR pickles


def shared_nest(depth: int, width: int) -> list:
    """A list whose elements, counted with sharing expanded, number width**(depth + 1)."""
    x: list = [0] * width
    for _ in range(depth):
        x = [x] * width
    return x


def reconstruct_pickle(n: int) -> bytes:
    """``_reconstruct(ndarray, (n,), b"b")``: numpy allocates the shape before any data."""
    glob = b"cnumpy._core.multiarray\n_reconstruct\ncnumpy\nndarray\n"
    size = n.to_bytes((n.bit_length() + 8) // 8, "little")
    return b"\x80\x02" + glob + b"\x8a" + bytes([len(size)]) + size + b"\x85C\x01b\x87R."


def ndarray_call(n: int) -> bytes:
    """``numpy.ndarray((n,))``: a direct call would allocate n bytes uninitialised."""
    size = n.to_bytes((n.bit_length() + 8) // 8, "little")
    return b"\x80\x02cnumpy\nndarray\n\x8a" + bytes([len(size)]) + size + b"\x85\x85R."


def hash_bomb() -> bytes:
    """``{key: 0}`` where hashing ``key`` walks 2**60 tuples when sharing is expanded (the
    dict is written opcode by opcode: building it here would hash the key)."""
    t: tuple = (0,)
    for _ in range(60):
        t = (t, t)
    key = pickle.dumps(t, protocol=2)[2:-1]  # the opcodes that push t
    return b"\x80\x02}" + key + b"K\x00s."


def self_referencing() -> dict:
    labels: list = [0]
    labels.append(labels)
    return {b"data": np.zeros((2, 3072), np.uint8), b"labels": labels}


REFUSED, UNREADABLE = "refused to load", "is not a readable pickle"
#: name -> (file maker, how the message starts after the path, what it says)
HOSTILE_PICKLES = {
    "shared labels": (
        lambda: pickle.dumps(
            {b"data": np.zeros((1, 3072), np.uint8), b"labels": shared_nest(5, 35)}
        ),
        REFUSED,
        "a list holds more than 2000000 objects",
    ),
    "shared data": (
        lambda: pickle.dumps({b"data": shared_nest(6, 30), b"labels": [0]}, protocol=2),
        REFUSED,
        "shared references are counted each time",
    ),
    "hash bomb": (hash_bomb, REFUSED, "a tuple holds more than 2000000 objects"),
    "self reference": (
        lambda: pickle.dumps(self_referencing()),
        REFUSED,
        "APPENDS changes a list after it was shared",
    ),
    "huge _reconstruct": (lambda: reconstruct_pickle(10**12), REFUSED, "not an empty ndarray"),
    "ndarray called": (lambda: ndarray_call(2**40), REFUSED, "REDUCE calls numpy.ndarray"),
    "memo of a mark": (
        lambda: b"\x80\x02](p0\n" + b"g0\n" * 9 + b"e.",
        UNREADABLE,
        "PUT needs an object on the stack, not a mark",
    ),
    "declared 2**60 bytes": (
        lambda: b"\x80\x04\x8e" + struct.pack("<Q", 2**60) + b"x.",
        UNREADABLE,
        "expected 1152921504606846976 bytes in a bytes8",
    ),
}


@pytest.mark.parametrize("case", HOSTILE_PICKLES)
def test_hostile_cifar_batch_is_refused_quickly(tmp_path, case):
    make, how, message = HOSTILE_PICKLES[case]
    path = tmp_path / "data_batch_1"
    path.write_bytes(make())
    assert path.stat().st_size < 100_000
    prefix = f"cifar10: refused to load {path}" if how == REFUSED else f"cifar10: {path} {how}"
    assert_refused("cifar", path, prefix, message)
    with pytest.raises(DatasetError, match=re.escape(message)):
        read_cifar_batch(path)


def test_shared_labels_really_expand_and_load_fast_unrestricted():
    """Control: the plain unpickler builds the shared structure at once (it is the walk that
    explodes), and it expands to 35**6 = 1.8e9 labels, far over the 2e6-object bound."""
    labels = pickle.loads(pickle.dumps(shared_nest(5, 35)))
    inner = labels
    for _ in range(5):
        assert inner[0] is inner[-1]  # one list, shared 35 times at each level
        inner = inner[0]
    assert len(inner) == 35 and 35**6 > PickleLimits().max_objects


def test_sharing_under_the_bound_is_allowed_but_labels_must_be_flat(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(
        pickle.dumps({b"data": np.zeros((3, 3072), np.uint8), b"labels": shared_nest(2, 3)})
    )
    with pytest.raises(
        DatasetError, match=r"'labels' must be 3 integers \(a flat list\), got a list of 3"
    ):
        read_cifar_batch(path)
    path.write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, True]}))
    with pytest.raises(DatasetError, match="must be 2 integers"):
        read_cifar_batch(path)


def test_limits_bound_opcodes_file_size_and_objects():
    blob = pickle.dumps(list(range(1000)), protocol=4)
    assert loads(blob) == list(range(1000))
    with pytest.raises(PickleLimitError, match="more than 100 opcodes"):
        loads(blob, limits=PickleLimits(max_opcodes=100))
    with pytest.raises(PickleLimitError, match="over the limit of 100 bytes"):
        loads(blob, limits=PickleLimits(max_file_bytes=100))
    with pytest.raises(PickleLimitError, match="more than 500 objects"):
        loads(blob, limits=PickleLimits(max_objects=500))
    with pytest.raises(PickleLimitError, match="more than 2000000 objects"):
        loads(pickle.dumps(shared_nest(3, 40)))  # 40**4 = 2.56e6 when expanded


@pytest.mark.parametrize(
    "obj, message",
    [
        (np.zeros(2, dtype=[("a", "u1"), ("b", "f4")]), "dtype"),
        (np.array([None, 1], dtype=object), "dtype"),
        (np.array(["ab"]), "dtype"),
        (np.float32(1.5), "refused global numpy._core.multiarray.scalar"),
    ],
)
def test_arrays_other_than_plain_numbers_are_refused(obj, message):
    for protocol in (2, 4, 5):
        with pytest.raises(pickle.UnpicklingError, match=message):
            loads(pickle.dumps(obj, protocol=protocol))


@pytest.mark.parametrize("protocol", [0, 1, 2, 3, 4, 5])
def test_real_format_pickles_load_at_every_protocol(protocol):
    rng = np.random.default_rng(protocol)
    obj = {
        b"batch_label": b"training batch 1 of 5",
        b"labels": [int(v) for v in rng.integers(0, 10, 7)],
        b"data": rng.integers(0, 256, (7, 3072), dtype=np.uint8),
        b"filenames": [b"img.png"] * 7,  # one bytes object shared 7 times: allowed
        "arrays": [np.eye(3), np.arange(4, dtype=">i2"), np.ones(2, "?"), np.zeros(0, "f4")],
        "more": (np.full((2, 2), 1 + 2j), np.array([b"ab", b"c"]), 2**70, -1.5, None),
    }
    got = loads(pickle.dumps(obj, protocol=protocol))
    ref = pickle.loads(pickle.dumps(obj, protocol=protocol))
    assert got.keys() == ref.keys()
    for key in (b"batch_label", b"labels", b"filenames"):
        assert got[key] == ref[key]
    pairs = [(got[b"data"], ref[b"data"])] + list(zip(got["arrays"], ref["arrays"], strict=True))
    pairs += [(got["more"][0], ref["more"][0]), (got["more"][1], ref["more"][1])]
    for a, b in pairs:
        assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    assert got["more"][2:] == ref["more"][2:]


def test_make_cifar_batches_read_exactly_as_written(tmp_path):
    x_train, y_train, x_test, y_test = make_cifar(tmp_path, np.random.default_rng(9))
    folder = tmp_path / "cifar-10-batches-py"
    xs, ys = zip(*(read_cifar_batch(folder / f"data_batch_{b}") for b in range(1, 6)), strict=True)
    assert np.array_equal(np.concatenate(xs).reshape(-1, 3072), x_train)
    assert np.array_equal(np.concatenate(ys), y_train) and ys[0].dtype == np.int64
    x, y = read_cifar_batch(folder / "test_batch")
    assert x.shape == (3, 3, 32, 32) and np.array_equal(x.reshape(3, -1), x_test)
    assert np.array_equal(y, y_test)
    data = np.arange(5 * 3072).astype(np.uint8).reshape(5, 3072)
    (folder / "py2").write_bytes(py2_batch_pickle(data, [0, 9, 3, 3, 1]))
    x, y = read_cifar_batch(folder / "py2")
    assert np.array_equal(x.reshape(5, -1), data) and y.tolist() == [0, 9, 3, 3, 1]


# ------------------------------------------------------------------------------------ IDX .gz


@pytest.fixture(scope="module")
def gib_of_zeros() -> bytes:
    """A valid 1 MB gzip member that inflates to 1 GiB of zero bytes (a repeated
    sync-flushed deflate block, a final empty block, then CRC32 and size)."""
    chunk = b"\0" * 2**20
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = comp.compress(chunk) + comp.flush(zlib.Z_SYNC_FLUSH)
    crc = 0
    for _ in range(1024):
        crc = zlib.crc32(chunk, crc)
    head = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return head + block * 1024 + b"\x03\x00" + struct.pack("<II", crc, 0)


def idx_header(dims: tuple[int, ...], code: int = 0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def gz_member(data: bytes) -> bytes:
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    return comp.compress(data) + comp.flush()


def test_the_zeros_file_is_really_hostile(tmp_path, gib_of_zeros):
    """Control: decompressing the file whole under the same limit ends in a MemoryError."""
    path = tmp_path / "zeros.gz"
    path.write_bytes(gz_member(idx_header((10, 28, 28))) + gib_of_zeros)
    assert path.stat().st_size < 1_100_000
    proc = run_child("gunzip", path)
    assert proc.returncode == 1 and "MemoryError" in proc.stderr, proc.stderr[-1000:]


@pytest.mark.parametrize(
    "dims, message",
    [
        ((10, 28, 28), "holds more (at least 7841 bytes of data"),
        ((10**6, 10**6), f"allowed: at most {MAX_IDX_DATA_BYTES} bytes"),
        ((200, 1024, 1024), f"holds more (at least {200 * 2**20 + 1} bytes"),
    ],
)
def test_gz_that_inflates_past_its_header_is_refused(tmp_path, gib_of_zeros, dims, message):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gz_member(idx_header(dims)) + gib_of_zeros)
    assert_refused("idx", path, message)


def test_plain_idx_claiming_1e12_elements_is_refused_unread(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(idx_header((10**4, 10**4, 10**4)) + b"\0" * 100)
    assert_refused("idx", path, "IDX header declares 10000x10000x10000 uint8")
    path.write_bytes(idx_header((10, 10)) + b"\0" * 100)
    assert read_idx(path).shape == (10, 10)
    with pytest.raises(DatasetError, match="allowed: at most 99 bytes"):
        read_idx(path, max_bytes=99)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_writers_still_load_exactly(tmp_path, gz):
    rng = np.random.default_rng(11)
    arrays = [
        rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        rng.integers(0, 10, 6).astype(np.uint8),
        (rng.standard_normal((3, 4)) * 1000).astype(np.int16),
        rng.standard_normal((2, 3, 5)).astype(np.float32),
        np.zeros((0, 28, 28), np.uint8),
    ]
    for i, arr in enumerate(arrays):
        got = read_idx(write_idx(tmp_path / f"a{i}", arr, gz=gz))
        assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
        assert got.dtype.isnative


def test_gz_shorter_than_its_header_says_names_the_count(tmp_path):
    path = tmp_path / "x.gz"
    path.write_bytes(gz_member(idx_header((5, 28, 28)) + b"\0" * 100))
    with pytest.raises(
        DatasetError, match=r"declares 5x28x28 uint8 \(3920 bytes .* holds 100 bytes"
    ):
        read_idx(path)
    path.write_bytes(gz_member(idx_header((5, 28, 28)) + b"\0" * 3920)[:-20])
    with pytest.raises(DatasetError, match="corrupt gzip data"):
        read_idx(path)
