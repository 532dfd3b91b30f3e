"""How long a run trains and at what learning rate: the run length and the lr schedules.

Each epoch is a random permutation of the training set cut into full batches of size L;
the learning rate follows the config's schedule (constant, step, warm-up then cosine).
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
