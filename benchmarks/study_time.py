"""How much CPU a study's committed runs took, counted once per shared round 0, and the wall time that makes with
one-thread processes side by side. Prints figures; it is a measurement, not a test.

    python benchmarks/study_time.py [preset] [jobs] [since]      (defaults: fulldata 2)

`since` (a git revision, e.g. the commit that pre-registered an extension) also prints the part of the study
trained after it: the runs whose first code stamp is later than that commit, and the shared rounds 0 they trained.
"""
import glob
import json
import os
import subprocess
import sys
from datetime import datetime

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from replication.config import Config  # noqa: E402
from replication.experiments import plan  # noqa: E402
from replication.growth.registry import method_label  # noqa: E402
from replication.train import round0_path  # noqa: E402


def last_round_epoch_s(records: list[dict], label: str) -> float | None:
    """Mean seconds of one epoch in the last round of the finished runs with `label`: a fixed net at a grown run's
    final widths trains every epoch at about that cost."""
    times = [e["time_s"] for r in records if method_label(r["config"]) == label
             for last in [max(x["round"] for x in r["epochs"])] for e in r["epochs"] if e["round"] == last]
    return sum(times) / len(times) if times else None


def remaining(study, records: list[dict], own_s: dict[str, float], round0_s: list[float]) -> tuple[int, float]:
    """(runs left, estimated CPU seconds) of a study: each missing run (`Plan.missing`) at the mean own time of the
    finished runs with its method label (else any growing run's mean; a fixed net at Firefly's widths: its epochs at
    Firefly's last-round epoch time), plus one shared round 0 per seed that has none yet. A missing run whose
    follow-ups are not known yet (they depend on its result) counts the follow-ups of a finished run of its kind."""
    by_label: dict[str, list[float]] = {}
    for r in records:
        by_label.setdefault(method_label(r["config"]), []).append(own_s[r["name"]])
    growing = [v for k, vs in by_label.items() if not k.startswith("fixed") for v in vs] or list(own_s.values())
    mean_round0 = sum(round0_s) / len(round0_s) if round0_s else 0.0
    firefly_epoch_s = last_round_epoch_s(records, "firefly")

    def estimate(c: Config) -> float:
        label = method_label(c)
        if label == "fixed (compact)" and label not in by_label:  # its later rounds have round 0's widths
            return (c.rounds - 1) * mean_round0
        if label.startswith("fixed (Firefly") and label not in by_label and firefly_epoch_s is not None:
            return c.rounds * c.epochs_per_round * firefly_epoch_s
        if round0_path(c, study.results_dir()) is None and label not in by_label:  # it trains its own round 0
            return sum(growing) / len(growing) + mean_round0
        vs = by_label.get(label) or growing
        return sum(vs) / len(vs)
    missing = study.missing()
    finished_of = {method_label(r["config"]): r for r in records}
    unknown = [f for c in missing if method_label(c) in finished_of
               for f in study.follow_ups(finished_of[method_label(c)])]
    seconds = sum(estimate(c) for c in missing + unknown)
    new_round0 = {round0_path(c, study.results_dir()) for c in missing if round0_path(c, study.results_dir())}
    seconds += sum(not os.path.isfile(p) for p in new_round0) * mean_round0
    return len(missing) + len(unknown), seconds


def started_utc(record: dict) -> datetime | None:
    """When the run first trained (its first code stamp); None for records from before the stamps existed."""
    stamps = record.get("code") or []
    return datetime.fromisoformat(stamps[0]["time_utc"]) if stamps else None


def commit_time(revision: str) -> datetime:
    out = subprocess.run(["git", "show", "-s", "--format=%cI", revision], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.abspath(__file__)))
    if out.returncode:
        sys.exit(f"study_time: '{revision}' is not a git revision here: {out.stderr.strip()}")
    return datetime.fromisoformat(out.stdout.strip())


def since_part(records: list[dict], own_s: dict[str, float], round0_of: dict[str, tuple[str, float]],
               since: datetime) -> tuple[int, float]:
    """(runs, CPU seconds) trained after `since`: each such run's own time, and each shared round 0 whose first
    run (by first code stamp) is one of them, once."""
    after = [r for r in records if (started_utc(r) or since) > since]
    first: dict[str, dict] = {}
    for r in sorted((r for r in records if r["name"] in round0_of), key=lambda r: started_utc(r) or since):
        first.setdefault(round0_of[r["name"]][0], r)
    names = {r["name"] for r in after}
    round0 = sum(round0_of[r["name"]][1] for r in first.values() if r["name"] in names)
    return len(after), sum(own_s[n] for n in names) + round0


def main(preset: str = "fulldata", jobs: int = 2, since: str | None = None) -> None:
    paths = sorted(glob.glob(os.path.join(plan(preset).results_dir(), "runs", "*.json")))
    records = [json.load(open(p)) for p in paths]
    records = [r for r in records if r.get("status") == "complete"]
    if not records:
        print(f"no complete run in {plan(preset).results_dir()}")
        return
    shared_round0: dict[str, float] = {}
    own = 0.0
    own_s: dict[str, float] = {}
    round0_of: dict[str, tuple[str, float]] = {}  # run name -> (its shared round 0, that round's seconds)
    print(f"{'run':58s} {'own s':>8s} {'growth s':>9s} {'top-1':>6s}")
    for r in records:
        round0 = sum(e["time_s"] for e in r["epochs"] if e["round"] == 0)
        growth = sum(g["growth"]["time_s"] for g in r["rounds"] if g.get("growth"))
        # A round 0 stored for sharing is counted once, whichever run trained it (leader or fork).
        shared = round0_path(Config.from_dict(r["config"]), plan(preset).results_dir())
        is_shared = shared is not None and os.path.isfile(shared)
        mine = r["wall_time_s"] - (round0 if is_shared else 0.0)
        if is_shared:
            shared_round0[shared] = round0
            round0_of[r["name"]] = (shared, round0)
        own += mine
        own_s[r["name"]] = mine
        print(f"{r['name']:58s} {mine:8.0f} {growth:9.0f} {100 * r['final']['test_acc']:6.2f}")
    total = own + sum(shared_round0.values())
    print(f"{len(records)} complete runs; {len(shared_round0)} shared rounds 0 counted once "
          f"({sum(shared_round0.values()):.0f} s)")
    print(f"CPU time (one thread per run): {total / 3600:.2f} h; wall time with {jobs} processes: "
          f"{total / 3600 / jobs:.2f} h (if the pool were always full)")
    if since:
        at = commit_time(since)
        n_after, after_s = since_part(records, own_s, round0_of, at)
        print(f"trained after {since} ({at.isoformat()}): {n_after} runs, {after_s / 3600:.2f} CPU-h "
              f"-> {after_s / 3600 / jobs:.2f} h wall with {jobs} processes (if the pool were always full)")
    n, left = remaining(plan(preset), records, own_s, list(shared_round0.values()))
    if n:
        print(f"left of the plan: {n} runs, ~{left / 3600:.2f} CPU-h (per kind, from the finished runs: "
              f"remaining()) -> ~{left / 3600 / jobs:.2f} h wall; projected study total "
              f"~{(total + left) / 3600 / jobs:.2f} h wall, before the analyses (runs in progress counted whole)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fulldata", int(sys.argv[2]) if len(sys.argv) > 2 else 2,
         sys.argv[3] if len(sys.argv) > 3 else None)
