"""The fixed network: trained at constant widths (compact, full, or the widths a grown run reached)."""
from __future__ import annotations

from .base import GrowthMethod


def is_equal_compute(c: dict) -> bool:
    """A fixed net at explicit widths trained in one round: the schedule of a fixed net given a grown run's
    training FLOPs (experiments/fulldata.py, `fixed_at_equal_compute`)."""
    return c["method"] == "fixed" and bool(c.get("widths")) and c["rounds"] == 1


def _label(c: dict) -> str:
    if c.get("widths"):
        return ("fixed (Firefly's final widths, equal compute)" if is_equal_compute(c)
                else "fixed (Firefly's final widths)")
    return "fixed (compact)" if c["start_width"] is not None else "fixed (full)"


METHOD = GrowthMethod(
    name="fixed", order=0, grows=False, label=_label,
    rows=("fixed (compact)", "fixed (Firefly's final widths)", "fixed (Firefly's final widths, equal compute)",
          "fixed (full)"))
