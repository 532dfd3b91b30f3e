"""The cost of a run before it is launched: counts from the training schedule, FLOPs, seconds.

The counts (steps, evaluations, sharpness evaluations, Hessian-vector products) follow the
training loop's schedule exactly; FLOPs are a multiple of one example's forward pass, which
torch's FLOP counter measures on the built model. Seconds come, where the setting has been
timed on this machine (covnoise.core.timing), from the counts times the measured seconds
per operation (`timed_seconds`); otherwise from FLOPs at a rate plus fixed per-operation
overheads, which dominate on small models (`run_seconds`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from covnoise.config import RunConfig
from covnoise.core.noise import HSIGMA_MAX_DRAWS
from covnoise.core.schedule import (
    curvature_count,
    curvature_every,
    evaluation_count,
    total_steps,
)
from covnoise.data.validation import validation_size

if TYPE_CHECKING:
    from covnoise.core.timing import OperationTimes

#: Step time relative to a plain step, per structure (the design's cost targets).
STRUCTURE_COST: dict[str, float] = {"none": 1.0, "isotropic": 1.3, "diag": 1.3, "full": 1.1}


#: Fixed time per operation on a small model, where Python and kernel-launch overheads and
#: not FLOPs set the pace (measured on a 2-core CPU with a 2-layer MLP on digits: about 2 ms
#: per training step, 4 ms per Hessian-vector product, 5 ms per evaluation).
OVERHEAD_SECONDS: dict[str, float] = {"step": 2e-3, "hvp": 4e-3, "evaluation": 5e-3}


@dataclass(frozen=True)
class Cost:
    """The work of one run: counts from the training loop's schedule and a FLOP estimate."""

    steps: int
    evaluations: int
    sharpness_evaluations: int
    hvps: int
    examples: int
    flops: float
    train_flops: float = 0.0  # of `flops`: the training steps
    curvature_flops: float = 0.0  # of `flops`: the Hessian-vector products

    def fixed_seconds(self) -> float:
        """Time the per-operation overheads take whatever the FLOP rate."""
        o = OVERHEAD_SECONDS
        return self.steps * o["step"] + self.hvps * o["hvp"] + self.evaluations * o["evaluation"]

    def split_seconds(self, rate: float) -> dict[str, float]:
        """run_seconds split into training steps, evaluations (losses, accuracies, the probe
        gradient) and curvature (λ_max and the noise statistics); the parts sum to it."""
        o = OVERHEAD_SECONDS
        eval_flops = self.flops - self.train_flops - self.curvature_flops
        return {
            "training": self.train_flops / rate + self.steps * o["step"],
            "evaluation": eval_flops / rate + self.evaluations * o["evaluation"],
            "curvature": self.curvature_flops / rate + self.hvps * o["hvp"],
        }


def run_cost(config: RunConfig, n_train: int, n_test: int, forward_flops: float) -> Cost:
    """Work of one run of `config` on a data set of the given sizes.

    `n_train` is the data set's training set before the validation split is held out (the
    registry's size); the run trains on what is left after `config.val_fraction` of it is
    held out, with the schedule's steps. FLOPs: a training step is ≈ 3 forward passes per
    example times the structure's cost factor; an evaluation is a forward pass over the
    train, validation and test sets plus a gradient on the probe; a sharpness evaluation
    adds at most lanczos_iters + 1 (Lanczos and its residual check) Hessian-vector products,
    plus, with noise, at most max(noise_samples, HSIGMA_MAX_DRAWS) draws of ξᵀHξ (the Tr(HΣ)
    estimate draws until it is precise, see covnoise.core.noise.statistics), each on the probe
    at ≈ 6 forward passes.
    `forward_flops` is one example's forward pass.
    """
    n_fit = n_train - validation_size(n_train, config.val_fraction)
    _, steps = total_steps(config, n_fit)
    evals = evaluation_count(steps, config.eval_every)
    sharp = curvature_count(evals, curvature_every(config.sharpness_every, evals))
    draws = 0 if config.noise == "none" else max(config.noise_samples, HSIGMA_MAX_DRAWS)
    hvps = sharp * (config.lanczos_iters + 1 + draws)  # +1: Lanczos residual
    probe = min(config.probe_size, n_fit)
    f = float(forward_flops)
    train = steps * 3 * f * config.batch_size * STRUCTURE_COST.get(config.noise, 1.3)
    curvature = hvps * 6 * f * probe
    flops = train + evals * (f * (n_train + n_test) + 3 * f * probe) + curvature
    return Cost(steps, evals, sharp, hvps, steps * config.batch_size, flops, train, curvature)


