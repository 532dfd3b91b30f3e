"""Step time of each noise structure divided by a plain step, measured side by side.

    python -m bench.noise_step            # recommended defaults, MLP (B=1024) and CNN (B=512)
    python -m bench.noise_step --grid     # also a grid of stats_rows × stats_every (diag)
    python -m bench.noise_step --quick    # fewer rounds

Models: a 3-layer MLP 64→256→256→10 on the 8×8 digits at B = 1024 and a small 2-D CNN
(conv 32, conv 64, 2×2 max-pool, linear 256, linear 10) at B = 512. Every variant trains its
own copy of the model on the same batches with plain SGD. After a warm-up, each round runs
one block of 4 steps (a multiple of every stats_every used) of every variant, in a fresh
random order, timing each block. Ratios are block time / plain block time:
- paired: median over rounds of the ratio within the round (variants timed close together),
- p25: ratio of the lower quartiles, the least disturbed by other work on the machine.

Also printed: how noisy the sub-batch estimate v̂ of v = diag(C) is, as E‖v̂ − v‖/‖v‖ and
E|Σv̂/Σv − 1| over random sub-batches of one batch. (v̂ is unbiased, and so is the injected
covariance: the sub-batch adds noise to the noise scale, it does not bias it.)
"""

from __future__ import annotations

import argparse
import copy
import random
import statistics
import time
from collections.abc import Callable
from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from covnoise.noise import (
    RECOMMENDED_STATS_EVERY,
    RECOMMENDED_STATS_ROWS,
    NoiseStructure,
    make_structure,
)
from covnoise.pergrad import DiagStatsRecorder

BLOCK = 4  # steps per timed block


def _digits() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.data, dtype=torch.float32) / 16.0
    return x, torch.tensor(d.target, dtype=torch.long)


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


def _cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(),
        nn.Linear(64 * 4 * 4, 256), nn.ReLU(),
        nn.Linear(256, 10),
    )  # fmt: skip


class _Runner:
    """One model copy, its optimiser and (optionally) a noise structure; the step is the one
    the training loop runs."""

    def __init__(self, model: nn.Module, structure: NoiseStructure | None, seed: int):
        self.model = model
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.opt = torch.optim.SGD(self.params, lr=0.02)
        self.structure = structure
        self.state = structure.init(self.params) if structure is not None else None
        self.gen = torch.Generator().manual_seed(seed)

    def step(self, x: Tensor, y: Tensor) -> None:
        if self.structure is None:
            self.opt.zero_grad(set_to_none=True)
            F.cross_entropy(self.model(x), y).backward()
            self.opt.step()
            return
        s, B = self.structure, x.shape[0]
        use = s.needs_stats(self.state)
        rows = s.stats_rows(B, self.gen) if use else None
        w = s.loss_weights(B, self.state, self.gen)
        self.opt.zero_grad(set_to_none=True)
        rec = DiagStatsRecorder(self.model, rows, w, self.params) if use else nullcontext()
        with rec:
            losses = F.cross_entropy(self.model(x), y, reduction="none")
            (w * losses).sum().backward()
        stats = rec.result() if use else None
        noisy, self.state = s.update([p.grad for p in self.params], self.state, stats, self.gen)
        for p, g in zip(self.params, noisy, strict=True):
            p.grad = g
        self.opt.step()


def _variants(c: float, grid: bool) -> dict[str, NoiseStructure | None]:
    rows, every = RECOMMENDED_STATS_ROWS, RECOMMENDED_STATS_EVERY
    out: dict[str, NoiseStructure | None] = {
        "plain": None,
        "none": make_structure("none", c),
        "full": make_structure("full", c),
    }
    for name in ("diag", "isotropic"):
        out[f"{name} r={rows} k={every}"] = make_structure(
            name, c, stats_rows=rows, stats_every=every
        )
    for name in ("diag", "isotropic"):
        out[f"{name} r=None k=1"] = make_structure(name, c)
    if grid:
        for r in (None, 256, 128, 64, 32):
            for k in (1, 2, 4):
                key = f"diag r={r} k={k}"
                if key not in out:
                    out[key] = make_structure("diag", c, stats_rows=r, stats_every=k)
    return out


