"""Firefly's candidate network: every candidate neuron of every layer at once, behind gates (Wu et al. 2020).

Candidates per unit l of width C and K brand-new slots: every neuron may split (direction v), and K new neurons
(filter n over the unit's original inputs, fan-out o into the consumer's original rows, and, with
`firefly_new_to_new`, weights m from the previous unit's new neurons into this unit's new neurons, as Firefly's code
learns and keeps them) may be added. The candidate network is the model with every unit 3C + K channels wide, laid
out as [original | w+v copies | w-v copies | new]. Its consumer reads them through per-channel gates g:

    original channel scaled by (1 - g_split), each copy by g_split / 2, a new neuron by g_new.

At g = 0 it computes exactly the current network; at g = 1 for a split it computes the split network (two children
with halved fan-out). For Firefly's public scoring ("full") every gate stays at 1 and each candidate's own
perturbation (v's product for a split, n's product for a new neuron) is scaled by (1 + t), t = 0: the scores are
the gradients with respect to t. `firefly.py` trains, scores, selects and materialises.

Cost. The consumer applies the same weights w to the original channel and both copies, so it first mixes them into
one channel, mix = (1 - g) h + g (h+ + h-) / 2, and reads C + K inputs instead of 3C + K. A unit's own rows w, w+v,
w-v are formed from two products, conv(mix, w) and conv(mix, v). Per pair of layers this costs 2C^2 + 2CK MACs per
position instead of (3C + K)^2: 5x less at C = 16, K = 70 (the first growth step), ~3x at C = 300. The new-to-new
weights add a K x K convolution per layer.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..models import Unit

# Gate value at which the scores dL/dg are taken in the "zero" mode. The gates act after every per-channel operation
# (pooling included), right where the consumer mixes the channels, so the gradient at exactly g = 0 is well defined.
SCORE_GATE = 0.0


@dataclass
class Candidates:
    """Trainable candidate tensors of one unit, shapes in comments (C = width, K = new slots)."""
    v: torch.Tensor  # (C, C_in, kh, kw) split directions
    n: torch.Tensor  # (K, C_in, kh, kw) new filters, over the unit's original inputs
    o: torch.Tensor  # (C_next, K, ...) new fan-out into the consumer's original rows
    dw: list[torch.Tensor]  # one (K, 1, kh, kw) depthwise filter per follower
    m: torch.Tensor | None = None  # (K, K_prev, kh, kw) from the previous unit's new neurons into these new ones

    def penalised(self, cfg) -> list[tuple[float, torch.Tensor]]:
        """(L2 weight, tensor) pairs; a depthwise filter is part of a new neuron's fan-in."""
        fan_out = [self.o] + ([self.m] if self.m is not None else [])
        return ([(cfg.firefly_l2_split, self.v), (cfg.firefly_l2_new_fanin, self.n)]
                + [(cfg.firefly_l2_new_fanin, t) for t in self.dw] + [(cfg.firefly_l2_new_fanout, t) for t in fan_out])

    def tensors(self) -> list[torch.Tensor]:
        return [t for t in (self.v, self.n, self.o, *self.dw, self.m) if t is not None]


def _init_candidates(unit: Unit, k: int, cfg, g: torch.Generator, device, k_prev: int | None) -> Candidates:
    """Firefly's candidate inits (FF:sp/conv.py:194-210): v ~ U(+-0.1), n ~ N(0, 0.1), fan-out ~ U(+-0.01); the
    new-to-new weights are part of Firefly's fan-in tensor from the previous layer's new neurons, U(+-0.01) too."""
    w, cw = unit.conv.weight, unit.consumer.weight
    s = cfg.firefly_split_init
    v = (torch.rand(w.shape, generator=g) * 2 - 1) * s
    n = torch.randn((k, *w.shape[1:]), generator=g) * cfg.firefly_new_filter_std
    a = cfg.firefly_new_fanout_init
    o = (torch.rand((cw.shape[0], k, *cw.shape[2:]), generator=g) * 2 - 1) * a
    dw = [torch.randn((k, *d.weight.shape[1:]), generator=g) * cfg.firefly_new_filter_std
          for d, _ in unit.followers]
    m = None
    if k_prev is not None:
        m = (torch.rand((k, k_prev, *w.shape[2:]), generator=g) * 2 - 1) * a
        m = m.to(device).requires_grad_()
    return Candidates(*[t.to(device).requires_grad_() for t in (v, n, o)],
                      [t.to(device).requires_grad_() for t in dw], m)


