"""Data sets held in memory as uint8 tensors, verified, with batched on-tensor augmentation.

The whole split lives in memory (CIFAR-10 train = 150 MB of uint8); crop and flip are applied to whole batches,
so the data pipeline stays off the training loop's critical path (see docs/performance.md and `make bench`). A data
set is a reader (cifar.py, synthetic.py) that returns a `Dataset` carrying its own normalisation statistics.
"""
from __future__ import annotations

import torch

from .batches import CROP_PADDING, augment_batch, crop_flip, epoch_plan, eval_batches, train_batches  # noqa: F401
from .cifar import CIFAR10_NORMALISATION, load_cifar  # noqa: F401
from .dataset import DataError, Dataset, Normalisation  # noqa: F401
from .synthetic import synthetic_cifar


def stratified_subset(labels: torch.Tensor, per_class: int, seed: int) -> torch.Tensor:
    """Indices of `per_class` examples of every class, drawn with a seeded permutation, in ascending order."""
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(labels), generator=g)
    chosen = []
    for c in labels.unique().tolist():
        idx = perm[labels[perm] == c]
        if len(idx) < per_class:
            raise ValueError(f"class {c} has only {len(idx)} examples; asked for {per_class}")
        chosen.append(idx[:per_class])
    return torch.cat(chosen).sort().values


def _cifar(name: str):
    return lambda cfg: load_cifar(name, cfg.data_dir, download=cfg.download, verify=cfg.verify_data)


# The data sets a config may name: each a reader (config -> Dataset, its normalisation statistics included).
READERS = {
    "cifar10": _cifar("cifar10"),
    "cifar100": _cifar("cifar100"),
    "synthetic": lambda cfg: synthetic_cifar(cfg.synthetic_classes, cfg.synthetic_train_per_class,
                                             cfg.synthetic_test_per_class),
}


def load_dataset(cfg) -> Dataset:
    """The data set a config asks for, subset as the config says (subsets are seeded independently of the run)."""
    ds = READERS[cfg.dataset](cfg)
    # Subsets use a fixed seed (not the run seed) so every seed of a study sees the same images.
    if cfg.train_per_class is not None:
        idx = stratified_subset(ds.train_y, cfg.train_per_class, seed=1234)
        ds.train_x, ds.train_y = ds.train_x[idx], ds.train_y[idx]
    if cfg.test_per_class is not None:
        idx = stratified_subset(ds.test_y, cfg.test_per_class, seed=4321)
        ds.test_x, ds.test_y = ds.test_x[idx], ds.test_y[idx]
    ds.provenance = {**ds.provenance, "train_size": len(ds.train_y), "test_size": len(ds.test_y)}
    return ds
