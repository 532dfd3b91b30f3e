"""λ_max of a network Hessian: covnoise's Lanczos against its peers, and the cost of one HVP.

A digits MLP (64 → 128 → 128 → 10) is trained for a few hundred steps on scikit-learn's
offline digits data so its Hessian is not trivial. On a probe batch of 512 examples, from the
same start vector per seed, it compares

* covnoise: ``lanczos(HessianOperator(...), tol=1e-3)``, stopping on its own rule;
* PyHessian (the real package, ``pyhessian.hessian(...).eigenvalues``): power iteration on a
  gradient graph kept from construction;
* hessian-eigenthings (the real package): its ``lanczos`` (a fixed number of steps, no early
  stop) and ``power_iteration_one`` (stops on relative change and residual), whose operator
  rebuilds the gradient graph on every HVP.

The peers are used only if installed (``pip install pyhessian hessian-eigenthings``; neither
is a dependency of covnoise); otherwise their rows say so. "Same true accuracy": the HVPs
after which each method's estimate stays within 1e-3 (relative) of a reference from a long
Lanczos run, and the wall time of one whole call (operator construction included) set up to
reach 1e-3: covnoise on its own rule, each peer with its iteration cap set to the count that
seed needs (the oracle's best case for the peer; with its own rule at tol 1e-3 PyHessian stops
short of 1e-3, reported too). Calls are timed in interleaved rounds in one process so drifts in
machine load hit all alike. Finally one HVP is timed against one gradient on the same probe,
with the graph kept and rebuilt, and covnoise's HVP against PyHessian's on the same graph.

    python -m bench.curvature [--json] [--seeds 10] [--steps 300] [--threads 1]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import json
import random
import statistics
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import Tensor, nn

from bench.machine import describe_machine
from covnoise.core.curvature import HessianOperator, lanczos

ACCURACY = 1e-3
HAVE_PYHESSIAN = importlib.util.find_spec("pyhessian") is not None
HAVE_EIGENTHINGS = importlib.util.find_spec("hessian_eigenthings") is not None


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


def start_vector(dim: int, seed: int) -> Tensor:
    """The start vector of a seed; hessian-eigenthings draws the same one from ``seed``."""
    return torch.randn(dim, generator=torch.Generator().manual_seed(seed))


# -- the peers ----------------------------------------------------------------------------


@contextlib.contextmanager
def feed_randn(v0: Tensor) -> Iterator[None]:
    """Make ``torch.randn`` return consecutive slices of ``v0`` (PyHessian's start vector is
    one ``torch.randn(p.size())`` per parameter), so PyHessian starts where the others do."""
    real, offset = torch.randn, [0]

    def fake(*size, **kw):
        shape = torch.Size(size[0] if len(size) == 1 and not isinstance(size[0], int) else size)
        n = shape.numel()
        out = v0[offset[0] : offset[0] + n].view(shape).clone()
        offset[0] += n
        return out

    torch.randn = fake
    try:
        yield
    finally:
        torch.randn = real


def pyhessian_call(
    model: nn.Module, x: Tensor, y: Tensor, v0: Tensor, max_iter: int, tol: float
) -> tuple[float, list[float]]:
    """One PyHessian λ_max call; returns (λ, Rayleigh quotient after each HVP)."""
    ph = importlib.import_module("pyhessian.hessian")  # the module: the package's `hessian`
    # attribute is the class, which shadows it
    history: list[float] = []
    real_hvp = ph.hessian_vector_product

    def recording_hvp(grads, params, v):
        hv = real_hvp(grads, params, v)
        history.append(float(sum((a * b).sum() for a, b in zip(hv, v, strict=True))))
        return hv

    ph.hessian_vector_product = recording_hvp
    try:
        h = ph.hessian(model, F.cross_entropy, data=(x, y), cuda=False)
        with feed_randn(v0):
            values, _ = h.eigenvalues(maxIter=max_iter, tol=tol, top_n=1)
    finally:
        ph.hessian_vector_product = real_hvp
        model.zero_grad(set_to_none=True)  # PyHessian leaves a create_graph gradient in .grad
    return float(values[0]), history


def eigenthings_operator(model: nn.Module, x: Tensor, y: Tensor):
    from hessian_eigenthings import HessianOperator as EtHessian
    from hessian_eigenthings.loss_fns import supervised_loss

    return EtHessian(model, [(x, y)], supervised_loss(F.cross_entropy))


def eigenthings_lanczos(model: nn.Module, x: Tensor, y: Tensor, seed: int, steps: int) -> float:
    """hessian-eigenthings' Lanczos: ``steps`` steps (it has no early stop), top algebraic."""
    from hessian_eigenthings.algorithms.lanczos import lanczos as et_lanczos

    op = eigenthings_operator(model, x, y)
    return float(et_lanczos(op, k=1, max_iter=steps, which="LA", seed=seed).eigenvalues[0])


