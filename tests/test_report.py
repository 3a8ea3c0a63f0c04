"""`odecli report` on hand-made run folders: columns, order, reasons, files, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from PIL import Image


def make_run(path: Path, overrides: list[str], choices: dict[str, str],
             metrics: dict | None, losses: list[float] = (1.0, 0.5, 0.2)) -> Path:
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / ".hydra" / "config.yaml").write_text("seed: 0\ntrain:\n  niters: 4\n")
    (path / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n" + "".join(f"      {k}: {v}\n"
                                                      for k, v in choices.items()))
    if metrics is not None:
        (path / "metrics.json").write_text(json.dumps(metrics))
    rows = "".join(f"{i * 2},{v}\n" for i, v in enumerate(losses))
    (path / "history.csv").write_text("iteration,train_loss\n" + rows)
    return path


def metrics(status: str = "ok", err: float = 0.1, **extra) -> dict:
    return {"status": status, "error_rel": err / 2, "extrap_error_rel": err,
            "nfe_forward_per_solve": 26.0, "seconds_per_iter": 0.01, "peak_memory_mb": 300.0,
            "iterations": 4, **extra}


def sweep(root: Path) -> Path:
    s = root / "multirun" / "2025-01-01" / "10-00-00-000000"
    make_run(s / "0", ["system=spiral", "seed=0", "quiet=true"], {"system": "spiral"},
             metrics(err=0.3))
    make_run(s / "1", ["system=spiral", "seed=1", "quiet=true"], {"system": "spiral"},
             metrics(err=0.1))
    make_run(s / "2", ["system=lotka", "seed=0", "quiet=true"], {"system": "lotka"},
             metrics("failed: solver failed: max_num_steps exceeded", err=float("nan"),
                     hint="lower train.lr"))
    make_run(s / "3", ["system=lotka", "seed=1", "quiet=true"], {"system": "lotka"},
             metrics("interrupted", err=0.2, interrupted_by="SIGTERM"))
    make_run(s / "10", ["system=lotka", "seed=2", "quiet=true"], {"system": "lotka"}, None)
    return s


def test_report_table_sorted_with_reasons_and_files(cli, tmp_path):
    s = sweep(tmp_path)
    res = cli("report", str(s))
    assert res.exit_code == 0, res.stderr
    with open(s / "report.csv") as fh:
        table = list(csv.DictReader(fh))
    assert list(table[0])[:5] == ["run", "system", "seed", "status", "error"]
    assert "quiet" not in table[0]  # same in every run: not a differing override
    assert [r["run"] for r in table] == ["1", "3", "0", "2", "10"]  # by extrap error, NaN last
    by_run = {r["run"]: r for r in table}
    assert by_run["2"]["status"] == "failed"
    assert "max_num_steps exceeded" in by_run["2"]["error"] and "lower" in by_run["2"]["error"]
    assert by_run["3"]["status"] == "interrupted" and "SIGTERM" in by_run["3"]["error"]
    assert by_run["10"]["status"] == "incomplete" and "no metrics.json" in by_run["10"]["error"]
    assert "| failed |" in (s / "report.md").read_text()
    assert "extrap_error_rel" in res.stdout and "max_num_steps" in res.stdout
    for name in ("report_error.png", "report_loss.png"):
        with Image.open(s / name) as img:
            assert img.format == "PNG" and img.size[0] >= 300


def test_report_over_several_paths_fills_defaults_and_sorts_by_choice(cli, tmp_path):
    a = make_run(tmp_path / "train" / "a", ["seed=1"], {"system": "spiral", "model": "small"},
                 metrics(err=0.5))
    b = make_run(tmp_path / "train" / "b", ["model=deep", "seed=1"],
                 {"system": "spiral", "model": "deep"}, metrics(err=0.2))
    out = tmp_path / "rep"
    res = cli("report", str(a), str(b), "--sort", "error_rel", "--descending", "--out",
              str(out), "--no-plots")
    assert res.exit_code == 0, res.stderr
    table = list(csv.DictReader(open(out / "report.csv")))
    assert [r["run"] for r in table] == ["a", "b"]
    assert [r["model"] for r in table] == ["small", "deep"]   # a's comes from its choices
    assert "seed" not in table[0]


def test_report_bad_input_writes_nothing(cli, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for args, message in (([str(empty)], "is not a run folder and contains none"),
                          ([str(tmp_path / "nope")], "does not exist"),
                          ([str(sweep(tmp_path)), "--sort", "bogus"], "cannot sort by 'bogus'")):
        res = cli("report", *args)
        assert res.exit_code == 2 and message in res.stderr, res.stderr
        assert res.stderr.startswith("error: ") and len(res.stderr.strip().splitlines()) == 1
    assert not list(tmp_path.rglob("report*"))


def test_report_shows_the_vae_metrics(cli, tmp_path):
    s = tmp_path / "multirun" / "2025-01-01" / "11-00-00-000000"
    for job, (lr, right) in enumerate([("1e-3", 0.004), ("3e-3", 0.001)]):
        make_run(s / str(job), [f"train.lr={lr}"], {},
                 {"status": "ok", "reconstruction_mse": 0.002, "gap_mse": 0.003,
                  "extrapolation_right_mse": right, "extrapolation_left_mse": 0.005,
                  "seconds_per_iter": 0.2, "iterations": 4})
    res = cli("report", str(s), "--no-plots")
    assert res.exit_code == 0, res.stderr
    with open(s / "report.csv") as fh:
        table = list(csv.DictReader(fh))
    assert {"reconstruction_mse", "gap_mse", "extrapolation_right_mse"} <= set(table[0])
    # Sorted by the right-extrapolation error when there is no dynamics error.
    assert [r["train.lr"] for r in table] == ["3e-3", "1e-3"]