def _estimate_error(
    model: nn.Module, x: Tensor, y: Tensor, rows: int | None, draws: int = 20
) -> tuple[float, float]:
    """Mean relative error of the sub-batch v̂ and of its trace against the whole-batch v."""
    B = x.shape[0]
    if rows is None or rows >= B:
        return 0.0, 0.0
    params = [p for p in model.parameters() if p.requires_grad]

    def v_of(r: Tensor | None) -> Tensor:
        with DiagStatsRecorder(model, r, 1.0 / B, params) as rec:
            torch.autograd.grad(F.cross_entropy(model(x), y), params)
        return torch.cat([t.flatten() for t in rec.result().variance(B)])

    v = v_of(None)
    gen = torch.Generator().manual_seed(0)
    ev, et = [], []
    for _ in range(draws):
        vh = v_of(torch.randperm(B, generator=gen)[:rows].sort().values)
        ev.append(float((vh - v).norm() / v.norm()))
        et.append(abs(float(vh.sum() / v.sum()) - 1.0))
    return statistics.mean(ev), statistics.mean(et)


def _quantile(xs: list[float], q: float) -> float:
    return statistics.quantiles(xs, n=100, method="inclusive")[int(q * 100) - 1]


def measure(
    name: str,
    make: Callable[[], nn.Module],
    B: int,
    x_all: Tensor,
    y_all: Tensor,
    rounds: int,
    args: argparse.Namespace,
) -> dict[str, float]:
    """Print (and return) the paired step-time ratios of all variants for one model."""
    torch.manual_seed(0)
    base = make()
    variants = _variants(c=1.0 / 32 - 1.0 / B, grid=args.grid)
    runners = {k: _Runner(copy.deepcopy(base), s, i) for i, (k, s) in enumerate(variants.items())}
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(BLOCK):
        idx = torch.randint(0, len(x_all), (B,), generator=gen)
        batches.append((x_all[idx], y_all[idx]))
    for r in runners.values():  # warm-up
        for i in range(2 * BLOCK):
            r.step(*batches[i % BLOCK])
    times: dict[str, list[float]] = {k: [] for k in runners}
    order = list(runners)
    shuffle = random.Random(0)
    for _ in range(rounds):
        shuffle.shuffle(order)
        for k in order:
            r = runners[k]
            t0 = time.perf_counter()
            for xb, yb in batches:
                r.step(xb, yb)
            times[k].append((time.perf_counter() - t0) / BLOCK)
    plain = times["plain"]
    print(f"\n{name}  B={B}  threads={torch.get_num_threads()}  plain step: median "
          f"{statistics.median(plain) * 1e3:.2f} ms, p25 {_quantile(plain, 0.25) * 1e3:.2f} ms; "
          f"{rounds} rounds of {BLOCK}-step blocks")  # fmt: skip
    print(f"  {'variant':<24}{'paired':>8}{'p25':>8}{'rel.err v̂':>11}{'rel.err trC':>13}")
    out = {}
    x0, y0 = batches[0]
    for k in runners:
        t = times[k]
        paired = statistics.median(a / b for a, b in zip(t, plain, strict=True))
        p25 = _quantile(t, 0.25) / _quantile(plain, 0.25)
        out[k] = paired
        s = variants[k]
        err = ""
        if s is not None and s.name in ("diag", "isotropic"):
            ev, et = _estimate_error(copy.deepcopy(base), x0, y0, s.stats_subbatch)
            err = f"{ev:11.3f}{et:13.3f}"
        print(f"  {k:<24}{paired:8.3f}{p25:8.3f}{err}", flush=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grid", action="store_true", help="also a grid of stats_rows × stats_every")
    p.add_argument("--quick", action="store_true", help="fewer rounds")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--only", choices=["mlp", "cnn"], default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    x, y = _digits()
    if args.only in (None, "mlp"):
        measure("MLP 64-256-256-10", _mlp, 1024, x, y, 10 if args.quick else 60, args)
    if args.only in (None, "cnn"):
        xi = x.view(-1, 1, 8, 8)
        measure("CNN c32-c64-pool-fc256", _cnn, 512, xi, y, 4 if args.quick else 20, args)


if __name__ == "__main__":
    main()
