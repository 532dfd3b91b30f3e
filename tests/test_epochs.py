"""Equal data per epoch: the batch stream, run length, schedules and the cost model.

References: the batches are checked against torch.randperm drawn from an identically seeded
generator and cut by hand; the counts against N/L and E·N written out; the cost model against
the events of real runs.
"""

from __future__ import annotations

import pytest
import torch

from covnoise import results
from covnoise.config import RunConfig
from covnoise.core.schedule import learning_rate, total_steps
from covnoise.core.train import _Batches, run

CPU = torch.device("cpu")
#: digits: 1347 training examples; a validation fraction of 0.1 holds out 135 of them.
DIGITS_N, DIGITS_FIT = 1347, 1212
FAST = dict(
    dataset="digits",
    model="mlp",
    width=16,
    depth=2,
    small_batch=16,
    probe_size=32,
    sharpness_every=0,
    device="cpu",
)


def _perms(n: int, seed: int, count: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randperm(n, generator=gen) for _ in range(count)]


def test_default_batches_cut_a_continuous_stream_of_permutations():
    n, size, seed = 10, 4, 3
    batches = _Batches(n, size, seed, CPU)
    drawn = torch.cat([batches.next() for _ in range(10)])  # 40 examples = 4 epochs
    assert torch.equal(drawn, torch.cat(_perms(n, seed, 4)))
    for epoch in range(4):  # every example exactly once per N examples drawn
        assert sorted(drawn[epoch * n : (epoch + 1) * n].tolist()) == list(range(n))


def test_drop_last_batches_cut_each_permutation_and_drop_its_remainder():
    n, size, seed = 10, 4, 3
    batches = _Batches(n, size, seed, CPU, drop_last=True)
    drawn = [batches.next() for _ in range(6)]
    expected = [p[i : i + size] for p in _perms(n, seed, 3) for i in (0, 4)]  # 8, 9 dropped
    assert all(torch.equal(a, b) for a, b in zip(drawn, expected, strict=True))


@pytest.mark.parametrize("size", [1, 7, 32, 100, 256, 1024, 1212])
def test_epochs_are_epochs_times_n_examples_for_every_batch_size(size):
    cfg = RunConfig(**FAST, batch_size=size, epochs=3.0)
    per_epoch, steps = total_steps(cfg, DIGITS_FIT)
    assert per_epoch == DIGITS_FIT / size
    assert abs(steps * size - 3 * DIGITS_FIT) <= size / 2
    legacy_per_epoch, legacy = total_steps(cfg.replace(drop_last=True), DIGITS_FIT)
    assert legacy_per_epoch == DIGITS_FIT // size and legacy == 3 * (DIGITS_FIT // size)
    assert total_steps(cfg.replace(steps=17, epochs=None), DIGITS_FIT)[1] == 17


def test_schedules_convert_epochs_with_the_fractional_steps_per_epoch():
    cfg = RunConfig(lr=1.0, batch_size=256, schedule="warmup_cosine", warmup_epochs=1.0)
    per_epoch, steps = total_steps(cfg, DIGITS_FIT)  # 4.734 steps per epoch: 5 to warm up
    lrs = [learning_rate(cfg, s, per_epoch, steps) for s in range(6)]
    assert lrs == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    legacy_per_epoch, legacy_steps = total_steps(cfg.replace(drop_last=True), DIGITS_FIT)
    legacy = [learning_rate(cfg, s, legacy_per_epoch, legacy_steps) for s in range(5)]
    assert legacy == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])  # 4 steps per epoch
    step = cfg.replace(schedule="step", step_every_epochs=2.0, step_gamma=0.5)
    at = [learning_rate(step, s, per_epoch, steps) for s in (8, 9, 17, 18)]  # every 9 steps
    assert at == [1.0, 0.5, 0.5, 0.25]
    assert [learning_rate(step, s, legacy_per_epoch, steps) for s in (7, 8)] == [1.0, 0.5]


def _run(cfg: RunConfig) -> tuple[dict, list[dict], dict]:
    events: list[dict] = []
    summary = run(cfg, events.append)
    return events[0], [e for e in events if e["event"] == "metric"], summary


def test_a_run_sees_epochs_times_its_training_set():
    """The must-show: digits at L = 1024 for 3 epochs sees 3 × (training set) examples within
    one batch, the training set being what the validation split leaves."""
    cfg = RunConfig(**FAST, batch_size=1024, epochs=3.0)
    start, metrics, summary = _run(cfg)
    assert start["n_train"] == DIGITS_FIT and start["n_val"] == DIGITS_N - DIGITS_FIT
    assert summary["steps"] == 4 and summary["examples_seen"] == 4 * 1024
    assert abs(summary["examples_seen"] - 3 * start["n_train"]) <= 1024
    assert metrics[-1]["epoch"] == pytest.approx(4 * 1024 / DIGITS_FIT)
    # the runs made before the option: 3 full batches of 1024, a third of digits unseen
    start, _, summary = _run(cfg.replace(drop_last=True, val_fraction=0.0))
    assert start["n_train"] == DIGITS_N and summary["examples_seen"] == 3 * 1024


@pytest.mark.parametrize("legacy", [False, True])
def test_cost_model_counts_match_a_real_run_by_epochs(legacy):
    cfg = RunConfig(**FAST, batch_size=128, epochs=2.5, eval_every=5)
    if legacy:
        cfg = cfg.replace(drop_last=True, val_fraction=0.0)
    start, metrics, summary = _run(cfg)
    cost = results.run_cost(cfg, n_train=DIGITS_N, n_test=450, forward_flops=1.0)
    assert cost.steps == start["total_steps"] == summary["steps"] == (25 if legacy else 24)
    assert cost.evaluations == len(metrics)
    assert cost.examples == summary["examples_seen"]
