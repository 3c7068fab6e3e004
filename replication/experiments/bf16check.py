"""`bf16check`: is bf16 autocast a faithful stand-in for fp32 on the `fulldata` protocol? Decided by a rule written
here before any of its runs (issue 21, section 2).

Runs: the `fulldata` protocol in every respect but `precision="bf16"`, for Firefly (public scoring) and ours
(lambda = 1, the pre-registered value), on SEEDS. Their growth decisions will differ from the fp32 runs of the same
seeds (as they do on another CPU); the question is whether the distribution is the same.

**Pre-registered rule** (issue 21; committed before the first bf16 run): bf16 passes if (1) each bf16 run's
last-epoch top-1 lies within its method's fp32 row mean ± 3 std (the fp32 rows of the fulldata main table, all
their seeds), and (2) the bf16 paired ours − Firefly mean over SEEDS lies inside the fp32 paired 95 % t-interval
of ours − Firefly (the fulldata main table's, over its paired seeds). Both must hold. The outcome is reported
either way (docs/results.md); bf16 records never replace the fp32 rows. `check` applies the rule.
"""
from __future__ import annotations

from ..config import FULLDATA, Config
from ..growth.registry import method_label
from ..records import RESULTS_ROOT
from ..stats import ci95
from . import fulldata
from .plan import Plan

SEEDS = (0, 1, 2)
STD_BAND = 3  # rule (1): within the fp32 row's mean +- 3 std
METHODS = ("firefly", "ours")


def check(bf16_records: list[dict], fp32_records: list[dict]) -> dict:
    """The pre-registered rule applied: {"runs": per bf16 run its band and verdict, "paired": the bf16 paired mean
    and the fp32 interval, "passed": both parts}. Raises while a bf16 run of the rule is missing."""
    def by_method(records):
        rows = {}
        for r in records:
            rows.setdefault(method_label(r["config"]), {})[r["config"]["seed"]] = 100 * r["final"]["test_acc"]
        return rows
    bf16, fp32 = by_method(bf16_records), by_method(fp32_records)
    missing = [(m, s) for m in METHODS for s in SEEDS if s not in bf16.get(m, {})]
    if missing:
        raise ValueError(f"the bf16 check needs every run of its rule; missing (method, seed): {missing}")
    runs = []
    for m in METHODS:
        ref = list(fp32[m].values())
        mean = sum(ref) / len(ref)
        sd = (sum((v - mean) ** 2 for v in ref) / (len(ref) - 1)) ** 0.5
        for s in SEEDS:
            acc = bf16[m][s]
            runs.append({"method": m, "seed": s, "bf16 top-1 (%)": acc, "fp32 mean (%)": mean, "fp32 std": sd,
                         "fp32 seeds": len(ref), "inside mean ± 3 std": abs(acc - mean) <= STD_BAND * sd})
    common = sorted(set(fp32["ours"]) & set(fp32["firefly"]))
    fp32_mean, fp32_half = ci95([fp32["ours"][s] - fp32["firefly"][s] for s in common])
    bf16_mean = sum(bf16["ours"][s] - bf16["firefly"][s] for s in SEEDS) / len(SEEDS)
    inside = fp32_mean - fp32_half <= bf16_mean <= fp32_mean + fp32_half
    paired = {"bf16 ours − firefly (pp)": bf16_mean, "bf16 seeds": len(SEEDS), "fp32 ours − firefly (pp)": fp32_mean,
              "fp32 95 % CI half-width (pp)": fp32_half, "fp32 paired seeds": len(common),
              "inside the fp32 interval": inside}
    return {"runs": runs, "paired": paired, "passed": all(r["inside mean ± 3 std"] for r in runs) and inside}


class Bf16CheckPlan(Plan):
    """Its main table is the six bf16 runs; `checks` applies the rule against the fulldata study's fp32 rows."""

    def main_configs(self, dataset: str, seeds=None) -> list[Config]:
        base = self.base_config(dataset)
        return [base.replace(method="firefly", seed=s) if m == "firefly"
                else base.replace(method="ours", lambda_sim=fulldata.PLAN.lambda_sim, seed=s)
                for s in (tuple(seeds) if seeds else self.seeds) for m in METHODS]

    def follow_ups(self, record: dict) -> list:
        return []

    def train_all(self, seeds=None, jobs: int = 1, datasets=("cifar10",), root: str = RESULTS_ROOT, log=print,
                  runner=None) -> list[str]:
        """The six runs only; no analyses (the study's question is the rule's)."""
        from ..runs.pool import ensure
        ensure(self.main_configs("cifar10", seeds), self.results_dir(root), jobs, log, runner=runner)
        return []

    def checks(self, root: str = RESULTS_ROOT) -> dict | None:
        """The rule's outcome once every run of it has landed (None before)."""
        from ..records import load_cached
        rdir = self.results_dir(root)
        if any(load_cached(c, rdir) is None for c in self.main_configs("cifar10")):
            return None
        return check(self.main_records("cifar10", root=root, train=False),
                     fulldata.PLAN.main_records("cifar10", root=root))


PLAN = Bf16CheckPlan(
    name="bf16check", config=FULLDATA.replace(precision="bf16"), seeds=SEEDS, datasets=("cifar10",),
    description="fulldata in bf16 autocast, Firefly and ours on seeds 0-2: the pre-registered bf16 check",
    ablation_seed=None, from_round0=False, trains_in_figures=False,
    # Its question is the rule's: the main table and the check render; no Grad-CAM, similarity-over-rounds or
    # hyper/hypo analyses of these runs.
    skipped_notebooks=("02_cifar100_table.ipynb", "03_gradcam.ipynb", "06_ablations.ipynb", "07_neurons.ipynb"))
