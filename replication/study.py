"""The experiments behind every table and figure, as lists of configs, and a runner that trains only what is missing.

Run records are cached by config key, so asking for a study twice trains nothing the second time; notebooks call
these functions and then only render. Results of a preset live in `results/<preset>/`.
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os

from .config import DEFAULT_LAMBDA_SIM, Config, preset
from .results import REPO_ROOT, load_cached

RESULTS_ROOT = os.path.join(REPO_ROOT, "results")

# Seeds per preset: CPU presets use fewer; the paper protocol asks for >= 3 (paper-facts.md, "metric").
DEFAULT_SEEDS = {"smoke": (0, 1), "quick": (0, 1, 2), "paper": (0, 1, 2)}
LAMBDA_SWEEP = (1e-3, 1e-2, 1e-1, 1.0)  # paper-facts.md: sweep {1e-3, 1e-2, 1e-1, 1}


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
        return "ours" if c["method"] == "ours" else f"{c['method']} + constraint"
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
             ours.replace(sim_from_round=0), base.replace(method="random", lambda_sim=DEFAULT_LAMBDA_SIM)]
    return list(dict.fromkeys(cfgs))  # the default lambda is also in the sweep


def _worker(cfg: Config, rdir: str) -> dict:
    from .train import run
    return run(cfg, results_dir=rdir)


def ensure(cfgs: list[Config], rdir: str, jobs: int = 1, log=print, train: bool = True) -> list[dict]:
    """Records of `cfgs` in order, training the missing ones (`jobs` processes, cores split between them);
    with train=False a missing record is an error instead."""
    cfgs = list(dict.fromkeys(cfgs))
    records = {c: load_cached(c, rdir) for c in cfgs}
    missing = [c for c in cfgs if records[c] is None]
    if missing and not train:
        raise FileNotFoundError(f"{len(missing)} run(s) missing from {rdir}: {[c.name() for c in missing]}")
    if missing:
        cores = os.cpu_count() or 1
        jobs = max(1, min(jobs, len(missing), cores))
        threads = max(1, cores // jobs)
        log(f"{len(cfgs) - len(missing)} cached, training {len(missing)} run(s) with {jobs} process(es) x "
            f"{threads} thread(s) -> {rdir}")
        todo = [c.replace(num_threads=threads) for c in missing]
        if jobs == 1:
            for c, t in zip(missing, todo):
                records[c] = _worker(t, rdir)
        else:
            with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn")) as pool:
                futures = {pool.submit(_worker, t, rdir): c for c, t in zip(missing, todo)}
                for fut in cf.as_completed(futures):
                    c = futures[fut]
                    records[c] = fut.result()
                    log(f"done {c.name()}: test acc {records[c]['final']['test_acc']:.4f}")
    return [records[c] for c in cfgs]


def main_study(preset_name: str, dataset: str, seeds=None, jobs: int = 1, root: str = RESULTS_ROOT,
               log=print, train: bool = True) -> list[dict]:
    seeds = tuple(seeds) if seeds else DEFAULT_SEEDS[preset_name]
    rdir = results_dir(preset_name, root)
    recs = ensure(main_configs(preset_name, dataset, seeds), rdir, jobs, log, train)
    grown = [fixed_at_final_widths(r) for r in recs if r["config"]["method"] == "firefly"]
    return recs + ensure(grown, rdir, jobs, log, train)


def ablation_study(preset_name: str, dataset: str = "cifar10", jobs: int = 1, root: str = RESULTS_ROOT,
                   log=print, train: bool = True) -> list[dict]:
    """The ablation runs plus Firefly (lambda = 0) on the same seed."""
    rdir = results_dir(preset_name, root)
    firefly = base_config(preset_name, dataset).replace(method="firefly", seed=0)
    return ensure(ablation_configs(preset_name, dataset) + [firefly], rdir, jobs, log, train)


def dataset_available(preset_name: str, dataset: str) -> bool:
    from .data import DataError, load_dataset
    try:
        load_dataset(base_config(preset_name, dataset))
        return True
    except DataError:
        return False


def full_study(preset_name: str, seeds=None, jobs: int = 1, datasets=("cifar10", "cifar100"),
               root: str = RESULTS_ROOT, log=print) -> None:
    """Everything the notebooks need, trained up front so progress shows in the terminal."""
    for ds in datasets:
        if not dataset_available(preset_name, ds):
            log(f"{ds}: data not found in the data dir; its table is skipped (README 'Data' says how to get it)")
            continue
        main_study(preset_name, ds, seeds, jobs, root, log)
    ablation_study(preset_name, "cifar10", jobs, root, log)
