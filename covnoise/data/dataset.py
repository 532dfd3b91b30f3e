"""The container every loader returns (:class:`Dataset`) and the one error the package raises.

Both live apart from the loaders so that the registry, the readers and the callers can share
them without importing any reader.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import Tensor


class DatasetError(ValueError):
    """A dataset request that cannot be served; the message names the field and what is allowed."""


@dataclass
class Dataset:
    """A train/validation/test split as tensors on one device, with a JSON-serialisable
    record in ``info``.

    ``x_*`` are float32 with shape ``(N, *input_shape)``; ``y_*`` are int64 class labels. The
    validation split (carved out of the training set by ``load_dataset``'s ``val_fraction``)
    is empty when there is none; left out, it is made empty.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    info: dict = field(default_factory=dict)
    x_val: Tensor | None = None
    y_val: Tensor | None = None

    def __post_init__(self) -> None:
        if self.x_val is None:
            self.x_val = self.x_train[:0]
        if self.y_val is None:
            self.y_val = self.y_train[:0]
        for split in ("train", "val", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.shape[0] != y.shape[0] or tuple(x.shape[1:]) != tuple(self.input_shape):
                raise DatasetError(
                    f"{self.name}: x_{split} has shape {tuple(x.shape)} and y_{split} "
                    f"{tuple(y.shape)}; expected (N, *{tuple(self.input_shape)}) and (N,)"
                )

    @property
    def n_train(self) -> int:
        """Number of training examples."""
        return int(self.x_train.shape[0])

    @property
    def n_val(self) -> int:
        """Number of validation examples (0 when there is no validation split)."""
        return int(self.x_val.shape[0])

    @property
    def n_test(self) -> int:
        """Number of test examples."""
        return int(self.x_test.shape[0])

    @property
    def device(self) -> torch.device:
        """The device the tensors live on."""
        return self.x_train.device

    def to(self, device: str | torch.device) -> Dataset:
        """Return a copy with every tensor moved to ``device`` (``info`` is shared, not copied)."""
        dev = torch.device(device)
        return dataclasses.replace(
            self,
            x_train=self.x_train.to(dev),
            y_train=self.y_train.to(dev),
            x_val=self.x_val.to(dev),
            y_val=self.y_val.to(dev),
            x_test=self.x_test.to(dev),
            y_test=self.y_test.to(dev),
        )

    def __repr__(self) -> str:
        return (
            f"Dataset(name={self.name!r}, n_train={self.n_train}, n_val={self.n_val}, "
            f"n_test={self.n_test}, "
            f"input_shape={self.input_shape}, num_classes={self.num_classes}, "
            f"device={str(self.device)!r})"
        )
