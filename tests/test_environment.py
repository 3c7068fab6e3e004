import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _pins(text):
    return dict(re.findall(r"^[\s-]*([A-Za-z0-9_.\-]+)==([^\s#]+)", text, flags=re.M))


def test_requirements_and_environment_yml_pin_the_same_versions():
    req = _pins(open(os.path.join(ROOT, "requirements.txt")).read())
    env = _pins(open(os.path.join(ROOT, "environment.yml")).read())
    assert req, "requirements.txt has no pins"
    assert req == env


def test_every_requirement_is_pinned_exactly():
    lines = [l.split("#")[0].strip() for l in open(os.path.join(ROOT, "requirements.txt"))]
    assert all("==" in l for l in lines if l), "unpinned requirement"


def test_torch_and_torchvision_import_as_a_pair():
    import torch
    import torchvision
    assert torchvision.__version__.split("+")[0] == "0.29.1" and torch.__version__.split("+")[0] == "2.14.1"


def test_every_third_party_module_the_package_imports_is_pinned():
    """A module imported directly must be pinned directly, not only through another package's requirements."""
    import ast
    import sys
    from importlib.metadata import packages_distributions

    pinned = {name.lower().replace("_", "-") for name in _pins(open(os.path.join(ROOT, "requirements.txt")).read())}
    dists = packages_distributions()
    imported = set()
    for folder, _, files in os.walk(os.path.join(ROOT, "replication")):
        for file in (f for f in files if f.endswith(".py")):
            tree = ast.parse(open(os.path.join(folder, file)).read())
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    imported.add(node.module.split(".")[0])
    third_party = {m for m in imported - set(sys.stdlib_module_names) - {"replication"}}
    unpinned = {m: dists.get(m) for m in third_party
                if not {d.lower().replace("_", "-") for d in dists.get(m, [m])} & pinned}
    assert not unpinned, f"imported but not pinned in requirements.txt: {unpinned}"
