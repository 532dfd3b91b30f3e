"""Noise structures and noise statistics against dense references built from torch.func
per-example gradients and a dense Hessian."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from covnoise.core.noise import STRUCTURES, make_structure, noise_statistics
from covnoise.core.noise.base import WEIGHT_ROWS, WeightRows
from covnoise.core.pergrad import DiagStats, DiagStatsRecorder, per_example_grads
from covnoise.core.step import RECORDERS
from covnoise.theory import noise_covariance
from tests.helpers import ce

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(seed: int, d_in: int = 4, hidden: int = 5, d_out: int = 3) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, d_out)).double()


def batch(B: int, d_in: int, seed: int, correlated: bool = False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, d_in, generator=g, dtype=torch.float64)
    if correlated:  # inputs along one direction: strongly correlated gradient coordinates
        x = torch.randn(B, 1, generator=g, dtype=torch.float64) * 2 + 0.1 * x
    return x, torch.randint(0, 3, (B,), generator=g)


def flat_grads(model, x, y):
    return torch.cat([g.flatten(1) for g in per_example_grads(model, ce, x, y)], 1)


def dense_sigma(name: str, c: float, G: torch.Tensor) -> torch.Tensor:
    """c·K from per-example gradients G (B×P), by the covariance table of covnoise.theory
    (numpy, dense): the definition the sampled noise must meet."""
    Gc = (G - G.mean(0)).double().numpy()
    C = Gc.T @ Gc / G.shape[0]
    return torch.from_numpy(noise_covariance(C, name, c)).to(G.dtype)


def cov_z_scores(xi: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(Ŝ − Σ)/SE for every entry of the sample covariance of zero-mean draws ξ (S×P).

    SE_ij = sd(ξ_i ξ_j)/√S (the CLT standard error of a mean of products; for Gaussian ξ its
    square is the Wishart variance (Σ_ij² + Σ_ii Σ_jj)/S)."""
    S = xi.shape[0]
    iu = torch.triu_indices(xi.shape[1], xi.shape[1])
    prods = xi[:, iu[0]] * xi[:, iu[1]]
    se = prods.std(0) / math.sqrt(S)
    return (prods.mean(0) - sigma[iu[0], iu[1]]) / se.clamp(min=1e-300)


def sample_noise(name, c, model, x, y, S, stats_rows=None, seed=0):
    """S draws of ξ = noisy gradient − clean gradient through the structure's API.

    diag/isotropic: update() on the clean gradient (the loss weights are 1/B), with the
    statistics of the drawn sub-batch; full: the backward of the weighted loss, batched over
    the drawn weights (test_full_single_backward_is_exact checks one backward directly)."""
    B = x.shape[0]
    params = list(model.parameters())
    s = make_structure(name, c, stats_rows=stats_rows, stats_every=1 if stats_rows else S + 1)
    gen = torch.Generator().manual_seed(seed)
    clean = torch.cat([g.flatten() for g in torch.autograd.grad(ce(model(x), y).mean(), params)])

    def stats_of(rows):  # the statistics the step records for the structure
        with RECORDERS[s.stats_kind](model, rows, 1.0 / B) as rec:
            torch.autograd.grad(ce(model(x), y).mean(), params)
        return rec.result()

    cache = {}  # statistics of every possible sub-batch, recorded once
    if name in ("diag", "isotropic") and stats_rows:
        for rows in itertools.combinations(range(B), stats_rows):
            cache[rows] = stats_of(torch.tensor(rows))
    state = s.init(params)
    draws, weights = [], []
    clean_list = [
        g.view_as(p) for g, p in zip(clean.split([p.numel() for p in params]), params, strict=True)
    ]
    for _ in range(S):
        due = s.needs_stats(state)
        rows = s.stats_rows(B, gen) if due else None
        weights.append(s.loss_weights(B, state, gen, dtype=torch.float64))
        stats = None
        if due:
            stats = cache[tuple(rows.tolist())] if cache else stats_of(rows)
        noisy, state = s.update(list(clean_list), state, stats, gen)
        draws.append(torch.cat([g.flatten() for g in noisy]) - clean)
    if name == "full":  # the gradient of Σ_n w_n l_n for every drawn w, batched backward
        W = torch.stack(weights)
        draws = []
        for chunk in W.split(2000):
            losses = ce(model(x), y)
            gs = torch.autograd.grad(losses, params, grad_outputs=chunk, is_grads_batched=True)
            draws.append(torch.cat([g.flatten(1) for g in gs], 1) - clean)
        return torch.cat(draws), s, state
    return torch.stack(draws), s, state


