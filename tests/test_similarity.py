import math

import pytest
import torch

from replication.similarity import (constraint, layer_loss, layer_stats, mean_squared_off_diagonal, off_diagonal,
                                    similarity_map)
from replication.models import build_model


def loop_map(w):
    rows = w.flatten(1).double()
    n = len(rows)
    out = torch.zeros(n, n, dtype=torch.float64)
    for i in range(n):
        for j in range(n):
            a, b = rows[i], rows[j]
            na, nb = math.sqrt(float(a @ a)), math.sqrt(float(b @ b))
            out[i, j] = 0.0 if na == 0 or nb == 0 else float(a @ b) / (na * nb)
    return out


W = torch.randn(7, 3, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))


def test_similarity_map_equals_a_plain_double_loop():
    assert torch.allclose(similarity_map(W), loop_map(W), atol=1e-12)


def test_symmetric_unit_diagonal_and_scale_invariant():
    c = similarity_map(W)
    assert torch.allclose(c, c.T) and torch.allclose(c.diag(), torch.ones(7, dtype=torch.float64))
    scales = torch.rand(7, 1, 1, 1, dtype=torch.float64) * 10 + 0.1
    assert torch.allclose(similarity_map(W * scales), c, atol=1e-12)


def test_permutation_equivariant():
    perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(similarity_map(W[perm]), similarity_map(W)[perm][:, perm], atol=1e-12)


def test_zero_rows_give_zeros_not_nan_and_finite_gradients():
    w = W.clone()
    w[2] = 0
    w.requires_grad_(True)
    c = similarity_map(w)
    assert torch.isfinite(c).all() and c[2].abs().sum() == 0 and c[:, 2].abs().sum() == 0
    assert torch.allclose(c.detach(), loop_map(w.detach()), atol=1e-12)
    for variant in ("decorrelate", "distribution"):
        g, = torch.autograd.grad(layer_loss(w, variant), w)
        assert torch.isfinite(g).all()


@pytest.mark.parametrize("variant", ["decorrelate", "distribution"])
@pytest.mark.parametrize("scope_new", [False, True])
def test_gradcheck(variant, scope_new):
    w = torch.randn(5, 2, 3, 3, dtype=torch.float64, requires_grad=True)
    if scope_new:  # the other rows are constants by design: hold them fixed as an explicit reference
        mask, ref = torch.tensor([False, True, False, True, False]), w.detach().clone()
        assert torch.autograd.gradcheck(lambda t: layer_loss(t, variant, mask, reference=ref), (w,))
    else:
        assert torch.autograd.gradcheck(lambda t: layer_loss(t, variant), (w,))


def test_decorrelate_is_the_mean_squared_off_diagonal_similarity():
    c = loop_map(W)
    off = c[~torch.eye(7, dtype=torch.bool)]
    assert torch.allclose(layer_loss(W, "decorrelate"), (off ** 2).mean())
    tau = 1 / math.sqrt(27)
    assert torch.allclose(layer_loss(W, "distribution"), off.mean() ** 2 + (off.std(unbiased=False) - tau) ** 2)


def test_fused_decorrelate_matches_autograd_through_the_map_with_a_zero_row():
    w = W.clone()
    w[4] = 0  # a zero-initialised neuron
    fused_w, plain_w = w.clone().requires_grad_(True), w.clone().requires_grad_(True)
    fused = mean_squared_off_diagonal(fused_w)
    plain = (off_diagonal(plain_w) ** 2).mean()  # autograd through wn @ wn.T and the gather
    (3.0 * fused).backward()
    (3.0 * plain).backward()
    assert torch.allclose(fused, plain, atol=1e-14)
    assert torch.allclose(fused_w.grad, plain_w.grad, atol=1e-13)
    assert fused_w.grad[4].abs().sum() == 0 and fused_w.grad.abs().sum() > 0


def test_row_sampled_decorrelate_is_unbiased_in_value_and_gradient():
    w = torch.randn(12, 2, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(4)).requires_grad_(True)
    exact = layer_loss(w, "decorrelate")
    exact_grad, = torch.autograd.grad(exact, w)
    torch.manual_seed(0)
    draws = 4000
    mean_value, mean_grad = 0.0, torch.zeros_like(w)
    for _ in range(draws):
        value = layer_loss(w, "decorrelate", sample_rows=3)
        mean_value += value.item() / draws
        mean_grad += torch.autograd.grad(value, w)[0] / draws
    single = layer_loss(w, "decorrelate", sample_rows=3)
    assert abs(single.item() - exact.item()) > 1e-3  # one draw is only an estimate...
    assert abs(mean_value - exact.item()) < 0.02 * exact.item()  # ...whose mean is the exact loss
    assert (mean_grad - exact_grad).norm() < 0.05 * exact_grad.norm()
    # as many sampled rows as the layer has: the exact loss
    assert torch.allclose(layer_loss(w, "decorrelate", sample_rows=12), exact)


@pytest.mark.parametrize("variant", ["decorrelate", "distribution"])
def test_optimising_the_constraint_lowers_mean_abs_similarity(variant):
    g = torch.Generator().manual_seed(2)
    # A redundant layer: 12 neurons that are noisy copies of 3 directions.
    base = torch.randn(3, 36, generator=g)
    w = (base.repeat(4, 1) + 0.3 * torch.randn(12, 36, generator=g)).view(12, 4, 3, 3).requires_grad_(True)
    before = layer_stats(w.detach())["mean_abs"]
    assert layer_stats(w.detach())["near_duplicate_share"] > 0.1
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(300):
        opt.zero_grad()
        layer_loss(w, variant).backward()
        opt.step()
    after = layer_stats(w.detach())
    assert after["mean_abs"] < 0.6 * before
    assert after["near_duplicate_share"] == 0


def test_scope_new_leaves_old_neurons_without_gradient():
    m = build_model("vgg11", [4] * 8, 10)
    for u in m.units():
        u.conv.birth_round[-2:] = 3
    for variant in ("decorrelate", "distribution"):
        m.zero_grad()
        constraint(m, variant, "new", latest_round=3).backward()
        for u in m.units():
            grad = u.conv.weight.grad
            assert grad[:-2].abs().sum() == 0 and grad[-2:].abs().sum() > 0


def test_layer_stats_summarise_the_off_diagonal_distribution():
    s = layer_stats(W.float())
    c = loop_map(W)
    off = c[torch.triu(torch.ones(7, 7, dtype=torch.bool), 1)]
    assert s["n_neurons"] == 7 and sum(s["hist"]) == 21
    assert abs(s["mean"] - off.mean().item()) < 1e-6 and abs(s["q05"] - off.quantile(0.05).item()) < 1e-6
    assert s["near_duplicate_share"] == (off.abs() > 0.9).double().mean().item()
