"""The CPU's fast N(0, 1) draw against the normal distribution's exact CDF and moments, each
within five standard errors, on both of its paths (the compiled draw and numpy), and the diag
structure's noise through it against c·diag(C) from torch.func per-example gradients."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from covnoise.core.noise import compiled, gaussian, make_structure
from covnoise.core.noise.gaussian import MIN_ENTRIES, gaussian_, new_bits, uses_bits
from covnoise.core.pergrad import DiagStatsRecorder, per_example_grads
from tests.helpers import ce


@pytest.fixture(params=["compiled", "numpy"])
def draw_path(request, monkeypatch):
    """gaussian_ on the compiled draw (where a C compiler is found; CI has one) or on numpy."""
    if request.param == "numpy":
        monkeypatch.setattr(gaussian.compiled, "load", lambda: None)
    elif compiled.load() is None:
        pytest.skip("no compiled draw here")
    return request.param


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2.0))


def _draw(n: int, seed: int) -> torch.Tensor:
    return gaussian_(torch.empty(n), torch.Generator().manual_seed(seed))


def test_draws_follow_the_normal_cdf_and_moments(draw_path):
    n = (1 << 20) + 1  # odd: the last pair's sine half is dropped
    z = _draw(n, 0).double()
    assert torch.isfinite(z).all()
    for q in (-3.0, -2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0, 3.0):
        p = _phi(q)
        se = math.sqrt(p * (1 - p) / n)
        assert abs((z <= q).double().mean().item() - p) < 5 * se, q
    assert abs(z.mean().item()) < 5 / math.sqrt(n)
    assert abs(z.pow(2).mean().item() - 1) < 5 * math.sqrt(2 / n)
    assert abs(z.pow(4).mean().item() - 3) < 5 * math.sqrt(96 / n)  # Var z⁴ = 105 − 9
    tail = 2 * (1 - _phi(4.0))  # P(|z| > 4) ≈ 6.3e-5: the Box–Muller radius is right
    assert abs((z.abs() > 4).double().mean().item() - tail) < 5 * math.sqrt(tail / n)
    assert z.abs().max().item() <= math.sqrt(48 * math.log(2)) + 1e-5


def test_pair_partners_and_consecutive_draws_are_independent(draw_path):
    """cos and sin halves share a radius, yet z and z' are independent: their correlation
    and that of their squares is zero (a shared angle or radius would show in either)."""
    n = 1 << 20
    g = torch.Generator().manual_seed(1)
    z = gaussian_(torch.empty(n), g).double()
    h = n // 2
    se = 1 / math.sqrt(h)

    def corr(a: torch.Tensor, b: torch.Tensor) -> float:
        return torch.corrcoef(torch.stack([a, b]))[0, 1].item()

    assert abs(corr(z[:h], z[h:])) < 5 * se
    assert abs(corr(z[:h] ** 2, z[h:] ** 2)) < 5 * se
    assert abs(corr(z[:-1], z[1:])) < 5 / math.sqrt(n)
    z2 = gaussian_(torch.empty(n), g).double()  # the generator moved on: a fresh draw
    assert abs(corr(z, z2)) < 5 / math.sqrt(n)


def test_reproducible_from_the_generator_and_torch_below_the_threshold():
    a, b = _draw(MIN_ENTRIES, 3), _draw(MIN_ENTRIES, 3)
    assert torch.equal(a, b)
    assert not torch.equal(a, _draw(MIN_ENTRIES, 4))
    small = _draw(MIN_ENTRIES - 1, 5)  # below it: torch's own normal_, the same numbers
    torch_small = torch.randn(MIN_ENTRIES - 1, generator=torch.Generator().manual_seed(5))
    assert torch.equal(small, torch_small)
    f64 = torch.empty(MIN_ENTRIES, dtype=torch.float64)
    double = gaussian_(f64, torch.Generator().manual_seed(6))
    g6 = torch.Generator().manual_seed(6)
    assert torch.equal(double, torch.randn(MIN_ENTRIES, generator=g6, dtype=torch.float64))
    square = _draw(MIN_ENTRIES * 2, 7).view(256, -1)
    assert square.shape == (256, MIN_ENTRIES * 2 // 256)


def test_diag_noise_through_the_fast_draw_has_covariance_c_diag_C(draw_path):
    """A float32 model above MIN_ENTRIES parameters: ξ = noisy − clean over S draws, divided
    by √(c·v) from torch.func per-example gradients, is i.i.d. N(0, 1) coordinate by
    coordinate: the mean of ξ²/(c v) over all P·S entries is 1, and over draws for each
    coordinate too (the largest deviation within the Bonferroni bound)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 180), nn.Tanh(), nn.Linear(180, 10))
    params = list(model.parameters())
    P = sum(p.numel() for p in params)
    assert P >= MIN_ENTRIES
    B, c, S = 16, 0.7, 60
    x, y = torch.randn(B, 200), torch.randint(0, 10, (B,))
    v = torch.cat([g.var(0, unbiased=False).flatten() for g in per_example_grads(model, ce, x, y)])
    with DiagStatsRecorder(model, None, 1.0 / B) as rec:
        ce(model(x), y).mean().backward()
    s = make_structure("diag", c, stats_every=S + 1)
    state = s.init(params)
    gen = torch.Generator().manual_seed(9)
    clean = [torch.zeros_like(p) for p in params]
    u = []
    for step in range(S):
        noisy, state = s.update(clean, state, rec.result() if step == 0 else None, gen)
        xi = torch.cat([g.flatten() for g in noisy]).double()
        u.append(xi / (c * v.double()).sqrt())
    u = torch.stack(u)
    live = v > 1e-12 * v.max()
    w = u[:, live] ** 2
    assert abs(w.mean().item() - 1) < 5 * math.sqrt(2 / w.numel())
    per_coord = w.mean(0)  # each ~ χ²_S / S: sd √(2/S)
    bound = math.sqrt(2 / S) * 6  # 6 sd over ~4·10⁴ coordinates: about 1e-5 false alarms
    assert (per_coord - 1).abs().max().item() < bound
    assert abs(torch.corrcoef(u[:, live][:2])[0, 1].item()) < 5 / math.sqrt(int(live.sum()))
    # the draws came from one SFC64 kept in the state, seeded once from the generator
    assert state.bits is not None


