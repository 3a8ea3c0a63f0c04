"""The `odecli` command line (Typer). Heavy imports (torch, Hydra) happen inside commands so
`odecli --help` and `odecli list` stay fast."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path

import typer

from odecli import export as export_defaults
from odecli.cli.configs_index import describe_groups
from odecli.dynamics.recover_defaults import DEFAULT_DEGREE, DEFAULT_THRESHOLD, DEGREES
from odecli.errors import one_line
from odecli.registry import COMMANDS, Command

app = typer.Typer(
    name="odecli",
    help="Neural ODE experiment runner: learn dynamics, compare solvers and gradients, train "
    "latent-ODE VAEs on spirals and ECG heartbeats. Runs land in ./outputs (or $ODECLI_OUTPUTS).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

_HYDRA_ARGS = {"allow_extra_args": True, "ignore_unknown_options": True}


def _print_version(value: bool) -> None:
    if value:
        from odecli.version import __version__

        typer.echo(f"odecli {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_print_version,
                                       is_eager=True, help="Print the version and exit.")
          ) -> None:
    """Neural ODE experiment runner."""


OVERRIDES_HELP = ("Hydra overrides: group=option or key=value (the examples above; "
                  "`odecli list` shows every group and key).")
MULTIRUN_HELP = "Sweep: comma-separated values run as separate jobs (system=spiral,lotka)."
CFG_HELP = "Print the composed config (job, hydra or all) instead of running."
OVERWRITE_HELP = ("When hydra.run.dir (or hydra.sweep.dir) already holds a run: move it aside to "
                  "<folder>.replaced-<time> and start afresh (nothing is deleted).")


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _run_command(name: str, overrides: list[str] | None, multirun: bool, cfg: str | None,
                 package: str | None, resolve: bool, info: str | None,
                 overwrite: bool = False) -> None:
    from odecli.launch import bridge as hydra_bridge

    if cfg is not None and cfg not in ("job", "hydra", "all"):
        _fail(f"--cfg takes job, hydra or all, got '{cfg}'")
    _guarded(lambda: hydra_bridge.launch(name, list(overrides or []), multirun=multirun,
                                         cfg=cfg, package=package, resolve=resolve, info=info,
                                         overwrite=overwrite))


def _guarded(work: Callable[[], object]) -> None:
    """Run a command body: user errors as one line with their exit code, Ctrl-C as 130,
    SIGTERM during training as 143 (the run says how to resume), bugs as one line."""
    from odecli.errors import Interrupted, OdecliError

    try:
        work()
    except Interrupted as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(exc.exit_code) from None
    except OdecliError as exc:
        _fail(str(exc), getattr(exc, "exit_code", 2))
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130) from None
    except OSError as exc:  # the machine, not odecli: a failure (exit 1), named, one line
        where = f" {exc.filename}" if exc.filename else ""
        _fail(f"cannot use{where}: {exc.strerror or one_line(exc)}", 1)
    except Exception as exc:  # a bug, not bad input: still one line unless asked for more
        if os.environ.get("ODECLI_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set ODECLI_DEBUG=1 for the "
              f"traceback)", 1)


def _command_help(cmd: Command) -> str:
    """A command's --help, from its registry entry."""
    parts = [cmd.help]
    if cmd.examples:
        parts.append("Examples:" if len(cmd.examples) > 1 else "Example:")
        parts += [f"  {e}" for e in cmd.examples]
    parts += list(cmd.details)
    parts.append(f"Config groups: {', '.join(cmd.groups)}. Run `odecli list` for every option.")
    return "\n\n".join(parts)


def _hydra_command(cmd: Command) -> None:
    """Register a command that hands its overrides and Hydra flags to the bridge."""

    def command(
        overrides: list[str] = typer.Argument(None, help=OVERRIDES_HELP, show_default=False),
        multirun: bool = typer.Option(False, "--multirun", "-m", help=MULTIRUN_HELP),
        cfg: str = typer.Option(None, "--cfg", "-c", help=CFG_HELP),
        package: str = typer.Option(None, "--package", "-p",
                                    help="With --cfg: show this node."),
        resolve: bool = typer.Option(False, "--resolve",
                                     help="With --cfg: resolve interpolations."),
        info: str = typer.Option(None, "--info", help="Hydra's --info (all, config, "
                                 "defaults, defaults-tree, plugins, searchpath)."),
        overwrite: bool = typer.Option(False, "--overwrite", help=OVERWRITE_HELP),
    ) -> None:
        _run_command(cmd.name, overrides, multirun, cfg, package, resolve, info, overwrite)

    command.__name__ = cmd.name.replace("-", "_")
    app.command(cmd.name, context_settings=_HYDRA_ARGS, help=_command_help(cmd),
                short_help=cmd.help)(command)


for _cmd in COMMANDS.values():
    _hydra_command(_cmd)