@pytest.mark.parametrize(
    "name,stats_rows,S",
    [
        ("none", None, 10),
        ("isotropic", None, 20000),
        ("diag", None, 20000),
        ("full", None, 20000),
        ("isotropic", 3, 10000),
        ("diag", 3, 10000),
    ],
)
def test_empirical_covariance_matches_target(name, stats_rows, S):
    """Whole matrix (P = 43, 946 entries): every |z| < 5 (about 5e-4 chance of a false alarm
    over all entries). Sub-batch statistics (3 of 12 rows) keep Cov(ξ) = c·K exactly."""
    model, (x, y) = tiny(0), batch(12, 4, 1)
    c = 0.3
    xi, s, state = sample_noise(name, c, model, x, y, S, stats_rows, seed=2)
    G = flat_grads(model, x, y)
    sigma = dense_sigma(name, c, G)
    if name == "none":
        assert torch.equal(xi, torch.zeros_like(xi))
        return
    z = cov_z_scores(xi, sigma)
    assert z.abs().max() < 5, (z.abs().max(), z.abs().argmax())
    assert state.step == S
    if name in ("diag", "isotropic"):
        assert state.refreshes == (S if stats_rows else 1)
        # the same test has the power to reject the other structures
        other = dense_sigma("full", c, G)
        assert cov_z_scores(xi, other).abs().max() > 10


def test_full_single_backward_is_exact():
    """∇Σ w_n l_n = ḡ + √(c/B) Σ (z_n − z̄) g_n with the z drawn from the same generator."""
    model, (x, y) = tiny(3), batch(10, 4, 4)
    B, c = 10, 0.7
    s = make_structure("full", c)
    gen = torch.Generator().manual_seed(5)
    replay = torch.Generator().manual_seed(5)
    w = s.loss_weights(B, s.init([]), gen, dtype=torch.float64)
    # the weights of WEIGHT_ROWS steps are drawn at once; the first step takes row 0
    z = torch.randn(WEIGHT_ROWS, B, generator=replay, dtype=torch.float64)[0]
    assert abs(float(w.sum()) - 1) < 1e-12
    grads = torch.autograd.grad((w * ce(model(x), y)).sum(), list(model.parameters()))
    got = torch.cat([g.flatten() for g in grads])
    G = flat_grads(model, x, y)
    want = G.mean(0) + math.sqrt(c / B) * ((z - z.mean())[:, None] * G).sum(0)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_full_weight_rows_are_independent_centred_draws():
    """WeightRows hands out the rows of one (WEIGHT_ROWS, n) draw in order, each centred and
    scaled (√(c/n)(z − z̄) + offset), then draws the next block; a new n starts a new block.
    Over many steps the weights' covariance is (c/n)(I − 11ᵀ/n) (Monte-Carlo, 5 s.e.)."""
    n, c = 5, 0.3
    rows, gen, replay = WeightRows(), torch.Generator().manual_seed(3), torch.Generator()
    replay.manual_seed(3)
    got = torch.stack([rows.next(n, c, gen, torch.float64, 0.2) for _ in range(2 * WEIGHT_ROWS)])
    z = torch.randn(2 * WEIGHT_ROWS, n, generator=replay, dtype=torch.float64)
    want = (z - z.mean(1, keepdim=True)) * math.sqrt(c / n) + 0.2
    assert torch.allclose(got, want, rtol=1e-12, atol=1e-14)
    assert torch.equal(gen.get_state(), replay.get_state())
    other = rows.next(n + 1, c, gen, torch.float64)  # a new size: a new block, sums to 0
    assert other.shape == (n + 1,) and abs(float(other.sum())) < 1e-12
    many = torch.stack([rows.next(n, c, gen, torch.float64) for _ in range(200 * WEIGHT_ROWS)])
    cov = many.T @ many / len(many)
    want_cov = (c / n) * (torch.eye(n, dtype=torch.float64) - 1.0 / n)
    # the s.e. of each entry of a sample covariance of Gaussians is ≤ √((σ_ii σ_jj + σ_ij²)/S)
    se = math.sqrt(2 * (c / n) ** 2 / len(many))
    assert (cov - want_cov).abs().max() < 5 * se


