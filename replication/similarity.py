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


def normalised_rows(weight: torch.Tensor) -> torch.Tensor:
    """(C_out, C_in*k*k) rows of unit length; an all-zero row (a zero-initialised neuron) stays zero, not NaN."""
    w = weight.flatten(1)
    return w / w.norm(dim=1, keepdim=True).clamp_min(1e-12)


def similarity_map(weight: torch.Tensor) -> torch.Tensor:
    wn = normalised_rows(weight)
    return wn @ wn.T  # (C_out, C_out)


def _off_diagonal(c: torch.Tensor) -> torch.Tensor:
    n = c.shape[0]
    return c.flatten()[1:].view(n - 1, n + 1)[:, :-1].flatten()  # every entry except the diagonal


def off_diagonal(weight: torch.Tensor, new_rows: torch.Tensor | None = None,
                 reference: torch.Tensor | None = None) -> torch.Tensor:
    """The similarities a constraint sees: every C_ij with i != j, or with `new_rows` (a boolean mask) only the
    pairs (i new, j != i), where row j is taken from `reference` (default: the weights, detached), a constant,
    so that only the new neurons receive gradient."""
    wn = normalised_rows(weight)
    if new_rows is None:
        return _off_diagonal(wn @ wn.T)
    idx = new_rows.nonzero().flatten()
    ref = normalised_rows(reference) if reference is not None else wn.detach()
    block = wn[idx] @ ref.T  # (n_new, C): new rows against every (constant) row
    keep = torch.ones_like(block, dtype=torch.bool)
    keep[torch.arange(len(idx)), idx] = False
    return block[keep]


class _MeanSquaredOffDiagonal(torch.autograd.Function):
    """mean_{i != j} (C_ij)^2 of C = wn wn^T, wn the L2-normalised rows of w, with a one-matmul backward.

    The loss is (||C||_F^2 - sum_i C_ii^2) / (n (n - 1)); C is symmetric, so dL/dwn = 4 (C - diag C) wn / (n (n - 1)),
    and through the normalisation dL/dw_i = (g_i - wn_i <wn_i, g_i>) / ||w_i||. Autograd through `wn @ wn.T`, the
    off-diagonal gather and the division would spend two C^2 D matmuls, a C^2 scatter and several C x D passes in
    backward; this spends one matmul and two passes. At full VGG-19 widths the matmuls are most of the constraint's
    cost (docs/performance.md). A zero row (norm below 1e-12, as in `normalised_rows`) gets zero gradient.
    """

    @staticmethod
    def forward(ctx, w):
        inv_norm = 1.0 / w.norm(dim=1).clamp_min(1e-12)
        wn = w * inv_norm.unsqueeze(1)  # (C_out, C_in*k*k)
        c = wn @ wn.T  # (C_out, C_out)
        n = w.shape[0]
        diag = c.diagonal()
        loss = ((c * c).sum() - (diag * diag).sum()) / (n * (n - 1))
        ctx.save_for_backward(wn, c, inv_norm)
        return loss

    @staticmethod
    def backward(ctx, grad):
        wn, c, inv_norm = ctx.saved_tensors
        n = wn.shape[0]
        c = c.clone()
        c.diagonal().zero_()
        g = c @ wn  # (C - diag C) wn
        g.addcmul_(wn, (g * wn).sum(1, keepdim=True), value=-1.0)  # remove the radial part
        return g.mul_((inv_norm * (grad * 4 / (n * (n - 1)))).unsqueeze(1))


def mean_squared_off_diagonal(weight: torch.Tensor) -> torch.Tensor:
    """The `decorrelate` loss over all pairs of one layer (zero rows contribute zero, with zero gradient)."""
    return _MeanSquaredOffDiagonal.apply(weight.flatten(1))


def layer_loss(weight: torch.Tensor, variant: str, new_rows: torch.Tensor | None = None,
               reference: torch.Tensor | None = None) -> torch.Tensor:
    """Constraint of one layer on the similarities `off_diagonal` returns.

    decorrelate: mean of C_ij^2.
    distribution: mu^2 + (sigma - tau)^2, mu and sigma the mean and std of the similarities and tau = 1/sqrt(D)
        the std of the cosine between independent random directions in D dims: the distribution is pulled toward
        that of a zero-centred, unbiased (random-like) layer rather than squeezed to zero.
    """
    if variant == "decorrelate" and new_rows is None and reference is None and weight.shape[0] > 1:
        return mean_squared_off_diagonal(weight)
    s = off_diagonal(weight, new_rows, reference)
    if s.numel() == 0:
        return weight.new_zeros(())
    if variant == "decorrelate":
        return (s ** 2).mean()
    if variant == "distribution":
        tau = 1.0 / math.sqrt(weight[0].numel())
        return s.mean() ** 2 + (s.std(unbiased=False) - tau) ** 2
    raise ValueError(f"unknown similarity variant {variant!r}")


def constraint(model: nn.Module, variant: str, scope: str, latest_round: int) -> torch.Tensor:
    """Sum of `layer_loss` over the model's growable layers (scope 'new': neurons born in `latest_round`)."""
    total = None
    for u in model.units():
        mask = (u.conv.birth_round == latest_round) if scope == "new" else None
        term = layer_loss(u.conv.weight, variant, mask)
        total = term if total is None else total + term
    return total


@torch.no_grad()
def layer_stats(weight: torch.Tensor) -> dict:
    """Summary of one layer's off-diagonal similarities (zero rows excluded), for the results files."""
    w = weight.flatten(1)
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