@app.command("report", help=(
    "Compare runs: a table, report.csv, report.md and figures.\n\n"
    "One row per run folder found under each PATH (single runs, sweeps, resumed runs): the "
    "overrides that differ, status, failure reason and metrics. Writes report.csv, "
    "report.md, report_error.png and report_loss.png.\n\n"
    "Example: odecli report outputs/multirun/2025-01-31/10-00-00-000000 --sort error_rel"))
def report_cmd(
    paths: list[str] = typer.Argument(..., help="Run folders or folders holding runs.",
                                      show_default=False),
    sort: str = typer.Option(None, "--sort", "-s", help="Metric or override to sort by "
                             "(default: extrap_error_rel when present)."),
    descending: bool = typer.Option(False, "--descending", help="Largest first."),
    out: str = typer.Option(None, "--out", "-o", help="Where to write the report files "
                            "(default: the PATH, or the folder common to several)."),
    plots: bool = typer.Option(True, "--plots/--no-plots", help="Draw the figures."),
) -> None:
    def work() -> None:
        from odecli.cli import report

        text, files = report.report(list(paths), sort=sort, descending=descending, out=out,
                                    plots=plots)
        typer.echo(text)
        typer.echo(f"\nwrote {', '.join(str(f) for f in files)}")

    _guarded(work)


@app.command("eval", context_settings=_HYDRA_ARGS, help=(
    f"Re-evaluate a trained run ({', '.join(COMMANDS)}) from its checkpoint, without "
    "retraining.\n\n"
    "Optionally with another solver or tolerance, device, or (train) a longer extrapolation "
    "window; VAE runs are scored with their best state on the held-out test set. "
    "Results (eval.json) "
    "and redrawn figures go to RUN/eval/<date>/<time>/.\n\n"
    "Examples:\n\n"
    "  odecli eval outputs/train/2025-01-31/10-00-00-000000_spiral\n\n"
    "  odecli eval RUN solver=rk4 solver.step_size=0.01 system.extrapolate=1.0"))
def eval_cmd(
    run: str = typer.Argument(..., help="The run folder.", show_default=False),
    overrides: list[str] = typer.Argument(None, help="solver=..., solver.rtol=..., "
                                          "system.extrapolate=..., system.y0=..., "
                                          "device=...",
                                          show_default=False),
    out: str = typer.Option(None, "--out", "-o", help="Write here instead of RUN/eval/: a "
                            "new or empty folder (its parent must exist), never a run "
                            "folder."),
    overwrite: bool = typer.Option(False, "--overwrite", help="With --out: write into a "
                                   "folder that already holds files (an earlier eval)."),
) -> None:
    def work() -> None:
        from odecli.cli.evaluate import evaluate_run
        from odecli.launch.bridge import summary, summary_keys

        result, out_dir = evaluate_run(run, list(overrides or []), out, overwrite)
        keys = [k for k in summary_keys(COMMANDS[result["command"]].experiment_class())
                if k not in ("seconds_per_iter", "wall_seconds")]
        typer.echo(f"eval: {result['status']}  {summary(result, (*keys, 'nfe_eval'))}\n"
                   f"  results: {out_dir}")

    _guarded(work)


@app.command("sample", context_settings=_HYDRA_ARGS, help=(
    "Draw points from a trained `odecli cnf` run (its best validation state) into a file.\n\n"
    "FILE ends in .npy (an (N, 2) array) or .csv (x,y). Optional overrides change how the "
    "flow is integrated (solver=..., solver.rtol=..., device=...).\n\n"
    "Example: odecli sample outputs/cnf/2025-01-31/10-00-00-000000 --n 10000 --out s.npy"))
def sample_cmd(
    run: str = typer.Argument(..., help="The cnf run folder.", show_default=False),
    overrides: list[str] = typer.Argument(None, help="solver=..., solver.rtol=..., device=...",
                                          show_default=False),
    n: int = typer.Option(..., "--n", "-n", help="How many points.", show_default=False),
    out: str = typer.Option(..., "--out", "-o", help="The .npy or .csv file to write.",
                            show_default=False),
    seed: int = typer.Option(0, "--seed", help="Seed of the base draws."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace FILE if it exists "
                                   "(a folder is never replaced)."),
) -> None:
    def work() -> None:
        from odecli.cli.sample import sample_run

        path = sample_run(run, n, out, seed, list(overrides or []), overwrite)
        typer.echo(f"sample: wrote {n} points to {path}")

    _guarded(work)


