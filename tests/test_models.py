import pytest
import torch

from replication.models import VGG_CFG, build_model, count_flops, count_params, full_widths


def vgg_params_formula(widths, num_classes=10):
    total, c_in = 0, 3
    for w in widths:
        total += c_in * w * 9 + 2 * w  # conv (no bias) + BN affine
        c_in = w
    return total + c_in * num_classes + num_classes  # 1x1 classifier with bias


def test_firefly_vgg19_parameter_counts():
    compact = build_model("vgg19", [16] * 16, 10)
    assert count_params(compact) == vgg_params_formula([16] * 16) == 35_674  # paper-facts: ~35.7 K
    full = build_model("vgg19", full_widths("vgg19"), 10)
    assert count_params(full) == vgg_params_formula(full_widths("vgg19"))
    assert round(count_params(full) / 1e6, 2) == 20.04  # paper-facts: ~20.04 M


@pytest.mark.parametrize("arch", list(VGG_CFG) + ["mobilenetv1"])
@pytest.mark.parametrize("num_classes", [10, 100])
def test_shapes_and_units(arch, num_classes):
    widths = [3 + i % 4 for i in range(len(full_widths(arch)))]
    m = build_model(arch, widths, num_classes)
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, num_classes)
    units = m.units()
    assert [u.width for u in units] == widths
    for u in units:  # each unit's consumer reads exactly its channels
        assert u.consumer.weight.shape[1] == u.width
        assert u.conv.birth_round.tolist() == [0] * u.width


def test_flop_counter_matches_the_vgg_formula():
    widths = [16] * 16
    m = build_model("vgg19", widths, 10)
    size, c_in, macs = 32, 3, 0
    pools = {1, 3, 7, 11, 15}
    for i, w in enumerate(widths):
        macs += size * size * c_in * w * 9
        c_in = w
        if i in pools:
            size //= 2
    assert count_flops(m) == macs + 16 * 10


def test_wrong_number_of_widths_is_an_error():
    with pytest.raises(ValueError, match="16 conv layers"):
        build_model("vgg19", [16] * 15, 10)
