"""The true-Fisher noise source (source "fisher"): labels drawn from the model's predictive
distribution, a training step whose noise has covariance c·K of the sampled-label
per-example gradients (and whose gradient stays at the true labels), its cost, and the
logged statistics, against torch.func per-example references."""

from __future__ import annotations

import math

import pytest
import torch
from scipy.stats import chi2

import covnoise.core.losses as losses_module
from covnoise.core.losses import fisher_losses, per_example_loss, sample_labels
from covnoise.core.noise import make_structure, noise_statistics
from covnoise.core.noise.base import WEIGHT_ROWS
from covnoise.core.step import noisy_step
from tests.helpers import ce
from tests.test_noise import (
    batch,
    cov_z_scores,
    dense_hessian,
    dense_hvp,
    dense_sigma,
    flat_grads,
    tiny,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def step_mean(G: torch.Tensor) -> torch.Tensor:
    """The clean gradient as a step forms it: per-example gradients weighted by the plan's
    float32 1/B."""
    B = G.shape[0]
    return (torch.full((B,), 1.0 / B).double()[:, None] * G).sum(0)


# --------------------------------------------------------------------------- the labels
def _chi_square(labels: torch.Tensor, probs: torch.Tensor) -> tuple[float, int]:
    """Pearson χ² of the class counts of each row of `labels` (R×N draws) against `probs`
    (R×K), over the classes of non-zero probability, and its degrees of freedom."""
    n = labels.shape[1]
    counts = torch.stack([(labels == k).sum(1) for k in range(probs.shape[1])], 1).double()
    expected = probs * n
    live = probs > 0
    stat = float((((counts - expected) ** 2)[live] / expected[live]).sum())
    return stat, int((live.sum(1) - 1).sum())


def test_sampled_labels_follow_the_predictive_distribution():
    """20 000 labels for each of five rows of logits (uniform, skewed, confident, one class
    impossible): Pearson χ² against softmax(logits) with p > 1e-3 (a 0.1% false-alarm
    tolerance); the same test rejects labels drawn at temperature 1/1.1 (p < 1e-6); a class
    of zero probability is never drawn; the draw is reproducible from the generator."""
    logits = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],
            [2.0, 0.0, -1.0, 0.5],
            [-1.0, 3.0, 0.5, 0.0],
            [6.0, 0.0, 0.0, 1.0],
            [1.0, float("-inf"), 0.0, 2.0],
        ]
    )
    R, n = logits.shape[0], 20_000
    probs = torch.softmax(logits.double(), 1)
    gen = torch.Generator().manual_seed(0)
    labels = sample_labels(logits.repeat_interleave(n, 0), gen).view(R, n)
    assert labels.dtype == torch.long and int(labels.min()) >= 0 and int(labels.max()) <= 3
    assert not bool((labels[4] == 1).any())  # probability zero
    stat, df = _chi_square(labels, probs)
    assert chi2.sf(stat, df) > 1e-3, (stat, df)
    hot = sample_labels((1.1 * logits).repeat_interleave(n, 0), gen).view(R, n)
    stat_hot, _ = _chi_square(hot, probs)
    assert chi2.sf(stat_hot, df) < 1e-6, stat_hot
    again = sample_labels(logits.repeat_interleave(n, 0), torch.Generator().manual_seed(0))
    assert torch.equal(again.view(R, n), labels)


# --------------------------------------------------------------------------- the step
def _fix_labels(monkeypatch, labels: torch.Tensor) -> None:
    """Every step samples the same labels: the step's sampler returns `labels`."""
    monkeypatch.setattr(losses_module, "sample_labels", lambda logits, generator, **kw: labels)


def _replay_labels(model, x, generator) -> torch.Tensor:
    """The labels a fisher step draws: from the log-softmax of its forward."""
    with torch.no_grad():
        return sample_labels(torch.log_softmax(model(x), -1), generator, log_probs=True)


def step_draws(name, c, model, x, y, S, stats_rows=None, seed=0) -> torch.Tensor:
    """S draws of ξ = (gradient a fisher noisy_step leaves in .grad) − (the clean gradient at
    the true labels), at a fixed model (the optimiser's learning rate is zero)."""
    params = list(model.parameters())
    every = 1 if stats_rows else S + 1
    s = make_structure(name, c, stats_rows=stats_rows, stats_every=every, source="fisher")
    opt = torch.optim.SGD(params, lr=0.0)
    state, gen = s.init(params), torch.Generator().manual_seed(seed)
    clean = flat(torch.autograd.grad(ce(model(x), y).mean(), params))
    out = torch.empty(S, clean.numel(), dtype=clean.dtype)
    for i in range(S):
        _, state = noisy_step(model, params, opt, s, state, x, y, gen)
        out[i] = flat(p.grad for p in params) - clean
    assert state.step == S
    return out


