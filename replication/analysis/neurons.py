"""Hyper/hypo neurons (Mitra & Franco 2020) carried over to conv channels of the grown CIFAR networks.

A neuron is a unit's output channel. With BN in eval mode, over a data set, streamed batch by batch with forward
hooks (activations are never all held): the firing rate p_c = share of (image, position) whose BN output
(pre-activation) is > 0, the mean post-activation, the binary entropy of p_c, max |C_sim| and max |activation
correlation| to another channel of the layer, the birth round, and the data-free prediction p_c ~ Phi(beta/|gamma|).
hypo: p_c <= hypo_threshold; hyper: p_c >= hyper_threshold (docs/hyper-hypo.md: 0.05 / 0.95).
"""
from __future__ import annotations

import contextlib
import math

import pandas as pd
import torch
from torch import nn

from ..similarity import similarity_map

HYPO, HYPER = 0.05, 0.95  # docs/hyper-hypo.md
CRITERIA = ("filter_norm", "bn_gamma", "apoz", "mean_activation", "taylor", "random")


class _Accumulator:
    """Running sums of one layer: positives, activation sums and the channel covariance of post-activations."""

    def __init__(self):
        self.n = 0
        self.pos = self.s = self.ss = None  # made on the device of the first batch

    def add(self, pre: torch.Tensor, post: torch.Tensor):
        c = pre.shape[1]
        if self.pos is None:
            self.pos = torch.zeros(c, dtype=torch.float64, device=pre.device)
            self.s = torch.zeros(c, dtype=torch.float64, device=pre.device)
            self.ss = torch.zeros(c, c, dtype=torch.float64, device=pre.device)
        pre = pre.detach().transpose(0, 1).reshape(c, -1).double()  # (C, images*positions)
        post = post.detach().transpose(0, 1).reshape(c, -1).double()
        self.n += pre.shape[1]
        self.pos += (pre > 0).sum(1)
        self.s += post.sum(1)
        self.ss += post @ post.T

    def finish(self):
        """(firing rate, mean activation, max |correlation|) per channel, on the CPU (they go into tables)."""
        if self.pos is None:
            raise ValueError("no batch was seen")
        p = self.pos.cpu() / self.n
        mean = self.s.cpu() / self.n
        ss = self.ss.cpu()
        cov = ss / self.n - mean[:, None] * mean[None, :]
        sd = cov.diag().clamp_min(0).sqrt()
        corr = cov / (sd[:, None] * sd[None, :])
        corr = torch.nan_to_num(corr, nan=0.0, posinf=0.0, neginf=0.0)  # a constant channel correlates with none
        corr.fill_diagonal_(0)
        return p, mean, corr.abs().amax(1) if len(p) > 1 else torch.zeros_like(p)


@torch.no_grad()
def channel_stats(model: nn.Module, images_uint8: torch.Tensor, batch_size: int = 500,
                  hypo: float = HYPO, hyper: float = HYPER, *, normalise) -> pd.DataFrame:
    """One row per (layer, channel) with the statistics of the module docstring."""
    model.eval()
    units = model.units()
    acc = [_Accumulator() for _ in units]
    # BN output = pre-activation; applying the unit's activation to it gives the post-activation.
    handles = [u.bn.register_forward_hook(lambda m, inp, out, i=i: acc[i].add(out, _activation(units[i])(out)))
               for i, u in enumerate(units)]
    try:
        for start in range(0, len(images_uint8), batch_size):
            model(normalise(images_uint8[start:start + batch_size]))
    finally:
        for h in handles:
            h.remove()
    rows = []
    for i, (u, a) in enumerate(zip(units, acc)):
        p, mean, max_corr = a.finish()
        c = similarity_map(u.conv.weight.detach())
        c.fill_diagonal_(0)
        gamma, beta = u.bn.weight.detach().double(), u.bn.bias.detach().double()
        phi = 0.5 * (1 + torch.erf(beta / gamma.abs().clamp_min(1e-12) / math.sqrt(2)))
        ent = -(p * p.clamp_min(1e-12).log2() + (1 - p) * (1 - p).clamp_min(1e-12).log2())
        for ch in range(u.width):
            rows.append({"layer": i, "channel": ch, "birth_round": int(u.conv.birth_round[ch]),
                         "firing_rate": p[ch].item(), "mean_activation": mean[ch].item(), "entropy": ent[ch].item(),
                         "max_abs_csim": c[ch].abs().max().item() if u.width > 1 else 0.0,
                         "max_abs_corr": max_corr[ch].item(), "phi_prediction": phi[ch].item(),
                         "gamma": gamma[ch].item(), "beta": beta[ch].item(),
                         "filter_norm": u.conv.weight[ch].norm().item()})
    df = pd.DataFrame(rows)
    return classify(df, hypo, hyper)


def _activation(unit) -> nn.Module:
    # VGG blocks and the MobileNet pointwise blocks apply their activation right after their BN.
    return unit.output if not unit.followers else nn.SiLU()


