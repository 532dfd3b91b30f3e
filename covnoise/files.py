"""Writing a file atomically: readers see the old file or the whole new one, never a part.

One helper for every file the package writes (run exports, data caches, downloads); it
imports nothing from the package, so any layer may use it.

The data goes to a temporary file with a unique name in the target's folder (the same file
system, so the final `os.replace` is atomic) and replaces the target only once it is complete
and flushed to disk. Each writer has its own temporary file, so several processes or threads
writing the same target at once all succeed and the last one to finish wins. A failed write
leaves the target as it was and removes its temporary file.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


def _create_unique(folder: Path, name: str) -> tuple[Path, BinaryIO]:
    """A new, empty file next to `name`, opened for writing.

    Unlike tempfile.mkstemp (mode 0600) the file gets the permissions of any file this
    process creates (0666 less the umask), which it keeps once it replaces the target.
    """
    while True:
        tmp = folder / f".{name}.{uuid.uuid4().hex[:12]}.tmp"
        try:
            fd = os.open(
                tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666
            )
        except FileExistsError:
            continue
        return tmp, os.fdopen(fd, "wb")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """A binary file to write `path`'s new content to; it replaces `path` when the block ends.

    The target's folder is created when missing. When the block raises, `path` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp, f = _create_unique(path.parent, path.name)
    try:
        with f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise
