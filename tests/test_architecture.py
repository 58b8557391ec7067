"""The architecture holds as a contract: the import rules in pyproject.toml ([tool.importlinter]), the
extras table against pyproject's extras, and a tree a reader can take in at a glance."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
from fixtures_small import REPO

from wae_deploy.core import extras, moved

LINT = Path(sys.executable).with_name("lint-imports")
PACKAGE = REPO / "wae_deploy"


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml"), "--no-cache"], cwd=root,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root)}, capture_output=True, text=True,
                          timeout=300)


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("layout")
    shutil.copytree(PACKAGE, root / "wae_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


@pytest.mark.skipif(not LINT.is_file(), reason="import-linter is a dev extra")
@pytest.mark.parametrize("module, line, broken", [
    (None, None, None),
    ("runtime/artifact.py", "import torch", "the device side never needs torch"),
    ("convert/build.py", "def f():\n    import torch.nn", "the device side never needs torch"),
    ("runtime/predict.py", "from wae_deploy.benchmark import results", "layers"),
    ("training/train.py", "from wae_deploy.benchmark import gate", "layers"),
    ("benchmark/report.py", "from wae_deploy.cli import options", "layers"),
])
def test_import_rules_hold_and_a_planted_crossing_breaks_them(copy, module, line, broken):
    target = copy / "wae_deploy" / module if module else None
    before = target.read_text() if target else None
    if target:
        target.write_text(before + f"\n\n{line}\n")
    try:
        r = lint_imports(copy)
    finally:
        if target:
            target.write_text(before)
    if broken is None:
        assert r.returncode == 0, r.stdout + r.stderr
    else:
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"{broken}" in r.stdout.split("Broken contracts")[1], r.stdout


def test_the_tree_shows_the_architecture():
    top = sorted(p.name for p in PACKAGE.iterdir() if p.name != "__pycache__" and not p.name.endswith(".egg-info"))
    assert len(top) <= 8, top
    for package in (p for p in PACKAGE.rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(package.read_text()))
        if package.parent.parent == PACKAGE:  # each top-level package says its job and what it may import
            assert doc and "import" in doc, package
    stdlib = set(sys.stdlib_module_names)
    assert not [p for p in PACKAGE.rglob("*.py") if p.stem in stdlib and p.stem != "__main__"]


def test_every_extra_package_has_its_install_hint():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    by_distribution = {dist: extra for dist, extra in extras.PACKAGES.values()}
    for extra, requirements in project["optional-dependencies"].items():
        for requirement in requirements:
            name = requirement.split(">")[0].split("=")[0].split("[")[0].strip()
            if name == "wae-deploy" or extra == "dev":
                continue
            assert name in by_distribution, f"{name} of [{extra}] has no install hint in core/extras.py"
            assert by_distribution[name] == extra or name == "nncf", (name, extra)
    for requirement in project["dependencies"]:
        name = requirement.split(">")[0].strip()
        assert by_distribution.get(name, "?") is None, f"{name} is a base dependency"
    assert extras.install_command("openvino") == "pip install 'wae-deploy[openvino]'"
    assert extras.install_command("google.protobuf") == "pip install 'wae-deploy[train]'"
    assert extras.install_command("onnxruntime") == "pip install wae-deploy"


def test_old_module_names_are_the_new_modules_with_a_warning(monkeypatch):
    import importlib

    import wae_deploy

    for name in wae_deploy.__all__:  # importing wae_deploy.build binds the module there (core/moved.py)
        monkeypatch.setattr(wae_deploy, name, getattr(wae_deploy, name))
    for old, new in moved.MOVED.items():
        module = importlib.import_module(f"wae_deploy.{new}")  # every new home exists
        sys.modules.pop(f"wae_deploy.{old}", None)
        with pytest.warns(DeprecationWarning, match=f"wae_deploy.{old} is now wae_deploy.{new};"):
            assert importlib.import_module(f"wae_deploy.{old}") is module, old
    # a module under a moved package moved with it: one object, not a second copy loaded from its file
    import wae_deploy.convert.targets.tensorrt.layers as layers

    sys.modules.pop("wae_deploy.targets.tensorrt.layers", None)
    with pytest.warns(DeprecationWarning):
        assert importlib.import_module("wae_deploy.targets.tensorrt.layers") is layers
