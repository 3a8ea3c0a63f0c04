"""`odecli report` on hand-made run folders of every command, in today's vocabulary and the old
one: columns, order, reasons, files, loss curves, bad input."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib.figure
import pytest
from PIL import Image

from odecli.cli import report

# What each command writes, as the run folders hold it.
FAMILIES = {
    "train": {
        "config": "seed: 0\nsystem:\n  name: lotka\n  t1: 10.0\ntrain:\n  niters: 4\n",
        "system": "lotka",
        "extras": [],
        "evals": ["eval_loss", "error_abs", "error_rel", "extrap_error_abs", "extrap_error_rel",
                  "nfe_eval"],
    },
    "spiral-vae": {
        "config": "seed: 0\ndata:\n  n_spirals: 1000\ntrain:\n  niters: 4\n",
        "system": "spirals",
        "extras": ["loglik", "kl"],
        "evals": ["val_reconstruction_mse", "val_extrapolation_forward_mse",
                  "val_extrapolation_backward_mse", "score"],
    },
    "ecg-vae": {
        "config": "seed: 0\ndata:\n  record: '100'\n  db: mitdb\ntrain:\n  niters: 4\n",
        "system": "mitdb/100",
        "extras": ["loglik", "kl"],
        "evals": ["val_reconstruction_mse", "val_gap_mse", "val_extrapolation_right_mse",
                  "val_extrapolation_left_mse", "score"],
    },
}
NFE_FORWARD, NFE_BACKWARD = 26, 40  # per training step, in every fixture


def family_metrics(command: str, err: float) -> dict:
    if command == "train":
        return {"eval_loss": err / 4, "error_abs": err / 3, "error_rel": err / 2,
                "extrap_error_abs": err / 1.5, "extrap_error_rel": err}
    if command == "spiral-vae":
        return {"reconstruction_mse": err / 2, "extrapolation_forward_mse": err,
                "extrapolation_backward_mse": err * 1.5, "best_iteration": 4}
    return {"reconstruction_mse": err / 2, "gap_mse": err / 3, "extrapolation_right_mse": err,
            "extrapolation_left_mse": err * 1.2, "best_iteration": 4}


def history(command: str, fmt: str, losses: list[float]) -> str:
    """history.csv: new format starts at iteration 0 (no loss yet) and counts NFE since the
    start; old VAE history calls the loss `loss` and counts NFE of one step."""
    fam = FAMILIES[command]
    old_vae = fmt == "old" and command != "train"
    head = ["iteration", "loss" if old_vae else "train_loss", *fam["extras"], *fam["evals"],
            "nfe_forward", "nfe_backward", "seconds"]
    rows = [] if old_vae else [[0, "", *([""] * len(fam["extras"])),
                                *(0.5 for _ in fam["evals"]), 0, 0, 0.0]]
    for i, loss in enumerate(losses):
        it = 2 * (i + 1)
        nfe = (NFE_FORWARD, NFE_BACKWARD) if old_vae else (NFE_FORWARD * it, NFE_BACKWARD * it)
        rows.append([it, loss, *(-loss, 0.1)[: len(fam["extras"])],
                     *(0.4 / it for _ in fam["evals"]), *nfe, 0.1 * it])
    return "\n".join(",".join(str(v) for v in row) for row in [head, *rows]) + "\n"


def metrics(command: str, fmt: str, status: str, err: float, losses: list[float],
            **extra) -> dict:
    """metrics.json of a finished (or stopped) run in either vocabulary."""
    fam = FAMILIES[command]
    env = {"odecli": "0.1.0", "torch": "2.4.0", "torchdiffeq": "0.2.5"}
    run = {"iterations": 4, "seconds_per_iter": 0.125, "train_seconds": 0.5,
           "wall_seconds": 1.0, "peak_memory_mb": 300.0, "environment": env}
    if fmt == "new":
        return {"status": status, "command": command, "system": fam["system"], "niters": 4,
                "final_loss": losses[-1], "nfe_forward_per_iter": float(NFE_FORWARD),
                "nfe_backward_per_iter": float(NFE_BACKWARD), "nfe_eval": 14.0, "device": "cpu",
                "gradient": "direct", "solver": "dopri5", **run,
                **family_metrics(command, err), **extra}
    if command == "train":
        return {"status": status, "system": fam["system"], "niters": 4,
                "final_loss": losses[-1], **family_metrics(command, err), "scale": 1.2,
                "nfe_forward_per_solve": float(NFE_FORWARD),
                "nfe_backward_per_iter": float(NFE_BACKWARD), "nfe_eval": 14.0,
                "device": "cpu", "gradient": "direct", "solver": "dopri5", **run, **extra}
    if status != "ok":  # what an old VAE wrote when the solver failed
        return {"status": status, "hint": "lower train.lr", "command": command,
                "environment": env, "wall_seconds": 1.0, "peak_memory_mb": 300.0, **extra}
    data = {"data": {"record": "100", "lead": "MLII", "fs": 360}} if command == "ecg-vae" else {}
    return {"status": status, "command": command, **family_metrics(command, err), **data,
            **run, "nfe_forward_per_iter": float(NFE_FORWARD),
            "nfe_backward_per_iter": float(NFE_BACKWARD), **extra}


def make_run(path: Path, command: str = "train", fmt: str = "new",
             overrides: tuple[str, ...] = (), choices: dict[str, str] | None = None,
             status: str | None = "ok", err: float = 0.1,
             losses: tuple[float, ...] = (1.0, 0.5, 0.2), **extra) -> Path:
    """A run folder as `command` writes it; status None: no metrics.json (killed)."""
    (path / ".hydra").mkdir(parents=True)
    (path / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    (path / ".hydra" / "config.yaml").write_text(FAMILIES[command]["config"])
    (path / ".hydra" / "hydra.yaml").write_text(  # Hydra's job name: the command
        f"hydra:\n  job:\n    name: {command.replace('-', '_')}\n  runtime:\n    choices:\n"
        + "".join(f"      {k}: {v}\n" for k, v in (choices or {}).items()))
    if status is not None:
        m = metrics(command, fmt, status, err, list(losses), **extra)
        (path / "metrics.json").write_text(json.dumps(m))
    (path / "history.csv").write_text(history(command, fmt, list(losses)))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


@pytest.fixture
def saved_figures(monkeypatch):
    """Every figure the report saves, by final file name (to see what it drew); figures are
    written to a hidden temp name and renamed, so '.report_loss.tmp.png' -> 'report_loss.png'."""
    saved: dict[str, matplotlib.figure.Figure] = {}
    original = matplotlib.figure.Figure.savefig

    def savefig(self, fname, *args, **kwargs):
        name = Path(fname).name
        if name.startswith(".") and ".tmp" in name:
            name = name[1:].replace(".tmp", "")
        saved[name] = self
        return original(self, fname, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", savefig)
    return saved


def every_kind(root: Path) -> Path:
    """One run of each command in each vocabulary; the old ones used another solver."""
    for fmt, solver in (("old", "dopri5"), ("new", "rk4")):
        for command, err, losses in (("train", 0.1, (1.0, 0.5, 0.2)),
                                     ("spiral-vae", 0.02, (3.0, 1.0, -0.5)),
                                     ("ecg-vae", 0.004, (2.0, 0.8, 0.3))):
            make_run(root / fmt / command, command, fmt, (f"solver={solver}",),
                     err=err, losses=losses)
    return root


def test_every_command_in_both_vocabularies_gets_system_nfe_and_final_loss(
        cli, tmp_path, saved_figures):
    root = every_kind(tmp_path / "runs")
    res = cli("report", str(root))
    assert res.exit_code == 0, res.stderr
    table = {r["run"]: r for r in read_csv(root / "report.csv")}
    assert set(table) == {f"{f}/{c}" for f in ("old", "new") for c in FAMILIES}
    header = list(next(iter(table.values())))
    assert header[:5] == ["run", "system", "solver", "status", "error"]
    assert "nfe_forward_per_solve" not in header and "loss" not in header
    for fmt in ("old", "new"):
        for command, fam in FAMILIES.items():
            row = table[f"{fmt}/{command}"]
            assert row["status"] == "ok" and row["error"] == ""
            assert row["system"] == fam["system"]
            assert float(row["nfe_forward_per_iter"]) == NFE_FORWARD
            assert float(row["nfe_backward_per_iter"]) == NFE_BACKWARD
            assert row["final_loss"] != ""
    # Old VAEs wrote no final_loss: it is the last loss of their history.
    assert float(table["old/spiral-vae"]["final_loss"]) == -0.5
    assert float(table["old/ecg-vae"]["final_loss"]) == 0.3
    assert float(table["new/ecg-vae"]["final_loss"]) == 0.3
    # Each family's held-out numbers, whichever vocabulary wrote them.
    for fmt in ("old", "new"):
        assert float(table[f"{fmt}/train"]["extrap_error_rel"]) == 0.1
        assert float(table[f"{fmt}/spiral-vae"]["extrapolation_forward_mse"]) == 0.02
        assert float(table[f"{fmt}/ecg-vae"]["gap_mse"]) == pytest.approx(0.004 / 3)
        assert float(table[f"{fmt}/ecg-vae"]["best_iteration"]) == 4
        assert table[f"{fmt}/train"]["reconstruction_mse"] == ""
    md = (root / "report.md").read_text()
    for text in (md, res.stdout):
        for name in ("lotka", "spirals", "mitdb/100", "nfe_forward_per_iter", "final_loss"):
            assert name in text
    # The loss figure has one curve per run (each run is its own configuration here).
    fig = saved_figures["report_loss.png"]
    (ax,) = fig.axes
    labels = sorted(line.get_label() for line in ax.get_lines())
    assert len(labels) == 6 and len(set(labels)) == 6
    assert "system=spirals, solver=dopri5" in labels
    assert ax.get_yscale() == "linear"  # a VAE's loss went negative: no log axis
    with Image.open(root / "report_loss.png") as img:
        assert img.format == "PNG" and img.size[0] >= 300


def test_loss_curves_read_both_history_vocabularies(tmp_path):
    root = every_kind(tmp_path / "runs")
    items, _, _, _ = report.build([str(root)])
    curves = report.loss_curves(items)
    assert set(curves) == {r.name for r in items}
    assert curves["old/spiral-vae"] == {2: 3.0, 4: 1.0, 6: -0.5}  # from the `loss` column
    assert curves["new/train"] == {2: 1.0, 4: 0.5, 6: 0.2}  # iteration 0 has no loss yet
    by_name = {r.name: r for r in items}
    assert by_name["old/ecg-vae"].command == "ecg-vae"
    assert by_name["old/train"].command == "train"  # old train metrics name no command


def test_unfinished_runs_take_loss_and_only_cumulative_nfe_from_history(cli, tmp_path):
    root = tmp_path / "killed"
    make_run(root / "old-vae", "spiral-vae", "old", status=None, losses=(3.0, 1.0))
    make_run(root / "new-vae", "spiral-vae", "new", status=None, losses=(3.0, 1.0))
    make_run(root / "new-train", "train", "new", status=None, losses=(1.0, 0.5))
    res = cli("report", str(root), "--no-plots")
    assert res.exit_code == 0, res.stderr
    table = {r["run"]: r for r in read_csv(root / "report.csv")}
    for name, system in (("old-vae", "spirals"), ("new-vae", "spirals"), ("new-train", "lotka")):
        assert table[name]["status"] == "incomplete"
        assert "last evaluation at iteration 4" in table[name]["error"]
        assert table[name]["system"] == system  # from the config's shape
    assert float(table["old-vae"]["final_loss"]) == 1.0
    # Old VAE history counted NFE per step: never shown as a per-iteration average.
    assert table["old-vae"]["nfe_forward_per_iter"] == ""
    assert table["old-vae"]["nfe_backward_per_iter"] == ""
    assert float(table["new-vae"]["nfe_forward_per_iter"]) == NFE_FORWARD
    assert float(table["new-train"]["nfe_backward_per_iter"]) == NFE_BACKWARD


def test_a_failed_old_ecg_run_without_data_is_named_ecg(cli, tmp_path):
    root = tmp_path / "ecg"
    make_run(root / "0", "ecg-vae", "old", ("train.lr=1",), status="failed: step size underflow")
    make_run(root / "1", "ecg-vae", "old", ("train.lr=1e-3",))
    res = cli("report", str(root), "--no-plots")
    assert res.exit_code == 0, res.stderr
    table = {r["run"]: r for r in read_csv(root / "report.csv")}
    assert table["0"]["status"] == "failed" and "underflow" in table["0"]["error"]
    assert table["0"]["system"] == "ecg" and table["1"]["system"] == "mitdb/100"
    assert float(table["0"]["final_loss"]) == 0.2  # the history still has the losses


def sweep(root: Path) -> Path:
    s = root / "multirun" / "2025-01-01" / "10-00-00-000000"
    make_run(s / "0", "train", "new", ("system=spiral", "seed=0", "quiet=true"),
             {"system": "spiral"}, err=0.3, system="spiral")
    make_run(s / "1", "train", "old", ("system=spiral", "seed=1", "quiet=true"),
             {"system": "spiral"}, err=0.1, system="spiral")
    make_run(s / "2", "train", "new", ("system=lotka", "seed=0", "quiet=true"),
             {"system": "lotka"}, "failed: solver failed: max_num_steps exceeded",
             err=float("nan"), hint="lower train.lr")
    make_run(s / "3", "train", "new", ("system=lotka", "seed=1", "quiet=true"),
             {"system": "lotka"}, "interrupted", err=0.2, interrupted_by="SIGTERM")
    make_run(s / "10", "train", "new", ("system=lotka", "seed=2", "quiet=true"),
             {"system": "lotka"}, None)
    return s


def test_report_table_sorted_with_reasons_and_files(cli, tmp_path, saved_figures):
    s = sweep(tmp_path)
    res = cli("report", str(s))
    assert res.exit_code == 0, res.stderr
    table = read_csv(s / "report.csv")
    assert list(table[0])[:5] == ["run", "system", "seed", "status", "error"]
    assert "quiet" not in table[0]  # same in every run: not a differing override
    assert [r["run"] for r in table] == ["1", "3", "0", "2", "10"]  # by extrap error, NaN last
    by_run = {r["run"]: r for r in table}
    assert [by_run[n]["system"] for n in ("0", "1", "2", "3", "10")] == [
        "spiral", "spiral", "lotka", "lotka", "lotka"]
    assert by_run["2"]["status"] == "failed"
    assert "max_num_steps exceeded" in by_run["2"]["error"] and "lower" in by_run["2"]["error"]
    assert by_run["3"]["status"] == "interrupted" and "SIGTERM" in by_run["3"]["error"]
    assert by_run["10"]["status"] == "incomplete" and "no metrics.json" in by_run["10"]["error"]
    assert "| failed |" in (s / "report.md").read_text()
    assert "extrap_error_rel" in res.stdout and "max_num_steps" in res.stdout
    for name in ("report_error.png", "report_loss.png"):
        with Image.open(s / name) as img:
            assert img.format == "PNG" and img.size[0] >= 300
    # Seeds of one system share a line (mean, with a band); the systems get one each.
    labels = sorted(line.get_label() for line in saved_figures["report_loss.png"].axes[0]
                    .get_lines())
    assert labels == ["system=lotka (3 seeds)", "system=spiral (2 seeds)"]
    assert saved_figures["report_loss.png"].axes[0].get_yscale() == "log"


def test_report_sorts_by_system(cli, tmp_path):
    s = sweep(tmp_path)
    res = cli("report", str(s), "--sort", "system", "--descending", "--no-plots")
    assert res.exit_code == 0, res.stderr
    assert [r["system"] for r in read_csv(s / "report.csv")][:2] == ["lotka", "lotka"]


def test_report_over_several_paths_fills_defaults_and_sorts_by_choice(cli, tmp_path):
    a = make_run(tmp_path / "train" / "a", overrides=("seed=1",),
                 choices={"system": "spiral", "model": "small"}, err=0.5)
    b = make_run(tmp_path / "train" / "b", overrides=("model=deep", "seed=1"),
                 choices={"system": "spiral", "model": "deep"}, err=0.2)
    out = tmp_path / "rep"
    res = cli("report", str(a), str(b), "--sort", "error_rel", "--descending", "--out",
              str(out), "--no-plots")
    assert res.exit_code == 0, res.stderr
    table = read_csv(out / "report.csv")
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


@pytest.mark.parametrize("fmt", ["old", "new"])
def test_report_shows_the_vae_metrics(cli, tmp_path, fmt, saved_figures):
    s = tmp_path / "multirun" / "2025-01-01" / "11-00-00-000000"
    for job, (lr, right) in enumerate([("1e-3", 0.004), ("3e-3", 0.001)]):
        make_run(s / str(job), "ecg-vae", fmt, (f"train.lr={lr}",), err=right,
                 losses=(2.0, 1.0 + job))
    res = cli("report", str(s))
    assert res.exit_code == 0, res.stderr
    table = read_csv(s / "report.csv")
    assert {"reconstruction_mse", "gap_mse", "extrapolation_right_mse",
            "nfe_forward_per_iter", "final_loss"} <= set(table[0])
    # Sorted by the right-extrapolation error when there is no dynamics error.
    assert [r["train.lr"] for r in table] == ["3e-3", "1e-3"]
    assert [r["system"] for r in table] == ["mitdb/100", "mitdb/100"]
    assert [float(r["final_loss"]) for r in table] == [2.0, 1.0]
    assert all(float(r["nfe_forward_per_iter"]) == NFE_FORWARD for r in table)
    assert all(r["gap_mse"] not in ("", "-") for r in table)
    assert "mitdb/100" in res.stdout
    (ax,) = saved_figures["report_loss.png"].axes
    assert sorted(line.get_label() for line in ax.get_lines()) == [
        "train.lr=1e-3", "train.lr=3e-3"]


def test_report_figures_credit_the_data_of_the_runs_they_draw(cli, tmp_path, saved_figures):
    ecg = "MIT-BIH Arrhythmia Database (PhysioNet, ODC-By 1.0)"
    s = tmp_path / "sweep"
    make_run(s / "0", "ecg-vae", overrides=("seed=0",), data_license=ecg)
    make_run(s / "1", "ecg-vae", overrides=("seed=1",), data_license=ecg)
    make_run(s / "2", "spiral-vae", overrides=("seed=2",))  # synthetic: no credit
    res = cli("report", str(s))
    assert res.exit_code == 0, res.stderr
    for name in ("report_error.png", "report_loss.png"):
        texts = [t.get_text() for t in saved_figures[name].texts]
        assert texts == [ecg], name  # once, though two runs carry it
    assert (s / "report.md").read_text().endswith(f"\nData: {ecg}\n")
    make_run(tmp_path / "plain" / "0", "spiral-vae")
    saved_figures.clear()
    assert cli("report", str(tmp_path / "plain")).exit_code == 0
    assert saved_figures["report_loss.png"].texts == []
    assert "Data:" not in (tmp_path / "plain" / "report.md").read_text()
