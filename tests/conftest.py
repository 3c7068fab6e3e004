import os
import pickle

import numpy as np
import pytest
import torch

from replication.config import SMOKE
from replication.data import synthetic_cifar


def pytest_configure(config):
    torch.set_num_threads(1)  # tests are tiny; one thread avoids oversubscription when pytest runs beside others


@pytest.fixture
def tiny_cfg():
    """A seconds-sized config on synthetic data that still learns (wider and longer than the smoke preset)."""
    return SMOKE.replace(start_width=8, epochs_per_round=3, synthetic_train_per_class=40,
                         synthetic_test_per_class=20, progress=False, num_threads=1)


@pytest.fixture
def host_reads(monkeypatch):
    """The names of the tensor methods that read a value back to the host (.item, .tolist, bool()), one entry per
    call while the test runs: on a GPU each one waits for the queued kernels."""
    reads = []
    for name in ("item", "tolist", "__bool__"):
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            reads.append(_name)
            return _original(self, *args, **kwargs)
        monkeypatch.setattr(torch.Tensor, name, counted)
    return reads


@pytest.fixture(scope="session")
def synthetic():
    return synthetic_cifar(10, 40, 20, seed=0)


def write_python_layout(root, name, train_x, train_y, test_x, test_y, classes):
    """Write uint8 NCHW arrays in the official CIFAR python layout (as the data's authors pickle it)."""
    spec = {"cifar10": ("cifar-10-batches-py", ["data_batch_%d" % i for i in range(1, 6)], "test_batch",
                        "labels", "batches.meta", "label_names"),
            "cifar100": ("cifar-100-python", ["train"], "test", "fine_labels", "meta", "fine_label_names")}[name]
    folder = os.path.join(root, spec[0])
    os.makedirs(folder, exist_ok=True)
    chunks = np.array_split(np.arange(len(train_y)), len(spec[1]))
    for file, idx in zip(spec[1], chunks):
        with open(os.path.join(folder, file), "wb") as f:
            pickle.dump({"data": train_x[idx].reshape(len(idx), -1), spec[3]: train_y[idx].tolist()}, f)
    with open(os.path.join(folder, spec[2]), "wb") as f:
        pickle.dump({"data": test_x.reshape(len(test_x), -1), spec[3]: test_y.tolist()}, f)
    with open(os.path.join(folder, spec[4]), "wb") as f:
        pickle.dump({spec[5]: list(classes)}, f)
    return folder


def real_data_dir():
    return os.environ.get("REPLICATION_DATA", "data")


@pytest.fixture
def cifar10_dir():
    root = real_data_dir()
    if not os.path.isfile(os.path.join(root, "cifar-10-batches-py", "test_batch")):
        if os.environ.get("REQUIRE_REAL_DATA") == "1":
            pytest.fail(f"REQUIRE_REAL_DATA=1 but CIFAR-10 is missing from {root}")
        pytest.skip(f"CIFAR-10 not in {root} (run `make data`); required in CI")
    return root
