"""RunConfig: the one validated description of a training run, and its content hash.

A run is reproducible from its config (the seed is part of it); its id is a hash of the
config's canonical JSON. Validation raises ConfigError naming the field and what is allowed,
so the CLI can print one line and exit 2 and the app can show the message next to the widget.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields
from typing import Any

from covnoise.fields import ConfigError, FieldInfo, check_field, config_field
from covnoise.theory import STRUCTURES, scale_factor

DATASETS = ("digits", "mnist1d", "teacher", "mnist-5k", "mnist", "fashion-mnist", "cifar10")
MODELS = ("mlp", "cnn", "vgg", "resnet")
NOISES: tuple[str, ...] = STRUCTURES  # the covariance table is the one home of the names
SCHEDULES = ("constant", "warmup_cosine", "step")
LR_SCALINGS = ("none", "linear", "sqrt")
DEVICES = ("auto", "cpu", "cuda")
NOISE_SOURCES = ("batch", "fisher")

#: Fields that do not change what is computed, so they are left out of the run id.
_NOT_HASHED = ("device", "data_dir", "name")

#: Fields added after runs were first stored, with the value that reproduces what runs made
#: before them did. A config at these values hashes as if the field did not exist (so old
#: run ids stay valid), and a stored config without the field reads back with this value.
LEGACY_VALUES: dict[str, Any] = {"drop_last": True, "noise_source": "batch", "val_fraction": 0.0}

# Upper validation bounds (FieldInfo.max): values past them pass every other check and then
# overflow, exhaust memory or never end, so they are refused up front with the bound named.
#: Training seeds: torch seeds generators from an unsigned 64-bit int and a run derives
#: streams seed + k (k < 1.3e6), so seeds stay below 2**63, where every stream fits.
MAX_SEED = 2**63 - 1
#: Split seeds reach scikit-learn's random_state (digits, mnist-5k), which takes < 2**32.
MAX_SPLIT_SEED = 2**32 - 1
#: Width and depth caps keep the model's shape sane before its parameter count is checked
#: against MAX_PARAMETERS (which needs the data set's input shape, so the CLI checks it).
MAX_WIDTH = 65_536
MAX_DEPTH = 64
#: Parameters of a model: 2e9 float32 parameters are 8 GB before gradients, momentum and
#: the per-example gradients of the noise, past what one machine here trains.
MAX_PARAMETERS = 2_000_000_000
#: Optimiser steps of one run (also caps epochs · N / L once the data set is known): 1e8
#: steps are weeks of wall time even for the smallest model.
MAX_STEPS = 100_000_000
#: Draws per block of the Tr(H Sigma) estimate, and Lanczos iterations (each one an HVP).
MAX_NOISE_SAMPLES = 10_000
MAX_LANCZOS_ITERS = 1_000


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run (see docs/design.md, "The question")."""

    # data and model
    dataset: str = config_field("digits", "data set", "data set", choices=DATASETS)
    model: str = config_field("mlp", "model", "model", choices=MODELS)
    width: int = config_field(
        256,
        "hidden width (MLP/CNN); vgg/resnet use width/4 base channels",
        "width",
        low=1,
        high=4096,
        max=MAX_WIDTH,
    )
    depth: int = config_field(
        3, "number of linear layers of the MLP", "depth", low=1, high=16, max=MAX_DEPTH
    )
    ghost_bn: int = config_field(
        0, "ghost batch-norm group size (0 = no normalisation)", "ghost batch norm", low=0
    )
    data_dir: str | None = config_field(
        None, "folder of file-backed data sets (mnist, fashion-mnist, cifar10)", "data folder"
    )
    split_seed: int = config_field(
        0, "seed of the train/test split", "split seed", low=0, max=MAX_SPLIT_SEED
    )
    val_fraction: float = config_field(
        0.1,
        "fraction of the training set held out as a validation split (0 = none, at most 0.5)",
        "validation fraction",
        low=0.0,
        high=0.5,
    )
    dataset_options: dict[str, Any] = config_field(
        help="a data-set option (repeatable)", label="data-set options", factory=dict
    )
    # batch sizes and noise
    batch_size: int = config_field(
        1024, "the large batch L", "large batch L", low=1, high=1_000_000
    )
    small_batch: int = config_field(
        32,
        "the target small batch M whose gradient noise is imitated",
        "target small batch M",
        low=1,
        high=1_000_000,
    )
    noise: str = config_field("none", "noise structure", "noise structure", choices=NOISES)
    noise_source: str = config_field(
        "batch",
        "covariance the noise imitates: batch (the batch's per-example gradients) or fisher "
        "(gradients at labels sampled from the model's own predictions: the true Fisher)",
        "noise source",
        choices=NOISE_SOURCES,
    )
    noise_scale: float = config_field(
        1.0, "the multiplier s of c = s(1/M - 1/L)", "multiplier s", low=0.0
    )
    stats_rows: int | None = config_field(
        128,
        "rows of the batch used to estimate diag(C) (0 = the whole batch)",
        "statistics rows",
        low=2,
    )
    stats_every: int = config_field(
        4,
        "re-estimate diag(C) every k steps (bench.steps: ≤ 1.3× a plain step)",
        "statistics every",
        low=1,
    )
    # optimiser
    lr: float = config_field(
        0.1,
        "learning rate (before the scaling rule)",
        "learning rate η",
        low=0.0,
        strict=True,
        high=100.0,
    )
    lr_scaling: str = config_field(
        "none",
        "scale lr relative to M: none, linear (×L/M), sqrt (×√(L/M))",
        "learning-rate scaling",
        choices=LR_SCALINGS,
    )
    momentum: float = config_field(
        0.0, "SGD momentum (0 <= momentum < 1)", "momentum β", low=0.0, high=0.999
    )
    weight_decay: float = config_field(0.0, "weight decay", "weight decay", low=0.0)
    schedule: str = config_field(
        "constant", "learning-rate schedule", "schedule", choices=SCHEDULES
    )
    warmup_epochs: float = config_field(
        0.0,
        "warm-up length of warmup_cosine, in epochs",
        "warm-up epochs",
        low=0.0,
        high=10_000.0,
        max=MAX_STEPS,
    )
    step_every_epochs: float = config_field(
        0.0,
        "the step schedule multiplies lr by step_gamma this often, in epochs",
        "step every",
        low=0.0,
        high=10_000.0,
        max=MAX_STEPS,
    )
    step_gamma: float = config_field(
        0.1, "the step schedule's factor", "step factor", low=0.0, strict=True
    )
    epochs: float | None = config_field(
        20.0,
        "training length in epochs",
        "epochs",
        low=0.0,
        strict=True,
        high=100_000.0,
        max=MAX_STEPS,
    )
    steps: int | None = config_field(
        None, "training length in steps (overrides epochs)", "steps", low=1, max=MAX_STEPS
    )
    drop_last: bool = config_field(
        False,
        "cut each epoch into full batches and drop the remainder (an epoch of L examples then "
        "holds fewer examples than one of M); default: batches are cut from a continuous "
        "stream of permutations, so E epochs are E·N examples for every batch size",
        "drop the last partial batch",
    )
    # evaluation
    eval_every: int = config_field(
        10, "steps between evaluations", "evaluate every", low=1, high=1_000_000
    )
    sharpness_every: int | None = config_field(
        None,
        "evaluations between sharpness/noise measurements (0 = never; unset: chosen by the "
        "run's length, about 20 per run)",
        "sharpness every",
        low=0,
        high=1000,
    )
    probe_size: int = config_field(
        256,
        "examples in the fixed probe batch for curvature and noise statistics",
        "probe batch size",
        low=2,
        high=100_000,
    )
    lanczos_iters: int = config_field(
        20,
        "Hessian-vector products allowed to Lanczos for the sharpness",
        "Lanczos iterations",
        low=2,
        max=MAX_LANCZOS_ITERS,
    )
    noise_samples: int = config_field(
        8,
        "draws per block of the Tr(H Sigma) estimate (blocks until its standard error is at "
        "most 5% of the mean or 128 draws)",
        "noise draws per block",
        low=1,
        max=MAX_NOISE_SAMPLES,
    )
    # reproducibility and placement
    seed: int = config_field(0, "random seed", "seed", low=0, max=MAX_SEED)
    device: str = config_field("auto", "where to train", "device", choices=DEVICES)
    name: str | None = config_field(None, "a label for the run (not part of its id)", "name")

    # ----------------------------------------------------------------- derived values
    @property
    def noise_c(self) -> float:
        """c = s · (1/M − 1/L): the scale of the injected covariance."""
        if self.noise == "none":
            return 0.0
        return scale_factor(self.small_batch, self.batch_size, self.noise_scale)

    @property
    def effective_lr(self) -> float:
        """Peak learning rate after the scaling rule relative to the small batch M."""
        ratio = self.batch_size / self.small_batch
        if self.lr_scaling == "linear":
            return self.lr * ratio
        if self.lr_scaling == "sqrt":
            return self.lr * math.sqrt(ratio)
        return self.lr

    # ----------------------------------------------------------------- serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict of every field."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        """Build and validate a config; unknown keys are an error that names them."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(unknown[0], f"unknown field; allowed fields are {sorted(known)}")
        cfg = cls(**data)
        cfg.validate()
        return cfg

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> RunConfig:
        """A config read back from a store or a runs file: fields it lacks (added after it was
        stored) take their LEGACY_VALUES, so the run reads back as what it was."""
        return cls.from_dict({**LEGACY_VALUES, **data})

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed."""
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def run_id(self) -> str:
        """Content hash of everything that determines the result (device and labels excluded)."""
        d = {
            k: v
            for k, v in self.to_dict().items()
            if k not in _NOT_HASHED and not (k in LEGACY_VALUES and v == LEGACY_VALUES[k])
        }
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ----------------------------------------------------------------- validation
    def validate(self, n_train: int | None = None) -> None:
        """Raise ConfigError for the first field that is not allowed.

        Each field is checked against its FieldInfo (choices, bounds), then the rules that
        tie fields together. `n_train` (the training-set size after the validation split,
        when known) lets the batch size, the probe batch and the total steps be checked too.
        """
        for f in fields(self):
            check_field(f.name, getattr(self, f.name), f.metadata["info"], f.type)
        if not isinstance(self.dataset_options, dict):
            raise ConfigError("dataset_options", "must be a mapping of option names to values")
        self._check_batches(n_train)
        self._check_optimiser()
        if n_train is not None:
            self._check_data_size(n_train)

    def _check_data_size(self, n_train: int) -> None:
        """The rules that need the training-set size: the probe batch and the run's length."""
        if self.probe_size > n_train:
            raise ConfigError(
                "probe_size",
                f"{self.probe_size} is larger than the training set ({n_train} examples); "
                f"allowed: 2..{n_train}",
            )
        if self.steps is not None or self.epochs is None:
            return
        per_epoch = (
            max(1, n_train // self.batch_size) if self.drop_last else n_train / self.batch_size
        )
        if self.epochs * per_epoch > MAX_STEPS + 0.5:  # round() keeps up to MAX_STEPS + 0.5
            raise ConfigError(
                "epochs",
                f"{self.epochs:g} epochs of {n_train} examples at batch size {self.batch_size} "
                f"are {self.epochs * per_epoch:.3g} steps; allowed: at most {MAX_STEPS} steps, "
                f"i.e. epochs <= {MAX_STEPS / per_epoch:g}",
            )

    def _check_batches(self, n_train: int | None) -> None:
        """The rules that tie L, M, the noise and ghost batch norm together."""
        if self.noise != "none" and self.small_batch >= self.batch_size:
            raise ConfigError(
                "small_batch",
                f"the target small batch M={self.small_batch} must be smaller than the large "
                f"batch L={self.batch_size} when noise is '{self.noise}'",
            )
        if self.lr_scaling != "none" and self.small_batch > self.batch_size:
            raise ConfigError("small_batch", "must not exceed batch_size for lr scaling")
        if n_train is not None and self.batch_size > n_train:
            raise ConfigError(
                "batch_size",
                f"{self.batch_size} is larger than the training set ({n_train} examples); "
                f"allowed: 1..{n_train}",
            )
        if self.ghost_bn and self.noise != "none":
            raise ConfigError(
                "ghost_bn",
                "ghost batch norm mixes the examples of a group, so per-example gradients (and "
                "the noise built from them) are not defined; use ghost_bn 0 or noise none",
            )
        if self.ghost_bn and self.batch_size % self.ghost_bn:
            raise ConfigError("ghost_bn", "the ghost batch size must divide batch_size")

    def _check_optimiser(self) -> None:
        """The rules of the optimiser, its schedule, the training length and its data."""
        if not isinstance(self.drop_last, bool):
            raise ConfigError("drop_last", f"{self.drop_last!r} is not true or false")
        if self.val_fraction > 0.5:
            raise ConfigError(
                "val_fraction", f"{self.val_fraction} is not allowed; use 0 <= val_fraction <= 0.5"
            )
        if self.momentum >= 1.0:
            raise ConfigError("momentum", f"{self.momentum} is not allowed; use 0 <= momentum < 1")
        if self.schedule == "step" and self.step_every_epochs <= 0:
            raise ConfigError("step_every_epochs", "must be > 0 with the 'step' schedule")
        if self.steps is None and self.epochs is None:
            raise ConfigError("epochs", "give epochs or steps")


def field_info(name: str) -> FieldInfo:
    """The FieldInfo of RunConfig field `name` (KeyError for unknown names)."""
    return _INFO[name]


_INFO: dict[str, FieldInfo] = {f.name: f.metadata["info"] for f in fields(RunConfig)}
