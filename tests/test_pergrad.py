"""Hook-based per-example statistics against dense torch.func per-example gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from covnoise.core.noise import make_structure
from covnoise.core.pergrad import DiagStats, DiagStatsRecorder, GramRecorder, per_example_grads
from tests.helpers import ce

pytestmark = pytest.mark.usefixtures("one_thread")


class Chain(nn.Module):
    """Conv1d → Conv2d → Conv2d → Linear on a sequence → Linear, with varied conv options."""

    def __init__(self, bias: bool, conv_kw: dict):
        super().__init__()
        self.c1 = nn.Conv1d(2, 3, 3, stride=2, padding=1, bias=bias)
        self.c2 = nn.Conv2d(1, 4, 3, bias=not bias, **conv_kw)
        self.c3 = nn.Conv2d(4, 3, 2, stride=2, bias=bias)
        self.seq = nn.Linear(3, 4, bias=bias)  # applied to (B, T, 3): extra leading dim
        self.l1 = nn.Linear(3 * 4 + 4 * 4, 6, bias=bias)
        self.l2 = nn.Linear(6, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h1 = torch.tanh(self.c1(x[:, :16].reshape(-1, 2, 8)))  # (B, 3, 4)
        h1 = torch.tanh(self.seq(h1.transpose(1, 2))).flatten(1)  # (B, 4·4)
        h2 = torch.tanh(self.c2(x[:, 16:52].reshape(-1, 1, 6, 6)))
        h2 = F.adaptive_avg_pool2d(h2, 4)
        h2 = torch.tanh(self.c3(h2)).flatten(1)  # (B, 3·2·2)
        return self.l2(torch.relu(self.l1(torch.cat([h2, h1], 1))))


CONV_OPTIONS = [
    {"stride": 1, "padding": 1},
    {"stride": 2, "padding": 2, "dilation": 2},
    {"padding": "same", "padding_mode": "reflect"},
    {"padding": "same", "dilation": 2},
    {"padding": 1, "padding_mode": "circular", "stride": 2},
]


def _data(B: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, 52, generator=g), torch.randint(0, 3, (B,), generator=g)


def _close(got: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-5) -> bool:
    """Elementwise relative closeness, with the tensor's scale as the floor."""
    scale = ref.abs().max().clamp(min=1e-30)
    return bool(((got - ref).abs() <= rtol * (ref.abs() + scale)).all())


def test_reference_matches_single_example_autograd():
    torch.manual_seed(0)
    model = Chain(True, CONV_OPTIONS[0])
    x, y = _data(4)
    ref = per_example_grads(model, ce, x, y)
    for n in range(4):
        g = torch.autograd.grad(ce(model(x[n : n + 1]), y[n : n + 1]).sum(), model.parameters())
        for r, gn in zip(ref, g, strict=True):
            assert _close(r[n], gn)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("conv_kw", CONV_OPTIONS)
@pytest.mark.parametrize("subset", [False, True])
def test_diag_stats_match_reference(bias, conv_kw, subset):
    torch.manual_seed(1)
    model = Chain(bias, conv_kw)
    B = 10
    x, y = _data(B)
    gen = torch.Generator().manual_seed(2)
    full = make_structure("full", 0.5)
    w = full.loss_weights(B, full.init([]), gen)  # non-uniform, some of them negative
    assert not torch.allclose(w, torch.full_like(w, 1 / B))
    rows = torch.tensor([0, 3, 4, 7, 9]) if subset else None
    with DiagStatsRecorder(model, rows, w) as rec:
        (w * ce(model(x), y)).sum().backward()
    st = rec.result()
    ref = per_example_grads(model, ce, x, y)
    idx = rows if subset else torch.arange(B)
    assert st.count == len(idx) and st.batch_size == B
    assert len(st.sumsq) == len(ref) == len(list(model.parameters()))
    for g, sq, s in zip(ref, st.sumsq, st.sum, strict=True):
        g = g[idx]
        assert sq.shape == s.shape == g.shape[1:]
        assert _close(sq, (g * g).sum(0))
        assert _close(s, g.sum(0))


