"""The package reads top-down: each module imports only from its own layer or the layers below, and no import
(module-level or inside a function) closes a circle. Role folders take the layer of their role; a module at the top
of the package has its own."""
import ast
import os

import pytest

import replication

PACKAGE = os.path.dirname(replication.__file__)
# 0 core (config, run records on disk, models, data, growth) -> 1 training -> 2 experiments, runs and analyses
# -> 3 rendering -> 4 entry points
LAYERS = {
    0: {"config", "records", "stats", "models", "similarity", "devices", "progress", "data", "growth"},
    1: {"train"},
    2: {"runs", "experiments", "analysis"},
    3: {"report"},
    4: {"cli", "pipeline", "__main__", "__init__"},
}
LAYER_OF = {m: layer for layer, mods in LAYERS.items() for m in mods}


def _modules(package: str) -> dict[str, str]:
    """Dotted module name (relative to the package) -> file, for every .py file under the package."""
    found = {}
    for folder, _, files in os.walk(package):
        for file in files:
            if file.endswith(".py"):
                rel = os.path.relpath(os.path.join(folder, file), package)[:-3].replace(os.sep, ".")
                found[rel[:-len(".__init__")] if rel.endswith(".__init__") else rel] = os.path.join(folder, file)
    return found


def package_imports(package: str | None = None) -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source (dotted names relative to the package;
    `from . import x` names the module x when there is one, else the package it is taken from)."""
    package = package or PACKAGE
    modules = _modules(package)
    graph = {}
    for name, path in modules.items():
        is_package = path.endswith("__init__.py")
        parts = name.split(".") if name != "__init__" else []
        here = parts if is_package else parts[:-1]
        deps = set()
        for node in ast.walk(ast.parse(open(path).read())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = here[:len(here) - (node.level - 1)] if node.level > 1 else list(here)
                target = base + (node.module.split(".") if node.module else [])
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("replication"):
                target = node.module.split(".")[1:]
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.startswith("replication."):
                        deps.add(".".join(alias.name.split(".")[1:]))
                continue
            else:
                continue
            for alias in node.names:
                as_module = ".".join(target + [alias.name])
                dotted = ".".join(target)
                deps.add(as_module if as_module in modules else dotted)
        graph[name] = {d for d in deps if d and d in modules} - {name}
    return graph


def layer_of(module: str) -> int:
    return LAYER_OF[module.split(".")[0]]


def test_every_module_has_a_layer():
    unplaced = {m for m in package_imports() if m.split(".")[0] not in LAYER_OF}
    assert not unplaced, f"add these modules (or their folder) to LAYERS: {sorted(unplaced)}"


@pytest.mark.parametrize("module", sorted(package_imports()))
def test_no_import_from_a_layer_above(module):
    above = {d for d in package_imports()[module] if layer_of(d) > layer_of(module)}
    assert not above, f"{module} (layer {layer_of(module)}) imports {sorted(above)} from above"


def test_no_import_cycle():
    graph = package_imports()
    state = {}

    def visit(node, path):
        if state.get(node) == "done":
            return
        assert state.get(node) != "open", f"import cycle: {' -> '.join(path + [node])}"
        state[node] = "open"
        for dep in sorted(graph[node]):
            visit(dep, path + [node])
        state[node] = "done"

    for module in sorted(graph):
        visit(module, [])


def test_the_checker_sees_function_level_imports_cycles_and_folders(tmp_path, monkeypatch):
    """The test can fail: a module-level and a function-level import that close a circle are both found, also
    across a folder."""
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "__init__.py").write_text("")
    (tmp_path / "a.py").write_text("from .sub import b\n")
    (tmp_path / "sub" / "b.py").write_text("def f():\n    from ..a import x\n")
    monkeypatch.setattr(__import__(__name__), "PACKAGE", str(tmp_path))
    assert package_imports() == {"a": {"sub.b"}, "sub": set(), "sub.b": {"a"}}
    with pytest.raises(AssertionError, match="cycle"):
        test_no_import_cycle()
