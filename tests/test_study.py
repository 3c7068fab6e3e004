import operator
import os

import pytest

from replication import experiments
from replication.analysis import hyper_hypo
from replication.runs import pool
from replication.config import SMOKE
from replication.data import load_dataset
from replication.experiments.plan import then_fixed_at_final_widths
from replication.growth.registry import method_label


def test_map_processes_in_worker_processes_equals_in_this_one():
    serial = pool.map_processes(operator.add, [1, 2, 3, 4], 1, 10)
    assert serial == [11, 12, 13, 14]
    assert pool.map_processes(operator.add, [1, 2, 3, 4], 2, 10) == serial  # order kept, shared sent to workers


def test_ensure_starts_longest_runs_first_and_trains_follow_ups(tmp_path):
    cfgs = [SMOKE.replace(method=m, seed=0) for m in ("fixed", "random", "firefly")]
    assert sorted(cfgs, key=pool.longest_first)[0].method == "firefly"  # its follow-up waits for it
    trained = []
    recs = pool.ensure(cfgs, str(tmp_path), jobs=1, log=trained.append, then=then_fixed_at_final_widths)
    assert [r["config"]["method"] for r in recs] == ["fixed", "random", "firefly", "fixed"]
    grown = recs[2]["final"]["widths"]
    assert grown != [SMOKE.start_width] * len(grown) and recs[3]["config"]["widths"] == grown
    assert recs[3]["config"]["start_width"] is None and recs[3]["final"]["widths"] == grown
    # Everything is cached now: the same call, not allowed to train, returns the same records.
    again = pool.ensure(cfgs, str(tmp_path), jobs=1, train=False, then=then_fixed_at_final_widths)
    assert [r["config_key"] for r in again] == [r["config_key"] for r in recs]
    with pytest.raises(FileNotFoundError, match="missing"):
        pool.ensure([SMOKE.replace(seed=5)], str(tmp_path), train=False)


def test_neuron_analyses_in_two_processes_equal_one(tmp_path):
    """E1 and E3 computed model by model in worker processes give the table computed in this process."""
    root = str(tmp_path)
    records = experiments.plan("smoke").neuron_records("cifar10", seeds=(0,), root=root)
    assert {r["config"]["method"] for r in records} == {"fixed", "firefly", "ours"}
    ds = load_dataset(experiments.plan("smoke").base_config("cifar10"))
    rdir = experiments.plan("smoke").results_dir(root)
    serial = hyper_hypo.census(records, ds, rdir, jobs=1)
    os.remove(os.path.join(rdir, "neurons_stats.csv"))
    parallel = hyper_hypo.census(records, ds, rdir, jobs=2)
    assert parallel.equals(serial)
    e3 = hyper_hypo.removal(records, ds, rdir, serial, jobs=1)
    os.remove(os.path.join(rdir, "neurons_removal.csv"))
    assert hyper_hypo.removal(records, ds, rdir, serial, jobs=2).equals(e3)


def test_two_processes_train_a_shared_round0_once_and_fork_from_it(tmp_path):
    """Three runs of one seed share round 0: one round-0 job stores it, and all three records (two of them forked)
    equal those a single process trains."""
    cfgs = [SMOKE.replace(method=m, lambda_sim=0.5 if m == "ours" else 0.0, seed=0)
            for m in ("firefly", "ours", "random")]
    logs = []
    two = pool.ensure(cfgs, str(tmp_path / "two"), jobs=2, log=logs.append)
    assert sum("round 0 of" in line for line in logs) == 1
    assert sum("forked_round0" in r for r in two) >= 2
    one = pool.ensure(cfgs, str(tmp_path / "one"), jobs=1, log=lambda *a: None)
    for a, b in zip(two, one):
        assert [e["train_loss"] for e in a["epochs"]] == [e["train_loss"] for e in b["epochs"]]
        assert a["final"] == b["final"]


