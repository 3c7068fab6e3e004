"""Split growth (Net2Wider-style): duplicate existing neurons, the children told apart by a little noise."""
from __future__ import annotations

import torch
from torch import nn

from .base import GrowthMethod, neurons_to_add, plain_label
from .primitives import split_neurons


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


def _grow(model, cfg, ds, birth_round, generator, device) -> dict:
    n = neurons_to_add(model, cfg.grow_ratio)
    return {"added": n, **grow_split(model, n, generator, birth_round, cfg.split_noise)}


METHOD = GrowthMethod(name="split", order=2, grows=True, rows=("split",), label=lambda c: plain_label("split", c),
                      grow=_grow)
