"""`odecli cde`: the .ts reader, the paper's protocol, the CDE against exact answers, the
baselines, a run end to end with eval and report, and every bad input as one line."""

from __future__ import annotations

import csv
import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, read_metrics, run_dirs
from omegaconf import OmegaConf

from odecli.cde import data as data_mod
from odecli.cde import models, schema, tsfile
from odecli.cde.experiment import CDEExperiment, per_class
from odecli.cli.configs_index import options
from odecli.errors import OdecliError
from odecli.launch.bridge import compose
from odecli.numerics.solve import SolverSpec
from odecli.paths import config_dir
from odecli.registry import COMMANDS

ROOT = config_dir()
TINY = Path(__file__).parent / "data" / "uea"
QUICK = ["cde_data=spirals", "data.n=40", "data.length=12", "train.niters=4",
         "train.test_freq=2", "train.batch_size=8", "quiet=true"]
NODE = {"drop": 0.0, "time_channel": True, "mask_channel": False, "split": "pooled",
        "val_fraction": 0.15, "test_fraction": 0.15}


def composed(overrides: list[str] | None = None):
    return compose(COMMANDS["cde"], overrides or [])


# ------------------------------------------------------------------------------ config

@pytest.mark.parametrize("overrides", [[]] + [
    [f"{group}={name}"] for group in ("cde_data", "cde_model")
    for name, _ in options(ROOT, group)])