def eigenthings_power(
    model: nn.Module, x: Tensor, y: Tensor, seed: int, max_iter: int, tol: float
) -> tuple[float, int]:
    """hessian-eigenthings' power iteration; returns (λ, HVPs)."""
    from hessian_eigenthings.algorithms.power_iteration import power_iteration_one

    op = eigenthings_operator(model, x, y)
    value, _, _, iters, _ = power_iteration_one(op, max_iter=max_iter, tol=tol, seed=seed)
    return float(value), int(iters)


# -- measurements -------------------------------------------------------------------------


def accuracy_rows(
    model: nn.Module, x: Tensor, y: Tensor, op: HessianOperator, reference: float, args
) -> list[dict]:
    """Per seed: HVPs to 1e-3 for each method and what each stopping rule spends and reaches."""
    rows = []
    for seed in range(args.seeds):
        v0 = start_vector(op.dim, seed)
        rule = lanczos(op, tol=ACCURACY, k_max=20, v0=v0)
        row = {
            "seed": seed,
            "lanczos_hvps_to_1e-3": hvps_to_accuracy(
                lanczos(op, k_max=40, tol=1e-9, v0=v0).history, reference
            ),
            "lanczos_rule_hvps": rule.n_matvecs,
            "lanczos_rule_iterations": rule.iterations,
            "lanczos_rule_error": abs(rule.value - reference) / abs(reference),
            "lanczos_rule_bound": rule.error_bound / abs(rule.value),
            "lanczos_converged": rule.converged,
        }
        if HAVE_PYHESSIAN:
            _, hist = pyhessian_call(model, x, y, v0, args.power_max, 0.0)
            own, own_hist = pyhessian_call(model, x, y, v0, args.power_max, ACCURACY)
            row["pyhessian_hvps_to_1e-3"] = hvps_to_accuracy(hist, reference)
            row["pyhessian_rule_hvps"] = len(own_hist)
            row["pyhessian_rule_error"] = abs(own - reference) / abs(reference)
        if HAVE_EIGENTHINGS:
            value, iters = eigenthings_power(model, x, y, seed, args.power_max, ACCURACY)
            row["eigenthings_power_rule_hvps"] = iters
            row["eigenthings_power_rule_error"] = abs(value - reference) / abs(reference)
        rows.append(row)
    return rows


def call_makers(model: nn.Module, x: Tensor, y: Tensor, row: dict) -> dict[str, Callable]:
    """One whole λ_max call per method, each set up to reach 1e-3 on this seed."""
    seed, v0 = row["seed"], start_vector(sum(p.numel() for p in model.parameters()), row["seed"])

    def covnoise() -> float:
        with HessianOperator(model, per_example_ce, x, y) as op:
            return lanczos(op, tol=ACCURACY, k_max=20, v0=v0).value

    calls: dict[str, Callable] = {"covnoise lanczos": covnoise}
    pw = row.get("pyhessian_hvps_to_1e-3")
    if HAVE_PYHESSIAN and pw:
        calls["pyhessian power"] = lambda: pyhessian_call(model, x, y, v0, pw, 0.0)[0]
    lz = row["lanczos_hvps_to_1e-3"]
    if HAVE_EIGENTHINGS and lz:
        calls["eigenthings lanczos"] = lambda: eigenthings_lanczos(model, x, y, seed, lz)
    if HAVE_EIGENTHINGS and pw:
        calls["eigenthings power"] = lambda: eigenthings_power(model, x, y, seed, pw, 0.0)[0]
    return calls


