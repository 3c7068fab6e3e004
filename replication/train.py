"""The training loop: rounds of epochs, a growth step between rounds, checkpoints every epoch, one record per run.

Randomness is explicit: the model init uses the run seed, and every epoch, growth step and candidate pass draws
from its own generator seeded by (seed, what, round, epoch). Resuming therefore needs only the weights, the
optimiser state and the position, and a resumed run ends with exactly the metrics of an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import fractions
import hashlib
import io
import math
import os
import time

import torch
from torch import nn

from . import data as data_mod
from . import devices
from . import records as res
from .config import Config
from .growth.primitives import carry_optimizer_state, snapshot_params
from .models import build_model, count_flops, count_params, initial_widths, widths_of
from .progress import progress
from .similarity import constraint, model_stats
from .growth.registry import grow

TRAIN_FLOPS_PER_MAC = 6  # 1 MAC = 2 FLOPs forward; backward ~2x forward (standard estimate, docs/method.md)
# Activations and conv weights in NHWC order: oneDNN's convolutions run 20-40 % faster on this project's CPU
# (docs/performance.md), and cuDNN prefers it too. Only the layout changes, never a shape or a value.
LAYOUT = torch.channels_last


class TrainingDiverged(RuntimeError):
    pass


class CheckpointMismatch(RuntimeError):
    pass


def configure_threads(n: int | None) -> int:
    n = n or os.cpu_count() or 1
    torch.set_num_threads(n)
    return n


def seed_for(seed: int, *parts) -> int:
    blob = ":".join(str(p) for p in (seed, *parts)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


def generator_for(seed: int, *parts) -> torch.Generator:
    return torch.Generator().manual_seed(seed_for(seed, *parts))


def make_optimizer(model: nn.Module, cfg: Config) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                           weight_decay=cfg.weight_decay)


def lr_drop_epochs(cfg: Config) -> list[int]:
    """0-indexed epochs of a round from which each lr drop applies.

    A milestone p/q of a round of E epochs drops after 1-indexed epoch E // q * p + lr_milestone_shift: with
    (1/2, 3/4) and shift -1 this is Firefly's E//2 - 1 and E//4*3 - 1 (FF:main.py:124-128), 79/40/41 epochs of 160.
    Like Firefly's loop, a drop that would apply from epoch 0 never fires."""
    drops = []
    for m in cfg.lr_milestones:
        frac = fractions.Fraction(m).limit_denominator(1000)
        drops.append(cfg.epochs_per_round // frac.denominator * frac.numerator + cfg.lr_milestone_shift)
    return [d for d in drops if d >= 1]


def lr_at(cfg: Config, epoch_in_round: int) -> float:
    """Step schedule restarted every round: x lr_gamma from each drop epoch on."""
    passed = sum(epoch_in_round >= d for d in lr_drop_epochs(cfg))
    return cfg.lr * cfg.lr_gamma ** passed


@torch.no_grad()
def evaluation_sums(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device,
                    precision: str = "fp32", *, normalise) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed loss, correct count) on uint8 images x standardised by `normalise` (their data set's
    `Dataset.normalise`) and labels y, left on the device: the compute of `evaluate` without its read."""
    was_training = model.training
    model.eval()
    device = torch.device(device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for xb, yb in data_mod.eval_batches(x, y, batch_size, normalise=normalise):
        xb, yb = xb.to(device, memory_format=LAYOUT), yb.to(device)
        with devices.autocast(precision, device):
            out = model(xb)
        # float64 sums of the float32 per-batch values: the same additions, in the same order, as summing Python
        # floats of .item() (the project's first loop), so records stay bit-identical without a sync per batch.
        loss_sum += nn.functional.cross_entropy(out.float(), yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    return loss_sum, correct


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int, device,
             precision: str = "fp32", *, normalise) -> tuple[float, float]:
    """(mean loss, top-1) on (x, y); the sums stay on the device and are read once."""
    loss_sum, correct = evaluation_sums(model, x, y, batch_size, device, precision, normalise=normalise)
    return loss_sum.item() / len(y), correct.item() / len(y)


def train_epoch(model, optimizer, ds, cfg: Config, generator, device, sim_round: int | None, desc="",
                step_model: nn.Module | None = None) -> dict:
    """One pass over the training split; `sim_round` (not None) switches the similarity constraint on.

    Nothing is read back to the host inside the pass: the loss, accuracy and constraint sums stay on the device
    and are read once at its end. So a non-finite loss is caught at the end of the epoch in which it appears (at
    most one epoch late; before the checkpoint, so no diverged state is ever saved). `step_model` is the module
    the forward pass calls (a torch.compile'd `model`), default `model`."""
    loss_sum, sim_sum, correct, seen = train_epoch_sums(model, optimizer, ds, cfg, generator, device, sim_round,
                                                        desc, step_model)
    sums = torch.stack([loss_sum, sim_sum, correct.double()]).tolist()  # the epoch's one read-back
    if not all(math.isfinite(v) for v in sums[:2]):
        raise TrainingDiverged(f"the loss became non-finite during {desc or 'an epoch'} (loss sum {sums[0]}, "
                               f"constraint sum {sums[1]}): lower lr or lambda_sim")
    return {"train_loss": sums[0] / seen, "train_acc": int(sums[2]) / seen,
            "sim_loss": sums[1] / seen if sim_round is not None else None}


def train_epoch_sums(model, optimizer, ds, cfg: Config, generator, device, sim_round: int | None, desc="",
                     step_model: nn.Module | None = None) -> tuple:
    """The compute of `train_epoch` without its read-back: (loss sum, constraint sum, correct count) on the device,
    and the number of images seen."""
    model.train()
    device = torch.device(device)
    step_model = model if step_model is None else step_model
    n_batches = math.ceil(len(ds.train_y) / cfg.batch_size)
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    sim_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = 0
    batches = data_mod.train_batches(ds.train_x, ds.train_y, cfg.batch_size, generator, cfg.augment,
                                     normalise=ds.normalise)
    for xb, yb in progress(batches, n_batches, desc, cfg.progress):
        xb, yb = xb.to(device, memory_format=LAYOUT), yb.to(device)
        with devices.autocast(cfg.precision, device):
            out = step_model(xb)
        loss = nn.functional.cross_entropy(out.float(), yb)
        total = loss
        if sim_round is not None:  # in fp32 outside autocast: bf16 cannot resolve similarities near 0
            sim = constraint(model, cfg.sim_variant, cfg.sim_scope, sim_round, cfg.sim_sample_rows)
            total = loss + cfg.lambda_sim * sim
            sim_sum += sim.detach().double() * len(yb)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        loss_sum += loss.detach().double() * len(yb)
        correct += (out.argmax(1) == yb).sum()
        seen += len(yb)
    return loss_sum, sim_sum, correct, seen


def checkpoint_path(cfg: Config, results_dir: str) -> str:
    return os.path.join(results_dir, "checkpoints", cfg.name() + ".pt")


def round0_path(cfg: Config, results_dir: str) -> str | None:
    """The shared end-of-round-0 state of every run with this config's `round0_key` (None: not shared)."""
    key = cfg.round0_key()
    return os.path.join(results_dir, "round0", f"{cfg.dataset}-{cfg.arch}-s{cfg.seed}-{key}.pt") if key else None


def model_path(cfg: Config, results_dir: str) -> str:
    return os.path.join(results_dir, "runs", cfg.name() + ".pt")


def _atomic_save(obj, path: str) -> None:
    """torch.save through a unique temporary file and a rename (res.atomic_write_bytes): two runs may write the same
    shared round-0 state, and a full disk leaves one clear error and no temporary file."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    res.atomic_write_bytes(path, buf.getvalue())


def load_model(cfg: Config, results_dir: str, num_classes: int, device="cpu") -> nn.Module:
    """The trained (grown) model of a finished run, rebuilt from its stored widths."""
    path = model_path(cfg, results_dir)
    state = res.load_state(path, f"delete it and {res.run_path(cfg, results_dir)} to train that run again", device)
    if state["config_key"] != cfg.key():
        raise CheckpointMismatch(f"{model_path(cfg, results_dir)} belongs to another config")
    model = build_model(cfg.arch, state["widths"], num_classes).to(device)
    model.load_state_dict(state["model"])
    return model.eval()


def _round_summary(model, r, growth, train_flops, test_acc) -> dict:
    return {"round": r, "widths": widths_of(model), "params": count_params(model), "flops": count_flops(model),
            "train_flops": train_flops, "growth": growth, "test_acc": test_acc, "similarity": model_stats(model)}


def run(cfg: Config, results_dir: str = "results", device: str | torch.device = "cpu", resume: bool = True,
        ds: data_mod.Dataset | None = None, stop_after_epochs: int | None = None, log=print) -> dict | None:
    """Train (and grow) one run; return its record. `stop_after_epochs` simulates a kill (returns None)."""
    cached = res.load_cached(cfg, results_dir)
    if cached is not None:
        return cached
    device = torch.device(device)
    devices.configure(cfg.precision, device, cfg.cudnn_benchmark)  # a bad precision fails here
    notice = devices.precision_notice(cfg.precision, device)
    if notice:
        log(f"[{cfg.name()}] {notice}")
    shared = round0_path(cfg, results_dir)
    res.require_writable(*(os.path.join(results_dir, d) for d in ("runs", "checkpoints", "locks")),
                         *([os.path.dirname(shared)] if shared else []))
    with res.run_lock(cfg.name(), results_dir, log):
        cached = res.load_cached(cfg, results_dir)  # trained meanwhile by the process that held the lock
        if cached is not None:
            return cached
        return _train(cfg, results_dir, device, resume, ds, stop_after_epochs, log)


def _train(cfg: Config, results_dir: str, device: torch.device, resume: bool, ds, stop_after_epochs, log):
    threads = configure_threads(cfg.num_threads)
    # The uint8 data set moves to the device once; batches are then cut and augmented there (data.train_batches).
    ds = (ds if ds is not None else data_mod.load_dataset(cfg)).to(device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.arch, initial_widths(cfg), ds.num_classes, cfg.init).to(device, memory_format=LAYOUT)
    optimizer = make_optimizer(model, cfg)
    record = {"name": cfg.name(), "config_key": cfg.key(), "config": cfg.result_fields(), "status": "running",
              "data": ds.provenance, "threads": threads, "epochs": [], "rounds": [], "wall_time_s": 0.0}
    start_round, start_epoch, train_flops = 0, 0, 0
    ckpt, shared = checkpoint_path(cfg, results_dir), round0_path(cfg, results_dir)
    state = None
    if resume and os.path.isfile(ckpt):
        state = res.load_state(ckpt, "delete it, or rerun with --no-resume, to start that run afresh", device)
        if state["config_key"] != cfg.key():
            raise CheckpointMismatch(f"{ckpt} was written by a different config (key {state['config_key']}, "
                                     f"this run {cfg.key()}); delete it or change --results-dir")
        log(f"[{cfg.name()}] resumed at round {state['round']} epoch {state['epoch']}")
    elif resume and shared and os.path.isfile(shared):
        # Fork: round 0 is identical for every run sharing the key, so continue from its stored end state exactly
        # as a resumed run would; only the record's identity changes.
        state = res.load_state(shared, "delete it: the next run of that seed trains round 0 again", device)
        if state["round0_key"] != cfg.round0_key():
            raise CheckpointMismatch(f"{shared} was written for another round 0; delete it")
        state["record"].update(name=record["name"], config_key=record["config_key"], config=record["config"],
                               forked_round0=os.path.basename(shared))
        log(f"[{cfg.name()}] forked from the shared round 0 {os.path.basename(shared)}")
    if state is not None:
        model = build_model(cfg.arch, state["widths"], ds.num_classes).to(device, memory_format=LAYOUT)
        model.load_state_dict(state["model"])
        optimizer = make_optimizer(model, cfg)
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        record, start_round, start_epoch = state["record"], state["round"], state["epoch"]
        train_flops = state["train_flops"]
    # The code that trains each stretch of the run: a run started under one commit and resumed under another names
    # both (provenance, written at the end, names only the last).
    event = "start" if state is None else ("fork" if "round0_key" in state else "resume")
    record.setdefault("code", []).append({"event": event, "at_epoch": len(record["epochs"]), **res.git_state(),
                                          "time_utc": res.utc_now()})
    done_epochs = len(record["epochs"])
    t0 = time.perf_counter() - record["wall_time_s"]
    for r in range(start_round, cfg.rounds):
        growth = None
        if r > 0 and cfg.grows and start_epoch == 0:
            before = snapshot_params(model)
            g_t = time.perf_counter()
            with devices.autocast(cfg.precision, device):
                growth = grow(model, cfg, ds, r, generator_for(cfg.seed, "grow", r), device)
            devices.synchronize(device)
            growth["time_s"] = time.perf_counter() - g_t
            model.to(memory_format=LAYOUT)  # growth writes contiguous tensors; parameters stay the same objects
            if cfg.rebuild_optimizer:
                optimizer = make_optimizer(model, cfg)
            else:
                carry_optimizer_state(optimizer, model, before)
            log(f"[{cfg.name()}] round {r}: grew {growth['added']} neurons -> widths {widths_of(model)}")
        if start_epoch == 0:
            record["rounds"].append({"round": r, "growth": growth})
        train_macs = count_flops(model) * len(ds.train_y)
        sim_round = r if cfg.lambda_sim > 0 and r >= cfg.sim_from_round else None
        # Compiled once per round: every growth step changes the shapes (docs/performance.md weighs the cost).
        step_model = torch.compile(model, dynamic=False) if cfg.compile_model else model
        for e in range(start_epoch, cfg.epochs_per_round):
            for group in optimizer.param_groups:
                group["lr"] = lr_at(cfg, e)
            desc = f"round {r + 1}/{cfg.rounds} epoch {e + 1}/{cfg.epochs_per_round}"
            t_epoch = time.perf_counter()
            metrics = train_epoch(model, optimizer, ds, cfg, generator_for(cfg.seed, "epoch", r, e), device,
                                  sim_round, desc, step_model)
            last_of_round = e == cfg.epochs_per_round - 1
            test_loss = test_acc = None
            if cfg.eval_every_epoch or last_of_round:
                test_loss, test_acc = evaluate(model, ds.test_x, ds.test_y, cfg.eval_batch_size, device,
                                               cfg.precision, normalise=ds.normalise)
            train_flops += TRAIN_FLOPS_PER_MAC * train_macs
            record["epochs"].append({"round": r, "epoch": e, "lr": optimizer.param_groups[0]["lr"], **metrics,
                                     "test_loss": test_loss, "test_acc": test_acc,
                                     "time_s": time.perf_counter() - t_epoch})
            if cfg.progress:
                test = f"test {test_acc:.4f} " if test_acc is not None else ""
                log(f"[{cfg.name()}] {desc}: loss {metrics['train_loss']:.3f} train {metrics['train_acc']:.3f} "
                    f"{test}({time.perf_counter() - t_epoch:.1f}s)")
            done_epochs += 1
            if last_of_round:
                g = record["rounds"][-1]["growth"]
                record["rounds"][-1] = _round_summary(model, r, g, train_flops, test_acc)
            record["wall_time_s"] = time.perf_counter() - t0
            nxt_round, nxt_epoch = (r + 1, 0) if last_of_round else (r, e + 1)
            state = {"config_key": cfg.key(), "widths": widths_of(model), "model": model.state_dict(),
                     "optimizer": optimizer.state_dict(), "round": nxt_round, "epoch": nxt_epoch,
                     "train_flops": train_flops, "record": record, "torch_rng": torch.get_rng_state()}
            _atomic_save(state, ckpt)
            if r == 0 and last_of_round and shared and not os.path.isfile(shared):
                _atomic_save({**state, "round0_key": cfg.round0_key()}, shared)
            if stop_after_epochs is not None and done_epochs >= stop_after_epochs:
                return None
        start_epoch = 0
    last = record["rounds"][-1]
    record["final"] = {"test_acc": record["epochs"][-1]["test_acc"], "params": last["params"],
                       "flops": last["flops"], "train_flops": train_flops, "widths": last["widths"]}
    record["wall_time_s"] = time.perf_counter() - t0
    record["provenance"] = res.provenance(device)
    record["status"] = "complete"
    _atomic_save({"config_key": cfg.key(), "widths": widths_of(model), "model": model.state_dict()},
                 model_path(cfg, results_dir))
    record = res.seal(record)
    res.write_json(res.run_path(cfg, results_dir), record)
    with contextlib.suppress(FileNotFoundError):
        os.remove(ckpt)
    return record
