"""Make the documentation's figures from real runs: `python docs/figures.py`.

Each figure in docs/img/ is copied from the run folder of a real `odecli.run` (never edited by
hand); docs/img/figures.json records, for every figure, the command line that made it, the
run's headline metrics, the date and the odecli version. The runs are the commands' defaults
except where a shorter run draws the same figure (the overrides say so), so the whole script
takes a few minutes on one CPU core.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

IMG = Path(__file__).resolve().parent / "img"

# (command, overrides, {figure in the run folder: name in docs/img}, metrics to record)
RUNS: list[tuple[str, list[str], dict[str, str], tuple[str, ...]]] = [
    ("train", ["system=lotka"],
     {"phase.png": "train_phase.png", "time.png": "train_time.png",
      "vector_field.png": "train_vector_field.png", "loss.png": "train_loss.png"},
     ("error_rel", "extrap_error_rel", "wall_seconds")),
    ("train", ["system=lorenz"], {"phase.png": "lorenz_phase.png"},
     ("error_rel", "extrap_error_rel", "wall_seconds")),
    ("train", ["system=hare_lynx"], {"time.png": "hare_lynx_time.png"},
     ("error_rel", "wall_seconds")),
    ("spiral-vae", [], {"spiral_vae.png": "spiral_vae.png"},
     ("reconstruction_mse", "wall_seconds")),
    ("cnf", ["cnf_data=moons", "train.niters=400"], {"cnf_density.png": "cnf_density.png"},
     ("test_nll", "nll_gap", "wall_seconds")),
    ("classify", [], {"confusion.png": "classify_confusion.png",
                      "tradeoff.png": "classify_tradeoff.png"},
     ("test_accuracy", "wall_seconds")),
    ("cde", [], {"confusion.png": "cde_confusion.png", "curves.png": "cde_curves.png"},
     ("test_accuracy", "wall_seconds")),
    # recover.png: `odecli recover RUN` on the run (RECOVER below)
    ("train", ["experiment=lotka_ude", "system.t1=5", "system.data_size=100",
               "system.extrapolate=1.0"], {"recover.png": "recover_ude.png"},
     ("missing_term_error_rel", "extrap_error_rel", "wall_seconds")),
]
RECOVER = "recover.png"  # a figure of `odecli recover` on the run, not of the run itself


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=None,
                        help="figure names (docs/img/NAME) to remake; default all")
    args = parser.parse_args(argv)

    import torch

    import odecli

    torch.set_num_threads(1)
    IMG.mkdir(exist_ok=True)
    record_path = IMG / "figures.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (command, overrides, figures, keys) in enumerate(RUNS):
            if args.only is not None and not set(figures.values()) & set(args.only):
                continue
            line = " ".join(["odecli", command, *overrides])
            print(f"{line} ...", flush=True)
            run = odecli.run(command, [*overrides, "quiet=true"], run_dir=Path(tmp) / str(i))
            metrics = {k: run.metrics.get(k) for k in keys if k in run.metrics}
            if RECOVER in figures:
                rec = run.model.recover()
                rec.figure(run.run_dir / RECOVER)
                line += "; odecli recover RUN"
                metrics["refitted_extrap_error_rel"] = rec.summary()["trajectory"][
                    "refitted_extrap_error_rel"]
            for src, dst in figures.items():
                shutil.copyfile(run.run_dir / src, IMG / dst)
                record[dst] = {"command": line, "metrics": metrics,
                               "date": datetime.date.today().isoformat(),
                               "odecli": odecli.__version__,
                               "machine": f"{platform.machine()} CPU, 1 thread"}
            print(f"  {metrics}", flush=True)
    record_path.write_text(json.dumps(dict(sorted(record.items())), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