def test_every_option_composes(overrides):
    cfg = composed(overrides)
    out = schema.check_cde(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    assert set(out) == set(plain)


def test_defaults_are_the_papers_protocol():
    out = schema.check_cde(composed())
    assert (out["data"]["name"], out["model"]["name"]) == ("japanese_vowels", "cde")
    assert (out["data"]["val_fraction"], out["data"]["test_fraction"]) == (0.15, 0.15)
    assert out["gradient"]["name"] == "checkpoint" and out["model"]["interpolation"] == "hermite"
    assert {n for n, _ in options(ROOT, "cde_model")} == set(schema.MODELS) == set(models.MODELS)
    assert {n for n, _ in options(ROOT, "cde_data")} == set(schema.DATASETS)


# ------------------------------------------------------------------------------ .ts files

def test_the_tiny_fixture_and_the_shipped_vowels_parse():
    f = tsfile.read_ts(TINY / "TinyRamps_TRAIN.ts")
    assert (f.name, f.dimensions, f.classes, len(f.values)) == ("TinyRamps", 2, ["up", "down"],
                                                                24)
    assert np.isnan(f.values[3][2, 1]) and not np.isnan(f.values[3][2, 0])
    assert all(6 <= len(v) <= 10 for v in f.values)
    s = data_mod.load({"name": "japanese_vowels", **NODE}, seed=0)
    assert s.name == "JapaneseVowels" and s.x.shape == (640, 29, 12) and s.n_classes == 9
    assert (len(s.train), len(s.val), len(s.test)) == (448, 96, 96)
    lengths = (~np.isnan(s.x).all(axis=-1)).sum(axis=1)
    assert (lengths.min(), lengths.max()) == (7, 29) and np.array_equal(lengths, s.kept)
    # the archive's split sizes (270 + 370), pooled; standardised with the training rows
    assert np.bincount(s.y).tolist() == [61, 65, 118, 74, 59, 54, 70, 80, 59]
    flat = s.x[s.train].reshape(-1, 12)
    assert np.allclose(np.nanmean(flat, axis=0), 0, atol=1e-9)
    assert np.allclose(np.nanstd(flat, axis=0), 1)


HEAD = "@problemName X\n@dimensions 2\n@classLabel true a b\n@data\n"


@pytest.mark.parametrize("body,message", [
    ("1,2:3,4:a\n1,2:3,x:b\n", "bad.ts line 7, dimension 2: 'x' is not a number"),
    ("1,2:3,4:a\n1,2:b\n", "bad.ts line 7: 1 dimensions, expected 2"),
    ("1,2:3,4:c\n", "bad.ts line 6: class label 'c' is not one of the @classLabel values"),
    ("1,2,3:3,4:a\n", "bad.ts line 6: the dimensions have different lengths (3, 2)"),
    ("1,2:3,inf:a\n", "bad.ts line 6, dimension 2: infinite value 'inf'"),
    ("?,?:?,?:a\n", "bad.ts line 6: every value is missing"),
    ("(0,1),(1,2):(0,1),(1,2):a\n", "holds '(t,v)' pairs"),
    ("", "bad.ts: no cases after @data"),
])
def test_every_malformed_line_is_one_error_with_its_number(tmp_path, body, message):
    (tmp_path / "bad.ts").write_text("# comment\n" + HEAD + body)
    with pytest.raises(OdecliError) as info:
        tsfile.read_ts(tmp_path / "bad.ts")
    assert message in str(info.value) and "\n" not in str(info.value)


def test_headers_and_bounds(tmp_path, monkeypatch):
    cases = {"@timeStamps true\n@classLabel true a b\n@data\n": "@timeStamps true files",
             "@classLabel false\n@data\n": "needs '@classLabel true LABEL LABEL",
             "1,2:a\n": "bad.ts line 1: expected an @header",
             "@dimensions two\n@classLabel true a b\n@data\n": "'two' is not an integer",
             "@classLabel true a b\n": "no @data line"}
    for text, message in cases.items():
        (tmp_path / "bad.ts").write_text(text)
        with pytest.raises(OdecliError, match=message):
            tsfile.read_ts(tmp_path / "bad.ts")
    monkeypatch.setattr(tsfile, "MAX_LENGTH", 3)
    (tmp_path / "bad.ts").write_text(HEAD + "1,2,3,4:1,2,3,4:a\n")
    with pytest.raises(OdecliError, match="line 5: dimension 1 has more than 3 points"):
        tsfile.read_ts(tmp_path / "bad.ts")
    monkeypatch.setattr(tsfile, "MAX_BYTES", 10)
    with pytest.raises(OdecliError, match="larger than"):
        tsfile.read_ts(tmp_path / "bad.ts")
    with gzip.open(tmp_path / "ok.ts.gz", "wt") as f:
        f.write("@classLabel true a b\n@data\n1:a\n")  # gzipped, 9 bytes: read back
    monkeypatch.setattr(tsfile, "MAX_BYTES", 100)
    assert tsfile.read_ts(tmp_path / "ok.ts.gz").values[0].shape == (1, 1)


# ------------------------------------------------------------------------------ protocol

def test_the_archive_split_keeps_the_test_file_and_draws_validation_from_train():
    files = [tsfile.read_ts(data_mod.DATASETS_DIR / f) for f in data_mod.VOWELS_FILES]
    node = {"name": "japanese_vowels", **NODE, "split": "archive"}
    a, b, c = (data_mod.load(node, s) for s in (0, 0, 1))
    # 270 TRAIN series, 15% of them (40) for validation; the 370 TEST series as they are
    assert (len(a.train), len(a.val), len(a.test)) == (230, 40, 370)
    assert a.test.tolist() == list(range(270, 640)) and np.array_equal(a.test, c.test)
    assert a.y[a.test].tolist() == [a.classes.index(lab) for lab in files[1].labels]
    assert np.array_equal(a.val, b.val) and not np.array_equal(a.val, c.val)
    assert sorted([*a.train, *a.val]) == list(range(270))
    # standardised with the 230 training series only
    assert np.allclose(np.nanmean(a.x[a.train].reshape(-1, 12), axis=0), 0, atol=1e-9)
    # test_fraction is unused there: no rule on it; too few TRAIN series is one line
    assert schema.DATA.check({**node, "test_fraction": 0.95}, "data")["test_fraction"] == 0.95
    with pytest.raises(OdecliError, match="data.val_fraction . data.test_fraction must leave"):
        schema.DATA.check({**node, "split": "pooled", "test_fraction": 0.95}, "data")
    with pytest.raises(OdecliError, match="impossible split: 270 TRAIN series leave none"):
        data_mod.load({**node, "val_fraction": 0.999}, 0)
    for bad in ({"name": "uea", "dir": str(TINY), **NODE, "split": "archive"},
                {"name": "spirals", "n": 20, "length": 6, "noise": 0.0, **NODE,
                 "split": "archive"}):
        with pytest.raises(OdecliError, match=r"data.split=archive needs the archive's "
                                              r"NAME_TRAIN and NAME_TEST .ts files; \w+ has "
                                              r"\d+ TRAIN and 0 TEST series"):
            data_mod.load(bad, 0)


def test_drop_removes_that_fraction_of_each_series_seeded():
    node = {"name": "uea", "dir": str(TINY), **NODE, "drop": 0.5}
    a, b, c = (data_mod.load(node, s) for s in (0, 0, 1))
    full = [len(v) for v in tsfile.read_ts(TINY / "TinyRamps_TRAIN.ts").values]
    assert a.kept.tolist() == [n - int(0.5 * n) for n in full]
    assert np.array_equal(np.isnan(a.x), np.isnan(b.x)) and np.array_equal(a.test, b.test)
    assert not np.array_equal(np.isnan(a.x), np.isnan(c.x))
    with pytest.raises(OdecliError, match=r"keeps 1 after data.drop=0.9; a path needs at "
                                          r"least 2"):
        data_mod.load({**node, "drop": 0.9}, 0)


def test_path_channels_time_values_and_count():
    x = np.array([[[1.0], [np.nan], [3.0], [np.nan]]])
    t = np.arange(4.0)
    p = data_mod.path_channels(x, t, 3.0, time_channel=True, mask_channel=True)
    assert p.shape == (1, 4, 3)
    assert np.allclose(p[0, :, 0], [0, np.nan, 2 / 3, np.nan], equal_nan=True)
    assert np.allclose(p[0, :, 2], [0.25, 0.25, 0.5, 0.5])


# ------------------------------------------------------------------------------ models

def _cde(interpolation: str, channels: int, hidden: int = 3) -> models.NeuralCDE:
    torch.manual_seed(0)
    m = models.NeuralCDE({"hidden": hidden, "width": 8, "layers": 1,
                          "interpolation": interpolation}, channels, 2)
    return m.double()


@pytest.mark.parametrize("interpolation", ["linear", "hermite"])
def test_a_constant_field_integrates_the_path_exactly(interpolation):
    """f(z) = A constant: z(T) = z(0) + A (X(T) - X(0)) whatever the interpolation and the
    gaps; a series that ended early stops at its last observation."""
    model = _cde(interpolation, channels=2)
    field = model.counter.func
    last = field.net[-2]
    with torch.no_grad():
        for p in field.net.parameters():
            p.zero_()
        last.bias.copy_(torch.linspace(-0.9, 0.9, 6, dtype=torch.float64))
    a = torch.tanh(last.bias).view(3, 2)
    t = torch.arange(8.0, dtype=torch.float64)
    x = torch.randn(3, 8, 2, dtype=torch.float64)
    x[1, 2:5] = float("nan")  # a gap
    x[2, 5:] = float("nan")   # ended early: its path ends at t=4
    feats = model.features(x, x, t)
    if interpolation == "hermite":  # C1 cubic pieces: rk4 on the knots is exact
        specs = [SolverSpec("rk4", "checkpoint", step_size=1.0),
                 SolverSpec("dopri5", "checkpoint", rtol=1e-9, atol=1e-9)]
    else:  # the slope jumps at each knot: a fixed step must say which side it evaluates
        specs = [SolverSpec("rk4", g, step_size=1.0, options={"perturb": True})
                 for g in ("direct", "adjoint")]
    for spec in specs:
        model.readout = torch.nn.Identity()
        z_t = model(feats, t, spec)
        z0 = model.initial(x[:, 0])
        end = torch.stack([x[0, -1], x[1, -1], x[2, 4]])
        assert torch.allclose(z_t, z0 + (end - x[:, 0]) @ a.T, atol=1e-7)


def test_gap_filling_is_torchcdes_vectorised():
    """fill_gaps gives torchcde's own handling of NaN (linear in time between observations,
    constant before the first and after the last, zero for a channel never observed), so the
    coefficients are the same, on an uneven grid too."""
    tc = models.torchcde()
    gen = torch.Generator().manual_seed(0)
    t = torch.cumsum(torch.rand(9, generator=gen, dtype=torch.float64) + 0.2, 0)
    x = torch.randn(5, 9, 3, generator=gen, dtype=torch.float64)
    x[torch.rand(5, 9, 3, generator=gen) < 0.5] = float("nan")
    x[0, :, 1] = float("nan")   # never observed
    x[1, :4, 0] = float("nan")  # starts late
    x[2, 6:, 2] = float("nan")  # ends early
    filled = models.fill_gaps(x, t)
    assert not torch.isnan(filled).any()
    assert filled[0, :, 1].eq(0).all()
    seen = ~torch.isnan(x)
    assert torch.equal(filled[seen], x[seen])
    for coeffs in (tc.linear_interpolation_coeffs,
                   tc.hermite_cubic_coefficients_with_backward_differences):
        assert torch.allclose(coeffs(filled, t), coeffs(x, t), atol=1e-12)


def test_gradient_modes_agree_on_the_cde():
    """checkpoint replays the forward steps: direct's gradient to rounding; the adjoint
    solves a backward ODE of its own (through the path's derivative): close to it."""
    t = torch.arange(6.0, dtype=torch.float64)
    x = torch.randn(4, 6, 3, dtype=torch.float64)
    x[0, 1] = float("nan")

    def grad(mode: str, step: float) -> torch.Tensor:
        model = _cde("hermite", channels=3)
        feats = model.features(x, x, t)
        model(feats, t, SolverSpec("rk4", mode, step_size=step)).square().sum().backward()
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    direct = grad("direct", 0.5)
    assert torch.allclose(direct, grad("checkpoint", 0.5), atol=1e-10)
    adjoint = grad("adjoint", 0.5)
    assert (adjoint - direct).norm() < 0.02 * direct.norm()


def test_recurrent_inputs_carry_the_last_observation():
    x = torch.tensor([[[1.0], [np.nan], [3.0], [np.nan]]])
    t = torch.arange(4.0)
    f = models._filled(x, x, t)
    assert f["inputs"][0, :, 0].tolist() == [1.0, 1.0, 3.0, 3.0]
    assert f["observed"][0].tolist() == [True, False, True, False]
    assert f["inputs"][0, :, 2].tolist() == pytest.approx([0, 1 / 3, 0, 1 / 3])
    assert f["alive"][0].tolist() == [True, True, True, False]


def test_nearest_neighbour_is_brute_force_1nn_on_resampled_series():
    x = np.array([[[0.0], [1.0], [np.nan]], [[0.0], [np.nan], [4.0]]])
    assert np.allclose(models.resample(x, np.arange(3.0), 5),
                       [[0, 0.25, 0.5, 0.75, 1.0], [0, 1, 2, 3, 4]])
    rng = np.random.default_rng(0)
    ref, query = rng.normal(size=(20, 4, 2)), rng.normal(size=(7, 4, 2))
    y = torch.as_tensor(rng.integers(0, 3, 20))
    m = models.NearestNeighbour({"length": 4}, 2, 3).double()
    t = torch.arange(4.0, dtype=torch.float64)
    m.remember(m.features(torch.tensor(ref), torch.tensor(ref), t), y, torch.arange(20))
    pred = m(m.features(torch.tensor(query), torch.tensor(query), t), t, None).argmax(1)
    nearest = ((query.reshape(7, 1, -1) - ref.reshape(1, 20, -1)) ** 2).sum(-1).argmin(1)
    assert pred.tolist() == y[nearest].tolist()


def test_per_class_counts_the_true_class_and_an_absent_class_has_no_accuracy():
    confusion = np.array([[3, 1, 0], [2, 2, 0], [0, 0, 0]])  # rows: true; "c" never in test
    rows = per_class(confusion, ["a", "b", "c"])
    assert rows == [{"class": "a", "n": 4, "correct": 3, "accuracy": 0.75},
                    {"class": "b", "n": 4, "correct": 2, "accuracy": 0.5},
                    {"class": "c", "n": 0, "correct": 0, "accuracy": None}]


# ------------------------------------------------------------------------------ runs

def test_cde_run_files_eval_load_and_report(cli, outputs, tmp_path):
    res = cli("cde", *QUICK)
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs, "cde")
    assert run.name.endswith("_cde")
    m = read_metrics(run)
    assert m["status"] == "ok" and m["system"] == "spirals" and m["model"] == "cde"
    assert (m["n_train"], m["n_val"], m["n_test"]) == (28, 6, 6)
    assert m["test_error"] == pytest.approx(1 - m["test_accuracy"])
    assert set(m["per_class_accuracy"]) == {"counterclockwise", "clockwise"}
    assert m["nfe_forward_per_iter"] == 4 * 11 and m["nfe_backward_per_iter"] == 4 * 11
    assert m["gradient"] == "checkpoint" and m["seconds_per_epoch"] > 0
    assert m["peak_memory_mb"] > 0 and m["epochs"] == pytest.approx(4 * 8 / 28)
    for f in ("loss.png", "curves.png", "confusion.png", "per_class.csv"):
        assert (run / f).exists(), f
    with open(run / "per_class.csv") as f:
        rows = list(csv.DictReader(f))
    assert sum(int(r["n"]) for r in rows) == 6
    assert sum(int(r["correct"]) for r in rows) == round(6 * m["test_accuracy"])
    out = tmp_path / "ev"
    res = cli("eval", str(run), "solver=dopri5", "--out", str(out))
    assert res.exit_code == 0, res.stderr
    ev = json.loads((out / "eval.json").read_text())
    assert ev["solver"] == "dopri5" and "test_accuracy" in ev

    import odecli

    trained = odecli.load(run)
    exp = trained.experiment
    raw = exp.data.x[exp.data.test] * exp.data.std + exp.data.mean  # back in the data's units
    pred = trained.predict(raw)
    assert np.mean(pred == exp.data.y[exp.data.test]) == m["test_accuracy"]
    with pytest.raises(OdecliError, match="fewer than 2 observed points"):
        trained.predict(np.full((1, 5, 2), np.nan))
    res = cli("report", str(outputs / "cde"), "--no-plots")
    assert res.exit_code == 0 and "test_accuracy" in res.stdout


