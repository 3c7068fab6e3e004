"""Bad input, case by case: each gets one clear message that names what is wrong, exit code 2 where a process is
involved, no traceback, and nothing half-written under results/."""
import glob
import os
import pickle
import subprocess
import sys

import pytest

from conftest import write_python_layout
from replication import cli, data
from replication.report import params
from replication.config import SMOKE, Config
from replication.data import DataError
from replication.records import DamagedFile, run_path
from replication.train import checkpoint_path, load_model, model_path, run

SMOKE_ARGS = ["train", "--preset", "smoke"]


def _half_written(root):
    """Anything a failed call may have left: temporary files or run records."""
    return glob.glob(os.path.join(root, "**", "*.tmp"), recursive=True) + \
        glob.glob(os.path.join(root, "**", ".tmp-*"), recursive=True) + \
        glob.glob(os.path.join(root, "runs", "*.json"))


CLI_CASES = [  # (extra arguments, what the one error line must say)
    (["--method", "ours", "--lambda-sim", "nan"], "lambda_sim must be a finite number"),
    (["--set", "lr=nan"], "lr must be a finite number"),
    (["--set", "lr=-inf"], "lr must be a finite number"),
    (["--set", "lr_milestones=0.5,inf"], "lr_milestones must be a finite number"),
    (["--set", "batch_size=abc"], "--set batch_size=abc: expected an integer, got 'abc'"),
    (["--set", "lr_milestones=0.5,x"], "--set lr_milestones=0.5,x: expected numbers separated by commas"),
    (["--set", "augment=maybe"], "--set augment=maybe: expected true or false"),
    (["--set", "no_such_field=1"], "--set expects FIELD=VALUE"),
    (["--method", "grow"], "unknown method 'grow'"),
    (["--set", "firefly_score_at=half"], "unknown firefly_score_at 'half'"),
]


