"""The experiments behind every table and figure, as lists of configs, and a runner that trains only what is missing.

Run records are cached by config key, so asking for a study twice trains nothing the second time; notebooks call
these functions and then only render. Results of a preset live in `results/<preset>/`.
"""
from __future__ import annotations

import concurrent.futures as cf
import functools
import multiprocessing as mp
import os

from . import fulldata
from .config import DEFAULT_LAMBDA_SIM, LAMBDA_SWEEP, Config, preset
from .records import REPO_ROOT, load_cached

RESULTS_ROOT = os.path.join(REPO_ROOT, "results")

# Seeds per preset: CPU presets use fewer; the paper protocol asks for >= 3 (paper-facts.md, "metric").
DEFAULT_SEEDS = {"smoke": (0, 1), "quick": (0, 1, 2), "paper": (0, 1, 2)}
# Rows per layer of the row-sampled constraint's ablation (our choice): a third to a half of a typical layer's
# rows on the CPU presets (smoke widths 4-7, quick 16-42), the size make bench times at full widths for `paper`.
ABLATION_SAMPLE_ROWS = {"smoke": 2, "quick": 8, "paper": 32}


def results_dir(preset_name: str, root: str = RESULTS_ROOT) -> str:
    return os.path.join(root, preset_name)


def base_config(preset_name: str, dataset: str) -> Config:
    cfg = preset(preset_name)
    if cfg.dataset == "synthetic":  # the smoke preset stands in for both data sets with synthetic data
        return cfg.replace(synthetic_classes=100 if dataset == "cifar100" else 10)
    return cfg.replace(dataset=dataset)


def method_label(cfg: dict | Config) -> str:
    c = cfg if isinstance(cfg, dict) else cfg.result_fields()
    if c["method"] == "fixed":
        if c.get("widths"):
            return "fixed (Firefly's final widths)"
        return "fixed (compact)" if c["start_width"] is not None else "fixed (full)"
    if c["lambda_sim"] > 0:
        if c["method"] == "ours":
            return "ours (from round 0)" if c["sim_from_round"] == 0 else "ours"
        return f"{c['method']} + constraint"
    return c["method"]


def main_configs(preset_name: str, dataset: str, seeds) -> list[Config]:
    """Phase 1 of the main table: everything except the fixed net at Firefly's final widths."""
    base = base_config(preset_name, dataset)
    cfgs = []
    for s in seeds:
        cfgs += [base.replace(method="fixed", seed=s), base.replace(method="random", seed=s),
                 base.replace(method="firefly", seed=s),
                 base.replace(method="ours", lambda_sim=DEFAULT_LAMBDA_SIM, seed=s)]
        if preset_name == "paper":
            cfgs.append(base.replace(method="fixed", start_width=None, seed=s))
    return cfgs


def fixed_at_final_widths(firefly_record: dict) -> Config:
    """A fixed network trained from scratch at the widths Firefly grew to (same seed and schedule)."""
    cfg = Config.from_dict(firefly_record["config"])
    return cfg.replace(method="fixed", start_width=None, widths=tuple(firefly_record["final"]["widths"]))


def ablation_configs(preset_name: str, dataset: str, seed: int = 0) -> list[Config]:
    base = base_config(preset_name, dataset).replace(seed=seed)
    ours = base.replace(method="ours", lambda_sim=DEFAULT_LAMBDA_SIM)
    cfgs = [base.replace(method="ours", lambda_sim=lam) for lam in LAMBDA_SWEEP]
    cfgs += [ours.replace(sim_variant="distribution"), ours.replace(sim_scope="new"),
             ours.replace(sim_from_round=0), ours.replace(sim_sample_rows=ABLATION_SAMPLE_ROWS[preset_name]),
             base.replace(method="random", lambda_sim=DEFAULT_LAMBDA_SIM)]
    if preset_name != "quick":  # quick's 4-batch candidate passes make scoring variants noise (fulldata has one)
        cfgs += firefly_variant_configs(base)
    return list(dict.fromkeys(cfgs))  # the default lambda is also in the sweep


