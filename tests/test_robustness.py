"""Concurrency, faults and damaged files (issue 22): one run trained once, every fault one line naming what failed,
nothing half-written, and no edited or damaged result read as if valid."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from replication import records
from replication.config import SMOKE
from replication.runs.pool import ensure
from replication.records import DamagedFile, run_path
from replication.train import checkpoint_path, run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QUIET = dict(log=lambda *a: None)
# Three short smoke runs; Firefly and random share a round 0.
CFGS = [SMOKE.replace(method=m, seed=0, synthetic_train_per_class=96) for m in ("firefly", "random", "fixed")]

STUDY_SCRIPT = """
import sys
from replication import train
from replication.config import SMOKE
from replication.runs.pool import ensure
trained = sys.argv[2]
inner = train._train
def counted(cfg, *a, **k):  # each start of training, by any process, is one line
    with open(trained, "a") as f:
        f.write(cfg.name() + "\\n")
    return inner(cfg, *a, **k)
train._train = counted
cfgs = [SMOKE.replace(method=m, seed=0, synthetic_train_per_class=96) for m in ("firefly", "random", "fixed")]
recs = ensure(cfgs, sys.argv[1], jobs=1, log=lambda m: print(m, flush=True))
print("FINAL", [r["final"]["test_acc"] for r in recs], flush=True)
"""


def _comparable(record):
    return {"epochs": [{k: v for k, v in e.items() if k != "time_s"} for e in record["epochs"]],
            "final": record["final"]}


def _python(*args, **kw):
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600, **kw)


def test_two_studies_on_one_folder_train_each_run_once_and_both_succeed(tmp_path):
    rdir, trained = str(tmp_path / "results"), str(tmp_path / "trained.txt")
    procs = []
    for _ in range(2):
        procs.append(subprocess.Popen([sys.executable, "-c", STUDY_SCRIPT, rdir, trained], cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
        time.sleep(0.5)
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    names = open(trained).read().split()
    assert sorted(names) == sorted(set(names)), f"a run was trained twice: {names}"
    finals = [line for out in outs for line in out.splitlines() if line.startswith("FINAL")]
    assert len(finals) == 2 and finals[0] == finals[1]
    alone = ensure(CFGS, str(tmp_path / "alone"), jobs=1, **QUIET)
    got = [records.load_cached(c, rdir) for c in CFGS]
    assert [_comparable(r) for r in got] == [_comparable(r) for r in alone]


def test_a_run_locked_by_another_process_is_waited_for_then_read(tmp_path):
    rdir = str(tmp_path)
    cfg = CFGS[2]
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\nfrom replication import records\n"
        "with records.run_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(3)\n"),
        cfg.name(), rdir], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    lines = []
    t0 = time.monotonic()
    rec = run(cfg, rdir, log=lines.append)
    assert time.monotonic() - t0 >= 1.5 and any("being trained by another process" in m for m in lines)
    assert rec["status"] == "complete"
    holder.wait(10)


def test_local_executor_runs_at_most_jobs_at_once(tmp_path):
    from replication.runs.executors import ClusterOptions, SubmititRunner
    runner = SubmititRunner(ClusterOptions(executor="local", poll_s=0.2, time_min=10), log=lambda *a: None,
                            max_running=1)
    most = []
    submit = runner._submit

    def watched(items, rdir, ledger, log):
        running = sum(not job.done() for job in runner.jobs.values())
        most.append(running + len(items))
        return submit(items, rdir, ledger, log)
    runner._submit = watched
    cfgs = [SMOKE.replace(method="fixed", seed=s) for s in (0, 1, 2)]
    got = runner.ensure(cfgs, str(tmp_path))
    assert len(got) == 3 and max(most) == 1 and runner.submitted == 3


def test_a_stale_ledger_pid_is_not_a_running_job(tmp_path):
    """After a crash or reboot the ledger's pid may belong to another process: that is not the job."""
    from replication.runs.executors import ClusterOptions, Ledger, SubmititRunner, _local_alive, process_identity
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert _local_alive({"job_id": str(other.pid), "process": process_identity(other.pid)})
        assert not _local_alive({"job_id": str(other.pid), "process": "another-boot:123"})
        assert not _local_alive({"job_id": str(other.pid)})  # an entry without identity cannot prove it is the job
        cfg = SMOKE.replace(method="fixed", seed=3)
        rdir = str(tmp_path)
        ledger = Ledger(rdir)
        ledger.add(cfg.name(), "local", str(other.pid), "run", "/nowhere/log.err")
        ledger.entries[cfg.name()]["process"] = "another-boot:123"  # as if written before a reboot
        records.atomic_write_text(ledger.path, json.dumps(ledger.entries))
        lines = []
        runner = SubmititRunner(ClusterOptions(executor="local", poll_s=0.2, time_min=10), log=lines.append)
        assert runner.ensure([cfg], rdir)[0]["status"] == "complete"
        assert runner.resubmitted == [cfg.name()]
        assert any("ended without finishing" in m and str(other.pid) in m for m in lines)
    finally:
        other.kill()


