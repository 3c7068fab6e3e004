"""A learnable CIFAR-shaped data set generated from a seed: every code path runs without real data (CI, smoke)."""
from __future__ import annotations

import torch

from .cifar import CIFAR10_NORMALISATION
from .dataset import Dataset


def synthetic_cifar(num_classes: int = 10, train_per_class: int = 100, test_per_class: int = 50,
                    seed: int = 0) -> Dataset:
    """A learnable CIFAR-shaped data set: each class is a smooth random colour pattern plus noise and a shift.

    Seeded and cheap; any number of classes (100 stands in for CIFAR-100, whose pixels are not available here).
    """
    g = torch.Generator().manual_seed(seed)
    # Class prototypes: low-frequency patterns (8x8 upsampled) so a small conv net separates them.
    protos = torch.rand(num_classes, 3, 8, 8, generator=g)
    protos = torch.nn.functional.interpolate(protos, size=32, mode="bilinear", align_corners=False)

    def sample(per_class):
        y = torch.arange(num_classes).repeat_interleave(per_class)
        x = protos[y] + 0.25 * torch.randn(len(y), 3, 32, 32, generator=g)
        shifts = torch.randint(-3, 4, (len(y), 2), generator=g)
        x = torch.stack([torch.roll(img, (int(s[0]), int(s[1])), dims=(1, 2)) for img, s in zip(x, shifts)])
        return (x.clamp(0, 1) * 255).round().to(torch.uint8), y

    trx, tr_y = sample(train_per_class)
    tex, te_y = sample(test_per_class)
    classes = tuple(f"class_{i}" for i in range(num_classes))
    # CIFAR-10's statistics: it stands in for CIFAR, and its runs keep the numbers they had when those were global
    return Dataset("synthetic", trx, tr_y, tex, te_y, classes, CIFAR10_NORMALISATION,
                   {"source": "synthetic", "seed": seed, "verification": "generated"})