def classify(df: pd.DataFrame, hypo: float = HYPO, hyper: float = HYPER) -> pd.DataFrame:
    df = df.copy()
    df["kind"] = "normal"
    df.loc[df["firing_rate"] <= hypo, "kind"] = "hypo"
    df.loc[df["firing_rate"] >= hyper, "kind"] = "hyper"
    return df


REL_SHARE = 0.05  # relative definition: the bottom / top 5 % of each layer by firing rate (docs/hyper-hypo.md)
DEFINITIONS = ("absolute", "relative")


def relative_kind(stats: pd.DataFrame, share: float = REL_SHARE) -> pd.Series:
    """Per model and layer, the ceil(share x width) channels of lowest firing rate are "hypo" and as many of the
    highest "hyper" (at least one each, so the sets are never empty; ties broken by channel order)."""
    groups = [c for c in ("method", "seed") if c in stats.columns] + ["layer"]
    g = stats.groupby(groups)["firing_rate"]
    k = g.transform(lambda p: max(1, math.ceil(share * len(p))))
    kind = pd.Series("normal", index=stats.index)
    kind[g.rank(method="first") <= k] = "hypo"
    kind[g.rank(method="first", ascending=False) <= k] = "hyper"
    return kind


def with_kind(stats: pd.DataFrame, definition: str) -> pd.DataFrame:
    """`stats` whose "kind" follows `definition`: "absolute" (the thresholds, as stored) or "relative"."""
    if definition not in DEFINITIONS:
        raise ValueError(f"unknown definition {definition!r}; valid: {', '.join(DEFINITIONS)}")
    return stats if definition == "absolute" else stats.assign(kind=relative_kind(stats))


def taylor_scores(model: nn.Module, images_uint8: torch.Tensor, labels: torch.Tensor,
                  batch_size: int = 250, *, normalise) -> list[torch.Tensor]:
    """First-order Taylor saliency per channel: |mean over data of activation x dL/d activation| (per layer)."""
    model.eval()
    units = model.units()
    device = next(model.parameters()).device
    sums = [torch.zeros(u.width, dtype=torch.float64, device=device) for u in units]
    acts: dict[int, torch.Tensor] = {}

    def keep(i):
        def hook(module, inp, out):
            out.retain_grad()
            acts[i] = out
        return hook
    handles = [u.output.register_forward_hook(keep(i)) for i, u in enumerate(units)]
    batches = 0
    try:
        for start in range(0, len(labels), batch_size):
            x = normalise(images_uint8[start:start + batch_size])
            model.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(x), labels[start:start + batch_size]).backward()
            for i, a in acts.items():
                sums[i] += (a * a.grad).mean(dim=(0, 2, 3)).detach().double()
            batches += 1
    finally:
        for h in handles:
            h.remove()
        model.zero_grad(set_to_none=True)
    return [(s / batches).abs() for s in sums]


def criterion_scores(stats: pd.DataFrame, taylor: list[torch.Tensor], seed: int = 0) -> pd.DataFrame:
    """Per channel, each pruning criterion's score; lower = pruned first."""
    out = stats[["layer", "channel", "kind"]].copy()
    out["filter_norm"] = stats["filter_norm"]
    out["bn_gamma"] = stats["gamma"].abs()
    out["apoz"] = stats["firing_rate"]  # APoZ = 1 - p: the highest APoZ (lowest p) is pruned first
    out["mean_activation"] = stats["mean_activation"]
    out["taylor"] = torch.cat(taylor).cpu().numpy()
    out["random"] = torch.rand(len(out), generator=torch.Generator().manual_seed(seed)).numpy()
    return out


def bottom_k(scores: pd.DataFrame, criterion: str, share: float) -> pd.DataFrame:
    """The `share` lowest-scoring channels of every layer under `criterion`."""
    k = scores.groupby("layer")["channel"].transform(lambda s: max(1, int(round(share * len(s)))))
    rank = scores.groupby("layer")[criterion].rank(method="first")
    return scores[rank <= k]


@contextlib.contextmanager
def ablate(model: nn.Module, channels: dict[int, list[int]], values: dict[int, torch.Tensor] | None = None):
    """Remove channels without changing the architecture: their outputs are replaced by 0 (zero-ablation) or by
    `values[layer][channel]` (mean-ablation) while the context is open."""
    units = model.units()
    handles = []
    for layer, chs in channels.items():
        if not len(chs):
            continue
        idx = torch.as_tensor(list(chs), dtype=torch.long)

        def hook(module, inp, out, idx=idx, layer=layer):
            out = out.clone()
            fill = values[layer][idx].to(out).view(1, -1, 1, 1) if values is not None else 0.0
            out[:, idx] = fill
            return out
        handles.append(units[layer].output.register_forward_hook(hook))
    try:
        yield model
    finally:
        for h in handles:
            h.remove()


def channels_by_layer(rows: pd.DataFrame) -> dict[int, list[int]]:
    return {int(layer): sorted(g["channel"].astype(int).tolist()) for layer, g in rows.groupby("layer")}


def mean_values(stats: pd.DataFrame) -> dict[int, torch.Tensor]:
    return {int(layer): torch.tensor(g.sort_values("channel")["mean_activation"].to_numpy(), dtype=torch.float32)
            for layer, g in stats.groupby("layer")}