def test_fulldata_plan_sweeps_lambda_on_seeds_outside_the_main_table():
    from replication.experiments import fulldata
    from replication.config import FULLDATA
    assert not set(fulldata.SWEEP_SEEDS) & (set(fulldata.MAIN_SEEDS) | set(fulldata.OTHER_SEEDS))
    assert len(fulldata.MAIN_SEEDS) >= 5 and len(fulldata.OTHER_SEEDS) >= 3
    assert FULLDATA.train_per_class is None and FULLDATA.test_per_class is None  # all 50,000 / 10,000 images
    assert FULLDATA.firefly_candidate_images >= 100 * FULLDATA.firefly_candidate_batch_size  # >= 100 RMSprop steps
    ours = fulldata.ours_configs(experiments.plan("fulldata").base_config("cifar10"), 0.1)
    assert {c.sim_from_round for c in ours} == {0, 1}
    assert {c.seed for c in ours if c.sim_from_round == 1} == set(fulldata.MAIN_SEEDS)
    from_round0 = {c.seed for c in ours if c.sim_from_round == 0}
    assert from_round0 == set(fulldata.MAIN_SEEDS + fulldata.FROM_ROUND0_EXTRA_SEEDS)
    firefly = {c.seed for c in fulldata.independent_configs(experiments.plan("fulldata").base_config("cifar10"))
               if c.method == "firefly"}
    assert from_round0 <= firefly  # every row of ours is paired with Firefly of its seed


def test_fulldata_lambda_rule_takes_the_best_mean_and_breaks_ties_upwards():
    from replication.experiments import fulldata

    def rec(lam, acc, seed):
        return {"config": {"lambda_sim": lam, "seed": seed}, "final": {"test_acc": acc}}
    seeds = fulldata.SWEEP_SEEDS
    accs = dict(zip(fulldata.LAMBDA_SWEEP, (0.70, 0.72, 0.72, 0.71)))
    records = [rec(lam, a, s) for lam, a in accs.items() for s in seeds]
    assert fulldata.chosen_lambda(records) == fulldata.LAMBDA_SWEEP[2]  # a tie between 1e-2 and 1e-1 goes up
    with pytest.raises(ValueError, match="incomplete"):
        fulldata.chosen_lambda(records[1:])


def test_main_table_pairs_both_rows_of_ours_with_firefly():
    from replication.report import tables

    def rec(method, seed, acc, from_round=1, lam=0.0):
        cfg = {**SMOKE.replace(method=method, seed=seed, lambda_sim=lam, sim_from_round=from_round).result_fields()}
        return {"config": cfg, "config_key": str(seed), "wall_time_s": 1.0,
                "final": {"test_acc": acc, "params": 1, "flops": 1, "train_flops": 1}}
    records = [rec("firefly", s, 0.70 + 0.01 * s) for s in range(3)]
    records += [rec("ours", s, 0.71 + 0.01 * s, lam=1.0) for s in range(3)]
    records += [rec("ours", s, 0.73 + 0.01 * s, from_round=0, lam=1.0) for s in range(3)]
    table, caption, md = tables.render_main(records, "cifar10", "smoke")
    assert list(table["method"]) == ["firefly", "ours", "ours (from round 0)"]
    assert "Paired difference ours − Firefly over 3 seed(s): +1.00" in md
    assert "Paired difference ours (from round 0) − Firefly over 3 seed(s): +3.00" in md


def test_main_caption_names_each_rows_seeds_when_they_differ():
    from replication.report import tables

    def rec(method, seed):
        cfg = SMOKE.replace(method=method, seed=seed).result_fields()
        return {"config": cfg, "config_key": str(seed), "wall_time_s": 1.0,
                "final": {"test_acc": 0.5, "params": 1, "flops": 1, "train_flops": 1}}
    same = [rec(m, s) for m in ("fixed", "firefly") for s in range(3)]
    assert "mean ± std over 3 seed(s)." in tables.render_main(same, "cifar10", "smoke")[1]
    mixed = [rec("fixed", s) for s in range(3)] + [rec("firefly", s) for s in range(5)]
    assert "over each row's seeds (3 or 5: the seeds column)" in tables.render_main(mixed, "cifar10", "smoke")[1]
    three = mixed + [rec("random", s) for s in range(6)]
    assert "over each row's seeds (3, 5 or 6: the seeds column)" in tables.render_main(three, "cifar10", "smoke")[1]


