"""Firefly's growth step ("fireflyn", Wu et al. 2020), implemented from its published description.

Candidates per unit l of width C and K brand-new slots: every neuron may split (direction v), and K new neurons
(filter n, fan-out o) may be added. All candidates live at once in a *candidate network*: a copy of the model grown
by 2C + K channels per unit, laid out as [original | w+v copies | w-v copies | new]. Its consumer reads them through
per-channel gates g:

    original channel scaled by (1 - g_split), each copy by g_split / 2, a new neuron by g_new.

At g = 0 it computes exactly the current network; at g = 1 for a split it computes the split network (two children
with halved fan-out). So (1) one pass trains v, n, o with every gate at 1 (RMSprop, small L2), then (2) one pass
with every gate at (almost) 0 accumulates dL/dg, the first-order predicted loss change of adding each candidate, and (3) the
n = int(total x ratio) most negative are kept, over all layers together, and materialised with the exact primitives.
BN runs in eval mode throughout (Firefly freezes its statistics during the step).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from . import data as data_mod
from .growth import add_neurons, split_neurons
from .models import Unit


# Gate value at which the score gradients are taken. Not exactly 0: a max-pool over an all-zero channel sends its
# gradient to an arbitrary position, while for any g > 0 maxpool(g*h) = g*maxpool(h) picks the true argmax.
SCORE_GATE = 1e-6


@dataclass
class Candidates:
    """Trainable candidate tensors of one unit, shapes in comments (C = width, K = new slots)."""
    v: torch.Tensor  # (C, C_in, kh, kw) split directions
    n: torch.Tensor  # (K, C_in, kh, kw) new filters, over the unit's original inputs
    o: torch.Tensor  # (C_next, K, ...) new fan-out into the consumer's original rows
    dw: list[torch.Tensor]  # one (K, 1, kh, kw) depthwise filter per follower

    def tensors(self):
        return [self.v, self.n, self.o, *self.dw]


def _init_candidates(unit: Unit, k: int, cfg, g: torch.Generator, device) -> Candidates:
    w, cw = unit.conv.weight, unit.consumer.weight
    s = cfg.firefly_split_init
    v = (torch.rand(w.shape, generator=g) * 2 - 1) * s
    n = torch.randn((k, *w.shape[1:]), generator=g) * cfg.firefly_new_filter_std
    a = cfg.firefly_new_fanout_init
    o = (torch.rand((cw.shape[0], k, *cw.shape[2:]), generator=g) * 2 - 1) * a
    dw = [torch.randn((k, *d.weight.shape[1:]), generator=g) * cfg.firefly_new_filter_std
          for d, _ in unit.followers]
    return Candidates(*[t.to(device).requires_grad_() for t in (v, n, o)],
                      [t.to(device).requires_grad_() for t in dw])


def _tensor_names(model: nn.Module) -> dict[int, str]:
    return {id(m): name for name, m in model.named_modules()}


class CandidateNetwork:
    """The model with every candidate of every unit attached behind gates (see module docstring)."""

    def __init__(self, model: nn.Module, cfg, generator: torch.Generator):
        self.model = model
        self.units = model.units()
        device = next(model.parameters()).device
        k = cfg.firefly_new_per_layer
        self.k = k
        self.cands = [_init_candidates(u, k, cfg, generator, device) for u in self.units]
        # The structural copy: same modules, each unit 3C + K wide (values are supplied at call time).
        self.net = copy.deepcopy(model).eval()
        for u in self.net.units():
            c = u.width
            add_neurons(u, u.conv.weight.new_zeros(2 * c + k, *u.conv.weight.shape[1:]),
                        u.consumer.weight.new_zeros(u.consumer.weight.shape[0], 2 * c + k,
                                                    *u.consumer.weight.shape[2:]), birth_round=0)
        names = _tensor_names(self.net)
        self.net_units = self.net.units()
        self.keys = [(names[id(u.conv)], names[id(u.bn)], [(names[id(d)], names[id(b)]) for d, b in u.followers],
                      names[id(u.consumer)]) for u in self.net_units]
        self.gates = [None] * len(self.units)
        self._hooks = [u.output.register_forward_hook(self._gate_hook(i)) for i, u in enumerate(self.net_units)]
        # Everything the candidates leave unchanged (birth rounds are bookkeeping, not used in forward).
        self.frozen = {n: t.detach() for n, t in model.state_dict().items() if not n.endswith("birth_round")}
        self.unit_convs = {id(u.conv) for u in self.units}

    def _gate_hook(self, i):
        def hook(module, inputs, out):
            g_split, g_new = self.gates[i]
            mask = torch.cat([1 - g_split, g_split / 2, g_split / 2, g_new])
            return out * mask.view(1, -1, *([1] * (out.dim() - 2)))
        return hook

    def close(self):
        for h in self._hooks:
            h.remove()

    def _rows(self, i: int) -> torch.Tensor:
        """Unit i's conv rows over its original inputs, widened to the candidate network's inputs when it reads
        the previous unit's channels."""
        u, c = self.units[i], self.cands[i]
        w = u.conv.weight.detach()
        rows = torch.cat([w, w + c.v, w - c.v, c.n])  # (3C + K, C_in, kh, kw)
        if i > 0 and self.units[i - 1].consumer is u.conv:
            rows = self._expand_columns(rows, i - 1, consumer_unit=i)
        return rows

    def _expand_columns(self, w: torch.Tensor, producer: int, consumer_unit: int | None) -> torch.Tensor:
        """Widen a consumer's input columns from C to 3C + K: [w | w | w | fan-out of the new neurons]."""
        o = self.cands[producer].o  # (C_next, K, ...) over the consumer's original rows
        if consumer_unit is not None:  # the consumer is itself a unit: its split copies read o too, new rows 0
            o = torch.cat([o, o, o, o.new_zeros(self.k, *o.shape[1:])])
        return torch.cat([w, w, w, o], dim=1)

    def parameters(self) -> dict[str, torch.Tensor]:
        p = dict(self.frozen)
        for i, (u, c) in enumerate(zip(self.units, self.cands)):
            conv_key, bn_key, follower_keys, consumer_key = self.keys[i]
            p[f"{conv_key}.weight"] = self._rows(i)
            _bn_into(p, bn_key, u.bn, self.k)
            for (dk, dbk), (dw, dbn), dw_new in zip(follower_keys, u.followers, c.dw):
                w = dw.weight.detach()
                p[f"{dk}.weight"] = torch.cat([w, w, w, dw_new])
                _bn_into(p, dbk, dbn, self.k)
            if id(u.consumer) not in self.unit_convs:  # e.g. the classifier
                p[f"{consumer_key}.weight"] = self._expand_columns(u.consumer.weight.detach(), i, None)
        return p

    def loss(self, x, y, gate_value: float, requires_gate_grad: bool = False):
        device = x.device
        self.gates = [(torch.full((u.width,), gate_value, device=device, requires_grad=requires_gate_grad),
                       torch.full((self.k,), gate_value, device=device, requires_grad=requires_gate_grad))
                      for u in self.units]
        out = functional_call(self.net, self.parameters(), (x,))
        return nn.functional.cross_entropy(out, y)


