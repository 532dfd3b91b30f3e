"""run(config, emit): the training loop. It knows nothing about storage or the UI.

Large-batch SGD with structured noise (covnoise.core.noise) on a dataset held on the training
device; at each evaluation it emits one `metric` event with losses, accuracies, sharpness
(Lanczos λ_max on a fixed probe batch, with its residual), the injected noise's tr Σ, ‖Σ‖_F
and Tr(HΣ), the gradient norm and the distance from initialisation. A run ends `diverged`
at the step where its loss stops being finite or exceeds BLOW_UP_FACTOR × its initial
training loss, or where an evaluation finds its parameters, gradient or noise statistics
overflowed. Events are plain JSON-ready dicts (see `run`).

The loop does no host read-back per step on an accelerator: the batch losses stay on the
device and are read every `_CHECK_EVERY` steps, at each evaluation and on a stop request
(on the CPU, where a read-back costs nothing, after every step); a non-finite one ends the
run `diverged` at its own step, as if it had been read at once. The step leaves the
parameters alone at a non-finite step either way (`step`), and nothing trained after it is
evaluated or reported.

The parts live next door: the step (`step`), the schedule (`schedule`), the metrics
(`evaluation`) and what a run records about itself (`provenance`); this module sets a run
up, loops over its steps and writes its events. The names other layers import from here
(`run`, `noisy_step`, `per_example_loss`, `resolve_device`, `code_revision`, ...) stay here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from covnoise.config import ConfigError, RunConfig
from covnoise.core.allocator import keep_freed_memory
from covnoise.core.evaluation import Evaluator, evaluate
from covnoise.core.losses import per_example_loss
from covnoise.core.models import build_model
from covnoise.core.noise import make_structure, stats_interval
from covnoise.core.provenance import code_revision, describe_device, provenance, versions
from covnoise.core.schedule import (
    curvature_every,
    evaluation_count,
    is_evaluation,
    learning_rate,
    total_steps,
)
from covnoise.core.step import SGD, noisy_step
from covnoise.data import Dataset, load_dataset

__all__ = [
    "Emit",
    "Training",
    "code_revision",
    "describe_device",
    "evaluate",
    "learning_rate",
    "noisy_step",
    "per_example_loss",
    "resolve_device",
    "run",
    "total_steps",
    "versions",
]

Emit = Callable[[dict[str, Any]], None]

#: Steps between reads of the batch losses on an accelerator (every step on the CPU).
_CHECK_EVERY = 32
#: A run whose batch or training loss exceeds this multiple of its initial training loss
#: has blown up: it ends `diverged` even while its numbers are still finite.
BLOW_UP_FACTOR = 1e6
#: Metrics whose overflow (inf or nan) at an evaluation ends a run `diverged`: the loss, the
#: parameters (their distance from the start), the gradient and the injected noise.
_MUST_BE_FINITE = ("train_loss", "dist_init", "grad_norm", "noise_trace", "noise_fro")


def resolve_device(name: str) -> torch.device:
    """auto → the first CUDA GPU when there is one, otherwise the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device", "cuda was asked for but no CUDA GPU is available; use auto or cpu"
        )
    return torch.device(name)


def load_data(config: RunConfig, device: str | torch.device = "cpu") -> Dataset:
    """The run's data set as the run loads it (split, options, validation share); raises
    DatasetError for missing or bad files."""
    return load_dataset(
        config.dataset,
        data_dir=config.data_dir,
        split_seed=config.split_seed,
        device=device,
        options=config.dataset_options,
        val_fraction=config.val_fraction,
    )


class _Batches:
    """Index batches of size L from random permutations of the training set.

    By default the permutations form one continuous stream: a batch that reaches the end of
    one permutation continues into the next, so every example is used once per N examples
    drawn (a batch across the boundary may hold an example twice). With `drop_last` each
    permutation is cut into full batches and its remainder dropped (the runs made before the
    option existed).
    """

    def __init__(
        self, n: int, size: int, seed: int, device: torch.device, drop_last: bool = False
    ) -> None:
        self.n, self.size, self.device, self.drop_last = n, size, device, drop_last
        self.gen = torch.Generator().manual_seed(seed)
        self.perm, self.pos = torch.randperm(n, generator=self.gen), 0

    def _take(self, count: int) -> Tensor:
        """Up to `count` indices from the current permutation, starting a new one first when
        it is used up."""
        if self.pos == self.n:
            self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
        part = self.perm[self.pos : self.pos + count]
        self.pos += len(part)
        return part

    def next(self) -> Tensor:
        """The next batch's row indices, on the training device."""
        if 0 < self.n - self.pos >= self.size:  # the whole batch from this permutation
            idx = self.perm[self.pos : self.pos + self.size]
            self.pos += self.size
            return idx.to(self.device)
        if self.drop_last:
            if self.pos + self.size > self.n:
                self.perm, self.pos = torch.randperm(self.n, generator=self.gen), 0
            idx = self.perm[self.pos : self.pos + self.size]
            self.pos += self.size
            return idx.to(self.device)
        parts = [self._take(self.size)]
        while (got := sum(len(p) for p in parts)) < self.size:
            parts.append(self._take(self.size - got))
        return torch.cat(parts).to(self.device)


