"""system=file: reading, checking, splitting and scoring a user's data file."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, read_metrics, run_dirs

from odecli.dynamics import datafile, tabular
from odecli.paths import yaml_node


def node(**keys) -> dict:
    """A checked-looking system=file node: configs/system/file.yaml with keys replaced."""
    return {**yaml_node("system/file.yaml", "system"), **keys}


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_take_the_first_column_as_time_and_the_rest_as_states(tmp_path: Path):
    f = write(tmp_path / "d.csv", "# a comment\n# another\nt,a,b\n0,1,2\n0.5,,3\n2,nan,4\n"
                                  "3.5,5,NA\n")
    table = datafile.read(node(path=str(f)))
    assert table.time == "t" and table.variables == ["a", "b"]
    (tr,) = table.trajectories
    np.testing.assert_array_equal(tr.t, [0, 0.5, 2, 3.5])
    assert np.isnan(tr.y[1, 0]) and np.isnan(tr.y[2, 0]) and np.isnan(tr.y[3, 1])
    s = table.summary()
    assert (s["trajectories"], s["points"], s["missing_fraction"]) == (1, 4, 3 / 8)
    assert table.summary_line() == ("data " + str(f) + ": 1 trajectory, 4 points, 2 variables "
                                    "(a, b), 37.5% missing, t from 0 to 3.5")


def test_keys_pick_columns_and_trajectories_keep_their_own_times(tmp_path: Path):
    f = write(tmp_path / "d.csv", "x,run,time,y\n1,A,0,5\n2,B,0.3,6\n3,A,1,7\n4,B,0.9,8\n"
                                  "5,A,4,9\n")
    table = datafile.read(node(path=str(f), trajectory="run", time="time", states=["y", "x"]))
    assert table.variables == ["y", "x"]
    a, b = table.trajectories
    assert (a.name, b.name) == ("A", "B")
    np.testing.assert_array_equal(a.t, [0, 1, 4])
    np.testing.assert_array_equal(b.y, [[6, 2], [8, 4]])


def test_npz_columns_and_a_2d_array(tmp_path: Path):
    f = tmp_path / "d.npz"
    np.savez(f, t=np.array([0.0, 1.0, 2.0]), y=np.array([[1.0, 2.0], [3.0, np.nan], [5, 6]]))
    table = datafile.read(node(path=str(f)))
    assert table.variables == ["y1", "y2"] and np.isnan(table.trajectories[0].y[1, 1])


def test_npz_never_unpickles(tmp_path: Path):
    f = tmp_path / "d.npz"
    np.savez(f, t=np.array([0.0, 1.0]), y=np.array([object(), object()], dtype=object))
    with pytest.raises(datafile.DataError, match="cannot be read as NPZ"):
        datafile.read(node(path=str(f)))


BAD = [
    ("t,x\n0,1\n1,abc\n2,3\n", "d.csv, row 3, column 'x': 'abc' is not a number"),
    ("t,x\n0,1\n2,3\n1,4\n", "d.csv, row 4, column 't': 1 comes before the time of row 3"),
    ("t,x\n0,1\n1,2\n1,3\n", "d.csv, row 4, column 't': 1 repeats the time of row 3"),
    ("t,x,y\n0,1,\n1,2,\n", "d.csv, column 'y': no values (every cell is empty)"),
    ("t,x\n0,1\n1,\n2,\n", "d.csv, rows 2-4: the data has fewer than 2 observed points"),
    ("t,x\n,1\n1,2\n2,3\n", "d.csv, row 2, column 't': the time is missing"),
    ("t,x\n0,1\n1,2,3\n", "d.csv, row 3: 3 cells for 2 columns"),
    ("t,x\n", "d.csv: no data rows after the header"),
    ("t,t\n0,1\n", "d.csv, row 1, column 't': named twice in the header"),
    ("# only a comment\n", "d.csv: no header row"),
]


@pytest.mark.parametrize("text,problem", BAD)
def test_each_problem_is_one_line_naming_file_row_and_column(tmp_path: Path, monkeypatch,
                                                             text: str, problem: str):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d.csv", text)
    with pytest.raises(datafile.DataError) as info:
        datafile.read(node(path="d.csv"))
    assert problem in info.value.problems[0]


def test_a_trajectory_with_one_observed_point_is_named(tmp_path: Path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d.csv", "id,t,x\na,0,1\na,1,2\nb,0,3\nb,1,\n")
    with pytest.raises(datafile.DataError) as info:
        datafile.read(node(path="d.csv", trajectory="id"))
    assert info.value.problems == [
        "d.csv, rows 4-5: trajectory 'b' has fewer than 2 observed points"]


@pytest.mark.parametrize("name,content,message", [
    ("missing.csv", None, "missing.csv: no such file"),
    ("d.txt", "t,x\n0,1\n", "d.txt: not a CSV or NPZ file"),
    ("d.csv", b"\x00\x01\x02binary", "d.csv: not a text CSV file"),
    ("d.npz", "not a zip", "d.npz: not an NPZ file"),
])
def test_files_that_are_not_data_are_refused(tmp_path: Path, monkeypatch, name, content,
                                             message):
    monkeypatch.chdir(tmp_path)
    if isinstance(content, bytes):
        (tmp_path / name).write_bytes(content)
    elif content is not None:
        write(tmp_path / name, content)
    with pytest.raises(datafile.DataError, match=message):
        datafile.read(node(path=name))


def test_the_cli_lists_every_problem_exits_2_and_writes_nothing(cli, outputs, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "d.csv", "t,x,y\n0,1,2\n1,oops,3\n1,4,5\n2,6,7\n")
    res = cli("train", "system=file", "system.path=d.csv", *FAST)
    assert res.exit_code == 2
    lines = res.stderr.strip().splitlines()
    # named by its absolute path: the run records it so, for resume= and eval from anywhere
    f = (tmp_path / "d.csv").resolve()
    assert lines[0] == f"error: {f}: 2 problems in the data, nothing was trained:"
    assert lines[1:] == [f"  {f}, row 3, column 'x': 'oops' is not a number",
                         f"  {f}, row 4, column 't': 1 repeats the time of row 3; times "
                         "must increase within a trajectory"]
    assert not outputs.exists()
    res = cli("train", "system=file", *FAST)
    assert res.exit_code == 2 and "system.path is not set" in res.stderr
    assert not outputs.exists()


def test_sizes_are_bounded(tmp_path: Path, monkeypatch):
    f = write(tmp_path / "d.csv", "t,x\n" + "".join(f"{i},{i}\n" for i in range(50)))
    monkeypatch.setattr(datafile, "MAX_ROWS", 10)
    with pytest.raises(datafile.DataError, match="more than 10 rows"):
        datafile.read(node(path=str(f)))
    monkeypatch.setattr(datafile, "MAX_BYTES", 100)
    with pytest.raises(datafile.DataError, match="larger than"):
        datafile.read(node(path=str(f)))
    g = tmp_path / "d.npz"
    np.savez_compressed(g, t=np.zeros(100_000), x=np.zeros(100_000))
    monkeypatch.setattr(datafile, "MAX_BYTES", 200_000)
    with pytest.raises(datafile.DataError, match="unpack to"):
        datafile.read(node(path=str(g)))


def _table(ts, ys, names=("x", "y")) -> datafile.Table:
    trs = [datafile.Trajectory(str(i), np.asarray(t, float), np.asarray(y, float))
           for i, (t, y) in enumerate(zip(ts, ys, strict=True))]
    return datafile.Table("mem", "t", list(names), trs, None)


def test_forecast_split_cuts_each_trajectory_and_fills_the_start():
    t = np.linspace(0, 10, 11)
    y = np.stack([t, 2 * t], 1)
    y[0, 1] = np.nan
    sp = tabular.split(_table([t], [y]), "forecast", 0.8)
    (train,), (test,) = sp.train, sp.test
    np.testing.assert_array_equal(train.t, t[:9])
    np.testing.assert_array_equal(test.t, t[9:])
    np.testing.assert_allclose(train.start_y, [0, 2])   # the missing cell: held constant
    assert test.start_t == 8 and list(test.start_y) == [8, 16] and not test.with_start


def test_trajectory_split_holds_out_the_last_ones():
    t = np.linspace(0, 1, 5)
    sp = tabular.split(_table([t] * 5, [np.ones((5, 2))] * 5), "trajectories", 0.6)
    assert [p.name for p in sp.train] == ["0", "1", "2"]
    assert [p.name for p in sp.test] == ["3", "4"]
    with pytest.raises(datafile.DataError, match="needs at least 2 trajectories"):
        tabular.split(_table([t], [np.ones((5, 2))]), "trajectories", 0.8)


def test_baselines_score_the_held_out_cells():
    """A linear system's data: the fitted linear ODE forecasts it almost exactly; last value
    and mean are scored on the same cells."""
    t = np.linspace(0, 6, 241)
    y = np.stack([np.cos(t) * np.exp(-0.1 * t), -np.sin(t) * np.exp(-0.1 * t)], 1)
    sp = tabular.split(_table([t], [y]), "forecast", 0.75)
    mean, std = tabular.scaling(sp.train)
    preds = tabular.baselines(sp, mean, std)
    scale = tabular.data_scale(sp.train, mean)
    err = {k: tabular.errors(v, sp.test, scale)["rel"] for k, v in preds.items()}
    assert err["linear"] < 0.01 < err["last"] and err["mean"] > 0.3
    last = sp.test[0]
    assert np.allclose(preds["last"][0], last.start_y)


def test_windows_mask_missing_cells_and_short_parts():
    t = np.array([0.0, 0.4, 1.0])
    y = np.array([[1.0, np.nan], [2.0, 3.0], [4.0, 5.0]])
    sp = tabular.split(_table([t], [y]), "none", 0.8)
    w = tabular.windows(sp.train, np.zeros(2), np.ones(2), 5, torch.device("cpu"),
                        torch.float64)
    b = tabular.sample(w, 4, 5, torch.Generator().manual_seed(0))
    assert b.target.shape == (5, 4, 2) and b.mask.shape == (5, 4, 2)
    assert not bool(b.mask[3:].any())              # beyond the part's three rows
    assert not bool(b.mask[0, :, 1].any())         # the missing first cell
    pred = tabular.gather(torch.zeros(len(b.t), 4, 2, dtype=torch.float64), b)
    assert float(tabular.masked_loss(pred, b, "l1")) == pytest.approx((1 + 2 + 3 + 4 + 5) / 5)


def test_scaling_is_fitted_on_the_training_part_and_kept_in_the_checkpoint(
        cli, outputs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = np.linspace(0, 10, 41)
    x, y = 100 + 20 * np.cos(t), 0.01 * np.sin(t)
    rows = "".join(f"{a},{b},{c}\n" for a, b, c in zip(t, x, y, strict=True))
    write(tmp_path / "d.csv", "t,x,y\n" + rows)
    res = cli("train", "system=file", "system.path=d.csv", "system.train_fraction=0.5", *FAST)
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    n = int(np.searchsorted(t, 5.0, side="right"))
    assert m["scaling"]["x"]["mean"] == pytest.approx(x[:n].mean())
    assert m["scaling"]["y"]["std"] == pytest.approx(y[:n].std())
    state = torch.load(run / "checkpoint.pt", weights_only=False)
    assert float(state["modules"]["scaling"]["mean"][0]) == pytest.approx(x[:n].mean())
    assert m["data"]["points"] == 41 and m["split"]["kind"] == "forecast"
    for key in ("baseline_last_error_rel", "baseline_mean_error_rel",
                "baseline_linear_error_rel", "heldout_error_rel"):
        assert math.isfinite(m[key]), key
    assert "data file" not in json.dumps(m)  # no credit unless given
    assert "data_license" not in m


def test_the_shipped_dataset_is_credited_in_metrics_and_figures(cli, outputs):
    res = cli("train", "system=hare_lynx", *FAST)
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs)
    m = read_metrics(run)
    assert "Hudson's Bay Company" in m["data_license"]
    assert m["data"]["variables"] == ["hare", "lynx"] and m["data"]["t_min"] == 1900
    assert m["split"]["kind"] == "forecast"
    for name in ("time.png", "phase.png", "vector_field.png", "loss.png"):
        assert (run / name).stat().st_size > 1000
    log = (run / "train.log").read_text()
    assert "data hare_lynx.csv: 1 trajectory, 21 points, 2 variables (hare, lynx)" in log
