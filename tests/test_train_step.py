"""The training step's own SGD and the loop's deferred loss read-back.

covnoise.core.step.SGD must move the parameters exactly as torch.optim.SGD does (bit for
bit, with and without momentum and weight decay, with a changing learning rate), also in its
device-gated form (``step(ok)``), and a false ``ok`` must leave parameters and momentum
alone. A short run in a fresh interpreter must import neither scikit-learn nor torch._dynamo.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from covnoise.config import RunConfig
from covnoise.core.step import SGD


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 3))


def _train(opt_factory, steps: int, gated: bool = False, seed: int = 0) -> list[torch.Tensor]:
    model = _model(seed)
    params = list(model.parameters())
    opt = opt_factory(params)
    gen = torch.Generator().manual_seed(1)
    for k in range(steps):
        x = torch.randn(32, 6, generator=gen)
        y = torch.randint(0, 3, (32,), generator=gen)
        lr = 0.05 * (1 + 0.5 * (k % 3))
        if isinstance(opt, SGD):
            opt.lr = lr
        else:
            for group in opt.param_groups:
                group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        nn.functional.cross_entropy(model(x), y).backward()
        if gated:
            opt.step(torch.tensor(True))
        else:
            opt.step()
    return [p.detach().clone() for p in params]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
@pytest.mark.parametrize("weight_decay", [0.0, 5e-3])
@pytest.mark.parametrize("gated", [False, True])
def test_sgd_matches_torch_optim_bit_for_bit(momentum, weight_decay, gated):
    ref = _train(
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=momentum, weight_decay=weight_decay), 25
    )
    ours = _train(lambda p: SGD(p, lr=0.1, momentum=momentum, weight_decay=weight_decay), 25, gated)
    for a, b in zip(ref, ours, strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_gated_step_leaves_parameters_and_momentum_alone(momentum):
    model = _model()
    params = list(model.parameters())
    opt = SGD(params, lr=0.1, momentum=momentum, weight_decay=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step(torch.tensor(True))
    before = [p.detach().clone() for p in params]
    bufs = [b.clone() for b in opt.buffers] if momentum else None
    for p in params:
        p.grad = torch.full_like(p, float("nan"))
    opt.step(torch.tensor(False))
    for a, p in zip(before, params, strict=True):
        assert torch.equal(a, p.detach())
    if momentum:
        for a, b in zip(bufs, opt.buffers, strict=True):
            assert torch.equal(a, b)


def test_noisy_step_with_gated_sgd_keeps_last_good_parameters():
    """With the device-gated SGD (forced here on the CPU) a step with a non-finite gradient
    leaves the parameters alone and reports NaN losses, as with torch.optim.SGD."""
    from covnoise.core.noise import make_structure
    from covnoise.core.step import noisy_step

    model = _model()
    params = list(model.parameters())
    opt = SGD(params, lr=0.1)
    opt.on_device = True
    s = make_structure("none", 0.0)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    loss, state = noisy_step(model, params, opt, s, s.init(params), x, y, gen)
    assert isinstance(loss, torch.Tensor) and loss.dim() == 0  # left on the device
    assert torch.isfinite(loss)
    before = [p.detach().clone() for p in params]
    x_bad = x.clone()
    x_bad[0, 0] = float("inf")
    loss, _ = noisy_step(model, params, opt, s, state, x_bad, y, gen)
    assert not torch.isfinite(loss)
    for a, p in zip(before, params, strict=True):
        assert torch.equal(a, p.detach())


@pytest.mark.parametrize("noise", ["none", "full"])
def test_noisy_step_on_the_host_matches_the_weighted_loss_by_hand(noise):
    """On the CPU (ungated): plain SGD on ∇Σ_n w_n l_n with the plan's weights — 1/B for no
    noise (one fused mean cross-entropy), the centred random weights of full noise —
    computed here by hand with torch.optim.SGD; the mean loss comes back as a float; a
    non-finite loss leaves the parameters alone and comes back as it is."""
    from covnoise.core.losses import per_example_loss
    from covnoise.core.noise import make_structure
    from covnoise.core.step import noisy_step

    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    s = make_structure(noise, 0.5)
    model = _model()
    params = list(model.parameters())
    loss, _ = noisy_step(
        model,
        params,
        SGD(params, lr=0.1),
        s,
        s.init(params),
        x,
        y,
        torch.Generator().manual_seed(3),
    )
    ref = _model()
    ref_params = list(ref.parameters())
    weights = s.plan(16, s.init(ref_params), torch.Generator().manual_seed(3)).weights
    by_hand = per_example_loss(ref(x), y)
    (weights * by_hand).sum().backward()
    torch.optim.SGD(ref_params, lr=0.1).step()
    assert isinstance(loss, float)  # read on the host with the finiteness check
    assert loss == pytest.approx(by_hand.mean().item(), rel=1e-6)
    for a, b in zip(params, ref_params, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    before = [p.detach().clone() for p in params]
    x_bad = x.clone()
    x_bad[0, 0] = float("inf")
    gen = torch.Generator().manual_seed(4)
    loss, _ = noisy_step(model, params, SGD(params, lr=0.1), s, s.init(params), x_bad, y, gen)
    assert not math.isfinite(loss)
    for a, p in zip(before, params, strict=True):
        assert torch.equal(a, p.detach())


_FRESH_RUN = """
import json, sys
from covnoise.config import RunConfig
from covnoise.core.train import run
cfg = RunConfig(**json.loads(sys.argv[1]))
summary = run(cfg)
heavy = [m for m in ("sklearn", "scipy", "torch._dynamo") if m in sys.modules]
print(json.dumps({"status": summary["status"], "loaded": heavy}))
"""


def test_fresh_digits_run_imports_neither_sklearn_nor_dynamo():
    cfg = {"dataset": "digits", "model": "mlp", "steps": 3, "eval_every": 2, "probe_size": 16}
    cfg.update(
        {"lanczos_iters": 3, "noise_samples": 2, "momentum": 0.9, "device": "cpu", "noise": "full"}
    )
    RunConfig(**cfg).validate()
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_RUN, json.dumps(cfg)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == "finished"
    assert "sklearn" not in result["loaded"], result
    assert "torch._dynamo" not in result["loaded"], result


@pytest.mark.parametrize("gated", [False, True])
def test_a_finite_loss_with_a_non_finite_gradient_skips_the_update(gated):
    """The gradient is checked too: a step whose loss is finite but whose gradient is not
    (made infinite here by a hook on one parameter's gradient) leaves the parameters alone
    and returns NaN, so the loop stops on the last good state, on the host and gated."""
    from covnoise.core.noise import make_structure
    from covnoise.core.step import noisy_step

    model = _model()
    params = list(model.parameters())
    opt = SGD(params, lr=0.1)
    opt.on_device = gated
    s = make_structure("none", 0.0)
    x, y = torch.randn(8, 6), torch.randint(0, 3, (8,))
    handle = params[-1].register_hook(lambda g: g * math.inf)
    before = [p.detach().clone() for p in params]
    loss, _ = noisy_step(model, params, opt, s, s.init(params), x, y, torch.Generator())
    assert math.isnan(float(loss))
    for a, p in zip(before, params, strict=True):
        assert torch.equal(a, p.detach())
    handle.remove()
    loss, _ = noisy_step(model, params, opt, s, s.init(params), x, y, torch.Generator())
    assert math.isfinite(float(loss))
    assert not torch.equal(before[-1], params[-1].detach())


@pytest.mark.parametrize("record", [False, True])
def test_the_batch_backward_of_unequal_weights_against_per_example_gradients(record):
    """Unequal loss weights: the parameters' gradient is Σ_n w_n g_n, and recorded statistics
    are those of the unweighted per-example gradients g_n, both against torch.func's
    per-example gradients."""
    from torch.func import functional_call, grad, vmap

    from covnoise.core.losses import per_example_loss
    from covnoise.core.noise import StepPlan
    from covnoise.core.step import _batch_backward

    model = _model(3)
    params = list(model.parameters())
    names = [n for n, _ in model.named_parameters()]
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(12, 6, generator=gen), torch.randint(0, 3, (12,), generator=gen)
    w = torch.rand(12, generator=gen) + 0.1

    def loss_one(ps, xi, yi):
        out = functional_call(model, dict(zip(names, ps, strict=True)), (xi[None],))
        return per_example_loss(out, yi[None]).sum()

    per_example = vmap(grad(loss_one), in_dims=(None, 0, 0))(tuple(params), x, y)
    loss, stats = _batch_backward(model, params, StepPlan(weights=w, record_stats=record), x, y)
    with torch.no_grad():
        mean = float(per_example_loss(model(x), y).mean())
    assert float(loss) == pytest.approx(mean, rel=1e-6)
    for p, g in zip(params, per_example, strict=True):
        want = (w.view(-1, *[1] * (g.dim() - 1)) * g).sum(0)
        torch.testing.assert_close(p.grad, want, rtol=1e-5, atol=1e-7)
    if record:
        for g, sq, s in zip(per_example, stats.sumsq, stats.sum, strict=True):
            torch.testing.assert_close(sq, (g * g).sum(0), rtol=1e-5, atol=1e-7)
            torch.testing.assert_close(s, g.sum(0), rtol=1e-5, atol=1e-6)
    else:
        assert stats is None