@pytest.mark.parametrize(
    "name,stats_rows", [("full", None), ("diag", None), ("isotropic", None), ("diag", 3)]
)
def test_fisher_noise_covariance_matches_target(monkeypatch, name, stats_rows):
    """4000 steps at a fixed model and batch with the same sampled labels ŷ: the injected ξ
    has mean zero (the gradient trained on is at the true labels) and covariance c·K of the
    per-example gradients at ŷ (torch.func, K by covnoise.theory): every entry |z| < 5,
    trace |z| < 4. The same tests reject c·K built at the true labels."""
    model, (x, y) = tiny(0), batch(12, 4, 1)
    c, S = 0.3, 4000
    with torch.no_grad():
        y_hat = sample_labels(model(x), torch.Generator().manual_seed(3))
    assert not torch.equal(y_hat, y)
    _fix_labels(monkeypatch, y_hat)
    xi = step_draws(name, c, model, x, y, S, stats_rows, seed=4)
    sigma = dense_sigma(name, c, flat_grads(model, x, y_hat))
    mean_z = xi.mean(0) / (xi.std(0) / math.sqrt(S))
    assert mean_z.abs().max() < 5
    z = cov_z_scores(xi, sigma)
    assert z.abs().max() < 5, (z.abs().max(), z.abs().argmax())
    sq = xi.pow(2).sum(1)
    trace_z = (sq.mean() - sigma.trace()) / (sq.std() / math.sqrt(S))
    assert abs(float(trace_z)) < 4, float(trace_z)
    wrong = dense_sigma(name, c, flat_grads(model, x, y))
    wrong_trace_z = (sq.mean() - wrong.trace()) / (sq.std() / math.sqrt(S))
    assert cov_z_scores(xi, wrong).abs().max() > 10 or abs(float(wrong_trace_z)) > 10


def test_full_fisher_step_is_the_planned_weighted_backward():
    """One fisher full step: ∇ = ḡ(y) + Σ_n u_n ∇l(x_n, ŷ_n), with u = √(c/B)(z − z̄) and then
    ŷ replayed from the same generator (z first, in the plan's default float32, labels after
    the forward)."""
    model, (x, y) = tiny(5), batch(10, 4, 6)
    params, B, c = list(model.parameters()), 10, 0.4
    s = make_structure("full", c, source="fisher")
    gen, replay = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    noisy_step(model, params, torch.optim.SGD(params, lr=0.0), s, s.init(params), x, y, gen)
    z = torch.randn(WEIGHT_ROWS, B, generator=replay)  # the weights of 64 steps at once
    u = ((z - z.mean(1, keepdim=True)) * math.sqrt(c / B)).double()[0]
    y_hat = _replay_labels(model, x, replay)
    want = step_mean(flat_grads(model, x, y)) + (u[:, None] * flat_grads(model, x, y_hat)).sum(0)
    assert torch.allclose(flat(p.grad for p in params), want, rtol=1e-10, atol=1e-12)
    assert torch.equal(gen.get_state(), replay.get_state())


@pytest.mark.parametrize("name", ["diag", "isotropic"])
def test_diag_fisher_step_records_the_sampled_label_statistics(name):
    """One fisher diag/isotropic step on a sub-batch: rows, then labels for the batch, then
    z, all from the noise generator; v̂ is the unbiased sub-batch variance of the gradients
    at ŷ on those rows, and ξ = √(c·v̂) ⊙ z (isotropic: √(c·Σv̂/P) z)."""
    model, (x, y) = tiny(8), batch(10, 4, 9)
    params, B, b, c = list(model.parameters()), 10, 4, 0.6
    s = make_structure(name, c, stats_rows=b, stats_every=3, source="fisher")
    gen, replay = torch.Generator().manual_seed(10), torch.Generator().manual_seed(10)
    _, state = noisy_step(
        model, params, torch.optim.SGD(params, lr=0.0), s, s.init(params), x, y, gen
    )
    rows = torch.randperm(B, generator=replay)[:b].sort().values
    y_hat = _replay_labels(model, x, replay)
    G = flat_grads(model, x[rows], y_hat[rows])
    v = G.var(0, unbiased=True) * (B - 1) / B
    P = v.numel()
    z = torch.randn(P, generator=replay, dtype=torch.float64)
    var = c * v if name == "diag" else (c * v.sum() / P).expand(P)
    scale = flat(state.scale) if name == "diag" else state.scale  # per parameter / 0-d
    assert torch.allclose(scale.pow(2), var, rtol=1e-9, atol=1e-12 * float(var.max()))
    got = flat(p.grad for p in params) - step_mean(flat_grads(model, x, y))
    assert torch.allclose(got, scale * z, rtol=1e-9, atol=1e-13)
    assert state.refreshes == 1 and torch.equal(gen.get_state(), replay.get_state())


class _Counter:
    """Forward passes of a model and backward passes reaching its logits."""

    def __init__(self, model):
        self.forward = self.backward = 0
        model.register_forward_hook(self._hook)

    def _hook(self, module, inputs, output):
        self.forward += 1
        output.register_hook(self._count_backward)

    def _count_backward(self, grad):
        self.backward += 1


