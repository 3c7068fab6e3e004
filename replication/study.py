"""The experiments behind every table and figure, as lists of configs; `pool.ensure` trains only what is missing.

Run records are cached by config key, so asking for a study twice trains nothing the second time; notebooks call
these functions and then only render. Results of a preset live in `results/<preset>/`.
"""
from __future__ import annotations

import os

from . import fulldata
from .config import DEFAULT_LAMBDA_SIM, LAMBDA_SWEEP, Config, preset
from .pool import ensure, stored_records
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
    """The row a run belongs to in the tables: its method and what sets it apart from that method's default."""
    c = cfg if isinstance(cfg, dict) else cfg.result_fields()
    if c["method"] == "fixed":
        if c.get("widths"):
            return ("fixed (Firefly's final widths, equal compute)" if fulldata.is_equal_compute(c)
                    else "fixed (Firefly's final widths)")
        return "fixed (compact)" if c["start_width"] is not None else "fixed (full)"
    scored_at_zero = c["method"] in ("firefly", "ours") and c.get("firefly_score_at") == "zero"
    if c["lambda_sim"] > 0:
        if c["method"] == "ours":
            details = ((["from round 0"] if c["sim_from_round"] == 0 else [])
                       + (["scored at g = 0"] if scored_at_zero else [])
                       + ([f"λ = {c['lambda_sim']:g}"] if c["lambda_sim"] != DEFAULT_LAMBDA_SIM else []))
            return "ours" + (f" ({', '.join(details)})" if details else "")
        return f"{c['method']} + constraint"
    return "firefly (scored at g = 0)" if scored_at_zero else c["method"]


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


# A fixed network trained from scratch at the widths Firefly grew to (same seed and schedule).
fixed_at_final_widths = fulldata.fixed_at_widths


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


def from_round0_configs(preset_name: str, dataset: str, seeds=None) -> list[Config]:
    """Firefly, ours, and ours with the constraint also in the first round (`sim_from_round=0`), on every seed.

    The follow-up test of the largest single-seed effect in the ablations (docs/results.md): the same three
    methods on the preset's seeds, so that the effect can be told from seed noise."""
    base = base_config(preset_name, dataset)
    ours = base.replace(method="ours", lambda_sim=DEFAULT_LAMBDA_SIM)
    seeds = tuple(seeds) if seeds else DEFAULT_SEEDS[preset_name]
    return [c.replace(seed=s) for s in seeds
            for c in (base.replace(method="firefly"), ours, ours.replace(sim_from_round=0))]


def then_fixed_at_final_widths(record: dict) -> list[Config]:
    """The fixed net at the final widths of each default Firefly run (not of its scoring ablations)."""
    c = record["config"]
    default = c["method"] == "firefly" and c["firefly_score_at"] == "full" and c["firefly_new_to_new"]
    return [fixed_at_final_widths(record)] if default else []


def main_study(preset_name: str, dataset: str, seeds=None, jobs: int = 1, root: str = RESULTS_ROOT,
               log=print, train: bool = True) -> list[dict]:
    """The main table's runs, then one fixed network per Firefly run at its final widths."""
    # fulldata: CIFAR-10 only (no CIFAR-100 table at this scale), and its notebooks only render: its runs (hours)
    # train through `make results` alone (pipeline.trains_in_figures)
    if preset_name == fulldata.PRESET:
        if dataset != "cifar10":
            return []
        parts = fulldata_study(jobs, root, log, train=False)
        return parts["main"] + parts["equal_compute"] + parts["lambda_ext_rows"]
    seeds = tuple(seeds) if seeds else DEFAULT_SEEDS[preset_name]
    return ensure(main_configs(preset_name, dataset, seeds), results_dir(preset_name, root), jobs, log, train,
                  then=then_fixed_at_final_widths)


def ablation_study(preset_name: str, dataset: str = "cifar10", jobs: int = 1, root: str = RESULTS_ROOT,
                   log=print, train: bool = True) -> list[dict]:
    """The ablation runs plus Firefly (lambda = 0) on the same seed; on fulldata its lambda sweep (seed 100) and
    its scoring ablation, with Firefly and ours (constraint from round 1) of the same seeds beside it."""
    if preset_name == fulldata.PRESET:
        parts = fulldata_study(jobs, root, log, train=False)
        beside = [r for r in parts["main"] if r["config"]["seed"] in fulldata.ABLATION_SEEDS
                  and (r["config"]["method"] == "firefly"
                       or (r["config"]["method"] == "ours" and r["config"]["sim_from_round"] == 1))]
        return parts["sweep"] + parts["ablations"] + beside
    rdir = results_dir(preset_name, root)
    firefly = base_config(preset_name, dataset).replace(method="firefly", seed=0)
    return ensure(ablation_configs(preset_name, dataset) + [firefly], rdir, jobs, log, train)


