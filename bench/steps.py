"""Step time of each noise structure divided by a plain step (same batch, model and device).

`python -m bench.steps [--json] [--device cpu|cuda] [--repeats R]`

Each configuration (digits MLP at B = 1024, 2-D CNN at B = 512) builds one model per structure
from the same initial weights and times the real training step (covnoise.train.noisy_step).
After a warm-up, the structures are timed in interleaved rounds so that the machine's load
drifts affect all of them alike; the table shows median step times and their ratio to the
plain step. Targets (DESIGN.md): isotropic ≤ 1.3, diag ≤ 1.3, full ≤ 1.1.
A row "diag exact" (statistics on the whole batch every step) shows the cost the sub-batch
and refresh design avoids, and "diag vmap" the per-example-gradient reference (torch.func),
which is never used for training.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time

import torch
from torch.func import functional_call, grad, vmap

from bench.machine import describe_machine
from covnoise.config import RunConfig
from covnoise.data import load_dataset
from covnoise.models import build_model
from covnoise.noise import make_structure
from covnoise.train import noisy_step, per_example_loss

TARGETS = {"isotropic": 1.3, "diag": 1.3, "full": 1.1}
CASES = [("mlp", 1024), ("cnn", 512)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _vmap_step(model, params, opt, x, y, c, gen):
    """diag noise from materialised per-example gradients (the slow reference)."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    def loss_one(ps, xi, yi):
        out = functional_call(model, dict(zip(names, ps, strict=True)), (xi[None],))
        return per_example_loss(out, yi[None]).sum()

    g = vmap(grad(loss_one), in_dims=(None, 0, 0))(tuple(params), x, y)
    opt.zero_grad(set_to_none=True)
    for p, gi in zip(params, g, strict=True):
        mean = gi.mean(0)
        var = gi.var(0, unbiased=False)
        p.grad = mean + (c * var).sqrt() * torch.randn(mean.shape, generator=gen)
    opt.step()


def bench_case(model_name: str, batch: int, device: torch.device, repeats: int, steps: int,
               with_vmap: bool) -> list[dict]:
    """Median step times of every structure for one (model, batch) case."""
    defaults = RunConfig()
    data = load_dataset("digits", device=device)
    x, y = data.x_train[:batch], data.y_train[:batch]
    torch.manual_seed(0)
    base = build_model(model_name, data.input_shape, data.num_classes).to(device)
    c = 1.0 / 32 - 1.0 / batch
    variants = {
        "none": dict(noise="none"),
        "isotropic": dict(noise="isotropic"),
        "diag": dict(noise="diag"),
        "full": dict(noise="full"),
        "diag exact": dict(noise="diag", stats_rows=None, stats_every=1),
    }
    runners = {}
    for label, v in variants.items():
        model = copy.deepcopy(base)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.SGD(params, lr=1e-3)
        structure = make_structure(
            v["noise"], 0.0 if v["noise"] == "none" else c,
            stats_rows=v.get("stats_rows", defaults.stats_rows),
            stats_every=v.get("stats_every", defaults.stats_every),
        )
        state = structure.init(params)
        gen = torch.Generator(device=device).manual_seed(0)
        runners[label] = [model, params, opt, structure, state, gen]
    if with_vmap:
        model = copy.deepcopy(base)
        params = [p for p in model.parameters() if p.requires_grad]
        runners["diag vmap"] = [model, params, torch.optim.SGD(params, lr=1e-3), None, None,
                                torch.Generator(device=device).manual_seed(0)]

    def one(label: str, n: int) -> float:
        model, params, opt, structure, state, gen = runners[label]
        _sync(device)
        t = time.perf_counter()
        for _ in range(n):
            if structure is None:
                _vmap_step(model, params, opt, x, y, c, gen)
            else:
                _, state = noisy_step(model, params, opt, structure, state, x, y, gen)
        _sync(device)
        runners[label][4] = state
        return (time.perf_counter() - t) / n

    for label in runners:  # warm-up
        one(label, 1 if label == "diag vmap" else 3)
    times: dict[str, list[float]] = {label: [] for label in runners}
    for r in range(repeats):
        for label in runners:
            if label == "diag vmap" and r >= 3:
                continue
            times[label].append(one(label, 1 if label == "diag vmap" else steps))
    plain = statistics.median(times["none"])
    rows = []
    for label, ts in times.items():
        med = statistics.median(ts)
        rows.append({
            "model": model_name, "batch": batch, "structure": label, "device": str(device),
            "step_ms": 1e3 * med, "ratio": med / plain, "target": TARGETS.get(label),
            "stats_rows": defaults.stats_rows if label in ("diag", "isotropic") else None,
            "stats_every": defaults.stats_every if label in ("diag", "isotropic") else None,
        })  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--steps", type=int, default=3, help="steps per timing")
    parser.add_argument("--no-vmap", action="store_true", help="skip the slow vmap reference")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    rows = []
    for model_name, batch in CASES:
        rows += bench_case(model_name, batch, device, args.repeats, args.steps,
                           with_vmap=not args.no_vmap)
    if args.json:
        print(json.dumps({"machine": describe_machine(args.device), "rows": rows}))
        return rows
    print(f"machine: {describe_machine(args.device)}")
    print("| model | B | structure | step (ms) | ratio to plain | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        target = f"≤ {r['target']}" if r["target"] else ""
        print(f"| {r['model']} | {r['batch']} | {r['structure']} | {r['step_ms']:.2f} | "
              f"{r['ratio']:.2f} | {target} |")
    return rows


if __name__ == "__main__":
    main()