def run_seconds(cost: Cost, rate: float) -> float:
    """Estimated wall time of a run: its FLOPs at `rate` plus its fixed overheads."""
    return cost.flops / rate + cost.fixed_seconds()


def timed_split(
    cost: Cost, times: OperationTimes, products: float | None = None
) -> dict[str, float]:
    """A run's wall time from the seconds its operations took on this machine, split like
    `Cost.split_seconds`: set-up and steps (training), every evaluation's losses and
    accuracies (evaluation), λ_max and the noise statistics where they are measured
    (curvature). `products`: the Hessian-vector products a curvature evaluation of this
    setting takes on average (from earlier runs of it), where the timed one took
    `times.products`; the curvature time scales with their ratio."""
    curvature = times.curvature
    if products and times.products:
        curvature *= products / times.products
    return {
        "training": times.setup + cost.steps * times.step,
        "evaluation": cost.evaluations * times.evaluation,
        "curvature": cost.sharpness_evaluations * curvature,
    }


def timed_seconds(cost: Cost, times: OperationTimes, products: float | None = None) -> float:
    """Estimated wall time of a run from its setting's measured operation times."""
    return sum(timed_split(cost, times, products).values())


#: Seconds before a run starts in the local engine (`python -m bench.engine`, 2-core CPU): a
#: worker's first run pays a fresh interpreter's imports; a queued run that follows another
#: on the same persistent worker only the hand-over.
WORKER_START_SECONDS = 4.0
QUEUED_START_SECONDS = 0.1


def grid_seconds(
    run_secs: Sequence[float],
    workers: int,
    first_start: float = WORKER_START_SECONDS,
    next_start: float = QUEUED_START_SECONDS,
    warm: int = 0,
) -> float:
    """Wall-clock estimate of a grid: runs spread over `workers` (longest first onto the
    least-loaded worker); each worker's first run adds `first_start` seconds of start-up
    (`next_start` on the first `warm` workers, already started and idle), every later run
    on it `next_start`."""
    per_run = sorted(run_secs, reverse=True)
    lanes = [0.0] * max(1, workers)
    used = [i < warm for i in range(len(lanes))]
    for t in per_run:
        i = lanes.index(min(lanes))
        lanes[i] += t + (next_start if used[i] else first_start)
        used[i] = True
    return max(lanes) if per_run else 0.0


def forward_flops(
    dataset_shape: Sequence[int], num_classes: int, model: str, width: int, depth: int
) -> float:
    """FLOPs (2 per multiply-add) of one example's forward pass on the built model: its
    matrix products and convolutions (what torch's FlopCounterMode counts, and the same
    number, tests/test_cost_flops.py). Activations, pooling and normalisation are left out
    (a few percent). Counted from the layers' shapes in one forward pass with hooks:
    FlopCounterMode would import torch._dynamo (2–3 s of the app's first cost estimate)."""
    import torch  # torch is loaded only when a cost is asked for
    from torch import nn

    from covnoise.core.models import build_model

    net = build_model(model, tuple(dataset_shape), num_classes, width=width, depth=depth)
    net.eval()
    total = 0

    def count(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        # every output entry is a dot product over the weight's fan-in (a row of the weight)
        fan_in = module.weight[0].numel()
        total += 2 * fan_in * output.numel()

    layers = (nn.Linear, nn.Conv1d, nn.Conv2d)
    handles = [m.register_forward_hook(count) for m in net.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            net(torch.zeros(1, *dataset_shape))
    finally:
        for h in handles:
            h.remove()
    return float(total)
