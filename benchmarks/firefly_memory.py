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
from replication.candidates import SCORE_GATE, CandidateNetwork  # noqa: E402
from replication.models import build_model, full_widths  # noqa: E402
from replication.train import LAYOUT  # noqa: E402


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # ru_maxrss is in KiB on Linux


if __name__ == "__main__":
    torch.set_num_threads(os.cpu_count() or 1)
    torch.manual_seed(0)
    model = build_model("vgg19", full_widths("vgg19"), 10).eval().to(memory_format=LAYOUT)
    before = peak_gib()
    cand = CandidateNetwork(model, PAPER, torch.Generator().manual_seed(0))
    x = torch.randn(PAPER.firefly_candidate_batch_size, 3, 32, 32).contiguous(memory_format=LAYOUT)
    y = torch.randint(0, 10, (len(x),))
    t = time.perf_counter()
    cand.loss(x, y, 1.0).backward()
    t_train = time.perf_counter() - t
    t = time.perf_counter()
    for t_ in cand.cands:  # scores are gradients w.r.t. gates or scales only, as in firefly.candidate_scores
        for tensor in t_.tensors():
            tensor.requires_grad_(False)
    gate = 1.0 if PAPER.firefly_score_at == "full" else SCORE_GATE
    loss = cand.loss(x, y, gate, score=PAPER.firefly_score_at)
    torch.autograd.grad(loss, cand.score_inputs())
    t_score = time.perf_counter() - t
    print(f"Firefly candidate step at full VGG-19 widths (K={PAPER.firefly_new_per_layer}, batch {len(x)}): peak RSS "
          f"{peak_gib():.2f} GiB (process with the model: {before:.2f} GiB); training step {t_train:.1f}s, "
          f"scoring step ({PAPER.firefly_score_at}) {t_score:.1f}s ({torch.get_num_threads()} threads)")
