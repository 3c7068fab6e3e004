"""Every function that takes a device, run on a device that is not the CPU: PyTorch's "meta" device (shapes and
dtypes, no data). A tensor made on the CPU inside such a function and mixed with the device's tensors raises
("Tensor on device cpu is not on the expected device meta!"), so these tests catch the device bugs a GPU run would
hit, without a GPU. Data-dependent reads (.item(), .tolist()) cannot run on meta: the functions keep their
compute in a part that returns device tensors (`train_epoch_sums`, `evaluation_sums`), tested here, and read it
in a thin wrapper. No default-device context is used: it would hide exactly these bugs."""
import pytest
import torch
from torch import nn

from replication.analysis import neurons
from replication.growth import primitives as growth
from replication.config import SMOKE
from replication.data import CIFAR10_NORMALISATION, load_dataset
from replication.models import build_model
from replication.train import LAYOUT, evaluation_sums, make_optimizer, train_epoch_sums

META = torch.device("meta")
WIDTHS = [4, 5, 3, 6, 4, 5, 3, 4]


def _on_meta(module: nn.Module):
    return module.to(META, memory_format=LAYOUT)


def _all_on(tensors, device=META):
    tensors = list(tensors)
    assert tensors and all(t.device == device for t in tensors), {t.device for t in tensors}


@pytest.fixture
def ds():
    return load_dataset(SMOKE).to(META)


@pytest.mark.parametrize("sim_round,sample_rows", [(None, None), (1, None), (1, 2)])
def test_a_training_epoch_runs_on_the_device_with_and_without_the_constraint(ds, sim_round, sample_rows):
    cfg = SMOKE.replace(method="ours", lambda_sim=1.0, sim_sample_rows=sample_rows)
    model = _on_meta(build_model("vgg11", WIDTHS, ds.num_classes))
    optimizer = make_optimizer(model, cfg)
    loss_sum, sim_sum, correct, seen = train_epoch_sums(model, optimizer, ds, cfg, torch.Generator().manual_seed(0),
                                                        META, sim_round)
    _all_on([loss_sum, sim_sum, correct])
    assert seen == len(ds.train_y)
    _all_on(model.parameters())
    _all_on(t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))


def test_evaluation_runs_on_the_device(ds):
    model = _on_meta(build_model("vgg11", WIDTHS, ds.num_classes))
    _all_on(evaluation_sums(model, ds.test_x, ds.test_y, 7, META, normalise=ds.normalise))


def test_growth_primitives_and_optimizer_carry_over_stay_on_the_device():
    cfg = SMOKE.replace(rebuild_optimizer=False)
    model = _on_meta(build_model("vgg11", WIDTHS, 10))
    optimizer = make_optimizer(model, cfg)
    x = torch.empty(2, 3, 32, 32, device=META)
    nn.functional.cross_entropy(model(x), torch.zeros(2, dtype=torch.long, device=META)).backward()
    optimizer.step()
    before = growth.snapshot_params(model)
    g = torch.Generator().manual_seed(0)
    unit = model.units()[2]
    # CPU draws (the same on every device), moved by the primitive
    growth.add_neurons(unit, growth.kaiming_filters(unit, 2, g), growth.random_fan_out(unit, 2, g), 1)
    growth.split_neurons(model.units()[4], torch.tensor([0, 1]),  # host indices, as every caller chooses them
                         torch.empty(2, *model.units()[4].conv.weight.shape[1:], device=META), 1)
    growth.carry_optimizer_state(optimizer, model, before)
    _all_on(model.parameters())
    _all_on(model.buffers())
    _all_on(t for state in optimizer.state.values() for t in state.values() if torch.is_tensor(t))
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("method", ["random", "split"])
def test_random_and_split_growth_steps_run_on_the_device(ds, method):
    from replication.growth.registry import grow
    cfg = SMOKE.replace(method=method)
    model = _on_meta(build_model("vgg11", WIDTHS, ds.num_classes))
    grow(model, cfg, ds, 1, torch.Generator().manual_seed(0), META)
    _all_on(model.parameters())
    _all_on(model.buffers())


def test_neuron_statistics_hooks_accumulate_on_the_device():
    model = _on_meta(build_model("vgg11", WIDTHS, 10)).eval()
    acc = [neurons._Accumulator() for _ in model.units()]
    for a, u in zip(acc, model.units()):
        out = u.bn(u.conv(torch.empty(2, u.conv.in_channels, 4, 4, device=META)))
        a.add(out, torch.relu(out))
        _all_on([a.pos, a.s, a.ss])  # on a GPU, sums kept on the CPU would fail at the first batch


def test_a_checkpoint_loads_onto_another_device(tmp_path):
    from replication.records import load_state
    model = build_model("vgg11", WIDTHS, 10)
    path = str(tmp_path / "state.pt")
    torch.save({"model": model.state_dict(), "widths": WIDTHS}, path)
    state = load_state(path, "delete it", device=META)
    _all_on(state["model"].values())
    moved = _on_meta(build_model("vgg11", state["widths"], 10))
    moved.load_state_dict(state["model"], assign=True)
    _all_on(moved.parameters())


