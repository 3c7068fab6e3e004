"""The full-CIFAR-10 study (`--preset fulldata`): its plan and the pre-registered choices of lambda.

All 50,000 training and 10,000 test images, Firefly's VGG-19 from 16 channels and its protocol, shortened only in
rounds, epochs per round and candidate passes (config.FULLDATA). Which run makes which row, and why each seed count
is what it is, is told in docs/results.md next to the numbers. The plan:

- main table: Firefly, ours and ours with the constraint from round 0 on MAIN_SEEDS (paired by seed), Firefly and the
  constraint from round 0 also on FROM_ROUND0_EXTRA_SEEDS; the fixed compact net, random growth and the fixed net
  at Firefly's final widths on OTHER_SEEDS (paired with Firefly by seed);
- lambda: swept on SWEEP_SEEDS, which are not in the main table, before any main-table run of ours. The rule was
  written down (here and in docs/method.md) before the sweep ran: **the lambda of LAMBDA_SWEEP with the highest
  mean last-epoch top-1 over the sweep seeds; an exact tie goes to the larger lambda.** Firefly is not needed by
  the rule and is not trained on the sweep seeds;
- ablation: Firefly scored as this project first did (g = 0, candidates off) on ABLATION_SEEDS;
- the constraint on other growth (`constrained_baselines`): Firefly scored at g = 0 and random growth, each with the
  constraint at the chosen lambda, on CONSTRAINED_SEEDS, paired with the same growth without it;
- equal training compute (`fixed_at_equal_compute`): the fixed net at the widths of each Firefly run of EQUAL_COMPUTE_SEEDS,
  trained from scratch in ONE round of Firefly's lr rule (milestones at 1/2 and 3/4 of the round, shift -1), for the
  whole number of epochs whose training FLOPs come closest to those of that Firefly run (within +-10 %);
- lambda past its grid, pre-registered before any of its runs: LAMBDA_EXT_GRID on LAMBDA_EXT_SEEDS. **lambda_ext is
  the lambda of LAMBDA_EXT_GRID with the highest mean last-epoch top-1 over LAMBDA_EXT_SEEDS; an exact tie goes to
  the smaller lambda.** The main table's lambda stays the first rule's. If lambda_ext is not 1, the row "ours
  (lambda = lambda_ext, grid extended after the first sweep)" is trained on MAIN_SEEDS, paired with Firefly.

Growing runs of one seed that differ only after round 0 fork from one shared round 0 (train.run, Config.round0_key);
the constraint-from-round-0 runs and the fixed nets at explicit widths train their own.
`PLAN.parts` trains the plan; docs/results.md tells how each seed count came to be what it is.
"""
from __future__ import annotations

from ..config import FULLDATA, LAMBDA_SWEEP, Config
from ..growth.fixed import is_equal_compute
from ..growth.registry import method_label
from ..records import load_cached
from ..runs.pool import ensure, stored_records
from .plan import RESULTS_ROOT, Plan, fixed_at_widths


# True while the runs the plan names are being trained, session after session: renders then show what has landed
# (and say what is missing) instead of failing; set False once the plan is complete, so that a lost record is an error.
IN_PROGRESS = False
MAIN_SEEDS = (0, 1, 2, 3, 4)
OTHER_SEEDS = (0, 1, 2, 3, 4)
ABLATION_SEEDS = (0, 1, 2, 3, 4)
FROM_ROUND0_EXTRA_SEEDS = (5,)
SWEEP_SEEDS = (100,)
CONSTRAINED_SEEDS = (0, 1, 2, 3, 4)
EQUAL_COMPUTE_SEEDS = (0, 1, 2, 3, 4)
EQUAL_COMPUTE_TOLERANCE = 0.10  # the fixed net's training FLOPs within +-10 % of its Firefly run's
LAMBDA_EXT_GRID = (1.0, 3.0, 10.0)
LAMBDA_EXT_SEEDS = (100, 101)


