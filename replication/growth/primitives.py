"""Width growth of a network's conv layers: two exact primitives and the optimiser-state carry.

`add_neurons` appends output channels to a unit (its conv rows, BN entries, depthwise followers) and matching input
columns to its consumer; with zero fan-out the network's function is unchanged. `split_neurons` replaces each
chosen parent w by w+delta and appends a child w-delta whose consumer column is half the parent's (the parent's
is halved too), so with delta = 0 the function is unchanged. New entries are always appended at the end of a dim,
which is what lets `carry_optimizer_state` zero-pad momentum buffers and keep every old entry in place.
Growth methods (which neurons to add) are one file each in this folder (`registry.py`).
"""
from __future__ import annotations

import torch
from torch import nn

from ..models import Unit


def _set_param(module: nn.Module, name: str, value: torch.Tensor) -> None:
    setattr(module, name, nn.Parameter(value.detach().contiguous(), requires_grad=True))


def _set_buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    module._buffers[name] = value.detach().contiguous()


def _grow_bn(bn: nn.BatchNorm2d, gamma, beta, mean, var) -> None:
    _set_param(bn, "weight", torch.cat([bn.weight, gamma]))
    _set_param(bn, "bias", torch.cat([bn.bias, beta]))
    _set_buffer(bn, "running_mean", torch.cat([bn.running_mean, mean]))
    _set_buffer(bn, "running_var", torch.cat([bn.running_var, var]))
    bn.num_features = bn.weight.numel()


def _fresh_bn_stats(n: int, like: torch.Tensor):
    """BN entries of a brand-new neuron: identity affine and identity running statistics."""
    ones, zeros = torch.ones(n, dtype=like.dtype, device=like.device), like.new_zeros(n)
    return ones, zeros, zeros.clone(), ones.clone()


def _set_rows(conv: nn.Conv2d, weight: torch.Tensor) -> None:
    _set_param(conv, "weight", weight)
    conv.out_channels = weight.shape[0]
    if conv.groups > 1:  # depthwise: one group per channel, so its input width follows too
        conv.groups = conv.in_channels = weight.shape[0]


def _set_input_columns(consumer: nn.Module, weight: torch.Tensor) -> None:
    _set_param(consumer, "weight", weight)
    if isinstance(consumer, nn.Conv2d):
        consumer.in_channels = weight.shape[1]
    else:
        consumer.in_features = weight.shape[1]


def add_neurons(unit: Unit, filters: torch.Tensor, fan_out: torch.Tensor, birth_round: int,
                bn_stats=None, follower_filters: list[torch.Tensor] | None = None) -> None:
    """Append n = len(filters) neurons to `unit`.

    filters: (n, C_in, kh, kw) new conv rows; fan_out: consumer columns, (C_next, n, *consumer kernel) for a conv
    consumer or (C_next, n) for a linear one; bn_stats: (gamma, beta, mean, var) each (n,), default identity;
    follower_filters: one (n, 1, kh, kw) tensor per depthwise follower (its BN entries start as identity).
    """
    n = filters.shape[0]
    conv = unit.conv
    if fan_out.shape[1] != n:
        raise ValueError(f"fan_out has {fan_out.shape[1]} columns for {n} new neurons")
    _set_rows(conv, torch.cat([conv.weight, filters.to(conv.weight)]))
    conv._buffers["birth_round"] = torch.cat([conv.birth_round, conv.birth_round.new_full((n,), birth_round)])
    _grow_bn(unit.bn, *(bn_stats if bn_stats is not None else _fresh_bn_stats(n, unit.bn.weight)))
    for k, (dw, dw_bn) in enumerate(unit.followers):
        dw_rows = follower_filters[k] if follower_filters is not None else dw.weight.new_zeros(n, *dw.weight.shape[1:])
        _set_rows(dw, torch.cat([dw.weight, dw_rows.to(dw.weight)]))
        _grow_bn(dw_bn, *_fresh_bn_stats(n, dw_bn.weight))
    consumer = unit.consumer
    _set_input_columns(consumer, torch.cat([consumer.weight, fan_out.to(consumer.weight)], dim=1))