def test_variance_is_population_variance_on_all_rows():
    torch.manual_seed(3)
    model = Chain(True, CONV_OPTIONS[1])
    B = 12
    x, y = _data(B, seed=4)
    with DiagStatsRecorder(model, torch.arange(B), 1.0 / B) as rec:
        ce(model(x), y).mean().backward()
    ref = per_example_grads(model, ce, x, y)
    for v, g in zip(rec.result().variance(), ref, strict=True):
        assert (v >= 0).all()
        assert _close(v, g.double().var(0, unbiased=False).float(), rtol=1e-4)


def test_subbatch_variance_is_unbiased():
    """Mean of v̂ over random sub-batches vs the population variance, per coordinate and for
    the trace, in units of the Monte-Carlo standard error. With b = 4 of B = 16 a naive
    estimator (denominator b, or no (B−1)/B factor) is off by 20% / 7%, many SE."""
    torch.manual_seed(5)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    B, b, draws = 16, 4, 2000
    g = torch.Generator().manual_seed(6)
    x, y = torch.randn(B, 3, generator=g), torch.randint(0, 2, (B,), generator=g)
    pop = torch.cat(
        [t.double().var(0, unbiased=False).flatten() for t in per_example_grads(model, ce, x, y)]
    )
    est = []
    for _ in range(draws):
        rows = torch.randperm(B, generator=g)[:b]
        model.zero_grad(set_to_none=True)
        with DiagStatsRecorder(model, rows, 1.0 / B) as rec:
            ce(model(x), y).mean().backward()
        est.append(torch.cat([t.flatten() for t in rec.result().variance()]).double())
    est = torch.stack(est)
    se = est.std(0) / draws**0.5
    z = (est.mean(0) - pop) / se
    assert z.abs().max() < 4.5, z
    tr = est.sum(1)
    z_tr = (tr.mean() - pop.sum()) / (tr.std() / draws**0.5)
    assert abs(z_tr) < 4.0
    # the test has the power to see the bias of the naive (denominator b) estimator
    naive = est * (B * (b - 1) / ((B - 1) * b))
    assert abs((naive.sum(1).mean() - pop.sum()) / (tr.std() / draws**0.5)) > 6


@pytest.mark.parametrize("conv_kw", CONV_OPTIONS[:3])
@pytest.mark.parametrize("subset", [False, True])
def test_gram_matches_reference(conv_kw, subset):
    torch.manual_seed(7)
    model = Chain(True, conv_kw)
    B = 9
    x, y = _data(B, seed=8)
    w = torch.linspace(0.5, 1.5, B) / B
    rows = torch.tensor([1, 2, 5, 8]) if subset else None
    with GramRecorder(model, w, rows=rows) as rec:
        (w * ce(model(x), y)).sum().backward()
    G = torch.cat([g.flatten(1) for g in per_example_grads(model, ce, x, y)], 1).double()
    if subset:
        G = G[rows]
    gram = rec.result()
    assert gram.dtype == torch.float64
    assert _close(gram, G @ G.T, rtol=1e-5)


def test_gram_with_subset_of_params():
    torch.manual_seed(9)
    model = Chain(True, CONV_OPTIONS[0])
    params = [model.c2.weight, model.l1.bias, model.seq.weight]
    x, y = _data(6)
    with GramRecorder(model, 1 / 6, params) as rec:
        ce(model(x), y).mean().backward()
    ref = per_example_grads(model, ce, x, y, params)
    G = torch.cat([g.flatten(1) for g in ref], 1).double()
    assert _close(rec.result(), G @ G.T)


def test_hooks_removed_and_grads_unchanged():
    torch.manual_seed(10)
    model = Chain(True, CONV_OPTIONS[0])
    x, y = _data(8)
    ce(model(x), y).mean().backward()
    plain = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with DiagStatsRecorder(model, None, 1 / 8):
        ce(model(x), y).mean().backward()
    for p, g in zip(model.parameters(), plain, strict=True):
        assert torch.equal(p.grad, g)
    assert all(not m._forward_hooks for m in model.modules())


def test_clear_errors():
    conv = nn.Sequential(nn.Conv2d(2, 4, 3, groups=2))
    with pytest.raises(ValueError, match="groups"):
        DiagStatsRecorder(conv, None, 1.0)
    ln = nn.Sequential(nn.Linear(3, 3), nn.LayerNorm(3))
    with pytest.raises(TypeError, match="LayerNorm"):
        DiagStatsRecorder(ln, None, 1.0)
    lin = nn.Linear(3, 2)
    with pytest.raises(ValueError, match="non-zero"):
        DiagStatsRecorder(lin, None, torch.tensor([0.5, 0.0, 0.5]))
    with pytest.raises(ValueError, match="loss weights"):
        with DiagStatsRecorder(lin, None, torch.full((4,), 0.25)):
            lin(torch.randn(3, 3))