def test_a_runs_bit_generator_continues_its_stream(draw_path):
    """With `bits` (a run's SFC64, seeded once from its generator), consecutive draws are a
    continuing stream: independent of each other, normal in their moments, reproducible
    from the seed, and the torch generator is not advanced by them."""
    n = 1 << 18
    gen = torch.Generator().manual_seed(11)
    bits = new_bits(gen)
    after_seed = gen.get_state()
    a = gaussian_(torch.empty(n), gen, bits).double()
    b = gaussian_(torch.empty(n), gen, bits).double()
    assert torch.equal(gen.get_state(), after_seed)  # the draws used only `bits`
    assert abs(torch.corrcoef(torch.stack([a, b]))[0, 1].item()) < 5 / math.sqrt(n)
    for z in (a, b):
        assert abs(z.mean().item()) < 5 / math.sqrt(n)
        assert abs(z.pow(2).mean().item() - 1) < 5 * math.sqrt(2 / n)
        assert abs(z.pow(4).mean().item() - 3) < 5 * math.sqrt(96 / n)
    again = new_bits(torch.Generator().manual_seed(11))
    assert torch.equal(gaussian_(torch.empty(n), gen, again).double(), a)
    # where the fast path does not apply, torch's normal_ with the generator fills it
    small = torch.empty(MIN_ENTRIES - 1)
    assert not uses_bits(small) and uses_bits(torch.empty(MIN_ENTRIES))
    g5 = torch.Generator().manual_seed(5)
    got = gaussian_(small, g5, new_bits(torch.Generator().manual_seed(0)))
    assert torch.equal(
        got, torch.randn(MIN_ENTRIES - 1, generator=torch.Generator().manual_seed(5))
    )


def test_a_small_model_keeps_no_bit_generator():
    """Below MIN_ENTRIES parameters the structure draws with torch's normal_ and keeps no
    SFC64 (the generator is not used to seed one)."""
    model = nn.Linear(4, 3)
    params = list(model.parameters())
    s = make_structure("isotropic", 0.5, stats_every=10)
    with DiagStatsRecorder(model, None, 1.0 / 8) as rec:
        ce(model(torch.randn(8, 4)), torch.randint(0, 3, (8,))).mean().backward()
    _, state = s.update(
        [torch.zeros_like(p) for p in params],
        s.init(params),
        rec.result(),
        torch.Generator().manual_seed(0),
    )
    assert state.bits is None