@pytest.mark.parametrize(
    "name,source,every,want",
    [
        ("full", "fisher", 1, [(1, 1)] * 4),
        ("full", "batch", 1, [(1, 1)] * 4),
        ("diag", "fisher", 2, [(1, 2), (1, 1), (1, 2), (1, 1)]),
        ("isotropic", "fisher", 2, [(1, 2), (1, 1), (1, 2), (1, 1)]),
        ("diag", "batch", 2, [(1, 1)] * 4),
    ],
)
def test_step_cost(name, source, every, want):
    """Per step, (forward passes, backward passes): fisher full is one of each, like batch
    full; fisher diag/isotropic add one backward only in the steps that refresh statistics."""
    model, (x, y) = tiny(11), batch(16, 4, 12)
    params = list(model.parameters())
    s = make_structure(name, 0.2, stats_rows=8, stats_every=every, source=source)
    opt, state = torch.optim.SGD(params, lr=0.01), s.init(params)
    gen, counter = torch.Generator().manual_seed(13), _Counter(model)
    seen = []
    for _ in range(4):
        before = (counter.forward, counter.backward)
        _, state = noisy_step(model, params, opt, s, state, x, y, gen)
        seen.append((counter.forward - before[0], counter.backward - before[1]))
    assert seen == want


def test_fisher_steps_are_reproducible_from_the_seed():
    """Same seed: the same parameters after a few fisher steps; another seed: different."""

    def train(seed):
        model, (x, y) = tiny(14), batch(16, 4, 15)
        params = list(model.parameters())
        opt = torch.optim.SGD(params, lr=0.1)
        out = []
        for name in ("full", "diag"):
            s = make_structure(name, 0.2, stats_rows=8, stats_every=2, source="fisher")
            state, gen = s.init(params), torch.Generator().manual_seed(seed)
            for _ in range(3):
                _, state = noisy_step(model, params, opt, s, state, x, y, gen)
            out.append(flat(p.detach() for p in params))
        return torch.cat(out)

    assert torch.equal(train(0), train(0))
    assert not torch.allclose(train(0), train(1))


def test_source_is_validated_and_recorded():
    with pytest.raises(ValueError, match="batch, fisher"):
        make_structure("diag", 0.1, source="empirical")
    s = make_structure("full", 0.1, source="fisher")
    assert s.source == "fisher" and s.describe()["source"] == "fisher"
    assert make_structure("full", 0.1).source == "batch"
    plan = s.plan(6, s.init([]), torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(plan.weights, torch.full((6,), 1 / 6, dtype=torch.float64))
    assert plan.source == "fisher" and abs(float(plan.label_weights.sum())) < 1e-12


# --------------------------------------------------------------------------- statistics
@pytest.mark.parametrize("name", ["isotropic", "diag", "full"])
def test_fisher_noise_statistics_follow_the_source(name):
    """Logged tr Σ and ‖Σ‖_F of a fisher structure are those of c·K at the labels the probe
    drew from the model's predictions (replayed from the generator, torch.func reference),
    and Tr(HΣ) is within 4 standard errors of the dense Tr(HΣ_F)."""
    model, (x, y) = tiny(9, d_in=3, hidden=4), batch(16, 3, 10)
    params, c, n = list(model.parameters()), 0.25, 2000
    H = dense_hessian(model, x, y)
    gen, replay = torch.Generator().manual_seed(16), torch.Generator().manual_seed(16)
    s = make_structure(name, c, source="fisher")
    st = noise_statistics(s, model, ce, x, y, dense_hvp(H, params), n, gen, rel_se=None)
    with torch.no_grad():
        y_hat = sample_labels(model(x), replay)
    assert not torch.equal(y_hat, y)
    sigma = dense_sigma(name, c, flat_grads(model, x, y_hat))
    assert st["noise_trace"] == pytest.approx(float(sigma.trace()), rel=1e-8)
    assert st["noise_fro"] == pytest.approx(float(torch.linalg.matrix_norm(sigma)), rel=1e-8)
    exact = float((H @ sigma).trace())
    se = math.sqrt(2 * float((H @ sigma @ H @ sigma).trace()) / n)
    assert abs(st["noise_trace_hsigma"] - exact) < 4 * se
    batch_trace = float(dense_sigma(name, c, flat_grads(model, x, y)).trace())
    assert abs(st["noise_trace"] - batch_trace) > 0.05 * batch_trace


def test_fisher_losses_share_one_log_softmax():
    """The loss at the labels equals per_example_loss bit for bit; the loss at the drawn
    labels is the cross-entropy at the labels `sample_labels` draws from log-probabilities
    (replayed), which are the labels it draws from the logits up to float rounding."""
    g = torch.Generator().manual_seed(17)
    logits = torch.randn(500, 6, generator=g, dtype=torch.float64) * 3
    y = torch.randint(0, 6, (500,), generator=g)
    gen, replay = torch.Generator().manual_seed(18), torch.Generator().manual_seed(18)
    at_y, at_hat = fisher_losses(logits, y, gen)
    assert torch.equal(at_y, per_example_loss(logits, y))
    y_hat = sample_labels(torch.log_softmax(logits, -1), replay, log_probs=True)
    assert torch.allclose(at_hat, per_example_loss(logits, y_hat), rtol=1e-12, atol=0)
    plain = sample_labels(logits, torch.Generator().manual_seed(18))
    assert torch.equal(plain, y_hat)