class Training:
    """One run in progress: its data, model, optimiser, noise, batches and evaluations.

    `run` drives it (`loop`); the cost timing (covnoise.core.timing) drives the same object
    step by step (`train_step`, `check`, `evaluation`), so what it times is the loop's own
    code. Those methods and the attributes they read are its interface."""

    def __init__(self, config: RunConfig, emit: Emit, t0: float) -> None:
        self.config, self.emit, self.t0 = config, emit, t0
        self.device = device = resolve_device(config.device)
        self.data = load_data(config, device)
        n_train = len(self.data.x_train)
        config.validate(n_train=n_train)
        self.per_epoch, self.n_steps = total_steps(config, n_train)

        torch.manual_seed(config.seed)
        self.model = build_model(
            config.model,
            self.data.input_shape,
            self.data.num_classes,
            width=config.width,
            depth=config.depth,
            ghost_bn=config.ghost_bn,
        ).to(device)
        self.model.train()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.structure = make_structure(
            config.noise,
            config.noise_c,
            stats_rows=config.stats_rows,
            stats_every=config.stats_every,
            source=config.noise_source,
        )
        self.state = self.structure.init(self.params)
        #: steps between refreshes of the noise statistics (diag, isotropic), as the default
        #: schedule stretches them at small B·P; logged with every evaluation
        self.refresh_every = (
            stats_interval(
                config.batch_size,
                config.stats_rows,
                config.stats_every,
                sum(p.numel() for p in self.params),
            )
            if getattr(self.structure, "uses_stats", False)
            else None
        )
        self.opt = SGD(
            self.params,
            lr=config.effective_lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        self.batches = _Batches(
            n_train, config.batch_size, config.seed, device, drop_last=config.drop_last
        )
        self.noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
        self.curvature_every = curvature_every(
            config.sharpness_every, evaluation_count(self.n_steps, config.eval_every)
        )
        self.evaluator = Evaluator(
            config, self.model, self.data, self.structure, device, self.curvature_every
        )
        self.step = 0
        self.last: dict[str, float] = {}
        self.bar: Any = None
        # mean batch losses of the steps not yet checked (floats on the host, 0-d tensors on
        # an accelerator), and the last one checked
        self.pending: list[float | Tensor] = []
        self.blow_up = math.inf  # BLOW_UP_FACTOR × the initial training loss, once known
        self.batch_loss = math.nan
        self.check_every = 1 if device.type == "cpu" else _CHECK_EVERY

    # -- events
    def start_event(self, info: dict[str, Any]) -> dict[str, Any]:
        """The `start` event: what runs, where, and how long it will be."""
        cfg, data = self.config, self.data
        return {
            "event": "start",
            "run_id": cfg.run_id(),
            "config": cfg.to_dict(),
            **info,
            "total_steps": self.n_steps,
            "steps_per_epoch": self.per_epoch,
            "curvature_every": self.curvature_every,
            "probe_size": len(self.evaluator.probe_x),
            "n_train": len(data.x_train),
            "n_val": len(data.x_val),
            "n_test": len(data.x_test),
            "dataset_info": data.info,
            "n_params": sum(p.numel() for p in self.params),
            "noise_c": cfg.noise_c,
            "time": time.time(),
        }

    def evaluation(self, lr: float, extra: dict[str, float]) -> None:
        """Evaluate now and emit the `metric` event."""
        m = self.evaluator(lr)
        m.update(extra)
        if self.refresh_every is not None:
            m["stats_refresh_every"] = float(self.refresh_every)
        self.last = m
        B = self.config.batch_size
        self.emit(
            {
                "event": "metric",
                "step": self.step,
                "epoch": self.step / self.per_epoch,
                "examples_seen": self.step * B,
                "wall_time": time.perf_counter() - self.t0,
                "metrics": m,
            }
        )

    def summary_event(self, status: str, message: str | None, info: dict[str, Any]) -> dict:
        """The `summary` event: how the run ended and its last metrics."""
        return {
            "event": "summary",
            "run_id": self.config.run_id(),
            "status": status,
            "message": message,
            "steps": self.step,
            "examples_seen": self.step * self.config.batch_size,
            "wall_time": time.perf_counter() - self.t0,
            **info,
            "final": self.last,
        }

    # -- the loop
    def train_step(self) -> float:
        """One noisy SGD step on the next batch; returns its learning rate and keeps its
        mean batch loss (on the device) for the next `check`."""
        idx = self.batches.next()
        x, y = self.data.x_train[idx], self.data.y_train[idx]
        lr = learning_rate(self.config, self.step, self.per_epoch, self.n_steps)
        self.opt.lr = lr
        loss, self.state = noisy_step(
            self.model, self.params, self.opt, self.structure, self.state, x, y, self.noise_gen
        )
        self.pending.append(loss)
        self.step += 1
        return lr

    def check(self) -> tuple[str, str] | None:
        """Read the pending batch losses: ("diverged", message) at the first one that is not
        finite (a step the update skipped) or past the blow-up bound (a step it applied), the
        run's step count set back to that step; otherwise None."""
        pending, self.pending = self.pending, []
        if not pending:
            return None
        # floats on the host (the step read them); 0-d tensors on an accelerator
        values = pending if isinstance(pending[0], float) else torch.stack(pending).tolist()
        first = self.step - len(values)
        for i, value in enumerate(values):
            if not math.isfinite(value):
                self.step = first + i
                return "diverged", f"loss became {value} at step {self.step}"
            if value > self.blow_up:
                self.step = first + i + 1
                return "diverged", (
                    f"batch loss {value:.3g} exceeded {BLOW_UP_FACTOR:.0e} × the initial "
                    f"training loss at step {self.step}"
                )
        self.batch_loss = values[-1]
        if self.bar is not None:
            self.bar.set_postfix(loss=f"{self.batch_loss:.4f}", refresh=False)
        return None

    def loop(self, should_stop: Callable[[], bool] | None) -> tuple[str, str | None]:
        """Evaluate at step 0, then step until the end, a stop request or divergence;
        returns (status, message)."""
        self.evaluation(learning_rate(self.config, 0, self.per_epoch, self.n_steps), {})
        if (diverged := self.overflowed()) is not None:
            return diverged
        self.blow_up = BLOW_UP_FACTOR * self.last["train_loss"]
        while self.step < self.n_steps:
            if should_stop is not None and should_stop():
                return self.check() or ("cancelled", f"cancelled at step {self.step}")
            lr = self.train_step()
            evaluating = is_evaluation(self.step, self.n_steps, self.config.eval_every)
            if evaluating or len(self.pending) >= self.check_every:
                if (diverged := self.check()) is not None:
                    return diverged
            if self.bar is not None:
                self.bar.update(1)
            if evaluating:
                self.evaluation(lr, {"batch_loss": self.batch_loss})
                if (diverged := self.overflowed()) is not None:
                    return diverged
        return "finished", None

    def overflowed(self) -> tuple[str, str] | None:
        """("diverged", message) when the last evaluation shows a blown-up run: a metric of
        _MUST_BE_FINITE not finite, or the training loss past the blow-up bound."""
        m = self.last
        for name in _MUST_BE_FINITE:
            if name in m and not math.isfinite(m[name]):
                what = "loss" if name == "train_loss" else name
                return "diverged", f"{what} became {m[name]} at step {self.step}"
        if m["train_loss"] > self.blow_up:
            return "diverged", (
                f"training loss {m['train_loss']:.3g} exceeded {BLOW_UP_FACTOR:.0e} × the "
                f"initial training loss at step {self.step}"
            )
        return None


def _progress_bar(config: RunConfig, n_steps: int) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=n_steps, unit="step", desc=f"{config.noise} L={config.batch_size}", leave=True
    )


def run(
    config: RunConfig,
    emit: Emit = lambda event: None,
    should_stop: Callable[[], bool] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Train `config` and return the summary event; every event also goes to `emit`.

    Events, in order: `start` (run id, config, device, versions, code revision, total
    steps, probe size), `metric` at each evaluation (step 0, every `eval_every` steps, and
    the last step), then `summary` (status finished / diverged / cancelled, final metrics).
    `should_stop()` is polled between steps; when it returns True the run ends `cancelled`.
    Exceptions propagate to the caller.
    """
    config.validate()
    keep_freed_memory()  # each step's large buffers reused, not faulted in afresh
    t0 = time.perf_counter()
    training = Training(config, emit, t0)
    info = provenance(training.device)
    emit(training.start_event(info))
    if progress:
        training.bar = _progress_bar(config, training.n_steps)
    status, message = training.loop(should_stop)
    if training.bar is not None:
        training.bar.close()
    summary = training.summary_event(status, message, info)
    emit(summary)
    return summary
