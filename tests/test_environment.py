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
