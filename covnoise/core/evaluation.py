"""The metrics of one evaluation point: losses, accuracies, sharpness and noise statistics.

Losses and accuracies are on the whole train, validation and test sets (NaN for a run
without a validation split); the gradient norm, the sharpness (Lanczos λ_max with its
residual and whether Lanczos met its tolerance within its budget) and the injected noise's
tr Σ, ‖Σ‖_F and Tr(HΣ) are on a fixed probe batch drawn once per run, so successive
evaluations are comparable.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from covnoise.config import RunConfig
from covnoise.core.curvature import HessianOperator, lanczos
from covnoise.core.losses import per_example_loss
from covnoise.core.noise import NoiseStructure, noise_statistics
from covnoise.core.schedule import measures_curvature
from covnoise.data import Dataset


@torch.no_grad()
def evaluate(model: nn.Module, x: Tensor, y: Tensor, chunk: int = 4096) -> tuple[float, float]:
    """Mean loss and accuracy of `model` on (x, y), in chunks, in eval mode; NaN for an
    empty set."""
    if len(x) == 0:
        return math.nan, math.nan
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


class Evaluator:
    """Computes the metric dict of one evaluation point (see the module docstring)."""

    def __init__(
        self,
        config: RunConfig,
        model: nn.Module,
        data: Dataset,
        structure: NoiseStructure,
        device: torch.device,
        curvature_every: int = 1,
    ) -> None:
        self.config, self.model, self.data, self.structure = config, model, data, structure
        self.curvature_every = curvature_every  # schedule.curvature_every of the run
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.init = [p.detach().clone() for p in self.params]
        g = torch.Generator().manual_seed(config.seed + 7919)
        n = len(data.x_train)
        idx = torch.randperm(n, generator=g)[: min(config.probe_size, n)].to(device)
        self.probe_x, self.probe_y = data.x_train[idx], data.y_train[idx]
        self.gen = torch.Generator(device=device).manual_seed(config.seed + 104729)
        # the Tr(HΣ) draws that precision asks for beyond the first block
        self.extra_gen = torch.Generator(device=device).manual_seed(config.seed + 1299709)
        self.n_evals = 0

    def __call__(self, lr: float) -> dict[str, float]:
        """The metrics at the current parameters; `lr` is recorded with them."""
        model, data = self.model, self.data
        m: dict[str, float] = {}
        m["train_loss"], m["train_acc"] = evaluate(model, data.x_train, data.y_train)
        m["val_loss"], m["val_acc"] = evaluate(model, data.x_val, data.y_val)
        m["test_loss"], m["test_acc"] = evaluate(model, data.x_test, data.y_test)
        m["gen_gap"] = m["test_loss"] - m["train_loss"]
        m["lr"] = lr
        moved = [p.detach() - p0 for p, p0 in zip(self.params, self.init, strict=True)]
        m["dist_init"] = _flat_norm(moved)
        # gradient norm of the training loss on the probe batch (eval mode: no norm updates)
        model.eval()
        loss = per_example_loss(model(self.probe_x), self.probe_y).mean()
        grads = torch.autograd.grad(loss, self.params)
        m["grad_norm"] = _flat_norm(list(grads))
        if measures_curvature(self.n_evals, self.curvature_every):
            m.update(self._curvature())
        model.train()
        self.n_evals += 1
        return m

    def _curvature(self) -> dict[str, float]:
        """Sharpness and the noise statistics on the probe (the model is in eval mode)."""
        cfg = self.config
        op = HessianOperator(self.model, per_example_loss, self.probe_x, self.probe_y, self.params)
        eig = lanczos(op, k_max=cfg.lanczos_iters, tol=1e-3, generator=self.gen)
        m = {
            "sharpness": eig.value,
            "sharpness_residual": eig.residual,
            # 1 when Lanczos stopped on its tolerance (or spanned the space), 0 when it ran
            # out of iterations: the residual alone bounds the distance to *some* eigenvalue
            "sharpness_converged": float(eig.converged),
            "sharpness_hvps": float(eig.n_matvecs),
        }
        stats = noise_statistics(
            self.structure,
            self.model,
            per_example_loss,
            self.probe_x,
            self.probe_y,
            op.hvp_list,
            cfg.noise_samples,
            self.gen,
            extra_generator=self.extra_gen,
        )
        m.update({k: float(v) for k, v in stats.items()})
        return m
