"""The architecture's rules, read from the source (docs/architecture.md states them).

Every module's imports (module-level and inside functions alike: a lazy import is still a
dependency) are read with `ast` and checked against the layer table below: a module imports
only from its own layer or the layers below it, two experiment families never import each
other, no two modules import each other in a cycle, and nothing outside numerics/ imports
torchdiffeq. The checker itself is tested on planted violations, so it cannot pass vacuously.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from odecli import registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "odecli"

# Top to bottom. A module belongs to the first entry whose prefix names it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("cli", ("odecli.cli", "odecli.__main__")),
    # models taken out of odecli: export files (through odecli.load), scikit-learn estimators
    ("out", ("odecli.export", "odecli.sklearn")),
    ("api", ("odecli.api", "odecli")),
    ("launch", ("odecli.launch",)),
    ("families", ("odecli.dynamics", "odecli.latent", "odecli.flows", "odecli.classify",
                  "odecli.cde")),
    ("engine", ("odecli.engine",)),
    ("numerics", ("odecli.numerics",)),
    ("base", ("odecli.errors", "odecli.fields", "odecli.registry", "odecli.paths",
              "odecli.version")),
]
FAMILIES = dict(LAYERS)["families"]


def layer_of(module: str) -> tuple[int, str]:
    """(rank, prefix) of a module: rank 0 is the top layer."""
    best: tuple[int, str] | None = None
    for rank, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (
                    best is None or len(p) > len(best[1])):
                best = (rank, p)
    if best is None:
        raise KeyError(f"{module} is in no layer of tests/test_layers.py")
    return best


def imports(module: str, source: str, known: set[str]) -> set[str]:
    """The odecli modules (and torchdiffeq) a module's source imports, anywhere in it:
    `from odecli import api` is odecli.api, `from odecli.api import run` is odecli.api."""
    found: set[str] = set()
    package = module if module.endswith("__init__") else module.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            subs = {f"{base}.{a.name}" for a in node.names} & known
            found.update(subs or {base})
    out = set()
    for name in found:
        if name.split(".")[0] == "torchdiffeq":
            out.add("torchdiffeq")
        elif name.split(".")[0] == "odecli":
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                out.add(name)
    return out


def violations(sources: dict[str, str]) -> list[str]:
    """Every broken rule in these modules (name -> source), one line each."""
    known = set(sources)
    graph: dict[str, set[str]] = {}
    problems: list[str] = []
    for module, source in sources.items():
        deps = imports(module, source, known)
        if "torchdiffeq" in deps and not module.startswith("odecli.numerics"):
            problems.append(f"{module} imports torchdiffeq (only numerics/ may)")
        targets = deps - {"torchdiffeq"}
        targets.discard(module)
        graph[module] = targets
        rank, prefix = layer_of(module)
        for t in sorted(targets):
            t_rank, t_prefix = layer_of(t)
            if t_rank < rank:
                problems.append(f"{module} ({LAYERS[rank][0]}) imports {t} "
                                f"({LAYERS[t_rank][0]}, a layer above)")
            elif prefix in FAMILIES and t_prefix in FAMILIES and t_prefix != prefix:
                problems.append(f"{module} imports {t}: two families")
    problems += [f"import cycle: {' -> '.join(c)}" for c in cycles(graph)]
    return problems


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (iterative DFS)."""
    found, done = [], set()
    for start in sorted(graph):
        if start in done:
            continue
        stack, path, on_path = [(start, iter(sorted(graph[start])))], [start], {start}
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                stack.pop()
                path.pop()
                on_path.discard(node)
                done.add(node)
            elif nxt in on_path:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in done and nxt in graph:
                stack.append((nxt, iter(sorted(graph[nxt]))))
                path.append(nxt)
                on_path.add(nxt)
    return found


def package_sources() -> dict[str, str]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path.read_text()
    return out


# ------------------------------------------------------------------------------ the tests

def test_every_module_is_in_a_layer_and_every_rule_holds():
    assert violations(package_sources()) == []


def test_the_checker_catches_planted_violations():
    clean = {
        "odecli.cli.app": "from odecli import api\nfrom odecli.launch import bridge\n",
        "odecli.api": "from odecli import registry\n",
        "odecli.launch.bridge": "from odecli.engine import loop\n",
        "odecli.engine.loop": "def f():\n    from odecli.numerics import solve\n",
        "odecli.numerics.solve": "import torchdiffeq\nfrom odecli.errors import OdecliError\n",
        "odecli.dynamics.models": "from .schema import X\n",
        "odecli.dynamics.schema": "from odecli.fields import Schema\n",
        "odecli.registry": "", "odecli.errors": "", "odecli.fields": "",
    }
    assert violations(clean) == []
    upward = {**clean, "odecli.numerics.extra": "def f():\n    from odecli.cli import app\n"}
    assert violations(upward) == [
        "odecli.numerics.extra (numerics) imports odecli.cli.app (cli, a layer above)"]
    across = {**clean, "odecli.latent.model": "from odecli.dynamics.models import ODEField\n"}
    assert violations(across) == ["odecli.latent.model imports odecli.dynamics.models: "
                                  "two families"]
    cycle = {**clean, "odecli.dynamics.schema": "from odecli.dynamics import models\n"}
    assert violations(cycle) == ["import cycle: odecli.dynamics.models -> "
                                 "odecli.dynamics.schema -> odecli.dynamics.models"]
    solver = {**clean, "odecli.engine.loop": "from torchdiffeq import odeint\n"}
    assert violations(solver) == ["odecli.engine.loop imports torchdiffeq (only numerics/ "
                                  "may)"]


def test_every_registered_experiment_lives_in_a_family_subpackage():
    for cmd in registry.COMMANDS.values():
        module = cmd.experiment.partition(":")[0]
        assert layer_of(module)[1] in FAMILIES, cmd.name
        assert issubclass(cmd.experiment_class().trained_model,
                          __import__("odecli.engine.trained", fromlist=["x"]).TrainedModel)


def test_the_architecture_page_names_every_layer_and_family():
    text = (ROOT / "docs" / "architecture.md").read_text()
    for _, prefixes in LAYERS:
        for p in prefixes:
            if p not in ("odecli", "odecli.__main__"):
                name = p.removeprefix("odecli.").replace(".", "/")
                assert (f"{name}/" in text or f"{name}.py" in text), name


def test_solver_facts_come_from_one_table():
    from odecli.numerics import aca, backend, methods, rk, schema, solve

    assert backend.METHODS is methods.METHODS is solve.METHODS
    assert solve.ADAPTIVE is methods.ADAPTIVE and solve.FIXED_GRID is methods.FIXED_GRID
    assert rk.FAST_LOOP is methods.FAST_LOOP and aca.REPLAYABLE is methods.REPLAYABLE
    assert schema.SOLVER.fields["method"].options == methods.METHODS


def test_solver_spec_holds_no_default_of_its_own():
    from odecli.numerics.solve import FROM_YAML, SolverSpec

    for f in dataclasses.fields(SolverSpec):
        if f.name in ("method", "gradient"):
            assert f.default is dataclasses.MISSING
        elif f.name != "notice":
            assert f.default is FROM_YAML, f.name


@pytest.mark.parametrize("module", ["odecli", "odecli.api", "odecli.registry"])
def test_importing_the_api_does_not_import_torch(module):
    import subprocess
    import sys

    code = (f"import sys, {module}; import odecli; odecli.run; "
            "print(sorted(m for m in ('torch', 'hydra') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]"
