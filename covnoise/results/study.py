"""The studies behind the shipped cached runs, as data: their grids and how they are run.

A study is one data set's grid: the small-batch baseline at batch M, plain large-batch SGD at
batch L at the base learning rate and at larger (tuned) ones, and large batch with each noise
structure at the multipliers s ∈ {0.25, 0.5, 1, 2}, every setting with three or more seeds, for
the same number of epochs. Each part is a :class:`Sweep` (base fields + grid axes) that
expands to RunConfigs with the engine's grid expansion and renders as the equivalent
``covnoise sweep`` command line. ``covnoise study run NAME`` submits the sweeps to the local
engine and exports the runs to ``cached_runs/study-NAME.parquet``; every run's `name` records
the study, the command that rebuilds the file and the sweep that made the run, and the store
records its code revision, versions, device and wall time.

The analysis of the runs (tables, claims, verdicts) lives in covnoise.results.findings.
"""

from __future__ import annotations

import shlex
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from covnoise.config import RunConfig
from covnoise.results.calibration import matched_scale, pilot_ratios
from covnoise.runs import COMPLETED, TERMINAL
from covnoise.runs.engine import expand_grid, make_engine

SCALES = (0.25, 0.5, 1.0, 2.0)
SEEDS = (0, 1, 2)
PILOT_SEEDS = (0, 1)
NOISY = ("isotropic", "diag", "full")
#: Structures whose multiplier the equal-Frobenius design matches to full noise's ‖Σ‖_F.
MATCHED = ("isotropic", "diag")
#: Sweep labels (recorded in each run's name) that the findings read the design from.
PILOT = "pilot"
EQUAL_FROBENIUS = "equal Frobenius"
SOURCE_SWEEP = "noise source"

