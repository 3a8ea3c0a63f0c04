"""Bad input: one clear line on stderr, no traceback, a non-zero exit, no run passed off as good."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, read_metrics, run_dirs


@pytest.mark.parametrize("args,message", [
    (["system=nope"], "error: Could not find 'system/nope'. Available options in 'system': "
                      "equations, file, fitzhugh_nagumo, hare_lynx, lorenz, lotka, "
                      "lotka_linear, mlp, nonlinear, pendulum, random, sir, spiral, "
                      "spiral_cubic\n"),
    (["solver=rk5"], "Available options in 'solver': adaptive_heun"),
    (["train.niters=abc"], "train.niters must be a positive integer, got 'abc'"),
    (["train.niters=0"], "train.niters must be a positive integer, got 0"),
    (["train.batch_time=500"], "train.batch_time (500) is larger than the number of observed "
                               "points (250)"),
    (["solver.rtol=-1e-3"], "solver.rtol must be a positive number, got -0.001"),
    (["+solver.options.nonsense=1"], "unknown option(s) nonsense for solver 'dopri5'"),
    (["solver=rk4", "solver.step_size=0"], "solver.step_size must be a positive number"),
    (["train.optimizer=lbfgs"], "unknown train.optimizer 'lbfgs'; choose one of: rmsprop"),
    (["data.observe_fraction=1.5"], "data.observe_fraction must be in (0, 1]"),
    (["model.depth=2", "model.width=[8,8,8]"], "model.width lists 3 widths but model.depth is 2"),
    (["model.activation=swishy"], "unknown model.activation 'swishy'"),
    (["model.output_scale=huge"], "unknown model.output_scale 'huge'; choose one of: max"),
    (["train.sampling=random"], "unknown train.sampling 'random'; choose one of: uniform"),
    (["device.dtype=float16"], "device.dtype must be one of float32, float64"),
    (["system.t1=-5"], "system.t1 (-5) must be greater than system.t0"),
    (["solver=scipy_solver", "gradient=direct"], "nothing can be backpropagated through it; "
                                                 "use gradient=adjoint"),
    (["gradient=adjoint", "gradient.seminorm=maybe"],
     "gradient.seminorm must be true or false, got 'maybe'"),
    (["nosuchkey=1"], "unknown config key 'nosuchkey'; see `odecli train --cfg job`"),
    (["train.niter=10"], "unknown config key 'train.niter' (did you mean 'train.niters'"),
    (["--bogus"], "no such option: --bogus (see `odecli train --help`"),
    (["system=hare_lynx", "system.y0=[1,2]"], "config key 'system.y0' does not apply to "
     "system=hare_lynx: it belongs to other system options; see `odecli train "
     "system=hare_lynx --cfg job`"),
])
def test_bad_input_is_one_line_and_exit_2(cli, outputs, args, message):
    res = cli("train", *FAST, *args)
    assert res.exit_code == 2, res.stdout + res.stderr
    assert message in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert not run_dirs(outputs), "a refused run must not leave a run folder"


def test_bad_input_creates_no_folder_even_where_one_is_named(cli, tmp_path):
    res = cli("train", *FAST, "solver.compile=maybe", f"hydra.run.dir={tmp_path / 'a' / 'b'}")
    assert res.exit_code == 2 and "solver.compile must be true, false or auto" in res.stderr
    assert not (tmp_path / "a").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_suggests_auto(cli):
    res = cli("train", "device=cuda", *FAST)
    assert res.exit_code == 2
    assert "CUDA is not available" in res.stderr and "device=auto" in res.stderr


def test_no_traceback_from_a_real_process(cli_subprocess):
    res = cli_subprocess("train", "system=nope")
    assert res.exit_code == 2
    assert "Traceback" not in res.stderr and res.stderr.startswith("error: ")


def test_unwritable_output_folder_is_reported_before_work(cli, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ODECLI_OUTPUTS", str(blocker / "outputs"))
    res = cli("train", *FAST)
    assert res.exit_code == 2
    assert "cannot write the output folder" in res.stderr
    assert blocker.read_text() == "not a folder"


@pytest.mark.slow
def test_solver_failure_records_failed_status_and_keeps_what_was_made(cli, outputs):
    # A learning rate this large blows the field up after a few steps: the adaptive solver
    # then underflows (or the loss turns NaN). The run must say so and keep its history.
    res = cli("train", "train.niters=40", "train.test_freq=1", "train.lr=1e4",
              "train.optimizer=sgd", "train.schedule=constant", "gradient=direct",
              "quiet=true", "+solver.options.max_num_steps=2000")
    assert res.exit_code == 1
    assert "failed" in res.stderr and "hint" in res.stderr
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    assert m["status"].startswith("failed: ")
    assert m["hint"]
    assert 0 < m["iterations"] < 40
    assert (run / "history.csv").read_text().count("\n") >= 2
    assert (run / "loss.png").exists() and (run / "checkpoint.pt").exists()


@pytest.mark.parametrize("limit", ["+solver.options.max_num_steps=1", "solver.max_steps=1"])
def test_impossible_solver_setting_fails_the_run_with_a_hint(cli, outputs, limit):
    res = cli("train", *FAST, limit)
    assert res.exit_code == 1
    assert "max_num_steps" in res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: failed: solver failed")
    (run,) = run_dirs(outputs)
    assert read_metrics(run)["status"] == "failed: solver failed: max_num_steps exceeded"


def test_adaptive_solves_have_a_step_budget_by_default():
    # A diverged field must end the run with a message, not crawl on for hours.
    from odecli.numerics.schema import solver_defaults
    from odecli.numerics.solve import SolverSpec

    budget = solver_defaults("dopri5")["max_steps"]
    assert isinstance(budget, int) and budget > 0
    assert SolverSpec("dopri5", "direct").torchdiffeq_options() == {"max_num_steps": budget}
    assert SolverSpec("dopri5", "direct", max_steps=None).torchdiffeq_options() is None
    own = SolverSpec.from_cfg({"method": "bosh3", "options": {"max_num_steps": 7}},
                              {"name": "direct"})
    assert own.torchdiffeq_options() == {"max_num_steps": 7}
    assert SolverSpec("rk4", "direct", step_size=0.1).torchdiffeq_options() == {
        "step_size": 0.1}
    assert "max_num_steps" not in SolverSpec("scipy_solver", "adjoint").torchdiffeq_options()


@pytest.mark.parametrize("hydra_text,extra", [
    ("Could not find 'hydra/launcher/joblib'\n\nAvailable options in 'hydra/launcher':\n"
     "\tbasic\n\tensemble", "joblib"),
    ("Could not load 'hydra/launcher/submitit_slurm'.", "slurm"),
    ("Could not find 'hydra/sweeper/optuna'", "search"),
])
def test_a_launcher_or_sweeper_not_installed_names_its_extra(hydra_text, extra):
    from odecli.launch.overrides import hydra_message

    line = hydra_message(Exception(hydra_text))
    assert line.endswith(f"; it needs odecli's {extra} extra: pip install 'odecli[{extra}]'")
    assert "\n" not in line and ".;" not in line
    assert "extra" not in hydra_message(Exception("Could not find 'system/lotkaa'"))