@app.command("recover", help=(
    "Equations back from a trained `odecli train` run: a sparse polynomial regression "
    "(SINDy, PySINDy: pip install 'odecli\\[recover]') of the learned field at the data's "
    "states.\n\n"
    "Prints the recovered equations (under model.known: the missing term the network "
    "learned) and writes recover.json (terms, coefficients, R^2 against the network, and "
    "where the truth is known each coefficient's error and any spurious term) and "
    "recover.png (the recovered system's trajectory against the data) into RUN, or --out. "
    "The coefficients kept are then refitted to the observed trajectories themselves "
    "(L-BFGS through the solver; --no-refit skips it), which pins them to the data rather "
    "than to the network's rates.\n\n"
    "Example: odecli recover outputs/train/2025-01-31/10-00-00-000000_lotka --degree 3"))
def recover_cmd(
    run: str = typer.Argument(..., help="The train run folder.", show_default=False),
    degree: int = typer.Option(DEFAULT_DEGREE, "--degree", "-d", help="Degree of the "
                               f"polynomial library ({DEGREES[0]} to {DEGREES[1]})."),
    threshold: float = typer.Option(DEFAULT_THRESHOLD, "--threshold", "-t", help="Drop a "
                                    "term whose RMS size over the data is below this share "
                                    "of its equation's RMS rate, in [0, 1)."),
    out: str = typer.Option(None, "--out", "-o", help="Folder for recover.json and "
                            "recover.png (default: RUN)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing "
                                   "recover.json and recover.png there."),
    refit: bool = typer.Option(True, "--refit/--no-refit", help="Refit the kept "
                               "coefficients to the observed trajectories."),
) -> None:
    def work() -> None:
        from odecli.cli.recover import recover_run, report

        summary, path = recover_run(run, degree, threshold, out, overwrite, refit)
        typer.echo(report(summary, path))

    _guarded(work)


@app.command("export", help=(
    "Write a trained model to an ONNX or torch.export (.pt2) file, checked as it is written."
    "\n\n"
    "`train` runs: --what trajectory (initial states y0 (batch, dim) and times t -> the "
    "trajectory (times, batch, dim)) or --what field (t, y -> dy/dt); `classify` runs: images "
    "-> logits. The solve is unrolled: --steps fixed steps of --solver between consecutive "
    "times. The file is run (onnxruntime, torch.export.load) on the run's data and compared "
    "with odecli's adaptive reference solve; an error over --tolerance refuses the export "
    "(--force writes it, the error in its name). export.json beside the file records it."
    "\n\n"
    "Example: odecli export outputs/train/2025-01-31/10-00-00-000000_lotka --out lotka.onnx"))
def export_cmd(
    run: str = typer.Argument(..., help="The run folder (train or classify).",
                              show_default=False),
    out: str = typer.Option(..., "--out", "-o", help="The file to write: .onnx or .pt2.",
                            show_default=False),
    fmt: str = typer.Option(None, "--format", "-f", help="onnx or pt2 (default: from --out)."),
    what: str = typer.Option(None, "--what", help="train: trajectory (default) or field."),
    solver: str = typer.Option(export_defaults.DEFAULT_SOLVER, "--solver",
                               help="A fixed-step method: euler, midpoint, heun2, heun3, rk4."),
    steps: int = typer.Option(export_defaults.DEFAULT_STEPS, "--steps",
                              help="Fixed steps between consecutive output times."),
    tolerance: float = typer.Option(export_defaults.DEFAULT_TOLERANCE, "--tolerance",
                                    help="Largest max absolute error accepted."),
    force: bool = typer.Option(False, "--force", help="Write an export over the tolerance "
                               "(its error in the file name and metadata)."),
) -> None:
    def work() -> None:
        from odecli.export import core

        req = core.check_request(run, out, fmt, what, solver, steps, tolerance, force)
        typer.echo(core.summary(core.export_run(req)))

    _guarded(work)


@app.command("list")
def list_configs(
    group: str = typer.Argument(None, help="Show only this group (system, model, ...)."),
) -> None:
    """List every config group with its options and what each one is."""
    from odecli.paths import config_dir

    try:
        text = describe_groups(config_dir(), group)
    except KeyError as exc:
        _fail(str(exc.args[0]))
    typer.echo(text)


def main() -> None:
    """Console-script entry point: usage errors (`--n abc`, a misspelt command) as one
    `error:` line, exit 2, instead of click's boxed usage text."""
    try:  # typer >= 0.20 carries its own copy of click
        from typer._click import exceptions as click
    except ImportError:
        from click import exceptions as click  # type: ignore[no-redef]

    if len(sys.argv) < 2:  # bare `odecli`: the help, as click shows it
        app()
        return
    try:
        code = app(standalone_mode=False)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "odecli"
        typer.echo(f"error: {one_line(exc.format_message())} (see `{where} --help`)",
                   err=True)
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        typer.echo(f"error: {one_line(exc.format_message())}", err=True)
        sys.exit(exc.exit_code)
    except typer.Abort:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:  # `odecli list | head`
        sys.stderr.close()
        return
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()


__all__ = ["app", "main", "Path"]