def test_loss_weights_and_schedule():
    gen = torch.Generator().manual_seed(0)
    for name in STRUCTURES:
        s = make_structure(name, 0.2, stats_rows=4, stats_every=3)
        w = s.loss_weights(16, s.init([]), gen)
        assert w.shape == (16,) and abs(float(w.sum()) - 1) < 1e-6
        if name != "full":
            assert torch.equal(w, torch.full((16,), 1 / 16))
    s = make_structure("diag", 0.2, stats_rows=4, stats_every=3)
    rows = s.stats_rows(16, gen)
    assert len(rows) == 4 and len(set(rows.tolist())) == 4 and torch.equal(rows, rows.sort()[0])
    assert int(rows.max()) < 16
    assert make_structure("diag", 0.2).stats_rows(5, gen) is None  # the whole batch
    assert s.stats_rows(3, gen) is None
    assert s.describe() == {
        "structure": "diag",
        "c": 0.2,
        "source": "batch",
        "stats_rows": 4,
        "stats_every": 3,
    }
    assert not make_structure("full", 0.2).needs_stats(s.init([]))
    assert not make_structure("none", 0.2).needs_stats(s.init([]))


def test_refresh_reuses_v_with_fresh_noise():
    """stats_every=2: steps 0 and 1 use v from step 0, ξ = √(c v) ⊙ z with a new z each step;
    step 2 demands fresh statistics."""
    model, (x, y) = tiny(6), batch(8, 4, 7)
    params = list(model.parameters())
    c = 0.5
    s = make_structure("diag", c, stats_every=2)
    state = s.init(params)
    G = per_example_grads(model, ce, x, y)
    v = [g.var(0, unbiased=False) for g in G]
    gen = torch.Generator().manual_seed(8)
    with DiagStatsRecorder(model, s.stats_rows(8, gen), 1 / 8) as rec:
        ce(model(x), y).mean().backward()
    zeros = [torch.zeros_like(p) for p in params]
    seen = []
    for step in range(2):
        assert s.needs_stats(state) == (step == 0)
        replay = torch.Generator().manual_seed(0)
        replay.set_state(gen.get_state())
        z = torch.randn(sum(p.numel() for p in params), generator=replay, dtype=torch.float64)
        noisy, state = s.update(zeros, state, rec.result() if step == 0 else None, gen)
        want = torch.cat([(c * t).sqrt().flatten() for t in v]) * z
        got = torch.cat([g.flatten() for g in noisy])
        assert got.dtype == torch.float64
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-14)
        seen.append(got)
    assert not torch.allclose(seen[0], seen[1])
    assert s.needs_stats(state)
    with pytest.raises(ValueError, match="needs statistics"):
        s.update(zeros, state, None, gen)


def test_make_structure_validates():
    with pytest.raises(ValueError, match="none, isotropic, diag, full"):
        make_structure("kfac", 0.1)
    with pytest.raises(ValueError, match="c must be"):
        make_structure("diag", -1.0)
    with pytest.raises(ValueError, match="stats_rows"):
        make_structure("diag", 0.1, stats_rows=1)
    with pytest.raises(ValueError, match="stats_every"):
        make_structure("diag", 0.1, stats_every=0)


