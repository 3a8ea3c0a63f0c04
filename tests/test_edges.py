"""Nothing lost at the edges (issue 24): outputs never replace what a command did not make,
every run can be continued or restarted, every failure is recorded, and no "internal error"
for what a user or the OS causes. Faults are real where the machine allows: a small tmpfs
fills up, a read-only remount makes a folder unwritable, SIGKILL kills a run."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from odecli.engine import loop
from odecli.launch import claims

CNF = ["quiet=true", "data.n_train=300", "data.n_val=100", "data.n_test=100",
       "model.width=8", "model.depth=2", "train.batch_size=50", "train.niters=4",
       "train.test_freq=2", "solver.rtol=1e-3", "solver.atol=1e-3", "plots.enabled=false"]


def one_error_line(res, code: int = 2) -> str:
    assert res.exit_code == code, (res.exit_code, res.stderr)
    lines = [line for line in res.stderr.strip().splitlines() if not line.startswith("note:")]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "internal error" not in res.stderr and "Traceback" not in res.stderr
    return lines[0]


@pytest.fixture
def cnf_run(cli, outputs, tmp_path) -> Path:
    run = tmp_path / "run"
    res = cli("cnf", *CNF, f"hydra.run.dir={run}")
    assert res.exit_code == 0, res.stderr
    return run


def no_temp_files(folder: Path) -> bool:
    return not [p for p in folder.rglob(".*") if ".tmp" in p.name or "probe" in p.name]


# -- 1. nothing replaced ------------------------------------------------------------------
def test_sample_never_replaces_a_file_or_folder_it_did_not_make(cli, cnf_run, tmp_path):
    out = tmp_path / "s.npy"
    assert cli("sample", str(cnf_run), "--n", "100", "--out", str(out)).exit_code == 0
    first = out.read_bytes()
    line = one_error_line(cli("sample", str(cnf_run), "--n", "10", "--out", str(out)))
    assert str(out) in line and "--overwrite" in line and out.read_bytes() == first
    res = cli("sample", str(cnf_run), "--n", "10", "--out", str(out), "--overwrite")
    assert res.exit_code == 0 and np.load(out).shape == (10, 2)
    # a folder is never replaced, a run folder named like a file least of all
    fake = tmp_path / "x.npy"
    shutil.copytree(cnf_run / ".hydra", fake / ".hydra")
    for args in ([], ["--overwrite"]):
        line = one_error_line(cli("sample", str(cnf_run), "--n", "5", "--out", str(fake),
                                  *args))
        assert "is a run folder" in line and (fake / ".hydra").is_dir()
    assert no_temp_files(tmp_path)


def test_eval_out_never_writes_into_a_run_and_takes_a_claim(cli, cnf_run, tmp_path):
    other = tmp_path / "other"
    assert cli("cnf", *CNF, "seed=1", f"hydra.run.dir={other}").exit_code == 0
    before = {p.name: p.stat().st_mtime_ns for p in other.iterdir()}
    for args in ([], ["--overwrite"]):
        line = one_error_line(cli("eval", str(cnf_run), "--out", str(other), *args))
        assert f"{other} is a run folder" in line
    assert {p.name: p.stat().st_mtime_ns for p in other.iterdir()} == before
    out = tmp_path / "ev"
    assert cli("eval", str(cnf_run), "--out", str(out)).exit_code == 0
    first = (out / "eval.json").read_text()
    line = one_error_line(cli("eval", str(cnf_run), "--out", str(out)))
    assert "already holds files (eval.json" in line and "--overwrite" in line
    assert (out / "eval.json").read_text() == first
    assert cli("eval", str(cnf_run), "--out", str(out), "--overwrite").exit_code == 0
    # a missing parent is refused, as sample refuses it; a held folder is refused
    line = one_error_line(cli("eval", str(cnf_run), "--out", str(tmp_path / "a" / "b")))
    assert "does not exist" in line and not (tmp_path / "a").exists()
    with claims.claim_output(tmp_path / "busy", "eval"):
        line = one_error_line(cli("eval", str(cnf_run), "--out", str(tmp_path / "busy")))
        assert "in use by a running odecli command" in line


# -- 2. every run can be continued ---------------------------------------------------------
def test_default_cadence_checkpoints_by_time(cli, outputs, tmp_path, monkeypatch):
    from odecli.launch.bridge import compose
    from odecli.registry import COMMANDS

    for name in COMMANDS:  # every command that trains
        assert float(compose(COMMANDS[name], []).train.checkpoint_seconds) == 60
    saved = []
    real = loop.Engine.save_checkpoint

    def counting(self):
        saved.append(self.iteration)
        real(self)

    monkeypatch.setattr(loop.Engine, "save_checkpoint", counting)
    res = cli("cnf", *CNF, "train.checkpoint_seconds=1e-9", f"hydra.run.dir={tmp_path / 'a'}")
    assert res.exit_code == 0 and saved == [1, 2, 3, 4]
    saved.clear()
    res = cli("cnf", *CNF, f"hydra.run.dir={tmp_path / 'b'}")  # 60 s: only at the end
    assert res.exit_code == 0 and saved == [4]


def test_a_folder_without_a_checkpoint_restarts_afresh(cli, cnf_run, tmp_path):
    # killed before its first checkpoint: Hydra's files (and a log), nothing trained
    dead = tmp_path / "dead"
    shutil.copytree(cnf_run / ".hydra", dead / ".hydra")
    (dead / "cnf.log").write_text("")
    res = cli("cnf", f"resume={dead}")
    assert res.exit_code == 0, res.stderr
    assert "stopped before its first checkpoint" in res.stderr and "afresh" in res.stderr
    assert json.loads((dead / "metrics.json").read_text())["status"] == "ok"
    assert (dead / ".hydra" / "before-restart-1" / "overrides.yaml").is_file()
    # the same by a plain re-run into the folder
    again = tmp_path / "again"
    shutil.copytree(cnf_run / ".hydra", again / ".hydra")
    res = cli("cnf", *CNF, f"hydra.run.dir={again}")
    assert res.exit_code == 0 and "starting it afresh" in res.stderr
    # killed during start-up, before Hydra saved the overrides: only the lock file
    early = tmp_path / "early"
    early.mkdir()
    (early / claims.LOCK).write_text("pid 1 on elsewhere")
    res = cli("cnf", f"resume={early}", *CNF)
    assert res.exit_code == 0 and "holds no run yet" in res.stderr
    assert (early / "checkpoint.pt").is_file()


def test_ctrl_c_in_start_up_leaves_no_dead_folder(cli, outputs, tmp_path, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted)
    res = cli("cnf", *CNF)
    assert res.exit_code == 130 and "removed" in res.stderr
    assert not list((outputs / "cnf").rglob(".hydra"))


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 900) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < end, f"{path} never appeared"
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.parametrize("command,args", [
    ("cnf", CNF[1:-1]),
    ("classify", ["data.limit=150", "model.width=8", "train.test_freq=2",
                  "dial.enabled=false"]),
])
def test_sigkill_at_any_moment_leaves_a_folder_resume_continues(outputs, tmp_path, command,
                                                                args):
    """A real SIGKILL, in start-up and mid-training (after a time-cadence checkpoint); the one
    documented command, `odecli COMMAND resume=FOLDER`, restarts or continues each."""
    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs)}

    def start(folder: Path, *more: str) -> subprocess.Popen:
        # (solver.compile=false: the kill is the point, not minutes of torch.compile)
        return subprocess.Popen([sys.executable, "-m", "odecli", command, *args,
                                 "quiet=true", "plots.enabled=false", "solver.compile=false",
                                 *more,
                                 f"hydra.run.dir={folder}"], env=env, text=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def resume(folder: Path, niters: int) -> subprocess.CompletedProcess:
        # the run's own overrides again: a folder killed before Hydra saved them has none
        return subprocess.run([sys.executable, "-m", "odecli", command, f"resume={folder}",
                               *args, "quiet=true", "plots.enabled=false",
                               "solver.compile=false", f"train.niters={niters}",
                               "train.checkpoint_seconds=60"], env=env,
                              text=True, capture_output=True, timeout=600)

    early, late = tmp_path / "early", tmp_path / "late"
    for folder, when, more in ((early, claims.LOCK, []),  # claimed; Hydra (just) starting
                               (late, "checkpoint.pt", ["train.checkpoint_seconds=0.2"])):
        proc = start(folder, "train.niters=100000", *more)
        try:
            _wait_for(folder / when, proc)
            time.sleep(0.3)  # late: mid-training, perhaps mid-write of the next checkpoint
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    assert not (late / "metrics.json").exists()
    # the late kill came after some checkpoint, how many steps in depends on the machine's
    # speed: resume to a few steps past it
    reached = int(torch.load(late / "checkpoint.pt", weights_only=False)["iteration"])
    for folder, niters in ((early, 6), (late, reached + 6)):
        res = resume(folder, niters)
        assert res.returncode == 0, res.stderr
        metrics = json.loads((folder / "metrics.json").read_text())
        assert metrics["status"] == "ok" and metrics["iterations"] == niters
    assert no_temp_files(late)


# -- 3. every failure is recorded -------------------------------------------------------------
def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/odecli-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return ok
    finally:
        probe.rmdir()


MOUNT = pytest.mark.skipif(not _can_mount(), reason="needs root with CAP_SYS_ADMIN (mount)")


@pytest.fixture
def small_disk(tmp_path):
    """A 4 MiB tmpfs: a real filesystem that can fill up or turn read-only."""
    where = tmp_path / "disk"
    where.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], check=True)
    try:
        yield where
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            subprocess.run(["umount", "-l", str(where)], check=True)


def _fault_at(monkeypatch, iteration: int, fault) -> None:
    """Cause `fault()` when the engine reaches `iteration` (after its checkpoint there)."""
    real = loop.Engine.record

    def record(self):
        if self.iteration == iteration:
            self.save_checkpoint()
            fault()
        real(self)

    monkeypatch.setattr(loop.Engine, "record", record)


@MOUNT
@pytest.mark.parametrize("fault", ["full", "read-only"])
def test_a_disk_that_fills_or_turns_read_only_mid_run_is_a_recorded_failure(
        cli, outputs, small_disk, monkeypatch, fault):
    run = small_disk / "run"

    def full() -> None:
        with open(small_disk / "filler", "wb") as fh, contextlib.suppress(OSError):
            while True:
                fh.write(b"\0" * 65536)

    def read_only() -> None:
        import logging

        for h in logging.getLogger().handlers:  # a file open for writing blocks the remount
            if isinstance(h, logging.FileHandler):
                h.setStream(open(os.devnull, "w")).close()  # noqa: SIM115
        subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)

    _fault_at(monkeypatch, 2, full if fault == "full" else read_only)
    res = cli("cnf", *CNF, f"hydra.run.dir={run}")
    line = one_error_line(res, 1)
    reason = "No space left on device" if fault == "full" else "Read-only file system"
    assert f"cannot write {run}/" in line and reason in line
    assert f"odecli cnf resume={run}" in line and "iteration 2" in line
    monkeypatch.undo()
    if fault == "full":
        (small_disk / "filler").unlink()
    else:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert no_temp_files(run) or fault == "read-only"
    res = cli("cnf", f"resume={run}")
    assert res.exit_code == 0, res.stderr
    assert json.loads((run / "metrics.json").read_text())["status"] == "ok"


def test_a_write_failure_is_recorded_in_metrics_where_it_can_be(cli, outputs, tmp_path,
                                                               monkeypatch):
    from odecli.engine import rundir

    run = tmp_path / "run"
    real = rundir.History.flush

    def flush(self):
        if len(self.rows) > 1:  # the evaluation at iteration 4
            raise rundir.WriteError.of(self.path, OSError(122, "Disk quota exceeded"))
        real(self)

    monkeypatch.setattr(rundir.History, "flush", flush)
    line = one_error_line(cli("cnf", *CNF, "train.checkpoint_every=2",
                              f"hydra.run.dir={run}"), 1)
    assert f"cannot write {run / 'history.csv'}: Disk quota exceeded" in line
    assert "checkpoint of iteration 2 is intact" in line
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == f"failed: cannot write {run / 'history.csv'}: Disk quota exceeded"
    assert metrics["resume"] == f"odecli cnf resume={run}"


@MOUNT
def test_a_full_disk_at_start_names_the_path_and_leaves_no_folder(cli, outputs, small_disk):
    with open(small_disk / "filler", "wb") as fh, contextlib.suppress(OSError):
        while True:
            fh.write(b"\0" * 65536)
    res = cli("cnf", *CNF, f"hydra.run.dir={small_disk / 'run'}")
    line = one_error_line(res, res.exit_code)
    assert res.exit_code in (1, 2) and "No space left on device" in line
    assert str(small_disk) in line and not (small_disk / "run").exists()


def test_report_shows_a_locked_run_as_running(cli, cnf_run):
    from odecli.launch.run_folders import load_run

    assert load_run(cnf_run).status == "ok"
    with claims.claim(cnf_run, "cnf", resume=True):
        run = load_run(cnf_run)
        assert run.status == "running" and f"pid {os.getpid()}" in run.reason
    assert load_run(cnf_run).status == "ok"


# -- 4. outputs checked before work ------------------------------------------------------------
@MOUNT
def test_sample_and_report_check_their_outputs_before_any_work(cli, cnf_run, small_disk):
    line = one_error_line(cli("sample", str(cnf_run), "--n", "1000000",
                              "--out", str(small_disk / "s.npy")))
    assert "need about 0.016 GB" in line and "lower --n" in line
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        line = one_error_line(cli("sample", str(cnf_run), "--n", "10",
                                  "--out", str(small_disk / "s.npy")))
        assert f"cannot write {small_disk / 's.npy'}: Read-only file system" in line
        line = one_error_line(cli("report", str(cnf_run), "--out", str(small_disk)))
        assert "cannot write the report folder" in line
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert not list(small_disk.iterdir())


def test_sample_streams_chunks_equal_to_one_draw(cli, cnf_run, tmp_path, monkeypatch):
    import odecli
    from odecli.flows import experiment

    model = odecli.load(cnf_run)
    whole = model.sample(300, seed=4)
    monkeypatch.setattr(experiment, "SAMPLE_CHUNK", 64)
    chunks = list(model.experiment.sample_chunks(300, 4, chunk=64))
    assert [len(c) for c in chunks] == [64, 64, 64, 64, 44]
    assert np.allclose(np.concatenate(chunks), whole, atol=1e-3)  # one solve per chunk
    res = cli("sample", str(cnf_run), "--n", "300", "--seed", "4", "--out",
              str(tmp_path / "s.csv"))
    assert res.exit_code == 0
    assert np.allclose(np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1), whole)


# -- 5. no internal errors -------------------------------------------------------------------
@pytest.mark.parametrize("damage,message", [
    (lambda p: p.write_bytes(os.urandom(4000)), "is corrupt or unreadable"),
    (lambda p: torch.save({k: v for k, v in torch.load(p, weights_only=True).items()
                           if k != "iteration"}, p), "incomplete or damaged (missing 'iteration')"),
])
def test_damaged_checkpoints_say_so(cli, cnf_run, damage, message):
    damage(cnf_run / "checkpoint.pt")
    for args in (["eval", str(cnf_run)], ["cnf", f"resume={cnf_run}", "train.niters=8"]):
        line = one_error_line(cli(*args))
        assert message in line and "weights_only" not in line
    assert not (cnf_run / "eval").exists()


def test_a_checkpoint_from_another_command_does_not_belong(cli, cnf_run, outputs, tmp_path):
    other = tmp_path / "cls"
    res = cli("classify", "data.limit=150", "model.width=8", "train.niters=2",
              "train.test_freq=2", "dial.enabled=false", "quiet=true", "plots.enabled=false",
              f"hydra.run.dir={other}")
    assert res.exit_code == 0, res.stderr
    shutil.copy(other / "checkpoint.pt", cnf_run / "checkpoint.pt")
    for args in (["eval", str(cnf_run)], ["cnf", f"resume={cnf_run}", "train.niters=8"]):
        line = one_error_line(cli(*args))
        assert "written by an `odecli classify` run" in line and "does not belong" in line


def test_eval_of_a_run_without_checkpoint_says_what_to_do(cli, cnf_run):
    (cnf_run / "checkpoint.pt").unlink()
    line = one_error_line(cli("eval", str(cnf_run)))
    assert "to evaluate" in line and "stopped before its first checkpoint" in line


@pytest.mark.parametrize("seed", ["-1", "4294967296", "99999999999999999999"])
def test_seeds_beyond_what_numpy_and_torch_take_are_refused_up_front(cli, outputs, seed):
    line = one_error_line(cli("cnf", *CNF, f"seed={seed}"))
    assert "seed must be an integer in [0, 4294967295]" in line
    assert not outputs.exists() or not list(outputs.rglob(".hydra"))


def test_symlink_loops_and_unquoted_unicode_are_one_line_with_a_hint(cli, outputs, tmp_path):
    loop_dir = tmp_path / "loop"
    loop_dir.symlink_to(loop_dir)
    line = one_error_line(cli("cnf", *CNF, f"hydra.run.dir={loop_dir}/run"))
    assert "symbolic link" in line or "Too many levels of symbolic links" in line
    line = one_error_line(cli("cnf", *CNF, f"hydra.run.dir={tmp_path}/ü/run"))
    assert "quote the value" in line and f"hydra.run.dir='{tmp_path}/ü/run'" in line
    res = cli("cnf", *CNF, f"hydra.run.dir='{tmp_path}/ü/run'")
    assert res.exit_code == 0, res.stderr


def test_usage_errors_are_one_line(cli_subprocess):
    for args, text in ((["sample", "RUN", "--n", "abc", "--out", "s.npy"], "'--n'"),
                       (["smaple"], "No such command 'smaple'")):
        res = cli_subprocess(*args)
        assert res.exit_code == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("error: ") and text in res.stderr


def test_report_sorts_numbers_as_numbers(cli, outputs, tmp_path):
    for seed in (0, 1, 2, 10, 11):
        assert cli("cnf", *CNF, "train.niters=1", f"seed={seed}",
                   f"hydra.run.dir={tmp_path / 'runs' / f's{seed}'}").exit_code == 0
    res = cli("report", str(tmp_path / "runs"), "--no-plots", "--sort", "seed")
    assert res.exit_code == 0, res.stderr
    lines = res.stdout.splitlines()
    col = lines[0].split().index("seed")
    seeds = [line.split()[col] for line in lines[1:6]]
    assert seeds == ["0", "1", "2", "10", "11"], res.stdout


def test_huge_overrides_are_refused_fast(cli, outputs):
    huge = "+x=[" + ",".join(str(i) for i in range(20000)) + "]"
    line = one_error_line(cli("cnf", huge))  # before Hydra's parser (half a minute) sees it
    assert "at most 4,096" in line and "108,894 characters" in line
