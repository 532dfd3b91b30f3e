"""Effect of the diag(C) estimate's design (sub-batch rows, refresh interval) on results.

    python -m bench.stats_choice [--seeds 5] [--epochs 200] [--json]

The step-time benchmark (bench.steps) shows that estimating v = diag(C) on 128 rows every 4
steps keeps diag and isotropic noise within 1.3× of a plain step. This checks what the
choice does to training: the digits MLP at L = 1024 with diag or isotropic noise (M = 32),
trained with the default estimate and with the exact one (all rows, every step), same seeds;
it prints the final train/test loss and accuracy as mean ± standard error over seeds and the
paired difference (default − exact), with no-noise and small-batch runs as the scale of the
effect that matters.
"""

from __future__ import annotations

import argparse
import json
import statistics

from covnoise.config import RunConfig
from covnoise.core.train import run

KEYS = ("train_loss", "test_loss", "test_acc")


def _final(cfg: RunConfig) -> dict[str, float]:
    summary = run(cfg)
    return {k: summary["final"][k] for k in KEYS}


def _mean_se(xs: list[float]) -> tuple[float, float]:
    m = statistics.mean(xs)
    se = statistics.stdev(xs) / len(xs) ** 0.5 if len(xs) > 1 else float("nan")
    return m, se


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--epochs", type=float, default=200)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    base = RunConfig(
        dataset="digits",
        model="mlp",
        batch_size=1024,
        small_batch=32,
        lr=0.4,
        epochs=args.epochs,
        eval_every=1000,
        sharpness_every=0,
        device="cpu",
    )
    variants = {
        "none": dict(noise="none"),
        "diag 128/4 (default)": dict(noise="diag"),
        "diag exact": dict(noise="diag", stats_rows=None, stats_every=1),
        "isotropic 128/4 (default)": dict(noise="isotropic"),
        "isotropic exact": dict(noise="isotropic", stats_rows=None, stats_every=1),
    }
    results: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    for seed in range(args.seeds):
        for label, ch in variants.items():
            results[label].append(_final(base.replace(seed=seed, **ch)))
    out = {"config": base.to_dict(), "seeds": args.seeds, "rows": {}}
    print(
        f"digits MLP, L=1024, M=32, lr 0.4, {args.epochs:g} epochs, {args.seeds} seeds "
        "(mean ± s.e.)"
    )
    print("| variant | " + " | ".join(KEYS) + " |")
    print("| --- |" + " --- |" * len(KEYS))
    for label, rs in results.items():
        cells = []
        for k in KEYS:
            m, se = _mean_se([r[k] for r in rs])
            out["rows"].setdefault(label, {})[k] = (m, se)
            cells.append(f"{m:.4f} ± {se:.4f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    for name in ("diag", "isotropic"):
        a, b = results[f"{name} 128/4 (default)"], results[f"{name} exact"]
        cells = []
        for k in KEYS:
            m, se = _mean_se([x[k] - y[k] for x, y in zip(a, b, strict=True)])
            out["rows"].setdefault(f"{name} default − exact", {})[k] = (m, se)
            cells.append(f"{m:+.4f} ± {se:.4f}")
        print(f"| {name}: default − exact (paired) | " + " | ".join(cells) + " |")
    if args.json:
        print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
