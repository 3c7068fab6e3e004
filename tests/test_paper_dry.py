"""`make paper-dry` (benchmarks/paper_dry.py) runs the paper schedule's eleven rounds; here at toy sizes so that the
script cannot rot, and its trajectory is what `make gpu-check` projects from."""
import json
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

import gpu_check  # noqa: E402
import paper_dry  # noqa: E402


def test_the_dry_run_reaches_round_eleven_and_records_every_growth_step(tmp_path, capsys):
    out = tmp_path / "trajectory.json"
    assert paper_dry.main(["--dry", "--jobs", "1", "--results", str(tmp_path / "runs"), "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert {r["method"] for r in doc["runs"]} == {"firefly", "ours"}
    for run in doc["runs"]:
        assert [rd["round"] for rd in run["rounds"]] == list(range(11)) and run["measured_growth_steps"] == 10
        neurons = [rd["neurons"] for rd in run["rounds"]]
        assert neurons == sorted(neurons) and neurons[-1] > neurons[0]
        assert all(rd["growth"]["seconds"] > 0 and rd["growth"]["peak_rss_gib"] > 0 for rd in run["rounds"][1:])
    assert "| 10 |" in capsys.readouterr().out
    # gpu_check reads a trajectory of the paper schedule only (this toy one is VGG-11)
    assert gpu_check.measured_widths(str(out)) is None
    doc["config"]["arch"] = "vgg19"
    out.write_text(json.dumps(doc))
    assert len(gpu_check.measured_widths(str(out))) == 11
