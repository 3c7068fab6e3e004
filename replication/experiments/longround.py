"""`longround`: does the fulldata verdict hold when each round trains three times longer? (issue 21, section 3)

The `fulldata` protocol in every respect but **24 epochs per round** (3 rounds, 2 growth steps, 72 epochs in all,
Firefly's lr rule within each round: drops after epochs 11 and 17 of each round). Rows, paired by seed: Firefly
(public scoring), ours (lambda = 1, the fulldata study's pre-registered value) and the fixed net at that Firefly
run's final widths on the same schedule, on SEEDS; the fixed compact net on COMPACT_SEEDS. Reported beside the
8-epoch study row by row (COMPARISONS), with the Grad-CAM metrics of Firefly and ours at both layers.

Precision: bf16 autocast if the pre-registered bf16 check (bf16check.py) passes, fp32 otherwise, with the same seed
counts. PRECISION is set by a commit once that check's outcome is rendered, before the first run of this study;
until then the study refuses to train.
"""
from __future__ import annotations

from ..config import FULLDATA, Config
from ..records import RESULTS_ROOT
from . import fulldata
from .plan import Plan

# bf16check passed its pre-registered rule (docs/results.md, "The bf16 check"; records committed in results/bf16check/)
PRECISION: str | None = "bf16"  # "bf16" if bf16check passes, else "fp32" (issue 21); None: not decided yet
EPOCHS_PER_ROUND = 24  # issue 21: three times fulldata's 8
SEEDS = (0, 1, 2, 3, 4)
COMPACT_SEEDS = (0, 1, 2)
COMPARISONS = (
    ("ours", "firefly", "the constraint on Firefly as its public code runs it, rounds of 24 epochs"),
    ("fixed (Firefly's final widths)", "firefly", "growth against the fixed net at its widths (same schedule)"),
    ("fixed (Firefly's final widths)", "ours", "the same, against ours"),
)
MIN_SEEDS = fulldata.MIN_SEEDS


class LongRoundPlan(Plan):
    def base_config(self, dataset: str) -> Config:
        if PRECISION is None:
            raise ValueError("the longround study's precision is decided by the bf16 check (experiments/"
                             "bf16check.py): set longround.PRECISION once its outcome is committed")
        return super().base_config(dataset).replace(precision=PRECISION)

    def main_configs(self, dataset: str, seeds=None) -> list[Config]:
        """Firefly and ours on every seed, the fixed compact net on COMPACT_SEEDS (the fixed nets at Firefly's
        widths follow each Firefly run)."""
        base = self.base_config(dataset)
        seeds = tuple(seeds) if seeds else self.seeds
        return [c for s in seeds for c in
                [base.replace(method="firefly", seed=s),
                 base.replace(method="ours", lambda_sim=fulldata.PLAN.lambda_sim, seed=s)]
                + ([base.replace(method="fixed", seed=s)] if s in COMPACT_SEEDS else [])]

    def main_records(self, dataset: str, seeds=None, jobs: int = 1, root: str = RESULTS_ROOT, log=print,
                     train: bool = True) -> list[dict]:
        """Stored records only: its runs (hours) train through `make results PRESET=longround`."""
        return super().main_records(dataset, seeds, jobs, root, log, train=False)

    def comparisons(self, root: str = RESULTS_ROOT, log=print) -> dict:
        """Its comparisons over the whole study: main_records names the missing runs and refuses until every one
        is stored, so nothing is ever missing here."""
        records = self.main_records("cifar10", root=root, train=False)
        return {"records": records, "comparisons": list(COMPARISONS), "min_seeds": MIN_SEEDS, "missing": []}


PLAN = LongRoundPlan(
    name="longround", config=FULLDATA.replace(epochs_per_round=EPOCHS_PER_ROUND), seeds=SEEDS, datasets=("cifar10",),
    description="fulldata with rounds of 24 epochs (72 in all)",
    ablation_seed=None, from_round0=False,
    cam_layers=("last", "last 4x4"),  # as fulldata: the last conv and the last layer with 4x4 maps
    neuron_rows=(),  # no hyper/hypo analyses: its question is the verdicts' dependence on round length
    trains_in_figures=False,  # hours of CPU: `make results PRESET=longround` trains, figures only render
    beside="fulldata",  # its report: each comparison and row next to the 8-epoch study's
    readme_sections={"beside": "longround-beside-fulldata-{dataset}"},  # the README shows that report
    skipped_notebooks=("02_cifar100_table.ipynb", "06_ablations.ipynb", "07_neurons.ipynb"))
