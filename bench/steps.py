"""Step time of each noise structure divided by a plain step (same batch, model and device).

    python -m bench.steps                 # the table for the README
    python -m bench.steps --json          # the same as JSON
    python -m bench.steps --grid          # also diag at stats_rows × stats_every
    python -m bench.steps --device cuda   # on a GPU

Cases: the digits MLP (64→256→256→10) at B = 1024 and the 2-D CNN (conv 32, conv 64,
max-pool, linear 256, linear 10) at B = 512, built by covnoise.core.models. Every variant trains
its own copy of the same initial model with the real training step (covnoise.core.step.noisy_step)
on the same batches. After a warm-up, each round times one block of 4 steps (a multiple of
every stats_every used) of every variant in a fresh random order, so drifts of the machine's
load touch all variants alike. Ratios are step time / plain step time:
- paired: median over rounds of the ratio within the round,
- p25: ratio of the lower quartiles (least disturbed by other work on the machine).
Targets (docs/design.md): isotropic ≤ 1.3, diag ≤ 1.3, full ≤ 1.1 with the run defaults
(RunConfig.stats_rows, RunConfig.stats_every). "exact" rows estimate diag(C) on the whole
batch every step; "diag vmap" materialises per-example gradients with torch.func (a
reference, never the training path). "fisher" rows use the true-Fisher source (labels drawn
from the model's predictions; covnoise.core.step): full adds the sampled-label losses to the
same backward, diag and isotropic add one backward of the sampled-label loss in the steps
that refresh their statistics; they are timed in the same rounds as the others. The v̂
columns say how far one sub-batch estimate of v = diag(C) is from the whole-batch v
(E‖v̂ − v‖/‖v‖, E|Σv̂/Σv − 1|; for the batch source); v̂ is unbiased, so the injected
covariance is exactly c·K whatever the sub-batch (tests/test_noise.py, tests/test_fisher.py).
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import statistics
import time

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from bench.machine import describe_machine
from covnoise.config import RunConfig
from covnoise.core import build_model, make_structure, noisy_step, per_example_loss
from covnoise.core.pergrad import DiagStatsRecorder
from covnoise.data import load_dataset

TARGETS = {
    "isotropic": 1.3,
    "diag": 1.3,
    "full": 1.1,
    "isotropic fisher": 1.3,
    "diag fisher": 1.3,
    "full fisher": 1.1,
}
CASES = [("mlp", 1024, 60), ("cnn", 512, 20)]  # (model, batch, rounds)
BLOCK = 4


class _Runner:
    """A model copy with its optimiser and structure, stepping like the training loop."""

    def __init__(self, model: nn.Module, noise: str | None, c: float, rows, every, source, device):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(self.params, lr=1e-3)
        self.structure = (
            None
            if noise is None
            else make_structure(
                noise,
                0.0 if noise == "none" else c,
                stats_rows=rows,
                stats_every=every,
                source=source,
            )
        )
        self.state = None if noise is None else self.structure.init(self.params)
        self.gen = torch.Generator(device=device).manual_seed(0)
        self.c = c

    def step(self, x: Tensor, y: Tensor) -> None:
        if self.structure is None:
            _vmap_diag_step(self.model, self.params, self.opt, x, y, self.c, self.gen)
            return
        _, self.state = noisy_step(
            self.model, self.params, self.opt, self.structure, self.state, x, y, self.gen
        )


def _vmap_diag_step(model, params, opt, x, y, c, gen) -> None:
    """diag noise from materialised per-example gradients (the slow reference)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def loss_one(ps, xi, yi):
        out = functional_call(model, dict(zip(names, ps, strict=True)), (xi[None],))
        return per_example_loss(out, yi[None]).sum()

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(tuple(params), x, y)
    opt.zero_grad(set_to_none=True)
    for p, gi in zip(params, g, strict=True):
        noise = torch.randn(gi.shape[1:], generator=gen, device=gi.device)
        p.grad = gi.mean(0) + (c * gi.var(0, unbiased=False)).sqrt() * noise
    opt.step()


def _variants(grid: bool) -> dict[str, tuple]:
    """label → (noise or None for vmap, stats_rows, stats_every, source)."""
    d = RunConfig()
    out: dict[str, tuple] = {
        "none": ("none", None, 1, "batch"),
        "isotropic": ("isotropic", d.stats_rows, d.stats_every, "batch"),
        "diag": ("diag", d.stats_rows, d.stats_every, "batch"),
        "full": ("full", None, 1, "batch"),
        "isotropic fisher": ("isotropic", d.stats_rows, d.stats_every, "fisher"),
        "diag fisher": ("diag", d.stats_rows, d.stats_every, "fisher"),
        "full fisher": ("full", None, 1, "fisher"),
        "isotropic exact": ("isotropic", None, 1, "batch"),
        "diag exact": ("diag", None, 1, "batch"),
        "diag vmap": (None, None, 1, "batch"),
    }
    if grid:
        for r in (256, 128, 64, 32):
            for k in (1, 2, 4, 8):
                out.setdefault(f"diag rows={r} every={k}", ("diag", r, k, "batch"))
    return out


