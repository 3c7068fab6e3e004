import torch

from replication import cam
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
    first = cam.cam_metrics(model, x, y, batch_size=4)
    assert torch.equal(torch.get_rng_state(), state)
    second = cam.cam_metrics(model, x, y, batch_size=4)
    assert first.equals(second) and len(first) == 8
    assert first["coverage"].between(0, 1).all()
