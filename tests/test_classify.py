"""`odecli classify`: ODE-Net against ResNet on digits, the dial, MNIST's reader, bad input."""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_metrics, run_dirs
from omegaconf import OmegaConf

from odecli.classify import data as data_mod
from odecli.classify import dial as dial_mod
from odecli.classify import schema
from odecli.classify.models import Classifier, n_params
from odecli.cli.configs_index import options
from odecli.engine import schema as engine
from odecli.errors import ConfigError, OdecliError
from odecli.fields import Schema, Tagged
from odecli.launch.bridge import compose
from odecli.numerics.solve import SolverSpec
from odecli.paths import config_dir
from odecli.registry import COMMANDS

# A small, quick run: 150 images, a width-8 field, two dial tolerances and two fixed steps.
QUICK = ["data.limit=150", "model.width=8", "train.niters=4", "train.test_freq=2",
         "train.batch_size=16", "train.eval_batch_size=64", "dial.rtols=[0.1,0.001]",
         "dial.fixed_methods=[euler]", "dial.steps=[1,2]", "quiet=true"]
ROOT = config_dir()


def composed(overrides: list[str] | None = None):
    return compose(COMMANDS["classify"], overrides or [])


def _keys(node, sch, prefix=""):
    """Leaf keys of a plain config node as the schema sees them (variants resolved)."""
    if isinstance(sch, Tagged):
        sch = sch.variants[node[sch.tag]]
    if not isinstance(sch, Schema) or not isinstance(node, dict):
        return {prefix[:-1]}
    return set().union(*(_keys(v, sch.fields.get(k), f"{prefix}{k}.") for k, v in node.items()))


def _declared(sch, node, prefix=""):
    if isinstance(sch, Tagged):
        sch = sch.variants[node[sch.tag]]
    if not isinstance(sch, Schema):
        return {prefix[:-1]}
    return set().union(*(_declared(f, node.get(k) if isinstance(node, dict) else None,
                                   f"{prefix}{k}.") for k, f in sch.fields.items()))


# ------------------------------------------------------------------------------ config

@pytest.mark.parametrize("overrides", [[]] + [
    [f"{group}={name}"] for group in ("classify_data", "classify_model")
    for name, _ in options(ROOT, group)])
def test_every_option_composes_and_no_key_is_orphaned(overrides):
    cfg = composed(overrides)
    out = schema.check_classify(cfg)
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("hydra", None)
    assert _keys(plain, schema.CONFIG) == _declared(schema.CONFIG, plain)
    assert set(out) == set(plain)
    for key, field in engine.TRAIN.fields.items():
        assert schema.TRAIN.fields[key] is field, key


def test_yaml_defaults_are_what_the_run_gets():
    out = schema.check_classify(composed())
    assert (out["data"]["name"], out["model"]["name"]) == ("digits", "odenet")
    assert out["gradient"]["name"] == "checkpoint"
    assert out["dial"]["within"] == 0.5 and out["dial"]["rtols"][0] == 0.1
    # the measured defaults (README): a few minutes on one CPU thread, room for the dial
    assert (out["solver"]["rtol"], out["train"]["niters"]) == (1e-4, 200)
    assert (out["model"]["head"], out["train"]["tol_spread"]) == ("flatten", 1.0)
    tied = schema.check_classify(composed(["classify_model=resnet_tied"]))["model"]
    assert (tied["name"], tied["tied"], tied["blocks"]) == ("resnet", True, 6)


def test_split_sizes_are_fixed_counts():
    assert schema.split_sizes(1797, 0.1, 0.2) == (1258, 180, 359)
    assert schema.split_sizes(10, 0.01, 0.01) == (8, 1, 1)


# ------------------------------------------------------------------------------ bad input

@pytest.mark.parametrize("overrides,message", [
    (["data.name=cifar"], "unknown dataset 'cifar'; choose one of: digits, mnist"),
    (["data=mnist"], "choose a data config with classify_data=mnist"),
    (["model.name=vgg"], "unknown model 'vgg'; choose one of: odenet, resnet"),
    (["data.val_fraction=0.6", "data.test_fraction=0.5"], "impossible split"),
    (["data.limit=3", "data.val_fraction=0.5"], "impossible split"),
    (["data.test_fraction=1.5"], "data.test_fraction must be in (0, 1), got 1.5"),
    (["classify_data=mnist", "data.val_fraction=0.99", "data.limit=10",
      "data.download=false"], "impossible split"),
    (["dial.method=scipy_solver"], "unknown dial.method 'scipy_solver'"),
    (["dial.fixed_methods=[rk5]"], "unknown dial.fixed_methods[0] 'rk5'"),
    (["+model.blocks=3"], "unknown config key 'model.blocks'"),
    (["classify_model=resnet", "model.blocks=0"], "model.blocks must be a positive integer"),
    (["plots.resnet_run=/nonexistent/run"], "plots.resnet_run: cannot read"),
    (["solver=euler", "solver.step_size=0"], "solver.step_size must be a positive number"),
    (["solver=rk4", "solver.step_size=0.25", "train.tol_spread=10"],
     "solver=rk4 has none (use train.tol_spread=1)"),
    (["train.tol_spread=0.5"], "train.tol_spread must be"),
    (["model.norm_groups=5"], "model.norm_groups=5 does not divide the channels"),
    (["model.width=8", "model.augment_dim=2", "model.norm_groups=4"],
     "choose a common divisor"),
    (["model.head=max"], "unknown model.head"),
])
def test_bad_input_is_one_line_exit_2_and_no_run_folder(cli, outputs, overrides, message):
    res = cli("classify", *overrides, "quiet=true", "train.niters=1")
    assert res.exit_code == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("\n") == 1
    assert message in res.stderr
    assert not (outputs / "classify").exists() or not any((outputs / "classify").iterdir())


