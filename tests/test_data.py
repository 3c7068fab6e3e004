import os

import pytest
import torch

from replication import data
from replication.config import SMOKE
from replication.data import DataError, augment_batch, load_cifar, stratified_subset, train_batches

from conftest import write_python_layout


def _write(tmp_path, name, ds, n_classes):
    return write_python_layout(str(tmp_path), name, ds.train_x.numpy(), ds.train_y.numpy(), ds.test_x.numpy(),
                               ds.test_y.numpy(), [f"c{i}" for i in range(n_classes)])


@pytest.mark.parametrize("name,n_classes", [("cifar10", 10), ("cifar100", 100)])
def test_reads_the_official_layout(tmp_path, name, n_classes):
    ds = data.synthetic_cifar(n_classes, 6, 3, seed=1)
    _write(tmp_path, name, ds, n_classes)
    got = load_cifar(name, str(tmp_path), verify=False)
    assert torch.equal(got.train_x, ds.train_x) and torch.equal(got.train_y, ds.train_y)
    assert torch.equal(got.test_x, ds.test_x) and got.num_classes == n_classes
    assert got.train_x.dtype == torch.uint8 and got.train_x.shape[1:] == (3, 32, 32)
    assert set(got.provenance["verification"].values()) == {"unverified"}


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_files_that_are_not_the_official_data_are_rejected_with_advice(tmp_path, name):
    ds = data.synthetic_cifar(100 if name == "cifar100" else 10, 2, 1, seed=1)
    _write(tmp_path, name, ds, ds.num_classes)
    with pytest.raises(DataError, match="--no-verify|fetch it again"):
        load_cifar(name, str(tmp_path))


def test_no_verify_flag_reaches_the_loader(tmp_path):
    from replication import cli
    ds = data.synthetic_cifar(10, 2, 1, seed=1)
    _write(tmp_path, "cifar10", ds, 10)
    args = cli.build_parser().parse_args(["train", "--data-dir", str(tmp_path), "--no-verify"])
    cfg = cli.config_from_args(args)
    assert cfg.verify_data is False and cfg.key() == cfg.replace(verify_data=True).key()
    assert len(data.load_dataset(cfg.replace(train_per_class=None, test_per_class=None)).train_y) == 20


def test_missing_data_says_what_to_do(tmp_path):
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", str(tmp_path))
    msg = str(err.value)
    assert "--download" in msg and "make_cifar10.py" in msg and "REPLICATION_DATA" in msg


def test_truncated_file_is_reported_not_crashed(tmp_path):
    ds = data.synthetic_cifar(10, 5, 2, seed=1)
    folder = _write(tmp_path, "cifar10", ds, 10)
    path = os.path.join(folder, "data_batch_3")
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 2])
    with pytest.raises(DataError, match="truncated or corrupted"):
        load_cifar("cifar10", str(tmp_path), verify=False)


def _reference_augment(x, dy, dx, flip, pad=4):
    out = []
    for img, a, b, f in zip(x, dy.tolist(), dx.tolist(), flip.tolist()):
        p = torch.nn.functional.pad(img, (pad,) * 4)[:, a:a + 32, b:b + 32]
        out.append(p.flip(2) if f else p)
    return torch.stack(out)


def test_batched_crop_and_flip_equal_a_per_image_reference():
    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    g = torch.Generator().manual_seed(3)
    twin = torch.Generator()
    twin.set_state(g.get_state())
    got = augment_batch(x, g)
    dy, dx = torch.randint(0, 9, (64,), generator=twin), torch.randint(0, 9, (64,), generator=twin)
    flip = torch.rand(64, generator=twin) < 0.5
    assert flip.any() and (~flip).any()
    assert torch.equal(got, _reference_augment(x, dy, dx, flip))
    assert got.is_contiguous(memory_format=torch.channels_last)  # the layout training feeds the model


def test_pipeline_is_deterministic_per_seed_and_normalised(synthetic):
    def epoch(seed):
        return [(xb.clone(), yb.clone()) for xb, yb in
                train_batches(synthetic.train_x, synthetic.train_y, 32, torch.Generator().manual_seed(seed),
                              normalise=synthetic.normalise)]
    a, b, c = epoch(0), epoch(0), epoch(1)
    assert all(torch.equal(x1, x2) and torch.equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))
    assert not torch.equal(a[0][0], c[0][0])
    assert sum(len(y) for _, y in a) == len(synthetic.train_y)
    flat = torch.cat([x for x, _ in data.eval_batches(synthetic.train_x, synthetic.train_y, 100, normalise=synthetic.normalise)])
    assert flat.dtype == torch.float32 and abs(flat.mean().item()) < 1.5


