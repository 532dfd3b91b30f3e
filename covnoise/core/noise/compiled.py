"""The compiled CPU kernels (kernels.c): the N(0, 1) draw and the diagonal noise's scale, built
once per machine with the C compiler, loaded through ctypes, checked before use, and absent
(None) wherever that fails.

Why: on the CPU the draw is most of the noise's cost at small batches. numpy's SFC64 bits
and its SIMD log, sqrt, sin and cos take about 220 µs for 10⁵ entries on one core of the
development machine, a quarter of a plain step of a 10⁵-parameter MLP at B = 128; kernels.c
does the same stream and transform in one vectorised pass in about 95 µs (`python -m
bench.steps --draw`). Right after a backward, small list operations cost several times what
they cost alone: the diagonal noise's scale √(max(a·Σg² − (a/b)(Σg)², 0)), four of them
(130–140 µs for the digits MLP's 85k entries), is one pass here. Nothing else changes: where
no compiler is found, the build fails or the check below fails, `gaussian_` keeps its numpy
path, which draws the same numbers up to a few float32 roundings, and the scale comes from
`DiagStats.std`, equal up to float32 roundings.

The library is built with `$CC` (a command line; else `cc`, `gcc` or `clang` on the PATH)
into `compiled/` of `platformdirs.user_cache_dir("covnoise")` (or `$COVNOISE_BUILD_DIR`),
named by a hash of the source, the flags, the compiler and the CPU, so an edited source,
another compiler or another machine sharing the directory builds its own. A build goes to a
file of its own, is loaded and checked there, and only then renamed over the cached name: a
concurrent worker never loads half a file, and a process that loaded a bad library under
that name (dlopen hands the same handle back for a path) still loads the new one.
`-march=native` is tried first where /proc/cpuinfo names the CPU's features for the hash,
then portable flags. After loading, 4,096 draws (and 33) from a fixed state are compared
with the float64 formula of the same words, and the scale with its formula on values that
include a negative variance and a NaN; a library that disagrees (beyond 1e-5) is not used
(the draw is within 9.1e-7 of the formula at worst, over every angle at the largest radius).
Building takes about 0.1 s once per machine, loading a built one 8 ms.
`COVNOISE_DRAW=numpy` turns the compiled draw off.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("kernels.c")
PORTABLE_FLAGS = ("-O3", "-fno-math-errno", "-std=c99", "-shared", "-fPIC")
#: -march=native only where the cache key can name the CPU's features (Linux's /proc/cpuinfo):
#: elsewhere a cache shared between machines could hand one a library built for another.
FLAG_SETS = (
    ((PORTABLE_FLAGS[0], "-march=native", *PORTABLE_FLAGS[1:]), PORTABLE_FLAGS)
    if Path("/proc/cpuinfo").exists()
    else (PORTABLE_FLAGS,)
)
#: Largest |kernel − float64 formula| accepted by the check after loading.
CHECK_TOLERANCE = 1e-5
_lock = threading.Lock()


@dataclass(frozen=True)
class Kernel:
    """The loaded library: its functions take raw pointers (see kernels.c)."""

    fill: ctypes._CFuncPtr
    std: ctypes._CFuncPtr
    path: Path
    flags: tuple[str, ...]

    def __call__(self, z_ptr: int, n: int, state: np.ndarray) -> None:
        """Fill n float32 entries at z_ptr from the SFC64 `state` (4 uint64, advanced)."""
        scratch = np.empty((n + 1) // 2, dtype=np.uint64)
        self.fill(z_ptr, n, state.ctypes.data, scratch.ctypes.data)

    def diag_std(self, out_ptr: int, sq_ptr: int, s_ptr: int, n: int, a: float, b: int) -> None:
        """out = √(max(a·sq − (a/b)·s², 0)) over n float32 entries (NaN stays NaN)."""
        self.std(out_ptr, sq_ptr, s_ptr, n, a, a / b)


def compiler() -> str | None:
    """The C compiler: `$CC` (a command line, e.g. "ccache gcc"), else the first of cc, gcc,
    clang on the PATH."""
    cc = os.environ.get("CC")
    if cc:
        return cc
    for name in ("cc", "gcc", "clang"):
        found = shutil.which(name)
        if found:
            return found
    return None


def cache_dir() -> Path:
    """Where built libraries live: `$COVNOISE_BUILD_DIR`, else `compiled/` in the user's
    cache directory."""
    explicit = os.environ.get("COVNOISE_BUILD_DIR")
    if explicit:
        return Path(explicit).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("covnoise")) / "compiled"


def _cpu_signature() -> str:
    """The CPU's model and feature flags (what -march=native compiles for)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    keep = [ln for ln in text.splitlines() if ln.startswith(("model name", "flags", "Features"))]
    return "\n".join(dict.fromkeys(keep))  # the first CPU's lines, once


def library_path(cc: str, flags: tuple[str, ...], directory: Path) -> Path:
    """The library's file for this source, compiler, flags and CPU."""
    key = hashlib.sha256()
    for part in (SOURCE.read_bytes(), cc.encode(), " ".join(flags).encode()):
        key.update(part)
        key.update(b"\0")
    key.update(_cpu_signature().encode())
    key.update(platform.machine().encode())
    return directory / f"kernels-{key.hexdigest()[:20]}.so"