def test_chunked_layers_match_reference(monkeypatch):
    """Per-example gradients formed a few examples at a time (the memory bound for large
    layers) give the same statistics and Gram matrix."""
    from covnoise.core.pergrad import layers

    monkeypatch.setattr(layers, "_CHUNK_ELEMENTS", 300)
    torch.manual_seed(11)
    model = Chain(True, CONV_OPTIONS[1])
    B = 7
    x, y = _data(B, seed=12)
    with DiagStatsRecorder(model, None, 1 / B) as drec, GramRecorder(model, 1 / B) as grec:
        ce(model(x), y).mean().backward()
    ref = per_example_grads(model, ce, x, y)
    st = drec.result()
    for g, sq, s in zip(ref, st.sumsq, st.sum, strict=True):
        assert _close(sq, (g * g).sum(0)) and _close(s, g.sum(0))
    G = torch.cat([g.flatten(1) for g in ref], 1).double()
    assert _close(grec.result(), G @ G.T)


def test_rows_covering_the_batch_in_any_order():
    torch.manual_seed(13)
    model = Chain(True, CONV_OPTIONS[0])
    B = 6
    x, y = _data(B, seed=14)
    w = torch.linspace(0.5, 1.5, B) / B
    with DiagStatsRecorder(model, torch.tensor([3, 0, 5, 1, 4, 2]), w) as rec:
        (w * ce(model(x), y)).sum().backward()
    st = rec.result()
    assert st.count == B
    for g, sq in zip(per_example_grads(model, ce, x, y), st.sumsq, strict=True):
        assert _close(sq, (g * g).sum(0))


@pytest.mark.parametrize("conv_kw", CONV_OPTIONS[:2])
def test_backward_to_layers_records_another_loss_without_parameter_gradients(conv_kw):
    """recorder.backward(loss) on a loss other than the one trained on (a second label set, a
    sub-batch of rows) gives that loss's per-example statistics, forms no .grad, and keeps
    the graph for the training backward after it."""
    torch.manual_seed(3)
    model = Chain(True, conv_kw)
    B = 10
    x, y = _data(B, seed=4)
    other = (y + 1) % 3
    rows = torch.tensor([1, 4, 5, 8])
    with DiagStatsRecorder(model, rows, 1.0) as rec:
        logits = model(x)
        rec.backward(ce(logits[rows], other[rows]).sum())
        stats = rec.result()
    assert all(p.grad is None for p in model.parameters())
    ce(logits, y).mean().backward()  # the graph was kept; the hooks are gone
    assert all(p.grad is not None for p in model.parameters())
    G = per_example_grads(model, ce, x[rows], other[rows])
    for ref, sq, s in zip(G, stats.sumsq, stats.sum, strict=True):
        assert _close(sq, (ref * ref).sum(0)) and _close(s, ref.sum(0))


@pytest.mark.parametrize("conv_kw", CONV_OPTIONS[:3])
@pytest.mark.parametrize("how", ["backward", "accumulate", "grad", "grad_subset"])
def test_sums_from_the_parameter_gradient_match_reference(conv_kw, how):
    """Whole batch, equal weights: Σ_n g_n comes from the backward's own parameter gradient
    (an earlier .grad does not leak into it); parameters the backward leaves out fall back
    to the product from (a, δ)."""
    torch.manual_seed(15)
    model = Chain(True, conv_kw)
    B = 8
    x, y = _data(B, seed=16)
    params = list(model.parameters())
    if how == "accumulate":  # .grad already holds something the new backward adds to
        ce(model(x), (y + 1) % 3).mean().backward()
    with DiagStatsRecorder(model, None, torch.full((B,), 1.0 / B)) as rec:
        loss = ce(model(x), y).mean()
        if how in ("backward", "accumulate"):
            loss.backward()
        else:
            torch.autograd.grad(loss, params if how == "grad" else params[::2])
    st = rec.result()
    ref = per_example_grads(model, ce, x, y)
    for g, sq, s in zip(ref, st.sumsq, st.sum, strict=True):
        assert _close(sq, (g * g).sum(0)) and _close(s, g.sum(0))


