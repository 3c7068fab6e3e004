"""The paper's neuron-similarity map C_sim = W_norm W_norm^T and the constraints built on it.

A neuron is a conv output channel; its row is the flattened (C_in*k*k) kernel, L2-normalised, so C_sim[i, j] is the
cosine similarity of neurons i and j (Sakai & Hotta 2024, formula quoted in paper-facts.md). The loss form, its
weight and its scope are not published: the variants below are this project's documented choices
(docs/method.md), selected by `Config.sim_variant` / `sim_scope` / `lambda_sim`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

NEAR_DUPLICATE = 0.9  # |cos| above which two neurons count as near-duplicates (our threshold, docs/method.md)
HIST_BINS = 40


def neuron_rows(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in*k*k): one row per neuron, without a copy where possible.

    A channels_last conv weight (how training stores it) holds each neuron's kernel contiguously in (kh, kw, C_in)
    order; a cosine similarity is the same for any order of the coordinates that all rows share, so that order
    serves as well as flatten(1)'s (which would copy every weight, every step)."""
    if weight.dim() == 4 and not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last):
        return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)
    return weight.flatten(1)


def normalised_rows(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in*k*k) rows of unit length; an all-zero row (a zero-initialised neuron) stays zero, not NaN."""
    w = neuron_rows(weight)
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def similarity_map(weight: torch.Tensor) -> torch.Tensor:
    wn = normalised_rows(weight)
    return wn @ wn.T  # (C_out, C_out)


def _off_diagonal(c: torch.Tensor) -> torch.Tensor:
    n = c.shape[0]
    return c.flatten()[1:].view(n - 1, n + 1)[:, :-1].flatten()  # every entry except the diagonal


def off_diagonal(weight: torch.Tensor, new_rows: torch.Tensor | None = None,
                 reference: torch.Tensor | None = None, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The similarities a constraint sees: every C_ij with i != j, or

    - with `new_rows` (a boolean mask) only the pairs (i new, j != i), where row j is taken from `reference`
      (default: the weights, detached), a constant, so that only the new neurons receive gradient;
    - with `rows` (indices) only the pairs (i in rows, j != i), both sides trainable: for rows drawn uniformly at
      random, their mean square is an unbiased estimate of the full one at |rows| / C of the cost.
    """
    wn = normalised_rows(weight)
    if new_rows is None and rows is None:
        return _off_diagonal(wn @ wn.T)
    if rows is None:
        rows = new_rows.nonzero().flatten()
        other = normalised_rows(reference) if reference is not None else wn.detach()
    else:
        other = wn
    block = wn[rows] @ other.T  # (len(rows), C): the chosen rows against every row
    keep = torch.ones_like(block, dtype=torch.bool)
    keep[torch.arange(len(rows), device=keep.device), rows] = False
    return block[keep]


class _MeanSquaredOffDiagonal(torch.autograd.Function):
    """Mean of C_ij^2 over the pairs i != j of C = wn wn^T (wn: the L2-normalised rows of w), with a hand-written
    backward; with `rows`, a row-sampled estimate of it and of its gradient.

    All pairs: L = sum_{i != j} C_ij^2 / (n (n - 1)); C is symmetric, so dL/dwn = 4 (C - diag C) wn / (n (n - 1)).
    Rows S (m of them, drawn uniformly): the value is the mean of B_aj^2, B = wn_S wn^T, without the self-pairs
    (unbiased for L), and the gradient moves the sampled rows only, by 4 B' wn / (m (n - 1)): each row is sampled
    with probability m / n, so this is unbiased for dL/dwn too, and it costs two (m x D) x (D x C)-shaped matmuls
    instead of two C^2 D ones. (It is not the derivative of the sampled value, which would also move every other
    row through an inefficient (C x m) x (m x D) product.)
    Through the normalisation, dL/dw_i = (g_i - wn_i <wn_i, g_i>) / ||w_i||; a zero row (norm below 1e-12, as in
    `normalised_rows`) gets zero gradient. Autograd through `wn @ wn.T`, the off-diagonal gather and the division
    spends an extra C^2 D matmul, a C^2 scatter and several C x D passes (docs/performance.md).
    """

    @staticmethod
    def forward(ctx, w, rows):
        inv_norm = 1.0 / w.norm(dim=1).clamp_min(1e-12)  # (C_out,)
        n = w.shape[0]
        ctx.sampled = rows is not None
        if rows is None:
            wn = w * inv_norm.unsqueeze(1)  # (C_out, C_in*k*k)
            c = wn @ wn.T  # (C_out, C_out)
            c.diagonal().zero_()
            ctx.save_for_backward(wn, c, inv_norm)
        else:
            # Only the m sampled rows are normalised: the other rows' norms scale the columns of B instead.
            wn_rows = w[rows] * inv_norm[rows].unsqueeze(1)  # (m, C_in*k*k)
            c = (wn_rows @ w.T).mul_(inv_norm)  # (m, C_out)
            c[torch.arange(len(rows), device=c.device), rows] = 0.0
            ctx.save_for_backward(w, c, inv_norm, rows, wn_rows)
        return (c * c).sum() / (len(c) * (n - 1))

    @staticmethod
    def backward(ctx, grad):
        if not ctx.sampled:
            wn, c, inv_norm = ctx.saved_tensors
            g = c @ wn  # (C - diag C) wn
            n = len(wn)
        else:
            w, c, inv_norm, rows, wn = ctx.saved_tensors
            g = (c * inv_norm) @ w  # B' wn for the sampled rows, (m, C_in*k*k)
            n, inv_norm = len(w), inv_norm[rows]
        g.mul_(grad * 4 / (len(c) * (n - 1)))
        g.addcmul_(wn, (g * wn).sum(1, keepdim=True), value=-1.0)  # remove the radial part
        g.mul_(inv_norm.unsqueeze(1))
        if not ctx.sampled:
            return g, None
        return torch.zeros_like(w).index_copy_(0, rows, g), None


