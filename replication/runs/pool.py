"""The process pool behind every study: trains what is missing (one thread per run, runs sharing a round 0 after
one round-0 job has stored it, follow-ups as soon as their parent is done) and maps analyses over models."""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os

from ..config import Config
from ..records import load_cached, require_writable

STUDY_THREADS_PER_RUN = 1

_SHARED = None  # what `map_processes` sends once to each worker process


def exit_with_parent(parent_pid: int, poll_s: float = 2.0) -> None:
    """Pool initializer: a worker whose parent is killed goes on with its task (hours for a run, and a restarted
    study would then train the same run twice), so it watches the parent and exits once the parent is gone. Runs
    checkpoint every epoch: this loses at most the epoch in progress, as killing the parent does."""
    import threading
    import time

    def watch():
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os._exit(1)
    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _init_worker(threads: int, shared, parent_pid: int) -> None:
    global _SHARED
    import torch
    exit_with_parent(parent_pid)
    torch.set_num_threads(threads)
    _SHARED = shared


def _call_shared(fn, item):
    return fn(item, _SHARED)


def map_processes(fn, items, jobs: int, shared=None, label: str | None = None, log=print) -> list:
    """[fn(item, shared) for item in items] in `jobs` spawned processes of one thread each (in this process when
    jobs is 1, also on one thread: results must not depend on the core count). `fn` must be a module-level
    function; `shared` (e.g. the data set) is sent once per worker, not once per item. With a `label`, one line
    per finished item says how far it is."""
    import time

    import torch
    items = list(items)
    cores = os.cpu_count() or 1
    jobs = max(1, min(jobs, len(items), cores))
    t0 = time.perf_counter()

    def done(i):
        if label:
            log(f"  {label}: {i + 1}/{len(items)} done ({time.perf_counter() - t0:.0f} s)")
    out = []
    if jobs == 1:
        before = torch.get_num_threads()
        torch.set_num_threads(STUDY_THREADS_PER_RUN)
        try:
            for i, item in enumerate(items):
                out.append(fn(item, shared))
                done(i)
        finally:
            torch.set_num_threads(before)
        return out
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(jobs, mp_context=ctx, initializer=_init_worker,
                                initargs=(STUDY_THREADS_PER_RUN, shared, os.getpid())) as pool:
        futures = [pool.submit(_call_shared, fn, item) for item in items]
        for i, fut in enumerate(futures):
            out.append(fut.result())
            done(i)
    return out


def _worker(cfg: Config, rdir: str, device: str = "cpu") -> dict:
    from ..train import run
    return run(cfg, results_dir=rdir, device=device)


def _round0_worker(cfg: Config, rdir: str, device: str = "cpu") -> None:
    """Round 0 of `cfg` only: leaves its checkpoint and the round-0 state its siblings fork from."""
    from ..train import run
    return run(cfg, results_dir=rdir, device=device, stop_after_epochs=cfg.epochs_per_round)


def shared_round0_leaders(pending: list[Config], rdir: str) -> list[Config]:
    """One config per round-0 key that two or more pending runs share and nobody has trained yet."""
    from ..train import round0_path
    groups: dict[str, list[Config]] = {}
    for c in pending:
        path = round0_path(c, rdir)
        if path and not os.path.isfile(path):
            groups.setdefault(c.round0_key(), []).append(c)
    return [members[0] for members in groups.values() if len(members) > 1]


def longest_first(cfg: Config) -> int:
    """Longest first, so that two processes finish together: growing runs (Firefly first: the fixed runs at its
    final widths wait for it), then random/split growth, then fixed networks."""
    return {"firefly": 0, "ours": 1, "random": 2, "split": 2}.get(cfg.method, 3)


class RecordBook:
    """What a study call returns, as it lands: the records of `cfgs`, then those of the follow-ups `then(record)`
    names for each of them (e.g. the fixed net at a Firefly run's final widths), each loaded from `rdir` once it
    exists. One bookkeeping for the pool and the submitit runner."""

    def __init__(self, cfgs: list[Config], rdir: str, then=None):
        self.cfgs, self.rdir, self.then = list(dict.fromkeys(cfgs)), rdir, then or (lambda record: [])
        self.records: dict[Config, dict | None] = {c: load_cached(c, rdir) for c in self.cfgs}
        self.followups: dict[Config, list[Config]] = {}
        for c in self.cfgs:
            if self.records[c] is not None:
                self.finished(c, self.records[c])

    def finished(self, c: Config, record: dict) -> list[Config]:
        """Stores `c`'s record; returns its follow-ups that have no record yet."""
        self.records[c] = record
        self.followups[c] = [f for f in self.then(record) if f not in self.records]
        for f in self.followups[c]:
            self.records[f] = load_cached(f, self.rdir)
        return [f for f in self.followups[c] if self.records[f] is None]

    def refresh(self) -> None:
        """Takes up the records that have landed on disk since (written by jobs elsewhere)."""
        for c in self.missing():
            record = load_cached(c, self.rdir)
            if record is not None:
                self.finished(c, record)

    def missing(self) -> list[Config]:
        return [c for c, record in self.records.items() if record is None]

    def require_complete(self) -> None:
        missing = self.missing()
        if missing:
            raise FileNotFoundError(f"{len(missing)} run(s) missing from {self.rdir}: {[c.name() for c in missing]}")

    def result(self) -> list[dict]:
        extra = [f for c in self.cfgs for f in self.followups.get(c, [])]
        return [self.records[c] for c in self.cfgs] + [self.records[f] for f in dict.fromkeys(extra)]


