"""The package reads top-down: each module imports only from its own layer or the layers below, and no import
(module-level or inside a function) closes a circle."""
import ast
import os

import pytest

import replication

PACKAGE = os.path.dirname(replication.__file__)
# 0 core (and run records on disk) -> 1 training -> 2 experiments -> 3 rendering -> 4 entry points
LAYERS = {
    0: {"config", "records", "stats", "data", "models", "growth", "firefly", "strategies", "similarity",
        "corruptions", "params", "candidates", "devices", "progress"},
    1: {"train"},
    2: {"pool", "study", "fulldata", "analysis", "cam", "adaptation", "neurons", "executors"},
    3: {"tables", "plots"},
    4: {"cli", "pipeline", "__main__", "__init__"},
}
LAYER_OF = {m: layer for layer, mods in LAYERS.items() for m in mods}


def package_imports() -> dict[str, set[str]]:
    """module -> the package modules it imports anywhere in its source."""
    graph = {}
    for file in sorted(os.listdir(PACKAGE)):
        if not file.endswith(".py"):
            continue
        name = file[:-3]
        tree = ast.parse(open(os.path.join(PACKAGE, file)).read())
        deps = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                deps |= {node.module} if node.module else {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("replication"):
                rest = node.module.split(".")[1:]
                deps |= {rest[0]} if rest else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("replication.")}
        graph[name] = {d.split(".")[0] for d in deps} - {name}
    return graph


def test_every_module_has_a_layer():
    assert set(package_imports()) == set(LAYER_OF), "add the new module to LAYERS"


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_no_import_from_a_layer_above(module):
    above = {d for d in package_imports()[module] if LAYER_OF[d] > LAYER_OF[module]}
    assert not above, f"{module} (layer {LAYER_OF[module]}) imports {sorted(above)} from above"


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


def test_the_checker_sees_function_level_imports_and_cycles(tmp_path, monkeypatch):
    """The test can fail: a module-level and a function-level import that close a circle are both found."""
    for name, body in (("a", "from . import b\n"), ("b", "def f():\n    from .a import x\n")):
        (tmp_path / f"{name}.py").write_text(body)
    monkeypatch.setattr(__import__(__name__), "PACKAGE", str(tmp_path))
    assert package_imports() == {"a": {"b"}, "b": {"a"}}
    with pytest.raises(AssertionError, match="cycle"):
        test_no_import_cycle()