def _replicate(t: torch.Tensor, k: int, fill: float) -> torch.Tensor:
    """Per-channel tensor of a unit laid out like the candidate channels: [t | t | t | fill x k]."""
    t = t.detach()
    return torch.cat([t, t, t, t.new_full((k, *t.shape[1:]), fill)])


def _conv(conv: nn.Conv2d, x: torch.Tensor, weight: torch.Tensor, bias=None, groups: int = 1) -> torch.Tensor:
    """`conv`'s geometry (stride, padding, dilation) applied with other weights."""
    return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, groups)


class _CandidateBN(nn.Module):
    """Eval-mode BN over [original | copies | copies | new]: copies share the parent's statistics and affine, new
    channels start with identity statistics and affine (gamma = 1, beta = 0).

    Eval-mode BN is a per-channel affine map, applied here as one fused x * scale + shift: on the candidate
    network's 3C + K channels the generic batch-norm kernels (forward and backward) were the largest cost.
    """

    def __init__(self, bn: nn.BatchNorm2d, k: int):
        super().__init__()
        mean, var = _replicate(bn.running_mean, k, 0.0), _replicate(bn.running_var, k, 1.0)
        weight, bias = _replicate(bn.weight, k, 1.0), _replicate(bn.bias, k, 0.0)
        scale = weight / torch.sqrt(var + bn.eps)
        self.scale, self.shift = scale.view(1, -1, 1, 1), (bias - mean * scale).view(1, -1, 1, 1)

    def forward(self, x):
        return torch.addcmul(self.shift, x, self.scale)


class _CandidateDepthwise(nn.Module):
    """A depthwise follower over the candidate channels; new channels use their own trainable filters."""

    def __init__(self, conv: nn.Conv2d, new_filters: torch.Tensor):
        super().__init__()
        self.source = (conv,)  # a tuple, so the model's own module is not registered as a child of the copy
        self.new_filters = new_filters

    def forward(self, x):
        conv = self.source[0]
        w = conv.weight.detach()
        return _conv(conv, x, torch.cat([w, w, w, self.new_filters]), groups=x.shape[1])


class _CandidateRows(nn.Module):
    """Unit i's conv: outputs [a | a + b | a - b | c], a = original rows, b = split directions, c = new rows."""

    def __init__(self, cand: "CandidateNetwork", i: int):
        super().__init__()
        self.cand, self.i = cand, i

    def forward(self, x):
        cand, i = self.cand, self.i
        conv, c = cand.units[i].conv, cand.cands[i]
        w = conv.weight.detach()
        new_prev = None
        if cand.reads_candidates[i]:  # x holds the previous unit's 3C' + K channels
            x, new_prev = cand.mix(i - 1, x)
            a = _conv(conv, x, w) + _conv(conv, new_prev, cand.cands[i - 1].o)  # fan-out into w's rows
        else:
            a = _conv(conv, x, w)
        # Scoring at g = 0 needs dL/dg only: nothing downstream depends on the candidate channels, so their rows are
        # computed without a graph and backward runs through the original channels alone (same gradients; a
        # scoring step of a 16-wide VGG-19 went from 0.73 s to 0.48 s).
        side = torch.no_grad() if cand.scoring == "zero" else contextlib.nullcontext()
        with side:
            b, c_new = _conv(conv, x, torch.cat([c.v, c.n])).split([len(w), cand.k], dim=1)
            if cand.scoring == "full":  # each candidate's perturbation times (1 + t), t = 0 (FF:sp/conv.py:237-244)
                t_split, t_new = cand.scales[i]
                b = b + b.detach() * t_split.view(1, -1, 1, 1)
                c_new = c_new + c_new.detach() * t_new.view(1, -1, 1, 1)
            if c.m is not None:  # new-to-new weights: not part of the scored perturbation, as in Firefly's code
                c_new = c_new + _conv(conv, new_prev, c.m)
        return torch.cat([a, a + b, a - b, c_new], dim=1)


