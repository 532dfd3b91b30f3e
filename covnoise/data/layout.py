"""Where the files of the file-backed datasets live under ``data_dir``, and which are missing.

This is the one home of the file names that :func:`covnoise.data.download` writes and the
readers look for; :func:`locate` finds them and :func:`missing_files` explains, before any
loading, what is absent and the command that fetches it.
"""

from __future__ import annotations

from pathlib import Path

from covnoise.data.registry import DATASETS, canonical_name, default_data_dir

#: MNIST and Fashion-MNIST: the four IDX files in ``<data_dir>/<name>`` (each optionally .gz).
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: CIFAR-10, python version: pickled batches in ``<data_dir>/cifar-10-batches-py``.
CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"

#: CIFAR-10, binary version: fixed-size records in ``<data_dir>/cifar-10-batches-bin``; used
#: instead of the python batches whenever that folder exists.
CIFAR10_BIN_FOLDER = "cifar-10-batches-bin"
CIFAR10_BIN_TRAIN_BATCHES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_BIN_TEST_BATCH = "test_batch.bin"


def download_hint(name: str, root: Path) -> str:
    """The command that puts the files of dataset ``name`` under ``root``."""
    return f"run `python -m covnoise data download {name} --data-dir {root}`"


def cifar10_binary(root: Path) -> bool:
    """Whether CIFAR-10 is read from its binary version under ``root`` (its folder exists)."""
    return (root / CIFAR10_BIN_FOLDER).is_dir()


def _find_idx(folder: Path, base: str) -> Path | None:
    for candidate in (folder / base, folder / f"{base}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _find_file(folder: Path, name: str) -> Path | None:
    path = folder / name
    return path if path.is_file() else None


def locate(key: str, root: Path) -> tuple[Path, dict[str, Path | None]]:
    """The folder of file-backed dataset ``key`` under ``root`` and, for each file it needs
    (by its plain name), the path found or None."""
    if key == "cifar10":
        if cifar10_binary(root):
            folder = root / CIFAR10_BIN_FOLDER
            names = (*CIFAR10_BIN_TRAIN_BATCHES, CIFAR10_BIN_TEST_BATCH)
        else:
            folder = root / CIFAR10_FOLDER
            names = (*CIFAR10_TRAIN_BATCHES, CIFAR10_TEST_BATCH)
        return folder, {n: _find_file(folder, n) for n in names}
    if key in ("mnist", "fashion-mnist"):
        folder = root / key
        return folder, {b: _find_idx(folder, b) for b in IDX_FILES.values()}
    raise KeyError(f"{key} is not a file-backed dataset")


def missing_files(name: str, root: str | Path | None = None) -> str | None:
    """Why dataset ``name`` cannot be loaded from ``root`` (default :func:`default_data_dir`):
    a message naming the folder, the missing files and the download command; None when the
    dataset is embedded or its files are all there."""
    key = canonical_name(name)
    if DATASETS[key].embedded:
        return None
    base = Path(root).expanduser() if root is not None else default_data_dir()
    folder, found = locate(key, base)
    missing = [n for n, p in found.items() if p is None]
    if not missing:
        return None
    return (
        f"its files are not in {folder} (missing {', '.join(missing)}); {download_hint(key, base)}"
    )
