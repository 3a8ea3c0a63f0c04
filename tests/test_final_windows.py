"""`train.final_iters`: the last iterations of a run train on longer windows (issue 25's UDE
on Lotka-Volterra: short windows leave the phase of the oscillation free)."""

from __future__ import annotations

import pytest
import torch
from conftest import FAST, run_dirs
from test_training import make, trainer

from odecli.dynamics import data as data_mod
from odecli.dynamics.ensemble import DynamicsMembers


def test_the_last_iterations_draw_the_final_windows(tmp_path, monkeypatch):
    drawn: list[tuple[int, int]] = []
    real = data_mod.sample

    def spy(obs, batch_size, batch_time, generator, weights=None):
        drawn.append((batch_size, batch_time))
        return real(obs, batch_size, batch_time, generator, weights)

    monkeypatch.setattr(data_mod, "sample", spy)
    cfg = make("experiment=lotka_ude", "train.niters=5", "train.test_freq=5",
               "train.batch_size=4", "train.batch_time=10", "train.final_iters=2",
               "train.final_batch_time=60", "train.final_batch_size=3", "train.lr=0.01")
    m = trainer(cfg, tmp_path).run()
    assert m["status"] == "ok" and m["iterations"] == 5
    assert drawn == [(4, 10)] * 3 + [(3, 60)] * 2


def test_a_full_final_batch_takes_every_window_once(tmp_path):
    exp = trainer(make("system=lotka", "train.niters=2", "train.final_iters=1",
                       "train.final_batch_time=150"), tmp_path).exp
    assert exp.windows_at(2) == (None, 150, None)
    batch = data_mod.sample(exp.obs, None, 150, exp.gen)
    assert batch.y0.shape == (51, 2) and torch.equal(batch.y0, exp.obs.y[:51])
    assert torch.equal(batch.target[-1], exp.obs.y[149:])  # (T, B, dim)
    before = exp.gen.get_state()
    data_mod.sample(exp.obs, None, 150, exp.gen)
    assert torch.equal(exp.gen.get_state(), before)  # nothing drawn


def test_final_windows_are_off_by_default_and_sampled_by_the_runs_rule(tmp_path):
    exp = trainer(make("system=lotka", "train.niters=3"), tmp_path).exp
    assert exp.opts["final_iters"] == 0 and exp.final_weights is None
    assert exp.windows_at(3) == (20, 10, None)
    (tmp_path / "e").mkdir()
    edges = trainer(make("system=lotka", "train.niters=3", "train.sampling=edges",
                         "train.final_iters=1", "train.final_batch_time=50",
                         "train.final_batch_size=100"),
                    tmp_path / "e").exp
    size, window, weights = edges.windows_at(3)
    assert (size, window) == (100, 50) and len(weights) == len(edges.obs.t) - 50 + 1
    assert float(weights[0]) == 50.0 and edges.windows_at(2)[1] == 10
    # fewer iterations than final_iters (a short run of experiment=lotka_ude): all final
    assert [edges.windows_at(i)[1] for i in (1, 2, 3)] == [10, 10, 50]
    (tmp_path / "s").mkdir()
    short = trainer(make("system=lotka", "train.niters=3", "train.final_iters=5"),
                    tmp_path / "s").exp
    assert [short.windows_at(i)[1] for i in (1, 2, 3)] == [100] * 3
    # a batched ensemble trains every member on the same windows: such a job runs alone
    assert "final_iters" in DynamicsMembers.unfit(make("system=lotka",
                                                       "train.final_iters=1"))


@pytest.mark.parametrize("args,message", [
    (["train.final_iters=1", "train.final_batch_time=500"],
     "train.final_batch_time (500) is larger than the number of observed points (200)"),
    (["train.final_iters=1", "train.final_batch_size=0"],
     "train.final_batch_size must be"),
])
def test_bad_final_windows_are_one_line(cli, outputs, args, message):
    res = cli("train", "system=lotka", *FAST, *args)
    assert res.exit_code == 2 and message in res.stderr, res.stderr
    assert len([ln for ln in res.stderr.splitlines() if ln.strip()]) == 1
    assert not run_dirs(outputs)


def test_a_data_file_refuses_final_windows(cli, outputs):
    res = cli("train", "system=hare_lynx", *FAST, "train.final_iters=1")
    assert res.exit_code == 2 and "train.final_iters applies to simulated" in res.stderr
