"""A study is one declared plan: found by its file, run through `full_study` as the shipped ones are, and the only
place that knows a preset's name; a run of an unknown growth method is an error, never a silently dropped row."""
import ast
import os
import sys

import pytest

from replication import experiments, pipeline
from replication.config import SMOKE
from replication.experiments import fulldata
from replication.growth.registry import METHODS, UnknownMethod, method_label
from replication.records import load_cached
from replication.report import params, tables

PACKAGE = os.path.dirname(experiments.__path__[0])

TINY_PLAN = '''
from replication.config import SMOKE
from replication.experiments.plan import Plan

PLAN = Plan(name="tiny", config=SMOKE.replace(epochs_per_round=1), seeds=(0,), datasets=("cifar10",),
            main_rows=({"method": "fixed"}, {"method": "firefly"}, {"method": "ours", "lambda_sim": 1.0}),
            neuron_rows=("firefly", "ours"), ablation_seed=None, cam_images=20, adapt_steps=1, default_jobs=1)
'''


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    """A plan file in a folder of its own, searched as part of the experiments package."""
    folder = tmp_path / "plans"
    folder.mkdir()
    (folder / "tiny.py").write_text(TINY_PLAN)
    monkeypatch.setattr(experiments, "__path__", [*experiments.__path__, str(folder)])
    yield
    sys.modules.pop("replication.experiments.tiny", None)


def test_a_new_study_is_one_plan_file_run_through_full_study(tiny, tmp_path):
    assert "tiny" in experiments.plans() and params.check("tiny")[2] == 1  # notebooks accept it, with its jobs
    root = str(tmp_path / "results")
    pipeline.full_study("tiny", root=root, log=lambda *a: None)
    plan = experiments.plan("tiny")
    rdir = plan.results_dir(root)
    records = plan.main_records("cifar10", root=root, train=False)
    assert [method_label(r["config"]) for r in records] == ["fixed (compact)", "firefly", "ours",
                                                             "fixed (Firefly's final widths)"]
    assert all(r["config"]["epochs_per_round"] == 1 for r in records)
    for cfg in plan.from_round0_configs("cifar10"):
        assert load_cached(cfg, rdir) is not None
    assert plan.ablation_records(root=root) == []  # it declared none
    # the analyses ran on the models its plan names
    assert {"cam_metrics_cifar10.csv", "neurons_stats.csv", "neurons_removal.csv", "neurons_adaptation.csv"} <= set(os.listdir(rdir))
    table, _, md = tables.render_main(records, "cifar10", plan.name)
    assert list(table["method"]) == ["fixed (compact)", "fixed (Firefly's final widths)", "firefly", "ours"]
    assert plan.readme_section("cifar10") is None  # it renders into no README section


def _preset_name_uses(tree: ast.AST, names: set[str]) -> list[int]:
    """Lines where a preset's name is compared with, used as a dict key, subscripted or looked up with .get."""
    def named(node):
        if isinstance(node, ast.Constant) and node.value in names:
            return True
        return isinstance(node, (ast.Tuple, ast.List, ast.Set)) and any(named(e) for e in node.elts)
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare) and any(named(n) for n in [node.left, *node.comparators]):
            lines.append(node.lineno)
        elif isinstance(node, ast.Dict) and any(k is not None and named(k) for k in node.keys):
            lines.append(node.lineno)
        elif isinstance(node, ast.Subscript) and named(node.slice):
            lines.append(node.lineno)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
              and node.args and named(node.args[0])):
            lines.append(node.lineno)
    return lines


def test_no_module_outside_the_plan_files_branches_on_a_preset_name():
    names = set(experiments.plans())
    plan_files = {os.path.join(PACKAGE, "experiments", f"{n}.py") for n in names}
    found = []
    for folder, _, files in os.walk(PACKAGE):
        for file in files:
            path = os.path.join(folder, file)
            if file.endswith(".py") and path not in plan_files:
                found += [f"{os.path.relpath(path, PACKAGE)}:{line}"
                          for line in _preset_name_uses(ast.parse(open(path).read()), names)]
    assert not found, f"preset names outside the plan files (declare it in the plan instead): {found}"


def test_the_preset_name_check_can_fail():
    code = 'if preset == "fulldata":\n    x = {"quick": 1}["quick"]\ny = d.get("paper")\nz = p in ("smoke", "x")\n'
    assert sorted(_preset_name_uses(ast.parse(code), {"fulldata", "quick", "paper", "smoke"})) == [1, 2, 2, 3, 4]


def test_a_record_of_an_unknown_growth_method_is_an_error_not_a_missing_row():
    final = {"test_acc": 0.5, "params": 1, "flops": 1, "train_flops": 1}
    record = {"config": {**SMOKE.result_fields(), "method": "gradmax"}, "final": final, "config_key": "x",
              "wall_time_s": 1.0}
    with pytest.raises(UnknownMethod, match="unknown growth method 'gradmax'; known: fixed, random, split, "
                                             "firefly, ours"):
        tables.main_table([record])
    with pytest.raises(ValueError, match="unknown method 'gradmax'"):
        SMOKE.replace(method="gradmax")


