"""The CLI end to end: help, list, --cfg, and a short run of every system."""

from __future__ import annotations

import csv

import pytest
from conftest import FAST, read_metrics, run_dirs
from PIL import Image

from odecli.cli.configs_index import options
from odecli.paths import config_dir

# system=file needs a file (tests/test_datafile.py); the shipped dataset runs here
SYSTEMS = [n for n, _ in options(config_dir(), "system") if n != "file"]
METRIC_KEYS = {
    "status", "final_loss", "error_abs", "error_rel", "extrap_error_abs", "extrap_error_rel",
    "nfe_forward_per_iter", "nfe_backward_per_iter", "wall_seconds", "seconds_per_iter",
    "peak_memory_mb", "device", "environment",
}
FIGURES = ("phase.png", "time.png", "vector_field.png", "loss.png")


def test_help_lists_the_commands(cli):
    res = cli("--help")
    assert res.exit_code == 0
    for command in ("train", "list", "spiral-vae", "ecg-vae"):
        assert command in res.stdout


def test_train_help_names_the_config_groups(cli):
    res = cli("train", "--help")
    assert res.exit_code == 0
    for group in ("system", "model", "solver", "gradient", "device", "experiment"):
        assert group in res.stdout
    assert "--multirun" in res.stdout and "--cfg" in res.stdout


def test_list_prints_every_group_option_with_a_description(cli):
    res = cli("list")
    assert res.exit_code == 0
    root = config_dir()
    for group in ("system", "model", "solver", "gradient", "device", "experiment"):
        assert f"{group}:" in res.stdout
        for name, desc in options(root, group):
            assert desc, f"{group}/{name}.yaml has no description comment"
            assert not desc.endswith(":"), f"{group}/{name}.yaml: its first line is cut short"
            assert f"{name}" in res.stdout and desc in res.stdout


def test_list_one_group_and_unknown_group(cli):
    res = cli("list", "solver")
    assert res.exit_code == 0 and "rk4" in res.stdout and "system:" not in res.stdout
    res = cli("list", "nope")
    assert res.exit_code == 2 and "unknown config group 'nope'" in res.stderr


def test_cfg_job_prints_the_composed_config_without_running(cli, outputs):
    res = cli("train", "--cfg", "job", "system=lotka", "solver=rk4")
    assert res.exit_code == 0
    assert "name: lotka" in res.stdout and "method: rk4" in res.stdout
    assert not outputs.exists() or not any(outputs.rglob("metrics.json"))


def test_multirun_with_cfg_is_refused(cli):
    res = cli("train", "-m", "--cfg", "job", "seed=0,1")
    assert res.exit_code == 2 and "cannot be combined" in res.stderr


# one system in the fast part (CI's other Pythons), every system in the full suite
@pytest.mark.parametrize("system", [pytest.param(s, marks=[] if s == "lotka" else pytest.mark.slow)
                                    for s in SYSTEMS])
def test_train_every_system_end_to_end(cli, outputs, system):
    res = cli("train", f"system={system}", *FAST)
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    assert run.name.endswith(f"_{system}")
    m = read_metrics(run)
    data = system == "hare_lynx"  # a data file: held-out errors instead of extrapolation
    keys = (METRIC_KEYS - {"extrap_error_abs", "extrap_error_rel"}) | {"heldout_error_rel"} \
        if data else METRIC_KEYS
    assert keys <= set(m)
    assert m["status"] == "ok" and m["system"] == system and m["iterations"] == 4
    assert m["error_rel"] >= 0 and m["nfe_forward_per_iter"] > 0
    for key in ("torch", "torchdiffeq", "hydra", "python"):
        assert m["environment"][key]
    two_d = system not in ("lorenz", "sir")
    assert (run / "vector_field.png").exists() == two_d  # a vector field only in 2-D
    for name in FIGURES if two_d else [f for f in FIGURES if f != "vector_field.png"]:
        with Image.open(run / name) as img:
            img.verify()
        with Image.open(run / name) as img:
            assert img.format == "PNG" and img.size[0] >= 300 and img.size[1] >= 200
    assert (run / ".hydra" / "config.yaml").exists()
    assert f"system={system}" in (run / ".hydra" / "overrides.yaml").read_text()
    assert (run / "train.log").stat().st_size > 0
    assert (run / "checkpoint.pt").stat().st_size > 0
    rows = list(csv.DictReader((run / "history.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [0, 2, 4]


@pytest.mark.slow
def test_gif_frames_in_iteration_order(cli, outputs):
    res = cli("train", *FAST, "plots.gif=true")
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    with Image.open(run / "training.gif") as gif:
        assert gif.format == "GIF" and gif.n_frames == 3


def test_python_dash_m_entry_point(cli_subprocess):
    res = cli_subprocess("list", "device")
    assert res.exit_code == 0
    assert "cuda" in res.stdout


def test_version_prints_the_packages_version(cli):
    from odecli.version import __version__

    res = cli("--version")
    assert res.exit_code == 0 and res.stdout.strip() == f"odecli {__version__}"