def test_mnist_unavailable_offline_is_one_line(cli, outputs, tmp_path):
    res = cli("classify", "classify_data=mnist", f"data.cache_dir={tmp_path / 'cache'}",
              "data.base_url=http://127.0.0.1:9/mnist", "data.timeout=2", "quiet=true")
    assert res.exit_code == 2
    assert res.stderr.startswith("error: MNIST is unavailable: downloading http://127.0.0.1")
    assert "data.dir=FOLDER" in res.stderr and res.stderr.count("\n") == 1
    assert not (outputs / "classify").exists()
    res = cli("classify", "classify_data=mnist", f"data.dir={tmp_path}", "quiet=true")
    assert res.exit_code == 2 and "lacks train-images-idx3-ubyte" in res.stderr


# ------------------------------------------------------------------------------ MNIST files

def test_idx_round_trip_plain_and_gzipped(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a-idx3-ubyte", "a-idx3-ubyte.gz"):
        data_mod.write_idx(tmp_path / name, a)
        back = data_mod.read_idx(tmp_path / name)
        assert back.shape == (2, 3, 4) and np.array_equal(back, a)
    raw = (tmp_path / "a-idx3-ubyte").read_bytes()
    assert raw[:4] == bytes([0, 0, 8, 3]) and raw[4:8] == (2).to_bytes(4, "big")
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01")
    with pytest.raises(OdecliError, match="not an IDX file"):
        data_mod.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(raw[:-5])
    with pytest.raises(OdecliError, match=r"IDX header says \(2, 3, 4\)"):
        data_mod.read_idx(tmp_path / "short")


def fake_mnist(folder: Path, n_train: int = 60, n_test: int = 20) -> None:
    """Four IDX files shaped like MNIST's: digit k is a bright k-th row band."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = (np.arange(n) % 10).astype(np.uint8)
        x = rng.integers(0, 30, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            x[i, 2 * k + 4: 2 * k + 7] = 255
        data_mod.write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", x)
        data_mod.write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", y)


def test_mnist_from_a_folder_and_from_a_checked_download(tmp_path, monkeypatch):
    src = tmp_path / "src"
    fake_mnist(src)
    node = {"name": "mnist", "dir": str(src), "cache_dir": str(tmp_path / "cache"),
            "download": True, "base_url": src.as_uri(), "timeout": 5.0, "val_fraction": 0.1,
            "limit": 50, "test_limit": 10}
    images = data_mod.load(node, seed=0)
    assert images.x.shape == (60, 1, 28, 28) and images.x.dtype == np.float32
    assert (len(images.train), len(images.val), len(images.test)) == (45, 5, 10)
    assert images.x.max() == 1.0 and np.array_equal(images.y[images.test], np.arange(10))
    # the download path: the real MNIST digests refuse these files ...
    monkeypatch.delenv(data_mod.MNIST_ENV, raising=False)
    node["dir"] = None
    with pytest.raises(ConfigError, match="does not match its SHA-256 checksum"):
        data_mod.locate_mnist(node)
    assert not any((tmp_path / "cache").glob("*.gz"))
    # ... and with their own digests they land in the cache and load the same
    digests = {n: hashlib.sha256((src / f"{n}.gz").read_bytes()).hexdigest()
               for n in data_mod.MNIST_FILES}
    monkeypatch.setattr(data_mod, "MNIST_FILES", digests)
    again = data_mod.load(node, seed=0)
    assert np.array_equal(again.x, images.x) and len(list((tmp_path / "cache").glob("*.gz"))) == 4
    node["download"], node["base_url"] = False, "http://127.0.0.1:9"
    assert set(data_mod.locate_mnist(node)) == set(digests)  # cached: no network needed


def test_digits_split_is_fixed_by_the_seed():
    node = {"name": "digits", "val_fraction": 0.1, "test_fraction": 0.2, "limit": None}
    a, b, c = (data_mod.load(node, s) for s in (0, 0, 1))
    assert a.x.shape == (1797, 1, 8, 8) and 0 <= a.x.min() and a.x.max() == 1.0
    assert (len(a.train), len(a.val), len(a.test)) == (1258, 180, 359)
    assert np.array_equal(a.test, b.test) and not np.array_equal(a.test, c.test)
    assert not set(a.train) & set(a.test) and not set(a.val) & set(a.test)


# ------------------------------------------------------------------------------ models

def _model(**kw):
    m = {"name": "odenet", "field": "conv", "width": 8, "downsample": 0, "augment_dim": 0,
         "norm_groups": 32, "head": "pool"}
    m.update(kw)
    return Classifier(m, (1, 8, 8), 10)


@pytest.mark.parametrize("field,augment", [("conv", 0), ("conv", 3), ("mlp", 2)])
def test_tied_resnet_with_n_blocks_is_euler_at_step_1_over_n(field, augment):
    torch.manual_seed(0)
    ode = _model(field=field, augment_dim=augment)
    res = _model(field=field, augment_dim=augment, name="resnet", blocks=4, tied=True)
    res.load_state_dict(ode.state_dict())  # the same keys: body.field.func.*
    ode.set_spec(SolverSpec.from_cfg({"method": "euler", "step_size": 0.25},
                                     {"name": "direct"}))
    x = torch.rand(6, 1, 8, 8)
    assert torch.equal(ode(x), res(x))
    assert ode.counter.nfe == res.counter.nfe == 4
    ode.set_spec(SolverSpec.from_cfg({"method": "euler", "step_size": 0.5},
                                     {"name": "direct"}))
    assert not torch.allclose(ode(x), res(x))


def test_parameter_counts_share_everything_but_the_blocks():
    ode, res = _model(), _model(name="resnet", blocks=6, tied=False)
    block = n_params(ode.body)
    assert block == 2 * (9 * 9 * 8 + 8) + 3 * 16  # two time-convs (9 in, 8 out) + 3 norms
    assert n_params(res) - n_params(ode) == 5 * block
    assert n_params(_model(name="resnet", blocks=6, tied=True)) == n_params(ode)
    aug = _model(augment_dim=2)
    assert aug.body.field.func.conv1.conv.in_channels == 8 + 2 + 1


def test_flatten_head_sees_every_position_and_groups_split_the_channels():
    torch.manual_seed(0)
    pool, flat = _model(), _model(head="flatten")
    assert n_params(flat) - n_params(pool) == 8 * (8 * 8 - 1) * 10  # Linear(8*64, 10)
    x = torch.rand(3, 1, 8, 8)
    flat.set_spec(SolverSpec.from_cfg({"method": "rk4", "step_size": 0.5}, {"name": "direct"}))
    assert flat(x).shape == (3, 10)
    down = _model(head="flatten", downsample=1, norm_groups=4)
    assert down.head[-1].in_features == 8 * 4 * 4
    assert {m.num_groups for m in down.modules() if isinstance(m, torch.nn.GroupNorm)} == {4}
    assert _model(augment_dim=3).body.field.func.norm1.num_groups == 11  # min(32, 8 + 3)


def test_untied_resnet_counts_one_evaluation_per_block():
    res = _model(name="resnet", blocks=5, tied=False)
    res(torch.rand(2, 1, 8, 8))
    assert res.counter.nfe == 5


def test_dial_summary_picks_the_loosest_tolerance_within_the_margin():
    rows = [{"kind": "reference", "accuracy": 0.98, "nfe_per_forward": 26.0, "seconds": 2.0},
            {"kind": "adaptive", "rtol": 0.1, "accuracy": 0.970, "nfe_per_forward": 8.0,
             "seconds": 0.5},
            {"kind": "adaptive", "rtol": 0.01, "accuracy": 0.976, "nfe_per_forward": 14.0,
             "seconds": 1.0},
            {"kind": "adaptive", "rtol": 1e-4, "accuracy": 0.98, "nfe_per_forward": 38.0,
             "seconds": 3.0},
            {"kind": "fixed", "label": "rk4 k=1", "accuracy": 0.977, "nfe_per_forward": 4.0,
             "seconds": 0.3}]
    s = dial_mod.summary(rows, within=0.5)
    assert s["dial_loosest_rtol"] == 0.01 and s["dial_nfe_ratio"] == 14 / 26
    assert s["dial_time_ratio"] == 0.5 and s["dial_cheapest_fixed"] == "rk4 k=1"


# ------------------------------------------------------------------------------ end to end

def test_odenet_run_eval_resnet_and_report(cli, outputs, tmp_path):
    res = cli("classify", *QUICK)
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs, "classify")
    assert run.name.endswith("_odenet")
    m = read_metrics(run)
    assert m["status"] == "ok" and m["command"] == "classify" and m["system"] == "digits"
    assert (m["n_train"], m["n_val"], m["n_test"]) == (105, 15, 30)
    assert m["test_error"] == pytest.approx(1 - m["test_accuracy"])
    assert m["epochs"] == pytest.approx(4 * 16 / 105) and m["seconds_per_epoch"] > 0
    assert m["nfe_forward_per_iter"] > 0 and m["nfe_backward_per_iter"] > 0
    assert m["gradient"] == "checkpoint" and m["n_params"] == n_params(_model(head="flatten"))
    for f in ("loss.png", "curves.png", "confusion.png", "tradeoff.png", "tradeoff.csv"):
        assert (run / f).exists(), f
    with open(run / "tradeoff.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["label"] for r in rows] == ["reference", "dopri5 rtol=0.1", "dopri5 rtol=0.001",
                                         "euler k=1", "euler k=2"]
    assert [float(r["nfe_per_forward"]) for r in rows[3:]] == [1.0, 2.0]
    assert m["dial_reference_nfe"] == m["nfe_eval"]

    # a ResNet beside it: NFE = blocks, then eval re-scores the ODE-Net with rk4 at k=2
    res = cli("classify", *QUICK, "classify_model=resnet", "model.blocks=3")
    assert res.exit_code == 0, res.stderr
    resnet = next(r for r in run_dirs(outputs, "classify") if r.name.endswith("_resnet"))
    r = read_metrics(resnet)
    assert r["nfe_eval"] == 3 and r["blocks"] == 3 and "dial_nfe_ratio" not in r
    assert not (resnet / "tradeoff.png").exists()
    out = tmp_path / "ev"
    res = cli("eval", str(run), "solver=rk4", "solver.step_size=0.5",
              f"plots.resnet_run={resnet}", "--out", str(out))
    assert res.exit_code == 0, res.stderr
    ev = json.loads((out / "eval.json").read_text())
    assert ev["nfe_eval"] == 8.0 and ev["solver"] == "rk4" and ev["model"] == "best"
    assert ev["dial_reference_nfe"] == 8.0 and (out / "tradeoff.png").exists()
    res = cli("eval", str(run), "model.width=16")
    assert res.exit_code == 2 and "cannot change 'model.width=16'" in res.stderr

    res = cli("report", str(outputs / "classify"), "--no-plots")
    assert res.exit_code == 0, res.stderr
    assert "test_error" in res.stdout and "n_params" in res.stdout


@pytest.mark.slow
def test_sweep_and_resume(cli, outputs):
    res = cli("classify", "-m", *QUICK, "dial.enabled=false", "model.augment_dim=0,2")
    assert res.exit_code == 0, res.stderr
    found = sorted((outputs / "multirun").rglob("metrics.json"))
    assert len(found) == 2
    params = [json.loads(p.read_text())["n_params"] for p in found]
    assert params[0] < params[1]
    res = cli("classify", *QUICK, "dial.enabled=false", "train.niters=2")
    assert res.exit_code == 0, res.stderr
    (run,) = run_dirs(outputs, "classify")
    res = cli("classify", f"resume={run}", "train.niters=4")
    assert res.exit_code == 0, res.stderr
    m = read_metrics(run)
    assert m["iterations"] == 4 and m["epochs"] == pytest.approx(4 * 16 / 105)


def test_tol_spread_trains_across_tolerances_and_scores_at_the_run_solver(tmp_path):
    from odecli.classify.experiment import ClassifyExperiment

    exp = ClassifyExperiment(composed([*QUICK, "train.tol_spread=100", "solver.rtol=1e-3",
                                       "solver.atol=1e-3"]), tmp_path)
    assert (exp.spec.rtol, exp.spec.atol) == (1e-3, 1e-3)
    specs = [exp.training_spec() for _ in range(400)]
    rtols = np.array([s.rtol for s in specs])
    assert all(s.atol == s.rtol for s in specs)
    assert rtols.min() >= 1e-3 and rtols.max() <= 0.1 + 1e-12
    # log-uniform on [1e-3, 1e-1]: half the draws below 1e-2, a quarter below 10**-2.5
    assert np.mean(rtols < 1e-2) == pytest.approx(0.5, abs=0.08)
    assert np.mean(rtols < 10 ** -2.5) == pytest.approx(0.25, abs=0.08)
    loss, _ = exp.loss(1)
    assert torch.isfinite(loss) and exp.model.body.spec is exp.spec  # scoring: the run's
    plain = ClassifyExperiment(composed(QUICK), tmp_path / "plain")
    assert plain.training_spec() is plain.spec
