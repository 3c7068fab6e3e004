"""`make bench`, part 3: fp32 against bf16 autocast on this CPU, side by side in one run (both channels_last).

Prints img/s of a full training step (forward, backward, SGD with momentum) of the VGG-19 at 16, 32 and 64 channels
in every layer, batch 128, and of one step of Firefly's candidate pass (the candidate network at 16 wide, K = 70),
with the bf16/fp32 speed-up of each. Whether bf16 pays depends on the CPU: oneDNN has native bf16 kernels only with
AVX512_BF16 or AMX (`devices.native_bf16`), and emulates it (often slower than fp32) elsewhere. Figures, never
asserted; the threads are this process's (`--threads`, default all cores).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from replication import devices  # noqa: E402
from replication.growth.candidates import CandidateNetwork  # noqa: E402
from replication.config import FULLDATA  # noqa: E402
from replication.models import build_model  # noqa: E402
from replication.train import LAYOUT, make_optimizer  # noqa: E402

BATCH = 128
CPU = torch.device("cpu")


def seconds_per_step(fn, repeats: int) -> float:
    fn()  # warm-up: oneDNN picks and caches its kernels for the shape
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def training_step(width: int, precision: str):
    torch.manual_seed(0)
    model = build_model("vgg19", [width] * 16, 10).to(memory_format=LAYOUT)
    opt = make_optimizer(model, FULLDATA)
    x = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=LAYOUT)
    y = torch.randint(0, 10, (BATCH,))

    def step():
        with devices.autocast(precision, CPU):
            out = model(x)
        loss = nn.functional.cross_entropy(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def candidate_step(precision: str):
    torch.manual_seed(0)
    model = build_model("vgg19", [16] * 16, 10).to(memory_format=LAYOUT).eval()
    cand = CandidateNetwork(model, FULLDATA, torch.Generator().manual_seed(0))
    params = [t for c in cand.cands for t in c.tensors()]
    opt = torch.optim.RMSprop(params, lr=FULLDATA.firefly_candidate_lr, momentum=FULLDATA.firefly_rmsprop_momentum,
                              alpha=FULLDATA.firefly_rmsprop_alpha)
    x = torch.randn(BATCH, 3, 32, 32).contiguous(memory_format=LAYOUT)
    y = torch.randint(0, 10, (BATCH,))

    def step():
        with devices.autocast(precision, CPU):  # as train.run wraps the growth step
            loss = cand.loss(x, y, 1.0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"\n(3) fp32 vs bf16 autocast, channels_last, batch {BATCH}, {args.threads} thread(s); "
          f"torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}, "
          f"native bf16: {devices.native_bf16()}")
    cases = [(f"training step, VGG-19 at {w} wide", lambda prec, w=w: training_step(w, prec)) for w in (16, 32, 64)]
    cases.append(("Firefly candidate step, 16 wide, K = 70", candidate_step))
    for name, make in cases:
        fp32 = seconds_per_step(make("fp32"), args.repeats)
        bf16 = seconds_per_step(make("bf16"), args.repeats)
        print(f"  {name:42s} fp32 {BATCH / fp32:7.0f} img/s   bf16 {BATCH / bf16:7.0f} img/s   "
              f"bf16/fp32 speed-up {fp32 / bf16:.2f}x")


if __name__ == "__main__":
    main()
