"""torchdiffeq's private internals: odecli's own solver list, and a clear stop when they move."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torchdiffeq
import torchdiffeq._impl.interp as tdq_interp
import torchdiffeq._impl.solvers as tdq_solvers
from torchdiffeq._impl.odeint import SOLVERS as TORCHDIFFEQ_SOLVERS

from odecli.errors import OdecliError
from odecli.numerics import aca, backend, methods, solve
from odecli.paths import config_dir

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def test_solver_configs_are_exactly_odecli_methods():
    configs = sorted(p.stem for p in (config_dir() / "solver").glob("*.yaml"))
    assert configs == sorted(methods.METHODS)
    assert len(methods.METHODS) == 14 == len(set(methods.METHODS))
    assert solve.METHODS is methods.METHODS is backend.METHODS
    assert list(backend.SOLVERS) == list(methods.METHODS)


def test_methods_keep_torchdiffeqs_table_order():
    # Error messages and listings show the methods in the order torchdiffeq 0.2.5 uses.
    assert [m for m in TORCHDIFFEQ_SOLVERS if m in methods.METHODS] == list(methods.METHODS)


def test_installed_torchdiffeq_passes_the_check():
    found, missing = backend.find_private()
    assert missing == []
    backend.check(torchdiffeq.__version__, found["SOLVERS"], missing)
    assert aca._interp_evaluate is tdq_interp._interp_evaluate
    assert aca.FixedGridODESolver is tdq_solvers.FixedGridODESolver


def test_pyproject_pins_the_tested_range():
    assert f'"{backend.TESTED_RANGE}"' in PYPROJECT.read_text()


def test_a_method_missing_from_the_table_stops_with_one_clear_line():
    table = {m: object() for m in methods.METHODS if m not in ("heun2", "rk4")}
    with pytest.raises(OdecliError) as info:
        backend.check("0.3.0", table)
    message = str(info.value)
    assert "\n" not in message
    assert "torchdiffeq 0.3.0" in message
    assert "solver table lacks heun2, rk4" in message
    assert "torchdiffeq>=0.2.5,<0.3" in message


def test_a_missing_private_name_stops_with_one_clear_line(monkeypatch):
    monkeypatch.delattr(tdq_interp, "_interp_evaluate")
    monkeypatch.delattr(tdq_solvers.FixedGridODESolver, "_linear_interp")
    found, missing = backend.find_private()
    assert missing == ["torchdiffeq._impl.interp._interp_evaluate",
                       "FixedGridODESolver._linear_interp"]
    with pytest.raises(OdecliError) as info:
        backend.check("0.2.9", found["SOLVERS"], missing)
    message = str(info.value)
    assert "\n" not in message
    assert "torchdiffeq 0.2.9" in message
    assert "torchdiffeq._impl.interp._interp_evaluate" in message
    assert "FixedGridODESolver._linear_interp" in message
    assert "torchdiffeq>=0.2.5,<0.3" in message
    assert "solver table" not in message  # the table itself is fine


def test_a_module_that_no_longer_imports_is_reported():
    def importer(name: str):
        if name == "torchdiffeq._impl.rk_common":
            raise ModuleNotFoundError(name)
        return __import__(name, fromlist=["_"])

    found, missing = backend.find_private(importer)
    assert missing == ["torchdiffeq._impl.rk_common.RKAdaptiveStepsizeODESolver",
                       "torchdiffeq._impl.rk_common._runge_kutta_step"]
    with pytest.raises(OdecliError, match="_runge_kutta_step"):
        backend.check("0.4.0", found["SOLVERS"], missing)


def test_extra_solvers_in_the_table_are_ignored():
    table = {"new_solver": object(), **{m: object() for m in methods.METHODS}, "rk5": object()}
    backend.check("0.2.6", table)  # no error
    assert "new_solver" not in methods.METHODS and "new_solver" not in backend.SOLVERS


def test_an_extra_installed_solver_is_not_offered(monkeypatch):
    monkeypatch.setitem(TORCHDIFFEQ_SOLVERS, "new_solver", TORCHDIFFEQ_SOLVERS["rk4"])
    with pytest.raises(OdecliError, match="unknown solver method 'new_solver'"):
        solve.SolverSpec.from_cfg({"method": "new_solver"}, {"name": "direct"})


@pytest.mark.slow
def test_the_cli_reports_an_incompatible_torchdiffeq_in_one_line(tmp_path):
    # A fresh interpreter whose torchdiffeq table lost a solver, as a future release might.
    script = textwrap.dedent("""
        import sys
        from torchdiffeq._impl.odeint import SOLVERS
        del SOLVERS["heun2"]
        from odecli.cli import main
        sys.argv = ["odecli", "train", "train.niters=1", "quiet=true"]
        main()
    """)
    env = {**os.environ, "ODECLI_OUTPUTS": str(tmp_path / "outputs")}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert proc.stderr.startswith("error: torchdiffeq ")
    assert "solver table lacks heun2" in proc.stderr
    assert "torchdiffeq>=0.2.5,<0.3" in proc.stderr