def test_lambda_sweep_rows_take_the_swept_seed_only():
    import pandas as pd

    from replication.report import tables

    def row(lam, seed, score_at="full", variant="decorrelate", top1=70.0):
        return {"growth": "firefly", "variant": variant if lam > 0 else "-", "scope": "all" if lam > 0 else "-",
                "from round": 1 if lam > 0 else "-", "rows": "all" if lam > 0 else "-", "score at": score_at,
                "lambda_sim": lam, "seed": seed, "top-1 (%)": top1}
    table = pd.DataFrame([row(0.0, 0), row(0.0, 0, score_at="zero"), row(1.0, 0)]
                         + [row(lam, 100) for lam in (1.0, 0.1, 0.01)] + [row(0.1, 100, variant="whiten")])
    sweep = tables.lambda_sweep_rows(table)
    assert list(sweep["seed"].unique()) == [100] and list(sweep["lambda_sim"]) == [0.01, 0.1, 1.0]
    quick_like = tables.lambda_sweep_rows(table[table["seed"] == 0])  # Firefly is the sweep's lambda = 0
    assert list(quick_like["lambda_sim"]) == [0.0, 1.0]


def test_widths_frame_has_one_row_per_run_and_layer():
    from replication.report import plots

    recs = [{"config": SMOKE.replace(method=m, seed=s).result_fields(), "final": {"widths": [4 + s, 8, 6]}}
            for m in ("firefly", "random") for s in range(2)]
    df = plots.widths_frame(recs)
    assert len(df) == 4 * 3 and sorted(df["layer"].unique()) == [1, 2, 3]
    assert df[(df["method"] == "firefly") & (df["layer"] == 1)]["width"].tolist() == [4, 5]


def test_width_stats_are_over_seeds_per_method_and_layer_in_record_order():
    from replication.report import plots

    widths = {("random", 0): [20, 30], ("firefly", 0): [40, 10], ("random", 1): [24, 34], ("firefly", 1): [44, 18]}
    recs = [{"config": SMOKE.replace(method=m, seed=s).result_fields(), "final": {"widths": w}}
            for (m, s), w in widths.items()]
    stats = plots.width_stats(recs)
    assert list(stats["method"]) == ["random", "random", "firefly", "firefly"]
    assert list(stats["layer"]) == [1, 2, 1, 2]
    assert list(stats["mean"]) == [22.0, 32.0, 42.0, 14.0]
    assert stats["std"].to_numpy() == pytest.approx([8 ** 0.5, 8 ** 0.5, 8 ** 0.5, 32 ** 0.5])
    fig = plots.final_widths(stats)
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["random", "firefly"]
    plots.plt.close(fig)


def _fake_record(c):
    """A record as train.run writes it, with the fields the plan reads (three rounds of growth for Firefly)."""
    widths = [16 + 8 * r for r in range(3)]
    return {"name": c.name(), "config_key": c.key(), "config": c.result_fields(),
            "rounds": [{"flops": 1_000_000 * w} for w in widths],
            "final": {"test_acc": 0.5 + 0.01 * c.lambda_sim + 0.001 * c.seed, "widths": [widths[-1]] * 16,
                      "flops": 1_000_000 * widths[-1]}}


def _fake_ensure(calls):
    def fake_ensure(cfgs, rdir, jobs=1, log=print, train=True, then=None, order=None, runner=None):
        calls.append(list(cfgs))
        recs = [_fake_record(c) for c in cfgs]
        return recs + [_fake_record(f) for r in recs for f in (then(r) if then else [])]
    return fake_ensure


