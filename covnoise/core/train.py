"""run(config, emit): the training loop. It knows nothing about storage or the UI.

Large-batch SGD with structured noise (covnoise.core.noise) on a dataset held on the training
device; at each evaluation it emits one `metric` event with losses, accuracies, sharpness
(Lanczos λ_max on a fixed probe batch, with its residual), the injected noise's tr Σ, ‖Σ‖_F
and Tr(HΣ), the gradient norm and the distance from initialisation. A non-finite loss ends
the run with status `diverged`. Events are plain JSON-ready dicts (see `run`).
"""

from __future__ import annotations

import math
import platform
import subprocess
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import covnoise
from covnoise.config import ConfigError, RunConfig
from covnoise.core.curvature import HessianOperator, lanczos
from covnoise.core.models import build_model
from covnoise.core.noise import make_structure, noise_statistics
from covnoise.core.pergrad import DiagStatsRecorder
from covnoise.data import Dataset, load_dataset

Emit = Callable[[dict[str, Any]], None]


def per_example_loss(logits: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of each example (reduction none): the l_n of DESIGN.md."""
    return F.cross_entropy(logits, y, reduction="none")


# --------------------------------------------------------------------------- environment
def resolve_device(name: str) -> torch.device:
    """auto → the first CUDA GPU when there is one, otherwise the CPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", "cuda was asked for but no CUDA GPU is available; "
                          "use auto or cpu")
    return torch.device(name)


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{device.index or 0} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "covnoise": covnoise.__version__,
    }


def code_revision() -> str:
    """The git commit of the package (with `-dirty` when the tree has changes), or unknown."""
    root = Path(__file__).resolve().parents[2]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=5,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (rev + ("-dirty" if dirty else "")) if rev else "unknown"


# --------------------------------------------------------------------------- schedule
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


# --------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 4096) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on (x, y), in chunks, in eval mode."""
    was_training = model.training
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), chunk):
        logits = model(x[i : i + chunk])
        loss += per_example_loss(logits, y[i : i + chunk]).sum().item()
        correct += (logits.argmax(1) == y[i : i + chunk]).sum().item()
    model.train(was_training)
    return loss / len(x), correct / len(x)


def _flat_norm(tensors: list[Tensor]) -> float:
    return math.sqrt(sum(float(t.detach().pow(2).sum()) for t in tensors))


class _Evaluator:
    """Computes the metric dict of one evaluation point."""

    def __init__(self, config: RunConfig, model: nn.Module, data: Dataset, structure, device):
        self.config, self.model, self.data, self.structure = config, model, data, structure
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.init = [p.detach().clone() for p in self.params]
        g = torch.Generator().manual_seed(config.seed + 7919)
        n = len(data.x_train)
        idx = torch.randperm(n, generator=g)[: min(config.probe_size, n)].to(device)
        self.probe_x, self.probe_y = data.x_train[idx], data.y_train[idx]
        self.gen = torch.Generator(device=device).manual_seed(config.seed + 104729)
        self.n_evals = 0

    def __call__(self, lr: float) -> dict[str, float]:
        cfg, model = self.config, self.model
        m: dict[str, float] = {}
        m["train_loss"], m["train_acc"] = evaluate(model, self.data.x_train, self.data.y_train)
        m["test_loss"], m["test_acc"] = evaluate(model, self.data.x_test, self.data.y_test)
        m["gen_gap"] = m["test_loss"] - m["train_loss"]
        m["lr"] = lr
        moved = [p.detach() - p0 for p, p0 in zip(self.params, self.init, strict=True)]
        m["dist_init"] = _flat_norm(moved)
        # gradient norm of the training loss on the probe batch (eval mode: no norm updates)
        model.eval()
        loss = per_example_loss(model(self.probe_x), self.probe_y).mean()
        grads = torch.autograd.grad(loss, self.params)
        m["grad_norm"] = _flat_norm(list(grads))
        if cfg.sharpness_every and self.n_evals % cfg.sharpness_every == 0:
            op = HessianOperator(model, per_example_loss, self.probe_x, self.probe_y, self.params)
            eig = lanczos(op, k_max=cfg.lanczos_iters, tol=1e-3, generator=self.gen)
            m["sharpness"] = eig.value
            m["sharpness_residual"] = eig.residual
            m["sharpness_hvps"] = float(eig.n_matvecs)
            stats = noise_statistics(
                self.structure, model, per_example_loss, self.probe_x, self.probe_y,
                op.hvp_list, cfg.noise_samples, self.gen,
            )  # fmt: skip
            m.update({k: float(v) for k, v in stats.items()})
        model.train()
        self.n_evals += 1
        return m


