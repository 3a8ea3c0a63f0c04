"""Whole runs on a user's data and equations: fits, the engine's features, known physics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, read_metrics, run_dirs
from test_training import make, trainer

from odecli.dynamics import systems, ude
from odecli.engine import rundir


def lorenz_file(path: Path, seed: int = 0, n: int = 150, missing: float = 0.10) -> Path:
    """Three Lorenz trajectories (segments of one orbit, t in [0, 1]) on their own irregular
    times, 10% of the cells missing, as a tidy CSV with a trajectory column."""
    rng = np.random.default_rng(seed)
    lor = systems.build({"name": "lorenz"})
    starts = lor.trajectory(torch.tensor([0.0, 0.2, 0.4], dtype=torch.float64))
    rows = []
    for k, y0 in enumerate(starts):
        t = np.sort(rng.uniform(0, 1.0, n))
        t[0] = 0.0
        y = lor.trajectory(torch.tensor(t), y0).numpy().copy()
        cut = rng.random(y.shape) < missing
        cut[0] = False
        y[cut] = np.nan
        for ti, yi in zip(t, y, strict=True):
            cells = ",".join("" if np.isnan(v) else repr(float(v)) for v in yi)
            rows.append(f"run{k},{float(ti)!r},{cells}\n")
    path.write_text("traj,t,x,y,z\n" + "".join(rows))
    return path


def small_file(path: Path) -> Path:
    t = np.linspace(0, 6, 40)
    rows = [f"{float(a)!r},{float(np.cos(a))!r},{float(-np.sin(a))!r}\n" for a in t]
    rows[5] = rows[5].rsplit(",", 1)[0] + ",\n"  # one missing cell
    path.write_text("t,x,y\n" + "".join(rows))
    return path


@pytest.mark.slow
def test_a_3d_lorenz_file_fits_and_beats_the_baselines(cli, outputs, tmp_path):
    f = lorenz_file(tmp_path / "lorenz.csv")
    res = cli("train", "system=file", f"system.path={f}", "system.trajectory=traj",
              "model=deep", "train.batch_size=50", "quiet=true")
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    assert m["data"]["trajectories"] == 3 and m["data"]["variables"] == ["x", "y", "z"]
    assert m["data"]["missing_fraction"] == pytest.approx(0.10, abs=0.02)
    assert m["error_rel"] <= 0.05
    held = m["heldout_error_rel"]
    for name in ("last", "mean", "linear"):
        assert held < m[f"baseline_{name}_error_rel"], name
    assert m["beats_baselines"] is True
    for name in ("time.png", "phase.png", "loss.png"):
        assert (run / name).stat().st_size > 1000
    assert not (run / "vector_field.png").exists()   # 3-D: no vector field


def _run(cli, outputs, *args) -> Path:
    before = set(run_dirs(outputs))
    res = cli("train", *args)
    assert res.exit_code == 0, res.stderr
    (run,) = set(run_dirs(outputs)) - before
    return run


@pytest.mark.parametrize("system", ["file", "lorenz"])
def test_resume_continues_bit_for_bit(cli, outputs, tmp_path, system):
    args = ["system=file", f"system.path={small_file(tmp_path / 'd.csv')}"] \
        if system == "file" else ["system=lorenz", "model=small"]
    const = [*args, *FAST, "train.schedule=constant", "train.checkpoint_every=4",
             "plots.enabled=false"]
    full = _run(cli, outputs, *const, "train.niters=8")
    part = _run(cli, outputs, *const, "train.niters=4")
    res = cli("train", f"resume={part}", "train.niters=8")
    assert res.exit_code == 0, res.stderr
    a, b = read_metrics(full), read_metrics(part)
    assert b["iterations"] == 8 and a["final_loss"] == b["final_loss"]
    assert a["error_rel"] == b["error_rel"]
    res = cli("eval", str(part), "--out", str(tmp_path / "ev"))
    assert res.exit_code == 0, res.stderr
    assert rundir.read_json(tmp_path / "ev" / "eval.json")["error_rel"] == pytest.approx(
        b["error_rel"], rel=1e-9)


def test_eval_report_and_a_sweep_on_a_data_file(cli, outputs, tmp_path, monkeypatch):
    f = small_file(tmp_path / "d.csv")
    monkeypatch.chdir(tmp_path)
    run = _run(cli, outputs, "system=file", "system.path=d.csv", *FAST)
    monkeypatch.chdir(outputs.parent.parent)  # eval from elsewhere: the path was made absolute
    stored = read_metrics(run)
    res = cli("eval", str(run), "--out", str(tmp_path / "ev"))
    assert res.exit_code == 0, res.stderr
    ev = rundir.read_json(tmp_path / "ev" / "eval.json")
    for key in ("error_rel", "heldout_error_rel", "baseline_linear_error_rel"):
        assert ev[key] == pytest.approx(stored[key], rel=1e-9), key
    assert (tmp_path / "ev" / "time.png").exists()
    res = cli("train", "-m", "system=file", f"system.path={f}", "seed=0,1", *FAST)
    assert res.exit_code == 0, res.stderr
    jobs = sorted(p.parent for p in (outputs / "multirun").rglob("metrics.json"))
    assert [read_metrics(j)["status"] for j in jobs] == ["ok", "ok"]
    res = cli("report", str(outputs), "--no-plots")
    assert res.exit_code == 0, res.stderr
    assert res.stdout.count("file") >= 3


def test_trackers_mirror_a_data_file_run(cli, outputs, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    f = small_file(tmp_path / "d.csv")
    run = _run(cli, outputs, "system=file", f"system.path={f}", *FAST, "logger=tensorboard")
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("heldout_error_rel")] == [0, 2, 4]


def test_a_known_part_plus_network_reports_its_parts(cli, outputs):
    run = _run(cli, outputs, "experiment=lotka_ude", *FAST)
    m = read_metrics(run)
    assert m["known_equations"] == ["dx/dt = a*x", "dy/dt = -c*y"]
    assert m["known_params"] == {"a": 1.5, "c": 3.0} and m["known_network"] is True
    assert 0 < m["missing_term_error_rel"] < 2
    assert (run / "ude.png").stat().st_size > 1000
    hist = (run / "history.csv").read_text().splitlines()[0]
    assert "missing_term_error_rel" in hist


def test_fixed_known_parameters_are_not_trained_and_trainable_ones_are(tmp_path):
    fixed = make("experiment=lotka_ude", "train.niters=3", "train.test_freq=3")
    exp = trainer(fixed, tmp_path / "a").exp
    assert isinstance(exp.field, ude.HybridField)
    assert not any(p.ndim == 0 for p in exp.field.parameters())
    (tmp_path / "b").mkdir()
    moving = make("experiment=lotka_ude", "model.known.trainable=true", "train.niters=3",
                  "train.test_freq=3")
    tr = trainer(moving, tmp_path / "b")
    m = tr.run()
    assert m["known_params"]["a"] != 1.5 and m["known_params"]["c"] != 3.0
    state = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)
    assert float(state["modules"]["field"]["known.weights.a"]) == pytest.approx(
        m["known_params"]["a"])


def test_known_equations_alone_fit_lotka_volterras_parameters(tmp_path):
    """model.known.network=false: a mechanistic fit by the same loop recovers the truth."""
    cfg = make("system=lotka", 'model.known.rhs=["a*x - b*x*y", "d*x*y - c*y"]',
               "model.known.params={a: 1.2, b: 0.8, c: 2.5, d: 0.8}",
               "model.known.network=false", "train.niters=150", "train.test_freq=150",
               "train.lr=0.05", "train.loss=mse")
    (tmp_path / "r").mkdir()
    m = trainer(cfg, tmp_path / "r").run()
    truth = {"a": 1.5, "b": 1.0, "c": 3.0, "d": 1.0}
    for k, v in truth.items():
        assert m["known_params"][k] == pytest.approx(v, rel=0.05), k
    assert m["error_rel"] < 0.05 and "missing_term_error_rel" not in m


def test_known_physics_on_a_data_file_is_written_in_the_files_units(cli, outputs):
    run = _run(cli, outputs, "system=hare_lynx",
               'model.known.rhs=["a*hare - b*hare*lynx", "d*hare*lynx - c*lynx"]',
               "model.known.params={a: 0.55, b: 0.028, c: 0.84, d: 0.026}",
               "model.known.network=false", *FAST)
    m = read_metrics(run)
    assert m["known_network"] is False and set(m["known_params"]) == set("abcd")
    assert (run / "ude.png").exists()
    # the least-squares Lotka-Volterra (benchmarks/hare_lynx.py): a 25% fit of 1900-1915
    assert m["error_rel"] < 0.5


def test_the_learned_field_its_scaling_and_known_part_are_reachable(tmp_path):
    """What `odecli recover` (issue 26) needs from an experiment."""
    f = small_file(tmp_path / "d.csv")
    cfg = make("system=file", f"system.path={f}", 'model.known.rhs=["0", "-x"]',
               "train.niters=2", "train.test_freq=2")
    (tmp_path / "r").mkdir()
    exp = trainer(cfg, tmp_path / "r").exp
    assert set(exp.modules()) == {"field", "scaling"}
    assert exp.field.known.describe() == ["dx/dt = 0", "dy/dt = -x"]
    rate = exp.field_in_data_units(np.array([[1.0, 0.0]]), 0.0)
    assert rate.shape == (1, 2) and math.isfinite(float(rate.sum()))
    out = exp.forecast(np.linspace(0, 1, 5), np.array([1.0, 0.0]))
    assert out.shape == (5, 2) and np.allclose(out[0], [1.0, 0.0])
    assert json.dumps(exp.table.summary())


def test_a_data_file_runs_summary_line_shows_its_held_out_score_and_the_baselines(cli, outputs):
    res = cli("train", "system=hare_lynx", "train.niters=4", "train.test_freq=2",
              "gradient=direct", "plots.enabled=false")
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("train: ok"))
    assert f"heldout_error_rel {m['heldout_error_rel']:.4g}" in line
    assert f"beats_baselines {'yes' if m['beats_baselines'] else 'no'}" in line
    assert "extrap_error_rel" not in line
