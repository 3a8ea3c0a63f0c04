"""hydra/launcher=ensemble: members of a batched group equal their solo runs, fail alone,
write ordinary run folders, and stop and resume as a group."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from conftest import read_metrics

import odecli
from odecli.engine import ensemble as ensemble_engine
from odecli.launch import derived, ensemble
from odecli.numerics import rk
from odecli.numerics.ensemble_rk import solve_members

SMALL = ["system=lotka", "system.data_size=60", "device.dtype=float64", "train.niters=6",
         "train.test_freq=3", "quiet=true", "plots.enabled=false"]
ENSEMBLE = ["hydra/launcher=ensemble"]
COMPARED = ("final_loss", "error_rel", "extrap_error_rel", "eval_loss",
            "nfe_forward_per_iter", "nfe_backward_per_iter", "nfe_eval")


def members(sweep: Path) -> list[Path]:
    return sorted((p for p in sweep.iterdir() if (p / ".hydra").is_dir()),
                  key=lambda p: int(p.name))


def history(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv") as f:
        return list(csv.DictReader(f))


def assert_same_run(member: Path, solo: Path, rel: float = 1e-4) -> None:
    a, b = read_metrics(member), read_metrics(solo)
    assert a["status"] == b["status"] == "ok"
    for key in COMPARED:
        assert a[key] == pytest.approx(b[key], rel=rel, abs=1e-12), key
    ha, hb = history(member), history(solo)
    assert [r["iteration"] for r in ha] == [r["iteration"] for r in hb]
    for ra, rb in zip(ha, hb, strict=True):
        for key in ("train_loss", "eval_loss", "error_rel", "nfe_forward", "nfe_backward"):
            if rb[key]:
                assert float(ra[key]) == pytest.approx(float(rb[key]), rel=rel), key


class _Nets:
    """Members' fields; `select`: the subset the solver steps once some have finished."""

    def __init__(self, nets, rows=None):
        self.nets, self.rows, self.selected = nets, rows, []

    def __call__(self, y):
        rows = range(len(self.nets)) if self.rows is None else self.rows.tolist()
        return torch.stack([self.nets[m](y[j]) for j, m in enumerate(rows)])

    def select(self, rows):
        self.selected.append(rows.tolist())
        return _Nets(self.nets, rows)


@pytest.mark.parametrize("compact", [False, True])
def test_the_batched_solver_equals_the_fast_loop_per_member(compact):
    torch.manual_seed(0)
    nets = [torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(),
                                torch.nn.Linear(16, 2)).double() for _ in range(3)]
    y0 = torch.randn(3, 5, 2, dtype=torch.float64)
    t = torch.linspace(0, 1.5, 7, dtype=torch.float64)
    rtol, atol = [1e-5, 1e-7, 1e-3], [1e-6, 1e-8, 1e-4]
    field = _Nets(nets) if compact else _Nets(nets).__call__
    res = solve_members(field, y0, t.tolist(), "dopri5", rtol, atol)
    if compact:  # once some have finished, the last steps are the slowest member's alone
        assert field.selected and field.selected[-1] == [int(res.trials.argmax())]
    assert len(set(res.trials.tolist())) > 1  # own step sizes: different step counts
    for m, net in enumerate(nets):
        counted = []
        solo = rk.odeint_fast(lambda _t, y, net=net: net(y), y0[m], t, method="dopri5",
                              rtol=rtol[m], atol=atol[m], gradient="none",
                              count=counted.append)
        torch.testing.assert_close(res.out[:, m], solo, rtol=1e-12, atol=1e-12)
        assert res.nfe(m, 6) == sum(counted)


