"""What a growth method is, and the rule every method uses for how many neurons a step adds.

A method is one file in this folder that declares `METHOD = GrowthMethod(...)`; `registry` finds it there. Besides
how it grows, a method declares how its runs are named in the tables (its rows, in order), so that a table never
meets a run it cannot place.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..models import widths_of


@dataclass(frozen=True)
class GrowthMethod:
    name: str  # the config's `method`
    order: int  # the tables list methods by this number, smallest first
    grows: bool  # False: the network keeps its initial widths (no growth step)
    rows: tuple[str, ...]  # its table rows in order; a label of it not listed here follows them alphabetically
    label: Callable[[dict], str]  # the row a run of this method belongs to, from its config (as records store it)
    # (model, cfg, ds, birth_round, generator, device) -> {"added", "split", "new"}; None for a method that does not grow
    grow: Callable | None = None
    # Why the method needs the similarity constraint (lambda_sim > 0); None: it does not.
    needs_constraint: str | None = None


def neurons_to_add(model: nn.Module, ratio: float) -> int:
    return int(sum(widths_of(model)) * ratio)  # Firefly: int(total x ratio), chosen globally across layers


def plain_label(name: str, c: dict) -> str:
    """A method's label when only the constraint sets a run apart: "random", "random + constraint"."""
    return f"{name} + constraint" if c["lambda_sim"] > 0 else name
