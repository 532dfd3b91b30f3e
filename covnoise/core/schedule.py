"""When things happen in a run: its length, its learning rate, its evaluations.

Each epoch is a random permutation of the training set cut into full batches of size L;
the learning rate follows the config's schedule (constant, step, warm-up then cosine). A run
is evaluated at step 0, every `eval_every` steps and at its last step; sharpness and noise
statistics are measured at every `sharpness_every`-th evaluation (the first included). The
training loop and the cost model both read these functions, so the estimate cannot drift
from what a run does.
"""

from __future__ import annotations

import math

from covnoise.config import RunConfig


def learning_rate(config: RunConfig, step: int, steps_per_epoch: int, total_steps: int) -> float:
    """Learning rate at `step` for the config's schedule (peak = config.effective_lr)."""
    peak = config.effective_lr
    if config.schedule == "constant":
        return peak
    if config.schedule == "step":
        every = max(1, round(config.step_every_epochs * steps_per_epoch))
        return peak * config.step_gamma ** (step // every)
    warm = round(config.warmup_epochs * steps_per_epoch)
    if step < warm:
        return peak * (step + 1) / warm
    span = max(1, total_steps - warm)
    return 0.5 * peak * (1 + math.cos(math.pi * min(1.0, (step - warm) / span)))


def total_steps(config: RunConfig, n_train: int) -> tuple[int, int]:
    """(steps per epoch, total steps). Each epoch is a random permutation cut into full
    batches of size L (the remainder is dropped)."""
    per_epoch = max(1, n_train // config.batch_size)
    if config.steps is not None:
        return per_epoch, config.steps
    return per_epoch, max(1, round(config.epochs * per_epoch))


def is_evaluation(step: int, n_steps: int, eval_every: int) -> bool:
    """Whether the run evaluates after `step` steps."""
    return step == 0 or step % eval_every == 0 or step == n_steps


def evaluation_count(n_steps: int, eval_every: int) -> int:
    """Evaluations of a run of `n_steps`: step 0, every `eval_every` steps, and the last."""
    return 1 + n_steps // eval_every + (1 if n_steps % eval_every else 0)


def measures_curvature(evaluation: int, sharpness_every: int) -> bool:
    """Whether the `evaluation`-th evaluation (0-based) measures sharpness and noise."""
    return bool(sharpness_every) and evaluation % sharpness_every == 0


def curvature_count(evaluations: int, sharpness_every: int) -> int:
    """How many of `evaluations` evaluations measure sharpness and noise."""
    return 0 if sharpness_every == 0 else -(-evaluations // sharpness_every)