def test_fulldata_study_trains_the_sweep_first_then_every_other_run_in_one_pool(monkeypatch, tmp_path):
    """Without a stored sweep, lambda is unknown: the sweep and the runs that do not need it train first; then one
    pool takes every other run (no process idles between the parts); the records come back sorted into parts."""
    from replication.experiments import fulldata
    calls = []
    monkeypatch.setattr(fulldata, "ensure", _fake_ensure(calls))
    parts = fulldata.PLAN.parts(root=str(tmp_path), log=lambda *a: None)
    assert parts["lambda_sim"] == max(fulldata.LAMBDA_SWEEP)  # the fake accuracies rise with lambda
    assert parts["lambda_ext"] == max(fulldata.LAMBDA_EXT_GRID)
    assert len(calls) == 2 and {c.method for c in calls[0]} == {"ours", "firefly", "random", "fixed"}
    assert {c.method for c in calls[1]} == {"ours", "firefly", "random", "fixed"}
    # the lambda_ext row is no call of its own: it joins the pool as a follow-up of the grid's last run
    rows = parts["lambda_ext_rows"]
    assert {(r["config"]["method"], r["config"]["lambda_sim"]) for r in rows} == {
        ("ours", max(fulldata.LAMBDA_EXT_GRID))}
    assert {r["config"]["seed"] for r in rows} == set(fulldata.MAIN_SEEDS)
    assert [r["config"]["firefly_score_at"] for r in parts["ablations"]] == ["zero"] * len(fulldata.ABLATION_SEEDS)
    ours = [r for r in parts["main"] if r["config"]["method"] == "ours"]
    assert len(ours) == 2 * len(fulldata.MAIN_SEEDS) + len(fulldata.FROM_ROUND0_EXTRA_SEEDS)
    fixed_at_widths = [r for r in parts["main"] if r["config"]["widths"] is not None]
    assert {r["config"]["seed"] for r in fixed_at_widths} == set(fulldata.OTHER_SEEDS)
    assert all(r["config"]["rounds"] == 3 for r in fixed_at_widths)  # the same schedule as Firefly
    assert {r["config"]["seed"] for r in parts["equal_compute"]} == set(fulldata.EQUAL_COMPUTE_SEEDS)
    assert all(r["config"]["rounds"] == 1 for r in parts["equal_compute"])
    assert {(r["config"]["method"], r["config"]["firefly_score_at"]) for r in parts["constrained"]} == {
        ("ours", "zero"), ("random", "full")}
    assert all(r["config"]["lambda_sim"] == parts["lambda_sim"] for r in parts["constrained"])
    assert parts["missing"] == []


def test_fulldata_study_with_a_stored_sweep_trains_everything_in_one_pool(monkeypatch, tmp_path):
    """When the sweep's records are stored, lambda is known up front: one `ensure` call takes every run whose
    config is known, and the parts, follow-ups included, are those of the two-phase study."""
    from replication.experiments import fulldata
    calls = []
    monkeypatch.setattr(fulldata, "ensure", _fake_ensure(calls))
    two_phase = fulldata.PLAN.parts(root=str(tmp_path), log=lambda *a: None)
    stored = {c: _fake_record(c) for c in fulldata.sweep_configs(experiments.plan("fulldata").base_config("cifar10"))}
    monkeypatch.setattr(fulldata, "load_cached", lambda c, rdir: stored.get(c))
    calls.clear()
    one_pool = fulldata.PLAN.parts(root=str(tmp_path), log=lambda *a: None)
    assert len(calls) == 1  # every known run, the row that lambda_ext names joining as a follow-up
    assert {k: sorted(r["name"] for r in v) if isinstance(v, list) else v for k, v in one_pool.items()} == {
        k: sorted(r["name"] for r in v) if isinstance(v, list) else v for k, v in two_phase.items()}


