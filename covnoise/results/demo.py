"""The small fixed set of runs the app-page tests read: its grid, and the command that rebuilds it.

``covnoise demo tests/data/demo-digits.parquet`` queues the grid below on the local
engine (a fresh temporary store), waits, and exports the runs with the store's Parquet export.
The grid: digits, a 2-layer MLP, large batch L = 1024 with each noise structure (none,
isotropic, diag, full) at two multipliers, plus the small-batch baseline (SGD at M = 32, no
noise), all for the same number of epochs, two seeds each; every epoch cut into full batches
(drop-last) and no validation split, as the runs stored before those options were.
"""

from __future__ import annotations

from pathlib import Path

from covnoise.config import RunConfig
from covnoise.results.study import run_parts
from covnoise.runs.engine import expand_grid

COMMAND = "covnoise demo tests/data/demo-digits.parquet"
NAME = f"demo-digits ({COMMAND})"

#: The large-batch runs' shared settings; the baseline differs in batch size and eval cadence.
DEMO_BASE = RunConfig(
    dataset="digits",
    model="mlp",
    width=64,
    depth=2,
    batch_size=1024,
    small_batch=32,
    lr=0.5,
    epochs=80.0,
    eval_every=8,
    probe_size=256,
    # made before validation splits and equal data per epoch, and kept so: the app tests
    # check that such runs (drop-last, no validation) draw as they always did
    drop_last=True,
    val_fraction=0.0,
    name=NAME,
)
DEMO_NOISES = ("none", "isotropic", "diag", "full")
DEMO_SCALES = (1.0, 4.0)
DEMO_SEEDS = (0, 1)
#: digits has 1347 training examples: one step per epoch at L = 1024, 42 at M = 32.
BASELINE_EVAL_EVERY = 8 * 42


def demo_configs() -> list[RunConfig]:
    """Every config of the demo grid (large-batch grid first, then the small-batch baseline)."""
    grid = expand_grid(DEMO_BASE, noises=DEMO_NOISES, noise_scales=DEMO_SCALES, seeds=DEMO_SEEDS)
    baseline = [
        DEMO_BASE.replace(
            batch_size=DEMO_BASE.small_batch,
            noise="none",
            seed=seed,
            eval_every=BASELINE_EVAL_EVERY,
        )
        for seed in DEMO_SEEDS
    ]
    return grid + baseline


def build_demo(path: str | Path, workers: int | None = None) -> int:
    """Run the demo grid on the local engine and export it to `path`; returns the run count."""
    return run_parts([("demo", demo_configs())], path, workers=workers)
