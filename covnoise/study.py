"""The study behind the shipped cached runs: its grids, and the commands that rebuild them.

Each study is a list of ``python -m covnoise sweep`` commands (the project's own sweep command)
over one data set: the small-batch baseline at batch M, plain large-batch SGD at batch L at
the base learning rate and at larger (tuned) ones, and large batch with each noise structure
at the multipliers s ∈ {0.25, 0.5, 1, 2}, every setting with three or more seeds, for the same
number of epochs. ``python -m covnoise.study run NAME`` runs those commands one after the other into
a fresh store and exports the runs to ``cached_runs/study-NAME.parquet``; every run's `name`
field records the study, the command that rebuilds the file and the sweep that made the run,
and the store records its code revision, versions, device and wall time.

The analysis of the runs (tables, claims, verdicts) lives in covnoise.findings.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from covnoise.config import RunConfig

SCALES = (0.25, 0.5, 1.0, 2.0)
SEEDS = (0, 1, 2)
NOISY = ("isotropic", "diag", "full")


@dataclass(frozen=True)
class Study:
    """One data set's grid: shared training flags plus the sweeps that make up the study.

    `target_train_loss` is the training loss whose first crossing counts as "optimised" in
    the steps-to-target table; it was fixed before the study was run, as a loss the plain
    large-batch baseline reaches within its budget.
    """

    name: str
    dataset: str
    small_batch: int
    large_batch: int
    base_lr: float
    tuned_lrs: tuple[float, ...]
    epochs: float
    target_train_loss: float
    common: tuple[str, ...]
    small_eval_every: int
    large_eval_every: int
    description: str
    seeds: tuple[int, ...] = SEEDS
    scales: tuple[float, ...] = SCALES
    extra: dict = field(default_factory=dict)

    def sweeps(self) -> list[tuple[str, list[str]]]:
        """(label, sweep arguments) of each sweep, in the order they are run."""
        seeds = ",".join(str(s) for s in self.seeds)
        shared = [*self.common, "--small-batch", str(self.small_batch), "--epochs",
                  f"{self.epochs:g}", "--lr", f"{self.base_lr:g}", "--seeds", seeds]  # fmt: skip
        lrs = ",".join(f"{lr:g}" for lr in (self.base_lr, *self.tuned_lrs))
        return [
            ("small batch", [*shared, "--batch-sizes", str(self.small_batch),
                             "--eval-every", str(self.small_eval_every)]),
            ("large batch, learning rates", [*shared, "--batch-sizes", str(self.large_batch),
                                             "--eval-every", str(self.large_eval_every),
                                             "--lrs", lrs]),
            ("large batch + noise", [*shared, "--batch-sizes", str(self.large_batch),
                                     "--eval-every", str(self.large_eval_every),
                                     "--noises", ",".join(NOISY),
                                     "--noise-scales", ",".join(f"{s:g}" for s in self.scales)]),
        ]  # fmt: skip

    def configs(self) -> list[RunConfig]:
        """Every RunConfig the study's sweep commands run (parsed by the sweep command)."""
        from covnoise.cli import build_parser
        from covnoise.runs_cli import sweep_configs

        parser = build_parser()
        out: list[RunConfig] = []
        for label, args in self.sweeps():
            parsed = parser.parse_args(["sweep", *args, "--name", self.run_name(label)])
            out.extend(sweep_configs(parsed))
        return out

    def run_name(self, label: str) -> str:
        """The `name` recorded in each run of one sweep: how the run was produced."""
        return f"study {self.name} ({self.command}); sweep: {label}"

    @property
    def output(self) -> str:
        return f"cached_runs/study-{self.name}.parquet"

    @property
    def command(self) -> str:
        return f"python -m covnoise.study run {self.name}"


_MLP = ("--model", "mlp", "--width", "256", "--depth", "3")
_MEASURE = ("--sharpness-every", "10", "--probe-size", "256")