def test_every_method_places_each_of_its_rows():
    for m in METHODS.values():
        assert len(set(m.rows)) == len(m.rows) and all(isinstance(r, str) for r in m.rows)


def test_grad_cam_reads_lambda_from_the_results_root_it_is_given(tmp_path, monkeypatch):
    """The full-data lambda comes from the sweep records under the root a caller passes, not from the repository's
    results/ (the defect: cam called the lambda rule without the root)."""
    seen = []

    def fake_ensure(cfgs, rdir, jobs=1, log=print, train=True, **kwargs):
        seen.append(rdir)
        accs = {1e-3: 0.5, 1e-2: 0.6, 1e-1: 0.7, 1.0: 0.4}  # 0.1 wins here; the committed sweep chose 1
        return [{"config": c.result_fields(), "final": {"test_acc": accs[c.lambda_sim]}} for c in cfgs]
    monkeypatch.setattr(fulldata, "ensure", fake_ensure)
    cfgs = fulldata.PLAN.cam_configs("cifar10", 0, root=str(tmp_path))
    assert seen == [os.path.join(str(tmp_path), "fulldata")] and cfgs["ours"].lambda_sim == 0.1

    from replication.analysis import cam

    class Stop(Exception):
        pass

    class Recording(type(fulldata.PLAN)):
        def cam_configs(self, dataset, seed, root=None):
            raise Stop(root)
    with pytest.raises(Stop, match=str(tmp_path)):
        cam.metrics_study(Recording(**{f: getattr(fulldata.PLAN, f) for f in fulldata.PLAN.__dataclass_fields__}),
                          "cifar10", root=str(tmp_path))


def _acc_record(method, seed, acc):
    cfg = SMOKE.replace(method=method, seed=seed, lambda_sim=1.0 if method == "ours" else 0.0)
    return {"config": cfg.result_fields(), "final": {"test_acc": acc / 100}}


def test_the_bf16_rule_passes_inside_both_bands_and_fails_outside_either():
    """Issue 21's pre-registered rule: each bf16 run within its fp32 row's mean +- 3 std, and the bf16 paired
    ours - Firefly mean inside the fp32 paired 95 % interval."""
    from replication.experiments import bf16check
    fp32 = ([_acc_record("firefly", s, a) for s, a in enumerate((78.0, 78.4, 77.8, 78.2, 78.1))]
            + [_acc_record("ours", s, a) for s, a in enumerate((78.6, 79.0, 78.3, 78.8, 78.7))])  # +0.58 +- ~0.2

    def bf16(firefly, ours):
        return ([_acc_record("firefly", s, a) for s, a in zip(bf16check.SEEDS, firefly)]
                + [_acc_record("ours", s, a) for s, a in zip(bf16check.SEEDS, ours)])
    ok = bf16check.check(bf16((78.1, 78.0, 78.3), (78.7, 78.6, 78.8)), fp32)
    assert ok["passed"] and ok["paired"]["inside the fp32 interval"] and ok["paired"]["fp32 paired seeds"] == 5
    far = bf16check.check(bf16((75.0, 78.0, 78.3), (75.6, 78.6, 78.8)), fp32)  # one run 3 pp off: rule (1) fails
    assert not far["passed"] and not far["runs"][0]["inside mean ± 3 std"]
    no_gain = bf16check.check(bf16((78.1, 78.0, 78.3), (78.1, 78.0, 78.3)), fp32)  # paired 0: rule (2) fails
    assert not no_gain["passed"] and all(r["inside mean ± 3 std"] for r in no_gain["runs"])
    with pytest.raises(ValueError, match="missing"):
        bf16check.check(bf16((78.1,), (78.7,)), fp32)
    plan = experiments.plan("bf16check")
    assert plan.config.precision == "bf16" and plan.config.replace(precision="fp32") == fulldata.PLAN.config
    assert {(c.method, c.seed) for c in plan.main_configs("cifar10")} == {(m, s) for m in ("firefly", "ours")
                                                                          for s in bf16check.SEEDS}


def test_the_long_round_study_waits_for_its_precision_then_is_fulldata_with_rounds_of_24_epochs(monkeypatch):
    from replication.experiments import longround
    plan = experiments.plan("longround")
    monkeypatch.setattr(longround, "PRECISION", None)
    with pytest.raises(ValueError, match="bf16 check"):
        plan.main_configs("cifar10")
    monkeypatch.setattr(longround, "PRECISION", "bf16")
    cfgs = plan.main_configs("cifar10")
    assert all(c.epochs_per_round == 24 and c.precision == "bf16" for c in cfgs)
    assert {c.replace(epochs_per_round=8, precision="fp32", method="firefly", lambda_sim=0.0) for c in cfgs} == {
        fulldata.PLAN.base_config("cifar10").replace(seed=s) for s in longround.SEEDS}
    assert sorted((c.method, c.seed) for c in cfgs) == sorted(
        [(m, s) for s in longround.SEEDS for m in ("firefly", "ours")] + [("fixed", s) for s in longround.COMPACT_SEEDS])
    assert plan.from_round0_configs("cifar10") == [] and plan.ablation_configs("cifar10") == []
    labels = {a for a, _, _ in longround.COMPARISONS} | {b for _, b, _ in longround.COMPARISONS}
    assert labels <= {"firefly", "ours", "fixed (Firefly's final widths)"}


