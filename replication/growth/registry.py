"""The growth methods, found in this folder: every module that declares `METHOD = GrowthMethod(...)` is one.

Adding a method is adding a file; the config accepts its name, training grows with it, and the tables place its
runs by the rows it declares. A run of a method that is not here is an error wherever it is met.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import GrowthMethod


def _discover() -> dict[str, GrowthMethod]:
    package = __name__.rsplit(".", 1)[0]
    found = {}
    for info in pkgutil.iter_modules(importlib.import_module(package).__path__):
        method = getattr(importlib.import_module(f"{package}.{info.name}"), "METHOD", None)
        if isinstance(method, GrowthMethod):
            if method.name in found:
                raise ValueError(f"two growth methods are named {method.name!r}")
            found[method.name] = method
    return dict(sorted(found.items(), key=lambda item: (item[1].order, item[0])))


METHODS = _discover()


class UnknownMethod(ValueError):
    pass


def method(name: str) -> GrowthMethod:
    if name not in METHODS:
        raise UnknownMethod(f"unknown growth method {name!r}; known: {', '.join(METHODS)} (replication/growth/)")
    return METHODS[name]


def method_label(cfg) -> str:
    """The row a run belongs to in the tables: its method and what sets it apart from that method's default."""
    c = cfg if isinstance(cfg, dict) else cfg.result_fields()
    return method(c["method"]).label(c)


def ordered_labels(configs) -> list[str]:
    """The distinct rows of these runs' configs in table order: by method, then each method's declared rows, then
    its other rows alphabetically (e.g. ours at another lambda). A run of an unknown method raises."""
    rank = {}
    for c in configs:
        m = method(c["method"] if isinstance(c, dict) else c.method)
        label = method_label(c)
        rank[label] = (m.order, m.rows.index(label) if label in m.rows else len(m.rows), label)
    return sorted(rank, key=rank.get)


def grow(model, cfg, ds, birth_round: int, generator, device) -> dict:
    """One growth step of `cfg.method`; returns how many neurons went where."""
    m = method(cfg.method)
    if m.grow is None:
        raise ValueError(f"method {cfg.method!r} does not grow")
    return m.grow(model, cfg, ds, birth_round, generator, device)
