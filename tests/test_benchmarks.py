"""The benchmarks are run by hand, not by CI, so nothing else notices when odecli moves a
name they import: every `from odecli... import name` in them (at the top, inside functions,
and in the scripts they hand to a subprocess as a string) must still resolve."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest
from conftest import REPO

SCRIPTS = sorted((REPO / "benchmarks").glob("*.py"))


def odecli_imports(tree: ast.AST) -> list[tuple[str, str | None]]:
    """(module, name) for each odecli import in the tree, and in any string constant that
    parses as Python importing odecli (a subprocess's script)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "odecli":
            found += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, None) for a in node.names if a.name.split(".")[0] == "odecli"]
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and "odecli" in node.value and "import" in node.value):
            try:
                inner = ast.parse(node.value)
            except SyntaxError:
                continue  # prose or a shell line, not a script
            found += odecli_imports(inner)
    return found


def test_the_scan_sees_imports_in_functions_and_in_subprocess_scripts():
    tree = ast.parse('def f():\n    from odecli.paths import yaml_node\n'
                     'S = r"""\nimport odecli\nfrom odecli.cde import models\n"""\n')
    assert odecli_imports(tree) == [("odecli.paths", "yaml_node"), ("odecli", None),
                                    ("odecli.cde", "models")]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_odecli_name_a_benchmark_imports_exists(script: Path):
    missing = []
    for module, name in odecli_imports(ast.parse(script.read_text(), str(script))):
        mod = importlib.import_module(module)
        if name is not None and not hasattr(mod, name):
            try:  # a submodule imported by name: from odecli.cde import models
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{script.name} imports names odecli no longer has: {missing}"
