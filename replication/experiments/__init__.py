"""The studies: `plan.Plan` is what a study is; every other module here declares one (`PLAN = ...`) and is found
by its file. Adding a study is adding a file; `--preset NAME` and the notebooks' `preset` then select it."""
from __future__ import annotations

import importlib
import pkgutil

from .plan import RESULTS_ROOT, Plan  # noqa: F401

DEFAULT_PRESET = "quick"  # what `make figures` and the notebooks render unless told otherwise


def plans() -> dict[str, Plan]:
    """{name: plan} of every module in this folder that declares a PLAN (this folder's path is searched on each
    call, so a plan file added at run time is found)."""
    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        plan_ = getattr(importlib.import_module(f"{__name__}.{info.name}"), "PLAN", None)
        if isinstance(plan_, Plan):
            if plan_.name in found:
                raise ValueError(f"two plans are named {plan_.name!r}")
            found[plan_.name] = plan_
    return found


def plan(name_or_plan) -> Plan:
    """The plan of this name (or the plan itself), or one ValueError naming the known ones."""
    if isinstance(name_or_plan, Plan):
        return name_or_plan
    known = plans()
    if name_or_plan not in known:
        raise ValueError(f"unknown preset {name_or_plan!r}; valid: {', '.join(known)}")
    return known[name_or_plan]
