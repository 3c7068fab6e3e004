"""`make gpu-check`: is the paper protocol feasible on this GPU, and does the GPU path agree with the CPU path?

On a CUDA machine (`--device cuda`, about 5-8 minutes on one H100/H200-class GPU):
  1. the smoke preset on cuda and on cpu: per-epoch losses within a stated tolerance, and on a constructed growth
     case (one Firefly step from the same state) the scores agree and the same widths are chosen;
  2. training img/s (the real path: device-resident uint8 data, on-device crop/flip, no host sync per step) at the
     16-wide start, at each round's widths of the paper protocol and at full VGG-19 widths, batch 128, for each
     precision; the similarity constraint's overhead at full widths; torch.compile's compile time and gain;
  3. one Firefly growth step at the widths of a mid-protocol round (candidate and scoring passes timed over a number
     of batches and scaled to Firefly's full passes), and the peak GPU memory of the candidate net at full widths;
  4. the projected wall time of one paper-protocol Firefly run and of the whole `paper` study, from two width
     trajectories: uniform growth (a model) and the Firefly run of `make paper-dry` (benchmarks/paper_dry.json, the
     paper schedule's real 11 rounds on a CPU, shortened), whose late-round widths also size section 3's memory.
Figures are printed, never asserted. `--device cpu --dry` runs every section at toy sizes in seconds: `make test`
runs it (tests/test_gpu_check.py) so that the script cannot rot; its figures mean nothing.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # firefly_memory, beside this script
from firefly_memory import candidate_step  # noqa: E402
from replication import data as data_mod  # noqa: E402
from replication import devices  # noqa: E402
from replication.config import PAPER, SMOKE  # noqa: E402
from replication.growth.firefly import candidate_scores, firefly_grow  # noqa: E402
from replication.models import build_model, full_widths, widths_of  # noqa: E402
from replication.experiments import plan  # noqa: E402
from replication.train import LAYOUT, make_optimizer, run, train_epoch  # noqa: E402

CIFAR_TRAIN, CIFAR_TEST = 50_000, 10_000
# Tolerance of section 1: float32 kernels differ between devices in their last bits, and 4 epochs of SGD amplify
# that; a real defect (a wrong crop, a missing normalisation) moves the smoke losses by far more than 2 %.
LOSS_RTOL = 0.02


PAPER_DRY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "paper_dry.json")


def measured_widths(path: str = PAPER_DRY, method: str = "firefly") -> list[list[int]] | None:
    """Per-round widths of `make paper-dry`'s run of `method` (None when it has not run or ran another schedule)."""
    if not os.path.isfile(path):
        return None
    doc = json.load(open(path))
    if doc["config"]["rounds"] != PAPER.rounds or doc["config"]["arch"] != PAPER.arch:
        return None
    runs = {r["method"]: r for r in doc["runs"]}
    return [rd["widths"] for rd in runs[method]["rounds"]] if method in runs else None


def protocol_widths(cfg=PAPER) -> list[list[int]]:
    """Per-round widths of a paper-protocol run under uniform growth: round r has 256 * (1 + ratio)^r neurons,
    spread evenly and capped at the full widths. Firefly places neurons unevenly and grows no layer to a cap, so this
    is a model of the cost, stated as such in the output (paper-dry measured Firefly's trajectory: its training
    FLOPs over the paper protocol are 0.66 of this model's, docs/performance.md)."""
    full = full_widths(cfg.arch)
    out = []
    for r in range(cfg.rounds):
        w = cfg.start_width * (1 + cfg.grow_ratio) ** r
        out.append([min(f, max(cfg.start_width, round(w))) for f in full])
    return out