def _estimate_error(
    model: nn.Module, x: Tensor, y: Tensor, rows: int | None, draws: int = 20
) -> tuple[float, float]:
    """Mean relative error of a sub-batch v̂ and of its trace against the whole-batch v."""
    B = x.shape[0]
    if rows is None or rows >= B:
        return 0.0, 0.0
    params = [p for p in model.parameters() if p.requires_grad]

    def v_of(r: Tensor | None) -> Tensor:
        with DiagStatsRecorder(model, r, torch.full((B,), 1.0 / B), params) as rec:
            torch.autograd.grad(per_example_loss(model(x), y).mean(), params)
        return torch.cat([t.flatten() for t in rec.result().variance(B)])

    v = v_of(None)
    gen = torch.Generator().manual_seed(0)
    ev, et = [], []
    for _ in range(draws):
        vh = v_of(torch.randperm(B, generator=gen)[:rows].sort().values)
        ev.append(float((vh - v).norm() / v.norm()))
        et.append(abs(float(vh.sum() / v.sum()) - 1.0))
    return statistics.mean(ev), statistics.mean(et)


def _q25(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=4, method="inclusive")[0]


def bench_case(
    model_name: str, batch: int, rounds: int, device: torch.device, grid: bool
) -> list[dict]:
    """Paired step-time ratios of every variant for one (model, batch) case."""
    data = load_dataset("digits", device=device)
    torch.manual_seed(0)
    base = build_model(model_name, data.input_shape, data.num_classes).to(device)
    c = 1.0 / 32 - 1.0 / batch
    variants = _variants(grid)
    runners = {
        k: _Runner(copy.deepcopy(base), n, c, r, e, src, device)
        for k, (n, r, e, src) in variants.items()
    }
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(BLOCK):
        idx = torch.randint(0, len(data.x_train), (batch,), generator=gen).to(device)
        batches.append((data.x_train[idx], data.y_train[idx]))

    def block(k: str) -> float:
        n = 1 if k == "diag vmap" else BLOCK
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for xb, yb in batches[:n]:
            runners[k].step(xb, yb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    times, plain_in_round = _time_rounds(runners, block, rounds)
    return [
        _row(
            model_name,
            batch,
            device,
            k,
            ts,
            plain_in_round,
            times["none"],
            variants[k],
            base,
            batches[0],
        )
        for k, ts in times.items()
    ]


def _time_rounds(runners: dict, block, rounds: int) -> tuple[dict[str, list[float]], list[float]]:
    """Per variant, one block time per round (shuffled order each round), and the plain
    step's time in each round for the paired ratio."""
    for k in runners:  # warm-up
        block(k)
        block(k)
    times: dict[str, list[float]] = {k: [] for k in runners}
    plain_in_round: list[float] = []
    order = list(runners)
    shuffle = random.Random(0)
    for r in range(rounds):
        shuffle.shuffle(order)
        for k in order:
            if k == "diag vmap" and r >= 3:
                continue  # 50-100× slower: three rounds tell its ratio
            times[k].append(block(k))
        plain_in_round.append(times["none"][-1])
    return times, plain_in_round


def _row(model_name, batch, device, k, ts, plain_in_round, plain, variant, base, first) -> dict:
    """One table row: the variant's median step time and its ratios to the plain step."""
    paired = statistics.median(t / p for t, p in zip(ts, plain_in_round, strict=False))
    noise, stats_rows, every, source = variant
    ev = et = None
    if noise in ("diag", "isotropic") and source == "batch":
        ev, et = _estimate_error(copy.deepcopy(base), *first, stats_rows)
    return {
        "model": model_name,
        "batch": batch,
        "variant": k,
        "noise": noise,
        "device": str(device),
        "step_ms": 1e3 * statistics.median(ts),
        "paired": paired,
        "p25": _q25(ts) / _q25(plain) if len(ts) >= 4 else paired,
        "target": TARGETS.get(k),
        "stats_rows": stats_rows,
        "stats_every": every,
        "source": source,
        "vhat_rel_err": ev,
        "trace_rel_err": et,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a quarter of the rounds")
    parser.add_argument("--grid", action="store_true", help="also diag at rows × every")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for model_name, batch, rounds in CASES:
        rows += bench_case(
            model_name, batch, max(4, rounds // 4) if args.quick else rounds, device, args.grid
        )
    if args.json:
        print(json.dumps({"machine": describe_machine(args.device), "rows": rows}))
        return rows
    print(f"machine: {describe_machine(args.device)}")
    print(
        "| model | B | variant | stats rows / every | step (ms) | paired ratio | p25 ratio "
        "| target | v̂ rel. err | tr C rel. err |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        target = f"≤ {r['target']}" if r["target"] else ""
        stats = (
            f"{r['stats_rows'] or 'all'} / {r['stats_every']}"
            if r["noise"] in ("diag", "isotropic")
            else ""
        )
        err = (
            f"{r['vhat_rel_err']:.3f} | {r['trace_rel_err']:.4f}"
            if r["vhat_rel_err"] is not None
            else " | "
        )
        print(
            f"| {r['model']} | {r['batch']} | {r['variant']} | {stats} | {r['step_ms']:.2f} | "
            f"{r['paired']:.2f} | {r['p25']:.2f} | {target} | {err} |"
        )
    return rows


if __name__ == "__main__":
    main()
