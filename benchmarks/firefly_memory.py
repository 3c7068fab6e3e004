"""`make bench`, part 2: peak memory of one Firefly candidate step at full VGG-19 widths (printed, never asserted).

Full widths bound what the `paper` preset's grown networks reach (Firefly's ratio 0.30 grows 256 neurons to about
3,500 of the full net's 5,504). One training step and one scoring step of the candidate network, K = 70, on a batch
of `firefly_candidate_batch_size` images: the largest allocation of a growth step. Its own process, so that the
peak resident set size is this step's alone.
"""
from __future__ import annotations

import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from replication.config import PAPER  # noqa: E402
from replication.growth.candidates import SCORE_GATE, CandidateNetwork  # noqa: E402
from replication.models import build_model, full_widths  # noqa: E402
from replication.train import LAYOUT  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # ru_maxrss is in KiB on Linux


def candidate_step(model, cfg, batch_size: int) -> tuple[float, float]:
    """One training step and one scoring step of `model`'s candidate network (as firefly.candidate_scores scores:
    gradients w.r.t. gates or scales only) on a random batch on the model's device; seconds of each. gpu_check.py
    measures the same step's peak GPU memory."""
    device = next(model.parameters()).device
    cand = CandidateNetwork(model, cfg, torch.Generator().manual_seed(0))
    x = torch.randn(batch_size, 3, 32, 32, device=device).contiguous(memory_format=LAYOUT)
    y = torch.randint(0, 10, (batch_size,), device=device)
    t = time.perf_counter()
    cand.loss(x, y, 1.0).backward()
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    for c in cand.cands:
        for tensor in c.tensors():
            tensor.requires_grad_(False)
    gate = 1.0 if cfg.firefly_score_at == "full" else SCORE_GATE
    torch.autograd.grad(cand.loss(x, y, gate, score=cfg.firefly_score_at), cand.score_inputs())
    return t_train, time.perf_counter() - t


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = build_model("vgg19", full_widths("vgg19"), 10).eval().to(memory_format=LAYOUT)
    before = peak_gib()
    t_train, t_score = candidate_step(model, PAPER, PAPER.firefly_candidate_batch_size)
    print(f"Firefly candidate step at full VGG-19 widths (K={PAPER.firefly_new_per_layer}, batch "
          f"{PAPER.firefly_candidate_batch_size}): peak RSS {peak_gib():.2f} GiB (process with the model: "
          f"{before:.2f} GiB); training step {t_train:.1f}s, scoring step ({PAPER.firefly_score_at}) {t_score:.1f}s "
          f"({torch.get_num_threads()} threads)")