def firefly_variant_configs(base: Config) -> list[Config]:
    """Firefly with the project's first choices where the public code differs: scores at g = 0 (candidates off)
    instead of with every candidate on, and no new-to-new weights."""
    ff = base.replace(method="firefly", lambda_sim=0.0)
    return [ff.replace(firefly_score_at="zero"), ff.replace(firefly_new_to_new=False)]


STUDY_THREADS_PER_RUN = 1

_SHARED = None  # what `map_processes` sends once to each worker process


def _init_worker(threads: int, shared) -> None:
    global _SHARED
    import torch
    torch.set_num_threads(threads)
    _SHARED = shared


def _call_shared(fn, item):
    return fn(item, _SHARED)


def map_processes(fn, items, jobs: int, shared=None, label: str | None = None, log=print) -> list:
    """[fn(item, shared) for item in items] in `jobs` spawned processes of one thread each (in this process when
    jobs is 1, also on one thread: results must not depend on the core count). `fn` must be a module-level
    function; `shared` (e.g. the data set) is sent once per worker, not once per item. With a `label`, one line
    per finished item says how far it is."""
    import time

    import torch
    items = list(items)
    cores = os.cpu_count() or 1
    jobs = max(1, min(jobs, len(items), cores))
    t0 = time.perf_counter()

    def done(i):
        if label:
            log(f"  {label}: {i + 1}/{len(items)} done ({time.perf_counter() - t0:.0f} s)")
    out = []
    if jobs == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(STUDY_THREADS_PER_RUN)
        try:
            for i, item in enumerate(items):
                out.append(fn(item, shared))
                done(i)
        finally:
            torch.set_num_threads(before)
        return out
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                initargs=(STUDY_THREADS_PER_RUN, shared)) as pool:
        futures = [pool.submit(_call_shared, fn, item) for item in items]
        for i, fut in enumerate(futures):
            out.append(fut.result())
            done(i)
    return out


def from_round0_configs(preset_name: str, dataset: str, seeds=None) -> list[Config]:
    """Firefly, ours, and ours with the constraint also in the first round (`sim_from_round=0`), on every seed.

    The follow-up test of the largest single-seed effect in the ablations (docs/results.md): the same three
    methods on the preset's seeds, so that the effect can be told from seed noise."""
    base = base_config(preset_name, dataset)
    ours = base.replace(method="ours", lambda_sim=DEFAULT_LAMBDA_SIM)
    seeds = tuple(seeds) if seeds else DEFAULT_SEEDS[preset_name]
    return [c.replace(seed=s) for s in seeds
            for c in (base.replace(method="firefly"), ours, ours.replace(sim_from_round=0))]


def _worker(cfg: Config, rdir: str) -> dict:
    from .train import run
    return run(cfg, results_dir=rdir)


def _round0_worker(cfg: Config, rdir: str) -> None:
    """Round 0 of `cfg` only: leaves its checkpoint and the round-0 state its siblings fork from."""
    from .train import run
    return run(cfg, results_dir=rdir, stop_after_epochs=cfg.epochs_per_round)


def _shared_round0_leaders(pending: list[Config], rdir: str) -> list[Config]:
    """One config per round-0 key that two or more pending runs share and nobody has trained yet."""
    from .train import round0_path
    groups: dict[str, list[Config]] = {}
    for c in pending:
        path = round0_path(c, rdir)
        if path and not os.path.isfile(path):
            groups.setdefault(c.round0_key(), []).append(c)
    return [members[0] for members in groups.values() if len(members) > 1]


def _start_order(cfg: Config) -> int:
    """Longest first, so that two processes finish together: growing runs (Firefly first: the fixed runs at its
    final widths wait for it), then random/split growth, then fixed networks."""
    return {"firefly": 0, "ours": 1, "random": 2, "split": 2}.get(cfg.method, 3)