class _CountMM(torch.utils._python_dispatch.TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.mm = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func in (torch.ops.aten.mm.default, torch.ops.aten.addmm.default):
            self.mm += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize(
    "rows,weights,extra",
    [
        (None, 1 / 16, 2),  # (δ²)ᵀ(a²) per linear weight; Σg from the gradient
        (None, "uniform", 2),  # the same with a tensor of equal weights
        (None, "unequal", 4),  # and δᵀa where the gradient is not w·Σg
        ([1, 4, 9], 1 / 16, 4),  # a sub-batch needs its own Σg
    ],
)
def test_exact_statistics_add_one_product_per_linear_layer(rows, weights, extra):
    """A plain forward and backward of a 2-layer MLP run 5 matrix products; the recorder
    adds one per linear weight when the parameter gradient gives Σ_n g_n, two otherwise."""
    torch.manual_seed(17)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    if weights == "uniform":
        weights = torch.full((16,), 1 / 16)
    elif weights == "unequal":
        weights = torch.linspace(0.5, 1.5, 16) / 16
    w = weights if isinstance(weights, torch.Tensor) else torch.full((16,), weights)
    with _CountMM() as plain:
        (w * ce(model(x), y)).sum().backward()
    rows_t = None if rows is None else torch.tensor(rows)
    with DiagStatsRecorder(model, rows_t, weights) as rec, _CountMM() as counted:
        (w * ce(model(x), y)).sum().backward()
    assert plain.mm == 5  # forward 2, backward 3 (no gradient for the input)
    assert counted.mm == plain.mm + extra
    st = rec.result()
    ref = per_example_grads(model, ce, x, y)
    idx = torch.arange(16) if rows is None else rows_t
    for g, sq, s in zip(ref, st.sumsq, st.sum, strict=True):
        assert _close(sq, (g[idx] ** 2).sum(0)) and _close(s, g[idx].sum(0))


@pytest.mark.parametrize("subset", [False, True])
def test_shared_uniform_weights_need_no_read_back(monkeypatch, subset):
    """`uniform_weights` hands out one tensor per (B, dtype, device) whose value a recorder
    knows without reading it back; the statistics equal those of the float weight 1/B. A
    tensor modified in place is checked like any other weights (and replaced)."""
    from covnoise.core.pergrad import recorder as recorder_module
    from covnoise.core.pergrad import uniform_weights

    torch.manual_seed(3)
    model, B = Chain(True, CONV_OPTIONS[0]), 12
    x, y = _data(B, seed=5)
    rows = torch.tensor([1, 4, 5, 9]) if subset else None
    w = uniform_weights(B)
    assert w is uniform_weights(B) and w is not uniform_weights(B, torch.float64)
    assert torch.equal(w, torch.full((B,), 1.0 / B))

    def stats(weights):
        model.zero_grad()
        with DiagStatsRecorder(model, rows, weights) as rec:
            (weights * ce(model(x), y)).sum().backward()
        return rec.result()

    real = recorder_module._nonzero_uniform
    calls = []
    monkeypatch.setattr(recorder_module, "_nonzero_uniform", lambda t: calls.append(1) or real(t))
    got = stats(w)
    assert not calls  # known: no read-back
    ref = stats(torch.full((B,), 1.0 / B))
    assert calls  # an ordinary tensor is checked
    for a, b in zip(got.sumsq + got.sum, ref.sumsq + ref.sum, strict=True):
        assert torch.equal(a, b)
    w.mul_(2.0)  # modified: no longer known, checked and then replaced
    calls.clear()
    stats(w)
    assert calls
    fresh = uniform_weights(B)
    assert fresh is not w and torch.equal(fresh, torch.full((B,), 1.0 / B))


@pytest.mark.parametrize("preset", [False, True])
def test_read_grads_takes_the_sums_from_the_fresh_gradients(preset):
    """read_grads: Σ_n g_n comes from the .grad of the block's one backward (fresh .grad
    fields), or from the hooks when a .grad was set on entry; both match torch.func."""
    torch.manual_seed(21)
    model = Chain(True, CONV_OPTIONS[0])
    B = 6
    x, y = _data(B, seed=22)
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0) if preset else None
    with DiagStatsRecorder(model, None, 1 / B, read_grads=True) as rec:
        (ce(model(x), y).sum() / B).backward()
    # fresh .grad fields: the sums were read on leaving the block (nothing left to compute)
    assert rec._read_grads == (not preset)
    assert not rec._pending
    st = rec.result()
    for g, sq, s, p in zip(
        per_example_grads(model, ce, x, y), st.sumsq, st.sum, model.parameters(), strict=True
    ):
        assert _close(sq, (g * g).sum(0)) and _close(s, g.sum(0))
        # the sums are not the .grad tensors themselves (nothing aliases the gradients)
        assert s.data_ptr() != p.grad.data_ptr()


