import copy

import pandas as pd
import pytest
import torch

from replication import corruptions, neurons
from replication.adaptation import AdaptConfig, adapt, channel_masks, pseudo_labels
from replication.data import normalise, synthetic_cifar
from replication.models import build_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    m = build_model("vgg11", [4, 5, 3, 6, 4, 5, 3, 4], 10, init="kaiming").eval()  # the fixtures below assume its draws
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.bias.uniform_(-1.5, 1.5)  # pushes some channels toward always/never firing
    return m


@pytest.fixture
def images():
    return synthetic_cifar(10, 6, 2, seed=0)


def test_statistics_match_a_direct_computation(model, images):
    stats = neurons.channel_stats(model, images.train_x, batch_size=7)  # batches of 7: streaming is exact
    pre = {}
    hooks = [u.bn.register_forward_hook(lambda m, i, o, k=k: pre.__setitem__(k, o)) for k, u in enumerate(model.units())]
    with torch.no_grad():
        model(normalise(images.train_x))
    for h in hooks:
        h.remove()
    for k, u in enumerate(model.units()):
        z = pre[k].transpose(0, 1).reshape(u.width, -1).double()
        a = torch.relu(z)
        p = (z > 0).double().mean(1)
        corr = torch.nan_to_num(torch.corrcoef(a), nan=0.0)
        corr.fill_diagonal_(0)
        got = stats[stats["layer"] == k].sort_values("channel")
        assert got["firing_rate"].to_numpy() == pytest.approx(p.numpy(), abs=1e-12)
        assert got["mean_activation"].to_numpy() == pytest.approx(a.mean(1).numpy(), abs=1e-6)
        assert got["max_abs_corr"].to_numpy() == pytest.approx(corr.abs().amax(1).numpy(), abs=1e-5)
    assert set(stats["kind"]) <= {"hypo", "hyper", "normal"}
    assert (stats.loc[stats["kind"] == "hypo", "firing_rate"] <= 0.05).all()


def test_hooks_are_removed_after_every_call(model, images):
    before = [len(u.bn._forward_hooks) + len(u.output._forward_hooks) for u in model.units()]
    neurons.channel_stats(model, images.train_x)
    neurons.taylor_scores(model, images.train_x, images.train_y)
    with neurons.ablate(model, {0: [1]}):
        pass
    assert [len(u.bn._forward_hooks) + len(u.output._forward_hooks) for u in model.units()] == before


def test_ablation_zeroes_or_fills_exactly_the_chosen_channels(model, images):
    x = normalise(images.test_x)
    unit = model.units()[2]
    with torch.no_grad():
        clean = model(x)
    for values, want in ((None, (0.0, 0.0)), ({2: torch.tensor([7.0, 0.0, 9.0])}, (7.0, 9.0))):
        seen = {}
        with torch.no_grad(), neurons.ablate(model, {2: [0, 2]}, values):
            # registered after the ablation hook, so it sees the ablated output
            h = unit.output.register_forward_hook(lambda m, i, o: seen.__setitem__("out", o))
            out = model(x)
            h.remove()
        assert (seen["out"][:, 0] == want[0]).all() and (seen["out"][:, 2] == want[1]).all()
        assert (seen["out"][:, 1] != 0).any()  # the other channel is untouched
        assert not torch.equal(out, clean)
    with torch.no_grad():
        assert torch.equal(model(x), clean)  # ablation is undone after the context


def test_bottom_k_takes_the_lowest_share_of_every_layer():
    scores = pd.DataFrame({"layer": [0] * 10 + [1] * 20, "channel": list(range(10)) + list(range(20)),
                           "kind": "normal", "filter_norm": list(range(10, 0, -1)) + list(range(20))})
    sel = neurons.bottom_k(scores, "filter_norm", 0.1)
    assert sel[sel["layer"] == 0]["channel"].tolist() == [9]
    assert sorted(sel[sel["layer"] == 1]["channel"].tolist()) == [0, 1]


@pytest.mark.parametrize("family", corruptions.FAMILIES)
def test_corruptions_are_deterministic_in_range_and_monotone(family, images):
    x = images.test_x[:8]
    a, b = corruptions.corrupt(x, family, 3, seed=1), corruptions.corrupt(x, family, 3, seed=1)
    assert torch.equal(a, b) and a.min() >= 0 and a.max() <= 1 and a.shape == x.shape
    clean = x.float() / 255
    d1 = (corruptions.corrupt(x, family, 1, seed=1) - clean).abs().mean()
    d5 = (corruptions.corrupt(x, family, 5, seed=1) - clean).abs().mean()
    assert 0 < d1 < d5
    with pytest.raises(ValueError):
        corruptions.corrupt(x, family, 6)


def test_pseudo_label_filter_keeps_only_samples_above_the_threshold(model, images):
    keep, labels, threshold = pseudo_labels(model, images.train_x, confidence_quantile=0.7)
    with torch.no_grad():
        p = model(normalise(images.train_x)).softmax(1)
    top = p.max(1).values
    assert threshold == pytest.approx(torch.quantile(top, 0.7).item())
    assert torch.equal(keep, (top >= threshold).nonzero().flatten())
    assert (top[keep] >= threshold).all() and 0 < len(keep) <= 0.35 * len(top)
    assert torch.equal(labels, p.argmax(1)[keep])


def test_gradient_masks_freeze_exactly_the_unselected_parameters(model, images):
    cfg = AdaptConfig(steps=3, batch_size=16, confidence_quantile=0.0, lr=0.1)
    selected = {1: [0, 3], 4: [2]}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    masks = channel_masks(model, selected)
    # Only stage 1 (masked): a one-condition run whose second stage has no steps.
    from replication.adaptation import _train
    m = copy.deepcopy(model)
    keep, labels, _ = pseudo_labels(m, images.train_x, 0.0)
    _train(m, images.train_x[keep], labels, 3, cfg, list(m.parameters()), masks=masks,
           generator=torch.Generator().manual_seed(0))
    changed_any = False
    for n, p in m.named_parameters():
        frozen = masks[n] == 0
        assert torch.equal(p.detach()[frozen], before[n][frozen]), n
        changed_any |= not torch.equal(p.detach()[~frozen], before[n][~frozen])
    assert changed_any
    assert adapt(model, images.train_x, "random_channels", cfg, selected) is not model


def test_adapting_with_zero_steps_changes_nothing(model, images):
    cfg = AdaptConfig(steps=0)
    for cond in ("none", "tent", "blind_full", "blind_last", "hyper_hypo", "random_channels"):
        adapted = adapt(model, images.train_x, cond, cfg, {0: [0]})
        for (n, p), q in zip(model.state_dict().items(), adapted.state_dict().values()):
            assert torch.equal(p, q), (cond, n)
    with pytest.raises(ValueError, match="valid"):
        adapt(model, images.train_x, "magic", cfg)