#: Grid axes of a sweep and the RunConfig field each one varies.
GRID_AXES = {
    "batch_sizes": "batch_size",
    "noises": "noise",
    "noise_scales": "noise_scale",
    "lrs": "lr",
    "seeds": "seed",
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class Sweep:
    """One part of a study: RunConfig fields shared by its runs and the grid axes it varies."""

    label: str
    base: dict[str, Any]
    grid: dict[str, tuple[Any, ...]]

    def configs(self, name: str | None = None) -> list[RunConfig]:
        """Every config of the sweep, each labelled `name` (the engine's grid expansion)."""
        base = RunConfig.from_dict({**self.base, "name": name})
        return expand_grid(base, **{k: list(v) for k, v in self.grid.items()})

    def argv(self) -> list[str]:
        """The equivalent ``covnoise sweep`` arguments."""
        out: list[str] = []
        for key, value in self.base.items():
            if isinstance(value, bool):
                out.append(_flag(key) if value else _flag(f"no_{key}"))
            else:
                out += [_flag(key), _text(value)]
        for axis, values in self.grid.items():
            out += [_flag(axis), ",".join(_text(v) for v in values)]
        return out


@dataclass(frozen=True)
class Study:
    """One data set's grid: shared RunConfig fields plus the sweeps that make up the study.

    `target_train_loss` is the training loss whose first crossing counts as "optimised" in
    the steps-to-target table; it was fixed before the study was run, as a loss the plain
    large-batch baseline reaches within its budget. `made_by` is the command recorded in the
    names of the cached runs when they were made by an earlier entry point (the same code
    path); None means :attr:`command`.

    `seeds` are the seeds of every arm that decides claims 2–4 (SB, LB at the base learning
    rate, every noisy arm); `tuned_seeds` those of the larger learning rates (None: `seeds`).
    With `matched_scales` the study has the equal-Frobenius design: a short `pilot` (LB with
    each structure at s = 1 for `pilot_epochs`) measures the ratio of ‖K‖_F between the
    structures, and for each s in `matched_scales` isotropic and diagonal noise run at the
    multiplier whose ‖Σ‖_F matches full noise's at s (covnoise.results.calibration).
    `sources` are further noise sources for the s = 1 diag and full arms.
    """

    name: str
    dataset: str
    small_batch: int
    large_batch: int
    base_lr: float
    tuned_lrs: tuple[float, ...]
    epochs: float
    target_train_loss: float
    common: dict[str, Any]
    small_eval_every: int
    large_eval_every: int
    description: str
    seeds: tuple[int, ...] = SEEDS
    scales: tuple[float, ...] = SCALES
    made_by: str | None = None
    tuned_seeds: tuple[int, ...] | None = None
    matched_scales: tuple[float, ...] = ()
    sources: tuple[str, ...] = ()
    pilot_epochs: float = 0.0
    pilot_seeds: tuple[int, ...] = PILOT_SEEDS
    extra: dict = field(default_factory=dict)

    def _shared(self) -> dict[str, Any]:
        return {
            **self.common,
            "small_batch": self.small_batch,
            "epochs": float(self.epochs),
            "lr": self.base_lr,
        }

    def pilot(self) -> Sweep | None:
        """The calibration pilot of the equal-Frobenius design (None without one): LB with
        each structure at s = 1 for the first `pilot_epochs`, noise measured every
        evaluation."""
        if not self.matched_scales:
            return None
        base = {
            **self._shared(),
            "eval_every": self.large_eval_every,
            "epochs": float(self.pilot_epochs),
            "sharpness_every": 1,
        }
        grid = {
            "batch_sizes": (self.large_batch,),
            "noises": NOISY,
            "noise_scales": (1.0,),
            "seeds": tuple(self.pilot_seeds),
        }
        return Sweep(PILOT, base, grid)

    def sweeps(self, ratios: dict[str, float] | None = None) -> list[Sweep]:
        """The study's sweeps, in the order they are run: the pilot first (when the study
        has one), then the rest. The equal-Frobenius sweeps need the pilot's `ratios`
        (‖K_full‖_F / ‖K_structure‖_F); without them they are left out."""
        shared = self._shared()
        seeds = tuple(self.seeds)
        large = {**shared, "eval_every": self.large_eval_every}
        lb = {"batch_sizes": (self.large_batch,)}
        out = [] if self.pilot() is None else [self.pilot()]
        out += [
            Sweep(
                "small batch",
                {**shared, "eval_every": self.small_eval_every},
                {"batch_sizes": (self.small_batch,), "seeds": seeds},
            ),
            Sweep(
                "large batch, base learning rate",
                large,
                {**lb, "lrs": (self.base_lr,), "seeds": seeds},
            )
            if self.tuned_seeds is not None
            else Sweep(
                "large batch, learning rates",
                large,
                {**lb, "lrs": (self.base_lr, *self.tuned_lrs), "seeds": seeds},
            ),
        ]
        if self.tuned_seeds is not None and self.tuned_lrs:
            out.append(
                Sweep(
                    "large batch, tuned learning rates",
                    large,
                    {**lb, "lrs": tuple(self.tuned_lrs), "seeds": tuple(self.tuned_seeds)},
                )
            )
        out.append(
            Sweep(
                "large batch + noise",
                large,
                {**lb, "noises": NOISY, "noise_scales": tuple(self.scales), "seeds": seeds},
            )
        )
        if ratios is not None and self.matched_scales:
            for structure in MATCHED:
                scales = tuple(matched_scale(s, ratios[structure]) for s in self.matched_scales)
                out.append(
                    Sweep(
                        f"{EQUAL_FROBENIUS}, {structure} (‖K_full‖_F/‖K_{structure}‖_F = "
                        f"{ratios[structure]:.4g} from the pilot)",
                        large,
                        {**lb, "noises": (structure,), "noise_scales": scales, "seeds": seeds},
                    )
                )
        for source in self.sources:
            out.append(
                Sweep(
                    f"{SOURCE_SWEEP} {source}",
                    {**large, "noise_source": source},
                    {**lb, "noises": ("diag", "full"), "noise_scales": (1.0,), "seeds": seeds},
                )
            )
        return out

    def configs(self, ratios: dict[str, float] | None = None) -> list[RunConfig]:
        """Every RunConfig of the study, labelled with how it was made."""
        return [cfg for sw in self.sweeps(ratios) for cfg in sw.configs(self.run_name(sw.label))]

    def commands(self, ratios: dict[str, float] | None = None) -> list[tuple[str, str]]:
        """(label, shell command) of each sweep: what ``covnoise study run`` is equivalent to."""
        return [
            (
                sw.label,
                shlex.join(["covnoise", "sweep", *sw.argv(), "--name", self.run_name(sw.label)]),
            )
            for sw in self.sweeps(ratios)
        ]

    def run_name(self, label: str) -> str:
        """The `name` recorded in each run of one sweep: how the run was produced."""
        return f"study {self.name} ({self.made_by or self.command}); sweep: {label}"

    @property
    def output(self) -> str:
        return f"cached_runs/study-{self.name}.parquet"

    @property
    def command(self) -> str:
        return f"covnoise study run {self.name}"


_MLP = {"model": "mlp", "width": 256, "depth": 3}
#: Seeds of the arms that decide claims 2–4, and of the other arms.
DECISIVE_SEEDS = tuple(range(8))
OTHER_SEEDS = tuple(range(5))
#: Every arm of the studies holds out 10% of the training set for picking (the tuned
#: learning rate, the best multiplier) and sees every training example once per epoch.
_DATA = {"val_fraction": 0.1, "drop_last": False}

#: The round-two design of the studies with a large-batch gap: eight seeds where claims 2–4
#: are decided, five for the larger learning rates, the equal-Frobenius arms at these full-noise
#: multipliers and the Fisher-source arms.
_ROUND_TWO: dict[str, Any] = {
    "seeds": DECISIVE_SEEDS,
    "tuned_seeds": OTHER_SEEDS,
    "matched_scales": (0.25, 0.5),
    "sources": ("fisher",),
}


def _mlp_study(name: str, sharpness_every: int, **fields: Any) -> Study:
    """A study of the MLP 256×3 at M = 32, L = 1024 on data set `name`, every arm with the
    validation split and equal data per epoch, λ_max and the noise statistics at every
    `sharpness_every`-th evaluation on a 256-example probe."""
    common = {"dataset": name, **_MLP, **_DATA, "sharpness_every": sharpness_every}
    return Study(
        name=name,
        dataset=name,
        small_batch=32,
        large_batch=1024,
        common={**common, "probe_size": 256},
        **fields,
    )


STUDIES: dict[str, Study] = {
    "mnist1d": _mlp_study(
        "mnist1d",
        sharpness_every=20,
        base_lr=0.4,
        tuned_lrs=(0.8, 1.6),
        epochs=600,
        target_train_loss=0.1,
        small_eval_every=250,
        large_eval_every=6,
        pilot_epochs=30,
        **_ROUND_TWO,
        description="MNIST-1D (3600 train / 400 validation / 1000 test), MLP 256×3, plain SGD "
        "at a constant learning rate, 600 epochs; M = 32, L = 1024; eight seeds per "
        "deciding arm, five for the larger learning rates; equal-trace and "
        "equal-Frobenius arms, batch and Fisher noise sources",
    ),
    "mnist-5k": _mlp_study(
        "mnist-5k",
        sharpness_every=10,
        base_lr=0.1,
        tuned_lrs=(0.2, 0.4),
        epochs=200,
        target_train_loss=0.05,
        small_eval_every=225,
        large_eval_every=7,
        pilot_epochs=10,
        **_ROUND_TWO,
        description="mnist-5k (3600 train / 400 validation / 1000 test real MNIST images), "
        "MLP 256×3, plain SGD at a constant learning rate, 200 epochs; M = 32, L = 1024; "
        "eight seeds per deciding arm, five for the larger learning rates; equal-trace and "
        "equal-Frobenius arms, batch and Fisher noise sources",
    ),
    "digits": _mlp_study(
        "digits",
        sharpness_every=10,
        base_lr=0.4,
        tuned_lrs=(0.2, 0.8),
        epochs=400,
        target_train_loss=0.02,
        small_eval_every=84,
        large_eval_every=2,
        seeds=OTHER_SEEDS,
        description="digits (1212 train / 135 validation / 450 test), MLP 256×3, plain SGD at "
        "a constant learning rate, 400 epochs, five seeds; M = 32, L = 1024: the control "
        "without a large-batch gap",
    ),
}


#: Studies that need a CUDA GPU (their common flags ask for one). Run them on a GPU machine
#: with ``covnoise study run NAME`` after putting the data under $COVNOISE_DATA_DIR.
GPU_STUDIES: dict[str, Study] = {
    "cifar10": Study(
        name="cifar10",
        dataset="cifar10",
        small_batch=128,
        large_batch=4096,
        base_lr=0.1,
        tuned_lrs=(0.4, 0.8),
        epochs=40,
        target_train_loss=0.5,
        common={
            "dataset": "cifar10",
            "model": "vgg",
            "width": 256,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "schedule": "warmup_cosine",
            "warmup_epochs": 2.0,
            "sharpness_every": 10,
            "probe_size": 256,
            "device": "cuda",
        },
        small_eval_every=390,
        large_eval_every=12,
        seeds=(0, 1),
        scales=(1.0,),
        description="CIFAR-10 (50000 train / 10000 test), VGG with 64 base channels, SGD with "
        "momentum 0.9, weight decay 5e-4, warm-up + cosine, 40 epochs; M = 128, "
        "L = 4096; evaluations every epoch",
    ),
}
ALL_STUDIES: dict[str, Study] = {**STUDIES, **GPU_STUDIES}


def run_study(
    study: Study,
    output: str | Path,
    workers: int | None = None,
    store: str | None = None,
    report: Callable[[str], None] = print,
) -> int:
    """Run every sweep of `study` on the local engine into `store` and export the runs.

    A study with the equal-Frobenius design runs its pilot first and takes the multipliers
    of the equal-Frobenius arms from the pilot's runs. Returns the number of runs written to
    `output`; see :func:`run_parts`. With a lasting `store`, running it again resumes: runs
    that already finished there are kept, not run again.
    """
    pilot = study.pilot()

    def rest(runs: Any) -> list[RunConfig]:
        ratios = None
        if pilot is not None:
            ids = [c.run_id() for c in pilot.configs(study.run_name(PILOT))]
            ratios = pilot_ratios(runs.runs(run_ids=ids), runs.metrics(run_ids=ids))
            report(
                f"[{study.name}] pilot: ‖K_full‖_F/‖K‖_F = "
                + ", ".join(f"{k} {v:.4g}" for k, v in sorted(ratios.items()))
            )
        return [
            cfg
            for sw in study.sweeps(ratios)
            if sw.label != PILOT
            for cfg in sw.configs(study.run_name(sw.label))
        ]

    parts: list[tuple[str, Part]] = []
    if pilot is not None:
        parts.append((f"[{study.name}] {PILOT}", pilot.configs(study.run_name(PILOT))))
    parts.append((f"[{study.name}] arms", rest))
    return run_parts(parts, output, workers=workers, store=store, report=report)


#: A part of a run: its configs, or a function of the store (after the earlier parts) that
#: returns them.
Part = list[RunConfig] | Callable[[Any], list[RunConfig]]


def run_parts(
    parts: list[tuple[str, Part]],
    output: str | Path,
    workers: int | None = None,
    store: str | Path | None = None,
    report: Callable[[str], None] = print,
) -> int:
    """Run each (label, configs) part in turn on the local engine and export all the runs.

    `store` is a temporary one when None. Returns the number of runs written to `output`.
    A part whose runs do not all complete (finished or diverged: divergence is a result)
    stops the rest; its runs stay in the store for a look with ``covnoise runs ls``.
    """
    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine("local", store or Path(tmp) / "runs.sqlite", workers=workers)
        try:
            ids: list[str] = []
            for tag, part in parts:
                t0 = time.monotonic()
                configs = part(engine.store) if callable(part) else part
                part_ids = engine.submit_many(configs)
                report(f"{tag}: {len(part_ids)} runs queued")
                statuses = _wait(engine, part_ids, tag, t0, report)
                bad = {rid: s for rid, s in statuses.items() if s not in COMPLETED}
                if bad:
                    raise RuntimeError(f"{tag}: runs that did not complete: {bad}")
                ids += part_ids
            return engine.store.export_parquet(output, ids)
        finally:
            engine.close()
            engine.store.close()


def _wait(
    engine: Any, ids: list[str], tag: str, t0: float, report: Callable[[str], None]
) -> dict[str, str | None]:
    """Wait until every run is terminal, reporting the count each time it changes."""
    shown = -1
    while True:
        statuses = engine.wait(ids, timeout=10)
        done = sum(s in TERMINAL for s in statuses.values())
        if done != shown:
            report(f"{tag}: {done}/{len(ids)} done ({time.monotonic() - t0:.0f} s)")
            shown = done
        if done == len(ids):
            return statuses