def test_std_and_total_variance_agree_with_variance():
    """DiagStats.std(factor) = √(factor · variance) and total_variance = Σ variance, for a
    sub-batch (the (B − 1)/(B(b − 1)) scale) and with entries that round below zero
    (clamped to 0 in all three)."""
    g = torch.Generator().manual_seed(31)
    sq = [
        torch.rand(4, 3, generator=g, dtype=torch.float64) + 0.5,
        torch.zeros(3, dtype=torch.float64),
    ]
    sums = [
        torch.rand(4, 3, generator=g, dtype=torch.float64),
        torch.full((3,), 1e-9, dtype=torch.float64),
    ]
    st = DiagStats(sq, sums, 5, 12)
    v = st.variance()
    want = [(q - s * s / 5) * (11 / (12 * 4)) for q, s in zip(sq, sums, strict=True)]
    for got, w in zip(v, want, strict=True):
        assert torch.allclose(got, w.clamp_min(0), rtol=1e-12, atol=1e-15)
    assert (v[1] == 0).all()  # 0 − (1e-9)²/5 < 0: clamped
    for s, w in zip(st.std(factor=0.3), v, strict=True):
        assert torch.allclose(s, (0.3 * w).sqrt(), rtol=1e-12, atol=1e-15)
    total = st.total_variance()
    assert total.dtype == torch.float64
    assert float(total) == pytest.approx(float(sum(t.sum() for t in v)), rel=1e-12)


def _trace_reference(g: list[torch.Tensor], idx: torch.Tensor, B: int) -> torch.Tensor:
    """The unbiased estimate of tr C of the batch from the per-example gradients of the rows
    `idx`, in float64: Σ_i (B − 1)/(B(b − 1)) Σ_n (g_ni − ḡ_i)² (population variance when
    b = B)."""
    G = torch.cat([t[idx].double().flatten(1) for t in g], 1)
    b = len(idx)
    scale = 1.0 / b if b == B else (B - 1) / (B * (b - 1))
    return scale * ((G - G.mean(0)) ** 2).sum()


@pytest.mark.parametrize("conv_kw", CONV_OPTIONS[:3])
@pytest.mark.parametrize("weights", ["scalar", "uniform", "unequal"])
@pytest.mark.parametrize("subset", [False, True])
def test_trace_stats_match_reference(conv_kw, weights, subset):
    """TraceStats: Σ_n ‖g_n‖² per parameter and tr of the diag(C) estimate against torch.func
    (convolutions, a linear layer on a sequence and plain linear layers; whole batch and a
    sub-batch; one weight, the shared uniform weights and unequal weights); tr is also that
    of DiagStats on the same rows."""
    from covnoise.core.pergrad import TraceStatsRecorder, uniform_weights

    torch.manual_seed(41)
    model, B = Chain(True, conv_kw), 10
    x, y = _data(B, seed=42)
    w = {
        "scalar": 1.0 / B,
        "uniform": uniform_weights(B),
        "unequal": torch.linspace(0.5, 1.5, B) / B,
    }[weights]
    wt = w if isinstance(w, torch.Tensor) else torch.full((B,), w)
    rows = torch.tensor([0, 2, 3, 7, 8]) if subset else None
    got = {}
    for cls in (TraceStatsRecorder, DiagStatsRecorder):
        model.zero_grad(set_to_none=True)
        with cls(model, rows, w, read_grads=True) as rec:
            (wt * ce(model(x), y)).sum().backward()
        got[cls] = rec.result()
    st = got[TraceStatsRecorder]
    ref = per_example_grads(model, ce, x, y)
    idx = rows if subset else torch.arange(B)
    assert st.count == len(idx) and st.batch_size == B
    assert st.n_params == sum(p.numel() for p in model.parameters())
    for g, sq, s in zip(ref, st.sumsq, st.sum, strict=True):
        assert sq.dim() == 0 and sq.dtype == torch.float64
        assert _close(sq, (g[idx].double() ** 2).sum())
        assert _close(s, g[idx].sum(0))
    want = _trace_reference(ref, idx, B)
    assert _close(st.total_variance(), want, rtol=1e-4)
    assert _close(st.total_variance(), got[DiagStatsRecorder].total_variance(), rtol=1e-4)


