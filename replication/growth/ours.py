"""The paper's method: Firefly's growth with the similarity constraint on the training loss (similarity.py)."""
from __future__ import annotations

from .base import GrowthMethod
from .firefly import firefly_grow

# lambda_sim of method "ours" unless set: chosen by the quick-preset sweep (docs/method.md, notebook 06).
DEFAULT_LAMBDA_SIM = 1.0


def _label(c: dict) -> str:
    details = ((["from round 0"] if c["sim_from_round"] == 0 else [])
               + (["scored at g = 0"] if c.get("firefly_score_at") == "zero" else [])
               + ([f"λ = {c['lambda_sim']:g}"] if c["lambda_sim"] != DEFAULT_LAMBDA_SIM else []))
    return "ours" + (f" ({', '.join(details)})" if details else "")


def _grow(model, cfg, ds, birth_round, generator, device) -> dict:
    return firefly_grow(model, ds, cfg, generator, birth_round, device)


METHOD = GrowthMethod(name="ours", order=4, grows=True, rows=("ours", "ours (from round 0)", "ours (scored at g = 0)"),
                      label=_label, grow=_grow, needs_constraint="Firefly + the similarity constraint")