def split_neurons(unit: Unit, parents: torch.Tensor, delta: torch.Tensor, birth_round: int) -> None:
    """Split each parent p into w_p + delta and a new child w_p - delta; both carry half of p's fan-out.

    The child copies the parent's BN affine and running statistics and its depthwise followers' filters and BN.
    """
    host = torch.as_tensor(parents, dtype=torch.long).cpu()  # indices are chosen on the host; checked there
    if host.unique().numel() != host.numel():
        raise ValueError("split_neurons: parents must be distinct")
    parents = host.to(unit.conv.weight.device)
    conv, bn = unit.conv, unit.bn
    w = conv.weight.detach().clone()
    delta = delta.to(w)
    child = w[parents] - delta
    w[parents] = w[parents] + delta
    _set_rows(conv, torch.cat([w, child]))
    conv._buffers["birth_round"] = torch.cat(
        [conv.birth_round, conv.birth_round.new_full((len(parents),), birth_round)])
    _grow_bn(bn, bn.weight[parents].detach(), bn.bias[parents].detach(), bn.running_mean[parents],
             bn.running_var[parents])
    for dw, dw_bn in unit.followers:
        _set_rows(dw, torch.cat([dw.weight, dw.weight[parents]]))
        _grow_bn(dw_bn, dw_bn.weight[parents].detach(), dw_bn.bias[parents].detach(),
                 dw_bn.running_mean[parents], dw_bn.running_var[parents])
    cw = unit.consumer.weight.detach().clone()
    cw[:, parents] = cw[:, parents] / 2
    _set_input_columns(unit.consumer, torch.cat([cw, cw[:, parents]], dim=1))


# ----------------------------------------------------------------------------------------------------------------
# Initialisations of new neurons
# ----------------------------------------------------------------------------------------------------------------
def kaiming_filters(unit: Unit, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, C_in, kh, kw) He-normal filters, fan-in mode, as a fresh layer of this shape would get."""
    shape = (n, *unit.conv.weight.shape[1:])
    fan_in = shape[1] * shape[2] * shape[3]
    return torch.randn(shape, generator=generator) * (2.0 / fan_in) ** 0.5


def zero_fan_out(unit: Unit, n: int) -> torch.Tensor:
    w = unit.consumer.weight
    return w.new_zeros(w.shape[0], n, *w.shape[2:])


def random_fan_out(unit: Unit, n: int, generator: torch.Generator) -> torch.Tensor:
    """Consumer columns drawn at the scale of the consumer's existing weights (so new neurons are not silent)."""
    w = unit.consumer.weight
    # Drawn on the CPU generator (the same draws on every device), scaled on the weights' device: no host read,
    # and the same float32 products as scaling by the std read back as a Python float.
    return torch.randn((w.shape[0], n, *w.shape[2:]), generator=generator).to(w) * w.detach().std()


def random_follower_filters(unit: Unit, n: int, generator: torch.Generator) -> list[torch.Tensor]:
    out = []
    for dw, _ in unit.followers:
        shape = (n, *dw.weight.shape[1:])
        out.append(torch.randn(shape, generator=generator) * (2.0 / (shape[2] * shape[3])) ** 0.5)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Optimiser state across growth
# ----------------------------------------------------------------------------------------------------------------
def snapshot_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return dict(model.named_parameters())


def _pad_to(t: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    out = t.new_zeros(shape)
    out[tuple(slice(0, s) for s in t.shape)] = t
    return out


def carry_optimizer_state(optimizer: torch.optim.Optimizer, model: nn.Module,
                          before: dict[str, nn.Parameter]) -> None:
    """Point `optimizer` at the grown model's parameters, keeping old state entries and zero-padding new ones.

    `before` is `snapshot_params(model)` taken before growth. Works because growth only appends along dims.
    """
    after = dict(model.named_parameters())
    name_of = {id(p): name for name, p in before.items()}
    for group in optimizer.param_groups:
        group["params"] = [after[name_of[id(p)]] for p in group["params"]]
    new_state = {}
    for name, old in before.items():
        state = optimizer.state.get(old)
        if not state:
            continue
        new = after[name]
        new_state[new] = {k: _pad_to(v, new.shape) if torch.is_tensor(v) and v.shape == old.shape else v
                          for k, v in state.items()}
    optimizer.state.clear()
    optimizer.state.update(new_state)