@pytest.mark.parametrize("conv_kw", CONV_OPTIONS[:2])
def test_trace_stats_of_another_loss_from_the_layers(conv_kw):
    """recorder.backward(loss) (the true-Fisher source): tr C of that loss's per-example
    gradients, with no parameter gradient formed."""
    from covnoise.core.pergrad import TraceStatsRecorder

    torch.manual_seed(43)
    model, B = Chain(True, conv_kw), 9
    x, y = _data(B, seed=44)
    y2 = (y + 1) % 3
    rows = torch.tensor([1, 2, 5, 6])
    with TraceStatsRecorder(model, rows, 1.0) as rec:
        out = model(x)
        rec.backward(ce(out, y2)[rows].sum())
    assert all(p.grad is None for p in model.parameters())
    ref = per_example_grads(model, ce, x, y2)
    assert _close(rec.result().total_variance(), _trace_reference(ref, rows, B), rtol=1e-4)


@pytest.mark.parametrize("rows,extra", [(None, 0), ([1, 4, 9], 2)])
def test_trace_stats_add_no_product_where_the_gradient_gives_the_sums(rows, extra):
    """The trace needs no (δ²)ᵀ(a²): on the whole batch with equal weights the recorder adds
    no matrix product to a plain backward of a 2-layer MLP; a sub-batch adds its Σ_n g_n
    (one product per linear weight)."""
    from covnoise.core.pergrad import TraceStatsRecorder

    torch.manual_seed(45)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3))
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    with _CountMM() as plain:
        ce(model(x), y).mean().backward()
    rows_t = None if rows is None else torch.tensor(rows)
    model.zero_grad(set_to_none=True)
    with TraceStatsRecorder(model, rows_t, 1 / 16, read_grads=True) as rec, _CountMM() as counted:
        ce(model(x), y).mean().backward()
    assert counted.mm == plain.mm + extra
    idx = torch.arange(16) if rows is None else rows_t
    want = _trace_reference(per_example_grads(model, ce, x, y), idx, 16)
    assert _close(rec.result().total_variance(), want, rtol=1e-4)


@pytest.mark.parametrize(
    "name,kind,extra", [("isotropic", "trace", 0), ("diag", "diag", 2), ("none", None, 0)]
)
def test_the_step_records_what_the_structure_asks_for(name, kind, extra):
    """The plan names the statistics its structure needs and the step's backward records
    them: isotropic TraceStats with no matrix product beyond a plain backward (whole batch,
    equal weights), diag DiagStats with one (δ²)ᵀ(a²) per linear weight; the trace agrees
    with torch.func."""
    from covnoise.core.pergrad import DiagStats, TraceStats
    from covnoise.core.step import _batch_backward

    torch.manual_seed(47)
    model = nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3, bias=False))
    params = list(model.parameters())
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    s = make_structure(name, 0.1, stats_rows=None, stats_every=1)
    plan = s.plan(16, s.init(params), torch.Generator().manual_seed(0))
    assert plan.record_stats == (kind is not None)
    if kind is None:
        return
    assert plan.stats_kind == kind
    with _CountMM() as plain:
        ce(model(x), y).mean().backward()
    model.zero_grad(set_to_none=True)
    with _CountMM() as counted:
        _, stats = _batch_backward(model, params, plan, x, y)
    assert counted.mm == plain.mm + extra
    assert isinstance(stats, TraceStats if kind == "trace" else DiagStats)
    want = _trace_reference(per_example_grads(model, ce, x, y), torch.arange(16), 16)
    assert _close(stats.total_variance(), want, rtol=1e-4)
    assert stats.n_params == sum(p.numel() for p in params)