# The paired comparisons the study's text makes (row A, row B, the question), by growth.registry.method_label; each is
# reported as A − B over the seeds both rows have, with its 95 % t-interval (report/tables.comparisons_table).
COMPARISONS = (
    ("ours", "firefly", "the constraint on Firefly as its public code runs it"),
    ("ours (from round 0)", "firefly", "the constraint from the first round on"),
    ("firefly (scored at g = 0)", "firefly", "Firefly's scoring at g = 0 against the public scoring"),
    ("firefly (scored at g = 0)", "ours", "the stronger scoring against the constraint"),
    ("ours (scored at g = 0)", "firefly (scored at g = 0)", "the constraint on the stronger Firefly"),
    ("random + constraint", "random", "the constraint on random growth"),
    ("random", "firefly", "Firefly's selection against random growth"),
    ("firefly", "fixed (compact)", "growth against the 16-wide net it starts from"),
    ("random", "fixed (compact)", "the same, with random neurons"),
    ("fixed (Firefly's final widths)", "firefly", "growth against the fixed net at its widths (same schedule)"),
    ("fixed (Firefly's final widths)", "ours", "the same, against ours"),
    ("fixed (Firefly's final widths)", "ours (from round 0)", "the same, against ours from round 0"),
    ("fixed (Firefly's final widths)", "firefly (scored at g = 0)", "the same, against the stronger Firefly"),
    ("fixed (Firefly's final widths, equal compute)", "firefly", "growth against the fixed net at equal training FLOPs"),
    ("fixed (Firefly's final widths, equal compute)", "ours", "the same, against ours"),
)
MIN_SEEDS = 5  # fewer paired seeds than this: the comparison is reported as indicative


def sweep_configs(base: Config) -> list[Config]:
    return [base.replace(method="ours", lambda_sim=lam, seed=s) for s in SWEEP_SEEDS for lam in LAMBDA_SWEEP]


def _best_lambda(sweep_records: list[dict], grid, seeds, prefer_larger: bool) -> float:
    accs: dict[float, list[float]] = {}
    for r in sweep_records:
        accs.setdefault(r["config"]["lambda_sim"], []).append(r["final"]["test_acc"])
    if set(accs) != set(grid) or any(len(v) != len(seeds) for v in accs.values()):
        raise ValueError(f"the lambda sweep is incomplete: {sorted(accs)} of {grid} on seeds {seeds}")
    tie = 1 if prefer_larger else -1
    return max(accs, key=lambda lam: (sum(accs[lam]) / len(accs[lam]), tie * lam))


def chosen_lambda(sweep_records: list[dict]) -> float:
    """The first pre-registered rule (module docstring) applied to the sweep's records."""
    return _best_lambda(sweep_records, LAMBDA_SWEEP, SWEEP_SEEDS, prefer_larger=True)


def lambda_ext_configs(base: Config) -> list[Config]:
    """The extended grid on its seeds (seed 100's lambda = 1 run is the first sweep's)."""
    return [base.replace(method="ours", lambda_sim=lam, seed=s) for s in LAMBDA_EXT_SEEDS for lam in LAMBDA_EXT_GRID]


def lambda_ext(ext_records: list[dict]) -> float:
    """The second pre-registered rule (module docstring): best mean over LAMBDA_EXT_SEEDS, a tie to the smaller."""
    return _best_lambda(ext_records, LAMBDA_EXT_GRID, LAMBDA_EXT_SEEDS, prefer_larger=False)


def lambda_ext_row_configs(base: Config, lam_ext: float, lambda_sim: float) -> list[Config]:
    """The row of ours at lambda_ext on MAIN_SEEDS, none when lambda_ext is the main table's lambda."""
    if lam_ext == lambda_sim:
        return []
    return [base.replace(method="ours", lambda_sim=lam_ext, seed=s) for s in MAIN_SEEDS]


def independent_configs(base: Config) -> list[Config]:
    """Runs that do not depend on lambda: Firefly, random growth and the fixed compact net."""
    return ([base.replace(method="firefly", seed=s) for s in MAIN_SEEDS + FROM_ROUND0_EXTRA_SEEDS]
            + [base.replace(method=m, seed=s) for s in OTHER_SEEDS for m in ("random", "fixed")])


def ours_configs(base: Config, lambda_sim: float) -> list[Config]:
    ours = base.replace(method="ours", lambda_sim=lambda_sim)
    return ([c.replace(seed=s) for s in MAIN_SEEDS for c in (ours, ours.replace(sim_from_round=0))]
            + [ours.replace(sim_from_round=0, seed=s) for s in FROM_ROUND0_EXTRA_SEEDS])