@pytest.mark.parametrize("model", ["gru_dt", "odernn", "knn"])
def test_baselines_train_by_the_same_command(cli, outputs, model):
    res = cli("cde", *QUICK, f"cde_model={model}", "data.drop=0.3", "data.mask_channel=true")
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs, "cde")
    m = read_metrics(run)
    assert m["model"] == model and m["drop"] == 0.3 and m["channels"] == 4
    assert (m["nfe_forward_per_iter"] > 0) == (model == "odernn")
    assert (run / "confusion.png").exists()


def test_a_uea_folder_trains(tmp_path):
    exp = CDEExperiment(composed(["cde_data=uea", f"data.dir={TINY}", "train.niters=2",
                                  "quiet=true"]), tmp_path)
    assert exp.name == "TinyRamps" and exp.data.classes == ["up", "down"]
    loss, extra = exp.loss(1)
    assert torch.isfinite(loss) and 0 <= extra["train_accuracy"] <= 1


# ------------------------------------------------------------------------------ bad input

def _bad_ts(tmp_path: Path) -> str:
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "B_TRAIN.ts").write_text(HEAD + "1,2:3,4:a\n1,2:3,oops:b\n")
    return str(tmp_path / "bad")


@pytest.mark.parametrize("overrides,message", [
    (["data.name=ecg"], "unknown dataset 'ecg'; choose one of: japanese_vowels, spirals, uea"),
    (["data=spirals"], "choose a data config with cde_data=spirals"),
    (["model.name=lstm"], "unknown model 'lstm'; choose one of: cde, gru_dt, odernn, knn"),
    (["data.drop=1"], "data.drop must be in [0, 1), got 1"),
    (["data.drop=-0.1"], "data.drop must be in [0, 1), got -0.1"),
    (["cde_data=uea"], "cde_data=uea needs data.dir=FOLDER"),
    (["cde_data=uea", "data.dir=BAD"], "B_TRAIN.ts line 6, dimension 2: 'oops' is not a number"),
    (["cde_data=uea", f"data.dir={TINY}", "data.drop=0.9"], "keeps 1 after data.drop=0.9"),
    (["cde_data=uea", "data.dir=/nonexistent"], "data.dir=/nonexistent is not a folder"),
    (["data.val_fraction=0.5", "data.test_fraction=0.5"], "must leave training series"),
    (["model.interpolation=cubic"], "unknown model.interpolation 'cubic'"),
    (["data.split=uea"], "unknown data.split 'uea'"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(cli, outputs, tmp_path, overrides,
                                                        message):
    overrides = [o.replace("BAD", _bad_ts(tmp_path)) if "BAD" in o else o for o in overrides]
    res = cli("cde", *overrides, "quiet=true", "train.niters=1")
    assert res.exit_code == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert message in res.stderr
    assert not (outputs / "cde").exists() or not any((outputs / "cde").iterdir())


def test_augmentation_thins_each_training_batch_afresh(tmp_path):
    x = np.arange(40.0).reshape(2, 20, 1)
    x[1, 12:] = np.nan
    rng = np.random.default_rng(0)
    a, b = data_mod.thin(x, 0.5, rng), data_mod.thin(x, 0.5, rng)
    assert (~np.isnan(a)).sum(axis=(1, 2)).tolist() == [10, 6]
    assert not np.array_equal(np.isnan(a), np.isnan(b))
    assert (~np.isnan(data_mod.thin(x[:, :3], 0.9, rng))).sum() == 4  # two points stay
    exp = CDEExperiment(composed([*QUICK, "train.augment_drop=0.5"]), tmp_path)
    loss, _ = exp.loss(1)
    assert torch.isfinite(loss)
    loss.backward()


def test_noise_perturbs_observed_values_missing_stays_missing(tmp_path, monkeypatch):
    seen: list[np.ndarray] = []
    exp = CDEExperiment(composed([*QUICK, "data.drop=0.3", "train.noise=0.3"]), tmp_path)
    features = exp.features
    monkeypatch.setattr(exp, "features", lambda x: seen.append(x) or features(x))
    state = exp.rng.bit_generator.state
    loss, _ = exp.loss(1)
    assert torch.isfinite(loss)
    loss.backward()
    exp.rng.bit_generator.state = state
    clean = exp.data.x[exp.rng.choice(exp.data.train, size=8, replace=False)]
    a = seen[0]
    assert np.isnan(a).any() and np.array_equal(np.isnan(a), np.isnan(clean))
    ok = ~np.isnan(a)
    assert np.std(a[ok] - clean[ok]) == pytest.approx(0.3, rel=0.2)


def test_label_smoothing_smooths_the_training_loss(tmp_path):
    exp = CDEExperiment(composed([*QUICK, "train.noise=0", "train.label_smoothing=0.3"]),
                        tmp_path)
    state = exp.rng.bit_generator.state
    loss, _ = exp.loss(1)
    exp.rng.bit_generator.state = state
    pick = torch.as_tensor(exp.rng.choice(exp.data.train, size=8, replace=False))
    logits, target = exp.logits(exp.feats, pick), exp.y[pick]
    ce = torch.nn.functional.cross_entropy
    assert torch.isclose(loss, ce(logits, target, label_smoothing=0.3))
    assert not torch.isclose(loss, ce(logits, target))


def test_ema_scores_a_moving_average_of_the_trained_weights(tmp_path):
    exp = CDEExperiment(composed([*QUICK, "train.ema=0.75"]), tmp_path)
    assert set(exp.modules()) == {"model", "net"} and exp.model is not exp.net
    start = [p.detach().clone() for p in exp.net.parameters()]
    opt = torch.optim.SGD(exp.net.parameters(), lr=0.5)
    loss, _ = exp.loss(1)
    loss.backward()
    opt.step()
    exp.end_step()
    for avg, p, p0 in zip(exp.model.parameters(), exp.net.parameters(), start, strict=True):
        assert not avg.requires_grad
        assert torch.allclose(avg, 0.75 * p0 + 0.25 * p)
    assert not all(torch.equal(p, p0) for p, p0 in zip(exp.net.parameters(), start, strict=True))
    plain = CDEExperiment(composed(QUICK), tmp_path / "plain")
    assert plain.model is plain.net and set(plain.modules()) == {"model"}


def test_an_ema_run_trains_and_its_averaged_weights_are_evaluated(cli, outputs, tmp_path):
    res = cli("cde", *QUICK, "train.ema=0.9")
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs, "cde")
    m = read_metrics(run)
    res = cli("eval", str(run), "--out", str(tmp_path / "ev"))
    assert res.exit_code == 0, res.stderr
    ev = json.loads((tmp_path / "ev" / "eval.json").read_text())
    assert ev["test_accuracy"] == pytest.approx(m["test_accuracy"])


@pytest.mark.parametrize("keep", ["best", "last"])
def test_keep_tests_and_saves_the_best_or_the_final_state(tmp_path, monkeypatch, keep):
    """Iteration 2's evaluation is made the best of two: keep=best tests and saves its
    state, keep=last the final one; both report iteration 2 as the best evaluation."""
    import odecli
    from odecli.engine import rundir

    evaluate = CDEExperiment.evaluate

    def rigged(self):
        return {**evaluate(self), "score": 0.0 if self.steps == 2 else 1.0}

    monkeypatch.setattr(CDEExperiment, "evaluate", rigged)
    r = odecli.run("cde", [*QUICK, f"train.keep={keep}", "plots.enabled=false"],
                   run_dir=tmp_path / keep)
    assert r.metrics["best_iteration"] == 2 and r.metrics["iterations"] == 4
    state = torch.load(r.run_dir / rundir.CHECKPOINT, weights_only=False)
    final = state["modules"]["model"]
    tested = final if keep == "last" else state["best"]["model"]
    assert (state["best"] is None) == (keep == "last")
    if keep == "best":
        assert not all(torch.equal(tested[k], final[k]) for k in final)
    loaded = odecli.load(r.run_dir).experiment
    assert all(torch.equal(v, tested[k]) for k, v in loaded.model.state_dict().items())
    exp = loaded
    assert exp.score(exp.data.test)["accuracy"] == r.metrics["test_accuracy"]


@pytest.mark.parametrize("gradient,evaluations", [("direct", 4), ("checkpoint", 8)])
def test_the_memory_benchmark_runs_on_today_s_configs(gradient, evaluations):
    """benchmarks/cde_memory.py's step (without its slow every-block-mmapped allocator) on
    the configs as they are: it once fell behind them unnoticed. rk4 with one step per grid
    interval is 4 evaluations a step forward, and checkpoint replays each step once more."""
    import importlib.util
    import subprocess
    import sys

    path = REPO / "benchmarks" / "cde_memory.py"
    spec = importlib.util.spec_from_file_location("cde_memory", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = {"gradient": gradient, "length": 6, "batch": 4, "threads": 1}
    out = subprocess.run([sys.executable, "-c", bench.SCRIPT, json.dumps(args)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["nfe"] == evaluations * (6 - 1)