# --------------------------------------------------------------------------- statistics
def dense_hessian(model, x, y) -> torch.Tensor:
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in model.parameters()])

    def loss(flat):
        parts = flat.split([math.prod(s) for s in shapes])
        ps = {n: t.view(s) for n, t, s in zip(names, parts, shapes, strict=True)}
        return ce(functional_call(model, ps, (x,)), y).mean()

    return torch.autograd.functional.hessian(loss, flat0)


def dense_hvp(H, params):
    def hvp(vs):
        out = H @ torch.cat([v.flatten() for v in vs])
        return [
            t.view_as(p)
            for t, p in zip(out.split([p.numel() for p in params]), params, strict=True)
        ]

    return hvp


@pytest.fixture(scope="module")
def probe():
    model, (x, y) = tiny(9, d_in=3, hidden=4), batch(16, 3, 10)
    H = dense_hessian(model, x, y)
    G = flat_grads(model, x, y)
    return model, x, y, H, G


@pytest.mark.parametrize("name", ["isotropic", "diag", "full"])
def test_noise_statistics_against_dense(probe, name):
    model, x, y, H, G = probe
    params = list(model.parameters())
    c, n = 0.25, 4000
    sigma = dense_sigma(name, c, G)
    for p in params:  # noise_statistics must leave the gradients alone
        p.grad = torch.full_like(p, 7.0)
    gen = torch.Generator().manual_seed(11)
    st = noise_statistics(make_structure(name, c), model, ce, x, y, dense_hvp(H, params), n, gen)
    assert all(torch.equal(p.grad, torch.full_like(p, 7.0)) for p in params)
    assert st["noise_trace"] == pytest.approx(float(sigma.trace()), rel=1e-8)
    assert st["noise_fro"] == pytest.approx(float(torch.linalg.matrix_norm(sigma)), rel=1e-8)
    exact = float((H @ sigma).trace())
    se_theory = math.sqrt(2 * float((H @ sigma @ H @ sigma).trace()) / n)
    assert abs(st["noise_trace_hsigma"] - exact) < 4 * se_theory
    assert st["noise_trace_hsigma_se"] == pytest.approx(se_theory, rel=0.15)
    assert st["noise_trace_hsigma_draws"] == n  # the first block already meets the target


def test_noise_statistics_none_and_without_hvp(probe):
    model, x, y, H, G = probe
    gen = torch.Generator().manual_seed(12)
    st = noise_statistics(make_structure("none", 0.3), model, ce, x, y, None, 8, gen)
    assert st == {
        "noise_trace": 0.0,
        "noise_fro": 0.0,
        "noise_trace_hsigma": 0.0,
        "noise_trace_hsigma_se": 0.0,
        "noise_trace_hsigma_draws": 0.0,
    }
    st = noise_statistics(make_structure("diag", 0.3), model, ce, x, y, None, 8, gen)
    assert math.isnan(st["noise_trace_hsigma"]) and st["noise_trace"] > 0


def test_frobenius_ordering_with_correlated_gradients():
    """Equal traces; ‖Σ_iso‖_F ≤ ‖Σ_diag‖_F ≤ ‖Σ_full‖_F, strictly when coordinates correlate."""
    model, (x, y) = tiny(13), batch(32, 4, 14, correlated=True)
    gen = torch.Generator().manual_seed(15)
    st = {
        name: noise_statistics(make_structure(name, 0.1), model, ce, x, y, None, 0, gen)
        for name in ("isotropic", "diag", "full")
    }
    traces = [s["noise_trace"] for s in st.values()]
    assert max(traces) == pytest.approx(min(traces), rel=1e-9)
    fro = {k: s["noise_fro"] for k, s in st.items()}
    assert fro["isotropic"] < fro["diag"] < fro["full"]
    assert fro["full"] > 1.5 * fro["diag"]


