"""Step time of each noise structure divided by a plain step (same batch, model and device).

    python -m bench.steps                 # the table for the README
    python -m bench.steps --json          # the same as JSON
    python -m bench.steps --grid          # also diag at stats_rows × stats_every
    python -m bench.steps --device cuda   # on a GPU
    python -m bench.steps --bp-grid       # isotropic, diag, full over B × P (MLP and CNN)
    python -m bench.steps --grid-quick    # the same with 3 rounds per point
    python -m bench.steps --threads 1     # steadier on a machine shared with other work
    python -m bench.steps --stale-errors  # v̂, tr C errors of the kept estimate (grid points)

Cases: the digits MLP (64→256→256→10) at B = 1024 and the 2-D CNN (conv 32, conv 64,
max-pool, linear 256, linear 10) at B = 512, built by covnoise.core.models. Every variant trains
its own copy of the same initial model with the real training step (covnoise.core.step.noisy_step)
on the same batches. After a warm-up, each round times one block of steps of every variant
(4 steps, or a multiple of every refresh interval the variants use at that B and P: 16 at
B = 128) in a fresh random order, so drifts of the machine's load touch all variants alike.
Ratios are step time / plain step time:
- paired: median over rounds of the ratio within the round,
- p25: ratio of the lower quartiles (least disturbed by other work on the machine).
Targets (docs/design.md): isotropic ≤ 1.3, diag ≤ 1.3, full ≤ 1.1 with the run defaults
(RunConfig.stats_rows, RunConfig.stats_every). "exact" rows record their statistics on the
whole batch every step (diag: diag(C); isotropic: tr C only, TraceStats); "diag vmap"
materialises per-example gradients with torch.func (a reference, never the training path).
"fisher" rows use the true-Fisher source (labels drawn from the model's predictions;
covnoise.core.step): full adds the sampled-label losses to the same backward, diag and
isotropic add one backward of the sampled-label loss in the steps that refresh their
statistics; they are timed in the same rounds as the others. The v̂
columns say how far one sub-batch estimate of v = diag(C) is from the whole-batch v
(E‖v̂ − v‖/‖v‖, E|Σv̂/Σv − 1|; for the batch source); v̂ is unbiased, so the injected
covariance is exactly c·K whatever the sub-batch (tests/test_noise.py, tests/test_fisher.py).

--bp-grid: B ∈ {128, 512, 2048, 4096} × P ≈ 1e4, 1e5, 1e6 for the MLP (hidden width chosen for
P: 69, 280, 963) and a CNN of the same layout as covnoise's (conv c1, conv c2, max-pool, linear
w, linear 10; (c1, c2, w) = (8, 16, 32), (16, 32, 180), (32, 64, 960)); isotropic, diag and full
with the run defaults against a plain step, paired median (p25 ratio in brackets), one warm-up
block, then as many rounds as fit in --grid-seconds per point (at least 3, at most 40). On a
2-core CPU the whole grid at --grid-seconds 5 took 2–5 minutes (it depends on the machine's
state), most of it the CNN at B = 4096 × P = 1e6 (about 0.5 s per plain step); --grid-quick
(3 rounds) about 1; --grid-models,
--grid-batches and --grid-params pick a part.

--stale-errors: at the --grid-* points, the relative errors of the run defaults' v̂ and tr C
against the whole-batch v of each step's batch, for one refresh and kept over the refresh
interval without ("before") and with ("after") the small B·P rule of
covnoise.core.noise.stats_interval, along plain SGD at RunConfig's learning rate.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import statistics
import time

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from bench.machine import describe_machine
from covnoise.config import RunConfig
from covnoise.core import build_model, make_structure, noisy_step, per_example_loss
from covnoise.core.allocator import keep_freed_memory
from covnoise.core.noise import compiled, stats_interval
from covnoise.core.noise.gaussian import fill_compiled, fill_numpy, new_bits
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


def stale_error(
    model: nn.Module,
    data,
    batch: int,
    rows: int | None,
    interval: int,
    lr: float,
    repeats: int = 3,
    seed: int = 0,
) -> tuple[float, float]:
    """Error of the kept v̂ over one refresh interval: mean over the `interval` steps of
    ‖v̂ − v_t‖/‖v_t‖ and |Σv̂/Σv_t − 1|, v̂ recorded on `rows` rows of the first batch, v_t the
    whole-batch v of the batch at step t of plain SGD (learning rate `lr`) from `model`;
    averaged over `repeats` intervals in a row. With interval 1 it is the sub-batch error."""
    params = [p for p in model.parameters() if p.requires_grad]
    gen = torch.Generator().manual_seed(seed)
    ev, et, kept = [], [], None
    for t in range(repeats * interval):
        idx = torch.randint(0, len(data.x_train), (batch,), generator=gen)
        x, y = data.x_train[idx.to(data.x_train.device)], data.y_train[idx.to(data.y_train.device)]
        sub = None if rows is None or rows >= batch else torch.randperm(batch, generator=gen)
        with DiagStatsRecorder(model, None, 1.0 / batch, params) as rec:
            model.zero_grad(set_to_none=True)
            per_example_loss(model(x), y).mean().backward()
        v = torch.cat([g.flatten() for g in rec.result().variance(batch)])
        if t % interval == 0:
            kept = v if sub is None else _sub_v(model, params, x, y, sub[:rows].sort().values)
        ev.append(float((kept - v).norm() / v.norm()))
        et.append(abs(float(kept.sum() / v.sum()) - 1.0))
        with torch.no_grad():
            for p in params:
                p.add_(p.grad, alpha=-lr)
    return statistics.mean(ev), statistics.mean(et)


def _sub_v(model: nn.Module, params: list[Tensor], x: Tensor, y: Tensor, rows: Tensor) -> Tensor:
    """The sub-batch v̂ (unbiased for the batch's v) on `rows`."""
    B = x.shape[0]
    with DiagStatsRecorder(model, rows, 1.0 / B, params) as rec:
        torch.autograd.grad(per_example_loss(model(x), y).mean(), params)
    return torch.cat([g.flatten() for g in rec.result().variance(B)])


def _q25(xs: list[float]) -> float:
    return statistics.quantiles(xs, n=4, method="inclusive")[0]


def bench_case(
    model_name: str, batch: int, rounds: int, device: torch.device, grid: bool
) -> list[dict]:
    """Paired step-time ratios of every variant for one (model, batch) case."""
    data = load_dataset("digits", device=device)
    torch.manual_seed(0)
    base = build_model(model_name, data.input_shape, data.num_classes).to(device)
    variants = _variants(grid)
    times, plain_in_round, batches = _measure(base, data, batch, device, variants, rounds)
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


def _measure(base, data, batch, device, variants, rounds, warmup=2, budget_s=None):
    """Block times of every variant (each its own copy of `base`) on the same batches.

    With `budget_s`, the number of rounds is what fits in about that many seconds after the
    warm-up (at least 3, at most `rounds`)."""
    c = 1.0 / 32 - 1.0 / batch
    runners = {
        k: _Runner(copy.deepcopy(base), n, c, r, e, src, device)
        for k, (n, r, e, src) in variants.items()
    }
    steps = _block_steps(batch, variants, _n_params(base))
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(steps):
        idx = torch.randint(0, len(data.x_train), (batch,), generator=gen).to(device)
        batches.append((data.x_train[idx], data.y_train[idx]))

    def block(k: str) -> float:
        n = 1 if k == "diag vmap" else steps
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for xb, yb in batches[:n]:
            runners[k].step(xb, yb)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t0) / n

    times, plain_in_round = _time_rounds(runners, block, rounds, warmup, budget_s)
    return times, plain_in_round, batches