def stored_records(cfgs: list[Config], rdir: str, then=None) -> list[dict | None]:
    """What `ensure(..., train=False)` returns, with None for a run that is not stored instead of an error."""
    return RecordBook(cfgs, rdir, then).result()


def ensure(cfgs: list[Config], rdir: str, jobs: int = 1, log=print, train: bool = True, then=None,
           order=None, runner=None, device: str = "cpu") -> list[dict]:
    """Records of `cfgs` in order, followed by those of the configs `then(record)` names for each of them (e.g. a
    fixed network at the widths a Firefly run grew to), training the missing ones.

    Missing runs go to `jobs` processes of STUDY_THREADS_PER_RUN threads each (unless a config sets
    num_threads), longest first, and a follow-up starts as soon as its parent is done, so one pool serves a whole
    study. With train=False a missing record is an error. `order` (config -> int) overrides the start order of the
    missing runs. A `runner` (executors.runner_for) trains them as submitit jobs, or in this pool on its device."""
    if runner is not None:
        return runner.ensure(cfgs, rdir, log, train, then, order)
    from ..train import checkpoint_path
    book = RecordBook(cfgs, rdir, then)
    if not train:
        book.require_complete()
    start_order = order or longest_first
    own = set(book.cfgs)
    # Follow-ups of cached parents first (the longest runs, and their parent is done). A restarted study resumes
    # its interrupted runs next: the fewest runs in flight, the fewest checkpoints to carry to another machine.
    pending = [f for f in book.missing() if f not in own] + sorted(
        (c for c in book.missing() if c in own),
        key=lambda c: (not os.path.isfile(checkpoint_path(c, rdir)), start_order(c)))
    if pending:
        require_writable(*(os.path.join(rdir, d) for d in ("runs", "checkpoints", "locks", "round0")))
        cores = os.cpu_count() or 1
        jobs = max(1, min(jobs, cores, len(pending)))  # a follow-up waits for its parent anyway
        # One thread per run, whatever the machine: oneDNN's reductions, hence a run's bits, depend on the thread
        # count (a quick run's first epoch differed in the 2nd digit with 2 threads); parallelism is by processes.
        threads = STUDY_THREADS_PER_RUN
        log(f"{len(book.records) - len(pending)} cached, training {len(pending)} run(s) (and any follow-ups) with "
            f"{jobs} process(es) x {threads} thread(s) -> {rdir}")
        if jobs == 1:
            while pending:
                c = pending.pop(0)
                pending[:0] = book.finished(c, _worker(c if c.num_threads else c.replace(num_threads=threads), rdir,
                                                       device))
        else:
            # Runs that share a round 0 wait until one round-0 job has stored it, then fork from it.
            queue = [("round0", c) for c in shared_round0_leaders(pending, rdir)] + [("run", c) for c in pending]
            pending.clear()
            waiting_on = {c.round0_key() for kind, c in queue if kind == "round0"}
            with cf.ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"), initializer=exit_with_parent,
                                        initargs=(os.getpid(),)) as pool:
                running: dict[cf.Future, tuple[str, Config]] = {}
                while queue or pending or running:
                    queue[:0] = [("run", c) for c in pending]  # follow-ups of finished parents: the longest, first
                    pending.clear()
                    while len(running) < jobs:
                        ready = [item for item in queue
                                 if item[0] == "round0" or item[1].round0_key() not in waiting_on]
                        if not ready:
                            break
                        kind, c = ready[0]
                        queue.remove(ready[0])
                        todo = c if c.num_threads else c.replace(num_threads=threads)
                        fn = _round0_worker if kind == "round0" else _worker
                        running[pool.submit(fn, todo, rdir, device)] = (kind, c)
                    done, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for fut in done:
                        kind, c = running.pop(fut)
                        result = fut.result()
                        if kind == "round0":
                            waiting_on.discard(c.round0_key())
                            log(f"round 0 of {c.name()} stored; its siblings fork from it")
                            continue
                        pending[:0] = book.finished(c, result)
                        log(f"done {c.name()}: test acc {result['final']['test_acc']:.4f} "
                            f"({result['wall_time_s']:.0f}s); {len(queue) + len(pending) + len(running)} left")
    return book.result()
