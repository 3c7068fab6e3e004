"""Unsupervised adaptation to shifted (corrupted) data, with selected channels adapted first (Mitra & Franco 2020).

No target labels are used: pseudo-labels come from the unadapted model and only confident ones are kept. Every
condition gets the same number of optimiser steps. Selective conditions spend half of them on the selected channels
only (their incoming filter rows and BN affine, enforced by gradient masks) and half on the whole network.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from .. import data as data_mod

CONDITIONS = ("none", "bn_stats", "tent", "blind_full", "blind_last", "hyper_hypo", "random_channels")


@dataclass(frozen=True)
class AdaptConfig:
    steps: int = 20
    batch_size: int = 64  # 20 steps see ~4 passes over the ~300 kept images; half of 128's CPU time (E4 is 7 x 5 x 6)
    lr: float = 1e-3  # SGD without weight decay, so masked parameters stay bit-identical
    momentum: float = 0.9
    # Pseudo-labels kept for the most confident share of target images: the threshold is this quantile of the
    # unadapted model's max softmax on them. An absolute 0.9 kept 0 of 1,000 images for the quick-preset models
    # (median max softmax ~0.31), which silently turns every pseudo-label condition into "none".
    confidence_quantile: float = 0.7
    last_block_units: int = 4  # "blind last block": the last 4 conv units and the classifier
    reestimate_bn_first: bool = False  # True: BN statistics re-estimated on target data before adapting


@torch.no_grad()
def pseudo_labels(model: nn.Module, images_uint8: torch.Tensor, confidence_quantile: float, batch_size: int = 500,
                  *, normalise):
    """(indices kept, labels, threshold): images whose top softmax probability is >= the `confidence_quantile`
    quantile of the top probabilities over all the images."""
    model.eval()
    probs = torch.cat([model(normalise(images_uint8[s:s + batch_size])).softmax(1)
                       for s in range(0, len(images_uint8), batch_size)])
    top, label = probs.max(1)
    threshold = torch.quantile(top, confidence_quantile).item()
    keep = (top >= threshold).nonzero().flatten()
    return keep, label[keep], threshold


@torch.no_grad()
def reestimate_bn(model: nn.Module, images_uint8: torch.Tensor, batch_size: int = 250, *, normalise) -> None:
    """Replace every BN's running statistics by those of the target images (cumulative average)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    for s in range(0, len(images_uint8), batch_size):
        model(normalise(images_uint8[s:s + batch_size]))
    model.eval()


def channel_masks(model: nn.Module, channels: dict[int, list[int]]) -> dict[str, torch.Tensor]:
    """Gradient masks (1 = may change) for the incoming filter rows and BN affine of the selected channels."""
    masks = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    names = {id(p): n for n, p in model.named_parameters()}
    for layer, chs in channels.items():
        u = model.units()[layer]
        idx = torch.as_tensor(list(chs), dtype=torch.long)
        for p in (u.conv.weight, u.bn.weight, u.bn.bias):
            masks[names[id(p)]][idx] = 1
    return masks


def _train(model, images_uint8, labels, steps, cfg: AdaptConfig, params, masks=None, loss_kind="ce",
           generator=None, *, normalise) -> None:
    """`steps` SGD steps on pseudo-labelled target images; only `params` move (and only where masks are 1)."""
    if steps <= 0 or len(images_uint8) == 0:
        return
    opt = torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum)
    hooks = []
    if masks is not None:
        named = dict(model.named_parameters())
        hooks = [named[n].register_hook(lambda g, m=m: g * m) for n, m in masks.items()]
    model.train() if loss_kind == "entropy" else model.eval()  # TENT uses batch statistics; the others do not
    done = 0
    try:
        while done < steps:
            for xb, yb in data_mod.train_batches(images_uint8, labels, cfg.batch_size, generator, augment=False,
                                                  normalise=normalise):
                out = model(xb)
                if loss_kind == "entropy":
                    loss = -(out.softmax(1) * out.log_softmax(1)).sum(1).mean()
                else:
                    loss = nn.functional.cross_entropy(out, yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                done += 1
                if done >= steps:
                    break
    finally:
        for h in hooks:
            h.remove()
        model.eval()


def adapt(model: nn.Module, target_uint8: torch.Tensor, condition: str, cfg: AdaptConfig,
          selected: dict[int, list[int]] | None = None, seed: int = 0, *, normalise) -> nn.Module:
    """A copy of `model` adapted to `target_uint8` under `condition` (the original is untouched); `normalise` is
    the source data set's (`Dataset.normalise`), which the model was trained with."""
    if condition not in CONDITIONS:
        raise ValueError(f"unknown condition {condition!r}; valid: {', '.join(CONDITIONS)}")
    model = copy.deepcopy(model).eval()
    g = torch.Generator().manual_seed(seed)
    if condition == "none":
        return model
    if condition == "bn_stats" or cfg.reestimate_bn_first:
        reestimate_bn(model, target_uint8, normalise=normalise)
        if condition == "bn_stats":
            return model
    if condition == "tent":
        affine = [p for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in (m.weight, m.bias)]
        _train(model, target_uint8, torch.zeros(len(target_uint8), dtype=torch.long), cfg.steps, cfg, affine,
               loss_kind="entropy", generator=g, normalise=normalise)
        return model
    keep, labels, _ = pseudo_labels(model, target_uint8, cfg.confidence_quantile, normalise=normalise)
    x = target_uint8[keep]
    if condition == "blind_full":
        _train(model, x, labels, cfg.steps, cfg, list(model.parameters()), generator=g, normalise=normalise)
    elif condition == "blind_last":
        units = model.units()[-cfg.last_block_units:]
        params = [p for u in units for p in (u.conv.weight, u.bn.weight, u.bn.bias)]
        params += list(model.classifier.parameters())
        _train(model, x, labels, cfg.steps, cfg, params, generator=g, normalise=normalise)
    else:  # hyper_hypo / random_channels: selected channels first, then the whole network
        if selected is None:
            raise ValueError(f"condition {condition!r} needs the selected channels")
        # An empty selection is a finding, not an error: stage 1 then changes nothing, within the same budget.
        first = cfg.steps // 2
        _train(model, x, labels, first, cfg, list(model.parameters()), masks=channel_masks(model, selected),
               generator=g, normalise=normalise)
        _train(model, x, labels, cfg.steps - first, cfg, list(model.parameters()), generator=g, normalise=normalise)
    return model
