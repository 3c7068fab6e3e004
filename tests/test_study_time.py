"""The budget arithmetic of benchmarks/study_time.py: what counts as trained after a commit."""
import importlib.util
import os
from datetime import datetime, timezone

from replication.records import REPO_ROOT

spec = importlib.util.spec_from_file_location("study_time", os.path.join(REPO_ROOT, "benchmarks", "study_time.py"))
study_time = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study_time)


def _record(name, started):
    return {"name": name, "code": [{"event": "start", "time_utc": started}] if started else None}


def test_since_counts_the_runs_started_after_it_and_the_rounds_0_they_trained_first():
    records = [_record("old", None), _record("before", "2026-12-01T10:00:00+00:00"),
               _record("fork-of-old-round0", "2026-12-02T10:00:00+00:00"),
               _record("new-round0-leader", "2026-12-02T11:00:00+00:00"),
               _record("new-round0-fork", "2026-12-02T12:00:00+00:00")]
    own_s = {"old": 1.0, "before": 10.0, "fork-of-old-round0": 100.0, "new-round0-leader": 1000.0,
             "new-round0-fork": 10000.0}
    round0_of = {"before": ("r0-a", 5.0), "fork-of-old-round0": ("r0-a", 5.0), "new-round0-leader": ("r0-b", 7.0),
                 "new-round0-fork": ("r0-b", 7.0)}
    since = datetime(2026, 12, 2, tzinfo=timezone.utc)
    runs, seconds = study_time.since_part(records, own_s, round0_of, since)
    # round 0 "a" was trained before `since` (its first run is "before"); "b" once, though two runs share it
    assert (runs, seconds) == (3, 100.0 + 1000.0 + 10000.0 + 7.0)


def test_remaining_costs_a_fixed_net_at_firefly_widths_at_its_last_round_epochs_and_counts_unknown_follow_ups(tmp_path):
    """A fixed net at a Firefly run's final widths trains every epoch at the widest size: its estimate is its
    epochs x Firefly's last-round epoch time, not a Firefly run's (which spends its early rounds narrow). A Firefly
    run still to train brings such a follow-up too, counted before it exists."""
    from replication.config import SMOKE
    firefly = SMOKE.replace(method="firefly", seed=0)
    fixed = SMOKE.replace(method="fixed", start_width=None, widths=(8, 8), seed=0)
    record = {"name": "ff0", "config": firefly.result_fields(),
              "epochs": [{"round": 0, "time_s": 1.0}] + [{"round": SMOKE.rounds - 1, "time_s": t} for t in (3.0, 5.0)]}
    assert study_time.last_round_epoch_s([record], "firefly") == 4.0

    class Study:
        def missing(self):
            return [fixed, firefly.replace(seed=1)]

        def follow_ups(self, r):
            return [fixed] if r["config"]["method"] == "firefly" else []

        def results_dir(self):
            return str(tmp_path)
    runs, seconds = study_time.remaining(Study(), [record], {"ff0": 100.0}, [10.0])
    per_fixed = SMOKE.rounds * SMOKE.epochs_per_round * 4.0
    # the missing fixed net, Firefly seed 1 (its finished kind's 100 s) and that run's follow-up; plus seed 1's
    # round 0 if it is a shared one not stored yet
    shared = firefly.replace(seed=1).round0_key() is not None
    assert runs == 3 and seconds == 2 * per_fixed + 100.0 + (10.0 if shared else 0.0)
