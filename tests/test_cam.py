import torch

from replication.analysis import cam
from replication.data import synthetic_cifar
from replication.models import build_model


def test_cam_metrics_are_reproducible_and_leave_the_global_random_stream_alone():
    """ROAD's imputation draws noise from torch's global generator: two calls must agree exactly, and the
    caller's random stream must continue as if the metrics had not run."""
    torch.manual_seed(0)
    model = build_model("vgg11", [4] * 8, 10).eval()
    ds = synthetic_cifar(10, 1, 2, seed=0)
    x, y = ds.test_x[:8], ds.test_y[:8]
    state = torch.get_rng_state()
    first = cam.cam_metrics(model, x, y, batch_size=4, normalise=ds.normalise)
    assert torch.equal(torch.get_rng_state(), state)
    second = cam.cam_metrics(model, x, y, batch_size=4, normalise=ds.normalise)
    assert first.equals(second) and len(first) == 8
    assert first["coverage"].between(0, 1).all()


def test_the_last_4x4_layer_is_found_by_its_map_size():
    vgg19 = build_model("vgg19", [4] * 16, 10)
    assert cam.resolve_layer(vgg19, "last 4x4") == 11  # pools after units 1, 3, 7, 11, 15: units 8-11 are 4x4
    assert cam.resolve_layer(build_model("vgg11", [4] * 8, 10), "last 4x4") == 5
    assert cam.resolve_layer(vgg19, "last") == -1 and cam.resolve_layer(vgg19, 3) == 3


def test_cam_summary_takes_the_confidence_interval_over_seeds():
    """Per seed the mean paired difference; the CI is over those seed means, not over the pooled images (which
    would shrink with the image count however much the seeds disagree)."""
    import pandas as pd

    from replication.stats import ci95
    rows = []
    for seed, shift in ((0, 0.10), (1, -0.05), (2, 0.02)):
        for image in range(50):
            for method, value in (("Firefly", 0.3), ("ours", 0.3 + shift + 0.001 * (image % 5))):
                rows.append({"method": method, "seed": seed, "layer": "last (conv7)", "image": image,
                             "correct": True, "coverage": value, "confidence_change": 0.0, "road": 0.0})
    summary = cam.cam_summary(pd.DataFrame(rows))
    diff = summary[summary["method"].str.startswith("ours − Firefly")].iloc[0]
    mean, half = ci95([0.10 + 0.002, -0.05 + 0.002, 0.02 + 0.002])
    assert diff["coverage"] == f"{mean:+.4f} ± {half:.4f}" and "over seeds" in diff["method"]
    assert diff["seeds"] == 3 and diff["images"] == 150