def test_fulldata_renders_while_in_progress_and_refuses_a_missing_run_once_complete(monkeypatch, tmp_path):
    """With train=False nothing trains: while the plan is in progress the parts hold what has landed and name the
    rest; once it is declared complete, a missing run is an error."""
    from replication.experiments import fulldata
    base = experiments.plan("fulldata").base_config("cifar10")
    landed = {c: _fake_record(c) for c in fulldata.sweep_configs(base) + fulldata.independent_configs(base)}
    monkeypatch.setattr(fulldata, "load_cached", lambda c, rdir: landed.get(c))
    monkeypatch.setattr(pool, "load_cached", lambda c, rdir: landed.get(c))
    monkeypatch.setattr(fulldata, "ensure", lambda *a, **k: pytest.fail("must not train"))
    monkeypatch.setattr(fulldata, "IN_PROGRESS", True)
    parts = fulldata.PLAN.parts(root=str(tmp_path), log=lambda *a: None, train=False)
    assert len(parts["main"]) == len(fulldata.independent_configs(base))
    assert parts["lambda_ext"] is None and parts["constrained"] == [] and parts["missing"]
    assert not any(name in parts["missing"] for name in (c.name() for c in landed))
    monkeypatch.setattr(fulldata, "IN_PROGRESS", False)
    with pytest.raises(FileNotFoundError, match="missing"):
        fulldata.PLAN.parts(root=str(tmp_path), log=lambda *a: None, train=False)


def test_fulldata_ablation_table_lists_each_run_of_the_constraint_on_other_growth_beside_its_pair(monkeypatch):
    """The constrained baselines have no main-table row: the ablation table lists each of their runs, next to the
    run of the same growth and seed without the constraint that the comparisons pair them with."""
    from replication.experiments import fulldata
    monkeypatch.setattr(fulldata, "load_cached", lambda c, rdir: _fake_record(c))
    monkeypatch.setattr(pool, "load_cached", lambda c, rdir: _fake_record(c))
    records = fulldata.PLAN.ablation_records(log=lambda *a: None, train=False)
    lam = max(fulldata.LAMBDA_SWEEP)  # the fake accuracies rise with lambda
    seen = {(r["config"]["method"], r["config"]["firefly_score_at"], r["config"]["lambda_sim"], r["config"]["seed"])
            for r in records if r["config"]["sim_from_round"] == 1}
    for s in fulldata.CONSTRAINED_SEEDS:
        assert {("random", "full", 0.0, s), ("random", "full", lam, s), ("firefly", "zero", 0.0, s),
                ("ours", "zero", lam, s)} <= seen
    assert len({r["config_key"] for r in records}) == len(records)  # no run twice


def test_fulldata_lambda_ext_row_follows_the_grid_last_run_once_and_only_past_the_first_lambda():
    """The pool's `then` names the lambda_ext row when the sixth run of the grid lands (in any order, each record
    seen any number of times), not before; and none when lambda_ext is the main table's lambda."""
    from replication.experiments import fulldata
    base = experiments.plan("fulldata").base_config("cifar10")
    grid = fulldata.lambda_ext_configs(base)
    for best, expect in ((10.0, fulldata.lambda_ext_row_configs(base, 10.0, 1.0)), (1.0, [])):
        then = fulldata.PlanFollowUps(base, 1.0)
        records = [{**_fake_record(c), "final": {"test_acc": 0.8 if c.lambda_sim == best else 0.7}} for c in grid]
        seen = [then(r) for r in records[:-1] + records[:2]]
        assert seen == [[]] * len(seen)
        assert then(records[-1]) == expect and then(records[0]) == expect
    firefly = _fake_record(base.replace(method="firefly", seed=0))
    assert fulldata.PlanFollowUps(base, 1.0)(firefly) == fulldata.follow_ups(firefly)


