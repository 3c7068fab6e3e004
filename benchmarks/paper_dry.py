"""`make paper-dry`: the `paper` preset's growth schedule end to end on a CPU, everything else shortened.

All 11 rounds (10 growth steps) of Firefly's protocol, K = 70 new candidates per layer, ratio 0.30, VGG-19 from 16
channels, for Firefly and ours (lambda = 1), seed 0, on real CIFAR-10 — but a few thousand images, one epoch per
round and one batch for each candidate pass. No width cap is applied: there is none in Firefly's code or in this
project's (a layer grows by at most its own width in splits plus K new neurons per step).

What it tells: the width trajectory Firefly's selection produces over the paper's 10 growth steps (where the
neurons go, hence what each round costs), the candidate network's peak memory at each growth step, and that every
round of the protocol runs. What it does not tell: accuracy (one epoch per round on 2,000 images), or the widths of
a full run exactly — the selection scores come from one short candidate pass on a barely trained network, so a full
run may place its neurons differently. The trajectory (benchmarks/paper_dry.json, committed) is what
`make gpu-check` projects the `paper` study's GPU-hours from, beside the uniform-growth model.

Per round it prints and stores: widths, neurons, parameters, inference MFLOPs per image, seconds of one training
step (batch 128), seconds and peak resident memory of the growth step that made the round (the process's peak
RSS over the step, reset before it through /proc/self/clear_refs; the model and data set are in it too).
`--dry` runs the same code on synthetic data at toy sizes in seconds (tests/test_paper_dry.py).
"""
from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import math
import multiprocessing as mp
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # gpu_check, beside this script
from replication import records as res  # noqa: E402
from replication import train  # noqa: E402
from replication.config import PAPER, SMOKE  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
# The paper preset's schedule (rounds, K, ratio, start width) untouched; only sizes and lengths shortened.
DRY_RUN = PAPER.replace(train_per_class=200, test_per_class=100, epochs_per_round=1,
                        firefly_candidate_images=128, firefly_score_images=128,
                        eval_every_epoch=False, eval_batch_size=500, progress=False, num_threads=1)
TOY = SMOKE.replace(rounds=PAPER.rounds, epochs_per_round=1, firefly_candidate_images=64,
                    firefly_candidate_batch_size=64, num_threads=1)
LAMBDA_OURS = 1.0  # the pre-registered lambda of the fulldata study (docs/method.md)