def test_stratified_subset_takes_n_per_class_reproducibly(synthetic):
    idx = stratified_subset(synthetic.train_y, 7, seed=5)
    assert torch.equal(idx, stratified_subset(synthetic.train_y, 7, seed=5))
    assert torch.bincount(synthetic.train_y[idx]).tolist() == [7] * 10
    assert len(idx.unique()) == len(idx)
    with pytest.raises(ValueError, match="only"):
        stratified_subset(synthetic.train_y, 1000, seed=0)


def test_synthetic_data_is_seeded_and_supports_100_classes():
    a, b = data.synthetic_cifar(100, 2, 1, seed=4), data.synthetic_cifar(100, 2, 1, seed=4)
    assert torch.equal(a.train_x, b.train_x) and a.num_classes == 100
    cfg = SMOKE.replace(synthetic_classes=100)
    assert data.load_dataset(cfg).num_classes == 100


@pytest.mark.realdata
def test_real_cifar10_verifies_by_pixel_fingerprint_or_md5(cifar10_dir):
    ds = load_cifar("cifar10", cifar10_dir)
    assert len(ds.train_y) == 50000 and len(ds.test_y) == 10000
    assert set(ds.provenance["verification"].values()) <= {"official-md5", "pixel-sha256"}
    assert torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.classes[0] == "airplane"


def _lazy_pipeline(x, y, batch_size, generator, limit=None):
    """The pipeline as first written: each batch's crop and flip drawn when the batch is cut."""
    perm = torch.randperm(len(y), generator=generator)
    perm = perm[:limit] if limit is not None else perm
    for start in range(0, len(perm), batch_size):
        idx = perm[start:start + batch_size]
        yield data.CIFAR10_NORMALISATION(augment_batch(x[idx], generator)), y[idx]


@pytest.mark.parametrize("limit", [None, 150])
def test_drawing_a_pass_up_front_changes_no_batch(synthetic, limit):
    # The device-resident pipeline draws a whole pass first; a seed must still mean the same batches and crops.
    got = list(train_batches(synthetic.train_x, synthetic.train_y, 64, torch.Generator().manual_seed(7),
                             limit=limit, normalise=synthetic.normalise))
    want = list(_lazy_pipeline(synthetic.train_x, synthetic.train_y, 64, torch.Generator().manual_seed(7), limit))
    assert len(got) == len(want) > 1
    assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(got, want))


def test_dataset_to_cpu_is_the_same_object(synthetic):
    assert synthetic.to("cpu") is synthetic


def test_each_data_set_carries_its_own_normalisation(synthetic):
    """Batches are standardised with their data set's statistics, not a global: a data set with other statistics
    gets other batches; the CIFAR readers declare Firefly's (CIFAR-10's, for CIFAR-100 too: FF:main.py)."""
    import dataclasses

    from replication.config import DATASETS
    from replication.data import READERS, Normalisation, eval_batches
    from replication.data.cifar import CIFAR10_NORMALISATION, OFFICIAL
    other = dataclasses.replace(synthetic, normalise=Normalisation(mean=(0.5,) * 3, std=(0.25,) * 3))
    ours = next(eval_batches(synthetic.test_x, synthetic.test_y, 8, normalise=synthetic.normalise))[0]
    theirs = next(eval_batches(other.test_x, other.test_y, 8, normalise=other.normalise))[0]
    assert torch.equal(theirs, (synthetic.test_x[:8].float() / 255 - 0.5) / 0.25) and not torch.equal(ours, theirs)
    assert OFFICIAL["cifar10"]["normalisation"] == OFFICIAL["cifar100"]["normalisation"] == CIFAR10_NORMALISATION
    assert CIFAR10_NORMALISATION.mean == (0.4914, 0.4822, 0.4465) and CIFAR10_NORMALISATION.std == (0.2470, 0.2435, 0.2616)
    assert DATASETS == tuple(READERS)  # a config accepts exactly the data sets that have a reader
