"""How long the operations of a run take on this machine, measured on the run's own setting.

A cost model counted in FLOPs misses what sets the pace of small models on a CPU (Python,
kernel launches, the noise statistics' many small products) and needs a rate that differs
by 10× or more between a 32-wide MLP on digits and a 256-wide one on MNIST-1D. Timing the
real code path instead — the training loop's own set-up, a few of its steps, one evaluation
with and one without λ_max and the noise statistics — costs a fraction of a second for the
settings a teacher launches and is right on any machine without calibration. The counts
that turn these times into a run's time come from the schedule (covnoise.results.cost).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any

from covnoise.config import RunConfig

#: Steps long enough that the probe configuration validates; only a few of them are taken.
_PROBE_STEPS = 10_000


@dataclass(frozen=True)
class OperationTimes:
    """Seconds per operation of one setting: `setup` (load the data, build the model, the
    noise structure and the evaluator), one training `step`, one `evaluation` without
    curvature (losses and accuracies on every split, the probe gradient), and what λ_max
    and the noise statistics add to an evaluation (`curvature`), which took `products`
    Hessian-vector products (Lanczos' and the Tr(HΣ) draws'; how many depends on the
    state of training, so a run's later evaluations may take fewer)."""

    setup: float
    step: float
    evaluation: float
    curvature: float
    products: float = 0.0


def timing_config(config: RunConfig) -> RunConfig:
    """`config` with the fields that do not change the cost of an operation set to fixed
    values (seed, multiplier, length, cadence, name), so settings that cost the same share
    one measurement."""
    return dataclasses.replace(
        config,
        seed=0,
        noise_scale=1.0,
        epochs=None,
        steps=_PROBE_STEPS,
        schedule="constant",
        warmup_epochs=0.0,
        eval_every=_PROBE_STEPS,
        sharpness_every=1,
        name=None,
    )


def time_operations(
    config: RunConfig,
    threads: int | None = None,
    budget: float = 0.25,
    max_steps: int = 200,
    whole: bool = True,
) -> OperationTimes:
    """Time `config`'s operations through the training loop's own code (covnoise.core.train).

    Set-up once; then steps until `budget` seconds have passed (at least
    `config.stats_every` of them, so a refresh of the noise statistics is in the mean, and at
    most `max_steps`). With `whole`, an evaluation with curvature at the start (as every run
    does, and a warm-up for the kernels) and, after the steps, one evaluation without and
    one with curvature. Without it (for settings whose evaluations take seconds), the parts
    are timed once each and scaled by their counts: a forward pass over `_SAMPLE_ROWS`
    training examples (scaled to every split), the probe gradient, two Hessian-vector
    products on the probe (scaled to the most Lanczos and Tr(HΣ) take) and the noise
    structure's statistics on the probe. `threads` sets torch's intra-op threads for the
    measurement (a worker's share of the cores), restored afterwards. Raises whatever the
    run itself would raise (a missing data file, a refused configuration).
    """
    import torch

    from covnoise.core.allocator import freed_memory_kept
    from covnoise.core.train import Training

    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    # freed blocks kept as the run's own process keeps them, and given back afterwards (the
    # app's server times runs in-process and would otherwise keep up to 256 MiB)
    try:
        with freed_memory_kept():
            cfg = timing_config(config)
            t0 = time.perf_counter()
            run = Training(cfg, lambda event: None, t0)
            setup = time.perf_counter() - t0
            if whole:
                run.evaluation(0.0, {})
            step = _time_steps(run, budget, max_steps)
            times = _time_whole(run) if whole else _time_parts(run)
            del run
    finally:
        torch.set_num_threads(before)
    return OperationTimes(setup, step, *times)


#: Training examples the sampled evaluation's forward pass is timed on.
_SAMPLE_ROWS = 512


def _time_steps(run: Any, budget: float, max_steps: int) -> float:
    """Mean seconds of a training step, read back as the loop does."""
    steps, t0 = 0, time.perf_counter()
    while steps < max_steps and (
        steps < max(3, run.config.stats_every) or time.perf_counter() - t0 < budget
    ):
        run.train_step()
        steps += 1
        if len(run.pending) >= run.check_every:
            run.check()
    run.check()  # waits for the device, so the steps are done when the clock stops
    return (time.perf_counter() - t0) / steps


def _time_whole(run: Any) -> tuple[float, float, float]:
    """(evaluation, curvature, products) from one whole evaluation without and one with
    curvature."""
    run.evaluator.curvature_every = _PROBE_STEPS  # the next evaluation: no curvature
    t0 = time.perf_counter()
    run.evaluation(0.0, {})
    plain = time.perf_counter() - t0
    run.evaluator.curvature_every = 1
    run.evaluator.n_evals = 0
    t0 = time.perf_counter()
    run.evaluation(0.0, {})
    with_curvature = time.perf_counter() - t0
    m = run.last
    products = m.get("sharpness_hvps", 0.0) + m.get("noise_trace_hsigma_draws", 0.0)
    return plain, max(0.0, with_curvature - plain), products


def _time_parts(run: Any) -> tuple[float, float, float]:
    """(evaluation, curvature, products) from each part timed once and scaled by its count;
    products: the most a curvature evaluation may take (Lanczos' budget, its residual check,
    and the Tr(HΣ) cap)."""
    import torch

    from covnoise.core.curvature import HessianOperator
    from covnoise.core.evaluation import evaluate
    from covnoise.core.losses import per_example_loss
    from covnoise.core.noise import HSIGMA_MAX_DRAWS
    from covnoise.core.noise.probe import Probe

    cfg, data, ev = run.config, run.data, run.evaluator
    n = min(_SAMPLE_ROWS, len(data.x_train))
    rows = len(data.x_train) + len(data.x_val) + len(data.x_test)
    evaluate(run.model, data.x_train[:64], data.y_train[:64])  # warm-up
    t0 = time.perf_counter()
    evaluate(run.model, data.x_train[:n], data.y_train[:n])
    forward = (time.perf_counter() - t0) * rows / n
    t0 = time.perf_counter()
    loss = per_example_loss(run.model(ev.probe_x), ev.probe_y).mean()
    probe_grad = torch.autograd.grad(loss, run.params)
    float(sum(g.sum() for g in probe_grad))
    evaluation = forward + time.perf_counter() - t0
    run.model.eval()
    op = HessianOperator(run.model, per_example_loss, ev.probe_x, ev.probe_y, run.params)
    vs = [torch.randn_like(p) for p in run.params]
    op.hvp_list(vs)  # builds the operator's first-order graph once, as Lanczos does
    t0 = time.perf_counter()
    for _ in range(2):
        out = op.hvp_list(vs)
    float(sum(o.sum() for o in out))
    per_product = (time.perf_counter() - t0) / 2
    products = float(cfg.lanczos_iters + 1)
    statistics = 0.0
    if cfg.noise != "none":
        t0 = time.perf_counter()
        run.structure.statistics(Probe(run.model, per_example_loss, ev.probe_x, ev.probe_y, ev.gen))
        statistics = time.perf_counter() - t0
        products += max(cfg.noise_samples, HSIGMA_MAX_DRAWS)
    run.model.train()
    return evaluation, products * per_product + statistics, products