def synthetic_on(device, n_train: int, n_test: int):
    return data_mod.synthetic_cifar(10, max(1, n_train // 10), max(1, n_test // 10)).to(device)


def timed(fn, device) -> float:
    devices.synchronize(device)
    t = time.perf_counter()
    fn()
    devices.synchronize(device)
    return time.perf_counter() - t


# -- 1 -----------------------------------------------------------------------------------------------------------
def compare_devices(device, log):
    log(f"1. smoke preset on {device} vs cpu (tolerance: per-epoch train loss within {LOSS_RTOL:.0%})")
    cfg = SMOKE.replace(method="firefly", epochs_per_round=2)
    with tempfile.TemporaryDirectory() as tmp:
        a = run(cfg, os.path.join(tmp, "cpu"), "cpu", log=lambda *x: None)
        b = run(cfg, os.path.join(tmp, "dev"), device, log=lambda *x: None)
    worst = max(abs(x["train_loss"] - y["train_loss"]) / abs(x["train_loss"]) for x, y in zip(a["epochs"], b["epochs"]))
    log(f"   per-epoch train loss, worst relative difference {worst:.2e} -> {'OK' if worst <= LOSS_RTOL else 'FAIL'}")
    log(f"   final widths cpu {a['final']['widths']} vs {device} {b['final']['widths']}")
    # The constructed growth case: one Firefly step from the same state; selection is compared where the scores
    # leave a margin at the cut larger than their cross-device difference.
    torch.manual_seed(0)
    ds = data_mod.synthetic_cifar(10, 32, 8)
    model = build_model("vgg11", [6] * 8, 10)
    grown = {}
    for dev in ("cpu", device):
        m = build_model("vgg11", [6] * 8, 10).to(dev, memory_format=LAYOUT)
        m.load_state_dict(model.state_dict())
        c = cfg.replace(firefly_new_per_layer=4, firefly_candidate_images=128)
        _, scores = candidate_scores(m, ds.to(dev), c, torch.Generator().manual_seed(1), torch.device(dev))
        flat = torch.cat([torch.cat([s, n]) for s, n in scores]).cpu()
        firefly_grow(m, ds.to(dev), c, torch.Generator().manual_seed(1), 1, torch.device(dev))
        grown[dev] = (flat, widths_of(m))
    diff = (grown["cpu"][0] - grown[device][0]).abs().max().item()
    sorted_scores = grown["cpu"][0].sort().values
    log(f"   growth case: scores differ by at most {diff:.2e} (score scale {sorted_scores.abs().max():.2e}); widths "
        f"cpu {grown['cpu'][1]} vs {device} {grown[device][1]} -> "
        f"{'OK' if grown['cpu'][1] == grown[device][1] else 'DIFFERENT'}")


# -- 2 -----------------------------------------------------------------------------------------------------------
def throughput(widths, device, precision, n_images, cfg=PAPER, with_constraint=False) -> float:
    """img/s of `train.train_epoch` (the real training path) over `n_images` device-resident images."""
    torch.manual_seed(0)
    ds = synthetic_on(device, n_images, 10)
    c = cfg.replace(progress=False, precision=precision)
    if with_constraint:
        c = c.replace(method="ours", lambda_sim=1.0)
    model = build_model(c.arch, widths, 10).to(device, memory_format=LAYOUT)
    opt = make_optimizer(model, c)
    devices.configure(precision, device, c.cudnn_benchmark)
    sim_round = 1 if with_constraint else None

    def epoch():
        train_epoch(model, opt, ds, c, torch.Generator().manual_seed(0), device, sim_round)
    epoch()  # warm-up: cuDNN's algorithm search, allocator
    return n_images / timed(epoch, device)


def measure_training(device, dry, log) -> dict:
    precisions = ["fp32", "bf16"] + (["tf32"] if device.type == "cuda" else [])
    n = 512 if dry else 128 * 60
    full = full_widths("vgg19")
    rounds = protocol_widths()
    if dry:
        full = [max(16, w // 16) for w in full]
        rounds = rounds[:2]
    log(f"2. training img/s, batch 128, {n} images per timing ({'toy widths: dry run' if dry else 'VGG-19'})")
    ips = {}
    for p in precisions:
        for name, w in (("16-wide start", [16] * 16), ("full widths", full)):
            ips[(p, name)] = throughput(w, device, p, n)
            log(f"   {p:5s} {name:14s}: {ips[(p, name)]:9.0f} img/s")
    per_round = [throughput(w, device, "fp32", n) for w in rounds]
    for r, (w, v) in enumerate(zip(rounds, per_round)):
        log(f"   fp32 round {r:2d} uniform widths ~{w[0]:3d}..{max(w):3d}: {v:9.0f} img/s")
    measured = measured_widths()
    per_round_measured = None
    if measured is not None:
        if dry:
            measured = [[max(4, w // 16) for w in ws] for ws in measured[:2]]
        per_round_measured = [throughput(w, device, "fp32", n) for w in measured]
        for r, (w, v) in enumerate(zip(measured, per_round_measured)):
            log(f"   fp32 round {r:2d} paper-dry widths ({sum(w):4d} neurons): {v:9.0f} img/s")
    else:
        log("   (no benchmarks/paper_dry.json: run `make paper-dry` for the measured trajectory)")
    with_sim = throughput(full, device, "fp32", n, with_constraint=True)
    overhead = ips[("fp32", "full widths")] / with_sim - 1
    log(f"   similarity constraint (exact, all layers) at full widths: +{overhead:.1%} per step (target <= 5 %)")
    compile_figures(device, dry, rounds[len(rounds) // 2], n, log)
    return {"per_round": per_round, "per_round_measured": per_round_measured, "full": ips[("fp32", "full widths")],
            "overhead": overhead}


def compile_figures(device, dry, widths, n, log):
    if dry:
        log("   torch.compile: skipped in the dry run (a CPU compile takes about a minute per round)")
        return
    eager = throughput(widths, device, "fp32", n)
    cfg = PAPER.replace(progress=False)
    torch.manual_seed(0)
    ds = synthetic_on(device, n, 10)
    model = build_model(cfg.arch, widths, 10).to(device, memory_format=LAYOUT)
    opt = make_optimizer(model, cfg)
    compiled = torch.compile(model, dynamic=False)
    first = timed(lambda: train_epoch(model, opt, ds, cfg, torch.Generator().manual_seed(0), device, None,
                                      step_model=compiled), device)
    steady = timed(lambda: train_epoch(model, opt, ds, cfg, torch.Generator().manual_seed(0), device, None,
                                       step_model=compiled), device)
    compile_s = first - steady
    saved_per_epoch = (CIFAR_TRAIN / eager) - CIFAR_TRAIN / (n / steady)
    log(f"   torch.compile at mid widths: compile {compile_s:.0f} s per round, {n / steady:.0f} vs {eager:.0f} img/s "
        f"eager -> over {PAPER.epochs_per_round} epochs per round it saves "
        f"{saved_per_epoch * PAPER.epochs_per_round - compile_s:+.0f} s")


# -- 3 -----------------------------------------------------------------------------------------------------------
def measure_growth(device, dry, log) -> float:
    mid = protocol_widths()[PAPER.rounds // 2]
    if dry:
        mid = [8] * 16
    steps = 2 if dry else 40
    cfg = PAPER.replace(progress=False, firefly_candidate_images=steps * 128)
    ds = synthetic_on(device, steps * 128, 10)
    torch.manual_seed(0)
    model = build_model("vgg19", mid, 10).to(device, memory_format=LAYOUT)
    t = timed(lambda: firefly_grow(model, ds, cfg, torch.Generator().manual_seed(0), 1, device), device)
    per_firefly_step = t / steps * math.ceil(CIFAR_TRAIN / 128)  # Firefly: one pass of each over the training set
    log(f"3. Firefly growth step at mid-protocol widths ~{mid[0]} (K={cfg.firefly_new_per_layer}): {t:.1f} s for "
        f"{steps} + {steps} batches -> {per_firefly_step:.0f} s for Firefly's two full passes")
    memory_peak(device, dry, log)
    return per_firefly_step


def memory_peak(device, dry, log):
    sizes = {"full VGG-19 widths": full_widths("vgg19")}
    measured = measured_widths()
    if measured is not None:  # the last growth step of the paper schedule acts on the widths of round 9
        sizes[f"paper-dry round {len(measured) - 2} widths ({sum(measured[-2])} neurons)"] = measured[-2]
    for name, widths in sizes.items():
        if dry:
            widths = [max(4, w // 64) for w in widths]
        torch.manual_seed(0)
        model = build_model("vgg19", widths, 10).eval().to(device, memory_format=LAYOUT)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        candidate_step(model, PAPER, 128)
        if device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(device) / 2 ** 30
            log(f"   candidate net at {name}, K={PAPER.firefly_new_per_layer}, batch 128: peak GPU memory "
                f"{peak:.2f} GiB")
        else:
            log(f"   candidate net at {name}: CPU peak memory in `make bench` (firefly_memory.py) and docs/"
                "performance.md (paper-dry)")


# -- 4 -----------------------------------------------------------------------------------------------------------
def project(train: dict, growth_mid_s: float, dry, log):
    """Seconds of one paper-protocol Firefly run and GPU-hours of the whole `paper` study, from the figures: for the
    uniform-growth widths, and for paper-dry's measured widths when there are any (both are printed)."""
    out = project_widths(train["per_round"], train, growth_mid_s, dry, log, "uniform-growth widths, a model: "
                         "paper-dry's Firefly run put most neurons in the late, 2x2 and 4x4 layers and cost less")
    if train.get("per_round_measured"):
        out = project_widths(train["per_round_measured"], train, growth_mid_s, dry, log,
                             "paper-dry's measured Firefly widths (benchmarks/paper_dry.json)")
    return out


def project_widths(per_round: list[float], train: dict, growth_mid_s: float, dry, log, what: str):
    if dry:  # the dry run times two rounds; repeat the last for the projection's arithmetic
        per_round = per_round + [per_round[-1]] * (PAPER.rounds - len(per_round))
    epoch_s = [CIFAR_TRAIN / v + CIFAR_TEST / (3 * v) for v in per_round]  # evaluation ~ a third of a train step
    mid = PAPER.rounds // 2
    growth_s = [growth_mid_s * epoch_s[r] / epoch_s[mid] for r in range(1, PAPER.rounds)]  # scales like training
    firefly_s = sum(e * PAPER.epochs_per_round for e in epoch_s) + sum(growth_s)
    ours_s = firefly_s + train["overhead"] * sum(e * PAPER.epochs_per_round for e in epoch_s[1:])
    random_s = firefly_s - sum(growth_s)
    fixed_compact_s = epoch_s[0] * PAPER.rounds * PAPER.epochs_per_round
    fixed_full_s = (CIFAR_TRAIN / train["full"] + CIFAR_TEST / (3 * train["full"])) * PAPER.rounds * PAPER.epochs_per_round
    fixed_final_s = epoch_s[-1] * PAPER.rounds * PAPER.epochs_per_round
    cost = {"firefly": firefly_s, "ours": ours_s, "random": random_s, "split": random_s}
    paper = plan("paper")
    runs = [c for ds in paper.datasets for c in paper.main_configs(ds)]
    runs += paper.ablation_configs("cifar10") + paper.from_round0_configs("cifar10")
    runs = list(dict.fromkeys(runs))
    total = 0.0
    for c in runs:
        if c.method == "fixed":
            total += fixed_full_s if c.start_width is None else fixed_compact_s
        else:
            total += cost[c.method]
            if c.method == "firefly" and c.firefly_score_at == "full" and c.firefly_new_to_new:
                total += fixed_final_s  # its follow-up: a fixed net at its final widths
    log(f"4. projection ({what}): one paper-protocol Firefly run {firefly_s / 3600:.2f} h (target <= 2 h); the whole `paper` study "
        f"({len(runs)} runs + follow-ups) {total / 3600:.1f} GPU-hours (target <= 48)")
    return firefly_s, total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (the check) or cpu (with --dry: the code path only)")
    p.add_argument("--dry", action="store_true", help="toy sizes: every section runs in seconds")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("error: no CUDA device here; run `make gpu-check` on a GPU machine, or "
              "`python benchmarks/gpu_check.py --device cpu --dry` to exercise the script", file=sys.stderr)
        return 2
    if device.type == "cpu" and not args.dry:
        print("error: the figures are meant for a GPU; on a CPU use --dry", file=sys.stderr)
        return 2

    def log(msg):
        print(msg, flush=True)
    t0 = time.perf_counter()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (dry run)"
    log(f"gpu-check on {name}, torch {torch.__version__}")
    compare_devices(device, log)
    train = measure_training(device, args.dry, log)
    growth = measure_growth(device, args.dry, log)
    project(train, growth, args.dry, log)
    log(f"gpu-check took {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
