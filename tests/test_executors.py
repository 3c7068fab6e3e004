"""The submitit executors on the smoke preset, through submitit's local executor: a study completes with the
records the inline pool writes, a second call submits nothing, and a job killed or preempted mid-run is resumed
from its per-epoch checkpoint and ends exactly like an uninterrupted run."""
import os
import signal
import time

import pytest

from replication.config import SMOKE
from replication.runs.executors import ClusterOptions, StudyIncomplete, SubmititRunner, slurm_parameters
from replication.runs.pool import ensure
from replication.experiments.plan import then_fixed_at_final_widths
from replication.train import checkpoint_path

pytest.importorskip("submitit")


def _comparable(record):
    return {"epochs": [{k: v for k, v in e.items() if k != "time_s"} for e in record["epochs"]],
            "final": record["final"]}


def _task_pid(controller_pid: int) -> int:
    with open(f"/proc/{controller_pid}/task/{controller_pid}/children") as f:  # Linux (CI and this project)
        children = [int(p) for p in f.read().split()]
    assert len(children) == 1, children
    return children[0]


def _local(**kw):
    return ClusterOptions(executor="local", poll_s=0.2, time_min=10, **kw)


def test_local_study_completes_like_the_pool_and_a_second_call_submits_nothing(tmp_path):
    cfgs = [SMOKE.replace(method="firefly"), SMOKE.replace(method="fixed")]  # sharing a round 0, + a follow-up
    inline = ensure(cfgs, str(tmp_path / "inline"), jobs=1, log=lambda *a: None, then=then_fixed_at_final_widths)
    runner = SubmititRunner(_local(), log=lambda *a: None)
    rdir = str(tmp_path / "local")
    got = runner.ensure(cfgs, rdir, then=then_fixed_at_final_widths)
    assert [r["name"] for r in got] == [r["name"] for r in inline] and len(got) == 3
    assert [_comparable(r) for r in got] == [_comparable(r) for r in inline]
    assert runner.submitted == 4  # the shared round 0, Firefly, fixed, then the fixed net at Firefly's widths
    again = SubmititRunner(_local(), log=lambda *a: None)
    assert [r["name"] for r in again.ensure(cfgs, rdir, then=then_fixed_at_final_widths)] == [r["name"] for r in got]
    assert again.submitted == 0


@pytest.mark.parametrize("how", ["killed", "preempted"])
def test_interrupted_job_resumes_and_ends_like_an_uninterrupted_run(tmp_path, how):
    # One round of 8 epochs on 4,000 images: long enough (seconds) to interrupt after the first checkpoint.
    cfg = SMOKE.replace(method="fixed", rounds=1, epochs_per_round=8, synthetic_train_per_class=400)
    reference = ensure([cfg], str(tmp_path / "inline"), jobs=1, log=lambda *a: None)[0]
    rdir = str(tmp_path / "local")
    first = SubmititRunner(_local(wait=False), log=lambda *a: None)
    with pytest.raises(StudyIncomplete, match="running"):
        first.ensure([cfg], rdir)
    job = first.jobs[cfg.name()]
    deadline = time.time() + 120
    while not os.path.isfile(checkpoint_path(cfg, rdir)):
        assert time.time() < deadline and not job.done(), "the job ended before its first checkpoint"
        time.sleep(0.05)
    if how == "killed":
        os.kill(_task_pid(int(job.job_id)), signal.SIGKILL)  # a crash (OOM kill, lost node): no checkpoint hook
        while not job.done():
            time.sleep(0.1)
        assert not os.path.isfile(os.path.join(rdir, "runs", cfg.name() + ".json"))
        second = SubmititRunner(_local(), log=lambda *a: None)
        record = second.ensure([cfg], rdir)[0]
        assert second.submitted == 1  # the failed run, resumed from its checkpoint
    else:
        # Slurm's preemption / time-limit signal, sent to the job's task as Slurm does (submitit's local controller
        # does not forward it): the checkpoint hook requeues the job, which resumes in the same job id.
        os.kill(_task_pid(int(job.job_id)), signal.SIGUSR2)
        job.result()
        second = SubmititRunner(_local(), log=lambda *a: None)
        record = second.ensure([cfg], rdir)[0]
        assert second.submitted == 0
        assert "SIGUSR2" in open(job.paths.stderr).read()
        assert "resumed at round" in open(job.paths.stdout).read()  # the requeued task continued the run
    assert _comparable(record) == _comparable(reference)


def test_failed_runs_are_listed_with_their_logs(tmp_path):
    cfg = SMOKE.replace(method="fixed", rounds=1, lr=1e30)  # diverges: the job fails
    runner = SubmititRunner(_local(), log=lambda *a: None)
    with pytest.raises(StudyIncomplete) as info:
        runner.ensure([cfg], str(tmp_path))
    assert info.value.failed == 1
    text = str(info.value)
    assert "failed" in text and cfg.name() in text and ".err" in text


def test_slurm_options_become_sbatch_lines(tmp_path):
    from submitit.slurm.slurm import _make_sbatch_string
    opts = ClusterOptions(executor="slurm", partition="gpu", gpus_per_job=1, cpus_per_job=8, time_min=120,
                          array_parallelism=8, sbatch=("account=abc", "mem=32G"))
    text = _make_sbatch_string(command="python -m x", folder=str(tmp_path), map_count=20, **slurm_parameters(opts))
    for line in ("--partition=gpu", "--gpus-per-node=1", "--cpus-per-task=8", "--time=120", "--array=0-19%8",
                 "--account=abc", "--mem=32G", "--signal=USR2@120"):
        assert line in text, line


@pytest.mark.parametrize("bad, match", [
    (dict(executor="pbs"), "unknown executor"),
    (dict(executor="slurm", sbatch=("account",)), "KEY=VALUE"),
    (dict(executor="slurm", cpus_per_job=0), "cpus_per_job"),
    (dict(executor="local", poll_s=0), "poll_s"),
])
def test_bad_cluster_options_are_one_clear_error(bad, match):
    with pytest.raises(ValueError, match=match):
        ClusterOptions(**bad)


def test_cli_rejects_bad_cluster_options_before_submitting_anything(tmp_path, capsys):
    from replication import cli
    assert cli.main(["study", "--preset", "smoke", "--executor", "slurm", "--sbatch", "account"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert cli.main(["study", "--preset", "smoke", "--executor", "local", "--cpus-per-job", "0"]) == 2
    assert "cpus_per_job" in capsys.readouterr().err


def test_runner_for_picks_the_pool_or_submitit(tmp_path):
    from replication.runs.executors import InlineRunner, runner_for
    assert runner_for(None) is None and runner_for(ClusterOptions()) is None  # the pool on the CPU, as before
    on_gpu = runner_for(ClusterOptions(device="cuda"), jobs=2)
    assert isinstance(on_gpu, InlineRunner) and (on_gpu.jobs, on_gpu.device) == (2, "cuda")
    assert isinstance(runner_for(_local()), SubmititRunner)
    inline = InlineRunner(1, "cpu").ensure([SMOKE.replace(method="fixed", rounds=1)], str(tmp_path))
    assert inline[0]["status"] == "complete" and inline[0]["provenance"]["device"]
