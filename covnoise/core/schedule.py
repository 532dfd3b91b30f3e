"""When things happen in a run: its length, its learning rate, its evaluations.

By default batches of size L are cut from a continuous stream of random permutations of the
training set (a permutation's remainder carries into the next), so an epoch is N examples,
N/L steps (fractional), and E epochs are E·N examples for every L. With `drop_last` each
permutation is cut into full batches and its remainder dropped: ⌊N/L⌋ steps per epoch, as
runs made before the option did. The learning rate follows the config's schedule (constant,
step, warm-up then cosine), its epochs converted to steps with the steps per epoch. A run
is evaluated at step 0, every `eval_every` steps and at its last step; sharpness and noise
statistics are measured at every `sharpness_every`-th evaluation (the first included); left
unset, the cadence is chosen by the run's length so that about CURVATURE_PER_RUN evaluations
measure them (they cost several times a plain evaluation, and at every evaluation of a short
run they were more than half of its work). The
training loop and the cost model both read these functions, so the estimate cannot drift
from what a run does.
"""

from __future__ import annotations

import math

from covnoise.config import RunConfig


def learning_rate(config: RunConfig, step: int, steps_per_epoch: float, total_steps: int) -> float:
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


def epoch_steps(config: RunConfig, n_train: int) -> float:
    """Steps in one epoch of `n_train` examples: N/L (fractional) from the continuous
    stream, or ⌊N/L⌋ (at least 1, an int) with `drop_last`."""
    if config.drop_last:
        return max(1, n_train // config.batch_size)
    return n_train / config.batch_size


def total_steps(config: RunConfig, n_train: int) -> tuple[float, int]:
    """(steps per epoch, total steps): `config.steps` when given, else
    round(epochs · steps per epoch), at least 1."""
    per_epoch = epoch_steps(config, n_train)
    if config.steps is not None:
        return per_epoch, config.steps
    return per_epoch, max(1, round(config.epochs * per_epoch))


def is_evaluation(step: int, n_steps: int, eval_every: int) -> bool:
    """Whether the run evaluates after `step` steps."""
    return step == 0 or step % eval_every == 0 or step == n_steps


def evaluation_count(n_steps: int, eval_every: int) -> int:
    """Evaluations of a run of `n_steps`: step 0, every `eval_every` steps, and the last."""
    return 1 + n_steps // eval_every + (1 if n_steps % eval_every else 0)


#: Evaluations that measure sharpness and noise in a run whose config leaves the cadence unset.
CURVATURE_PER_RUN = 20


def curvature_every(sharpness_every: int | None, evaluations: int) -> int:
    """The cadence a run uses: the config's `sharpness_every`, or when unset the smallest
    one that measures at most CURVATURE_PER_RUN of its `evaluations` (every evaluation of a
    short run)."""
    if sharpness_every is not None:
        return sharpness_every
    return max(1, -(-evaluations // CURVATURE_PER_RUN))


def measures_curvature(evaluation: int, sharpness_every: int) -> bool:
    """Whether the `evaluation`-th evaluation (0-based) measures sharpness and noise."""
    return bool(sharpness_every) and evaluation % sharpness_every == 0


def curvature_count(evaluations: int, sharpness_every: int) -> int:
    """How many of `evaluations` evaluations measure sharpness and noise."""
    return 0 if sharpness_every == 0 else -(-evaluations // sharpness_every)