STUDIES: dict[str, Study] = {
    "mnist1d": Study(
        name="mnist1d", dataset="mnist1d", small_batch=32, large_batch=1024, base_lr=0.4,
        tuned_lrs=(0.8, 1.6), epochs=600, target_train_loss=0.1,
        common=("--dataset", "mnist1d", *_MLP, *_MEASURE),
        small_eval_every=250, large_eval_every=6, seeds=(0, 1, 2, 3, 4),
        description="MNIST-1D (4000 train / 1000 test), MLP 256×3, plain SGD at a constant "
                    "learning rate, 600 epochs, five seeds; M = 32, L = 1024; evaluations every "
                    "2 epochs, sharpness and noise statistics every 20 epochs",
    ),  # fmt: skip
    "digits": Study(
        name="digits", dataset="digits", small_batch=32, large_batch=1024, base_lr=0.4,
        tuned_lrs=(0.2, 0.8), epochs=400, target_train_loss=0.02,
        common=("--dataset", "digits", *_MLP, *_MEASURE),
        small_eval_every=84, large_eval_every=2,
        description="digits (1347 train / 450 test), MLP 256×3, plain SGD at a constant "
                    "learning rate, 400 epochs, three seeds; M = 32, L = 1024; evaluations every "
                    "2 epochs, sharpness and noise statistics every 20 epochs",
    ),  # fmt: skip
}


#: Studies that need a CUDA GPU (their common flags ask for one). Run them on a GPU machine
#: with ``python -m covnoise.study run NAME`` after putting the data under $COVNOISE_DATA_DIR.
GPU_STUDIES: dict[str, Study] = {
    "cifar10": Study(
        name="cifar10", dataset="cifar10", small_batch=128, large_batch=4096, base_lr=0.1,
        tuned_lrs=(0.4, 0.8), epochs=40, target_train_loss=0.5,
        common=("--dataset", "cifar10", "--model", "vgg", "--width", "256", "--momentum", "0.9",
                "--weight-decay", "5e-4", "--schedule", "warmup_cosine", "--warmup-epochs", "2",
                "--sharpness-every", "10", "--probe-size", "256", "--device", "cuda"),
        small_eval_every=390, large_eval_every=12, seeds=(0, 1), scales=(1.0,),
        description="CIFAR-10 (50000 train / 10000 test), VGG with 64 base channels, SGD with "
                    "momentum 0.9, weight decay 5e-4, warm-up + cosine, 40 epochs; M = 128, "
                    "L = 4096; evaluations every epoch",
    ),  # fmt: skip
}
ALL_STUDIES: dict[str, Study] = {**STUDIES, **GPU_STUDIES}


def sweep_argv(study: Study, args: list[str], store: str, label: str) -> list[str]:
    """The full sweep command line of one of the study's sweeps."""
    return [sys.executable, "-m", "covnoise", "sweep", *args, "--store", store,
            "--name", study.run_name(label), "--no-progress"]  # fmt: skip


def run_study(study: Study, output: str | Path, workers: int | None = None,
              store: str | None = None) -> int:
    """Run every sweep of `study` into `store` (a temporary one when None) and export them.

    Returns the number of runs written to `output`. A sweep whose runs do not all finish
    stops the study (its runs stay in the store for a look with ``runs ls``).
    """
    with tempfile.TemporaryDirectory() as tmp:
        db = store or str(Path(tmp) / "study.sqlite")
        for label, args in study.sweeps():
            argv = sweep_argv(study, args, db, label)
            if workers is not None:
                argv += ["--workers", str(workers)]
            print(f"[{study.name}] {label}: {shlex.join(argv[1:])}", flush=True)
            t0 = time.monotonic()
            done = subprocess.run(argv)
            print(f"[{study.name}] {label}: exit {done.returncode} after "
                  f"{time.monotonic() - t0:.0f} s", flush=True)  # fmt: skip
            if done.returncode != 0:  # diverged runs count as done: divergence is a result
                raise RuntimeError(f"sweep {label!r} failed with exit {done.returncode}")
        export = [sys.executable, "-m", "covnoise", "runs", "export", "--store", db,
                  "--to", str(output)]  # fmt: skip
        subprocess.run(export, check=True)
    from covnoise.store import read_runs_parquet

    runs, _ = read_runs_parquet(output)
    return len(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m covnoise.study", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run a study's sweeps and export its cached runs")
    run.add_argument("name", choices=sorted(ALL_STUDIES))
    run.add_argument("--to", default=None, help="the Parquet file (default: the study's)")
    run.add_argument("--workers", type=int, default=None, help="runs at a time")
    run.add_argument("--store", default=None, help="keep the runs in this store too")
    show = sub.add_parser("show", help="print a study's sweep commands")
    show.add_argument("name", choices=sorted(ALL_STUDIES))
    args = parser.parse_args(argv)
    study = ALL_STUDIES[args.name]
    if args.command == "show":
        print(f"# {study.description}")
        for label, sweep_args in study.sweeps():
            print(f"# {label}")
            print(shlex.join(["python", "-m", "covnoise", "sweep", *sweep_args]))
        return 0
    n = run_study(study, args.to or study.output, workers=args.workers, store=args.store)
    print(f"wrote {n} runs to {args.to or study.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