def test_members_equal_their_solo_runs(cli, outputs):
    sweep = outputs / "sweep"
    res = cli("train", "-m", "seed=0,1", "solver.rtol=1e-5,1e-4", *SMALL, *ENSEMBLE,
              f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 0, res.stderr
    assert "4 job(s) in 1 group(s)" in res.stderr
    assert "4 members (jobs 0,1,2,3), one batched model; they differ in seed, solver.rtol" \
        in res.stderr
    runs = members(sweep)
    assert len(runs) == 4
    for run in runs:  # an ordinary run folder
        assert (run / ".hydra" / "overrides.yaml").exists()
        assert (run / "checkpoint.pt").exists() and (run / "history.csv").exists()
    for num, overrides in ((1, ["seed=0", "solver.rtol=1e-4"]),
                           (2, ["seed=1", "solver.rtol=1e-5"])):
        solo = outputs / f"solo{num}"
        res = cli("train", *overrides, *SMALL, f"hydra.run.dir={solo}")
        assert res.exit_code == 0, res.stderr
        assert_same_run(runs[num], solo)
    # report and eval read members as any run
    res = cli("report", str(sweep), "--no-plots")
    assert res.exit_code == 0, res.stderr
    assert len((sweep / "report.csv").read_text().splitlines()) == 5
    res = cli("eval", str(runs[3]))
    assert res.exit_code == 0, res.stderr


def test_a_failing_member_leaves_the_batch(cli, outputs):
    sweep = outputs / "sweep"
    res = cli("train", "-m", "seed=0,1", "+solver.options.max_num_steps=10000,1", *SMALL,
              *ENSEMBLE, f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 1
    assert "2 job(s) failed" in res.stderr and "max_num_steps exceeded" in res.stderr
    statuses = [read_metrics(r)["status"] for r in members(sweep)]
    assert statuses[0] == statuses[2] == "ok"
    assert statuses[1] == statuses[3] == "failed: solver failed: max_num_steps exceeded"
    solo = outputs / "solo"
    assert cli("train", "seed=1", *SMALL, f"hydra.run.dir={solo}").exit_code == 0
    assert_same_run(members(sweep)[2], solo)


def test_members_checkpoint_on_the_time_cadence(cli, outputs, monkeypatch):
    # train.checkpoint_seconds, as a solo run keeps it: a killed ensemble loses at most that
    saved: list[list[int]] = []
    real = ensemble_engine.Members._checkpoint

    def counting(self, idx):
        saved.append([self.engines[i].iteration for i in idx])
        return real(self, idx)

    monkeypatch.setattr(ensemble_engine.Members, "_checkpoint", counting)
    sweep = outputs / "sweep"
    res = cli("train", "-m", "seed=0,1", *SMALL, "train.checkpoint_every=0",
              "train.checkpoint_seconds=1e-9", *ENSEMBLE, f"hydra.sweep.dir={sweep}")
    assert res.exit_code == 0, res.stderr
    periodic = [its for its in saved if its]
    assert periodic[:5] == [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]]  # none at 6: the end's
    saved.clear()
    res = cli("train", "-m", "seed=0,1", *SMALL, "train.checkpoint_every=0",
              *ENSEMBLE, f"hydra.sweep.dir={outputs / 'sixty'}")  # 60 s: only at the end
    assert res.exit_code == 0 and not [its for its in saved if its and its != [6, 6]]


def test_the_grouping_and_who_runs_alone():
    def job(num, *overrides):
        cfg = odecli.compose("train", ["system=lotka", *overrides])
        from omegaconf import OmegaConf

        return SimpleNamespace(num=num, plain=OmegaConf.to_container(cfg, resolve=True))

    from odecli.dynamics.dispatch import TrainExperiment

    jobs = [job(0, "seed=0"), job(1, "seed=1", "train.lr=0.02"), job(2, "model.width=20"),
            job(3, "model.width=20", "seed=4"), job(4, "gradient=adjoint"),
            job(5, "data.observe_fraction=0.5"), job(6, "seed=7")]
    groups = ensemble.plan(jobs, TrainExperiment, max_members=2)
    assert [[j.num for j in g] for g, _ in groups] == [[0, 1], [2, 3], [4], [5], [6]]
    text = ensemble.describe(groups)
    assert "7 job(s) in 5 group(s)" in text
    assert "group 1: 2 members (jobs 0,1), one batched model; they differ in seed, train.lr" \
        in text
    assert "group 3: 1 member (job 4), runs alone: solver dopri5 with gradient=adjoint" in text
    assert "group 4: 1 member (job 5), runs alone: data.observe_fraction < 1" in text
    assert "group 5: 1 member (job 6), runs alone" in text  # max_members split it off


@pytest.mark.slow
def test_sigint_checkpoints_every_member_and_the_sweep_resumes(outputs, tmp_path):
    sweep = outputs / "sweep"
    args = [sys.executable, "-m", "odecli", "train", "-m", "seed=0,1", *SMALL[:3],
            "train.niters=200", "train.test_freq=20", "train.checkpoint_every=10",
            "quiet=true", "plots.enabled=false", *ENSEMBLE, f"hydra.sweep.dir={sweep}"]
    env = {**os.environ, "ODECLI_OUTPUTS": str(outputs)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 240
    while not (sweep / "1" / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 130, err
    assert "2 member(s) of the ensemble checkpointed" in err
    assert f"odecli train resume={sweep}" in err
    stopped = [read_metrics(r) for r in members(sweep)]
    assert all(m["status"] == "interrupted" and m["iterations"] < 200 for m in stopped)
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    assert "2 job(s) resume from their checkpoint" in done.stderr
    solo = tmp_path / "solo"
    subprocess.run([*args[:4], "seed=1", *args[6:-2], f"hydra.run.dir={solo}"], env=env,
                   check=True, capture_output=True, timeout=600)
    assert_same_run(members(sweep)[1], solo)


def test_a_member_config_derived_from_another_equals_its_composition():
    from odecli import registry
    from odecli.launch.bridge import compose

    cmd = registry.get("train")
    base_args = ["seed=0", "system=lotka", "train.lr=0.01", "+solver.options.max_num_steps=9"]
    base = compose(cmd, base_args, with_hydra=True)
    args = ["seed=5", "system=lotka", "train.lr=2e-3", "+solver.options.max_num_steps=7"]
    made = derived.derive(base, base_args, args)
    assert made is not None and made.seed == 5 and made.train.lr == 0.002
    assert made.solver.options.max_num_steps == 7 and base.seed == 0
    assert list(made.hydra.overrides.task) == args
    assert derived.same(made, compose(cmd, args, with_hydra=True))
    assert derived.derive(base, base_args, ["seed=0", "system=spiral", *base_args[2:]]) \
        is None  # a group choice: composed again
    assert derived.derive(base, base_args, ["seed=0", "system=lotka", "train=x",
                                            base_args[3]]) is None
    assert derived.derive(base, base_args, [*base_args[:3], "solver.options.max_num_steps=7"]) \
        is None  # added in one, changed in the other


def test_a_sweep_composes_once_per_kind_of_job():
    from odecli import registry
    from odecli.launch.bridge import compose

    cmd = registry.get("train")
    composer = derived.Composer(lambda o: compose(cmd, o, with_hydra=True))
    jobs = [[f"seed={s}", f"system={system}", "train.lr=0.01"]
            for system in ("lotka", "spiral") for s in range(4)]
    configs = [composer(job) for job in jobs]
    # each system: its first job, and the second once to check the derivation against Hydra
    assert composer.compositions == 4
    for job, cfg in zip(jobs, configs, strict=True):
        assert derived.same(cfg, compose(cmd, job, with_hydra=True))
    configs[1].train.lr = 0.5  # a fresh object per job: the others stay as they were
    assert composer(jobs[2]).train.lr == 0.01


def test_a_derivation_hydra_would_compose_differently_composes_every_job():
    calls = []

    def compose(overrides):
        calls.append(overrides)
        from omegaconf import OmegaConf

        seed = int(overrides[0].split("=")[1])
        return OmegaConf.create({"seed": seed, "twice": 2 * seed,  # derived: a stale twice
                                 "hydra": {"overrides": {"task": overrides},
                                           "job": {"override_dirname": "",
                                                   "config": {"override_dirname": {
                                                       "kv_sep": "=", "item_sep": ",",
                                                       "exclude_keys": []}}}}})

    composer = derived.Composer(compose)
    got = [composer([f"seed={s}"]) for s in range(4)]
    assert len(calls) == 4 and [c.twice for c in got] == [0, 2, 4, 6]


def test_members_files_are_written_together_and_each_failure_is_its_own():
    from odecli.engine.ensemble import Writes

    done = []
    writes = Writes()

    def fail():
        raise OSError("disk full")

    errors = writes.run([lambda: done.append(1), fail, lambda: done.append(3)])
    writes.close()
    assert sorted(done) == [1, 3]
    assert errors[0] is None and isinstance(errors[1], OSError) and errors[2] is None


@pytest.mark.parametrize("kind,decay", [(torch.optim.Adam, 0.0), (torch.optim.Adam, 0.1),
                                        (torch.optim.AdamW, 0.01), (torch.optim.RMSprop, 0.0),
                                        (torch.optim.RMSprop, 0.1)])
def test_the_members_optimizer_update_is_torchs_bit_for_bit(kind, decay):
    import copy

    from odecli.engine.member_optim import optimizer_steps

    torch.manual_seed(0)
    nets = [torch.nn.Linear(3, 4).double() for _ in range(3)]
    twins = copy.deepcopy(nets)
    batched = [kind(n.parameters(), lr=0.01 * (1 + (i == 2)), weight_decay=decay)
               for i, n in enumerate(nets)]  # the third in a group of its own
    alone = [kind(n.parameters(), lr=0.01 * (1 + (i == 2)), weight_decay=decay)
             for i, n in enumerate(twins)]
    for opt in batched:  # the batched update, not each optimiser's own step()
        opt.step = lambda *a, **k: pytest.fail("stepped one by one")
    for _ in range(4):
        x = torch.randn(5, 3, dtype=torch.float64)
        for n in (*nets, *twins):
            n.zero_grad()
            n(x).pow(2).sum().backward()
        optimizer_steps(batched)
        for opt in alone:
            opt.step()
    for n, t in zip(nets, twins, strict=True):
        for a, b in zip(n.parameters(), t.parameters(), strict=True):
            assert torch.equal(a, b)
    for a, b in zip(batched, alone, strict=True):
        sa, sb = a.state_dict()["state"], b.state_dict()["state"]
        assert all(torch.equal(sa[k][x], sb[k][x]) for k in sb for x in sb[k])


def test_optimizers_the_batched_update_does_not_cover_step_alone():
    from odecli.engine.member_optim import optimizer_steps

    net = torch.nn.Linear(2, 2)
    opt = torch.optim.RMSprop(net.parameters(), lr=0.01, momentum=0.9)
    calls = []
    opt.step = lambda *a, **k: calls.append(1)
    optimizer_steps([opt])
    assert calls == [1]


@pytest.mark.parametrize("sampling", ["uniform", "edges"])
def test_members_windows_are_their_solo_draws(tmp_path, sampling):
    from odecli.dynamics import data
    from odecli.dynamics.dispatch import TrainExperiment

    def build(seed):
        cfg = odecli.compose("train", [*SMALL, f"seed={seed}", f"train.sampling={sampling}",
                                       "data.noise_std=0.1"])
        (tmp_path / str(seed)).mkdir(exist_ok=True)
        return TrainExperiment(cfg, tmp_path / str(seed))

    batched, alone = [build(0), build(1)], [build(0), build(1)]
    members = TrainExperiment.ensemble(batched)
    for _ in range(3):
        y0, t, target = members._windows([0, 1])
        for m, e in enumerate(alone):
            o = e.opts
            b = data.sample(e.obs, o["batch_size"], o["batch_time"], e.gen, e.window_weights)
            assert torch.equal(y0[m], b.y0) and torch.equal(target[:, m], b.target)
            assert torch.equal(t, b.t)