def comparison_study(preset_name: str, root: str = RESULTS_ROOT, log=print) -> dict | None:
    """{"records", "comparisons", "min_seeds", "missing"} of a study that declares the paired comparisons its text
    makes (fulldata), else None. Each comparison is (row A, row B, what it asks) by method_label, A − B paired by
    seed, indicative below `min_seeds`; "missing" names the runs of the plan that have not landed (in progress)."""
    if preset_name != fulldata.PRESET:
        return None
    parts = fulldata_study(root=root, log=log, train=False)
    records = [r for name in ("main", "ablations", "constrained", "equal_compute", "lambda_ext_rows")
               for r in parts[name]]
    comparisons = list(fulldata.COMPARISONS)
    if parts["lambda_ext_rows"]:
        comparisons.append((method_label(parts["lambda_ext_rows"][0]["config"]), "firefly",
                            "lambda past its first grid (chosen after seeing the first sweep)"))
    return {"records": records, "comparisons": comparisons, "min_seeds": fulldata.MIN_SEEDS,
            "missing": parts["missing"]}


def from_round0_study(preset_name: str, dataset: str = "cifar10", seeds=None, jobs: int = 1,
                      root: str = RESULTS_ROOT, log=print, train: bool = True) -> list[dict]:
    if preset_name == fulldata.PRESET:  # part of its main table
        main = fulldata_study(jobs, root, log, train=False)["main"]
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


def fulldata_study(jobs: int = 2, root: str = RESULTS_ROOT, log=print, train: bool = True, runner=None) -> dict:
    """The full-data study (replication/fulldata.py): train what is missing, the lambda sweep first (its lambda
    unblocks ours), and return the records by part: {"sweep", "lambda_sim", "main", "ablations", "constrained",
    "equal_compute", "lambda_ext_sweep", "lambda_ext", "lambda_ext_rows", "missing"}. With train=False nothing is
    trained: a missing run is an error, except while the plan says it is in progress (`fulldata.IN_PROGRESS`),
    when the parts hold what has landed and "missing" names the rest. A `runner` trains them as submitit jobs."""
    rdir = results_dir(fulldata.PRESET, root)
    base = base_config(fulldata.PRESET, "cifar10")
    sweep, independent = fulldata.sweep_configs(base), fulldata.independent_configs(base)
    swept = [load_cached(c, rdir) for c in sweep]
    if any(r is None for r in swept):  # lambda is not known yet: the sweep and the runs that do not need it
        first = ensure(sweep + independent, rdir, jobs, log, train, then=fulldata.follow_ups,
                       order=fulldata.start_order, runner=runner)
        swept = first[:len(sweep)]
    lam = fulldata.chosen_lambda(swept)
    log(f"lambda_sim chosen by the pre-registered rule on seeds {fulldata.SWEEP_SEEDS}: {lam:g}")
    plan = {"sweep": sweep, "lambda_ext_sweep": fulldata.lambda_ext_configs(base),
            "main": independent + fulldata.ours_configs(base, lam), "ablations": fulldata.ablation_configs(base),
            "constrained": fulldata.constrained_baselines(base, lam)}
    # One pool takes every run whose config is known, so that no process idles between the parts.
    found = _fulldata_records([c for part in plan.values() for c in part], rdir, jobs, log, train, runner)
    parts = {name: [found[c.key()] for c in cfgs if c.key() in found] for name, cfgs in plan.items()}
    followed = [f for r in parts["main"] for f in fulldata.follow_ups(r)]
    parts["equal_compute"] = []
    for f in (f for f in followed if f.key() in found):  # same schedule: the main table; equal compute: its own
        parts["equal_compute" if fulldata.is_equal_compute(found[f.key()]["config"]) else "main"].append(found[f.key()])
    cfgs = [c for part in plan.values() for c in part] + followed
    lam_ext = rows = None
    if len(parts["lambda_ext_sweep"]) == len(plan["lambda_ext_sweep"]):
        lam_ext = fulldata.lambda_ext(parts["lambda_ext_sweep"])
        log(f"lambda_ext chosen by the pre-registered rule on seeds {fulldata.LAMBDA_EXT_SEEDS}: {lam_ext:g}")
        rows = fulldata.lambda_ext_row_configs(base, lam_ext, lam)
        found.update(_fulldata_records(rows, rdir, jobs, log, train, runner))
        cfgs += rows
    parts.update(lambda_sim=lam, lambda_ext=lam_ext,
                 lambda_ext_rows=[found[c.key()] for c in rows or [] if c.key() in found],
                 missing=[c.name() for c in dict.fromkeys(cfgs) if c.key() not in found])
    if not train and not fulldata.IN_PROGRESS and (parts["missing"] or lam_ext is None):
        raise FileNotFoundError(f"{len(parts['missing'])} run(s) of the fulldata plan missing from {rdir}: "
                                f"{parts['missing']}")
    return parts


def _fulldata_records(cfgs, rdir, jobs, log, train, runner) -> dict[str, dict]:
    """{config key: record} of `cfgs` and their follow-ups: trained when missing, else only what is stored."""
    if train:
        records = ensure(cfgs, rdir, jobs, log, True, then=fulldata.follow_ups, order=fulldata.start_order,
                         runner=runner)
    else:
        records = stored_records(cfgs, rdir, then=fulldata.follow_ups)
    return {r["config_key"]: r for r in records if r is not None}