# --------------------------------------------------------------------------- one step
def noisy_step(
    model: nn.Module,
    params: list[Tensor],
    opt: torch.optim.Optimizer,
    structure: Any,
    state: Any,
    x: Tensor,
    y: Tensor,
    generator: torch.Generator,
) -> tuple[Tensor, Any]:
    """One SGD step on the batch (x, y) with the structure's noise added to the gradient.

    Returns the per-example losses (detached) and the new noise state. The parameters are
    not updated when the loss or the noisy gradient is not finite (the losses returned are
    then NaN), so a diverging run stops on its last good state.
    """
    batch = len(x)
    use_stats = structure.needs_stats(state)
    rows = structure.stats_rows(batch, generator) if use_stats else None
    weights = structure.loss_weights(batch, state, generator)
    opt.zero_grad(set_to_none=True)
    recorder = DiagStatsRecorder(model, rows, weights, params) if use_stats else nullcontext()
    with recorder:
        losses = per_example_loss(model(x), y)
        (weights * losses).sum().backward()
    stats = recorder.result() if use_stats else None
    noisy, state = structure.update([p.grad for p in params], state, stats, generator)
    for p, g in zip(params, noisy, strict=True):
        p.grad = g
    losses = losses.detach()
    # One fused norm over all gradients and one read-back, instead of an isfinite pass per
    # tensor (that cost 0.4 of a plain step on a small MLP, bench.epoch). A gradient whose
    # norm overflows (entries beyond ~1e19 in float32) counts as non-finite too.
    checks = torch.stack([losses.sum(), torch.nn.utils.get_total_norm(noisy).to(losses.dtype)])
    loss_ok, grad_ok = torch.isfinite(checks).tolist()
    if loss_ok and grad_ok:
        opt.step()
    else:  # keep the last good parameters; the caller sees a non-finite loss and stops
        losses = torch.full_like(losses, float("nan")) if loss_ok else losses
    return losses, state


# --------------------------------------------------------------------------- the loop
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
    t0 = time.perf_counter()
    device = resolve_device(config.device)
    data = load_dataset(
        config.dataset, data_dir=config.data_dir, split_seed=config.split_seed,
        device=device, options=config.dataset_options,
    )  # fmt: skip
    n_train = len(data.x_train)
    config.validate(n_train=n_train)
    per_epoch, n_steps = total_steps(config, n_train)

    torch.manual_seed(config.seed)
    model = build_model(
        config.model, data.input_shape, data.num_classes,
        width=config.width, depth=config.depth, ghost_bn=config.ghost_bn,
    ).to(device)  # fmt: skip
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    structure = make_structure(
        config.noise, config.noise_c, stats_rows=config.stats_rows, stats_every=config.stats_every
    )
    state = structure.init(params)
    opt = torch.optim.SGD(
        params, lr=config.effective_lr, momentum=config.momentum,
        weight_decay=config.weight_decay,
    )  # fmt: skip
    batch_gen = torch.Generator().manual_seed(config.seed)
    noise_gen = torch.Generator(device=device).manual_seed(config.seed + 1)
    evaluator = _Evaluator(config, model, data, structure, device)

    info = {
        "device": describe_device(device), "versions": versions(), "code_revision": code_revision()
    }
    emit({
        "event": "start", "run_id": config.run_id(), "config": config.to_dict(), **info,
        "total_steps": n_steps, "steps_per_epoch": per_epoch, "probe_size": len(evaluator.probe_x),
        "n_train": n_train, "n_test": len(data.x_test), "dataset_info": data.info,
        "n_params": sum(p.numel() for p in params), "noise_c": config.noise_c,
        "time": time.time(),
    })  # fmt: skip

    B = config.batch_size
    last: dict[str, float] = {}
    status, message = "finished", None
    step, perm, pos = 0, torch.randperm(n_train, generator=batch_gen), 0

    def emit_metrics(lr: float, extra: dict[str, float]) -> None:
        nonlocal last
        m = evaluator(lr)
        m.update(extra)
        last = m
        emit({
            "event": "metric", "step": step, "epoch": step / per_epoch,
            "examples_seen": step * B, "wall_time": time.perf_counter() - t0, "metrics": m,
        })  # fmt: skip

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_steps, unit="step", desc=f"{config.noise} L={B}", leave=True)
    lr = learning_rate(config, 0, per_epoch, n_steps)
    emit_metrics(lr, {})
    batch_loss = float("nan")
    while step < n_steps:
        if should_stop is not None and should_stop():
            status, message = "cancelled", f"cancelled at step {step}"
            break
        if pos + B > n_train:
            perm, pos = torch.randperm(n_train, generator=batch_gen), 0
        idx = perm[pos : pos + B].to(device)
        pos += B
        x, y = data.x_train[idx], data.y_train[idx]
        lr = learning_rate(config, step, per_epoch, n_steps)
        for group in opt.param_groups:
            group["lr"] = lr

        losses, state = noisy_step(model, params, opt, structure, state, x, y, noise_gen)
        batch_loss = float(losses.mean())
        if not math.isfinite(batch_loss):
            status, message = "diverged", f"loss became {batch_loss} at step {step}"
            break
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{batch_loss:.4f}")
        if step % config.eval_every == 0 or step == n_steps:
            emit_metrics(lr, {"batch_loss": batch_loss})
            if not math.isfinite(last["train_loss"]):
                status, message = "diverged", f"loss became {last['train_loss']} at step {step}"
                break
    if bar is not None:
        bar.close()

    summary = {
        "event": "summary", "run_id": config.run_id(), "status": status, "message": message,
        "steps": step, "examples_seen": step * B, "wall_time": time.perf_counter() - t0,
        **info, "final": last,
    }  # fmt: skip
    emit(summary)
    return summary