@pytest.mark.parametrize("extra,message", CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_cli_rejects_bad_values_with_one_line(tmp_path, capsys, extra, message):
    out = str(tmp_path / "results")
    assert cli.main(SMOKE_ARGS + extra + ["--out", out]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert not os.path.exists(out) or not _half_written(out)


def test_cli_bad_value_in_a_real_process_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "replication", *SMOKE_ARGS, "--method", "ours", "--lambda-sim",
                           "nan", "--out", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == ["error: lambda_sim must be a finite number, got nan"]


def test_figures_of_a_render_only_study_with_missing_runs_stop_before_any_notebook(monkeypatch, capsys):
    """`make figures` of a study that trains only through `make results` (longround) must not train the runs it
    lacks from inside its notebooks: one error naming them and the command that trains them, exit 2."""
    from replication import pipeline
    from replication.experiments import longround
    first = longround.PLAN.config.replace(method="firefly", seed=0, precision="bf16")
    monkeypatch.setattr(type(longround.PLAN), "missing", lambda self, root=None: [first, first])
    monkeypatch.setattr(pipeline, "run_notebooks", lambda *a, **k: pytest.fail("a notebook ran"))
    monkeypatch.setattr(pipeline, "full_study", lambda *a, **k: pytest.fail("the study trained"))
    assert cli.main(["figures", "--preset", "longround"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "2 run(s)" in err and first.name() in err
    assert "make results PRESET=longround" in err


def test_gradcam_metrics_of_a_render_only_study_never_train_a_missing_run(tmp_path, monkeypatch):
    """The same guard one level down: notebook 03 run directly (papermill, jupyter) computes the Grad-CAM metrics
    of a render-only study; a missing run is an error there, not hours of training."""
    from replication.analysis import cam
    from replication.experiments import longround
    from replication.runs import pool
    monkeypatch.setattr(pool, "_worker", lambda *a, **k: pytest.fail("a run trained"))
    with pytest.raises(FileNotFoundError, match="run\\(s\\) missing"):
        cam.metrics_study(longround.PLAN, "cifar10", seeds=(0,), root=str(tmp_path))
    assert not os.path.exists(os.path.join(str(tmp_path), "longround", "cam_metrics_cifar10.csv"))

@pytest.mark.parametrize("field,value", [("lambda_sim", float("nan")), ("lr", float("inf")),
                                         ("grow_ratio", float("nan")), ("lr_milestones", (0.5, float("nan")))])
def test_config_rejects_non_finite_floats_and_names_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} must be a finite number"):
        Config(**{field: value})


def _damage(path):
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[: len(blob) // 3])


def test_damaged_checkpoint_names_the_file_and_the_way_out(tmp_path, capsys):
    out = str(tmp_path)
    cfg = SMOKE.replace(method="fixed", seed=3)
    assert run(cfg, results_dir=out, stop_after_epochs=1, log=lambda *a: None) is None
    ckpt = checkpoint_path(cfg, out)
    _damage(ckpt)
    assert cli.main(SMOKE_ARGS + ["--method", "fixed", "--seed", "3", "--out", out]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ckpt in err and "is damaged" in err and "--no-resume" in err
    assert not _half_written(out)
    # the way out it names works
    assert cli.main(SMOKE_ARGS + ["--method", "fixed", "--seed", "3", "--out", out, "--no-resume"]) == 0


@pytest.mark.parametrize("which", ["record", "weights"])
def test_damaged_run_record_or_weights_name_the_file(tmp_path, capsys, which):
    out = str(tmp_path)
    cfg = SMOKE.replace(method="fixed", seed=4)
    run(cfg, results_dir=out, log=lambda *a: None)
    path = run_path(cfg, out) if which == "record" else model_path(cfg, out)
    _damage(path)
    if which == "record":  # the cache lookup reads it
        assert cli.main(SMOKE_ARGS + ["--method", "fixed", "--seed", "4", "--out", out]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and path in err and "delete it" in err
    else:
        with pytest.raises(DamagedFile, match="delete it"):
            load_model(cfg, out, 10)


def test_crafted_cifar_pickle_cannot_run_code(tmp_path):
    """A data_batch whose pickle calls os.system: refused as a DataError before anything is built or run."""
    ds = data.synthetic_cifar(10, 5, 2, seed=1)
    folder = write_python_layout(str(tmp_path), "cifar10", ds.train_x.numpy(), ds.train_y.numpy(),
                                 ds.test_x.numpy(), ds.test_y.numpy(), ds.classes)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)
    with open(os.path.join(folder, "data_batch_1"), "wb") as f:
        pickle.dump({"data": Payload(), "labels": [0]}, f)
    with pytest.raises(DataError, match="posix.system|os.system|nt.system") as err:
        data.load_cifar("cifar10", str(tmp_path), verify=False)
    assert "nothing in it was run" in str(err.value)
    assert not marker.exists()


def test_cifar_pickle_of_an_object_array_is_refused(tmp_path):
    import numpy as np
    ds = data.synthetic_cifar(10, 5, 2, seed=1)
    folder = write_python_layout(str(tmp_path), "cifar10", ds.train_x.numpy(), ds.train_y.numpy(),
                                 ds.test_x.numpy(), ds.test_y.numpy(), ds.classes)
    with open(os.path.join(folder, "data_batch_2"), "wb") as f:
        pickle.dump({"data": np.array([1, "a"], dtype=object), "labels": [0, 1]}, f)
    with pytest.raises(DataError, match="dtype object"):
        data.load_cifar("cifar10", str(tmp_path), verify=False)


NOTEBOOK_CASES = [  # (arguments of params.check, what the message must say)
    (("nosuch",), "preset: unknown 'nosuch'"),
    (("smoke", "[a]"), "seeds: cannot read"),
    (("smoke", "[1.5]"), "seeds: every seed must be a non-negative integer"),
    (("smoke", [-1]), "seeds: every seed must be a non-negative integer"),
    (("smoke", None, "two"), "jobs: expected an integer"),
    (("smoke", None, 0, "mnist"), "dataset: unknown 'mnist'"),
]


@pytest.mark.parametrize("args,message", NOTEBOOK_CASES, ids=[repr(c[0]) for c in NOTEBOOK_CASES])
def test_notebook_parameters_are_checked_with_one_message(args, message):
    with pytest.raises(params.ParameterError) as err:
        params.check(*args)
    assert message in str(err.value)


@pytest.mark.parametrize("seeds,want", [("[3]", (3,)), ("[3, 4]", (3, 4)), ("3,4", (3, 4)), ([3], (3,)),
                                        (None, None), ("None", None)])
def test_notebook_seeds_accept_the_string_form_of_a_list(seeds, want):
    assert params.check("smoke", seeds)[1] == want


def test_a_notebook_stops_at_a_bad_parameter_before_any_work(tmp_path):
    import papermill as pm
    nb = os.path.join(os.path.dirname(__file__), "..", "notebooks", "05_growth_curves.ipynb")
    with pytest.raises(pm.PapermillExecutionError) as err:
        pm.execute_notebook(nb, str(tmp_path / "out.ipynb"), parameters={"preset": "smoke", "seeds": "[x]"},
                            kernel_name="python3", progress_bar=False, cwd=str(tmp_path))
    assert "seeds: cannot read '[x]'" in str(err.value)


def test_papermill_parses_every_parameter_line_with_its_type(caplog):
    """papermill warns "Unable to parse line" and lists no type for `list | None` annotations and for defaults
    computed from another parameter; every notebook's parameters must parse."""
    import json

    import papermill as pm
    for nb in sorted(glob.glob(os.path.join(os.path.dirname(__file__), "..", "notebooks", "*.ipynb"))):
        cells = json.load(open(nb))["cells"]
        source = "".join(next(c for c in cells if "parameters" in c["metadata"].get("tags", []))["source"])
        names = [line.split(":")[0] for line in source.splitlines() if ":" in line.split("=")[0]
                 and not line.startswith(("import", "from", "#"))]
        caplog.clear()
        declared = pm.inspect_notebook(nb)
        assert "Unable to parse" not in caplog.text, nb
        assert list(declared) == names, nb
        assert all(p["inferred_type_name"] not in ("None", "") for p in declared.values()), nb