def _vm(field: str) -> int:
    """A /proc/self/status memory field in bytes (VmHWM: peak RSS since the last reset; VmRSS: now)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


def _measured_grow(steps: list[dict]):
    """`train.grow` wrapped: time and peak RSS of each growth step, appended to `steps`."""
    inner = train.grow

    def grow(model, cfg, ds, birth_round, generator, device):
        before = _vm("VmRSS")
        reset = _reset_peak()
        t = time.perf_counter()
        out = inner(model, cfg, ds, birth_round, generator, device)
        steps.append({"round": birth_round, "seconds": time.perf_counter() - t,
                      "rss_before_gib": before / 2 ** 30,
                      "peak_rss_gib": _vm("VmHWM") / 2 ** 30 if reset else float("nan")})
        return out
    return grow


def run_one(cfg, out_dir: str) -> dict:
    """Train one dry run (a finished one is reused) and return its per-round trajectory."""
    import torch
    steps: list[dict] = []
    train.grow = _measured_grow(steps)
    torch.manual_seed(0)
    t0 = time.perf_counter()
    record = train.run(cfg, results_dir=out_dir, log=lambda *a: None)
    wall = time.perf_counter() - t0
    batches = math.ceil(cfg.train_per_class * 10 / cfg.batch_size) if cfg.train_per_class else None
    by_round = {s["round"]: s for s in steps}
    rounds = []
    for rd in record["rounds"]:
        epochs = [e for e in record["epochs"] if e["round"] == rd["round"]]
        rounds.append({"round": rd["round"], "widths": rd["widths"], "neurons": sum(rd["widths"]),
                       "params": rd["params"], "flops": rd["flops"],
                       "epoch_s": sum(e["time_s"] for e in epochs),
                       "step_s": sum(e["time_s"] for e in epochs) / batches if batches else None,
                       "growth": by_round.get(rd["round"])})
    return {"method": cfg.method, "config_key": cfg.key(), "name": cfg.name(), "wall_s": wall,
            "measured_growth_steps": len(steps), "test_acc": record["final"]["test_acc"], "rounds": rounds}


def table(run: dict) -> str:
    head = (f"{run['method']} ({run['name']}): {len(run['rounds'])} rounds, wall {run['wall_s']:.0f} s\n"
            "| round | neurons | widths | params (M) | MFLOPs/img | epoch incl. test (s) | per batch (s) | growth step "
            "(s) | growth peak RSS (GiB) | above the RSS before it (GiB) |\n|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    for r in run["rounds"]:
        g = r["growth"]
        step = f"{r['step_s']:.3f}" if r["step_s"] is not None else "-"
        grown = (f"{g['seconds']:.1f} | {g['peak_rss_gib']:.2f} | {g['peak_rss_gib'] - g['rss_before_gib']:.2f}"
                 if g else "- | - | -")
        lines.append(f"| {r['round']} | {r['neurons']} | {' '.join(map(str, r['widths']))} | {r['params'] / 1e6:.2f} | "
                     f"{r['flops'] / 1e6:.1f} | {r['epoch_s']:.1f} | {step} | {grown} |")
    return "\n".join(lines)


def protocol_flops(run: dict, cfg=PAPER) -> float:
    """Training FLOPs of a full paper-protocol run at this run's per-round widths: every round `epochs_per_round`
    epochs over CIFAR-10's 50,000 training images, train.TRAIN_FLOPS_PER_MAC FLOPs per forward multiply-accumulate
    (records' `flops`, as models.count_flops counts them), as the records' `train_flops`; growth steps excluded."""
    return sum(cfg.epochs_per_round * 50_000 * train.TRAIN_FLOPS_PER_MAC * rd["flops"] for rd in run["rounds"])


def uniform_flops(cfg=PAPER) -> float:
    """The same for the uniform-growth model of `make gpu-check` (benchmarks/gpu_check.protocol_widths)."""
    from gpu_check import protocol_widths
    from replication.models import build_model, count_flops
    return sum(cfg.epochs_per_round * 50_000 * train.TRAIN_FLOPS_PER_MAC * count_flops(build_model(cfg.arch, w, 10))
               for w in protocol_widths(cfg))


def report_projection(runs: list[dict]) -> None:
    uniform = uniform_flops()
    for r in runs:
        print(f"paper-protocol training FLOPs at {r['method']}'s widths: {protocol_flops(r) / 1e15:.1f} PFLOP "
              f"(uniform-growth model: {uniform / 1e15:.1f} PFLOP; ratio {protocol_flops(r) / uniform:.2f})")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dry", action="store_true", help="synthetic data, toy widths: the code path in seconds")
    p.add_argument("--show", action="store_true", help="print the tables and projection of the stored trajectory "
                                                       "(benchmarks/paper_dry.json) without training")
    p.add_argument("--jobs", type=int, default=2, help="the two runs in parallel processes (default 2)")
    p.add_argument("--out", default=None, help="where the trajectory JSON goes (default benchmarks/paper_dry.json; "
                                               "with --dry nothing is written unless given)")
    p.add_argument("--results", default=os.path.join(REPO, "build", "paper-dry"),
                   help="run records and checkpoints (default build/paper-dry/; a finished run is reused)")
    args = p.parse_args(argv)
    if args.show:
        doc = json.load(open(args.out or os.path.join(HERE, "paper_dry.json")))
        for r in doc["runs"]:
            print(table(r))
        report_projection(doc["runs"])
        return 0
    base = TOY if args.dry else DRY_RUN
    cfgs = [base.replace(method="firefly", seed=0), base.replace(method="ours", lambda_sim=LAMBDA_OURS, seed=0)]
    out_dir = os.path.join(args.results, "toy" if args.dry else "cifar10")
    print(f"paper-dry: {base.rounds} rounds x {base.epochs_per_round} epoch, K = {base.firefly_new_per_layer}, "
          f"ratio {base.grow_ratio}, {base.dataset}, {len(cfgs)} runs on {min(args.jobs, len(cfgs))} process(es) "
          f"-> {out_dir}", flush=True)
    t0 = time.perf_counter()
    if args.jobs > 1:
        with cf.ProcessPoolExecutor(min(args.jobs, len(cfgs)), mp_context=mp.get_context("spawn")) as pool:
            runs = list(pool.map(run_one, cfgs, [out_dir] * len(cfgs)))
    else:
        runs = [run_one(c, out_dir) for c in cfgs]
    for r in runs:
        print(table(r), flush=True)
    if not args.dry:
        report_projection(runs)
    wall = time.perf_counter() - t0
    print(f"paper-dry: done in {wall:.0f} s wall")
    target = args.out or (None if args.dry else os.path.join(HERE, "paper_dry.json"))
    if target and any(r["measured_growth_steps"] == 0 for r in runs) and os.path.isfile(target):
        print(f"paper-dry: the runs were reused from {out_dir}, so no growth step was measured; {target} is kept "
              f"(remove {out_dir} to measure again)")
    elif target:
        doc = {"what": "per-round trajectory of the paper preset's growth schedule, shortened (benchmarks/"
                       "paper_dry.py)", "config": base.result_fields(), "wall_s": wall, "runs": runs,
               "provenance": {"git": res.git_state(), "versions": res.versions(), "time": res.utc_now()}}
        res.atomic_write_text(target, json.dumps(doc, indent=1) + "\n")
        print(f"paper-dry: trajectory -> {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
