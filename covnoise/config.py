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
from dataclasses import dataclass, field, fields
from typing import Any

DATASETS = ("digits", "mnist1d", "teacher", "mnist", "fashion-mnist", "cifar10")
MODELS = ("mlp", "cnn", "vgg", "resnet")
NOISES = ("none", "isotropic", "diag", "full")
SCHEDULES = ("constant", "warmup_cosine", "step")
LR_SCALINGS = ("none", "linear", "sqrt")
DEVICES = ("auto", "cpu", "cuda")

#: Fields that do not change what is computed, so they are left out of the run id.
_NOT_HASHED = ("device", "data_dir", "name")


class ConfigError(ValueError):
    """A config field holds a value that is not allowed; the message names the field."""

    def __init__(self, field_name: str, message: str) -> None:
        super().__init__(f"{field_name}: {message}")
        self.field = field_name


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a training run (see DESIGN.md, "The science in one page")."""

    # data and model
    dataset: str = "digits"
    model: str = "mlp"
    width: int = 256
    depth: int = 3
    ghost_bn: int = 0  # ghost batch-norm group size; 0 = no normalisation layers
    data_dir: str | None = None
    split_seed: int = 0
    dataset_options: dict[str, Any] = field(default_factory=dict)
    # batch sizes and noise
    batch_size: int = 1024  # the large batch L
    small_batch: int = 32  # the target small batch M
    noise: str = "none"
    noise_scale: float = 1.0  # the multiplier s
    stats_rows: int | None = 128  # sub-batch for diag(C) estimates (None = the whole batch)
    stats_every: int = 4  # refresh diag(C) every k steps (bench.steps: ≤ 1.3× a plain step)
    # optimiser
    lr: float = 0.1
    lr_scaling: str = "none"  # lr relative to M: none, linear (×L/M), sqrt (×√(L/M))
    momentum: float = 0.0
    weight_decay: float = 0.0
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    step_every_epochs: float = 0.0  # "step" schedule: multiply by step_gamma this often
    step_gamma: float = 0.1
    epochs: float | None = 20.0
    steps: int | None = None  # overrides epochs when given
    # evaluation
    eval_every: int = 10  # steps between evaluations
    sharpness_every: int = 1  # evaluations between sharpness/noise measurements (0 = never)
    probe_size: int = 256
    lanczos_iters: int = 20
    noise_samples: int = 8  # draws of ξ for Tr(HΣ)
    # reproducibility and placement
    seed: int = 0
    device: str = "auto"
    name: str | None = None  # a label for people; not part of the id

    # ----------------------------------------------------------------- derived values
    @property
    def noise_c(self) -> float:
        """c = s · (1/M − 1/L): the scale of the injected covariance."""
        if self.noise == "none":
            return 0.0
        return self.noise_scale * (1.0 / self.small_batch - 1.0 / self.batch_size)

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

    def replace(self, **changes: Any) -> RunConfig:
        """A validated copy with some fields changed."""
        cfg = dataclasses.replace(self, **changes)
        cfg.validate()
        return cfg

    def run_id(self) -> str:
        """Content hash of everything that determines the result (device and labels excluded)."""
        d = {k: v for k, v in self.to_dict().items() if k not in _NOT_HASHED}
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    # ----------------------------------------------------------------- validation
    def validate(self, n_train: int | None = None) -> None:
        """Raise ConfigError for the first field that is not allowed.

        `n_train` (the training-set size, when known) lets the batch size be checked too.
        """
        _choice("dataset", self.dataset, DATASETS)
        _choice("model", self.model, MODELS)
        _choice("noise", self.noise, NOISES)
        _choice("schedule", self.schedule, SCHEDULES)
        _choice("lr_scaling", self.lr_scaling, LR_SCALINGS)
        _choice("device", self.device, DEVICES)
        _int("width", self.width, 1)
        _int("depth", self.depth, 1)
        _int("ghost_bn", self.ghost_bn, 0)
        _int("split_seed", self.split_seed, 0)
        _int("seed", self.seed, 0)
        _int("batch_size", self.batch_size, 1)
        _int("small_batch", self.small_batch, 1)
        if not isinstance(self.dataset_options, dict):
            raise ConfigError("dataset_options", "must be a mapping of option names to values")
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
        _float("noise_scale", self.noise_scale, 0.0)
        if self.stats_rows is not None:
            _int("stats_rows", self.stats_rows, 2)
        _int("stats_every", self.stats_every, 1)
        _float("lr", self.lr, 0.0, strict=True)
        _float("momentum", self.momentum, 0.0)
        if self.momentum >= 1.0:
            raise ConfigError("momentum", f"{self.momentum} is not allowed; use 0 <= momentum < 1")
        _float("weight_decay", self.weight_decay, 0.0)
        _float("warmup_epochs", self.warmup_epochs, 0.0)
        _float("step_every_epochs", self.step_every_epochs, 0.0)
        _float("step_gamma", self.step_gamma, 0.0, strict=True)
        if self.schedule == "step" and self.step_every_epochs <= 0:
            raise ConfigError("step_every_epochs", "must be > 0 with the 'step' schedule")
        if self.steps is None and self.epochs is None:
            raise ConfigError("epochs", "give epochs or steps")
        if self.steps is not None:
            _int("steps", self.steps, 1)
        if self.epochs is not None:
            _float("epochs", self.epochs, 0.0, strict=True)
        _int("eval_every", self.eval_every, 1)
        _int("sharpness_every", self.sharpness_every, 0)
        _int("probe_size", self.probe_size, 2)
        _int("lanczos_iters", self.lanczos_iters, 2)
        _int("noise_samples", self.noise_samples, 1)


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"{value!r} is not one of {', '.join(allowed)}")


def _int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(name, f"{value!r} is not an integer; allowed: integers >= {low}")
    if value < low:
        raise ConfigError(name, f"{value} is not allowed; use an integer >= {low}")


def _float(name: str, value: Any, low: float, strict: bool = False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(name, f"{value!r} is not a finite number")
    if value < low or (strict and value == low):
        op = ">" if strict else ">="
        raise ConfigError(name, f"{value} is not allowed; use a number {op} {low:g}")
