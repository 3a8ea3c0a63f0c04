"""Checkpoints, resume, interruption by signal, and `odecli eval`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import read_metrics, run_dirs

from odecli.engine import rundir as runs

QUICK = ["train.test_freq=2", "gradient=direct", "quiet=true", "plots.enabled=false",
         "system.data_size=60"]


def params(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["modules"]["field"]


def same_params(a: Path, b: Path) -> bool:
    pa, pb = params(a), params(b)
    return pa.keys() == pb.keys() and all(torch.equal(pa[k], pb[k]) for k in pa)


def history_without_seconds(run: Path) -> list[str]:
    return [ln.rsplit(",", 1)[0] for ln in (run / "history.csv").read_text().splitlines()]


def test_resume_after_a_checkpoint_is_bit_identical(cli, outputs):
    # Stop at k = 4 (a run with niters=4), resume to 8: same parameters as 8 straight.
    const = [*QUICK, "train.schedule=constant", "train.checkpoint_every=4", "seed=5"]
    assert cli("train", *const, "train.niters=8").exit_code == 0
    (full,) = run_dirs(outputs)
    assert cli("train", *const, "train.niters=4").exit_code == 0
    (part,) = [d for d in run_dirs(outputs) if d != full]
    hydra_before = (part / ".hydra" / "config.yaml").read_text()
    res = cli("train", f"resume={part}", "train.niters=8")
    assert res.exit_code == 0, res.stderr
    assert set(run_dirs(outputs)) == {full, part}, "a resume writes into the same folder"
    m = read_metrics(part)
    assert m["status"] == "ok" and m["iterations"] == 8
    assert same_params(full, part)
    assert history_without_seconds(full) == history_without_seconds(part)
    assert read_metrics(full)["final_loss"] == m["final_loss"]
    assert (part / ".hydra" / "before-resume-1" / "config.yaml").read_text() == hydra_before


def test_checkpoint_every_writes_intermediate_checkpoints(tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from odecli.dynamics.experiment import DynamicsExperiment
    from odecli.engine.loop import Engine
    from odecli.launch.bridge import compose
    from odecli.registry import COMMANDS

    cfg = compose(COMMANDS["train"], [*QUICK, "train.niters=6", "train.checkpoint_every=2"])
    OmegaConf.set_struct(cfg, False)
    trainer = Engine(DynamicsExperiment(cfg, tmp_path), tmp_path)
    saved: list[int] = []
    real = trainer.save_checkpoint
    monkeypatch.setattr(trainer, "save_checkpoint",
                        lambda: (saved.append(trainer.iteration), real())[1])
    trainer.run()
    assert saved == [2, 4, 6]  # every 2 and the final one (not twice at the end)


def test_atomic_write_keeps_the_old_file_when_the_write_dies(tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(b"good")

    def crash(fd: int) -> None:
        raise OSError("disk died")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError):
        runs.atomic_write_bytes(target, b"half-written")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def _start(outputs: Path, *args: str) -> subprocess.Popen:
    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs)}
    return subprocess.Popen([sys.executable, "-m", "odecli", "train", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for_training(outputs: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    end = time.monotonic() + timeout
    while not list(outputs.rglob("history.csv")):  # written by the first evaluation
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < end, "training did not start"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_checkpoints_marks_interrupted_and_resumes(cli, outputs, sig, code):
    args = [*QUICK, "train.niters=150", "train.test_freq=50", "train.checkpoint_every=1000"]
    proc = _start(outputs, *args)
    _wait_for_training(outputs, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err and "resume=" in err
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    assert m["status"] == "interrupted" and m["interrupted_by"] == signal.Signals(sig).name
    assert 0 <= m["iterations"] < 150
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    assert state["iteration"] == m["iterations"]
    if sig == signal.SIGTERM:
        return
    res = cli("train", f"resume={run}")
    assert res.exit_code == 0, res.stderr
    assert read_metrics(run)["status"] == "ok" and read_metrics(run)["iterations"] == 150
    # The interrupted-and-resumed run ends exactly where an uninterrupted one does.
    assert cli("train", *args).exit_code == 0
    (straight,) = [d for d in run_dirs(outputs) if d != run]
    assert same_params(run, straight)


def test_bad_resume_input_is_one_line_and_changes_nothing(cli, outputs, tmp_path):
    assert cli("train", *QUICK, "train.niters=2").exit_code == 0
    (run,) = run_dirs(outputs)
    before = {p: p.read_bytes() for p in run.rglob("*") if p.is_file()}

    def refused(*args: str, message: str) -> None:
        res = cli("train", *args)
        assert res.exit_code == 2, res.stdout + res.stderr
        lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]

    refused(f"resume={tmp_path}", message="is not a run folder")
    refused(f"resume={tmp_path / 'nope'}", message="does not exist")
    refused(f"resume={run}", "model=deep", "train.niters=4",
            message="incompatible config: model.depth")
    refused(f"resume={run}", message="already finished its 2 iterations")
    refused("-m", f"resume={run}", "train.niters=4", message="cannot be combined with -m")
    assert {p: p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
    (run / "checkpoint.pt").write_bytes(b"not a checkpoint")
    refused(f"resume={run}", "train.niters=4", message="is corrupt or unreadable")
    assert not (run / ".hydra" / "before-resume-1").exists()
    assert run_dirs(outputs) == [run]


def test_eval_reproduces_the_stored_error_and_takes_another_solver(cli, outputs):
    assert cli("train", *QUICK, "train.niters=4").exit_code == 0
    (run,) = run_dirs(outputs)
    stored = read_metrics(run)
    res = cli("eval", str(run), "plots.enabled=true")
    assert res.exit_code == 0, res.stderr
    (ev_dir,) = [p.parent for p in run.rglob("eval.json")]
    ev = runs.read_json(ev_dir / "eval.json")
    for key in ("error_abs", "error_rel", "extrap_error_abs", "extrap_error_rel"):
        assert ev[key] == stored[key]
    assert ev["checkpoint_iteration"] == 4
    assert (ev_dir / "phase.png").exists() and (ev_dir / "loss.png").exists()
    assert read_metrics(run) == stored and run_dirs(outputs) == [run]
    res = cli("eval", str(run), "solver=rk4", "solver.step_size=0.05",
              "system.extrapolate=1.0", "--out", str(outputs / "ev2"))
    assert res.exit_code == 0, res.stderr
    ev2 = runs.read_json(outputs / "ev2" / "eval.json")
    assert ev2["solver"] == "rk4" and ev2["extrap_error_rel"] != ev["extrap_error_rel"]


@pytest.mark.parametrize("args,message", [
    (["model=deep"], "odecli eval cannot change 'model=deep'"),
    (["solver=nope"], "Could not find 'solver/nope'"),
])
def test_eval_bad_input(cli, outputs, tmp_path, args, message):
    assert cli("train", *QUICK, "train.niters=2").exit_code == 0
    (run,) = run_dirs(outputs)
    res = cli("eval", str(run), *args)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    res = cli("eval", str(tmp_path))
    assert res.exit_code == 2 and "is not a run folder" in res.stderr
    assert not (run / "eval").exists()


def _as_if_older(run: Path, dotted: str) -> None:
    """Make `run` look as an odecli without config key `dotted` made it: the key gone from
    its .hydra/config.yaml and from its checkpoint's config."""
    from omegaconf import OmegaConf

    parent, leaf = dotted.rsplit(".", 1)
    cfg = OmegaConf.load(run / ".hydra" / "config.yaml")
    del OmegaConf.select(cfg, parent)[leaf]
    OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    node = state["config"]
    for part in parent.split("."):
        node = node[part]
    del node[leaf]
    torch.save(state, run / "checkpoint.pt")