def test_fulldata_lambda_ext_rule_breaks_ties_downwards_and_adds_a_row_only_past_the_first_lambda():
    from replication.experiments import fulldata
    base = experiments.plan("fulldata").base_config("cifar10")

    def recs(accs):
        return [{"config": {"lambda_sim": lam, "seed": s}, "final": {"test_acc": a}}
                for lam, a in accs.items() for s in fulldata.LAMBDA_EXT_SEEDS]
    assert fulldata.LAMBDA_EXT_GRID == (1.0, 3.0, 10.0) and fulldata.LAMBDA_EXT_SEEDS == (100, 101)
    assert fulldata.lambda_ext(recs({1.0: 0.78, 3.0: 0.79, 10.0: 0.79})) == 3.0  # a tie goes to the smaller
    assert fulldata.lambda_ext(recs({1.0: 0.78, 3.0: 0.77, 10.0: 0.76})) == 1.0
    assert fulldata.lambda_ext_row_configs(base, 1.0, 1.0) == []
    assert {c.seed for c in fulldata.lambda_ext_row_configs(base, 3.0, 1.0)} == set(fulldata.MAIN_SEEDS)
    with pytest.raises(ValueError, match="incomplete"):
        fulldata.lambda_ext(recs({1.0: 0.78, 3.0: 0.79, 10.0: 0.79})[1:])


def test_equal_compute_epochs_match_the_firefly_runs_training_flops():
    """Firefly trains 8 epochs at each round's widths; the fixed net at its final widths gets the whole number of
    epochs closest to the same sum (the same images pass in both), within the plan's tolerance."""
    from replication.experiments import fulldata
    from replication.config import FULLDATA
    rec = _fake_record(FULLDATA.replace(method="firefly", seed=0))  # forward MFLOPs 16, 24, 32 in the 3 rounds
    epochs, ratio = fulldata.equal_compute_epochs(rec)
    assert epochs == round(8 * (16 + 24 + 32) / 32) == 18 and ratio == pytest.approx(1.0)
    cfg = fulldata.fixed_at_equal_compute(rec)
    assert (cfg.method, cfg.rounds, cfg.epochs_per_round, cfg.widths) == ("fixed", 1, 18, (32,) * 16)
    assert cfg.lr_milestones == FULLDATA.lr_milestones  # Firefly's lr rule within the one round
    rec["rounds"] = [{"flops": 1}, {"flops": 1}, {"flops": 1_000_000}]  # 2 whole epochs would be needed: +-12 %
    rec["final"]["flops"] = 1_000_000 * 8 * 7 // 8
    rec["config"] = {**rec["config"], "epochs_per_round": 1}
    with pytest.raises(ValueError, match="no whole number of epochs"):
        fulldata.equal_compute_epochs(rec)


PARENT_SCRIPT = """
import concurrent.futures as cf, multiprocessing as mp, os, sys, time
from replication.runs import pool
with cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"), initializer=pool.exit_with_parent,
                            initargs=(os.getpid(),)) as ex:
    fut = ex.submit(os.getpid)
    print(fut.result(), flush=True)  # the worker's pid
    ex.submit(time.sleep, 120)
    time.sleep(120)
"""