def ablation_configs(base: Config) -> list[Config]:
    """Firefly scored at g = 0 (candidates off): accuracy and the split/new mix it selects, paired by seed with
    Firefly's public scoring."""
    return [base.replace(method="firefly", firefly_score_at="zero", seed=s) for s in ABLATION_SEEDS]


def constrained_baselines(base: Config, lambda_sim: float) -> list[Config]:
    """The constraint on the stronger Firefly (scored at g = 0) and on random growth, each paired by seed with the
    same growth without it (the ablation row and the main table's random row)."""
    return ([base.replace(method="ours", lambda_sim=lambda_sim, firefly_score_at="zero", seed=s)
             for s in CONSTRAINED_SEEDS]
            + [base.replace(method="random", lambda_sim=lambda_sim, seed=s) for s in CONSTRAINED_SEEDS])


def equal_compute_epochs(firefly_record: dict) -> tuple[int, float]:
    """(epochs, FLOP ratio) of the fixed net at a Firefly run's final widths trained for that run's training FLOPs.

    Both train on the same images, so FLOPs compare as sum over rounds of epochs x forward FLOPs per image; the
    candidate and scoring passes of Firefly's growth steps are not in its count (records' `train_flops`)."""
    cfg = firefly_record["config"]
    firefly = sum(cfg["epochs_per_round"] * rd["flops"] for rd in firefly_record["rounds"])
    per_epoch = firefly_record["final"]["flops"]
    epochs = max(1, round(firefly / per_epoch))
    ratio = epochs * per_epoch / firefly
    if abs(ratio - 1) > EQUAL_COMPUTE_TOLERANCE:
        raise ValueError(f"{firefly_record['name']}: no whole number of epochs gives its training FLOPs within "
                         f"{EQUAL_COMPUTE_TOLERANCE:.0%} (best {epochs}, ratio {ratio:.3f})")
    return epochs, ratio


def fixed_at_equal_compute(firefly_record: dict) -> Config:
    epochs, _ = equal_compute_epochs(firefly_record)
    return fixed_at_widths(firefly_record).replace(rounds=1, epochs_per_round=epochs)


def is_public_firefly(record: dict) -> bool:
    cfg = record["config"]
    return cfg["method"] == "firefly" and cfg["firefly_score_at"] == "full" and cfg["lambda_sim"] == 0


def follow_ups(record: dict) -> list[Config]:
    """The fixed nets a Firefly run (public scoring) names: at its final widths on the same schedule (OTHER_SEEDS),
    and at its final widths for its training FLOPs (EQUAL_COMPUTE_SEEDS)."""
    if not is_public_firefly(record):
        return []
    seed = record["config"]["seed"]
    return (([fixed_at_widths(record)] if seed in OTHER_SEEDS else [])
            + ([fixed_at_equal_compute(record)] if seed in EQUAL_COMPUTE_SEEDS else []))


class PlanFollowUps:
    """The plan's `then` for the pool: each Firefly run's fixed nets (follow_ups), and, as soon as the last run of the
    extended lambda grid has landed, the lambda_ext row (none when lambda_ext is the main table's lambda), so that
    its runs join the pool that is running instead of waiting for it to drain. It sees every record the pool
    stores or finds stored, and keeps the grid's by config key."""

    def __init__(self, base: Config, lambda_sim: float):
        self.grid = {c.key() for c in lambda_ext_configs(base)}
        self.base, self.lambda_sim, self.landed = base, lambda_sim, {}

    def __call__(self, record: dict) -> list[Config]:
        if record["config_key"] not in self.grid:
            return follow_ups(record)
        self.landed[record["config_key"]] = record
        if len(self.landed) < len(self.grid):
            return []
        return lambda_ext_row_configs(self.base, lambda_ext(list(self.landed.values())), self.lambda_sim)


def start_order(cfg: Config) -> int:
    """The sweeps first (their lambdas unblock runs), then the longest runs."""
    if cfg.seed in SWEEP_SEEDS + LAMBDA_EXT_SEEDS:
        return 0
    return {"firefly": 1, "ours": 2, "random": 3}.get(cfg.method, 4)


