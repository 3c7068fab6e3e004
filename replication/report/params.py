"""Notebook parameters, checked in one place: papermill hands over what a user typed, sometimes as a string
(`-p seeds "[3]"`), and a bad value should stop the notebook with one clear message, not deep in a worker."""
from __future__ import annotations

import ast

from ..config import DATASETS
from ..experiments import plans


class ParameterError(ValueError):
    pass


def _as_list(name: str, value) -> list | None:
    """None, a list/tuple, or its string form ("[3, 4]", "3,4", "3")."""
    if value is None or isinstance(value, (list, tuple)):
        return None if value is None else list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if isinstance(value, str):
        text = value.strip()
        if text.lower() in ("", "none", "[]"):
            return None
        try:
            parsed = ast.literal_eval(text if text.startswith("[") else f"[{text}]")
        except (ValueError, SyntaxError):
            raise ParameterError(f"{name}: cannot read {value!r} as a list; pass e.g. -y \"{name}: [3, 4]\"") from None
        return list(parsed) if isinstance(parsed, (list, tuple)) else [parsed]
    raise ParameterError(f"{name}: expected a list, got {type(value).__name__} {value!r}")


def check(preset: str, seeds=None, jobs=0, dataset: str | None = None) -> tuple:
    """(preset, seeds as a tuple of ints or None, jobs >= 1, dataset) or one ParameterError naming the value."""
    known = plans()
    if preset not in known:
        raise ParameterError(f"preset: unknown {preset!r}; valid: {', '.join(known)}")
    seed_list = _as_list("seeds", seeds)
    if seed_list is not None:
        bad = [s for s in seed_list if isinstance(s, bool) or not isinstance(s, int) or s < 0]
        if bad or not seed_list:
            raise ParameterError(f"seeds: every seed must be a non-negative integer, got {seeds!r}")
    if isinstance(jobs, str) and jobs.strip().isdigit():
        jobs = int(jobs)
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 0:
        raise ParameterError(f"jobs: expected an integer >= 0 (0 = the preset's default), got {jobs!r}")
    jobs = jobs or known[preset].default_jobs
    if dataset is not None and dataset not in DATASETS:
        raise ParameterError(f"dataset: unknown {dataset!r}; valid: {', '.join(DATASETS)}")
    return preset, tuple(seed_list) if seed_list else None, jobs, dataset


def check_int(name: str, value, minimum: int | None = None, allow_none: bool = False):
    if value is None and allow_none:
        return None
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or (minimum is not None and value < minimum):
        raise ParameterError(f"{name}: expected an integer{f' >= {minimum}' if minimum is not None else ''}, "
                             f"got {value!r}")
    return value


def check_list(name: str, value, choices) -> list | None:
    items = _as_list(name, value)
    if items is not None and any(v not in choices for v in items):
        raise ParameterError(f"{name}: every item must be one of {', '.join(map(str, choices))}; got {value!r}")
    return items