class _CandidateConsumer(nn.Module):
    """A consumer that is not itself a unit (the classifier): reads the mixed channels through [w | o]."""

    def __init__(self, cand: "CandidateNetwork", i: int, consumer: nn.Module):
        super().__init__()
        self.cand, self.i = cand, i
        self.source = (consumer,)  # not registered as a child (see _CandidateDepthwise)

    def forward(self, x):
        mix, new = self.cand.mix(self.i, x)
        m = self.source[0]
        weight = torch.cat([m.weight.detach(), self.cand.cands[self.i].o], dim=1)
        bias = m.bias.detach() if m.bias is not None else None
        inputs = torch.cat([mix, new], dim=1)
        return _conv(m, inputs, weight, bias) if isinstance(m, nn.Conv2d) else F.linear(inputs, weight, bias)


def _replace_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, attr, new)


class CandidateNetwork:
    """The model with every candidate of every unit attached behind gates (see module docstring).

    A structural copy of the model in which each unit's conv, BN, depthwise followers and non-unit consumer are
    replaced by modules that compute the candidate channels from the model's (frozen) tensors and the trainable
    candidate tensors; activations and pooling act per channel and are reused unchanged.
    """

    def __init__(self, model: nn.Module, cfg, generator: torch.Generator):
        self.model = model
        self.units = model.units()
        device = next(model.parameters()).device
        self.k = k = cfg.firefly_new_per_layer
        unit_convs = {id(u.conv) for u in self.units}
        # reads_candidates[i]: unit i's conv consumes unit i-1's channels (then its input holds their candidates)
        self.reads_candidates = [i > 0 and self.units[i - 1].consumer is u.conv for i, u in enumerate(self.units)]
        self.cands = [_init_candidates(u, k, cfg, generator, device,
                                       k if cfg.firefly_new_to_new and self.reads_candidates[i] else None)
                      for i, u in enumerate(self.units)]
        self.gates: list = [None] * len(self.units)
        self.scales: list | None = None  # per-unit (split, new) perturbation scales t while scoring "full"
        self.scoring: str | None = None  # None while training the candidates; "zero" or "full" while scoring
        self.net = copy.deepcopy(model).eval().requires_grad_(False)
        names = {id(m): name for name, m in model.named_modules()}
        for i, (u, c) in enumerate(zip(self.units, self.cands)):
            _replace_module(self.net, names[id(u.conv)], _CandidateRows(self, i))
            _replace_module(self.net, names[id(u.bn)], _CandidateBN(u.bn, k))
            for (dw, dw_bn), dw_new in zip(u.followers, c.dw):
                _replace_module(self.net, names[id(dw)], _CandidateDepthwise(dw, dw_new))
                _replace_module(self.net, names[id(dw_bn)], _CandidateBN(dw_bn, k))
            if id(u.consumer) not in unit_convs:
                _replace_module(self.net, names[id(u.consumer)], _CandidateConsumer(self, i, u.consumer))

    def mix(self, i: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unit i's candidate channels as its consumer sees them: (gated mix of original and copies, gated new)."""
        g_split, g_new = self.gates[i]
        c = self.units[i].width
        orig, plus, minus, new = x.split([c, c, c, self.k], dim=1)
        shape = (1, -1, *([1] * (x.dim() - 2)))
        g = g_split.view(shape)
        return orig * (1 - g) + (plus + minus) * (g / 2), new * g_new.view(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def loss(self, x, y, gate_value: float, score: str | None = None):
        """Cross-entropy with every gate at `gate_value`. score="zero": the graph reaches the gates; score="full":
        the gates are constants and the graph reaches the perturbation scales t = 0 (`score_inputs`)."""
        device = x.device
        self.scoring = score
        on = score == "zero"
        self.gates = [(torch.full((u.width,), gate_value, device=device, requires_grad=on),
                       torch.full((self.k,), gate_value, device=device, requires_grad=on)) for u in self.units]
        self.scales = None
        if score == "full":
            self.scales = [(torch.zeros(u.width, device=device, requires_grad=True),
                            torch.zeros(self.k, device=device, requires_grad=True)) for u in self.units]
        return nn.functional.cross_entropy(self.forward(x), y)

    def score_inputs(self) -> list[torch.Tensor]:
        """What the scores are gradients with respect to: [split_0, new_0, split_1, new_1, ...]."""
        pairs = self.scales if self.scoring == "full" else self.gates
        return [t for pair in pairs for t in pair]