def _make_read_only(folder) -> None:
    """chmod for a normal user; root ignores permission bits, so there the folder is made immutable."""
    os.makedirs(folder, exist_ok=True)
    if os.geteuid() != 0:
        os.chmod(folder, 0o555)
    elif subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a folder read-only here (root, and chattr +i is refused)")
    try:
        open(os.path.join(folder, "probe"), "w").close()
    except OSError:
        return
    pytest.skip("the folder stayed writable")


def _undo_read_only(folder) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    else:
        os.chmod(folder, 0o755)


def test_a_read_only_results_folder_is_one_line_before_any_training(tmp_path):
    out = tmp_path / "results"
    _make_read_only(out)
    try:
        t0 = time.monotonic()
        proc = _python("-m", "replication", "train", "--preset", "smoke", "--method", "fixed", "--out", str(out))
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and str(out) in lines[0] and "read-only" in lines[0], proc.stderr
        assert "nothing was started" in lines[0] and time.monotonic() - t0 < 60
    finally:
        _undo_read_only(out)


def test_a_read_only_figures_folder_stops_the_render_before_any_notebook(tmp_path, monkeypatch):
    from replication import pipeline
    figures = tmp_path / "figures"
    _make_read_only(figures)
    monkeypatch.setattr(pipeline, "figures_dir", lambda preset: str(figures))
    monkeypatch.setattr(pipeline, "tables_dir", lambda preset: str(tmp_path / "tables"))
    try:
        with pytest.raises(records.CannotWrite, match=f"{figures}.*read-only.*nothing was started"):
            pipeline.run_notebooks("smoke", log=lambda *a: pytest.fail("no notebook may start"))
    finally:
        _undo_read_only(figures)


FILE_LIMIT_SCRIPT = """
import resource, signal, sys
from replication.config import SMOKE
from replication.train import run
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
cfg = SMOKE.replace(method="fixed", seed=0)
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
run(cfg, results_dir=sys.argv[1], log=lambda *a: None)
"""


def test_a_file_size_limit_during_a_checkpoint_is_one_line_and_leaves_no_temporary_file(tmp_path):
    rdir = str(tmp_path)
    cfg = SMOKE.replace(method="fixed", seed=0)
    proc = _python("-c", FILE_LIMIT_SCRIPT, rdir, "4096")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "CannotWrite" in last and checkpoint_path(cfg, rdir) in last and "file size limit" in last, last
    leftovers = [f for _, _, files in os.walk(rdir) for f in files if "tmp" in f]
    assert leftovers == []
    cli = _python("-m", "replication", "train", "--preset", "smoke", "--method", "fixed", "--out", rdir,
                  preexec_fn=lambda: (signal.signal(signal.SIGXFSZ, signal.SIG_IGN),
                                      __import__("resource").setrlimit(__import__("resource").RLIMIT_FSIZE,
                                                                       (4096, 4096))))
    assert cli.returncode == 2 and len(cli.stderr.strip().splitlines()) == 1, cli.stderr
    assert "file size limit" in cli.stderr
    # the rerun, without the limit, ends exactly as an uninterrupted run
    again = run(cfg, rdir, **QUIET)
    alone = run(cfg, str(tmp_path / "alone"), **QUIET)
    assert _comparable(again) == _comparable(alone)


