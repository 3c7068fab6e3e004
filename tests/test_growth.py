
import pytest
import torch
from torch import nn

from replication.config import SMOKE
from replication.growth.candidates import SCORE_GATE, CandidateNetwork
from replication.growth.firefly import materialise, select_global
from replication.growth.primitives import (add_neurons, carry_optimizer_state, kaiming_filters, random_fan_out, split_neurons,
                                zero_fan_out)
from replication.models import build_model, count_params
from replication.growth.base import neurons_to_add
from replication.growth.random import grow_random
from replication.growth.split import grow_split

from test_models import vgg_params_formula

ARCHS = {"vgg11": [3, 4, 5, 3, 4, 5, 3, 4], "mobilenetv1": [3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4, 5, 3, 4]}


def seeded_model(arch, seed=0):
    torch.manual_seed(seed)
    m = build_model(arch, ARCHS[arch], 10).eval()
    with torch.no_grad():  # non-trivial BN so that copies of statistics matter
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    return m


X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(9))


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_fan_out_growth_preserves_outputs_for_every_layer(arch):
    for i in range(len(ARCHS[arch])):
        m = seeded_model(arch)
        before = m(X)
        u = m.units()[i]
        g = torch.Generator().manual_seed(i)
        add_neurons(u, kaiming_filters(u, 3, g), zero_fan_out(u, 3), birth_round=1,
                    follower_filters=[torch.randn(3, 1, 3, 3) for _ in u.followers])
        assert m.units()[i].width == ARCHS[arch][i] + 3
        assert m.units()[i].conv.birth_round.tolist()[-3:] == [1, 1, 1]
        assert (m(X) - before).abs().max().item() <= 1e-6


@pytest.mark.parametrize("arch", ARCHS)
def test_split_with_zero_delta_preserves_outputs_and_copies_bn(arch):
    for i in range(len(ARCHS[arch])):
        m = seeded_model(arch)
        before = m(X)
        u = m.units()[i]
        parents = torch.tensor([0, 2])
        stats = [t[parents].clone() for t in (u.bn.weight, u.bn.bias, u.bn.running_mean, u.bn.running_var)]
        split_neurons(u, parents, torch.zeros(2, *u.conv.weight.shape[1:]), birth_round=2)
        for t, want in zip((u.bn.weight, u.bn.bias, u.bn.running_mean, u.bn.running_var), stats):
            assert torch.equal(t[-2:].detach(), want.detach())
        assert (m(X) - before).abs().max().item() <= 1e-5


def test_split_children_are_w_minus_delta_and_parents_w_plus_delta():
    m = seeded_model("vgg11")
    u = m.units()[1]
    w = u.conv.weight.detach().clone()
    delta = torch.randn(1, *w.shape[1:])
    split_neurons(u, torch.tensor([1]), delta, birth_round=1)
    assert torch.allclose(u.conv.weight[1], w[1] + delta[0]) and torch.allclose(u.conv.weight[-1], w[1] - delta[0])
    assert torch.equal(u.consumer.weight[:, 1], u.consumer.weight[:, -1])


def test_parameter_count_after_growth_matches_the_formula():
    m = build_model("vgg19", [16] * 16, 10)
    g = torch.Generator().manual_seed(0)
    n = neurons_to_add(m, 0.3)
    assert n == int(256 * 0.3)
    grow_random(m, n, g, birth_round=1)
    grow_split(m, 10, g, birth_round=2, noise=0.01)
    widths = [u.width for u in m.units()]
    assert sum(widths) == 256 + n + 10
    assert count_params(m) == vgg_params_formula(widths)


def test_optimizer_state_is_carried_old_entries_intact_new_zero():
    torch.manual_seed(0)
    m = build_model("vgg11", ARCHS["vgg11"], 10)
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        opt.zero_grad()
        m(X).logsumexp(1).mean().backward()
        opt.step()
    names = dict(m.named_parameters())
    old_buf = {n: opt.state[p]["momentum_buffer"].clone() for n, p in names.items()}
    before = dict(m.named_parameters())
    u = m.units()[2]
    g = torch.Generator().manual_seed(1)
    add_neurons(u, kaiming_filters(u, 2, g), random_fan_out(u, 2, g), birth_round=1)
    carry_optimizer_state(opt, m, before)
    for n, p in m.named_parameters():
        buf = opt.state[p]["momentum_buffer"]
        assert buf.shape == p.shape
        old = old_buf[n]
        assert torch.equal(buf[tuple(slice(0, s) for s in old.shape)], old)
        assert buf.abs().sum() == old.abs().sum()  # everything beyond the old block is zero
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in m.parameters()}
    opt.zero_grad()
    m(X).logsumexp(1).mean().backward()
    opt.step()  # training continues without shape errors


