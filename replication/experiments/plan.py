"""What a study is: one declared `Plan` (its base config, which runs make which table, seeds, lambda, analyses,
and how it renders), and the standard study that `smoke`, `quick` and `paper` declare with their own numbers.

A plan is looked up once by its name (`experiments.plan`) and passed down: training, analyses and notebooks ask it,
never the name. A study whose runs follow another logic (fulldata: a pre-registered lambda rule, follow-ups by
seed) subclasses `Plan` in its own file and overrides the record methods. Run records are cached by config key,
so asking a plan for its records twice trains nothing the second time. Results of a plan live in results/<name>/.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from ..config import DEFAULT_LAMBDA_SIM, LAMBDA_SWEEP, Config
from ..growth.registry import method_label
from ..records import RESULTS_ROOT
from ..runs.pool import ensure

# The main table of the standard study, per seed, in this order: config fields over the plan's base config.
STANDARD_MAIN_ROWS = ({"method": "fixed"}, {"method": "random"}, {"method": "firefly"},
                      {"method": "ours", "lambda_sim": DEFAULT_LAMBDA_SIM})
# The models E1-E3 study: every main-table row but random growth (docs/hyper-hypo.md).
STANDARD_NEURON_ROWS = ("fixed (compact)", "fixed (Firefly's final widths)", "firefly", "ours")


def fixed_at_widths(firefly_record: dict) -> Config:
    """A fixed network trained from scratch at the widths a Firefly run grew to (same seed and schedule)."""
    cfg = Config.from_dict(firefly_record["config"])
    return cfg.replace(method="fixed", start_width=None, widths=tuple(firefly_record["final"]["widths"]))


def then_fixed_at_final_widths(record: dict) -> list[Config]:
    """The fixed net at the final widths of each default Firefly run (not of its scoring ablations)."""
    c = record["config"]
    default = c["method"] == "firefly" and c["firefly_score_at"] == "full" and c["firefly_new_to_new"]
    return [fixed_at_widths(record)] if default else []


@dataclass(frozen=True)
class Plan:
    """A study. The fields declare it; the methods are the standard study's logic, which a plan file may override."""
    name: str  # results/<name>/, figures/<name>/, and what `--preset` and the notebooks' `preset` select
    config: Config  # the base config every run of the study is derived from
    seeds: tuple[int, ...]  # the main table's seeds
    description: str = ""
    datasets: tuple[str, ...] = ("cifar10", "cifar100")  # main tables; the analyses use CIFAR-10
    lambda_sim: float = DEFAULT_LAMBDA_SIM  # lambda of "ours" in every table of the study
    main_rows: tuple[dict, ...] = STANDARD_MAIN_ROWS
    # Ablations on one seed (None: the study has none), with Firefly beside them; rows per layer of the row-sampled
    # constraint (our choice: a third to a half of a typical layer's rows), and Firefly's scoring variants (left
    # out where the candidate passes are too short for them to be more than noise).
    ablation_seed: int | None = 0
    ablation_sample_rows: int = 8
    ablation_scoring_variants: bool = True
    from_round0: bool = True  # the constraint-from-round-0 follow-up (from_round0_configs) belongs to the study
    cam_layers: tuple[str, ...] = ("last",)  # Grad-CAM layers (analysis/cam.resolve_layer)
    cam_images: int = 500  # test images per model for the Grad-CAM metrics
    neuron_rows: tuple[str, ...] = STANDARD_NEURON_ROWS  # the models E1-E4 study, by table row (none: no E1-E4)
    neuron_definitions: tuple[str, ...] = ("absolute",)  # hyper/hypo definitions (analysis/neurons.DEFINITIONS)
    adapt_definition: str = "absolute"  # E4 selects hyper/hypo channels by this definition
    adapt_seeds: int | None = None  # E4 adapts the models of this many seeds per method (None: every seed)
    adapt_steps: int = 20  # optimiser steps per adaptation, the same for every condition
    readme_sections: dict = field(default_factory=dict)  # table ("main", "comparisons", "beside") -> README marker
    trains_in_figures: bool = True  # False: `make figures` renders stored records only (`make results` trains)
    skipped_notebooks: tuple[str, ...] = ()  # notebooks `make figures` leaves out for this study
    default_jobs: int = 2  # processes when a notebook's `jobs` is 0
    from_round0_in_main: bool = False  # the constraint-from-round-0 rows are part of the main table
    beside: str | None = None  # a study whose comparisons and rows render next to this one's (notebook 01)

    def replace(self, **changes) -> "Plan":
        return dataclasses.replace(self, **changes)

    # --- configs ---
    def base_config(self, dataset: str) -> Config:
        if self.config.dataset == "synthetic":  # a synthetic study stands in for both data sets
            return self.config.replace(synthetic_classes=100 if dataset == "cifar100" else 10)
        return self.config.replace(dataset=dataset)

    def results_dir(self, root: str = RESULTS_ROOT) -> str:
        return os.path.join(root, self.name)

    def ours_lambda(self, root: str = RESULTS_ROOT) -> float:
        return self.lambda_sim

    def main_configs(self, dataset: str, seeds=None) -> list[Config]:
        """The main table before its follow-ups (the fixed nets at Firefly's final widths)."""
        base = self.base_config(dataset)
        return [base.replace(**row, seed=s) for s in (tuple(seeds) if seeds else self.seeds) for row in self.main_rows]

    def follow_ups(self, record: dict) -> list[Config]:
        return then_fixed_at_final_widths(record)

    def ablation_configs(self, dataset: str = "cifar10") -> list[Config]:
        if self.ablation_seed is None:
            return []
        base = self.base_config(dataset).replace(seed=self.ablation_seed)
        ours = base.replace(method="ours", lambda_sim=self.lambda_sim)
        cfgs = [base.replace(method="ours", lambda_sim=lam) for lam in LAMBDA_SWEEP]
        cfgs += [ours.replace(sim_variant="distribution"), ours.replace(sim_scope="new"),
                 ours.replace(sim_from_round=0), ours.replace(sim_sample_rows=self.ablation_sample_rows),
                 base.replace(method="random", lambda_sim=self.lambda_sim)]
        if self.ablation_scoring_variants:
            ff = base.replace(method="firefly", lambda_sim=0.0)
            # Firefly with the project's first choices where the public code differs: scores at g = 0 (candidates
            # off) instead of with every candidate on, and no new-to-new weights.
            cfgs += [ff.replace(firefly_score_at="zero"), ff.replace(firefly_new_to_new=False)]
        return list(dict.fromkeys(cfgs))  # the default lambda is also in the sweep

    def from_round0_configs(self, dataset: str = "cifar10", seeds=None) -> list[Config]:
        """Firefly, ours, and ours with the constraint also in the first round, on every seed: the follow-up test
        of the largest single-seed effect in the ablations (docs/results.md)."""
        if not self.from_round0:
            return []
        base = self.base_config(dataset)
        ours = base.replace(method="ours", lambda_sim=self.lambda_sim)
        return [c.replace(seed=s) for s in (tuple(seeds) if seeds else self.seeds)
                for c in (base.replace(method="firefly"), ours, ours.replace(sim_from_round=0))]

    def cam_configs(self, dataset: str, seed: int, root: str = RESULTS_ROOT) -> dict[str, Config]:
        """The two runs the paper's Fig. 1(b) compares: Firefly and ours (Firefly + the constraint), same seed."""
        base = self.base_config(dataset).replace(seed=seed)
        return {"Firefly": base.replace(method="firefly"),
                "ours": base.replace(method="ours", lambda_sim=self.ours_lambda(root))}

    # --- records (trained when missing, unless train=False) ---
    def main_records(self, dataset: str, seeds=None, jobs: int = 1, root: str = RESULTS_ROOT, log=print,
                     train: bool = True) -> list[dict]:
        """The main table's runs, then one fixed network per Firefly run at its final widths."""
        return ensure(self.main_configs(dataset, seeds), self.results_dir(root), jobs, log, train,
                      then=self.follow_ups)

    def ablation_records(self, dataset: str = "cifar10", jobs: int = 1, root: str = RESULTS_ROOT, log=print,
                         train: bool = True) -> list[dict]:
        """The ablation runs plus Firefly (lambda = 0) on the same seed."""
        if self.ablation_seed is None:
            return []
        firefly = self.base_config(dataset).replace(method="firefly", seed=self.ablation_seed)
        return ensure(self.ablation_configs(dataset) + [firefly], self.results_dir(root), jobs, log, train)

    def from_round0_records(self, dataset: str = "cifar10", seeds=None, jobs: int = 1, root: str = RESULTS_ROOT,
                            log=print, train: bool = True) -> list[dict]:
        return ensure(self.from_round0_configs(dataset, seeds), self.results_dir(root), jobs, log, train)

    def comparisons(self, root: str = RESULTS_ROOT, log=print) -> dict | None:
        """{"records", "comparisons", "min_seeds", "missing"} of a study that declares the paired comparisons its
        text makes (report/tables.comparisons_table), else None."""
        return None

    def checks(self, root: str = RESULTS_ROOT) -> dict | None:
        """The outcome of a study's pre-registered rule ({"runs", "paired", "passed"}, report/tables.render_checks),
        None for a study without one or before its runs have landed."""
        return None

    def neuron_records(self, dataset: str, seeds=None, jobs: int = 1, root: str = RESULTS_ROOT) -> list[dict]:
        """The models the hyper/hypo experiments study: the main table's `neuron_rows` of the seeds."""
        keep = tuple(seeds) if seeds else self.seeds
        return [r for r in self.main_records(dataset, seeds, jobs, root)
                if method_label(r["config"]) in self.neuron_rows and r["config"]["seed"] in keep]

    def train_all(self, seeds=None, jobs: int = 1, datasets=("cifar10", "cifar100"), root: str = RESULTS_ROOT,
                  log=print, runner=None) -> list[str]:
        """Train every run the study's tables need in one pool (or as `runner`'s jobs); return the data sets whose
        runs are there (the analyses run on CIFAR-10's)."""
        cfgs, available = [], []
        for ds in (d for d in datasets if d in self.datasets):
            if not self.dataset_available(ds):
                log(f"{ds}: data not found in the data dir; its table is skipped (README 'Data' says how to get it)")
                continue
            available.append(ds)
            cfgs += self.main_configs(ds, seeds)
        if "cifar10" in available:
            cfgs += self.ablation_configs("cifar10") + self.from_round0_configs("cifar10", seeds)
        ensure(cfgs, self.results_dir(root), jobs, log, then=self.follow_ups, runner=runner)
        return available

    def missing(self, root: str = RESULTS_ROOT) -> list[Config]:
        """The runs of the study not stored yet, on the data sets that are here (as `train_all` trains them): its
        declared runs and the follow-ups of the stored ones (those of runs not yet trained are not known yet)."""
        from ..records import load_cached
        rdir = self.results_dir(root)
        declared = [c for ds in self.datasets if self.dataset_available(ds) for c in self.main_configs(ds)]
        declared += self.ablation_configs("cifar10") + self.from_round0_configs("cifar10")
        stored = [r for r in (load_cached(c, rdir) for c in declared) if r is not None]
        followed = [f for r in stored for f in self.follow_ups(r)]
        return [c for c in dict.fromkeys(declared + followed) if load_cached(c, rdir) is None]

    # --- rendering ---
    def readme_section(self, dataset: str, what: str = "main") -> str | None:
        """The README marker a table of this study is rendered into (None: not in the README)."""
        template = self.readme_sections.get(what)
        return template.format(dataset=dataset) if template else None

    def dataset_available(self, dataset: str) -> bool:
        from ..data import DataError, load_dataset
        try:
            load_dataset(self.base_config(dataset))
            return True
        except DataError:
            return False