@pytest.mark.parametrize("edit,message", [
    (lambda r: r["final"].update(test_acc=0.99), "differs from its last epoch"),
    (lambda r: r["config"].update(method="random"), "is not the key of its config"),
    (lambda r: r.update(config_key="0123456789ab"), "is not the key of its config"),
    (lambda r: r["epochs"][0].update(train_loss=1.0), "does not match its checksum"),
    (lambda r: r.pop("checksum"), "no checksum"),
])
def test_an_edited_record_is_refused_everywhere_records_are_read(tmp_path, edit, message):
    cfg = SMOKE.replace(method="fixed", seed=0)
    run(cfg, str(tmp_path), **QUIET)
    path = run_path(cfg, str(tmp_path))
    record = json.load(open(path))
    edit(record)
    records.write_json(path, record)
    for read in (lambda: records.load_cached(cfg, str(tmp_path)), lambda: records.load_runs(str(tmp_path)),
                 lambda: run(cfg, str(tmp_path), log=lambda *a: pytest.fail("must not retrain"))):
        with pytest.raises(DamagedFile, match=message) as err:
            read()
        assert path in str(err.value) and "\n" not in str(err.value)
    cli = _python("-m", "replication", "train", "--preset", "smoke", "--method", "fixed", "--out", str(tmp_path))
    assert cli.returncode == 2 and cli.stderr.count("\n") == 1 and message in cli.stderr, cli.stderr


def test_seal_records_stamps_an_untouched_old_record_and_refuses_an_inconsistent_one(tmp_path):
    cfg = SMOKE.replace(method="fixed", seed=0)
    rec = run(cfg, str(tmp_path), **QUIET)
    path = run_path(cfg, str(tmp_path))
    old = {k: v for k, v in rec.items() if k != "checksum"}  # as written before checksums existed
    records.write_json(path, old)
    with pytest.raises(DamagedFile, match="no checksum"):
        records.load_cached(cfg, str(tmp_path))
    assert records.seal_folder(str(tmp_path), log=lambda *a: None) == 1
    assert records.load_cached(cfg, str(tmp_path)) == rec
    assert records.seal_folder(str(tmp_path), log=lambda *a: None) == 0  # sealed files stay as they are
    records.write_json(path, {**old, "final": {**old["final"], "test_acc": 0.99}})
    with pytest.raises(DamagedFile, match="not stamped.*differs from its last epoch"):
        records.seal_folder(str(tmp_path), log=lambda *a: None)


def test_the_committed_records_are_sealed():
    for preset in ("quick", "fulldata"):
        assert records.load_runs(os.path.join(ROOT, "results", preset))  # every one passes read_record


@pytest.mark.parametrize("damage", ["truncate", "text value", "no checksum"])
def test_a_damaged_analysis_cache_is_refused_with_the_file_to_delete(tmp_path, damage):
    import pandas as pd
    path = str(tmp_path / "cache.csv")
    table = pd.DataFrame({"seed": [0, 0, 1, 1], "value": [0.1, 0.2, 0.3, 0.4]})
    records.cached_csv(path, "k", lambda: table)
    text = open(path).read()
    if damage == "truncate":
        text = text[:len(text) - 8]
    elif damage == "text value":
        text = text.replace("0.3", "abc")
    else:
        text = "".join(line for line in text.splitlines(True) if not line.startswith("# sha256"))
    open(path, "w").write(text)
    with pytest.raises(DamagedFile, match="delete it") as err:
        records.cached_csv(path, "k", lambda: pytest.fail("a damaged cache is refused, not silently recomputed"))
    assert path in str(err.value)
    assert records.cached_csv(str(tmp_path / "fresh.csv"), "k", lambda: table).equals(table)
    assert records.cached_csv(str(tmp_path / "fresh.csv"), "k", lambda: pytest.fail("cached")).equals(table)