def test_a_plan_names_the_runs_it_still_lacks(tmp_path):
    """`Plan.missing` (make study-time's remaining runs): everything at first, then nothing once the study ran,
    follow-ups included; data sets that are not here are left out, as train_all leaves them."""
    tiny = experiments.plan("smoke").replace(seeds=(0,), datasets=("cifar10",), ablation_seed=None,
                                             from_round0=False)
    root = str(tmp_path)
    assert set(tiny.missing(root)) == set(tiny.main_configs("cifar10"))
    tiny.train_all(jobs=1, root=root, log=lambda *a: None)
    assert tiny.missing(root) == []


def test_two_studies_side_by_side_pair_each_comparison_and_row():
    """Issue 21's report: the 8- and 24-epoch studies' comparisons and rows next to each other."""
    from replication.config import FULLDATA

    def rec(cfg, acc):
        return {"config": cfg.result_fields(), "config_key": cfg.key(), "wall_time_s": 1.0,
                "final": {"test_acc": acc, "params": 1000, "flops": 2e6, "train_flops": 3e12}}
    ff, ours = FULLDATA.replace(method="firefly"), FULLDATA.replace(method="ours", lambda_sim=1.0)
    short = [rec(ff.replace(seed=s), 0.78) for s in range(5)] + [rec(ours.replace(seed=s), 0.785 + 0.001 * s)
                                                                 for s in range(5)]
    long = [rec(ff.replace(seed=s, epochs_per_round=24), 0.85) for s in range(5)] + [
        rec(ours.replace(seed=s, epochs_per_round=24), 0.85 + 0.0001 * (s - 2)) for s in range(5)]
    cmp = [("ours", "firefly", "q"), ("random", "firefly", "only in one")]
    compared = {"8 epochs": {"records": short, "comparisons": cmp, "min_seeds": 5},
                "24 epochs": {"records": long, "comparisons": cmp[:1], "min_seeds": 5}}
    both = tables.side_by_side(compared)
    assert list(both["study"]) == ["8 epochs", "24 epochs"] and set(both["A − B"]) == {"ours − firefly"}
    assert list(both["verdict"]) == ["A above B", "no difference shown (the interval includes 0)"]
    rows = tables.rows_side_by_side({"8 epochs": short, "24 epochs": long}, ["firefly", "ours"])
    assert list(zip(rows["method"], rows["study"])) == [("firefly", "8 epochs"), ("firefly", "24 epochs"),
                                                        ("ours", "8 epochs"), ("ours", "24 epochs")]
    _, _, caption, md = tables.render_beside("24 epochs", "8 epochs", compared, {"8 epochs": short, "24 epochs": long})
    assert caption.startswith("24 epochs beside 8 epochs")  # the README's section: both tables under one caption
    assert md == f"{caption}\n\n{tables.to_markdown(both, '.2f')}\n\n{tables.to_markdown(rows, '.2f')}"


def test_summaries_side_by_side_interleave_shared_rows_only():
    """The Grad-CAM summaries of two studies, row by row; a row one study lacks is left out."""
    import pandas as pd
    short = pd.DataFrame({"layer": ["last", "last", "last 4x4"], "method": ["Firefly", "ours", "Firefly"],
                          "coverage": ["0.42", "0.43", "0.24"]})
    long = pd.DataFrame({"layer": ["last", "last"], "method": ["ours", "Firefly"], "coverage": ["0.50", "0.48"]})
    both = tables.summaries_side_by_side({"8 epochs": short, "24 epochs": long})
    assert list(zip(both["method"], both["study"], both["coverage"])) == [
        ("Firefly", "8 epochs", "0.42"), ("Firefly", "24 epochs", "0.48"),
        ("ours", "8 epochs", "0.43"), ("ours", "24 epochs", "0.50")]
    assert list(both.columns) == ["layer", "method", "study", "coverage"]


def test_full_study_analyses_the_seeds_it_trained_and_no_others(monkeypatch):
    """`study --seeds 3` trains seed 3 only; its analyses must not ask for the other seeds' models (a render-only
    study has none to train them with, and any other would train them unasked)."""
    from replication.analysis import cam, hyper_hypo
    smoke = experiments.plan("smoke")
    seen = {}
    monkeypatch.setattr(type(smoke), "train_all", lambda self, seeds, *a, **k: seen.setdefault("train", seeds)
                        and ["cifar10"])
    monkeypatch.setattr(cam, "metrics_study", lambda study, dataset, seeds=None, **k: seen.setdefault("cam", seeds))
    monkeypatch.setattr(hyper_hypo, "neuron_study", lambda study, dataset, seeds=None, **k:
                        seen.setdefault("neurons", seeds))
    pipeline.full_study(smoke, seeds=(3,), log=lambda *a: None)
    assert seen == {"train": (3,), "cam": (3,), "neurons": (3,)}