def time_calls(
    model: nn.Module, x: Tensor, y: Tensor, rows: list[dict], reference: float, rounds: int
) -> dict[str, dict]:
    """Median wall time per call and error reached, interleaved over methods and seeds."""
    times: dict[str, list[float]] = {}
    errors: dict[str, list[float]] = {}
    ratios: dict[str, list[float]] = {}
    order = random.Random(0)
    for _ in range(rounds):
        for row in rows:
            per_seed = {}
            calls = list(call_makers(model, x, y, row).items())
            order.shuffle(calls)  # no method always runs first (or after the same one)
            for name, call in calls:
                t0 = time.perf_counter()
                value = call()
                per_seed[name] = time.perf_counter() - t0
                times.setdefault(name, []).append(per_seed[name])
                errors.setdefault(name, []).append(abs(value - reference) / abs(reference))
            for name, t in per_seed.items():
                ratios.setdefault(name, []).append(t / per_seed["covnoise lanczos"])
    return {
        name: {
            "ms_median": statistics.median(times[name]) * 1e3,
            "over_covnoise_median": statistics.median(ratios[name]),
            "over_covnoise_range": (min(ratios[name]), max(ratios[name])),
            "max_error": max(errors[name]),
        }
        for name in times
    }


def time_hvp(model: nn.Module, x: Tensor, y: Tensor, rounds: int) -> dict[str, float]:
    """Median ms of one gradient, one HVP (graph kept / rebuilt), and the peers' HVPs."""
    op = HessianOperator(model, per_example_ce, x, y)
    rebuilt = HessianOperator(model, per_example_ce, x, y, cache_graph=False)
    v = start_vector(op.dim, 99)
    fns: dict[str, Callable] = {
        "gradient": op.gradient,
        "covnoise HVP, graph kept": lambda: op.matvec(v),
        "covnoise HVP, graph rebuilt": lambda: rebuilt.matvec(v),
    }
    if HAVE_PYHESSIAN:
        from pyhessian.utils import hessian_vector_product

        params = list(model.parameters())
        grads = torch.autograd.grad(
            F.cross_entropy(model(x), y), params, create_graph=True
        )  # what pyhessian.hessian keeps; per-parameter views of the same v
        vs = [t.view(p.shape) for t, p in zip(torch.split(v, op.numels), params, strict=True)]
        fns["PyHessian HVP, graph kept"] = lambda: hessian_vector_product(grads, params, vs)
    if HAVE_EIGENTHINGS:
        et = eigenthings_operator(model, x, y)
        fns["eigenthings HVP (graph rebuilt)"] = lambda: et.matvec(v)
    for f in fns.values():
        f()  # warm up
    samples: dict[str, list[float]] = {k: [] for k in fns}
    order, names = random.Random(1), list(fns)
    for _ in range(rounds):  # interleaved, one call each per round, in a shuffled order
        order.shuffle(names)
        for name in names:
            f = fns[name]
            t0 = time.perf_counter()
            f()
            samples[name].append(time.perf_counter() - t0)
    return {k: statistics.median(t) * 1e3 for k, t in samples.items()}


# -- report -------------------------------------------------------------------------------


def _median(values: list) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def summarise(rows: list[dict], calls: dict, hvp: dict, meta: dict) -> dict:
    keys = [
        "lanczos_hvps_to_1e-3",
        "lanczos_rule_hvps",
        "lanczos_rule_iterations",
        "pyhessian_hvps_to_1e-3",
        "pyhessian_rule_hvps",
        "eigenthings_power_rule_hvps",
    ]
    out = dict(meta)
    for k in keys:
        out[f"{k}_median"] = _median([r.get(k) for r in rows])
        out[f"{k}_range"] = [
            min((r[k] for r in rows if r.get(k) is not None), default=None),
            max((r[k] for r in rows if r.get(k) is not None), default=None),
        ]
    for k in ("lanczos_rule_error", "pyhessian_rule_error", "eigenthings_power_rule_error"):
        out[f"{k}_max"] = max((r[k] for r in rows if k in r), default=None)
    out["lanczos_converged_all"] = all(r["lanczos_converged"] for r in rows)
    out["calls"] = calls
    out["hvp_ms"] = hvp
    grad = hvp["gradient"]
    out["hvp_over_gradient"] = {k: t / grad for k, t in hvp.items() if k != "gradient"}
    if "PyHessian HVP, graph kept" in hvp:
        out["covnoise_hvp_over_pyhessian_hvp"] = (
            hvp["covnoise HVP, graph kept"] / hvp["PyHessian HVP, graph kept"]
        )
    return out


