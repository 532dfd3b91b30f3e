"""The scale of the noise: a run injects and logs c·K with c = s(1/M − 1/L) (end to end),
each structure's injected covariance is c·K to within 1% (a whitened-variance z-test with
the power to see a 1% error, shown by injecting one), and the logged Tr(HΣ) has the
precision the noise package states, against a dense Hessian."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import covnoise.core.evaluation as evaluation_module
import covnoise.core.train as train_module
from covnoise.config import RunConfig
from covnoise.core.noise import (
    HSIGMA_MAX_DRAWS,
    HSIGMA_REL_SE,
    RECOMMENDED_STATS_EVERY,
    RECOMMENDED_STATS_ROWS,
    DiagNoise,
    IsotropicNoise,
    make_structure,
    noise_statistics,
    stats_interval,
)
from covnoise.core.noise.base import WEIGHT_ROWS, WeightRows
from covnoise.core.pergrad import per_example_grads
from covnoise.core.step import RECORDERS
from tests.helpers import ce
from tests.test_noise import batch, dense_hessian, dense_hvp, dense_sigma, flat_grads, tiny

pytestmark = pytest.mark.usefixtures("one_thread")


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


# --------------------------------------------------------------------------- (a) a run
RUN = dict(
    dataset="digits",
    model="mlp",
    width=16,
    depth=2,
    batch_size=1024,
    small_batch=32,
    lr=0.05,
    steps=1,
    eval_every=1,
    probe_size=64,
    lanczos_iters=4,
    noise_samples=2,
    val_fraction=0.0,
    stats_rows=None,
    stats_every=1,
    device="cpu",
)


def _capture_run(monkeypatch, config: RunConfig) -> tuple[list[dict], dict]:
    """Run `config`, keeping what the step-0 noise statistics and the first step saw."""
    seen: dict = {}
    real_stats, real_step = evaluation_module.noise_statistics, train_module.noisy_step

    def stats(structure, model, loss_fn, x, y, *args, **kw):
        if "probe" not in seen:
            seen["probe"] = (model, [p.detach().clone() for p in model.parameters()], x, y)
        return real_stats(structure, model, loss_fn, x, y, *args, **kw)

    def step(model, params, opt, structure, state, x, y, generator):
        replay = torch.Generator(device=generator.device)
        replay.set_state(generator.get_state())
        before = [p.detach().clone() for p in params]
        out = real_step(model, params, opt, structure, state, x, y, generator)
        grads = [p.grad.detach().clone() for p in params]
        seen.setdefault("step", (model, before, x, y, replay, grads, out[1]))
        return out

    monkeypatch.setattr(evaluation_module, "noise_statistics", stats)
    monkeypatch.setattr(train_module, "noisy_step", step)
    events: list[dict] = []
    train_module.run(config, emit=events.append)
    return events, seen


def _grads_at(model: nn.Module, params: list[torch.Tensor], x, y) -> torch.Tensor:
    """Per-example gradients (B×P, float64) of `model` at the parameter values `params`."""
    with torch.no_grad():
        saved = [p.detach().clone() for p in model.parameters()]
        for p, v in zip(model.parameters(), params, strict=True):
            p.copy_(v)
    try:
        G = per_example_grads(model, ce, x, y)
    finally:
        with torch.no_grad():
            for p, v in zip(model.parameters(), saved, strict=True):
                p.copy_(v)
    return torch.cat([g.flatten(1) for g in G], 1).double()


def _injected(name: str, c: float, G: torch.Tensor, replay: torch.Generator) -> torch.Tensor:
    """The ξ the first step must inject, replayed from its noise generator: full draws z
    (WEIGHT_ROWS × B) in its plan and takes row 0; diag/isotropic (statistics on the whole
    batch) draw z (P) in their update."""
    B, P = G.shape
    if name == "full":
        z = torch.randn(WEIGHT_ROWS, B, generator=replay).double()[0]  # row 0 of a block
        return ((z - z.mean()) * math.sqrt(c / B)) @ G
    v = G.var(0, unbiased=False)
    var = c * v if name == "diag" else (c * v.sum() / P).expand(P)
    return var.sqrt() * torch.randn(P, generator=replay).double()


@pytest.mark.parametrize("name", ["isotropic", "diag", "full"])
def test_a_run_injects_and_logs_c_times_K(monkeypatch, name):
    """M = 32, L = 1024, s = 1: c = 1/32 − 1/1024. At step 0 the logged tr Σ and ‖Σ‖_F are
    c·K of the probe's per-example gradients (torch.func), and the first step's gradient is
    ḡ + ξ with ξ the structure's draw at scale c (replayed from the run's noise generator).
    Injecting or logging s instead of c (32× here) fails both."""
    config = RunConfig(noise=name, **RUN)
    c = 1.0 * (1 / 32 - 1 / 1024)
    assert config.noise_c == pytest.approx(c, rel=1e-12)
    events, seen = _capture_run(monkeypatch, config)
    m0 = next(e for e in events if e["event"] == "metric" and e["step"] == 0)["metrics"]
    model, params, x, y = seen["probe"]
    sigma = dense_sigma(name, c, _grads_at(model, params, x, y))
    assert m0["noise_trace"] == pytest.approx(float(sigma.trace()), rel=1e-4)
    assert m0["noise_fro"] == pytest.approx(float(torch.linalg.matrix_norm(sigma)), rel=1e-4)

    model, before, x, y, replay, grads, state = seen["step"]
    G = _grads_at(model, before, x, y)
    mean = (torch.full((len(x),), 1.0 / len(x)).double()[:, None] * G).sum(0)
    xi = _flat(grads).double() - mean
    want = _injected(name, c, G, replay)
    assert torch.allclose(xi, want, rtol=1e-3, atol=1e-4 * float(want.abs().max()))
    if name != "full":  # the kept scale is √(c·v) (√(c·tr C/P)) of the whole batch
        v = G.var(0, unbiased=False)
        var = c * v if name == "diag" else c * v.sum() / v.numel()
        scale = state.scale  # per parameter (diag) or 0-d (isotropic)
        scale = torch.cat([t.flatten() for t in scale]) if name == "diag" else scale
        assert torch.allclose(scale.double().pow(2), var.expand_as(v), rtol=1e-3)


# --------------------------------------------------------------------------- (b) 1% scale
def _scale_problem():
    """A tanh MLP (P = 212) on a batch of 256, so that 128 statistics rows are a sub-batch."""
    torch.manual_seed(21)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 4)).double()
    g = torch.Generator().manual_seed(22)
    x = torch.randn(256, 8, generator=g, dtype=torch.float64)
    return model, x, torch.randint(0, 4, (256,), generator=g)


def _draws(name, c, model, x, y, S, rows, every, seed) -> torch.Tensor:
    """S draws of ξ through the structure's API: full by the backward of its weighted loss
    (batched over the drawn weights), diag/isotropic by update() with the statistics the step
    records (DiagStats, TraceStats) on the planned rows whenever the schedule asks for them."""
    B, params = len(x), list(model.parameters())
    s = make_structure(name, c, stats_rows=rows, stats_every=every)
    gen, state = torch.Generator().manual_seed(seed), s.init(params)
    if name == "full":
        W = torch.stack(
            [s.loss_weights(B, state, gen, dtype=torch.float64) - 1.0 / B for _ in range(S)]
        )
        out = []
        for chunk in W.split(1000):
            gs = torch.autograd.grad(
                ce(model(x), y), params, grad_outputs=chunk, is_grads_batched=True
            )
            out.append(torch.cat([g.flatten(1) for g in gs], 1))
        return torch.cat(out)
    zeros, out, cached = [torch.zeros_like(p) for p in params], [], None
    for _ in range(S):
        plan = s.plan(B, state, gen)
        stats = None
        if plan.record_stats:
            whole = plan.rows is None or len(plan.rows) == B
            if not (whole and cached is not None):
                with RECORDERS[plan.stats_kind](model, plan.rows, 1.0 / B, params) as rec:
                    torch.autograd.grad(ce(model(x), y).mean(), params)
                cached = rec.result()
            stats = cached
        noisy, state = s.update(zeros, state, stats, gen)
        out.append(_flat(noisy))
    return torch.stack(out)


def _whitened_z(xi: torch.Tensor, sigma: torch.Tensor, block: int) -> tuple[float, float]:
    """(z, SE) of the mean whitened variance T = ξᵀΣ⁺ξ / rank Σ (E[T] = 1 exactly when
    Cov ξ = Σ; a covariance (1 + ε)Σ gives 1 + ε). The standard error comes from the means
    of blocks of consecutive draws (draws that share one statistics refresh are correlated)."""
    lam, Q = torch.linalg.eigh(sigma)
    keep = lam > 1e-10 * lam.max()
    T = ((xi @ Q[:, keep]) / lam[keep].sqrt()).pow(2).mean(1)
    means = T[: len(T) // block * block].view(-1, block).mean(1)
    se = float(means.std() / math.sqrt(len(means)))
    return float(means.mean() - 1) / se, se


def _one_percent_more(monkeypatch, name: str) -> None:
    """Make the structure inject 1.01 × its covariance (ξ × √1.01)."""
    f = math.sqrt(1.01)
    if name == "full":  # √(c/B)(z − z̄) with c → 1.01 c
        real = WeightRows.next
        monkeypatch.setattr(
            WeightRows, "next", lambda self, n, c, *a, **k: real(self, n, c * f * f, *a, **k)
        )
        return
    cls = DiagNoise if name == "diag" else IsotropicNoise
    real_scale = cls._scale_from

    def scaled(self, stats):  # diag: one tensor per parameter; isotropic: 0-d
        scale = real_scale(self, stats)
        return torch._foreach_mul(scale, f) if isinstance(scale, list) else scale.mul_(f)

    monkeypatch.setattr(cls, "_scale_from", scaled)


@pytest.mark.parametrize(
    "name,rows,every,S",
    [
        ("full", None, 1, 6000),
        ("diag", None, 1, 6000),
        ("isotropic", None, 1, 6000),
        # the default schedule refreshes every 8 steps at B = 256: twice the draws for the
        # same number of refreshes
        ("diag", RECOMMENDED_STATS_ROWS, RECOMMENDED_STATS_EVERY, 12000),
        ("isotropic", RECOMMENDED_STATS_ROWS, RECOMMENDED_STATS_EVERY, 12000),
    ],
)
def test_injected_covariance_scale_within_one_percent(monkeypatch, name, rows, every, S):
    """|z| < 3.5 for the mean whitened variance of S draws against c·K (exact statistics,
    and the run default: 128 rows refreshed every 4 steps). S is chosen so that a 1% error
    of the covariance is more than 5 standard errors, and injecting one (ξ × √1.01) is
    caught: z > 5 (the entrywise max-|z| test only sees about 6%)."""
    model, x, y = _scale_problem()
    c = 1 / 32 - 1 / 256
    sigma = dense_sigma(name, c, flat_grads(model, x, y))
    xi = _draws(name, c, model, x, y, S, rows, every, seed=23)
    # blocks of draws that share one refresh (the default schedule refreshes every 8 steps
    # at B = 256: covnoise.core.noise.stats_interval)
    block = max(4, stats_interval(len(x), rows, every))
    z, se = _whitened_z(xi, sigma, block=block)
    assert abs(z) < 3.5, z
    assert 0.01 / se > 5, se  # a 1% error is more than 5 standard errors
    _one_percent_more(monkeypatch, name)
    wrong, _ = _whitened_z(_draws(name, c, model, x, y, S, rows, every, seed=24), sigma, block)
    assert wrong > 5, wrong


# --------------------------------------------------------------------------- Tr(HΣ)
def _precision_problem(kind: str):
    """softmax regression (PSD Hessian, per-draw spread ≈ 0.35: the 5% target is reached)
    or a tanh MLP (spread ≈ 0.7: the 128-draw cap is reached)."""
    if kind == "linear":
        torch.manual_seed(0)
        model = nn.Linear(10, 3).double()
        x, y = batch(64, 10, 1)
        return model, x, y
    model, (x, y) = tiny(2, d_in=8, hidden=12), batch(64, 8, 3)
    return model, x, y


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("name", ["isotropic", "diag", "full"])
def test_trace_h_sigma_has_the_stated_precision(kind, name):
    """150 evaluations with the default rule (blocks of 8 draws until SE ≤ 5% of |mean|, at
    most 128) against the dense Tr(HΣ): a run that stops early meets the 5% target; mean ±
    2 SE covers the exact value ≥ 86% of the time (≈ 93–95% expected); the mean is unbiased
    within 4 standard errors; the relative rms error is within 1.3× of the stated
    precision (5%, or spread/√128 at the cap) and the logged SE is honest (within 30%)."""
    model, x, y = _precision_problem(kind)
    params = list(model.parameters())
    H = dense_hessian(model, x, y)
    sigma = dense_sigma(name, 0.25, flat_grads(model, x, y))
    exact = float((H @ sigma).trace())
    spread = math.sqrt(2 * float((H @ sigma @ H @ sigma).trace())) / exact
    s, gen, hvp = (
        make_structure(name, 0.25),
        torch.Generator().manual_seed(31),
        dense_hvp(H, params),
    )
    rows = []
    for _ in range(150):
        st = noise_statistics(s, model, ce, x, y, hvp, 8, gen)
        rows.append(
            (st["noise_trace_hsigma"], st["noise_trace_hsigma_se"], st["noise_trace_hsigma_draws"])
        )
    est, se, draws = (torch.tensor(col, dtype=torch.float64) for col in zip(*rows, strict=True))
    assert bool(((draws % 8 == 0) & (draws >= 8) & (draws <= HSIGMA_MAX_DRAWS)).all())
    early = draws < HSIGMA_MAX_DRAWS
    assert bool((se[early] <= HSIGMA_REL_SE * est[early].abs()).all())
    if kind == "linear":  # the target is within reach: nearly every evaluation stops early
        assert float(early.double().mean()) > 0.8
    covered = float(((est - exact).abs() <= 2 * se).double().mean())
    assert covered >= 0.86, covered
    assert abs(float(est.mean()) - exact) < 4 * float(est.std()) / math.sqrt(len(est))
    rms = float(((est / exact - 1) ** 2).mean().sqrt())
    stated = max(HSIGMA_REL_SE, spread / math.sqrt(HSIGMA_MAX_DRAWS))
    assert rms < 1.3 * stated, (rms, stated, spread)
    assert float((se / exact).pow(2).mean().sqrt()) == pytest.approx(rms, rel=0.3)