def mean_squared_off_diagonal(weight: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
    """The `decorrelate` loss of one layer over all pairs or, with `rows` drawn at random, its row-sampled estimate
    (see `_MeanSquaredOffDiagonal`). Zero rows contribute zero, with zero gradient."""
    return _MeanSquaredOffDiagonal.apply(neuron_rows(weight), rows)


def layer_loss(weight: torch.Tensor, variant: str, new_rows: torch.Tensor | None = None,
               reference: torch.Tensor | None = None, sample_rows: int | None = None) -> torch.Tensor:
    """Constraint of one layer on the similarities `off_diagonal` returns.

    decorrelate: mean of C_ij^2.
    distribution: mu^2 + (sigma - tau)^2, mu and sigma the mean and std of the similarities and tau = 1/sqrt(D)
        the std of the cosine between independent random directions in D dims: the distribution is pulled toward
        that of a zero-centred, unbiased (random-like) layer rather than squeezed to zero.
    sample_rows: if set and the layer is wider, the similarities of that many rows drawn at random (torch's global
        generator) against all rows: a stochastic estimate for wide layers (unbiased for decorrelate).
    """
    c_out = weight.shape[0]
    rows = None
    if sample_rows is not None and new_rows is None and c_out > sample_rows:
        rows = torch.randperm(c_out, device=weight.device)[:sample_rows]
    if variant == "decorrelate" and new_rows is None and c_out > 1:
        return mean_squared_off_diagonal(weight, rows)
    s = off_diagonal(weight, new_rows, reference, rows)
    if s.numel() == 0:
        return weight.new_zeros(())
    if variant == "decorrelate":
        return (s ** 2).mean()
    if variant == "distribution":
        tau = 1.0 / math.sqrt(weight[0].numel())
        return s.mean() ** 2 + (s.std(unbiased=False) - tau) ** 2
    raise ValueError(f"unknown similarity variant {variant!r}")


def constraint(model: nn.Module, variant: str, scope: str, latest_round: int,
               sample_rows: int | None = None) -> torch.Tensor:
    """Sum of `layer_loss` over the model's growable layers (scope 'new': neurons born in `latest_round`)."""
    total = None
    for u in model.units():
        mask = (u.conv.birth_round == latest_round) if scope == "new" else None
        term = layer_loss(u.conv.weight, variant, mask, sample_rows=sample_rows)
        total = term if total is None else total + term
    return total


@torch.no_grad()
def layer_stats(weight: torch.Tensor) -> dict:
    """Summary of one layer's off-diagonal similarities (zero rows excluded), for the results files. Computed on
    the CPU whatever the weights' device: the same numbers for a GPU run as for a CPU run of the same weights."""
    w = weight.detach().flatten(1).cpu()
    w = w[w.norm(dim=1) > 0]
    if len(w) < 2:
        return {"n_neurons": len(w)}
    c = similarity_map(w)
    iu = torch.triu_indices(len(w), len(w), 1)
    s = c[iu[0], iu[1]].double()
    q = torch.quantile(s, torch.tensor([0.05, 0.25, 0.5, 0.75, 0.95], dtype=torch.float64))
    hist = torch.histc(s, bins=HIST_BINS, min=-1, max=1)
    return {"n_neurons": len(w), "mean": s.mean().item(), "std": s.std().item(),
            "mean_abs": s.abs().mean().item(), "q05": q[0].item(), "q25": q[1].item(), "median": q[2].item(),
            "q75": q[3].item(), "q95": q[4].item(),
            "near_duplicate_share": (s.abs() > NEAR_DUPLICATE).double().mean().item(),
            "hist": [int(v) for v in hist.tolist()]}


def model_stats(model: nn.Module) -> list[dict]:
    return [{"layer": i, "name": u.name, **layer_stats(u.conv.weight)} for i, u in enumerate(model.units())]