# --------------------------------------------------------------------------- the interface
def test_registry_names_are_the_config_choices():
    """Every structure a RunConfig may name is registered, and nothing else."""
    from covnoise.config import NOISES

    assert tuple(STRUCTURES) == NOISES
    for name, cls in STRUCTURES.items():
        assert cls.name == name


@pytest.mark.parametrize("name", ["none", "isotropic", "diag", "full"])
def test_plan_draws_rows_then_weights(name):
    """plan() = the statistics rows (when due), then the loss weights, from one generator."""
    s = make_structure(name, 0.4, stats_rows=5, stats_every=2)
    state = s.init([])
    gen, replay = torch.Generator().manual_seed(21), torch.Generator().manual_seed(21)
    plan = s.plan(12, state, gen, dtype=torch.float64)
    due = s.needs_stats(state)
    rows = s.stats_rows(12, replay) if due else None
    # a fresh state for the replay: full's state hands out its block of weights row by row
    weights = s.loss_weights(12, s.init([]), replay, dtype=torch.float64)
    assert plan.record_stats == due == (name in ("isotropic", "diag"))
    assert (plan.rows is None) == (rows is None) and (rows is not None) == due  # 5 of 12 rows
    if rows is not None:
        assert torch.equal(plan.rows, rows)
    assert torch.equal(plan.weights, weights)
    assert torch.equal(gen.get_state(), replay.get_state())


def test_probe_weighted_gradient_is_the_weighted_sum():
    from covnoise.core.noise import Probe
    from covnoise.core.pergrad import DiagStatsRecorder

    model, (x, y) = tiny(16), batch(9, 4, 17)
    probe = Probe(model, ce, x, y)
    with pytest.raises(RuntimeError, match="recorded forward"):
        probe.weighted_grad(torch.ones(9, dtype=torch.float64))
    stats = probe.record(DiagStatsRecorder(model, None, 1 / 9, probe.params))
    assert stats.count == 9 and probe.size == 9
    assert probe.n_params == sum(p.numel() for p in model.parameters())
    w = torch.linspace(-1, 1, 9, dtype=torch.float64)
    got = torch.cat([g.flatten() for g in probe.weighted_grad(w)])
    want = (w[:, None] * flat_grads(model, x, y)).sum(0)
    assert torch.allclose(got, want, rtol=1e-10, atol=1e-12)


def test_noise_statistics_uses_the_structures_own_sampler(probe):
    """A structure defined outside the package plugs in: noise_statistics averages ξᵀHξ over
    the structure's draws and reports its tr Σ and ‖Σ‖_F unchanged."""
    from covnoise.core.noise import ProbeNoise, Structure

    model, x, y, H, G = probe
    params = list(model.parameters())
    P = sum(p.numel() for p in params)

    class RandomCoordinate(Structure):
        """ξ = ±√P·e_k for a random coordinate k: Σ = I."""

        name = "coordinate"

        def statistics(self, probe):
            def draw(gen):
                k = int(torch.randint(P, (1,), generator=gen))
                flat = torch.zeros(P, dtype=torch.float64)
                flat[k] = math.sqrt(P)
                return [
                    t.view_as(p)
                    for t, p in zip(flat.split([p.numel() for p in params]), params, strict=True)
                ]

            return ProbeNoise(trace=float(P), fro=math.sqrt(P), draw=draw)

    gen, replay = torch.Generator().manual_seed(18), torch.Generator().manual_seed(18)
    st = noise_statistics(
        RandomCoordinate(1.0), model, ce, x, y, dense_hvp(H, params), 50, gen, rel_se=None
    )
    ks = [int(torch.randint(P, (1,), generator=replay)) for _ in range(50)]
    vals = torch.tensor([P * float(H[k, k]) for k in ks], dtype=torch.float64)
    assert st["noise_trace"] == P and st["noise_fro"] == math.sqrt(P)
    assert st["noise_trace_hsigma"] == pytest.approx(float(vals.mean()), rel=1e-12)
    assert st["noise_trace_hsigma_se"] == pytest.approx(float(vals.std() / math.sqrt(50)), rel=1e-9)


