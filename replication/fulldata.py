"""The full-CIFAR-10 study (preset `fulldata`): its plan, the pre-registered choice of lambda, and its runner.

All 50,000 training and 10,000 test images, Firefly's VGG-19 from 16 channels and its protocol, shortened only in
rounds, epochs per round and candidate passes (config.FULLDATA). The plan (issue 10):

- main table: Firefly, ours and ours with the constraint from round 0 on MAIN_SEEDS (paired by seed); the fixed
  compact net, random growth and the fixed net at Firefly's final widths on OTHER_SEEDS;
- lambda: swept on SWEEP_SEEDS, which are not in the main table, before any main-table run of ours. The rule was
  written down (here and in docs/method.md) before the sweep ran: **the lambda of LAMBDA_SWEEP with the highest
  mean last-epoch top-1 over the sweep seeds; an exact tie goes to the larger lambda.** Firefly is not needed by
  the rule and is not trained on the sweep seeds.

Every growing run of one seed (not the constraint-from-round-0 one) forks from one shared round 0 (train.run).
"""
from __future__ import annotations

from .study import LAMBDA_SWEEP, RESULTS_ROOT, base_config, ensure, fixed_at_final_widths, results_dir

PRESET = "fulldata"
MAIN_SEEDS = (0, 1, 2, 3, 4)  # >= 5 paired seeds for Firefly and the two rows of ours
OTHER_SEEDS = (0, 1, 2)  # >= 3 for the other rows
SWEEP_SEEDS = (100,)  # one seed: the budget of a 10-hour CPU study (docs/performance.md)


def _base():
    return base_config(PRESET, "cifar10")


def sweep_configs():
    return [_base().replace(method="ours", lambda_sim=lam, seed=s) for s in SWEEP_SEEDS for lam in LAMBDA_SWEEP]


def chosen_lambda(sweep_records: list[dict]) -> float:
    """The pre-registered rule (module docstring) applied to the sweep's records."""
    accs: dict[float, list[float]] = {}
    for r in sweep_records:
        accs.setdefault(r["config"]["lambda_sim"], []).append(r["final"]["test_acc"])
    if set(accs) != set(LAMBDA_SWEEP) or any(len(v) != len(SWEEP_SEEDS) for v in accs.values()):
        raise ValueError(f"the lambda sweep is incomplete: {sorted(accs)} of {LAMBDA_SWEEP}")
    return max(accs, key=lambda lam: (sum(accs[lam]) / len(accs[lam]), lam))


def independent_configs():
    """Runs that do not depend on lambda: Firefly, random growth and the fixed compact net."""
    base = _base()
    return ([base.replace(method="firefly", seed=s) for s in MAIN_SEEDS]
            + [base.replace(method=m, seed=s) for s in OTHER_SEEDS for m in ("random", "fixed")])


def ours_configs(lambda_sim: float):
    ours = _base().replace(method="ours", lambda_sim=lambda_sim)
    return [c.replace(seed=s) for s in MAIN_SEEDS for c in (ours, ours.replace(sim_from_round=0))]


def ablation_configs():
    """Firefly scored as this project first did (g = 0, candidates off), on the first seed: the split/new mix and
    accuracy each scoring point gives, after lambda-dependent runs (lowest priority)."""
    return [_base().replace(method="firefly", firefly_score_at="zero", seed=MAIN_SEEDS[0])]


def _then_fixed(record: dict):
    cfg = record["config"]
    return [fixed_at_final_widths(record)] if cfg["method"] == "firefly" and cfg["seed"] in OTHER_SEEDS else []


def _sweep_first(cfg) -> int:
    return 0 if cfg.seed in SWEEP_SEEDS else {"firefly": 1, "ours": 2, "random": 3}.get(cfg.method, 4)


def study(jobs: int = 2, root: str = RESULTS_ROOT, log=print, train: bool = True) -> dict:
    """Train what is missing, sweep first (its lambda unblocks ours), and return the records by part:
    {"sweep", "lambda_sim", "main"}. With train=False a missing run is an error."""
    rdir = results_dir(PRESET, root)
    first = sweep_configs() + independent_configs()
    records = ensure(first, rdir, jobs, log, train, then=_then_fixed, order=_sweep_first)
    sweep, rest = records[:len(SWEEP_SEEDS) * len(LAMBDA_SWEEP)], records[len(SWEEP_SEEDS) * len(LAMBDA_SWEEP):]
    lam = chosen_lambda(sweep)
    log(f"lambda_sim chosen by the pre-registered rule on seeds {SWEEP_SEEDS}: {lam:g}")
    main = rest + ensure(ours_configs(lam), rdir, jobs, log, train)
    return {"sweep": sweep, "lambda_sim": lam, "main": main,
            "ablations": ensure(ablation_configs(), rdir, jobs, log, train)}