def test_pool_workers_exit_when_the_study_process_is_killed(tmp_path):
    """`kill` of a study's process must not leave its workers training on (a restarted study would train the same
    runs twice, on more processes than cores)."""
    import signal
    import subprocess
    import sys
    import time

    parent = subprocess.Popen([sys.executable, "-c", PARENT_SCRIPT], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        worker = int(parent.stdout.readline())
        os.kill(worker, 0)  # alive
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the pool worker outlived its killed parent by 15 s")
    finally:
        parent.kill()


def test_a_restarted_study_resumes_its_interrupted_runs_first(tmp_path, monkeypatch):
    from replication.train import run
    cfgs = [SMOKE.replace(method=m, seed=1) for m in ("firefly", "random", "fixed")]
    assert run(cfgs[2], str(tmp_path), stop_after_epochs=1, log=lambda *a: None) is None  # interrupted
    started = []
    real = pool._worker
    monkeypatch.setattr(pool, "_worker", lambda c, rdir, device="cpu": started.append(c.method) or real(c, rdir, device))
    pool.ensure(cfgs, str(tmp_path), jobs=1, log=lambda *a: None)
    assert started == ["fixed", "firefly", "random"]  # then longest first


def test_comparisons_pair_by_seed_and_say_indicative_below_five_seeds():
    from replication.report import tables
    from replication.config import FULLDATA

    def rec(cfg, acc, tflops=1.0):
        return {"config": cfg.result_fields(), "config_key": cfg.key(), "wall_time_s": 1.0,
                "final": {"test_acc": acc, "params": 1, "flops": 1, "train_flops": tflops}}
    ff, ours = FULLDATA.replace(method="firefly"), FULLDATA.replace(method="ours", lambda_sim=1.0)
    fixed = FULLDATA.replace(method="fixed", start_width=None, widths=(20,) * 16, rounds=1, epochs_per_round=14)
    records = ([rec(ff.replace(seed=s), 0.78) for s in range(6)]
               + [rec(ours.replace(seed=s), 0.79 + 0.001 * s) for s in range(5)]
               + [rec(fixed.replace(seed=s), 0.77 + 0.01 * (s % 2), 1.1) for s in range(3)])
    table = tables.comparisons_table(records, [("ours", "firefly", "q1"),
                                               ("fixed (Firefly's final widths, equal compute)", "firefly", "q2"),
                                               ("random", "firefly", "q3")], min_seeds=5).set_index("A − B")
    first = table.loc["ours − firefly"]
    assert first["paired seeds"] == 5 and first["difference (pp)"] == "+1.20" and first["verdict"] == "A above B"
    second = table.loc["fixed (Firefly's final widths, equal compute) − firefly"]
    assert second["paired seeds"] == 3 and second["train FLOPs A/B"] == "1.10"
    assert second["verdict"].startswith("indicative (3 seeds): no difference shown")
    assert table.loc["random − firefly", "verdict"] == "no paired seeds yet"


def test_method_labels_tell_every_row_of_the_fulldata_plan_apart():
    from replication.experiments import fulldata
    base = experiments.plan("fulldata").base_config("cifar10")
    rec = {"name": "x", "config": base.replace(method="firefly").result_fields(),
           "rounds": [{"flops": 10}, {"flops": 15}, {"flops": 20}], "final": {"widths": [20] * 16, "flops": 20}}
    cfgs = (fulldata.independent_configs(base) + fulldata.ours_configs(base, 1.0) + fulldata.ablation_configs(base)
            + fulldata.constrained_baselines(base, 1.0) + fulldata.lambda_ext_row_configs(base, 3.0, 1.0)
            + fulldata.follow_ups(rec))
    labels = {}
    for c in cfgs:
        fields = {k: v for k, v in c.result_fields().items() if k != "seed"}
        labels.setdefault(method_label(c), set()).add(str(sorted(fields.items())))
    assert all(len(v) == 1 for v in labels.values()), {k: len(v) for k, v in labels.items()}
    assert {a for a, _, _ in fulldata.COMPARISONS} | {b for _, b, _ in fulldata.COMPARISONS} <= set(labels)


def test_per_run_table_has_one_row_per_run_in_table_order_with_its_round_ends():
    from replication.report import tables
    def record(method, seed, accs, **fields):
        cfg = SMOKE.replace(method=method, seed=seed, **fields)
        return {"config": cfg.result_fields(), "rounds": [{"test_acc": a} for a in accs],
                "final": {"test_acc": accs[-1], "params": 2000.0, "flops": 3e6, "train_flops": 4e12}}
    recs = [record("ours", 1, [0.5, 0.61], lambda_sim=1.0), record("firefly", 1, [0.5, 0.6]),
            record("firefly", 0, [0.4, 0.55]), record("fixed", 0, [0.3, 0.35])]
    table = tables.per_run_table(recs)
    assert list(zip(table["method"], table["seed"])) == [
        ("fixed (compact)", 0), ("firefly", 0), ("firefly", 1), ("ours", 1)]
    assert list(table["round ends (%)"]) == ["30.00 → 35.00", "40.00 → 55.00", "50.00 → 60.00", "50.00 → 61.00"]
    assert list(table["top-1 (%)"]) == pytest.approx([35.0, 55.0, 60.0, 61.0])
    assert list(table["params (K)"]) == [2.0] * 4 and list(table["train TFLOPs"]) == [4.0] * 4