def test_a_run_from_before_a_config_key_existed_resumes_evaluates_and_loads(cli, outputs):
    # odecli gains config keys (whose defaults keep the old behaviour); a run made before
    # one existed still resumes, evaluates and loads, and the key's default is taken
    import odecli

    const = [*QUICK, "train.schedule=constant", "seed=3"]
    assert cli("train", *const, "train.niters=4").exit_code == 0
    (run,) = run_dirs(outputs)
    _as_if_older(run, "train.final_batch_time")
    res = cli("eval", str(run))
    assert res.exit_code == 0, res.stderr
    assert odecli.load(run).dim == 2
    # but setting the missing key to something else is a change of the run: refused
    res = cli("train", f"resume={run}", "train.niters=6", "train.final_batch_time=5")
    assert res.exit_code == 2
    assert "train.final_batch_time: <unset> -> 5" in res.stderr, res.stderr
    res = cli("train", f"resume={run}", "train.niters=6")
    assert res.exit_code == 0, res.stderr
    assert read_metrics(run)["iterations"] == 6
    # the same run straight to 6 ends where the resumed one does
    assert cli("train", *const, "train.niters=6").exit_code == 0
    (full,) = [d for d in run_dirs(outputs) if d != run]
    assert same_params(full, run)


def test_a_run_from_before_a_default_changed_keeps_its_own_values(cli, outputs):
    # odecli changes defaults (system=lotka's model.output_scale was max, now rms): a run
    # made before still evaluates to its stored errors, loads and resumes with its own
    # values, and ends where the same run straight through does
    import yaml

    import odecli

    const = [*QUICK, "system=lotka", "train.schedule=constant", "seed=4"]
    assert cli("train", *const, "model.output_scale=max", "train.niters=4").exit_code == 0
    (run,) = run_dirs(outputs)
    stored = run / ".hydra" / "overrides.yaml"
    given = yaml.safe_load(stored.read_text())
    stored.write_text(yaml.safe_dump([o for o in given if "output_scale" not in o]))
    res = cli("eval", str(run))
    assert res.exit_code == 0, res.stderr
    (ev,) = [runs.read_json(p) for p in run.rglob("eval.json")]
    assert ev["error_rel"] == read_metrics(run)["error_rel"]
    assert odecli.load(run).experiment.field.output_scale == "max"
    res = cli("train", f"resume={run}", "train.niters=6")
    assert res.exit_code == 0, res.stderr
    assert cli("train", *const, "model.output_scale=max", "train.niters=6").exit_code == 0
    (full,) = [d for d in run_dirs(outputs) if d != run]
    assert same_params(full, run)
    # a value given now is still judged against the run's
    res = cli("train", f"resume={run}", "train.niters=8", "model.output_scale=rms")
    assert res.exit_code == 2 and "model.output_scale: max -> rms" in res.stderr, res.stderr


