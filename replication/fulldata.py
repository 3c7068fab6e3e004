"""The full-CIFAR-10 study (preset `fulldata`): its plan and the pre-registered choice of lambda.

All 50,000 training and 10,000 test images, Firefly's VGG-19 from 16 channels and its protocol, shortened only in
rounds, epochs per round and candidate passes (config.FULLDATA). The plan (issue 10):

- main table: Firefly, ours and ours with the constraint from round 0 on MAIN_SEEDS (paired by seed), Firefly and the
  constraint from round 0 also on FROM_ROUND0_EXTRA_SEEDS (their paired interval needed more seeds); the fixed
  compact net, random growth and the fixed net at Firefly's final widths on OTHER_SEEDS;
- lambda: swept on SWEEP_SEEDS, which are not in the main table, before any main-table run of ours. The rule was
  written down (here and in docs/method.md) before the sweep ran: **the lambda of LAMBDA_SWEEP with the highest
  mean last-epoch top-1 over the sweep seeds; an exact tie goes to the larger lambda.** Firefly is not needed by
  the rule and is not trained on the sweep seeds;
- ablation: Firefly scored as this project first did (g = 0, candidates off) on ABLATION_SEEDS.

Every growing run of one seed (not the constraint-from-round-0 one) forks from one shared round 0 (train.run).
`study.fulldata_study` trains the plan.
"""
from __future__ import annotations

from .config import LAMBDA_SWEEP, Config

PRESET = "fulldata"
MAIN_SEEDS = (0, 1, 2, 3, 4)  # >= 5 paired seeds for Firefly and the two rows of ours
OTHER_SEEDS = (0, 1, 2)  # >= 3 for the other rows
# The scoring ablation ran first on seed 0 alone (the issue asks for one); it came out 1.3 pp above Firefly's public
# scoring there, a difference one seed cannot carry, so seeds 1 and 2 were added (2 runs, ~40 min of the study).
ABLATION_SEEDS = (0, 1, 2)
# The constraint from round 0 gave ours - Firefly of +0.64, +0.77, +1.53, -0.79 and +1.51 pp on MAIN_SEEDS: a paired
# 95 % interval of +-1.17 pp, wider than the issue's +-1.0, whose rule is to add seeds until it is narrower. So seed 5
# was added for Firefly and that row (2 runs, ~40 min of wall time); ours from round 1 (+-0.40 pp) stays on MAIN_SEEDS.
FROM_ROUND0_EXTRA_SEEDS = (5,)
SWEEP_SEEDS = (100,)  # one seed: the budget of a 10-hour CPU study (docs/performance.md)


def sweep_configs(base: Config) -> list[Config]:
    return [base.replace(method="ours", lambda_sim=lam, seed=s) for s in SWEEP_SEEDS for lam in LAMBDA_SWEEP]


def chosen_lambda(sweep_records: list[dict]) -> float:
    """The pre-registered rule (module docstring) applied to the sweep's records."""
    accs: dict[float, list[float]] = {}
    for r in sweep_records:
        accs.setdefault(r["config"]["lambda_sim"], []).append(r["final"]["test_acc"])
    if set(accs) != set(LAMBDA_SWEEP) or any(len(v) != len(SWEEP_SEEDS) for v in accs.values()):
        raise ValueError(f"the lambda sweep is incomplete: {sorted(accs)} of {LAMBDA_SWEEP}")
    return max(accs, key=lambda lam: (sum(accs[lam]) / len(accs[lam]), lam))


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


def wants_fixed_follow_up(record: dict) -> bool:
    """A fixed net at Firefly's final widths follows the Firefly runs of OTHER_SEEDS."""
    cfg = record["config"]
    return cfg["method"] == "firefly" and cfg["firefly_score_at"] == "full" and cfg["seed"] in OTHER_SEEDS


def start_order(cfg: Config) -> int:
    """The sweep first (its lambda unblocks ours), then the longest runs."""
    return 0 if cfg.seed in SWEEP_SEEDS else {"firefly": 1, "ours": 2, "random": 3}.get(cfg.method, 4)
