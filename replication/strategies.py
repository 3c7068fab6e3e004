"""Which neurons a growth step adds: random, split (Net2Wider-style), Firefly; `fixed` adds none.

Every growing method adds the same number per step, int(total growable neurons x grow_ratio) (Firefly's rule),
so the methods differ only in where the neurons go and how they start.
"""
from __future__ import annotations

import torch
from torch import nn

from .firefly import firefly_grow
from .growth import add_neurons, kaiming_filters, random_fan_out, random_follower_filters, split_neurons
from .models import widths_of


def neurons_to_add(model: nn.Module, ratio: float) -> int:
    return int(sum(widths_of(model)) * ratio)  # Firefly: int(total x ratio), chosen globally across layers


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


def grow_split(model: nn.Module, n: int, generator: torch.Generator, birth_round: int, noise: float) -> dict:
    """Split n distinct neurons drawn uniformly over all layers; children differ by +-noise*std(filter) noise."""
    units = model.units()
    widths = [u.width for u in units]
    pick = torch.randperm(sum(widths), generator=generator)[:n]
    bounds = torch.tensor([0] + widths).cumsum(0)
    counts = []
    for i, u in enumerate(units):
        local = (pick[(pick >= bounds[i]) & (pick < bounds[i + 1])] - bounds[i]).sort().values
        counts.append(len(local))
        if len(local):
            w = u.conv.weight.detach()[local]
            scale = w.flatten(1).std(dim=1).view(-1, *([1] * (w.dim() - 1)))
            delta = noise * scale * torch.randn(w.shape, generator=generator).to(w)
            split_neurons(u, local, delta, birth_round)
    return {"split": counts, "new": [0] * len(units)}


def grow(model: nn.Module, cfg, ds, birth_round: int, generator: torch.Generator, device) -> dict:
    """One growth step of `cfg.method`; returns how many neurons went where."""
    if cfg.method in ("firefly", "ours"):
        return firefly_grow(model, ds, cfg, generator, birth_round, device)  # its own count (n + 1, per group)
    n = neurons_to_add(model, cfg.grow_ratio)
    if cfg.method == "random":
        info = grow_random(model, n, generator, birth_round)
    elif cfg.method == "split":
        info = grow_split(model, n, generator, birth_round, cfg.split_noise)
    else:
        raise ValueError(f"method {cfg.method!r} does not grow")
    return {"added": n, **info}
