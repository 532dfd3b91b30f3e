"""A pickle loader that rebuilds plain data and numpy arrays, and nothing else, within bounds.

Some public datasets (CIFAR-10's python batches) are distributed as pickles. A pickle can name
any importable callable and have the loader call it, so loading one from an untrusted file is
arbitrary code execution. This loader resolves a global only if it is one of the few that numpy
needs to rebuild an ``ndarray`` and its ``dtype`` (each wrapped so that it accepts only the
arguments numpy writes); every other global (a class, ``os.system``, ``builtins.eval``, ...) is
refused before anything is called. Persistent ids are refused too. Plain containers and scalars
(dict, list, tuple, str, bytes, int, float, bool, None) need no global and load as usual.

Before unpickling, :func:`covnoise.data.pickle_scan.scan` replays the opcodes with a hard bound
on the file size, the number of opcodes and the size of every object counted with its shared
references expanded (:class:`PickleLimits`), so a small file cannot ask for exponential work.
"""

from __future__ import annotations

import io
import math
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from covnoise.data.pickle_scan import (
    PickleLimitError,
    PickleLimits,
    RestrictedUnpicklingError,
    scan,
)

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
    from numpy._core.numeric import _frombuffer
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    from numpy.core.numeric import _frombuffer  # type: ignore[no-redef]

__all__ = [
    "ALLOWED_GLOBALS",
    "PickleLimitError",
    "PickleLimits",
    "RestrictedUnpicklingError",
    "RestrictedUnpickler",
    "load",
    "load_path",
    "loads",
]

#: Kinds of dtype an array may have: booleans, integers, floats, complex numbers, bytes.
ALLOWED_DTYPE_KINDS = "biufcS"


def _refuse(what: str) -> PickleLimitError:
    return PickleLimitError(f"{what}; only the arguments numpy itself writes are allowed")


def _shape(shape: Any) -> tuple[int, ...]:
    if type(shape) is not tuple or not all(type(n) is int and n >= 0 for n in shape):
        raise _refuse(f"array shape {shape!r} is not a tuple of non-negative ints")
    return shape


def _checked_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    """``numpy.dtype`` for a short type string of a number or bytes dtype only."""
    flags_ok = all(type(f) in (bool, int) and f in (0, 1) for f in (align, copy))
    if type(obj) not in (str, bytes) or len(obj) > 8 or not flags_ok:
        raise _refuse(f"dtype({obj!r:.40}, {align!r:.20}) is not a plain type string")
    dt = np.dtype(obj, align=bool(align), copy=bool(copy))
    if dt.kind not in ALLOWED_DTYPE_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise _refuse(f"dtype {dt} (kind {dt.kind!r}) is not allowed: {ALLOWED_DTYPE_KINDS}")
    return dt


def _checked_reconstruct(subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
    """``_reconstruct`` of an empty ndarray (numpy always writes shape ``(0,)``); the data
    arrive by ``BUILD``, whose size numpy checks against the shape."""
    if subtype is not np.ndarray or math.prod(_shape(shape)) != 0 or type(typecode) is not bytes:
        raise _refuse(f"_reconstruct({subtype!r:.40}, {shape!r:.40}) is not an empty ndarray")
    return _reconstruct(subtype, shape, typecode)


def _checked_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """Protocol 5's ``_frombuffer`` over in-band bytes (the buffer bounds the size)."""
    if type(buf) not in (bytes, bytearray) or not isinstance(dtype, np.dtype):
        raise _refuse("_frombuffer needs in-band bytes and a dtype")
    if dtype.kind not in ALLOWED_DTYPE_KINDS or order not in ("C", "F"):
        raise _refuse(f"_frombuffer of dtype {dtype} order {order!r:.10}")
    return _frombuffer(buf, dtype, _shape(shape), order)


def _checked_encode(text: Any, encoding: Any) -> bytes:
    """``_codecs.encode(str, "latin1")``: how protocols 0-2 write bytes under Python 3."""
    if type(text) is not str or encoding != "latin1":
        raise _refuse("_codecs.encode is only allowed as (str, 'latin1')")
    return text.encode("latin1")


def _checked_empty_bytes(*args: Any) -> bytes:
    """``bytes()``: how protocols 0-2 write an empty bytes object under Python 3."""
    if args:
        raise _refuse("bytes is only allowed with no arguments")
    return b""


# (module, name) pairs a numpy array pickle uses (protocols 0-5), and the one Python 3 uses
# for bytes at protocols 0-2. Both spellings of numpy's modules occur: numpy < 2 wrote
# ``numpy.core``, numpy >= 2 writes ``numpy._core``. They resolve to fixed, argument-checking
# functions here, so nothing is imported on behalf of the file.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _checked_frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _checked_frombuffer,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _checked_dtype,
    ("_codecs", "encode"): _checked_encode,
    ("__builtin__", "bytes"): _checked_empty_bytes,
    ("builtins", "bytes"): _checked_empty_bytes,
}


def _check_global(module: str, name: str) -> None:
    if (module, name) not in ALLOWED_GLOBALS:
        raise RestrictedUnpicklingError(
            f"refused global {module}.{name}: only plain data (dict, list, tuple, str, "
            "bytes, int, float, bool, None) and numpy arrays are allowed",
            module=module,
            name=name,
        )


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only resolvable globals are those in ``ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str) -> Any:
        _check_global(module, name)
        return ALLOWED_GLOBALS[(module, name)]

    def persistent_load(self, pid: Any) -> Any:
        raise RestrictedUnpicklingError("refused a persistent id: only plain data is allowed")


def loads(data: bytes, *, encoding: str = "bytes", limits: PickleLimits | None = None) -> Any:
    """Load one pickle from bytes: scan it within ``limits``, then unpickle it restricted.

    ``encoding`` decodes Python 2 ``str`` objects; ``"bytes"`` keeps them as bytes, as the
    CIFAR-10 documentation does (its keys are then ``b"data"``, ``b"labels"``). Raises
    :class:`RestrictedUnpicklingError` for a refused global or persistent id,
    :class:`PickleLimitError` for a bound or rule broken, each with a one-line reason.
    """
    scan(data, limits or PickleLimits(), _check_global)
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()


def load(file: BinaryIO, *, encoding: str = "bytes", limits: PickleLimits | None = None) -> Any:
    """Load one pickle from an open binary file (read at most ``max_file_bytes`` + 1 bytes)."""
    limits = limits or PickleLimits()
    data = file.read(limits.max_file_bytes + 1)
    if len(data) > limits.max_file_bytes:
        raise PickleLimitError(
            f"the file is over the limit of {limits.max_file_bytes} bytes for a pickle"
        )
    return loads(data, encoding=encoding, limits=limits)


def load_path(
    path: str | Path, *, encoding: str = "bytes", limits: PickleLimits | None = None
) -> Any:
    """Load one pickle from a file path with the restricted, bounded unpickler."""
    with open(path, "rb") as fh:
        return load(fh, encoding=encoding, limits=limits)