class FulldataPlan(Plan):
    """The plan above as a study: its tables are parts of one pool of runs, and its renders never train."""

    def parts(self, jobs: int = 2, root: str = RESULTS_ROOT, log=print, train: bool = True, runner=None) -> dict:
        """Train what is missing, the lambda sweep first (its lambda unblocks ours), and return the records by
        part: {"sweep", "lambda_sim", "main", "ablations", "constrained", "equal_compute", "lambda_ext_sweep",
        "lambda_ext", "lambda_ext_rows", "missing"}. With train=False nothing is trained: a missing run is an error,
        except while the plan is in progress (IN_PROGRESS), when the parts hold what has landed and "missing" names
        the rest. A `runner` trains them as submitit jobs."""
        rdir = self.results_dir(root)
        base = self.base_config("cifar10")
        sweep, independent = sweep_configs(base), independent_configs(base)
        swept = [load_cached(c, rdir) for c in sweep]
        if any(r is None for r in swept):  # lambda is not known yet: the sweep and the runs that do not need it
            first = ensure(sweep + independent, rdir, jobs, log, train, then=follow_ups, order=start_order,
                           runner=runner)
            swept = first[:len(sweep)]
        lam = chosen_lambda(swept)
        log(f"lambda_sim chosen by the pre-registered rule on seeds {SWEEP_SEEDS}: {lam:g}")
        plan = {"sweep": sweep, "lambda_ext_sweep": lambda_ext_configs(base),
                "main": independent + ours_configs(base, lam), "ablations": ablation_configs(base),
                "constrained": constrained_baselines(base, lam)}
        # One pool takes every run whose config is known, so that no process idles between the parts; the lambda_ext
        # row joins it as the follow-up of the grid's last run.
        found = _records([c for part in plan.values() for c in part], rdir, jobs, log, train, runner,
                         then=PlanFollowUps(base, lam))
        parts = {name: [found[c.key()] for c in cfgs if c.key() in found] for name, cfgs in plan.items()}
        followed = [f for r in parts["main"] for f in follow_ups(r)]
        parts["equal_compute"] = []
        for f in (f for f in followed if f.key() in found):  # same schedule: the main table; equal compute: its own
            parts["equal_compute" if is_equal_compute(found[f.key()]["config"]) else "main"].append(found[f.key()])
        cfgs = [c for part in plan.values() for c in part] + followed
        lam_ext = rows = None
        if len(parts["lambda_ext_sweep"]) == len(plan["lambda_ext_sweep"]):
            lam_ext = lambda_ext(parts["lambda_ext_sweep"])
            log(f"lambda_ext chosen by the pre-registered rule on seeds {LAMBDA_EXT_SEEDS}: {lam_ext:g}")
            rows = lambda_ext_row_configs(base, lam_ext, lam)
            cfgs += rows
        parts.update(lambda_sim=lam, lambda_ext=lam_ext,
                     lambda_ext_rows=[found[c.key()] for c in rows or [] if c.key() in found],
                     missing_configs=[c for c in dict.fromkeys(cfgs) if c.key() not in found])
        parts["missing"] = [c.name() for c in parts["missing_configs"]]
        if not train and not IN_PROGRESS and (parts["missing"] or lam_ext is None):
            raise FileNotFoundError(f"{len(parts['missing'])} run(s) of the fulldata plan missing from {rdir}: "
                                    f"{parts['missing']}")
        return parts

    def missing(self, root: str = RESULTS_ROOT) -> list[Config]:
        """Its runs not stored yet (the lambda_ext row's too, once lambda_ext is known)."""
        return self.parts(root=root, log=lambda *a: None, train=False)["missing_configs"]

    def ours_lambda(self, root: str = RESULTS_ROOT) -> float:
        """Chosen by the first pre-registered rule from the sweep's records."""
        return chosen_lambda(ensure(sweep_configs(self.base_config("cifar10")), self.results_dir(root), train=False))

    def main_records(self, dataset: str, seeds=None, jobs: int = 1, root: str = RESULTS_ROOT, log=print,
                     train: bool = True) -> list[dict]:
        """Its main table (with the equal-compute and lambda_ext rows), from stored records: CIFAR-10 only."""
        if dataset != "cifar10":
            return []
        parts = self.parts(jobs, root, log, train=False)
        return parts["main"] + parts["equal_compute"] + parts["lambda_ext_rows"]

    def ablation_records(self, dataset: str = "cifar10", jobs: int = 1, root: str = RESULTS_ROOT, log=print,
                         train: bool = True) -> list[dict]:
        """Its lambda sweeps (the first, and the grid extended past it as its runs land), the scoring ablation and
        the constraint on other growth (one line per run, where the comparisons table has only their paired
        means), with Firefly, ours (constraint from round 1) and random growth of the same seeds beside them."""
        parts = self.parts(jobs, root, log, train=False)
        beside = [r for r in parts["main"] if r["config"]["seed"] in ABLATION_SEEDS + CONSTRAINED_SEEDS
                  and (r["config"]["method"] in ("firefly", "random")
                       or (r["config"]["method"] == "ours" and r["config"]["sim_from_round"] == 1))]
        extended = [r for r in parts["lambda_ext_sweep"] if r["config_key"] not in
                    {s["config_key"] for s in parts["sweep"]}]  # seed 100's lambda = 1 is the first sweep's
        return parts["sweep"] + extended + parts["ablations"] + parts["constrained"] + beside

    def from_round0_records(self, dataset: str = "cifar10", seeds=None, jobs: int = 1, root: str = RESULTS_ROOT,
                            log=print, train: bool = True) -> list[dict]:
        """Part of its main table: Firefly and ours, from round 1 and from round 0."""
        main = self.parts(jobs, root, log, train=False)["main"]
        return [r for r in main if r["config"]["method"] in ("firefly", "ours")]

    def comparisons(self, root: str = RESULTS_ROOT, log=print) -> dict:
        parts = self.parts(root=root, log=log, train=False)
        records = [r for name in ("main", "ablations", "constrained", "equal_compute", "lambda_ext_rows")
                   for r in parts[name]]
        comparisons = list(COMPARISONS)
        if parts["lambda_ext_rows"]:
            label = method_label(parts["lambda_ext_rows"][0]["config"])
            comparisons += [(label, "firefly", "lambda past its first grid (chosen after seeing the first sweep)"),
                            (label, "ours", "lambda_ext against the main table's lambda")]
        return {"records": records, "comparisons": comparisons, "min_seeds": MIN_SEEDS, "missing": parts["missing"]}

    def train_all(self, seeds=None, jobs: int = 1, datasets=("cifar10",), root: str = RESULTS_ROOT, log=print,
                  runner=None) -> list[str]:
        self.parts(jobs, root, log, runner=runner)
        return ["cifar10"]


