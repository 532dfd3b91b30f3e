"""Lanczos vs power iteration for λ_max of a network Hessian, and the cost of one HVP.

A digits MLP (64 → 128 → 128 → 10) is trained for a few hundred steps on scikit-learn's
offline digits data so its Hessian is not trivial. On a probe batch of 512 examples we count
the Hessian-vector products each method needs before its estimate of λ_max stays within
1e-3 (relative) of a reference from a long Lanczos run, from the same start vectors, and also
the HVPs their own stopping rule (tol = 1e-3) spends. One HVP is timed against one gradient
evaluation on the same probe, side by side in this process.

    python -m bench.curvature [--json] [--seeds 10] [--steps 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from bench.machine import describe_machine
from covnoise.core.curvature import HessianOperator, lanczos, power_iteration

ACCURACY = 1e-3


def per_example_ce(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits, y, reduction="none")


def trained_digits_mlp(steps: int, seed: int = 0) -> tuple[nn.Module, Tensor, Tensor]:
    """Train the MLP with SGD on digits; return it (eval mode) and a 512-example probe."""
    torch.manual_seed(seed)
    data = load_digits()
    x = torch.tensor(data.data, dtype=torch.float32) / 16.0
    y = torch.tensor(data.target, dtype=torch.long)
    model = nn.Sequential(
        nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10)
    )
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=gen)
        loss = per_example_ce(model(x[idx]), y[idx]).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    probe = torch.randperm(x.shape[0], generator=gen)[:512]
    return model.eval(), x[probe], y[probe]


def hvps_to_accuracy(history: list[float], reference: float) -> int | None:
    """Matvecs after which every later estimate is within ACCURACY of the reference."""
    errors = [abs(h - reference) / abs(reference) for h in history]
    for k in range(len(errors)):
        if all(e <= ACCURACY for e in errors[k:]):
            return k + 1
    return None


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seeds", type=int, default=10, help="number of start vectors")
    parser.add_argument("--steps", type=int, default=300, help="training steps before probing")
    parser.add_argument("--power-max", type=int, default=1000, help="power iteration cap")
    args = parser.parse_args()

    model, x, y = trained_digits_mlp(args.steps)
    op = HessianOperator(model, per_example_ce, x, y)
    ref = lanczos(op, k_max=120, tol=1e-9, generator=torch.Generator().manual_seed(12345))
    reference = ref.value

    rows = []
    for seed in range(args.seeds):
        v0 = torch.randn(op.dim, generator=torch.Generator().manual_seed(seed))
        # Trajectories run until converged far beyond the accuracy asked, so "stays within"
        # is judged on a tail that has settled.
        lz_hist = lanczos(op, k_max=40, tol=1e-7, v0=v0).history
        pw_hist = power_iteration(op, max_iter=args.power_max, tol=1e-6, v0=v0).history
        lz_rule = lanczos(op, tol=ACCURACY, k_max=40, v0=v0)
        pw_rule = power_iteration(op, tol=ACCURACY, max_iter=args.power_max, v0=v0)
        rows.append(
            {
                "seed": seed,
                "lanczos_hvps_to_1e-3": hvps_to_accuracy(lz_hist, reference),
                "power_hvps_to_1e-3": hvps_to_accuracy(pw_hist, reference),
                "lanczos_rule_hvps": lz_rule.n_matvecs,
                "lanczos_rule_error": abs(lz_rule.value - reference) / abs(reference),
                "power_rule_hvps": pw_rule.n_matvecs,
                "power_rule_error": abs(pw_rule.value - reference) / abs(reference),
            }
        )

    # Timing: one gradient, one HVP with the cached gradient graph, one HVP built from scratch.
    uncached = HessianOperator(model, per_example_ce, x, y, cache_graph=False)
    v = torch.randn(op.dim, generator=torch.Generator().manual_seed(99))
    for f in (op.gradient, lambda: op.matvec(v), lambda: uncached.matvec(v)):
        f()  # warm up
    t_grad, t_hvp, t_hvp_full = [], [], []
    for _ in range(15):  # interleaved so drifts in machine load hit all three alike
        t_grad.append(median_time(op.gradient, 3))
        t_hvp.append(median_time(lambda: op.matvec(v), 3))
        t_hvp_full.append(median_time(lambda: uncached.matvec(v), 3))
    tg, th, thf = (statistics.median(t) for t in (t_grad, t_hvp, t_hvp_full))

    lz = [r["lanczos_hvps_to_1e-3"] for r in rows]
    pw = [r["power_hvps_to_1e-3"] for r in rows]
    reached = [(a, b) for a, b in zip(lz, pw, strict=True) if a is not None and b is not None]
    summary = {
        "params": op.dim,
        "probe": int(x.shape[0]),
        "train_steps": args.steps,
        "lambda_max_reference": reference,
        "reference_residual": ref.residual,
        "reference_hvps": ref.n_matvecs,
        "lanczos_hvps_to_1e-3_median": statistics.median([a for a, _ in reached]),
        "power_hvps_to_1e-3_median": statistics.median([b for _, b in reached]),
        "power_over_lanczos_median_ratio": statistics.median([b / a for a, b in reached]),
        "power_runs_not_reaching_1e-3": sum(b is None for b in pw),
        "lanczos_rule_hvps_median": statistics.median(r["lanczos_rule_hvps"] for r in rows),
        "power_rule_hvps_median": statistics.median(r["power_rule_hvps"] for r in rows),
        "power_over_lanczos_rule_median_ratio": statistics.median(
            r["power_rule_hvps"] / r["lanczos_rule_hvps"] for r in rows
        ),
        "grad_ms": tg * 1e3,
        "hvp_cached_ms": th * 1e3,
        "hvp_uncached_ms": thf * 1e3,
        "hvp_cached_over_grad": th / tg,
        "hvp_uncached_over_grad": thf / tg,
        "machine": describe_machine(),
    }
    if args.json:
        print(json.dumps({"summary": summary, "runs": rows}, indent=2))
        return

    print(summary["machine"])
    print(
        f"digits MLP, {summary['params']} params, probe {summary['probe']}, "
        f"{args.steps} SGD steps; λ_max reference {reference:.6g} "
        f"(residual {ref.residual:.1e}, {ref.n_matvecs} HVPs)"
    )
    print(f"\nHVPs until λ_max stays within {ACCURACY:g} relative (same start vector per row)")
    header = f"{'seed':>4} {'lanczos':>8} {'power':>7} {'ratio':>6} | stopping rule tol=1e-3:"
    print(header + f" {'lz HVPs':>7} {'lz err':>8} {'pw HVPs':>7} {'pw err':>8}")
    for r in rows:
        a, b = r["lanczos_hvps_to_1e-3"], r["power_hvps_to_1e-3"]
        ratio = f"{b / a:6.1f}" if a and b else f"{'-':>6}"
        print(
            f"{r['seed']:>4} {a if a else '-':>8} {b if b else '>' + str(args.power_max):>7} "
            f"{ratio} | {'':>22} {r['lanczos_rule_hvps']:>7} {r['lanczos_rule_error']:8.1e} "
            f"{r['power_rule_hvps']:>7} {r['power_rule_error']:8.1e}"
        )
    print(
        f"\nmedian: lanczos {summary['lanczos_hvps_to_1e-3_median']}, "
        f"power {summary['power_hvps_to_1e-3_median']}, "
        f"power/lanczos {summary['power_over_lanczos_median_ratio']:.1f}x; "
        f"stopping rule: lanczos {summary['lanczos_rule_hvps_median']}, "
        f"power {summary['power_rule_hvps_median']}, "
        f"power/lanczos {summary['power_over_lanczos_rule_median_ratio']:.1f}x"
    )
    print(
        "\ntiming on the probe (median of interleaved runs):"
        f"\n  gradient             {tg * 1e3:7.2f} ms   1.00x"
        f"\n  HVP (cached graph)   {th * 1e3:7.2f} ms   {th / tg:.2f}x"
        f"\n  HVP (from scratch)   {thf * 1e3:7.2f} ms   {thf / tg:.2f}x"
    )


if __name__ == "__main__":
    main()