def ensure(cfgs: list[Config], rdir: str, jobs: int = 1, log=print, train: bool = True, then=None,
           order=None) -> list[dict]:
    """Records of `cfgs` in order, followed by those of the configs `then(record)` names for each of them (e.g. a
    fixed network at the widths a Firefly run grew to), training the missing ones.

    Missing runs go to `jobs` processes (the cores split between them, unless a config sets num_threads) longest
    first, and a follow-up starts as soon as its parent is done, so one pool serves a whole study. With train=False
    a missing record is an error. `order` (config -> int) overrides the start order of the missing runs."""
    then = then or (lambda record: [])
    cfgs = list(dict.fromkeys(cfgs))
    records = {c: load_cached(c, rdir) for c in cfgs}
    followups: dict[Config, list[Config]] = {}
    pending = sorted((c for c in cfgs if records[c] is None), key=order or _start_order)

    def finished(c: Config, record: dict) -> None:
        records[c] = record
        followups[c] = [f for f in then(record) if f not in records]
        for f in followups[c]:
            records[f] = load_cached(f, rdir)
            if records[f] is None:
                pending.insert(0, f)  # the longest runs, and their parent is done: start them next

    for c in cfgs:
        if records[c] is not None:
            finished(c, records[c])
    if pending and not train:
        raise FileNotFoundError(f"{len(pending)} run(s) missing from {rdir}: {[c.name() for c in pending]}")
    if pending:
        cores = os.cpu_count() or 1
        jobs = max(1, min(jobs, cores, len(pending)))  # a follow-up waits for its parent anyway
        # One thread per run, whatever the machine: oneDNN's reductions, hence a run's bits, depend on the thread
        # count (a quick run's first epoch differed in the 2nd digit with 2 threads); parallelism is by processes.
        threads = STUDY_THREADS_PER_RUN
        log(f"{len(records) - len(pending)} cached, training {len(pending)} run(s) (and any follow-ups) with "
            f"{jobs} process(es) x {threads} thread(s) -> {rdir}")
        if jobs == 1:
            while pending:
                c = pending.pop(0)
                finished(c, _worker(c if c.num_threads else c.replace(num_threads=threads), rdir))
        else:
            # Runs that share a round 0 wait until one round-0 job has stored it, then fork from it.
            queue = [("round0", c) for c in _shared_round0_leaders(pending, rdir)] + [("run", c) for c in pending]
            pending.clear()
            waiting_on = {c.round0_key() for kind, c in queue if kind == "round0"}
            with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
                running: dict[cf.Future, tuple[str, Config]] = {}
                while queue or pending or running:
                    queue[:0] = [("run", c) for c in pending]  # follow-ups of finished parents: the longest, first
                    pending.clear()
                    while len(running) < jobs:
                        ready = [item for item in queue
                                 if item[0] == "round0" or item[1].round0_key() not in waiting_on]
                        if not ready:
                            break
                        kind, c = ready[0]
                        queue.remove(ready[0])
                        todo = c if c.num_threads else c.replace(num_threads=threads)
                        running[pool.submit(_round0_worker if kind == "round0" else _worker, todo, rdir)] = (kind, c)
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        kind, c = running.pop(fut)
                        result = fut.result()
                        if kind == "round0":
                            waiting_on.discard(c.round0_key())
                            log(f"round 0 of {c.name()} stored; its siblings fork from it")
                            continue
                        finished(c, result)
                        log(f"done {c.name()}: test acc {records[c]['final']['test_acc']:.4f} "
                            f"({records[c]['wall_time_s']:.0f}s); {len(queue) + len(pending) + len(running)} left")
    extra = [f for c in cfgs for f in followups[c]]
    return [records[c] for c in cfgs] + [records[f] for f in dict.fromkeys(extra)]


def then_fixed_at_final_widths(record: dict) -> list[Config]:
    """The fixed net at the final widths of each default Firefly run (not of its scoring ablations)."""
    c = record["config"]
    default = c["method"] == "firefly" and c["firefly_score_at"] == "full" and c["firefly_new_to_new"]
    return [fixed_at_final_widths(record)] if default else []