def _records(cfgs, rdir, jobs, log, train, runner, then=follow_ups) -> dict[str, dict]:
    """{config key: record} of `cfgs` and their follow-ups: trained when missing, else only what is stored."""
    if train:
        records = ensure(cfgs, rdir, jobs, log, True, then=then, order=start_order, runner=runner)
    else:
        records = stored_records(cfgs, rdir, then=then)
    return {r["config_key"]: r for r in records if r is not None}


PLAN = FulldataPlan(
    name="fulldata", config=FULLDATA, seeds=MAIN_SEEDS, datasets=("cifar10",),
    description="all of CIFAR-10, 3 rounds x 8 epochs (hours of CPU)",
    cam_layers=("last", "last 4x4"),  # the 2x2 maps of the last conv are coarse: also the last layer with 4x4 maps
    # Firefly and ours of its paired seeds, with the relative definition beside the absolute one (on short
    # schedules few channels pass the absolute thresholds, so E2-E4 would compare near-empty sets), and E4
    # selecting by the relative definition and adapting the first seed's models.
    neuron_rows=("firefly", "ours"), neuron_definitions=("absolute", "relative"), adapt_definition="relative",
    adapt_seeds=1,
    readme_sections={"main": "results-fulldata-{dataset}", "comparisons": "comparisons-fulldata-{dataset}"},
    trains_in_figures=False,  # its runs (hours) train only through `make results`
    from_round0_in_main=True)
