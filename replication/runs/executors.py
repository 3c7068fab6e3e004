"""Where a study's runs execute: `inline` (this machine's process pool, `pool.ensure`), or through submitit:
`local` (local processes, for testing a cluster set-up on one machine) and `slurm` (job arrays on a Slurm cluster).

With submitit, each missing run is one job. A job that is preempted or reaches its time limit gets submitit's
checkpoint signal, is requeued and resumes from the run's last per-epoch checkpoint (`train.run` writes one after
every epoch and a resumed run ends bit for bit like an uninterrupted one, so the checkpoint hook has nothing to save).
The ledger `<results>/jobs/ledger.json` remembers which job trains which run, so calling the study again submits
only what is missing or failed and prints what is done, running and failed, with the failed runs' logs. Records
land in `<results>/runs/` exactly as with the pool, so the notebooks do not change.

Runs sharing a round 0 wait for one round-0 job to store it, and follow-ups (the fixed net at a Firefly run's final
widths) are submitted when their parent's record exists: while the command waits (the default), as soon as that
happens; with `wait=False`, by a later call.
"""
from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import dataclass

import submitit
import submitit.helpers

from ..config import Config
from .pool import RecordBook, ensure, longest_first, shared_round0_leaders
from ..records import atomic_write_text
from ..train import round0_path

EXECUTORS = ("inline", "local", "slurm")
# Slurm states in which a job may still write its record (sacct's names; UNKNOWN: sacct has not seen it yet).
SLURM_ACTIVE = {"PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED", "RESIZING",
                "REQUEUE_HOLD", "REQUEUE_FED", "UNKNOWN"}


class StudyIncomplete(RuntimeError):
    """Runs are still queued, running or failed; the message is the status table and what to do next."""

    def __init__(self, message: str, failed: int):
        super().__init__(message)
        self.failed = failed


@dataclass(frozen=True)
class ClusterOptions:
    """How the runs of a study are executed (`python -m replication study --executor ...`)."""
    executor: str = "inline"
    device: str = "cpu"  # the torch device inside each job: "cuda" on GPU nodes
    partition: str | None = None  # Slurm partition (None: the cluster's default)
    gpus_per_job: int = 0
    cpus_per_job: int = 1  # also the torch threads of a run that does not set num_threads
    time_min: int = 240  # Slurm time limit per job; a job that reaches it is requeued and resumes
    array_parallelism: int = 64  # at most this many jobs of one array run at once
    sbatch: tuple[str, ...] = ()  # extra sbatch options as KEY=VALUE (e.g. account=abc, qos=high, mem=32G)
    wait: bool = True  # poll until every run is done, submitting what becomes ready; False: submit and return
    poll_s: float = 30.0

    def __post_init__(self):
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}; valid: {', '.join(EXECUTORS)}")
        for name in ("gpus_per_job", "cpus_per_job", "time_min", "array_parallelism"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "gpus_per_job" else 1):
                raise ValueError(f"{name} must be an integer >= {0 if name == 'gpus_per_job' else 1}, got {value!r}")
        for item in self.sbatch:
            if "=" not in item or not item.partition("=")[0]:
                raise ValueError(f"sbatch options are KEY=VALUE (e.g. account=abc), got {item!r}")
        if self.poll_s <= 0:
            raise ValueError("poll_s must be > 0")


def slurm_parameters(opts: ClusterOptions) -> dict:
    """The options as submitit.SlurmExecutor.update_parameters takes them (sbatch names)."""
    params = {"time": opts.time_min, "cpus_per_task": opts.cpus_per_job, "array_parallelism": opts.array_parallelism,
              "job_name": "replication", "signal_delay_s": 120}  # 2 minutes to finish the epoch's checkpoint write
    if opts.gpus_per_job:
        params["gpus_per_node"] = opts.gpus_per_job
    if opts.partition:
        params["partition"] = opts.partition
    extra = dict(item.split("=", 1) for item in opts.sbatch)
    if extra:
        params["additional_parameters"] = extra
    return params


class RunJob(submitit.helpers.Checkpointable):
    """One run as a submitit job. Requeued on preemption or timeout (submitit's default `checkpoint` resubmits the
    same call), it resumes from the run's own per-epoch checkpoint on disk."""

    def __init__(self, results_dir: str, device: str, round0_only: bool = False):
        self.results_dir, self.device, self.round0_only = results_dir, device, round0_only

    def __call__(self, cfg: Config) -> dict | None:
        from ..train import run
        stop = cfg.epochs_per_round if self.round0_only else None
        record = run(cfg, results_dir=self.results_dir, device=self.device, stop_after_epochs=stop)
        return None if record is None else {"name": record["name"], "final": record["final"]}