@pytest.fixture
def float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.mark.parametrize("new_to_new", [True, False])
@pytest.mark.parametrize("arch", ARCHS)
def test_firefly_candidate_network_is_exact_at_both_gate_settings(arch, new_to_new, float64):
    m = seeded_model(arch)
    X = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(9))
    cfg = SMOKE.replace(arch=arch, firefly_new_per_layer=3, firefly_new_to_new=new_to_new)
    cand = CandidateNetwork(m, cfg, torch.Generator().manual_seed(1))
    with torch.no_grad():
        for c in cand.cands:  # large candidates, so that "the function changed" is visible in the output
            for t in c.tensors():
                t.mul_(30)
        base = m(X)
        cand.loss(X, torch.zeros(4, dtype=torch.long), 0.0)  # sets all gates to zero
        assert (cand.forward(X) - base).abs().max() <= 1e-12
        scores = [(torch.randn(u.width), torch.randn(cand.k)) for u in cand.units]
        chosen = select_global(scores, 12)
        cand.gates = [(torch.zeros(u.width).index_fill(0, s, 1.0), torch.zeros(cand.k).index_fill(0, n, 1.0))
                      for (s, n), u in zip(chosen, cand.units)]
        gated = cand.forward(X)
        materialise(m, cand, chosen, birth_round=1)
        assert (gated - base).abs().max() > 1e-4  # the candidates do change the function...
        # ...and the materialised network is exactly that function (float64 round-off)
        assert (m(X) - gated).abs().max() <= 1e-9 * gated.abs().max().clamp_min(1.0)


@pytest.mark.parametrize("arch", ARCHS)
def test_firefly_scores_equal_gate_gradients_of_the_full_graph(arch, float64):
    """The scoring pass skips backward through the candidate channels; its gate gradients must equal those of
    the full graph (candidate tensors included), for VGG and MobileNet."""
    m = seeded_model(arch)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    y = torch.arange(6) % 10
    cand = CandidateNetwork(m, SMOKE.replace(arch=arch, firefly_new_per_layer=3), torch.Generator().manual_seed(1))
    fast = torch.autograd.grad(cand.loss(x, y, SCORE_GATE, score="zero"), cand.score_inputs())
    cand.loss(x, y, SCORE_GATE, score="zero")
    gates = cand.score_inputs()
    cand.scoring = None  # the full graph, through every candidate channel
    full = torch.autograd.grad(nn.functional.cross_entropy(cand.forward(x), y), gates)
    assert sum(g.abs().sum() for g in full) > 0
    for f, g in zip(fast, full):
        assert torch.allclose(f, g, rtol=1e-10, atol=1e-14)


def test_global_selection_keeps_the_most_negative_scores_across_layers():
    scores = [(torch.tensor([0.5, -3.0]), torch.tensor([-1.0, 2.0])),
              (torch.tensor([-2.0, 0.1, 0.0]), torch.tensor([-0.5, -4.0]))]
    chosen = select_global(scores, 3)
    assert [(s.tolist(), n.tolist()) for s, n in chosen] == [([1], []), ([0], [1])]
    assert sum(len(s) + len(n) for s, n in chosen) == 3


def test_firefly_scores_find_the_one_known_loss_reducing_candidate():
    """Constructed case: every candidate is inert (v = 0, n = 0) except new slot 0 of the last layer, whose fan-out
    points down the loss gradient. Its gate gradient must be negative, every other exactly zero, and the global
    selection of one neuron must pick it."""
    from replication.data import eval_batches, synthetic_cifar

    torch.manual_seed(0)
    m = build_model("vgg11", [4] * 8, 10).eval()
    ds = synthetic_cifar(10, 8, 1, seed=0)
    x, y = next(eval_batches(ds.train_x, ds.train_y, 80, normalise=ds.normalise))
    cand = CandidateNetwork(m, SMOKE.replace(firefly_new_per_layer=2), torch.Generator().manual_seed(0))
    with torch.no_grad():
        for c in cand.cands:
            for t in c.tensors():
                t.zero_()
        cand.cands[7].n.normal_()
    grad_o = torch.autograd.grad(cand.loss(x, y, 1.0), cand.cands[7].o)[0]
    with torch.no_grad():
        cand.cands[7].o.copy_(-grad_o)
        cand.cands[7].o[:, 1] = 0  # slot 1 has no fan-out, so it cannot change the loss
    loss = cand.loss(x, y, SCORE_GATE, score="zero")
    grads = torch.autograd.grad(loss, cand.score_inputs())
    scores = [(grads[2 * i], grads[2 * i + 1]) for i in range(8)]
    assert scores[7][1][0] < 0
    others = torch.cat([torch.cat([s, n]) for s, n in scores[:7]] + [scores[7][0], scores[7][1][1:]])
    assert torch.count_nonzero(others) == 0
    chosen = select_global(scores, 1)
    assert chosen[7][1].tolist() == [0] and sum(len(s) + len(n) for s, n in chosen) == 1


