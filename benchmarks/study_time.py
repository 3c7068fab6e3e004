"""How much CPU a study's committed runs took, counted once per shared round 0, and the wall time that makes with
one-thread processes side by side. Prints figures; it is a measurement, not a test.

    python benchmarks/study_time.py [preset] [jobs]      (defaults: fulldata 2)
"""
import glob
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from replication.config import Config  # noqa: E402
from replication.study import results_dir  # noqa: E402
from replication.train import round0_path  # noqa: E402


def main(preset: str = "fulldata", jobs: int = 2) -> None:
    records = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(results_dir(preset), "runs", "*.json")))]
    records = [r for r in records if r.get("status") == "complete"]
    if not records:
        print(f"no complete run in {results_dir(preset)}")
        return
    shared_round0: dict[str, float] = {}
    own = 0.0
    print(f"{'run':58s} {'own s':>8s} {'growth s':>9s} {'top-1':>6s}")
    for r in records:
        round0 = sum(e["time_s"] for e in r["epochs"] if e["round"] == 0)
        growth = sum(g["growth"]["time_s"] for g in r["rounds"] if g.get("growth"))
        # A round 0 stored for sharing is counted once, whichever run trained it (leader or fork).
        shared = round0_path(Config.from_dict(r["config"]), results_dir(preset))
        is_shared = shared is not None and os.path.isfile(shared)
        mine = r["wall_time_s"] - (round0 if is_shared else 0.0)
        if is_shared:
            shared_round0[shared] = round0
        own += mine
        print(f"{r['name']:58s} {mine:8.0f} {growth:9.0f} {100 * r['final']['test_acc']:6.2f}")
    total = own + sum(shared_round0.values())
    print(f"{len(records)} complete runs; {len(shared_round0)} shared rounds 0 counted once "
          f"({sum(shared_round0.values()):.0f} s)")
    print(f"CPU time (one thread per run): {total / 3600:.2f} h; wall time with {jobs} processes: "
          f"{total / 3600 / jobs:.2f} h (if the pool were always full)")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "fulldata", int(sys.argv[2]) if len(sys.argv) > 2 else 2)