def main_study(preset_name: str, dataset: str, seeds=None, jobs: int = 1, root: str = RESULTS_ROOT,
               log=print, train: bool = True) -> list[dict]:
    """The main table's runs, then one fixed network per Firefly run at its final widths."""
    if preset_name == fulldata.PRESET:
        return fulldata_study(jobs, root, log, train)["main"]
    seeds = tuple(seeds) if seeds else DEFAULT_SEEDS[preset_name]
    return ensure(main_configs(preset_name, dataset, seeds), results_dir(preset_name, root), jobs, log, train,
                  then=then_fixed_at_final_widths)


def ablation_study(preset_name: str, dataset: str = "cifar10", jobs: int = 1, root: str = RESULTS_ROOT,
                   log=print, train: bool = True) -> list[dict]:
    """The ablation runs plus Firefly (lambda = 0) on the same seed; on fulldata its lambda sweep (seed 100) and
    its scoring ablation, with Firefly of the first seed."""
    if preset_name == fulldata.PRESET:
        parts = fulldata_study(jobs, root, log, train)
        firefly = [r for r in parts["main"] if r["config"]["method"] == "firefly"
                   and r["config"]["seed"] == fulldata.MAIN_SEEDS[0]]
        return parts["sweep"] + parts["ablations"] + firefly
    rdir = results_dir(preset_name, root)
    firefly = base_config(preset_name, dataset).replace(method="firefly", seed=0)
    return ensure(ablation_configs(preset_name, dataset) + [firefly], rdir, jobs, log, train)


def from_round0_study(preset_name: str, dataset: str = "cifar10", seeds=None, jobs: int = 1,
                      root: str = RESULTS_ROOT, log=print, train: bool = True) -> list[dict]:
    if preset_name == fulldata.PRESET:  # part of its main table
        main = fulldata_study(jobs, root, log, train)["main"]
        return [r for r in main if r["config"]["method"] in ("firefly", "ours")]
    return ensure(from_round0_configs(preset_name, dataset, seeds), results_dir(preset_name, root), jobs, log, train)


def ours_lambda(preset_name: str, root: str = RESULTS_ROOT) -> float:
    """lambda_sim of "ours" in a preset: fulldata's is chosen by its pre-registered rule from its sweep records."""
    if preset_name != fulldata.PRESET:
        return DEFAULT_LAMBDA_SIM
    sweep = ensure(fulldata.sweep_configs(base_config(preset_name, "cifar10")), results_dir(preset_name, root),
                   train=False)
    return fulldata.chosen_lambda(sweep)


def cam_seeds(preset_name: str) -> tuple[int, ...]:
    """Seeds whose Firefly and ours models the Grad-CAM metrics compare: the paired seeds of the main table."""
    return fulldata.MAIN_SEEDS if preset_name == fulldata.PRESET else DEFAULT_SEEDS[preset_name]


def dataset_available(preset_name: str, dataset: str) -> bool:
    from .data import DataError, load_dataset
    try:
        load_dataset(base_config(preset_name, dataset))
        return True
    except DataError:
        return False


def fulldata_study(jobs: int = 2, root: str = RESULTS_ROOT, log=print, train: bool = True) -> dict:
    """The full-data study (replication/fulldata.py): train what is missing, the lambda sweep first (its lambda
    unblocks ours), and return the records by part: {"sweep", "lambda_sim", "main", "ablations"}. With train=False
    a missing run is an error."""
    rdir = results_dir(fulldata.PRESET, root)
    base = base_config(fulldata.PRESET, "cifar10")
    sweep = fulldata.sweep_configs(base)

    def then(record):
        return [fixed_at_final_widths(record)] if fulldata.wants_fixed_follow_up(record) else []
    records = ensure(sweep + fulldata.independent_configs(base), rdir, jobs, log, train, then=then,
                     order=fulldata.start_order)
    lam = fulldata.chosen_lambda(records[:len(sweep)])
    log(f"lambda_sim chosen by the pre-registered rule on seeds {fulldata.SWEEP_SEEDS}: {lam:g}")
    main = records[len(sweep):] + ensure(fulldata.ours_configs(base, lam), rdir, jobs, log, train)
    return {"sweep": records[:len(sweep)], "lambda_sim": lam, "main": main,
            "ablations": ensure(fulldata.ablation_configs(base), rdir, jobs, log, train)}