@pytest.mark.parametrize("arch", ARCHS)
def test_full_scores_are_directional_derivatives_along_each_candidate(arch, float64):
    """Firefly's public scoring point: every candidate on, and a candidate's score is the slope of the loss along
    its own perturbation, d/de L(v_j -> (1 + e) v_j) for a split and d/de L(n_j -> (1 + e) n_j) for a new neuron,
    at e = 0. Checked against central differences of the candidate network's loss, in float64."""
    m = seeded_model(arch)
    x = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    y = torch.arange(6) % 10
    cand = CandidateNetwork(m, SMOKE.replace(arch=arch, firefly_new_per_layer=3), torch.Generator().manual_seed(1))
    with torch.no_grad():
        for c in cand.cands:  # candidates large enough that the grown network differs clearly from the model
            for t in c.tensors():
                t.mul_(20)
    for c in cand.cands:
        for t in c.tensors():
            t.requires_grad_(False)
    grads = torch.autograd.grad(cand.loss(x, y, 1.0, score="full"), cand.score_inputs())
    h = 1e-6

    def slope(tensor, row):
        keep = tensor[row].clone()
        losses = []
        for e in (h, -h):
            tensor[row] = keep * (1 + e)
            losses.append(cand.loss(x, y, 1.0).item())
        tensor[row] = keep
        return (losses[0] - losses[1]) / (2 * h)

    checked = 0
    for i in (0, len(cand.units) // 2, len(cand.units) - 1):
        for kind, tensor, grad in (("split", cand.cands[i].v, grads[2 * i]),
                                   ("new", cand.cands[i].n, grads[2 * i + 1])):
            for row in range(min(2, len(tensor))):
                want = slope(tensor, row)
                assert grad[row].item() == pytest.approx(want, rel=1e-5, abs=1e-9), (i, kind, row)
                checked += abs(want) > 1e-6
    assert checked >= 6  # the slopes are not all zero


def test_materialised_new_to_new_weights_are_the_learnt_ones():
    torch.manual_seed(0)
    m = build_model("vgg11", [4] * 8, 10).eval()
    cand = CandidateNetwork(m, SMOKE.replace(firefly_new_per_layer=3), torch.Generator().manual_seed(0))
    empty = torch.empty(0, dtype=torch.long)
    chosen = [(empty, empty)] * 8
    chosen[2], chosen[3] = (empty, torch.tensor([0, 2])), (empty, torch.tensor([1]))
    materialise(m, cand, chosen, birth_round=1)
    w3 = m.units()[3].conv.weight  # rows: 4 original + 1 new; columns: 4 original + 2 new of unit 2
    assert torch.equal(w3[4, 4:], cand.cands[3].m[1, [0, 2]].detach())
    assert torch.equal(w3[:4, 4:], cand.cands[2].o[:, [0, 2]].detach())


def test_selection_keeps_n_plus_one_per_group_like_firefly():
    from replication.growth.firefly import selection_quotas
    vgg = build_model("vgg19", [16] * 16, 10)
    assert selection_quotas(vgg, SMOKE) == ([list(range(16))], [int(256 * 0.3) + 1])
    mobile = build_model("mobilenetv1", [32] * 14, 10)
    groups, quotas = selection_quotas(mobile, SMOKE)
    assert groups == [[0, 1, 2, 3], list(range(4, 14))] and quotas == [int(128 * 0.3) + 1, int(320 * 0.3) + 1]
    assert selection_quotas(mobile, SMOKE.replace(firefly_grouped_selection=False, firefly_keep_extra=0)) == (
        [list(range(14))], [int(448 * 0.3)])


def test_firefly_candidate_passes_never_wait_for_the_device(host_reads):
    # Both candidate passes queue their work without one host read-back, however long they are.
    from replication.data import synthetic_cifar
    from replication.growth.firefly import candidate_scores
    ds = synthetic_cifar(10, 40, 5)
    host_reads.clear()
    for images in (128, 384):
        cfg = SMOKE.replace(firefly_candidate_images=images, firefly_candidate_batch_size=32)
        candidate_scores(build_model("vgg11", [6] * 8, 10), ds, cfg, torch.Generator().manual_seed(0), "cpu")
    assert host_reads == []
