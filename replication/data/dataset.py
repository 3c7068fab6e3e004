"""A data set held in memory: uint8 images and labels, its class names, and the statistics it is normalised with."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch


class DataError(RuntimeError):
    """Data missing or damaged; the message says what to do. The CLI prints it without a traceback."""


@dataclass(frozen=True)
class Normalisation:
    """The per-channel mean and std (of pixels scaled to [0, 1]) a data set's images are standardised with."""
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def __call__(self, x_uint8: torch.Tensor) -> torch.Tensor:
        """uint8 images -> float, scaled and standardised, on the images' device (IEEE division and subtraction:
        the same values on any device)."""
        mean = torch.tensor(self.mean, device=x_uint8.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x_uint8.device).view(1, 3, 1, 1)
        return (x_uint8.float().div_(255) - mean) / std


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor  # (N, 3, 32, 32) uint8
    train_y: torch.Tensor  # (N,) int64
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    normalise: Normalisation  # how its images are standardised (its reader's statistics)
    provenance: dict = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to(self, device) -> "Dataset":
        """The same data set with its tensors on `device` (uint8: 150 MB for CIFAR's 50,000 + 10,000 images), so
        that batches are cut, augmented and normalised there (train_batches)."""
        device = torch.device(device)
        if device.type == "cpu":
            return self
        return dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in
                                            ("train_x", "train_y", "test_x", "test_y")})