def build(cc: str, flags: tuple[str, ...], directory: Path, stem: str) -> Path:
    """Compile kernels.c into a new file of its own in `directory` (a unique name, so a
    process that loaded an earlier build of the same library still loads this one afresh;
    readable by all, like the cache's other files); its path."""
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{stem}-", suffix=".so", dir=directory)
    os.close(fd)
    try:
        subprocess.run(
            [*shlex.split(cc), *flags, str(SOURCE), "-o", tmp],
            check=True,
            capture_output=True,
            timeout=30,
        )
        os.chmod(tmp, 0o755)
    except BaseException:
        os.unlink(tmp)
        raise
    return Path(tmp)


def sfc64(state: np.ndarray) -> np.random.SFC64:
    """numpy's SFC64 at the state (a, b, c, counter), the layout the kernel reads and writes."""
    bits = np.random.SFC64(0)
    bits.state = {
        "bit_generator": "SFC64",
        "state": {"state": np.array(state, dtype=np.uint64)},
        "has_uint32": 0,
        "uinteger": 0,
    }
    return bits


def reference(state: np.ndarray, n: int) -> np.ndarray:
    """The draw's formula in float64 from the same SFC64 words (the check's reference)."""
    bits = sfc64(state)
    h = (n + 1) // 2
    words = bits.random_raw(h).view(np.uint32) & 0x007FFFFF
    u = (2.0 * words[:h] + 1.0) * 2.0**-24
    theta = 2.0 * np.pi * words[h:] * 2.0**-23
    r = np.sqrt(-2.0 * np.log(u))
    return np.concatenate([r * np.cos(theta), (r * np.sin(theta))[: n - h]])


def _check(kernel: Kernel) -> bool:
    """Whether the draw matches `reference` on 4,096 draws from a fixed state (and an odd n),
    and the scale its formula (a negative variance gives 0, a NaN stays NaN)."""
    sq = np.array([4.0, 1.0, 0.0, 9.0, np.nan], dtype=np.float32)
    s = np.array([2.0, 3.0, 0.0, 1.5, 1.0], dtype=np.float32)
    out = np.empty_like(sq)
    kernel.diag_std(out.ctypes.data, sq.ctypes.data, s.ctypes.data, 5, 0.5, 2)
    expected = np.sqrt(
        np.maximum(0.5 * sq.astype(np.float64) - 0.25 * s.astype(np.float64) ** 2, 0)
    )
    if not (np.allclose(out[:4], expected[:4], rtol=1e-6) and np.isnan(out[4])):
        return False
    for n in (4096, 33):
        state = np.array([0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB, 1], np.uint64)
        expected = reference(state, n)
        z = np.empty(n, dtype=np.float32)
        kernel(z.ctypes.data, n, state)
        if not np.all(np.abs(z - expected) <= CHECK_TOLERANCE):
            return False
    return True


def _load(path: Path, flags: tuple[str, ...]) -> Kernel | None:
    try:
        lib = ctypes.CDLL(str(path))
        fill, std = lib.covnoise_gaussian, lib.covnoise_diag_std
    except (OSError, AttributeError):
        return None
    fill.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p]
    fill.restype = None
    std.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int64, ctypes.c_float, ctypes.c_float]
    std.restype = None
    kernel = Kernel(fill, std, path, flags)
    return kernel if _check(kernel) else None


@functools.cache
def load() -> Kernel | None:
    """The compiled kernels, built on first use; None where they are off, cannot be built or
    fail their check (then `gaussian_` uses numpy and the scale `DiagStats.std`)."""
    if os.environ.get("COVNOISE_DRAW", "").lower() == "numpy":
        return None
    cc = compiler()
    if cc is None:
        return None
    with _lock:
        for flags in FLAG_SETS:
            kernel = _build_and_load(cc, flags)
            if kernel is not None:
                return kernel
    return None


def _build_and_load(cc: str, flags: tuple[str, ...]) -> Kernel | None:
    """Load the cached library for these flags, building it when absent or unusable: the new
    build is loaded and checked under its own name, then renamed over the cached one."""
    try:
        path = library_path(cc, flags, cache_dir())
        if path.exists():
            kernel = _load(path, flags)
            if kernel is not None:
                return kernel
        fresh = build(cc, flags, path.parent, path.stem)
    except (OSError, subprocess.SubprocessError):
        return None
    kernel = _load(fresh, flags)
    if kernel is None:
        fresh.unlink(missing_ok=True)
        return None
    try:
        os.replace(fresh, path)
    except OSError:
        return Kernel(kernel.fill, kernel.std, fresh, flags)
    return Kernel(kernel.fill, kernel.std, path, flags)


def describe() -> str:
    """Which draw runs on the CPU, in words (for provenance and benchmarks)."""
    kernel = load()
    if kernel is None:
        return "numpy (no compiled draw)"
    return f"compiled ({' '.join(f for f in kernel.flags if f.startswith(('-O', '-march')))})"