def _bn_into(p: dict, key: str, bn: nn.BatchNorm2d, k: int) -> None:
    def rep(t, fill):
        t = t.detach()
        return torch.cat([t, t, t, t.new_full((k,), fill)])
    p[f"{key}.weight"] = rep(bn.weight, 1.0)
    p[f"{key}.bias"] = rep(bn.bias, 0.0)
    p[f"{key}.running_mean"] = rep(bn.running_mean, 0.0)
    p[f"{key}.running_var"] = rep(bn.running_var, 1.0)


def candidate_scores(model: nn.Module, ds, cfg, generator: torch.Generator, device) -> tuple:
    """Run the two candidate passes; return (CandidateNetwork, per-unit (split_scores, new_scores))."""
    was_training = model.training
    model.eval()
    cand = CandidateNetwork(model, cfg, generator)
    try:
        opt = torch.optim.RMSprop([t for c in cand.cands for t in c.tensors()], lr=cfg.firefly_candidate_lr)
        limit = cfg.firefly_candidate_images
        bs = cfg.firefly_candidate_batch_size
        for x, y in data_mod.train_batches(ds.train_x, ds.train_y, bs, generator, cfg.augment, limit=limit):
            x, y = x.to(device), y.to(device)
            l2 = sum((t ** 2).sum() for c in cand.cands for t in c.tensors())
            loss = cand.loss(x, y, 1.0) + cfg.firefly_candidate_l2 * l2
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sums = [(torch.zeros(u.width, device=device), torch.zeros(cand.k, device=device)) for u in cand.units]
        batches = 0
        for x, y in data_mod.train_batches(ds.train_x, ds.train_y, bs, generator, cfg.augment, limit=limit):
            x, y = x.to(device), y.to(device)
            loss = cand.loss(x, y, SCORE_GATE, requires_gate_grad=True)
            grads = torch.autograd.grad(loss, [g for pair in cand.gates for g in pair])
            for i in range(len(sums)):
                sums[i][0].add_(grads[2 * i])
                sums[i][1].add_(grads[2 * i + 1])
            batches += 1
        scores = [(s / max(batches, 1), n / max(batches, 1)) for s, n in sums]
    finally:
        cand.close()
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


@torch.no_grad()
def materialise(model: nn.Module, cand: CandidateNetwork, chosen, birth_round: int) -> None:
    """Turn the chosen candidates into real neurons, last unit first.

    Going backwards, a unit's own input columns are still the original ones when its rows are appended, and its
    consumer already has its final rows; `row_origin` says which parent each appended consumer row copies, so a new
    neuron's fan-out reaches split children exactly as it reached their parents in the candidate network.
    """
    units = model.units()
    row_origin: dict[int, torch.Tensor] = {}
    for i in reversed(range(len(units))):
        u, c = units[i], cand.cands[i]
        split_idx, new_idx = chosen[i]
        c_orig = u.width
        if len(new_idx):
            o = c.o.detach()[:, new_idx]  # (C_next_orig, n_new, ...)
            if i + 1 < len(units) and u.consumer is units[i + 1].conv:
                origin = row_origin.get(i + 1, torch.empty(0, dtype=torch.long))
                extra = torch.stack([o[p] if p >= 0 else torch.zeros_like(o[0]) for p in origin.tolist()]) \
                    if len(origin) else o[:0]
                o = torch.cat([o, extra])
            add_neurons(u, c.n.detach()[new_idx], o, birth_round,
                        follower_filters=[d.detach()[new_idx] for d in c.dw])
        if len(split_idx):
            # Splits go after new neurons so parent indices stay valid; the children are appended last.
            split_neurons(u, split_idx, c.v.detach()[split_idx], birth_round)
        row_origin[i] = torch.cat([torch.full((len(new_idx),), -1, dtype=torch.long), split_idx.cpu()])
        assert u.width == c_orig + len(new_idx) + len(split_idx)


def firefly_grow(model: nn.Module, ds, cfg, n_keep: int, generator: torch.Generator, birth_round: int,
                 device) -> dict:
    cand, scores = candidate_scores(model, ds, cfg, generator, device)
    chosen = select_global(scores, n_keep)
    materialise(model, cand, chosen, birth_round)
    return {"split": [len(s) for s, _ in chosen], "new": [len(n) for _, n in chosen]}