def test_random_fan_out_scaled_on_the_device_equals_the_host_read_version():
    """The device-side scaling gives the CPU bits of the earlier `* std().item()` exactly (records unchanged)."""
    model = build_model("vgg11", WIDTHS, 10)
    unit = model.units()[3]
    w = unit.consumer.weight
    old = torch.randn((w.shape[0], 3, *w.shape[2:]), generator=torch.Generator().manual_seed(5)) * w.std().item()
    new = growth.random_fan_out(unit, 3, torch.Generator().manual_seed(5))
    assert torch.equal(old, new)


@pytest.mark.parametrize("arch,score_at", [("vgg11", "full"), ("vgg11", "zero"), ("mobilenetv1", "full")])
def test_firefly_candidate_passes_and_materialise_run_on_the_device(ds, arch, score_at):
    """The candidate network's training and scoring passes on the device; selection on host copies of the scores
    (argsort and nonzero read data), then materialisation of the chosen candidates on the device."""
    from replication.growth import firefly
    cfg = SMOKE.replace(arch=arch, method="firefly", firefly_score_at=score_at)
    widths = WIDTHS if arch == "vgg11" else [4] * 14
    model = _on_meta(build_model(arch, widths, ds.num_classes))
    cand, scores = firefly.candidate_scores(model, ds, cfg, torch.Generator().manual_seed(0), META)
    _all_on(t for pair in scores for t in pair)
    _all_on(t for c in cand.cands for t in c.tensors())
    groups, quotas = firefly.selection_quotas(model, cfg)
    host = [(torch.randn(len(s)), torch.randn(len(n))) for s, n in scores]  # stand-ins for the scores' values
    chosen = firefly.select_groups(host, groups, quotas)
    firefly.materialise(model, cand, chosen, 1, zero_depthwise=arch == "mobilenetv1")
    _all_on(model.parameters())
    _all_on(model.buffers())
    assert sum(w for w in (u.width for u in model.units())) == sum(widths) + sum(quotas)


def test_pruning_scores_and_channel_removal_run_on_the_device():
    """E2's Taylor scores (activation x gradient sums) and E3's masking hooks, on the device."""
    model = _on_meta(build_model("vgg11", WIDTHS, 10))
    images = torch.empty(6, 3, 32, 32, dtype=torch.uint8, device=META)
    labels = torch.empty(6, dtype=torch.long, device=META)
    _all_on(neurons.taylor_scores(model, images, labels, batch_size=4, normalise=CIFAR10_NORMALISATION))
    values = {0: torch.zeros(WIDTHS[0]), 1: torch.zeros(WIDTHS[1])}  # mean values live on the host (census table)
    with neurons.ablate(model, {0: [1, 2], 1: [0]}, values):
        out = model(torch.empty(2, 3, 32, 32, device=META))
    assert out.device == META


def test_evaluation_on_a_fake_cuda_device():
    """The same on fake "cuda:0" tensors (no CUDA needed): forward passes work there and a CPU tensor mixed into
    them raises, so the code path a GPU run takes is checked for device mixing too. (Backward needs a real CUDA
    context, so training steps are checked on meta above.)"""
    from torch._subclasses.fake_tensor import FakeTensorDeviceMismatchError, FakeTensorMode
    ds = load_dataset(SMOKE)
    model = build_model("vgg11", WIDTHS, ds.num_classes)
    with FakeTensorMode(allow_non_fake_inputs=True):
        cuda = torch.device("cuda:0")
        on_gpu = model.to(cuda, memory_format=LAYOUT)
        gpu_ds = ds.to(cuda)
        _all_on(evaluation_sums(on_gpu, gpu_ds.test_x, gpu_ds.test_y, 7, cuda, normalise=gpu_ds.normalise), cuda)
        with pytest.raises(FakeTensorDeviceMismatchError):
            on_gpu(gpu_ds.test_x[:2].float()) + torch.ones(ds.num_classes)  # the kind of bug these tests catch


def test_a_bf16_run_on_a_cpu_without_native_bf16_says_so_in_one_line(monkeypatch, tmp_path):
    from replication import devices
    from replication.train import run
    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "native_bf16", lambda: False)
    assert "emulated" in devices.precision_notice("bf16", cpu)
    assert devices.precision_notice("fp32", cpu) is None
    lines = []
    run(SMOKE.replace(method="fixed", rounds=1, epochs_per_round=1, precision="bf16"), str(tmp_path), log=lines.append)
    assert sum("emulated" in m for m in lines) == 1
    monkeypatch.setattr(devices, "native_bf16", lambda: True)
    assert devices.precision_notice("bf16", cpu) is None


def test_grad_cam_layer_resolution_hooks_run_on_the_device():
    """The forward hooks that find a model's last 4x4 layer run a probe image on the model's device (the Grad-CAM
    maps themselves are the library's, read to numpy: not runnable on a device without data)."""
    from replication.analysis import cam
    vgg19 = _on_meta(build_model("vgg19", [4] * 16, 10))
    assert cam.resolve_layer(vgg19, "last 4x4") == 11 and cam.resolve_layer(vgg19, "last") == -1
