import copy

import pandas as pd
import pytest
import torch

from replication.analysis import neurons
from replication.data import corruptions
from replication.analysis.adaptation import AdaptConfig, adapt, channel_masks, pseudo_labels
from replication.config import SMOKE
from replication.data import load_dataset, synthetic_cifar
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
    stats = neurons.channel_stats(model, images.train_x, batch_size=7, normalise=images.normalise)  # batches of 7: streaming is exact
    pre = {}
    hooks = [u.bn.register_forward_hook(lambda m, i, o, k=k: pre.__setitem__(k, o)) for k, u in enumerate(model.units())]
    with torch.no_grad():
        model(images.normalise(images.train_x))
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
    neurons.channel_stats(model, images.train_x, normalise=images.normalise)
    neurons.taylor_scores(model, images.train_x, images.train_y, normalise=images.normalise)
    with neurons.ablate(model, {0: [1]}):
        pass
    assert [len(u.bn._forward_hooks) + len(u.output._forward_hooks) for u in model.units()] == before


def test_ablation_zeroes_or_fills_exactly_the_chosen_channels(model, images):
    x = images.normalise(images.test_x)
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
    keep, labels, threshold = pseudo_labels(model, images.train_x, confidence_quantile=0.7, normalise=images.normalise)
    with torch.no_grad():
        p = model(images.normalise(images.train_x)).softmax(1)
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
    from replication.analysis.adaptation import _train
    m = copy.deepcopy(model)
    keep, labels, _ = pseudo_labels(m, images.train_x, 0.0, normalise=images.normalise)
    _train(m, images.train_x[keep], labels, 3, cfg, list(m.parameters()), masks=masks,
           generator=torch.Generator().manual_seed(0), normalise=images.normalise)
    changed_any = False
    for n, p in m.named_parameters():
        frozen = masks[n] == 0
        assert torch.equal(p.detach()[frozen], before[n][frozen]), n
        changed_any |= not torch.equal(p.detach()[~frozen], before[n][~frozen])
    assert changed_any
    assert adapt(model, images.train_x, "random_channels", cfg, selected, normalise=images.normalise) is not model


def test_adapting_with_zero_steps_changes_nothing(model, images):
    cfg = AdaptConfig(steps=0)
    for cond in ("none", "tent", "blind_full", "blind_last", "hyper_hypo", "random_channels"):
        adapted = adapt(model, images.train_x, cond, cfg, {0: [0]}, normalise=images.normalise)
        for (n, p), q in zip(model.state_dict().items(), adapted.state_dict().values()):
            assert torch.equal(p, q), (cond, n)
    with pytest.raises(ValueError, match="valid"):
        adapt(model, images.train_x, "magic", cfg, normalise=images.normalise)


def test_relative_definition_takes_the_extremes_of_every_layer_of_every_model():
    import math

    import pandas as pd
    rows = [{"method": m, "seed": s, "layer": layer, "channel": c, "firing_rate": (c * 7 % width) / width,
             "kind": "normal"}
            for m in ("firefly", "ours") for s in (0, 1) for layer, width in ((0, 16), (1, 45)) for c in range(width)]
    stats = pd.DataFrame(rows)
    kind = neurons.relative_kind(stats)
    for (m, s, layer), g in stats.assign(kind=kind).groupby(["method", "seed", "layer"]):
        k = max(1, math.ceil(neurons.REL_SHARE * len(g)))
        order = g.sort_values("firing_rate")
        assert list(order["kind"].iloc[:k]) == ["hypo"] * k and list(order["kind"].iloc[-k:]) == ["hyper"] * k
        assert (g["kind"] == "normal").sum() == len(g) - 2 * k  # never empty, never overlapping
    assert neurons.with_kind(stats, "absolute") is stats
    with pytest.raises(ValueError, match="unknown definition"):
        neurons.with_kind(stats, "median")


def test_e2_and_e3_compare_the_sets_of_each_definition(tmp_path):
    """With both definitions, E2 has a row per definition and criterion, and E3 removes the relative sets (never
    empty) beside the absolute ones; the absolute-only caches keep their keys."""
    from replication import experiments
    from replication.analysis import hyper_hypo
    from replication.runs.pool import ensure
    cfgs = [SMOKE.replace(method="firefly", seed=0)]
    records = ensure(cfgs, str(tmp_path), log=lambda *a: None)
    ds = load_dataset(experiments.plan("smoke").base_config("cifar10"))
    stats = hyper_hypo.census(records, ds, str(tmp_path))
    e2 = hyper_hypo.criteria_overlap(records, ds, str(tmp_path), stats, definitions=neurons.DEFINITIONS)
    assert set(e2["definition"]) == set(neurons.DEFINITIONS) and len(e2) == 2 * len(neurons.CRITERIA)
    assert (e2[e2["definition"] == "relative"]["base hypo (%)"] > 0).all()
    e3 = hyper_hypo.removal(records, ds, str(tmp_path), stats, definitions=neurons.DEFINITIONS)
    relative = e3[e3["removed"] == "hyper+hypo (relative)"]
    assert len(relative) == 2 and (relative["channels"] > 0).all()
    assert set(e3[e3["removed"].str.startswith("random (size of hyper+hypo (relative)")]["channels"]) == set(
        relative["channels"])
    control = e3[e3["removed"] == "random (size of hypo = size of hyper (relative))"]
    assert list(control["channels"]) == list(e3[e3["removed"] == "hypo (relative)"]["channels"])
    assert list(control["channels"]) == list(e3[e3["removed"] == "hyper (relative)"]["channels"])
    assert hyper_hypo._definitions_key(("absolute",)) == ""


def test_census_figure_draws_every_layer_including_those_without_such_channels():
    from replication.report import plots
    stats = pd.DataFrame({"method": "firefly", "seed": 0, "layer": [0, 0, 1, 1, 2, 2], "channel": [0, 1] * 3,
                          "kind": ["hypo", "normal", "normal", "normal", "normal", "hyper"],
                          "firing_rate": [0.01, 0.5, 0.5, 0.5, 0.5, 0.99], "phi_prediction": 0.5})
    fig = plots.neuron_census(stats)
    hypo_line, hyper_line = fig.axes[0].lines[0], fig.axes[1].lines[0]
    assert list(hypo_line.get_xdata()) == [0, 1, 2] and list(hypo_line.get_ydata()) == [0.5, 0.0, 0.0]
    assert list(hyper_line.get_ydata()) == [0.0, 0.0, 0.5]
    plots.plt.close(fig)


def test_removal_contrasts_pair_each_set_with_its_control_by_seed():
    from replication.analysis import hyper_hypo
    rows = []
    for seed, (hypo, control) in enumerate(((50.0, 40.0), (52.0, 41.0), (49.0, 40.0))):
        for removed, acc in (("hypo (relative)", hypo), ("random (size of hypo = size of hyper (relative))", control),
                             ("hyper+hypo", 70.0), ("random (size of hyper+hypo)", 70.0)):
            rows.append({"method": "ours", "seed": seed, "removed": removed, "ablation": "mean",
                         "channels": 0 if removed.endswith("hypo") else 30, "clean acc (%)": acc,
                         "corrupted acc, severity 3 (%)": acc / 2})
    table = hyper_hypo.removal_contrasts(pd.DataFrame(rows))
    assert list(table["removed − its random control"]) == [
        "hypo (relative) − random (size of hypo = size of hyper (relative))"]  # the empty absolute set is left out
    assert table.loc[0, "seeds"] == 3 and table.loc[0, "clean (pp)"].startswith("+10.00 ± ")
