"""A pickle loader that rebuilds plain data and numpy arrays, and nothing else.

Some public datasets (CIFAR-10's python batches) are distributed as pickles. A pickle can name
any importable callable and have the loader call it, so loading one from an untrusted file is
arbitrary code execution. This loader resolves a global only if it is one of the few that numpy
needs to rebuild an ``ndarray`` and its ``dtype``; every other global (a class, ``os.system``,
``builtins.eval``, ...) is refused before anything is called. Persistent ids are refused too.
Plain containers and scalars (dict, list, tuple, str, bytes, int, float, bool, None) need no
global and load as usual.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:  # numpy >= 2
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]

# (module, name) pairs a numpy array pickle uses (protocols 0-4). Both spellings of the
# multiarray module occur: numpy < 2 wrote ``numpy.core``, numpy >= 2 writes ``numpy._core``.
# They resolve to fixed objects here, so nothing is imported on behalf of the file.
ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class RestrictedUnpicklingError(pickle.UnpicklingError):
    """A pickle asked for something other than plain data or a numpy array."""

    def __init__(self, message: str, *, module: str = "", name: str = "") -> None:
        super().__init__(message)
        self.module = module
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler whose only resolvable globals are those in ``ALLOWED_GLOBALS``."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise RestrictedUnpicklingError(
                f"refused global {module}.{name}: only plain data (dict, list, tuple, str, "
                "bytes, int, float, bool, None) and numpy arrays are allowed",
                module=module,
                name=name,
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise RestrictedUnpicklingError("refused a persistent id: only plain data is allowed")


def load(file: BinaryIO, *, encoding: str = "bytes") -> Any:
    """Load one pickle from an open binary file with the restricted unpickler.

    ``encoding`` decodes Python 2 ``str`` objects; ``"bytes"`` keeps them as bytes, as the
    CIFAR-10 documentation does (its keys are then ``b"data"``, ``b"labels"``).
    """
    return RestrictedUnpickler(file, encoding=encoding).load()


def loads(data: bytes, *, encoding: str = "bytes") -> Any:
    """Load one pickle from bytes with the restricted unpickler."""
    return load(io.BytesIO(data), encoding=encoding)


def load_path(path: str | Path, *, encoding: str = "bytes") -> Any:
    """Load one pickle from a file path with the restricted unpickler."""
    with open(path, "rb") as fh:
        return load(fh, encoding=encoding)