def test_default_schedule_refreshes_less_often_at_small_batches():
    """The default schedule (128 rows every 4 steps) keeps its interval from B = 512 up and
    stretches it below (4·(512 // B)); any other schedule is taken as given. The refresh
    steps follow from the interval set at each refresh."""
    from covnoise.config import RunConfig
    from covnoise.core.noise.diagstats import stats_interval

    rows, every = RunConfig().stats_rows, RunConfig().stats_every
    assert (rows, every) == (128, 4)
    got = {B: stats_interval(B, rows, every) for B in (4096, 1024, 512, 300, 256, 128, 64)}
    assert got == {4096: 4, 1024: 4, 512: 4, 300: 4, 256: 8, 128: 16, 64: 32}
    assert stats_interval(128, None, 1) == 1 and stats_interval(128, 64, 4) == 4
    assert stats_interval(128, 128, 2) == 2 and stats_interval(None, rows, every) == 4
    params = [torch.zeros(300, 100), torch.zeros(100)]  # B · P ≥ 2²³ at B = 1024
    for B, want in ((128, [0, 16, 32]), (1024, [0, 4, 8, 12, 16, 20, 24, 28, 32])):
        s = make_structure("diag", 0.1, stats_rows=rows, stats_every=every)
        state, gen, refreshed = s.init(params), torch.Generator().manual_seed(0), []
        for step in range(34):
            stats = None
            if s.plan(B, state, gen).record_stats:
                refreshed.append(step)
                sq = [torch.ones_like(p) for p in params]
                stats = DiagStats(sq, [torch.zeros_like(p) for p in params], 128, B)
            _, state = s.update([torch.zeros_like(p) for p in params], state, stats, gen)
        assert refreshed == want


def test_default_schedule_refreshes_less_often_at_small_work():
    """B · P < 2²³: the default schedule refreshes every 8 steps (no less often than the
    batch rule says); the interval follows the refreshed statistics' P; each refresh is the
    fresh unbiased estimate, and the kept scale is the one of the latest refresh."""
    from covnoise.config import RunConfig
    from covnoise.core.noise.diagstats import SMALL_WORK, stats_interval

    rows, every = RunConfig().stats_rows, RunConfig().stats_every
    assert SMALL_WORK == 2**23
    assert stats_interval(512, rows, every, 10_000) == 8
    assert stats_interval(512, rows, every, 2**14) == 4  # 512 · 2¹⁴ = 2²³
    assert stats_interval(2048, rows, every, 4000) == 8
    assert stats_interval(1024, rows, every, 10_000) == 4
    assert stats_interval(128, rows, every, 100) == 16  # the batch rule is longer
    assert stats_interval(256, rows, every, 100) == 8
    assert stats_interval(512, rows, 2, 100) == 2  # other schedules as given
    assert stats_interval(512, None, 1, 100) == 1
    params = [torch.zeros(30, 10), torch.zeros(10)]  # P = 310, B · P < 2²³
    s = make_structure("diag", 0.1, stats_rows=rows, stats_every=every)
    state, gen, refreshed, scales = s.init(params), torch.Generator().manual_seed(0), [], []
    for step in range(34):
        stats = None
        if s.plan(1024, state, gen).record_stats:
            refreshed.append(step)
            sq = [torch.full_like(p, float(step + 1)) for p in params]
            stats = DiagStats(sq, [torch.zeros_like(p) for p in params], 128, 1024)
        _, state = s.update([torch.zeros_like(p) for p in params], state, stats, gen)
        scales.append(float(state.scale[0].flatten()[0]))
    assert refreshed == [0, 8, 16, 24, 32]
    # v̂ = sumsq · (B − 1)/(B(b − 1)) of the latest refresh, never a mix of refreshes
    for step, got in enumerate(scales):
        last = max(r for r in refreshed if r <= step)
        want = math.sqrt(0.1 * (last + 1) * 1023 / (1024 * 127))
        assert got == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("name", ["diag", "isotropic"])