def test_a_requeued_slurm_job_keeps_its_runs_own_values(cli, outputs):
    # a Slurm job requeued after odecli changed a default (upgraded while the job waited in
    # the queue) resumes with the values it started with, not today's
    from odecli import registry
    from odecli.errors import OdecliError
    from odecli.launch import overrides as ov
    from odecli.launch import resume as resume_mod
    from odecli.launch import slurm_job
    from odecli.launch.composing import validate

    const = [*QUICK, "system=lotka", "train.schedule=constant", "seed=4"]
    assert cli("train", *const, "model.output_scale=max", "train.niters=4").exit_code == 0
    (run,) = run_dirs(outputs)
    job = [*const, "train.niters=6"]  # as queued when max was lotka's default
    got = slurm_job.resume_overrides("train", [*job, "resume=elsewhere"], run)
    assert got == [*job, "model.output_scale=max", f"resume={ov.quote(str(run))}"]
    resume_mod.check(run, validate(registry.get("train"), got), got)
    empty = outputs / "empty"  # stopped before its first checkpoint: nothing to pin
    empty.mkdir()
    fresh = slurm_job.resume_overrides("train", job, empty)
    assert fresh == [*job, f"resume={ov.quote(str(empty))}"]
    bare = [*job, got[-1]]  # what the job resumed with before: refused
    with pytest.raises(OdecliError, match="model.output_scale: max -> rms"):
        resume_mod.check(run, validate(registry.get("train"), bare), bare)


def test_a_sweep_from_before_a_default_changed_continues_with_each_jobs_own_values(cli,
                                                                                  outputs):
    import json

    import yaml

    sweep = outputs / "sw"
    args = [*QUICK, "system=lotka", "train.schedule=constant", "seed=0,1"]
    res = cli("train", "-m", *args, "model.output_scale=max", "train.niters=4",
              f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 0, res.stderr
    # as if max had been the default then: gone from the sweep's and its jobs' overrides
    multirun = sweep / "multirun.yaml"
    node = yaml.safe_load(multirun.read_text())
    node["hydra"]["overrides"]["task"].remove("model.output_scale=max")
    multirun.write_text(yaml.safe_dump(node))
    for job in ("0", "1"):
        stored = sweep / job / ".hydra" / "overrides.yaml"
        stored.write_text(yaml.safe_dump([o for o in yaml.safe_load(stored.read_text())
                                          if "output_scale" not in o]))

    def stop_job_1() -> None:
        metrics = sweep / "1" / "metrics.json"
        metrics.write_text(json.dumps({**read_metrics(sweep / "1"), "status": "interrupted"}))

    for niters in (4, 6):  # twice: the first resume leaves its pin in the job's overrides
        stop_job_1()
        res = cli("train", f"resume={sweep}", f"train.niters={niters}")
        assert res.exit_code == 0, res.stderr
        assert read_metrics(sweep / "1")["iterations"] == niters
    straight = outputs / "straight"
    assert cli("train", *[a.replace("seed=0,1", "seed=1") for a in args],
               "model.output_scale=max", "train.niters=6",
               f"hydra.run.dir={straight}").exit_code == 0
    assert same_params(straight, sweep / "1")


def test_eval_from_another_initial_state_scores_the_true_orbit_from_there(cli, outputs):
    import numpy as np

    import odecli

    assert cli("train", *QUICK, "system=lotka", "train.niters=4").exit_code == 0
    (run,) = run_dirs(outputs)
    res = cli("eval", str(run), "system.y0=[0.5,0.5]", "--out", str(outputs / "ev"))
    assert res.exit_code == 0, res.stderr
    ev = runs.read_json(outputs / "ev" / "eval.json")
    # the same score by hand: the learned field's path from (0.5, 0.5) against the true one
    m = odecli.load(run, ["system.y0=[0.5,0.5]"])
    assert np.allclose(m.truth[0], [0.5, 0.5])
    pred, truth, n = m.predict([0.5, 0.5], m.times), m.truth, m.experiment.n_train
    scale = np.sqrt(((truth[:n] - truth[:n].mean(0)) ** 2).sum(-1).mean())
    err = np.sqrt(((pred[:n] - truth[:n]) ** 2).sum(-1).mean()) / scale
    assert abs(ev["error_rel"] - err) < 1e-6 * max(err, 1.0)
    assert ev["error_rel"] != read_metrics(run)["error_rel"]
    res = cli("eval", str(run), "system.y0=[0.5]")
    assert res.exit_code == 2 and "system.y0 must have 2 entries, got 1" in res.stderr
