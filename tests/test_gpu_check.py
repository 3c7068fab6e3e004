"""`make gpu-check` in its CPU dry mode: every section of the GPU check runs (its figures mean nothing here), so the
script cannot rot between the rare sessions that have a GPU."""
import importlib.util
import os

import pytest

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "gpu_check.py")


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_dry_run_on_cpu_prints_every_section(gpu_check, capsys):
    assert gpu_check.main(["--device", "cpu", "--dry"]) == 0
    out = capsys.readouterr().out
    for marker in ("1. smoke preset", "-> OK", "2. training img/s", "similarity constraint", "3. Firefly growth step",
                   "4. projection", "GPU-hours"):
        assert marker in out, marker


def test_the_figures_refuse_a_cpu_without_dry(gpu_check, capsys):
    assert gpu_check.main(["--device", "cpu"]) == 2
    assert "--dry" in capsys.readouterr().err


def test_protocol_widths_grow_by_the_ratio_and_stop_at_full(gpu_check):
    from replication.config import PAPER
    from replication.models import full_widths
    widths = gpu_check.protocol_widths()
    assert len(widths) == PAPER.rounds and widths[0] == [16] * 16
    totals = [sum(w) for w in widths]
    assert all(b > a for a, b in zip(totals, totals[1:]))
    assert all(w <= f for ws in widths for w, f in zip(ws, full_widths("vgg19")))


def test_projection_arithmetic_on_given_figures(gpu_check):
    # With one speed for every round, a Firefly run is 1,760 epochs of (50,000 + 10,000 / 3) images plus 10 growth
    # steps of the measured length; the study adds the other methods' runs and the follow-ups.
    from replication.config import PAPER
    v, growth = 5000.0, 100.0
    train = {"per_round": [v] * PAPER.rounds, "full": v, "overhead": 0.0}
    firefly_s, total = gpu_check.project(train, growth, dry=False, log=lambda *a: None)
    epoch_s = (50_000 + 10_000 / 3) / v
    assert firefly_s == pytest.approx(PAPER.rounds * PAPER.epochs_per_round * epoch_s + (PAPER.rounds - 1) * growth)
    assert total > 10 * firefly_s  # 42 runs, most of them growing
