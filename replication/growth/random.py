"""Random growth: brand-new, randomly initialised neurons, placed in layers in proportion to their widths."""
from __future__ import annotations

import torch
from torch import nn

from .base import GrowthMethod, neurons_to_add, plain_label
from .primitives import add_neurons, kaiming_filters, random_fan_out, random_follower_filters


def grow_random(model: nn.Module, n: int, generator: torch.Generator, birth_round: int) -> dict:
    """n brand-new, randomly initialised neurons, each placed in a layer drawn in proportion to its width."""
    units = model.units()
    widths = torch.tensor([u.width for u in units], dtype=torch.float)
    layer = torch.multinomial(widths, n, replacement=True, generator=generator)
    counts = torch.bincount(layer, minlength=len(units)).tolist()
    for u, k in zip(units, counts):
        if k:
            add_neurons(u, kaiming_filters(u, k, generator), random_fan_out(u, k, generator), birth_round,
                        follower_filters=random_follower_filters(u, k, generator))
    return {"new": counts, "split": [0] * len(units)}


def _grow(model, cfg, ds, birth_round, generator, device) -> dict:
    n = neurons_to_add(model, cfg.grow_ratio)
    return {"added": n, **grow_random(model, n, generator, birth_round)}


METHOD = GrowthMethod(name="random", order=1, grows=True, rows=("random", "random + constraint"),
                      label=lambda c: plain_label("random", c), grow=_grow)
