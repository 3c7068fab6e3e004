"""`make bench`: throughput and overhead figures printed, never asserted (targets are in the README).

(1) training img/s of one model: (a) bare model on tensors already in memory, (b) the project's pipeline
    (uint8 in memory, batched crop/flip/normalise), (c) a torchvision DataLoader with per-sample PIL transforms;
(2) one Firefly growth step vs one training epoch at the same width;
(3) similarity-constraint overhead per training step at the 16-wide start and at full VGG-19 widths: exact, its
    floor (one Gram matmul per layer, the forward alone), and the row-sampled estimate.
Uses real CIFAR-10 when present in the data dir, else synthetic images of the same shape.
"""
from __future__ import annotations

import os
import statistics
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from replication import data as data_mod  # noqa: E402
from replication.config import QUICK  # noqa: E402
from replication.models import build_model, full_widths  # noqa: E402
from replication.similarity import constraint, neuron_rows  # noqa: E402
from replication.growth.registry import grow  # noqa: E402
from replication.train import LAYOUT, make_optimizer, train_epoch  # noqa: E402

BATCH = 128
N_IMAGES = 4096


def step(model, opt, x, y, extra=None):
    """One training step as `train.train_epoch` takes it (channels_last), plus an optional loss term."""
    loss = nn.functional.cross_entropy(model(x.contiguous(memory_format=LAYOUT)), y)
    if extra is not None:
        loss = loss + extra(model)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def img_per_s(fn, n_images, repeats=2):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_images / best


def dataset():
    try:
        return data_mod.load_dataset(QUICK.replace(train_per_class=N_IMAGES // 10, test_per_class=100))
    except data_mod.DataError:
        print("(CIFAR-10 not found: synthetic images of the same shape)")
        return data_mod.synthetic_cifar(10, N_IMAGES // 10, 100)


def pipeline_bench(ds, widths):
    torch.manual_seed(0)
    model = build_model("vgg19", widths, 10).to(memory_format=LAYOUT)
    opt = make_optimizer(model, QUICK)
    x_f = ds.normalise(ds.train_x[:BATCH]).contiguous(memory_format=LAYOUT)  # as training feeds it
    y_f = ds.train_y[:BATCH]
    n_batches = len(ds.train_y) // BATCH

    def bare():
        for _ in range(n_batches):
            step(model, opt, x_f, y_f)

    def ours():
        g = torch.Generator().manual_seed(0)
        for x, y in data_mod.train_batches(ds.train_x, ds.train_y, BATCH, g, drop_last=True, normalise=ds.normalise):
            step(model, opt, x, y)

    def torchvision_loader():
        import torchvision.transforms as T
        from PIL import Image

        tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                        T.Normalize(ds.normalise.mean, ds.normalise.std)])
        imgs = ds.train_x.permute(0, 2, 3, 1).numpy()

        class PilSet(torch.utils.data.Dataset):
            def __len__(self):
                return len(imgs)

            def __getitem__(self, i):
                return tf(Image.fromarray(imgs[i])), int(ds.train_y[i])
        loader = torch.utils.data.DataLoader(PilSet(), batch_size=BATCH, shuffle=True, drop_last=True)
        for x, y in loader:
            step(model, opt, x, y)

    n = n_batches * BATCH
    a, b, c = img_per_s(bare, n), img_per_s(ours, n), img_per_s(torchvision_loader, n)
    print(f"VGG-19 widths {widths[0]}..{widths[-1]} ({torch.get_num_threads()} threads), img/s:")
    print(f"  (a) bare model, tensors in memory : {a:8.0f}")
    print(f"  (b) project pipeline             : {b:8.0f}   b/a = {b / a:.2f}  (target >= 0.9)")
    print(f"  (c) torchvision DataLoader + PIL : {c:8.0f}   b/c = {b / c:.2f}  (target >= 2)")


def growth_bench(ds):
    cfg = QUICK.replace(progress=False)
    torch.manual_seed(0)
    model = build_model("vgg19", [16] * 16, 10)
    opt = make_optimizer(model, cfg)
    t = time.perf_counter()
    train_epoch(model, opt, ds, cfg, torch.Generator().manual_seed(0), "cpu", None)
    epoch_s = time.perf_counter() - t
    t = time.perf_counter()
    info = grow(model, cfg, ds, 1, torch.Generator().manual_seed(1), "cpu")
    grow_s = time.perf_counter() - t
    print(f"Firefly growth step at 16-wide VGG-19 (K={cfg.firefly_new_per_layer}, "
          f"{cfg.firefly_candidate_images} candidate images x 2 passes, {info['added']} neurons added): "
          f"{grow_s:.1f}s vs one epoch over {len(ds.train_y)} images: {epoch_s:.1f}s -> ratio {grow_s / epoch_s:.2f} "
          f"(target <= 1)")
    print(f"  the candidate pass sees {cfg.firefly_candidate_images} of {len(ds.train_y)} images; at "
          f"candidate_images = epoch size the ratio would be ~{grow_s / epoch_s * len(ds.train_y) / cfg.firefly_candidate_images:.1f}")


SAMPLE_ROWS = (64, 32)  # rows per layer of the stochastic estimates reported here (choices for this bench)


def similarity_bench(widths, label, batch=BATCH):
    """Steps with and without each constraint term, interleaved so that drifts of the machine hit all alike;
    overheads from the medians."""
    torch.manual_seed(0)
    model = build_model("vgg19", widths, 10).to(memory_format=LAYOUT)
    opt = make_optimizer(model, QUICK)
    x, y = torch.randn(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def gram_only(m):  # the floor of any exact computation: C = Wn Wn^T once per layer, no backward
        with torch.no_grad():
            for u in m.units():
                w = neuron_rows(u.conv.weight)
                w @ w.T
        return 0.0

    terms = {"plain": None, "exact (fused backward)": lambda m: constraint(m, "decorrelate", "all", 0),
             "floor: one Gram matmul per layer": gram_only}
    for rows in SAMPLE_ROWS:
        if max(widths) > rows:
            terms[f"row-sampled, {rows} rows per layer"] = (
                lambda m, rows=rows: constraint(m, "decorrelate", "all", 0, sample_rows=rows))
    reps = 7 if widths[-1] > 256 else 25
    times = {name: [] for name in terms}
    for _ in range(reps + 1):  # the first round warms up
        for name, term in terms.items():
            times[name].append(_time(lambda: step(model, opt, x, y, term)))
    median = {name: statistics.median(t[1:]) for name, t in times.items()}
    print(f"similarity constraint, {label}: plain step {median['plain'] * 1e3:.0f} ms (batch {batch}, median of {reps})")
    for name in list(terms)[1:]:
        print(f"  {name:<36}: {median[name] * 1e3:6.0f} ms, overhead "
              f"{100 * (median[name] / median['plain'] - 1):5.1f}% (target <= 5%)")


def _time(fn):
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    ds = dataset()
    pipeline_bench(ds, [16] * 16)
    growth_bench(ds)
    similarity_bench([16] * 16, "16-wide VGG-19")
    similarity_bench(full_widths("vgg19"), "full VGG-19 widths (the paper's scale)")