def test_an_interrupted_figure_write_leaves_the_old_figure_whole(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from replication.report import plots
    fig = plt.figure()
    plt.plot([0, 1], [0, 1])
    before = plots.save(fig, str(tmp_path), "f")
    old = {p: open(p, "rb").read() for p in before}

    def interrupted(path, data):
        raise KeyboardInterrupt
    monkeypatch.setattr(plots, "atomic_write_bytes", interrupted)
    with pytest.raises(KeyboardInterrupt):
        plots.save(fig, str(tmp_path), "f")
    plt.close(fig)
    assert {p: open(p, "rb").read() for p in before} == old and sorted(os.listdir(tmp_path)) == ["f.pdf", "f.png"]


def test_an_interrupted_atomic_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    path = str(tmp_path / "table.md")
    records.atomic_write_text(path, "old\n")

    def interrupted(*a):
        raise KeyboardInterrupt
    monkeypatch.setattr(records.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        records.atomic_write_text(path, "new\n")
    assert open(path).read() == "old\n" and os.listdir(tmp_path) == ["table.md"]


def test_an_interrupted_notebook_says_it_failed(tmp_path, monkeypatch):
    import nbformat
    import papermill as pm

    from replication import pipeline
    out_dir = tmp_path / "build"

    def interrupted(path, out, **kw):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            cell.setdefault("metadata", {})["papermill"] = {"status": "completed"}
        nbformat.write(nb, out)
        raise KeyboardInterrupt
    monkeypatch.setattr(pm, "execute_notebook", interrupted)
    with pytest.raises(KeyboardInterrupt):
        pipeline.run_notebooks("smoke", log=lambda *a: None, build_dir=str(out_dir))
    written = [os.path.join(out_dir, f) for f in os.listdir(out_dir)]
    assert len(written) == 1
    nb = nbformat.read(written[0], as_version=4)
    assert "interrupted" in nb.cells[0].source and nb.metadata["replication"]["status"] == "failed"


def test_notebook_kernels_import_the_package_of_the_repository_they_render(monkeypatch):
    from replication import pipeline
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    with pipeline._kernel_imports_this_repository():
        assert os.environ["PYTHONPATH"].split(os.pathsep) == [pipeline.REPO_ROOT, "/elsewhere"]
        code = "import replication, os; print(os.path.dirname(os.path.dirname(replication.__file__)))"
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/").stdout.strip()
    assert out == pipeline.REPO_ROOT and os.environ["PYTHONPATH"] == "/elsewhere"


def test_train_writes_to_the_repository_results_whatever_the_working_directory():
    from replication.cli import build_parser
    args = build_parser().parse_args(["train"])
    assert args.out == os.path.join(ROOT, "results")
    text = " ".join(build_parser()._subparsers._group_actions[0].choices["train"].format_help().split())
    assert "results/ at the repository root, like data/" in text


def test_make_lab_listens_on_localhost_and_starts_as_root(tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["make", "-s", "lab", f"LAB_ARGS=--port={port} --no-browser"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        seen = []
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if f"http://127.0.0.1:{port}/" in line:
                break
        assert any(f"http://127.0.0.1:{port}/" in line for line in seen), "".join(seen[-20:])
        assert not any("Running as root is not recommended" in line and "allow-root" in line for line in seen)
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def test_a_successful_notebook_run_prints_no_kernel_traceback(tmp_path):
    """The notebooks turn warnings into errors; ipykernel's own warning at shutdown must not become a traceback
    on every successful render."""
    import nbformat
    source = nbformat.read(os.path.join(ROOT, "notebooks", "01_cifar10_table.ipynb"), as_version=4)
    setup = next(c.source for c in source.cells if "simplefilter" in c.source)
    setup = "\n".join(line for line in setup.splitlines() if "warn" in line or line.startswith("import warnings"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(setup)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = str(tmp_path / "setup.ipynb")
    nbformat.write(nb, path)
    proc = _python("-m", "papermill", path, str(tmp_path / "out.ipynb"), "-k", "python3", "--no-progress-bar")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "ERROR" not in proc.stderr, proc.stderr
