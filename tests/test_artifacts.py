"""The committed tables and the README's results section are exactly what the committed run records render to."""
import glob
import json
import os

import pytest

from replication import experiments
from replication.report import tables
from replication.records import REPO_ROOT, load_runs, tables_dir

# Presets whose tables and README section are committed.
RENDERED = ("quick", "fulldata")


def _committed(preset, name):
    path = os.path.join(tables_dir(preset), name)
    if not os.path.isfile(path):
        pytest.fail(f"{path} is not committed: run `make figures PRESET={preset}` and commit results/ and figures/")
    return open(path).read()


def _readme_section(marker):
    """The README's text between a results section's markers, as `tables.update_readme_section` wrote it."""
    readme = open(os.path.join(REPO_ROOT, "README.md")).read()
    return readme.split(f"<!-- {marker}:start -->\n", 1)[1].split(f"\n<!-- {marker}:end -->", 1)[0]


@pytest.mark.parametrize("preset", RENDERED)
def test_cifar10_table_and_readme_match_the_committed_runs(preset):
    records = experiments.plan(preset).main_records("cifar10", train=False)
    table, caption, md = tables.render_main(records, "cifar10", preset)
    assert _committed(preset, "cifar10_main.md") == f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.2f')}\n"
    marker = experiments.plan(preset).readme_section("cifar10")
    assert _readme_section(marker) == md.strip()


def test_comparisons_table_and_readme_match_the_committed_runs():
    compared = experiments.plan("fulldata").comparisons(log=lambda *a: None)
    table, caption, md = tables.render_comparisons(compared, "cifar10", "fulldata")
    assert _committed("fulldata", "comparisons_cifar10.md") == md + "\n"
    assert all(f"| {d} " in md for d in table["difference (pp)"])  # signed as written (+0.58), not re-parsed
    marker = experiments.plan("fulldata").readme_section("cifar10", "comparisons")
    assert _readme_section(marker) == md.strip()
    assert experiments.plan("quick").comparisons() is None  # only studies that declare comparisons render this table


def test_bf16_check_tables_match_the_committed_runs():
    """The pre-registered bf16 check's committed outcome is what its committed records and fulldata's render to,
    and it passed (longround.PRECISION was set to bf16 on that outcome)."""
    from replication.experiments import longround
    checked = experiments.plan("bf16check").checks()
    runs, paired, md = tables.render_checks(checked, "bf16check")
    head = md.split("\n\n")[0]
    assert _committed("bf16check", "checks_runs.md") == f"{head}\n\n{tables.to_markdown(runs, '.2f')}\n"
    assert _committed("bf16check", "checks_paired.md") == f"{head}\n\n{tables.to_markdown(paired, '.2f')}\n"
    assert checked["passed"] and longround.PRECISION == "bf16"


def test_long_round_report_matches_the_committed_runs():
    """The long-round study is complete, and its report beside fulldata (tables and README section) is what both
    studies' committed records render to (issue 21)."""
    quiet = lambda *a: None  # noqa: E731
    # longround's comparisons refuse while any run of its plan is missing
    compared = {name: experiments.plan(name).comparisons(log=quiet) for name in ("fulldata", "longround")}
    records = {name: experiments.plan(name).main_records("cifar10", train=False) for name in compared}
    beside, rows, caption, md = tables.render_beside("longround", "fulldata", compared, records)
    for name, table in (("comparisons", beside), ("rows", rows)):
        md_file = f"{caption}\n\n{tables.to_markdown(table, '.2f')}\n"
        assert _committed("longround", f"beside_fulldata_{name}.md") == md_file
    assert set(beside["study"]) == {"fulldata", "longround"} and len(beside) == 2 * 3  # both studies, 3 comparisons
    marker = experiments.plan("longround").readme_section("cifar10", "beside")
    assert _readme_section(marker) == md.strip()


@pytest.mark.parametrize("preset", RENDERED)
def test_ablation_table_matches_the_committed_runs(preset):
    records = experiments.plan(preset).ablation_records("cifar10", train=False)
    table, caption, _ = tables.render_ablations(records, preset)
    assert _committed(preset, "ablations.md") == f"{caption}\n\n{table.to_markdown(index=False, floatfmt='.4g')}\n"


@pytest.mark.parametrize("preset,at_least", [("quick", 15), ("fulldata", 33), ("bf16check", 6), ("longround", 18)])
def test_every_committed_run_is_complete_and_stamped(preset, at_least):
    rdir = experiments.plan(preset).results_dir()
    files = sorted(glob.glob(os.path.join(rdir, "runs", "*.json")))
    # load_runs keeps only complete records, so the files themselves must be read to see an incomplete one
    assert [json.load(open(p))["status"] for p in files] == ["complete"] * len(files)
    records = load_runs(rdir)  # and each passes the checks every reader applies (checksum, key, final)
    assert len(records) == len(files) >= at_least
    for r in records:
        assert r["provenance"]["versions"]["torch"], r["name"]
        # The code of every stretch of training (start, fork, each resume) when the record names it; older records
        # name only the end. One record's end stamp counted its own committed checkpoint, rewritten as it
        # trained, as a dirty tree (records.git_state now looks at the code only); its stretches were clean.
        stretches = r.get("code") or [r["provenance"]]
        assert all(s["git_sha"] and not s["git_dirty"] for s in stretches), r["name"]
        assert r["provenance"]["git_sha"] == stretches[-1]["git_sha"], r["name"]
        assert os.path.isfile(os.path.join(rdir, "runs", r["name"] + ".pt")), r["name"]


def test_each_readme_results_section_has_its_markers():
    readme = open(os.path.join(REPO_ROOT, "README.md")).read()
    for study in experiments.plans().values():
        for what in study.readme_sections:  # every section a plan renders into (main, comparisons, beside)
            marker = study.readme_section("cifar10", what)
            assert f"<!-- {marker}:start -->" in readme and f"<!-- {marker}:end -->" in readme, marker
    assert experiments.plan("smoke").readme_section("cifar10") is None  # CI's smoke runs never touch the README
