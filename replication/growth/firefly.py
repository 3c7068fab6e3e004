"""Firefly's growth step ("fireflyn", Wu et al. 2020), written from its description and its public code's behaviour.

(1) One pass trains every candidate of the candidate network (`candidates.py`) with every gate at 1 (RMSprop,
L2 penalties); (2) one pass scores every candidate; (3) the most negative scores are kept, per selection group of
layers, and materialised with the exact growth primitives. BN runs in eval mode throughout (Firefly freezes its
statistics during the step).

Two scoring points (`firefly_score_at`):
- "full" (Firefly's public code): every gate stays at 1 and each candidate's perturbation is scaled by (1 + t); the
  score is dL/dt at t = 0, the slope of the loss along the candidate's own perturbation in the fully grown
  candidate network.
- "zero" (this project's first version): dL/dg at g = 0, the first-order loss change of switching the candidate on
  from the current network.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import data as data_mod
from .candidates import SCORE_GATE, CandidateNetwork
from .base import GrowthMethod
from .primitives import add_neurons, split_neurons
from ..progress import progress


def _n_batches(ds, batch_size: int, limit: int | None) -> int:
    n = len(ds.train_y) if limit is None else min(limit, len(ds.train_y))
    return -(-n // batch_size)


def candidate_scores(model: nn.Module, ds, cfg, generator: torch.Generator, device) -> tuple:
    """Run the two candidate passes; return (CandidateNetwork, per-unit (split_scores, new_scores))."""
    was_training = model.training
    model.eval()
    cand = CandidateNetwork(model, cfg, generator)
    params = [t for c in cand.cands for t in c.tensors()]
    try:
        opt = torch.optim.RMSprop(params, lr=cfg.firefly_candidate_lr, momentum=cfg.firefly_rmsprop_momentum,
                                  alpha=cfg.firefly_rmsprop_alpha)
        bs = cfg.firefly_candidate_batch_size
        limit = cfg.firefly_candidate_images
        stream = data_mod.train_batches(ds.train_x, ds.train_y, bs, generator, cfg.augment, limit=limit,
                                        normalise=ds.normalise)
        for x, y in progress(stream, _n_batches(ds, bs, limit), "Firefly: training candidates", cfg.progress):
            x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
            l2 = sum(weight * (t ** 2).sum() for c in cand.cands for weight, t in c.penalised(cfg) if weight)
            loss = cand.loss(x, y, 1.0) + l2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        for t in params:  # scores are gradients w.r.t. gates or scales only
            t.requires_grad_(False)
        gate_value = 1.0 if cfg.firefly_score_at == "full" else SCORE_GATE
        sums = [(torch.zeros(u.width, device=device), torch.zeros(cand.k, device=device)) for u in cand.units]
        n_scored = 0
        limit = cfg.firefly_score_images if cfg.firefly_score_images is not None else limit
        passes = data_mod.train_batches(ds.train_x, ds.train_y, bs, generator, cfg.augment, limit=limit,
                                        normalise=ds.normalise)
        for x, y in progress(passes, _n_batches(ds, bs, limit), "Firefly: scoring candidates", cfg.progress):
            x, y = x.to(device, memory_format=torch.channels_last), y.to(device)
            loss = cand.loss(x, y, gate_value, score=cfg.firefly_score_at)
            grads = torch.autograd.grad(loss, cand.score_inputs())
            for i in range(len(sums)):
                sums[i][0].add_(grads[2 * i])
                sums[i][1].add_(grads[2 * i + 1])
            n_scored += 1
        scores = [(s / max(n_scored, 1), n / max(n_scored, 1)) for s, n in sums]
    finally:
        model.train(was_training)
    return cand, scores


def select_global(scores: list[tuple[torch.Tensor, torch.Tensor]], n_keep: int):
    """Indices of the n_keep most negative scores over all units: per unit (split_idx, new_idx)."""
    flat = torch.cat([torch.cat([s, n]) for s, n in scores])
    keep = torch.zeros_like(flat, dtype=torch.bool)
    keep[torch.argsort(flat, stable=True)[:n_keep]] = True
    out, offset = [], 0
    for s, n in scores:
        ks, kn = keep[offset:offset + len(s)], keep[offset + len(s):offset + len(s) + len(n)]
        out.append((ks.nonzero().flatten(), kn.nonzero().flatten()))
        offset += len(s) + len(n)
    return out


def select_groups(scores, groups: list[list[int]], quotas: list[int]):
    """`select_global` within each group of units, each with its own quota (Firefly's MobileNetV1 selection)."""
    chosen: list = [None] * len(scores)
    for group, quota in zip(groups, quotas):
        for i, pick in zip(group, select_global([scores[i] for i in group], quota)):
            chosen[i] = pick
    return chosen


@torch.no_grad()
def materialise(model: nn.Module, cand: CandidateNetwork, chosen, birth_round: int,
                zero_depthwise: bool = False) -> None:
    """Turn the chosen candidates into real neurons, last unit first.

    Going backwards, a unit's own input columns are still the original ones when its rows are appended, and its
    consumer already has its final rows; `row_origin` says where each appended consumer row came from, so a new
    neuron's fan-out reaches split children exactly as it reached their parents in the candidate network, and
    the consumer's new neurons through the learnt new-to-new weights m. `zero_depthwise` gives new channels a zero
    depthwise filter, as Firefly's code materialises them (FF:sp/conv.py:168-169).
    """
    units = model.units()
    row_origin: dict[int, list[tuple[str, int]]] = {}
    for i in reversed(range(len(units))):
        u, c = units[i], cand.cands[i]
        split_idx, new_idx = chosen[i]
        c_orig = u.width
        if len(new_idx):
            o = c.o.detach()[:, new_idx]  # (C_next_orig, n_new, ...)
            if i + 1 < len(units) and u.consumer is units[i + 1].conv:
                m = cand.cands[i + 1].m
                rows = []
                for kind, j in row_origin.get(i + 1, []):
                    if kind == "split":  # a split child keeps its parent's fan-in from new upstream neurons
                        rows.append(o[j])
                    else:  # a new neuron of the consumer: the learnt new-to-new weights, or none
                        rows.append(m.detach()[j, new_idx] if m is not None else torch.zeros_like(o[0]))
                o = torch.cat([o, torch.stack(rows)]) if rows else o
            dw = [d.detach()[new_idx] for d in c.dw]
            add_neurons(u, c.n.detach()[new_idx], o, birth_round,
                        follower_filters=[torch.zeros_like(d) for d in dw] if zero_depthwise else dw)
        if len(split_idx):
            # Splits go after new neurons so parent indices stay valid; the children are appended last.
            split_neurons(u, split_idx, c.v.detach()[split_idx], birth_round)
        row_origin[i] = [("new", j) for j in new_idx.tolist()] + [("split", p) for p in split_idx.tolist()]
        assert u.width == c_orig + len(new_idx) + len(split_idx)


def selection_quotas(model: nn.Module, cfg) -> tuple[list[list[int]], list[int]]:
    """Groups of units selected together and how many neurons each keeps: int(group width x ratio) (Firefly's
    count, FF:sp/net.py:45-60) plus `firefly_keep_extra` (its `<=` threshold keeps one more)."""
    widths = [u.width for u in model.units()]
    groups = model.selection_groups() if cfg.firefly_grouped_selection else [list(range(len(widths)))]
    quotas = [int(sum(widths[i] for i in g) * cfg.grow_ratio) + cfg.firefly_keep_extra for g in groups]
    return groups, quotas


def firefly_grow(model: nn.Module, ds, cfg, generator: torch.Generator, birth_round: int, device) -> dict:
    groups, quotas = selection_quotas(model, cfg)
    cand, scores = candidate_scores(model, ds, cfg, generator, device)
    chosen = select_groups(scores, groups, quotas)
    materialise(model, cand, chosen, birth_round, zero_depthwise=cfg.firefly_new_depthwise == "zero")
    split = [len(s) for s, _ in chosen]
    new = [len(n) for _, n in chosen]
    return {"added": sum(split) + sum(new), "split": split, "new": new}


def _label(c: dict) -> str:
    if c["lambda_sim"] > 0:
        return "firefly + constraint"
    return "firefly (scored at g = 0)" if c.get("firefly_score_at") == "zero" else "firefly"


def _grow(model, cfg, ds, birth_round, generator, device) -> dict:
    return firefly_grow(model, ds, cfg, generator, birth_round, device)  # its own count (n + 1, per group)


METHOD = GrowthMethod(name="firefly", order=3, grows=True, rows=("firefly", "firefly (scored at g = 0)"),
                      label=_label, grow=_grow)
