"""The compiled CPU kernels (kernels.c through covnoise.core.noise.compiled): the N(0, 1)
draw against the float64 Box–Muller formula of the same SFC64 words (numpy's own SFC64 gives
the words) and against the numpy path; the diagonal noise's scale against DiagStats.std; and
the build: cached per source, rebuilt when the cached file is unusable, refused when it
computes wrong numbers, absent without a compiler."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from covnoise.core.noise import compiled, gaussian, make_structure
from covnoise.core.noise.gaussian import MIN_ENTRIES, new_bits
from covnoise.core.pergrad import DiagStats

pytestmark = pytest.mark.skipif(
    compiled.compiler() is None and not os.environ.get("CI"),
    reason="no C compiler here (CI has one: there this fails instead)",
)


def _words_formula(bits: np.random.SFC64, n: int) -> np.ndarray:
    """z from the next ⌈n/2⌉ words of `bits` in float64 (the method in kernels.c's header)."""
    h = (n + 1) // 2
    w = bits.random_raw(h).view(np.uint32).astype(np.float64)
    m1, m2 = np.mod(w[:h], 2.0**23), np.mod(w[h:], 2.0**23)
    r = np.sqrt(-2.0 * np.log((2.0 * m1 + 1.0) * 2.0**-24))
    theta = 2.0 * np.pi * m2 * 2.0**-23
    return np.concatenate([r * np.cos(theta), (r * np.sin(theta))[: n - h]])


@pytest.fixture
def kernel() -> compiled.Kernel:
    k = compiled.load()
    assert k is not None, "a C compiler is on the PATH but the compiled draw did not load"
    return k


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """load() with an empty cache directory of its own (and its memo cleared around it)."""
    monkeypatch.setenv("COVNOISE_BUILD_DIR", str(tmp_path / "cache"))
    compiled.load.cache_clear()
    yield tmp_path / "cache"
    compiled.load.cache_clear()


@pytest.mark.parametrize("n", [MIN_ENTRIES, MIN_ENTRIES + 1, 100_003, 1 << 18])
def test_compiled_draw_is_the_formula_of_its_words(kernel, n):
    """Every entry within 1e-6 of the float64 formula (|z| ≤ 5.8, where a float32 ulp is
    4.8e-7), and the bit generator left where numpy's would be after ⌈n/2⌉ words."""
    seed = torch.Generator().manual_seed(n)
    bits, twin = new_bits(seed), np.random.SFC64(0)
    twin.state = bits.state
    out = torch.empty(n)
    gaussian.fill_compiled(out, bits, kernel)
    expected = _words_formula(twin, n)
    assert np.abs(out.numpy().astype(np.float64) - expected).max() < 2e-6  # 9.1e-7 at worst
    assert np.array_equal(bits.state["state"]["state"], twin.state["state"]["state"])


def test_compiled_and_numpy_paths_draw_the_same_numbers(kernel):
    """Both paths read the same words the same way: the numpy path rounds its angle to
    float32 before sin and cos, so they differ by a few roundings (≤ 5e-6), and a run that
    switches path mid-stream continues the same stream."""
    n = 100_001
    a_bits = new_bits(torch.Generator().manual_seed(2))
    b_bits = new_bits(torch.Generator().manual_seed(2))
    a, b = torch.empty(n), torch.empty(n)
    for fill_a in (True, False):  # compiled then numpy on a; numpy twice on b
        if fill_a:
            gaussian.fill_compiled(a, a_bits, kernel)
        else:
            gaussian.fill_numpy(a, a_bits)
        gaussian.fill_numpy(b, b_bits)
        assert (a - b).abs().max().item() < 1e-5  # 4.9e-6 at worst over all angles
        assert not torch.equal(a, torch.zeros(n))
    assert np.array_equal(a_bits.state["state"]["state"], b_bits.state["state"]["state"])


def test_gaussian_uses_the_compiled_draw_where_it_loads(kernel, monkeypatch):
    out, twin = torch.empty(MIN_ENTRIES), torch.empty(MIN_ENTRIES)
    gaussian.gaussian_(out, torch.Generator(), new_bits(torch.Generator().manual_seed(4)))
    gaussian.fill_compiled(twin, new_bits(torch.Generator().manual_seed(4)), kernel)
    assert torch.equal(out, twin)
    monkeypatch.setattr(gaussian.compiled, "load", lambda: None)
    gaussian.gaussian_(out, torch.Generator(), new_bits(torch.Generator().manual_seed(4)))
    gaussian.fill_numpy(twin, new_bits(torch.Generator().manual_seed(4)))
    assert torch.equal(out, twin)


def test_build_is_cached_per_source(fresh_cache, tmp_path, monkeypatch):
    first = compiled.load()
    assert first is not None and first.path.parent == fresh_cache
    built = first.path.stat().st_mtime_ns
    compiled.load.cache_clear()
    again = compiled.load()
    assert again.path == first.path and again.path.stat().st_mtime_ns == built  # not rebuilt
    edited = tmp_path / "kernels.c"
    edited.write_text(compiled.SOURCE.read_text() + "\n/* edited */\n")
    monkeypatch.setattr(compiled, "SOURCE", edited)
    compiled.load.cache_clear()
    other = compiled.load()
    assert other is not None and other.path != first.path
    assert compiled.describe().startswith("compiled")


def test_an_unusable_cached_file_is_rebuilt(fresh_cache):
    cc = compiled.compiler()
    path = compiled.library_path(cc, compiled.FLAG_SETS[0], fresh_cache)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a shared library")
    kernel = compiled.load()
    assert kernel is not None and kernel.path == path
    z = np.empty(64, dtype=np.float32)
    kernel(z.ctypes.data, 64, np.array([1, 2, 3, 1], dtype=np.uint64))
    assert np.isfinite(z).all() and z.std() > 0.5


def test_a_kernel_drawing_wrong_numbers_is_refused(fresh_cache, tmp_path, monkeypatch):
    """A source whose cosine and sine halves are swapped compiles and runs, but its check
    against the float64 formula fails, so load() gives None and gaussian_ draws with numpy."""
    swapped = _swapped_source()
    assert swapped != compiled.SOURCE.read_text()
    wrong = tmp_path / "kernels.c"
    wrong.write_text(swapped)
    monkeypatch.setattr(compiled, "SOURCE", wrong)
    checks = []
    real_check = compiled._check
    monkeypatch.setattr(compiled, "_check", lambda k: checks.append(real_check(k)) or checks[-1])
    assert compiled.load() is None
    assert checks == [False] * len(compiled.FLAG_SETS)  # built and loaded, then refused
    assert not any(fresh_cache.glob("kernels-*.so"))  # and not kept
    assert compiled.describe().startswith("numpy")


def _swapped_source() -> str:
    source = compiled.SOURCE.read_text()
    return source.replace("zc[i] = r * c;", "zc[i] = r * sn;").replace(
        "zs[i] = r * sn;", "zs[i] = r * c;"
    )


def test_a_cached_library_failing_its_check_is_replaced_even_once_loaded(
    fresh_cache, tmp_path, monkeypatch
):
    """A wrong library under the right name, already loaded by this process (dlopen would
    hand the same handle back for that path): load() builds a new one under a name of its
    own, checks it, renames it over the cached file and returns it."""
    cc = compiled.compiler()
    flags = compiled.FLAG_SETS[0]
    path = compiled.library_path(cc, flags, fresh_cache)
    wrong = tmp_path / "kernels.c"
    wrong.write_text(_swapped_source())
    right = compiled.SOURCE
    monkeypatch.setattr(compiled, "SOURCE", wrong)
    built = compiled.build(cc, flags, fresh_cache, "wrong")
    monkeypatch.setattr(compiled, "SOURCE", right)
    os.replace(built, path)
    assert compiled._load(path, flags) is None  # loaded here, and refused
    kernel = compiled.load()
    assert kernel is not None and kernel.path == path and kernel.flags == flags
    assert os.stat(path).st_mode & 0o044 == 0o044  # readable by all
    assert sorted(p.name for p in fresh_cache.iterdir()) == [path.name]


def test_without_a_compiler_or_when_turned_off_the_numpy_path_draws(fresh_cache, monkeypatch):
    monkeypatch.setenv("CC", "/nonexistent/cc")
    assert compiled.load() is None
    out, twin = torch.empty(MIN_ENTRIES), torch.empty(MIN_ENTRIES)
    gaussian.gaussian_(out, torch.Generator(), new_bits(torch.Generator().manual_seed(8)))
    gaussian.fill_numpy(twin, new_bits(torch.Generator().manual_seed(8)))
    assert torch.equal(out, twin)
    monkeypatch.delenv("CC")
    monkeypatch.setenv("PATH", str(fresh_cache))  # no cc, gcc or clang anywhere on it
    compiled.load.cache_clear()
    assert compiled.compiler() is None and compiled.load() is None
    monkeypatch.undo()
    monkeypatch.setenv("COVNOISE_BUILD_DIR", str(fresh_cache))
    monkeypatch.setenv("COVNOISE_DRAW", "numpy")
    compiled.load.cache_clear()
    assert compiled.compiler() is not None and compiled.load() is None


def _stats(dtype: torch.dtype = torch.float32, batch: int = 64) -> DiagStats:
    """Σg², Σg over b = 32 rows of a batch of `batch` for a (40, 30) weight and a bias, with
    one coordinate whose variance rounds below zero (Σg² = (Σg)²/b exactly in reals)."""
    g = torch.Generator().manual_seed(5)
    rows = [
        torch.randn(32, 40, 30, generator=g, dtype=dtype),
        torch.randn(32, 30, generator=g, dtype=dtype),
    ]
    sq, s = [(r * r).sum(0) for r in rows], [r.sum(0) for r in rows]
    s[1][0], sq[1][0] = 3.0, 9.0 / 32 - 1e-6  # a variance of −1e-6·a: clamped to 0
    return DiagStats(sq, s, 32, batch)


@pytest.mark.parametrize("batch", [32, 64])  # whole batch (1/b) and sub-batch scaling
def test_compiled_diag_scale_is_the_std_of_the_statistics(kernel, batch, monkeypatch):
    """diag's kept scale √(c·v) by the kernel equals DiagStats.std(factor=c) (float32
    roundings: within 2e-6 relative), the rounded-negative variance gives 0, and statistics the
    kernel cannot read as they are (float64, non-contiguous) take DiagStats.std itself."""
    s = make_structure("diag", 0.3)
    stats = _stats(batch=batch)
    calls = []

    def counted(*args):
        calls.append(args[3])
        return kernel.std(*args)

    counting = compiled.Kernel(kernel.fill, counted, kernel.path, kernel.flags)
    monkeypatch.setattr(compiled, "load", lambda: counting)
    got, want = s._scale_from(stats), stats.std(factor=0.3)
    assert calls == [1200, 30]  # one pass per parameter, by the kernel
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == torch.float32
        assert torch.allclose(g, w, rtol=2e-6, atol=1e-7)
    assert got[1][0].item() == 0.0
    wide = _stats(torch.float64, batch)
    assert all(
        torch.equal(a, b) for a, b in zip(s._scale_from(wide), wide.std(factor=0.3), strict=True)
    )
    strided = DiagStats([t.t() for t in stats.sumsq[:1]], [t.t() for t in stats.sum[:1]], 32, batch)
    assert torch.equal(s._scale_from(strided)[0], strided.std(factor=0.3)[0])


def test_a_wrong_diag_scale_kernel_is_refused(fresh_cache, tmp_path, monkeypatch):
    """A scale kernel that forgets the clamp (NaN where the variance is negative) fails the
    check, so the whole library is refused."""
    source = compiled.SOURCE.read_text()
    unclamped = source.replace("out[i] = sqrtf(v < 0.0f ? 0.0f : v);", "out[i] = sqrtf(v);")
    assert unclamped != source
    wrong = tmp_path / "kernels.c"
    wrong.write_text(unclamped)
    monkeypatch.setattr(compiled, "SOURCE", wrong)
    assert compiled.load() is None


def test_threads_sharing_a_bit_generator_never_draw_the_same_words(kernel):
    """The kernel runs without the GIL; the generator's lock keeps its read-advance-write
    atomic, so two threads drawing from one SFC64 get the sequential draws between them,
    each once."""
    import threading

    n, per_thread = 1 << 18, 20  # long enough calls for the threads to overlap
    shared = new_bits(torch.Generator().manual_seed(12))
    twin = new_bits(torch.Generator().manual_seed(12))
    got: list[float] = []
    start = threading.Barrier(2)

    def work():
        out = torch.empty(n)
        start.wait()
        for _ in range(per_thread):
            gaussian.fill_compiled(out, shared, kernel)
            got.append(out[0].item())

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out = torch.empty(n)
    expected = []
    for _ in range(2 * per_thread):
        gaussian.fill_compiled(out, twin, kernel)
        expected.append(out[0].item())
    assert sorted(got) == sorted(expected)


def test_the_compiled_fill_refuses_what_it_cannot_write(kernel):
    bits = new_bits(torch.Generator().manual_seed(1))
    for bad in (
        torch.empty(MIN_ENTRIES, dtype=torch.float64),
        torch.empty(2, MIN_ENTRIES)[:, ::2],
        torch.empty(8),
    ):
        with pytest.raises(ValueError, match="fill_compiled: out must be"):
            gaussian.fill_compiled(bad, bits, kernel)
