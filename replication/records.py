"""Run records on disk: paths, atomic writes, provenance stamps and the run cache (the bottom layer).

A run's record lives at `<results_dir>/runs/<config name>.json`; the name ends with the config's hash, so a record
whose stored key equals the config's key is the same experiment and is reused instead of recomputed. Derived CSVs
(analyses) are cached the same way by `cached_csv`.
"""
from __future__ import annotations

import contextlib
import datetime as dt
import glob
import hashlib
import json
import os
import platform
import subprocess
import tempfile

import torch

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_ROOT = os.path.join(REPO_ROOT, "results")  # results/<study>/: records, checkpoints, cached analyses


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


class CannotWrite(OSError):
    """A results file or folder that cannot be written; the message names it and the cause."""


def _cause(exc: BaseException, folder: str) -> str:
    import errno
    import shutil
    code = getattr(exc, "errno", None)
    if code in (errno.ENOSPC, errno.EDQUOT):
        return "the disk is full"
    if code == errno.EFBIG:
        return "the file size limit was reached (ulimit -f)"
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is read-only"
    try:
        if shutil.disk_usage(folder).free < 1 << 20:
            return "the disk is full"
    except OSError:
        pass
    return f"{type(exc).__name__}: {str(exc).splitlines()[0][:120] if str(exc) else ''}"


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write via a temporary file in the same folder and rename: a reader sees the old or the new file, never half
    of one; a failed write leaves nothing behind and names the file and the cause."""
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except OSError as exc:
        raise CannotWrite(f"cannot write {path}: {_cause(exc, folder)}") from None
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def require_writable(*folders: str) -> None:
    """Check, before any work, that each folder can be written, or made where it does not exist yet (a real write:
    permissions, read-only mounts and immutable folders all fail here, for root too). Creates nothing."""
    for folder in folders:
        existing = os.path.abspath(folder)
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)  # a folder yet to be made: its nearest existing parent must take it
        try:
            with tempfile.TemporaryFile(dir=existing):
                pass
        except OSError as exc:
            raise CannotWrite(f"cannot write in {folder}: {_cause(exc, folder)}; nothing was started") from None


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
        # The code's state, not the study's outputs: a run resumed from a committed checkpoint rewrites that tracked
        # file as it trains, which says nothing about the code that trains it.
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results")
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


@contextlib.contextmanager
def run_lock(name: str, results_dir: str, log=print):
    """Hold the lock of run `name` in `results_dir`: one trainer per run across processes and commands (two
    studies on one folder, a study beside a cluster job). An flock, so it dies with its holder; a second process
    waits for the holder to finish (or die) and then finds the record, or resumes from the checkpoint."""
    import fcntl
    folder = os.path.join(results_dir, "locks")
    os.makedirs(folder, exist_ok=True)
    fd = os.open(os.path.join(folder, name + ".lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            log(f"[{name}] is being trained by another process (pid {holder}); waiting for it to finish")
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


def run_path(cfg, results_dir: str) -> str:
    return os.path.join(results_dir, "runs", cfg.name() + ".json")


def record_checksum(record: dict) -> str:
    """sha256 of the record's canonical JSON without its checksum: equal for the written and the re-read record
    (JSON floats round-trip exactly), different after any edit."""
    body = {k: v for k, v in record.items() if k != "checksum"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


def seal(record: dict) -> dict:
    return {**record, "checksum": record_checksum(record)}


def _inconsistency(record: dict, path: str) -> str | None:
    """Why a complete record disagrees with itself (None: it does not): its final block with its last epoch, its key
    with its config, its name with its file and key."""
    from .config import Config
    try:
        if record["final"]["test_acc"] != record["epochs"][-1]["test_acc"]:
            return (f"final.test_acc {record['final']['test_acc']} differs from its last epoch's "
                    f"{record['epochs'][-1]['test_acc']}")
        key = Config.from_dict(record["config"]).key()
        if record["config_key"] != key:
            return f"config_key {record['config_key']} is not the key of its config ({key})"
        if os.path.basename(path) != f"{record['name']}.json" or not record["name"].endswith(key):
            return f"its name {record['name']!r} does not match the file name or its config"
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return f"it is incomplete or malformed ({type(exc).__name__}: {exc})"
    return None


def record_problem(record: dict, path: str) -> str | None:
    """Why a complete record is not what the code wrote (None: it is): an inconsistency, or an edit after writing
    (checksum)."""
    if record.get("status") != "complete":
        return None
    inconsistent = _inconsistency(record, path)
    if inconsistent:
        return inconsistent
    if "checksum" not in record:
        return ("it has no checksum (written before checksums existed, or by hand); if it is an untouched record of "
                "this project, `python -m replication seal-records <its results folder>` stamps it")
    if record["checksum"] != record_checksum(record):
        return "its content does not match its checksum (edited after it was written)"
    return None


def read_record(path: str) -> dict:
    """A run record, refused with one line naming the file when it is damaged or edited."""
    record = read_json(path, RECORD_REMEDY)
    problem = record_problem(record, path)
    if problem:
        raise DamagedFile(f"{path} is refused: {problem}; {RECORD_REMEDY}")
    return record


def load_cached(cfg, results_dir: str) -> dict | None:
    path = run_path(cfg, results_dir)
    if not os.path.isfile(path):
        return None
    rec = read_record(path)
    return rec if rec.get("config_key") == cfg.key() and rec.get("status") == "complete" else None


def load_runs(results_dir: str) -> list[dict]:
    recs = []
    for path in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
        rec = read_record(path)
        if rec.get("status") == "complete":
            recs.append(rec)
    return recs


def figures_dir(preset_name: str) -> str:
    return os.path.join(REPO_ROOT, "figures", preset_name)


def tables_dir(preset_name: str) -> str:
    return os.path.join(REPO_ROOT, "results", preset_name, "tables")


CHECKSUM_LINE = "# sha256:"


def _csv_checksum(body: str) -> str:
    return CHECKSUM_LINE + hashlib.sha256(body.encode()).hexdigest()


def read_cached_csv(path: str, key: str):
    """The table cached in `path` for `key`, None when it holds another key; refused with one line naming the file
    when its content no longer matches its checksum (truncated, edited)."""
    import io

    import pandas as pd
    with open(path) as f:
        if f.readline().strip() != f"# {key}":
            return None
        stamp, body = f.readline().strip(), f.read()
    remedy = "delete it and rerun to recompute it"
    if not stamp.startswith(CHECKSUM_LINE):
        raise DamagedFile(f"{path} is refused: it has no checksum line (written before checksums, or by hand); "
                          f"`python -m replication seal-records <its results folder>` stamps an untouched one, "
                          f"or {remedy}")
    if stamp != _csv_checksum(body):
        raise DamagedFile(f"{path} is refused: its content does not match its checksum (truncated or edited); {remedy}")
    return pd.read_csv(io.StringIO(body))


def cached_csv(path: str, key: str, compute):
    """Read `path` if its first line records `key` (and its checksum holds), else `compute()` a DataFrame and write
    it with that line and the checksum of what follows."""
    if os.path.isfile(path):
        table = read_cached_csv(path, key)
        if table is not None:
            return table
    table = compute()
    body = table.to_csv(index=False, float_format="%.6g")
    atomic_write_text(path, f"# {key}\n{_csv_checksum(body)}\n{body}")
    return table


def seal_folder(results_dir: str, log=print) -> int:
    """Stamp the run records and cached tables of `results_dir` written before checksums existed, after checking
    each record's internal consistency (final vs last epoch, key vs config, name). Returns how many were stamped;
    sealed files are left as they are."""
    stamped = 0
    for path in sorted(glob.glob(os.path.join(results_dir, "runs", "*.json"))):
        record = read_json(path, RECORD_REMEDY)
        if "checksum" in record or record.get("status") != "complete":
            continue
        problem = _inconsistency(record, path)
        if problem:
            raise DamagedFile(f"{path} is not stamped: {problem}; {RECORD_REMEDY}")
        write_json(path, seal(record))
        stamped += 1
    for path in sorted(glob.glob(os.path.join(results_dir, "*.csv"))):
        with open(path) as f:
            head, second, rest = f.readline(), f.readline(), f.read()
        if not head.startswith("# ") or second.startswith(CHECKSUM_LINE):
            continue
        body = second + rest
        atomic_write_text(path, f"{head}{_csv_checksum(body)}\n{body}")
        stamped += 1
    log(f"{results_dir}: {stamped} file(s) stamped")
    return stamped
