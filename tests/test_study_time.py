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
