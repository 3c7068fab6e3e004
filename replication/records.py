"""Run records on disk: paths, atomic writes, provenance stamps and the run cache (the bottom layer).

A run's record lives at `<results_dir>/runs/<config name>.json`; the name ends with the config's hash, so a record
whose stored key equals the config's key is the same experiment and is reused instead of recomputed. Derived CSVs
(analyses) are cached the same way by `cached_csv`.
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


RECORD_REMEDY = "delete it (and the .pt beside it) to train that run again"


class DamagedFile(ValueError):
    """A results file that cannot be read; the message names it and says what to do."""


def read_json(path: str, remedy: str) -> dict:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as exc:
        raise DamagedFile(f"{path} is damaged ({type(exc).__name__}: {exc}); {remedy}") from None


def load_state(path: str, remedy: str, device="cpu") -> dict:
    """torch.load of a checkpoint or weights file (tensors only), with one clear error when it is damaged."""
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # truncation surfaces as OSError, RuntimeError or an unpickling error
        raise DamagedFile(f"{path} is damaged ({type(exc).__name__}: {str(exc).splitlines()[0][:120]}); "
                          f"{remedy}") from None


def atomic_write_text(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".tmp-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
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


def utc_now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def provenance(device: torch.device) -> dict:
    return {**git_state(), "versions": versions(), "device": device_name(device), "host": platform.node(),
            "time_utc": utc_now()}


def run_path(cfg, results_dir: str) -> str:
    return os.path.join(results_dir, "runs", cfg.name() + ".json")


def load_cached(cfg, results_dir: str) -> dict | None:
    path = run_path(cfg, results_dir)
    if not os.path.isfile(path):
        return None
    rec = read_json(path, RECORD_REMEDY)
    return rec if rec.get("config_key") == cfg.key() and rec.get("status") == "complete" else None


def load_runs(results_dir: str) -> list[dict]:
    recs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
        rec = read_json(path, RECORD_REMEDY)
        if rec.get("status") == "complete":
            recs.append(rec)
    return recs


def figures_dir(preset_name: str) -> str:
    return os.path.join(REPO_ROOT, "figures", preset_name)


def tables_dir(preset_name: str) -> str:
    return os.path.join(REPO_ROOT, "results", preset_name, "tables")


def cached_csv(path: str, key: str, compute):
    """Read `path` if its first line records `key`, else `compute()` a DataFrame and write it with that line."""
    import pandas as pd
    if os.path.isfile(path):
        with open(path) as f:
            if f.readline().strip() == f"# {key}":
                return pd.read_csv(f)
    table = compute()
    atomic_write_text(path, f"# {key}\n" + table.to_csv(index=False, float_format="%.6g"))
    return table
