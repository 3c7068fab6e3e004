"""Run records on disk: atomic JSON writes, provenance stamps, the cache lookup, and tidy tables of many runs.

A run's record lives at `<results_dir>/runs/<config name>.json`; the name ends with the config's hash, so a record
whose stored key equals the config's key is the same experiment and is reused instead of recomputed.
"""
from __future__ import annotations

import datetime as dt
import glob
import json
import os
import platform
import subprocess
import tempfile

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def atomic_write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o):
    if isinstance(o, tuple):
        return list(o)
    if torch.is_tensor(o):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def git_state() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
    try:
        sha = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return {"git_sha": sha.stdout.strip() or None, "git_dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": None, "git_dirty": None}


def versions() -> dict:
    import numpy
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__}
    try:
        import torchvision
        out["torchvision"] = torchvision.__version__
    except Exception:  # torchvision is optional for training; record that it was unusable
        out["torchvision"] = None
    return out


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def provenance(device: torch.device) -> dict:
    return {**git_state(), "versions": versions(), "device": device_name(device), "host": platform.node(),
            "time_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}


def run_path(cfg, results_dir: str) -> str:
    return os.path.join(results_dir, "runs", cfg.name() + ".json")


def load_cached(cfg, results_dir: str) -> dict | None:
    path = run_path(cfg, results_dir)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        rec = json.load(f)
    return rec if rec.get("config_key") == cfg.key() and rec.get("status") == "complete" else None


def load_runs(results_dir: str) -> list[dict]:
    recs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
        with open(path) as f:
            rec = json.load(f)
        if rec.get("status") == "complete":
            recs.append(rec)
    return recs


def runs_table(records: list[dict]):
    """One row per run: config fields that vary in studies, and the final metrics."""
    import pandas as pd
    rows = []
    for r in records:
        c, f = r["config"], r["final"]
        rows.append({"dataset": c["dataset"], "arch": c["arch"], "method": c["method"], "seed": c["seed"],
                     "start_width": c["start_width"], "width_scale": c["width_scale"],
                     "lambda_sim": c["lambda_sim"], "sim_variant": c["sim_variant"], "sim_scope": c["sim_scope"],
                     "sim_from_round": c["sim_from_round"], "rounds": c["rounds"],
                     "epochs_per_round": c["epochs_per_round"], "test_acc": f["test_acc"],
                     "params": f["params"], "flops": f["flops"], "train_flops": f["train_flops"],
                     "wall_time_s": r["wall_time_s"], "key": r["config_key"]})
    return pd.DataFrame(rows)