def test_noisy_gradients_outlive_the_next_draw(name):
    """z is drawn into one buffer per run, overwritten every step; the noisy gradients
    handed out are new tensors, so a step's gradients stay as they were after the next step
    (and the inputs are never written)."""
    params = [torch.zeros(5, 3), torch.zeros(3)]
    grads = [torch.randn_like(p) for p in params]
    before = [g.clone() for g in grads]
    sq = [torch.rand_like(p) + 1 for p in params]
    stats = DiagStats(sq, [torch.zeros_like(p) for p in params], 8, 8)
    s = make_structure(name, 0.5, stats_rows=None, stats_every=2)
    gen, state = torch.Generator().manual_seed(2), s.init(params)
    first, state = s.update(grads, state, stats, gen)
    kept = [t.clone() for t in first]
    second, state = s.update(grads, state, None, gen)
    assert all(torch.equal(a, b) for a, b in zip(first, kept, strict=True))
    assert not any(torch.equal(a, b) for a, b in zip(first, second, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(grads, before, strict=True))


@pytest.mark.parametrize("name", ["diag", "isotropic"])
@pytest.mark.parametrize("n_out", [3, 3000])  # small: torch's normal_; large: the SFC64 draw
def test_inplace_update_writes_the_same_noisy_gradients_into_the_inputs(name, n_out):
    """With `inplace` (the training step's own .grad tensors) the noisy gradients are the
    inputs themselves, holding exactly what the out-of-place update returns for the same
    generator state; without it the inputs are left alone."""
    params = [torch.zeros(n_out, 8), torch.zeros(n_out)]
    grads = [torch.randn_like(p) for p in params]
    sq = [torch.rand_like(p) + 1 for p in params]
    stats = DiagStats(sq, [torch.zeros_like(p) for p in params], 8, 8)
    s = make_structure(name, 0.5, stats_rows=None, stats_every=2)
    copies = [g.clone() for g in grads]
    fresh, _ = s.update(copies, s.init(params), stats, torch.Generator().manual_seed(4))
    assert all(torch.equal(a, b) for a, b in zip(copies, grads, strict=True))
    into, _ = s.update(grads, s.init(params), stats, torch.Generator().manual_seed(4), inplace=True)
    assert all(a is b for a, b in zip(into, grads, strict=True))
    assert all(torch.equal(a, b) for a, b in zip(into, fresh, strict=True))
    assert not torch.equal(into[0], copies[0])


@pytest.mark.parametrize("inplace", [False, True])
def test_isotropic_noise_on_an_accelerator_keeps_sigma_on_the_device(inplace):
    """The accelerator branch (σ a 0-d tensor, never read back), run here on CPU tensors: the
    same g + σ z, into the inputs with `inplace`, as new tensors without."""
    from covnoise.core.noise.isotropic import add_scaled_on_device

    g = torch.Generator().manual_seed(6)
    grads = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    z = [torch.randn(4, 3, generator=g), torch.randn(3, generator=g)]
    sigma = torch.tensor(0.7, dtype=torch.float64)
    want = [a + 0.7 * b for a, b in zip(grads, z, strict=True)]
    before = [t.clone() for t in grads]
    got = add_scaled_on_device(grads, z, sigma, inplace)
    assert all(torch.allclose(a, b) for a, b in zip(got, want, strict=True))
    assert all((a is b) == inplace for a, b in zip(got, grads, strict=True))
    unchanged = all(torch.equal(a, b) for a, b in zip(grads, before, strict=True))
    assert unchanged == (not inplace)
