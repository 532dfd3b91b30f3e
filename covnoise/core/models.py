"""Small models for the study: an MLP, 1-D/2-D CNNs, and CIFAR-size VGG- and ResNet-style nets.

Every trainable parameter lives in an nn.Linear, nn.Conv1d or nn.Conv2d layer, so the
per-example statistics of covnoise.core.pergrad cover the whole model. There is no BatchNorm by
default (it mixes examples, which makes per-example gradients ill-defined); ghost batch norm
without affine parameters is an option (`ghost_bn` = group size).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from covnoise.config import MODELS


class GhostNorm(nn.Module):
    """Batch normalisation over groups of `group` examples, no affine parameters.

    In training mode each group of the batch is normalised with its own statistics and the
    running averages are updated; in eval mode the running averages are used.
    """

    def __init__(self, channels: int, group: int, momentum: float = 0.1, eps: float = 1e-5):
        super().__init__()
        self.group, self.momentum, self.eps = group, momentum, eps
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        if not self.training:
            mean, var = self.running_mean.view(shape), self.running_var.view(shape)
            return (x - mean) / torch.sqrt(var + self.eps)
        n = x.shape[0]
        g = self.group if n % self.group == 0 else n
        xg = x.reshape(n // g, g, *x.shape[1:])
        dims = [1] + list(range(3, xg.dim()))
        mean = xg.mean(dim=dims, keepdim=True)
        var = xg.var(dim=dims, keepdim=True, unbiased=False)
        with torch.no_grad():
            m = self.momentum
            self.running_mean.mul_(1 - m).add_(m * mean.mean(0).flatten())
            self.running_var.mul_(1 - m).add_(m * var.mean(0).flatten())
        return ((xg - mean) / torch.sqrt(var + self.eps)).reshape_as(x)


def _norm(channels: int, ghost_bn: int) -> nn.Module:
    return GhostNorm(channels, ghost_bn) if ghost_bn else nn.Identity()


class MLP(nn.Sequential):
    """Flatten, then `depth` linear layers (depth − 1 hidden layers of `width`, ReLU)."""

    def __init__(self, in_features: int, num_classes: int, width: int, depth: int, ghost_bn: int):
        layers: list[nn.Module] = [nn.Flatten()]
        d = in_features
        for _ in range(depth - 1):
            layers += [nn.Linear(d, width), _norm(width, ghost_bn), nn.ReLU()]
            d = width
        layers.append(nn.Linear(d, num_classes))
        super().__init__(*layers)


class CNN2d(nn.Sequential):
    """Two 3×3 conv layers, 2×2 max-pool, a hidden linear layer: for small images."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, width: int, ghost_bn: int):
        c, h, w = shape
        c1, c2 = 32, 64
        flat = c2 * (h // 2) * (w // 2)
        super().__init__(
            nn.Conv2d(c, c1, 3, padding=1),
            _norm(c1, ghost_bn),
            nn.ReLU(),
            nn.Conv2d(c1, c2, 3, padding=1),
            _norm(c2, ghost_bn),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(flat, width),
            nn.ReLU(),
            nn.Linear(width, num_classes),
        )


class CNN1d(nn.Sequential):
    """Three 1-D conv layers (two with stride 2) and a linear read-out: for MNIST-1D."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, width: int, ghost_bn: int):
        c, length = shape
        ch = 32
        out_len = math.ceil(math.ceil(length / 2) / 2)
        super().__init__(
            nn.Conv1d(c, ch, 5, padding=2),
            _norm(ch, ghost_bn),
            nn.ReLU(),
            nn.Conv1d(ch, ch, 3, padding=1, stride=2),
            _norm(ch, ghost_bn),
            nn.ReLU(),
            nn.Conv1d(ch, ch, 3, padding=1, stride=2),
            _norm(ch, ghost_bn),
            nn.ReLU(),
            nn.Flatten(),
            nn.Linear(ch * out_len, num_classes),
        )


class VGG(nn.Sequential):
    """VGG-style net: conv blocks of base·(1, 2, 4, 8) channels with max-pooling."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, base: int, ghost_bn: int):
        c, h, _ = shape
        layers: list[nn.Module] = []
        for i, mult in enumerate((1, 2, 4, 8)):
            out = base * mult
            layers += [nn.Conv2d(c, out, 3, padding=1), _norm(out, ghost_bn), nn.ReLU()]
            if i >= 2:
                layers += [nn.Conv2d(out, out, 3, padding=1), _norm(out, ghost_bn), nn.ReLU()]
            if h >= 2:
                layers.append(nn.MaxPool2d(2))
                h //= 2
            c = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes)]
        super().__init__(*layers)


class ResBlock(nn.Module):
    """x + conv(relu(conv(x))); the second conv starts at zero so the net starts as identity
    blocks, which trains stably without BatchNorm."""

    def __init__(self, channels: int, ghost_bn: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm1 = _norm(channels, ghost_bn)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.norm2 = _norm(channels, ghost_bn)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(x + self.norm2(self.conv2(h)))


class ResNet(nn.Module):
    """ResNet-style net: stem, then three stages (channels base·1,2,4) of one residual block."""

    def __init__(self, shape: tuple[int, ...], num_classes: int, base: int, ghost_bn: int):
        super().__init__()
        c = shape[0]
        layers: list[nn.Module] = [
            nn.Conv2d(c, base, 3, padding=1),
            _norm(base, ghost_bn),
            nn.ReLU(),
        ]
        ch = base
        for i, mult in enumerate((1, 2, 4)):
            out = base * mult
            if out != ch:
                layers += [nn.Conv2d(ch, out, 3, padding=1), _norm(out, ghost_bn), nn.ReLU()]
            layers.append(ResBlock(out, ghost_bn))
            if i < 2:
                layers.append(nn.MaxPool2d(2))
            ch = out
        layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(ch, num_classes)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


def build_model(
    name: str,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    width: int = 256,
    depth: int = 3,
    ghost_bn: int = 0,
) -> nn.Module:
    """Build a model by name. `cnn` is 2-D for image shapes (C, H, W) and 1-D for (C, L).

    For `vgg` and `resnet`, `width // 4` is the base channel count (64 for the default 256).
    """
    if name == "mlp":
        return MLP(math.prod(input_shape), num_classes, width, depth, ghost_bn)
    if name == "cnn":
        if len(input_shape) == 3:
            return CNN2d(input_shape, num_classes, width, ghost_bn)
        if len(input_shape) == 2:
            return CNN1d(input_shape, num_classes, width, ghost_bn)
        raise ValueError(f"model: cnn needs (C,H,W) or (C,L) inputs, got {input_shape}")
    if name in ("vgg", "resnet"):
        if len(input_shape) != 3:
            raise ValueError(f"model: {name} needs image inputs (C,H,W), got {input_shape}")
        cls = VGG if name == "vgg" else ResNet
        return cls(input_shape, num_classes, max(1, width // 4), ghost_bn)
    raise ValueError(f"model: {name!r} is not one of {', '.join(MODELS)}")


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters P."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