def print_report(s: dict, rows: list[dict]) -> None:
    print(s["machine"])
    print(
        f"digits MLP, {s['params']} params, probe {s['probe']}, {s['train_steps']} SGD steps; "
        f"λ_max reference {s['lambda_max_reference']:.6g} (residual "
        f"{s['reference_residual']:.1e}); peers: pyhessian "
        f"{'yes' if HAVE_PYHESSIAN else 'not installed'}, hessian-eigenthings "
        f"{'yes' if HAVE_EIGENTHINGS else 'not installed'}"
    )
    print(f"\nper seed: HVPs until λ_max stays within {ACCURACY:g}; each own rule at tol 1e-3")
    print(
        f"{'seed':>4} {'lz→1e-3':>8} {'lz rule':>8} {'lz err':>8} {'ph→1e-3':>8} "
        f"{'ph rule':>8} {'ph err':>8} {'et pw rule':>10} {'et pw err':>9}"
    )
    for r in rows:
        print(
            f"{r['seed']:>4} {r['lanczos_hvps_to_1e-3'] or '-':>8} {r['lanczos_rule_hvps']:>8} "
            f"{r['lanczos_rule_error']:8.1e} {r.get('pyhessian_hvps_to_1e-3') or '-':>8} "
            f"{r.get('pyhessian_rule_hvps', '-'):>8} {r.get('pyhessian_rule_error', 0):8.1e} "
            f"{r.get('eigenthings_power_rule_hvps', '-'):>10} "
            f"{r.get('eigenthings_power_rule_error', 0):9.1e}"
        )
    print("\nwhole λ_max call at 1e-3 (median ms; ÷ covnoise's: median, range; worst error)")
    for name, c in s["calls"].items():
        lo, hi = c["over_covnoise_range"]
        print(
            f"  {name:<22} {c['ms_median']:8.1f} ms  {c['over_covnoise_median']:5.2f}x "
            f"({lo:.2f}–{hi:.2f}x)  max error {c['max_error']:.1e}"
        )
    print("\none HVP on the probe (median ms of interleaved calls; ÷ one gradient)")
    print(f"  {'gradient':<32} {s['hvp_ms']['gradient']:7.2f} ms  1.00x")
    for name, ratio in s["hvp_over_gradient"].items():
        print(f"  {name:<32} {s['hvp_ms'][name]:7.2f} ms  {ratio:.2f}x")
    if "covnoise_hvp_over_pyhessian_hvp" in s:
        ratio = s["covnoise_hvp_over_pyhessian_hvp"]
        print(f"  covnoise HVP ÷ PyHessian HVP (same graph): {ratio:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--seeds", type=int, default=10, help="number of start vectors")
    parser.add_argument("--steps", type=int, default=300, help="training steps before probing")
    parser.add_argument("--power-max", type=int, default=200, help="power iteration cap")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds over all seeds")
    parser.add_argument("--hvp-rounds", type=int, default=200, help="timing rounds per HVP")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, x, y = trained_digits_mlp(args.steps)
    op = HessianOperator(model, per_example_ce, x, y)
    ref = lanczos(op, k_max=120, tol=1e-9, generator=torch.Generator().manual_seed(12345))
    rows = accuracy_rows(model, x, y, op, ref.value, args)
    op.close()
    calls = time_calls(model, x, y, rows, ref.value, args.rounds)
    hvp = time_hvp(model, x, y, args.hvp_rounds)
    meta = {
        "params": op.dim,
        "probe": int(x.shape[0]),
        "train_steps": args.steps,
        "lambda_max_reference": ref.value,
        "reference_residual": ref.residual,
        "machine": describe_machine(),
    }
    summary = summarise(rows, calls, hvp, meta)
    if args.json:
        print(json.dumps({"summary": summary, "runs": rows}, indent=2))
        return
    print_report(summary, rows)


if __name__ == "__main__":
    main()