def _block_steps(batch: int, variants: dict[str, tuple], n_params: int) -> int:
    """Steps per timed block: BLOCK, or a multiple of every refresh interval the variants use
    at this batch and size (the default schedule refreshes every 8–32 steps at small B or
    B·P), so that every block holds its share of refreshes and the per-round ratios are not
    split between blocks with and without one."""
    steps = BLOCK
    for noise, rows, every, _ in variants.values():
        if noise in ("diag", "isotropic"):
            steps = math.lcm(steps, stats_interval(batch, rows, every, n_params))
    return steps


def _time_rounds(
    runners: dict, block, rounds: int, warmup: int = 2, budget_s: float | None = None
) -> tuple[dict[str, list[float]], list[float]]:
    """Per variant, one block time per round (shuffled order each round), and the plain
    step's time in each round for the paired ratio."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        for k in runners:
            block(k)
    if budget_s is not None:  # rounds that fit the budget, from the warm-up's pace
        per_round = (time.perf_counter() - t0) / max(1, warmup)
        rounds = max(3, min(rounds, int(budget_s / max(per_round, 1e-9))))
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


GRID_B = (128, 512, 2048, 4096)
GRID_P = (10_000, 100_000, 1_000_000)
# CNN (conv c1, conv c2, linear width) giving P ≈ 1e4, 1e5, 1e6 on 1×8×8 digits
GRID_CNN = {10_000: (8, 16, 32), 100_000: (16, 32, 180), 1_000_000: (32, 64, 960)}
GRID_VARIANTS = ("isotropic", "diag", "full")


def _grid_cnn(c1: int, c2: int, width: int, shape: tuple[int, ...], classes: int) -> nn.Module:
    """covnoise's 2-D CNN (conv, conv, max-pool, linear, linear) with chosen widths."""
    c, h, w = shape
    return nn.Sequential(
        nn.Conv2d(c, c1, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(c1, c2, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(c2 * (h // 2) * (w // 2), width),
        nn.ReLU(),
        nn.Linear(width, classes),
    )


def _n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def grid_model(model_name: str, target_p: int, shape: tuple[int, ...], classes: int) -> nn.Module:
    """The MLP (hidden width chosen) or CNN (GRID_CNN) with about `target_p` parameters."""
    if model_name == "cnn":
        return _grid_cnn(*GRID_CNN[target_p], shape, classes)

    n_in = math.prod(shape)  # depth 3: n_in·w + w + w² + w + w·classes + classes

    def size(w: int) -> int:
        return n_in * w + w + w * w + w + w * classes + classes

    w = min(range(2, 4096), key=lambda w: abs(size(w) - target_p))
    return build_model("mlp", shape, classes, width=w)


def bench_grid(
    device: torch.device,
    quick: bool,
    budget_s: float,
    models=("mlp", "cnn"),
    echo=True,
    batches=GRID_B,
    sizes=GRID_P,
) -> list[dict]:
    """Paired ratios of isotropic, diag and full (run defaults) over B × P for each model."""
    data = load_dataset("digits", device=device)
    d = RunConfig()
    variants = {"none": ("none", None, 1, "batch")}
    for name in GRID_VARIANTS:
        stats = (d.stats_rows, d.stats_every) if name != "full" else (None, 1)
        variants[name] = (name, *stats, "batch")
    rows = []
    for model_name in models:
        for target_p in sizes:
            torch.manual_seed(0)
            base = grid_model(model_name, target_p, data.input_shape, data.num_classes)
            base = base.to(device)
            for batch in batches:
                t0 = time.perf_counter()
                times, plain, _ = _measure(
                    base, data, batch, device, variants, 3 if quick else 40, 1, budget_s
                )
                row = {
                    "model": model_name,
                    "batch": batch,
                    "params": _n_params(base),
                    "plain_ms": 1e3 * statistics.median(times["none"]),
                    "rounds": len(plain),
                    "stats": (
                        min(d.stats_rows, batch),
                        stats_interval(batch, d.stats_rows, d.stats_every, _n_params(base)),
                    ),
                    "seconds": time.perf_counter() - t0,
                }
                for k in GRID_VARIANTS:
                    row[k] = statistics.median(t / q for t, q in zip(times[k], plain, strict=False))
                    row[f"{k}_p25"] = _q25(times[k]) / _q25(times["none"])
                rows.append(row)
                if echo:
                    print(_grid_line(row), flush=True)
    return rows


def stale_errors(models, batches, sizes, echo: bool = True) -> list[dict]:
    """v̂ and tr C errors of the run defaults at each grid point: one refresh (interval 1),
    and kept over the interval without (before) and with (after) the small-work rule of
    `stats_interval`; plain SGD at RunConfig's learning rate (see `stale_error`)."""
    data = load_dataset("digits")
    d = RunConfig()
    out = []
    if echo:
        print(
            "| model | B | P | every before / after | v̂ err: one refresh / before / after "
            "| tr C err: one refresh / before / after |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
    for model_name in models:
        for target_p in sizes:
            torch.manual_seed(0)
            base = grid_model(model_name, target_p, data.input_shape, data.num_classes)
            for batch in batches:
                every = {
                    "before": stats_interval(batch, d.stats_rows, d.stats_every),
                    "after": stats_interval(batch, d.stats_rows, d.stats_every, _n_params(base)),
                }
                err = {
                    "one": stale_error(copy.deepcopy(base), data, batch, d.stats_rows, 1, d.lr, 12)
                }
                for k, n in every.items():
                    err[k] = stale_error(copy.deepcopy(base), data, batch, d.stats_rows, n, d.lr)
                row = {"model": model_name, "batch": batch, "params": _n_params(base)}
                row.update(every=every, errors=err)
                out.append(row)
                if echo:
                    ks = ("one", "before", "after")
                    print(
                        f"| {model_name} | {batch} | {row['params']:,} | {every['before']} / "
                        f"{every['after']} | "
                        + " / ".join(f"{err[k][0]:.3f}" for k in ks)
                        + " | "
                        + " / ".join(f"{err[k][1]:.4f}" for k in ks)
                        + " |",
                        flush=True,
                    )
    return out


def _grid_line(r: dict) -> str:
    cells = " | ".join(f"{r[k]:.2f} ({r[f'{k}_p25']:.2f})" for k in GRID_VARIANTS)
    return (
        f"| {r['model']} | {r['batch']} | {r['params']:,} | {r['plain_ms']:.1f} | {cells} "
        f"| ≤ 1.3 / 1.3 / 1.1 | {r['stats'][0]} / {r['stats'][1]} | {r['rounds']} |"
    )


def _print_grid_header(device: str) -> None:
    print(f"machine: {describe_machine(device)}")
    print(
        "| model | B | P | plain step (ms) | isotropic | diag | full | target "
        "| stats rows / every | rounds |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")


DRAW_SIZES = (10_000, 32_768, 100_000, 1_000_000)


def bench_draw(sizes=DRAW_SIZES, rounds: int = 60) -> list[dict]:
    """torch's `normal_` against `gaussian_`'s two paths (numpy, and compiled where it
    loads), each into one float32 buffer of P entries reused for every draw, the SFC64 paths
    from one generator kept across draws (as a run's steps draw), in a fresh order each
    round; median times and median within-round ratios to the compiled draw (else numpy)."""
    gen = torch.Generator().manual_seed(0)
    bits = new_bits(gen)
    kernel = compiled.load()
    draws = {
        "torch": lambda out: out.normal_(generator=gen),
        "numpy": lambda out: fill_numpy(out, bits),
    }
    if kernel is not None:
        draws["compiled"] = lambda out: fill_compiled(out, bits, kernel)
    best = "compiled" if kernel is not None else "numpy"
    order = random.Random(0)
    rows = []
    for n in sizes:
        ts: dict[str, list[float]] = {name: [] for name in draws}
        k = max(1, 1_000_000 // n)  # draws per timing
        out = torch.empty(n)
        for r in range(rounds + 3):
            for name in order.sample(list(draws), len(draws)):
                t0 = time.perf_counter()
                for _ in range(k):
                    draws[name](out)
                if r >= 3:
                    ts[name].append((time.perf_counter() - t0) / k)
        row = {"n": n, "best": best}
        for name in draws:
            row[f"{name}_us"] = statistics.median(ts[name]) * 1e6
            row[f"{name}_per_{best}"] = statistics.median(
                a / b for a, b in zip(ts[name], ts[best], strict=True)
            )
        rows.append(row)
    return rows


def _draw_main(as_json: bool) -> list[dict]:
    rows = bench_draw()
    if as_json:
        print(json.dumps({"machine": describe_machine("cpu"), "draw": rows}))
        return rows
    print(f"machine: {describe_machine('cpu')}; gaussian_ draws with {compiled.describe()}")
    if rows and rows[0]["best"] == "compiled":
        print(
            "| P | torch normal_ (µs) | numpy path (µs) | compiled (µs) "
            "| torch ÷ compiled | numpy ÷ compiled |"
        )
        print("| --- | --- | --- | --- | --- | --- |")
        for r in rows:
            print(
                f"| {r['n']:,} | {r['torch_us']:.0f} | {r['numpy_us']:.0f} | "
                f"{r['compiled_us']:.0f} | {r['torch_per_compiled']:.2f} | "
                f"{r['numpy_per_compiled']:.2f} |"
            )
        return rows
    print("| P | torch normal_ (µs) | numpy path (µs) | torch ÷ numpy |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(
            f"| {r['n']:,} | {r['torch_us']:.0f} | {r['numpy_us']:.0f} "
            f"| {r['torch_per_numpy']:.2f} |"
        )
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="a quarter of the rounds")
    parser.add_argument("--grid", action="store_true", help="also diag at rows × every")
    parser.add_argument(
        "--bp-grid",
        action="store_true",
        help="instead: isotropic, diag, full at B × P for the MLP and the CNN",
    )
    parser.add_argument(
        "--grid-quick", action="store_true", help="--bp-grid with 3 rounds per point"
    )
    parser.add_argument(
        "--grid-seconds", type=float, default=20.0, help="--bp-grid: timing seconds per point"
    )
    parser.add_argument(
        "--grid-batches", default="", help="--bp-grid: batch sizes (default 128,512,2048,4096)"
    )
    parser.add_argument(
        "--grid-params", default="", help="--bp-grid: parameter counts (default 1e4,1e5,1e6)"
    )
    parser.add_argument("--grid-models", default="mlp,cnn", help="--bp-grid: models")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads (0: torch's default); 1 is steadier on a machine shared with "
        "other work, where a descheduled second thread stalls every parallel operation",
    )
    parser.add_argument(
        "--stale-errors",
        action="store_true",
        help="instead: v̂ and tr C errors of the kept estimate at the --grid-* points",
    )
    parser.add_argument(
        "--draw",
        action="store_true",
        help="instead: the N(0, 1) draw, torch's normal_ against covnoise's gaussian_",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # the allocator set as in a run's process, for every variant
    device = torch.device(args.device)
    if args.draw:
        return _draw_main(args.json)
    if args.stale_errors:
        return stale_errors(
            args.grid_models.split(","),
            tuple(int(b) for b in args.grid_batches.split(",") if b) or GRID_B,
            tuple(int(float(p)) for p in args.grid_params.split(",") if p) or GRID_P,
        )
    if args.bp_grid or args.grid_quick:
        if not args.json:
            _print_grid_header(args.device)
        quick = args.grid_quick
        rows = bench_grid(
            device,
            quick,
            0.0 if quick else args.grid_seconds,
            args.grid_models.split(","),
            echo=not args.json,
            batches=tuple(int(b) for b in args.grid_batches.split(",") if b) or GRID_B,
            sizes=tuple(int(float(p)) for p in args.grid_params.split(",") if p) or GRID_P,
        )
        if args.json:
            print(json.dumps({"machine": describe_machine(args.device), "grid": rows}))
        return rows
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