class Ledger:
    """run name -> the job that trains it, in `<results>/jobs/ledger.json` (one writer: the submitting command)."""

    def __init__(self, results_dir: str):
        self.folder = os.path.join(results_dir, "jobs")
        self.path = os.path.join(self.folder, "ledger.json")
        self.entries: dict[str, dict] = {}
        if os.path.isfile(self.path):
            with open(self.path) as f:
                self.entries = json.load(f)

    def add(self, name: str, executor: str, job_id: str, kind: str, stderr: str) -> None:
        self.entries[name] = {"executor": executor, "job_id": job_id, "kind": kind, "stderr": stderr,
                              "submitted": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
        if executor == "local":
            self.entries[name]["process"] = process_identity(int(job_id))
        atomic_write_text(self.path, json.dumps(self.entries, indent=1, sort_keys=True))


def process_identity(pid: int) -> str | None:
    """What tells a process from a later one with the same pid: this boot's id and the process's start time (Linux
    /proc); None when it cannot be read (no such process, or no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            start_ticks = f.read().rsplit(")", 1)[1].split()[19]  # field 22, after the command name
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f"{f.read().strip()}:{start_ticks}"
    except (OSError, IndexError):
        return None


def _local_alive(entry: dict) -> bool:
    """Whether a local job's controller still runs: its pid exists and is the same process the ledger recorded (a
    pid reused after a crash or reboot belongs to another process)."""
    try:
        pid = int(entry["job_id"])
        os.kill(pid, 0)  # local job ids are the pids of submitit's job controllers
    except (ProcessLookupError, ValueError):
        return False
    except PermissionError:
        pass
    recorded = entry.get("process")
    return recorded is not None and process_identity(pid) == recorded


class SubmititRunner:
    """`ensure` for the submitit executors: the same contract as `pool.ensure` (records of `cfgs`, then of their
    follow-ups), training what is missing as jobs. Raises StudyIncomplete while runs are outstanding."""

    def __init__(self, opts: ClusterOptions, log=print, max_running: int | None = None):
        if opts.executor == "inline":
            raise ValueError("the inline executor is pool.ensure; SubmititRunner is for local and slurm")
        if max_running is not None and max_running < 1:
            raise ValueError(f"max_running must be >= 1, got {max_running}")
        self.opts, self.log = opts, log
        # Local jobs are processes of this machine: at most this many at once (--jobs); Slurm has its own queue.
        self.max_running = max_running
        self.submitted = 0  # jobs this runner submitted (tests: a second call submits nothing)
        self.resubmitted: list[str] = []  # runs whose earlier job ended without a record (killed, failed)
        self.jobs: dict[str, object] = {}  # run name -> submitit Job of this process

    # -- submission ------------------------------------------------------------------------------------------
    def _executor(self, rdir: str):
        folder = os.path.join(rdir, "jobs", "%j")
        if self.opts.executor == "local":
            ex = submitit.LocalExecutor(folder)
            ex.update_parameters(timeout_min=self.opts.time_min, gpus_per_node=self.opts.gpus_per_job)
        else:
            ex = submitit.SlurmExecutor(folder)
            ex.update_parameters(**slurm_parameters(self.opts))
        return ex

    def _submit(self, items: list[tuple[str, Config]], rdir: str, ledger: Ledger, log) -> None:
        if not items:
            return
        ex = self._executor(rdir)
        jobs = []
        with ex.batch():  # one job array on Slurm
            for kind, c in items:
                todo = c if c.num_threads else c.replace(num_threads=self.opts.cpus_per_job)
                jobs.append(ex.submit(RunJob(rdir, self.opts.device, kind == "round0"), todo))
        for (kind, c), job in zip(items, jobs):
            key = _ledger_name(kind, c)
            self.jobs[key] = job
            ledger.add(key, self.opts.executor, str(job.job_id), kind, str(job.paths.stderr))
        self.submitted += len(items)
        log(f"submitted {len(items)} job(s) ({self.opts.executor}): "
                 + ", ".join(f"{_ledger_name(k, c)} [{j.job_id}]" for (k, c), j in zip(items, jobs)))

    def _active(self, key: str, ledger: Ledger) -> bool:
        if key in self.jobs:
            return not self.jobs[key].done()
        entry = ledger.entries.get(key)
        if entry is None:
            return False
        if entry["executor"] == "local":
            return _local_alive(entry)
        job = submitit.SlurmJob(os.path.join(os.path.dirname(ledger.path), "%j"), entry["job_id"])
        return job.state.split()[0] in SLURM_ACTIVE

    # -- the study ---------------------------------------------------------------------------------------------
    def ensure(self, cfgs: list[Config], rdir: str, log=None, train: bool = True, then=None, order=None) -> list[dict]:
        log = log or self.log
        book = RecordBook(cfgs, rdir, then)
        if not train:
            book.require_complete()
        ledger = Ledger(rdir)
        active: set[str] = set()
        while True:
            book.refresh()
            missing = sorted(book.missing(), key=order or longest_first)
            if not missing:
                break
            # One state query per job and pass (on Slurm each is an sacct lookup); the status table reuses them.
            active = {key for c in missing for key in (_ledger_name("run", c), _ledger_name("round0", c))
                      if self._active(key, ledger)}
            # A job this call submitted that ended without a record failed: the next call resubmits it, not this one.
            todo = [c for c in missing if _ledger_name("run", c) not in self.jobs
                    and _ledger_name("run", c) not in active]
            # Runs sharing a round 0 that is not stored yet: one round-0 job per group; the group waits for it.
            leaders = shared_round0_leaders(todo, rdir)
            shared = {c.round0_key() for c in leaders}
            batch = [("round0", c) for c in leaders if _ledger_name("round0", c) not in self.jobs
                     and _ledger_name("round0", c) not in active]
            batch += [("run", c) for c in todo if c.round0_key() not in shared]
            deferred = False
            if self.max_running is not None:  # a job whose record has landed may still be exiting: count it too
                busy = active | {key for key, job in self.jobs.items() if not job.done()}
                deferred = len(batch) > self.max_running - len(busy)
                batch = batch[:max(0, self.max_running - len(busy))]
            # A run whose job is on record but no longer active, and which left no record: say so.
            for name in (_ledger_name(kind, c) for kind, c in batch):
                entry = ledger.entries.get(name)
                if entry is not None and name not in self.jobs:
                    self.resubmitted.append(name)
                    log(f"{name}: its job {entry['job_id']} ended without finishing (killed or failed; log: "
                        f"{entry['stderr']}); submitting it again")
            self._submit(batch, rdir, ledger, log)
            active |= {_ledger_name(kind, c) for kind, c in batch}  # just submitted: queued
            if not self.opts.wait or not (active or deferred):
                break
            time.sleep(self.opts.poll_s)
        book.refresh()
        if book.missing():
            raise StudyIncomplete(*self.status_table(book.missing(), rdir, ledger, active))
        return book.result()

    def status_table(self, missing: list[Config], rdir: str, ledger: Ledger, active: set[str]) -> tuple[str, int]:
        """`active`: the ledger names of the jobs still queued or running, as `ensure` last saw them."""
        from tabulate import tabulate
        rows, failed = [], 0
        for c in missing:
            run_key, r0_key = _ledger_name("run", c), _ledger_name("round0", c)
            r0_missing = round0_path(c, rdir) is not None and not os.path.isfile(round0_path(c, rdir))
            key = run_key
            if run_key in active:
                state = "running"
            elif r0_key in active:
                state, key = "waiting for its round 0", r0_key
            elif run_key in ledger.entries:
                state = "failed"
            elif r0_key in ledger.entries and r0_missing:
                state, key = "its round-0 job failed", r0_key
            else:
                state = "not submitted yet"
            failed += "failed" in state
            entry = ledger.entries.get(key, {})
            rows.append([c.name(), state, entry.get("job_id", ""), entry.get("stderr", "") if "failed" in state else ""])
        again = "run the same command again to submit what is missing or failed"
        again_note = (f", {len(self.resubmitted)} resubmitted after their job ended without finishing"
                      if self.resubmitted else "")
        head = f"{len(missing)} run(s) outstanding in {rdir} ({failed} failed{again_note}): {again}"
        return head + "\n" + tabulate(rows, headers=["run", "state", "job", "log of a failed job"]), failed


def _ledger_name(kind: str, cfg: Config) -> str:
    return cfg.name() if kind == "run" else f"round0:{cfg.name()}"


class InlineRunner:
    """The process pool of this machine (pool.ensure) on another device than the CPU."""

    def __init__(self, jobs: int, device: str):
        self.jobs, self.device = jobs, device

    def ensure(self, cfgs, rdir, log=print, train=True, then=None, order=None) -> list[dict]:
        return ensure(cfgs, rdir, self.jobs, log, train, then, order, device=self.device)


def runner_for(opts: ClusterOptions | None, jobs: int = 1, log=print):
    """What `pool.ensure` hands a study to: None (its own pool on the CPU), the pool on another device, or the
    submitit runner."""
    if opts is None or (opts.executor == "inline" and opts.device == "cpu"):
        return None
    if opts.executor == "inline":
        return InlineRunner(jobs, opts.device)
    return SubmititRunner(opts, log, max_running=jobs if opts.executor == "local" else None)
