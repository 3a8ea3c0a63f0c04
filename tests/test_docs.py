"""Documentation that cannot drift from the code: every `odecli ...` command line in the README
and the docs composes (its overrides exist and pass the schemas), and the generated
configuration reference lists every key with its type, range and default."""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import pytest

from odecli.fields import job_node
from odecli.launch.bridge import compose
from odecli.launch.derived import Composer
from odecli.launch.loading import LOAD_KEYS
from odecli.launch.overrides import key, within
from odecli.launch.sweeps import sweep_jobs
from odecli.registry import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "hooks"))
import reference  # noqa: E402

READERS = {"eval": LOAD_KEYS, "sample": ("solver", "device")}
# commands that take a run folder and options, no overrides
OPTIONS_ONLY = ("recover", "export")
FENCE = re.compile(r"^(\s*)```")


def command_lines(text: str) -> list[str]:
    """`odecli ...` lines inside fenced code blocks (a `$ ` prompt and `# comments` dropped;
    a trailing backslash joins the next line)."""
    out, inside, pending = [], False, ""
    for line in text.splitlines():
        if FENCE.match(line):
            inside = not inside
            continue
        if not inside:
            continue
        line = pending + line.strip().removeprefix("$ ")
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        for part in line.split("&&"):
            part = part.strip()
            if part.startswith("odecli ") or part.startswith("python -m odecli "):
                out.append(part.removeprefix("python -m ").split(" #")[0].strip())
    return out


# what `eval` may change besides the readers' own keys: each command's eval_keys
EVAL_KEYS = tuple(k for c in COMMANDS.values() for k in c.eval_keys)


def problems(line: str) -> list[str]:
    """What is wrong with one documented command line (empty: it composes)."""
    words = shlex.split(line)[1:]
    if not words or words[0] in ("--help", "-h", "list", "report"):
        return []
    name, rest = words[0], words[1:]
    if name in OPTIONS_ONLY:  # no overrides: its options must parse as the CLI parses them
        return options_problems(line, name, rest)
    if name in READERS:
        overrides = [w for w in rest[1:] if "=" in w and not w.startswith("-")]
        return [f"{line}: `odecli {name}` cannot change '{o}'" for o in overrides
                if not within(key(o), (*READERS[name], *EVAL_KEYS))]
    if name not in COMMANDS:
        return [f"{line}: no command '{name}'"]
    cmd = COMMANDS[name]
    flags = {"-m", "--multirun", "--overwrite", "--help", "-h", "--resolve"}
    args, skip = [], False
    for w in rest:
        if skip:
            skip = False
        elif w in ("--cfg", "-c", "--package", "-p", "--info"):
            skip = True
        elif w not in flags:
            args.append(w)
    jobs = sweep_jobs(args) if ("-m" in rest or "--multirun" in rest) else [args]
    # a sweep's jobs as odecli's launchers make them: composed once per kind of job, the
    # others derived (`seed=range(32)`: 2 compositions, not 32)
    composer = Composer(lambda overrides: compose(cmd, overrides, with_hydra=True))
    found = []
    for job in jobs:
        try:
            cfg = composer(job)
            cmd.experiment_class().schema.check(job_node(cfg))
        except Exception as exc:  # noqa: BLE001 - reported, one line per command
            found.append(f"{line}: {' '.join(str(exc).split())[:200]}")
    return found


def options_problems(line: str, name: str, rest: list[str]) -> list[str]:
    """A documented line of a command without overrides, parsed by its Typer command."""
    import typer.main

    from odecli.cli import app

    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    try:
        command.make_context(name, list(rest))
    except Exception as exc:  # noqa: BLE001 - Typer's (vendored) click usage errors
        return [f"{line}: {getattr(exc, 'format_message', exc.__str__)()}"]
    return []


def documented() -> list[tuple[str, str]]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [(str(f.relative_to(ROOT)), line) for f in files
            for line in command_lines(f.read_text())]


def test_the_docs_hold_command_lines_to_check():
    names = {shlex.split(line)[1] for _, line in documented()}
    assert set(COMMANDS) <= names, set(COMMANDS) - names


@pytest.mark.parametrize("where,line", documented())
def test_every_documented_command_line_composes(where, line):
    assert problems(line) == []


def test_a_planted_wrong_key_fails_the_check():
    text = "```bash\nodecli train system=lotka train.nitres=5\nodecli eval RUN model=deep\n```"
    lines = command_lines(text)
    assert lines == ["odecli train system=lotka train.nitres=5", "odecli eval RUN model=deep"]
    assert "train.nitres" in problems(lines[0])[0]
    assert "cannot change 'model=deep'" in problems(lines[1])[0]
    assert problems("odecli train -m system=lotka,spiral train.lr=-1")  # every job checked
    assert "No such option" in problems("odecli recover RUN --degre 3")[0]
    assert problems("odecli recover RUN --degree two")
    assert problems("odecli recover RUN system=lotka")  # takes no overrides
    assert problems("odecli recover RUN --degree 3 --threshold 0.1 --out r") == []


@pytest.mark.parametrize("name", list(COMMANDS))
def test_the_reference_lists_every_key_with_its_type_range_and_default(name):
    from omegaconf import OmegaConf

    page = reference.config_page(name)
    cmd = COMMANDS[name]
    cfg = OmegaConf.to_container(compose(cmd, []), resolve=True)
    for path, kind, default in reference.rows(cmd.experiment_class().schema, cfg, ""):
        assert f"| `{path}` | {kind.replace('|', '/')} | `{default}` |" in page, path
    leaves = set(reference.flatten(cfg))
    listed = set(re.findall(r"^\| `([^`]+)` \|", page, flags=re.M))
    assert leaves <= listed | {k for k in leaves if k.startswith("logger")}
    from odecli.paths import config_dir

    for group in cmd.groups:
        for option in sorted((config_dir() / group).glob("*.yaml")):
            assert f"### `{group}={option.stem}`" in page, (group, option.stem)


def test_a_field_is_described_by_its_own_rule():
    from odecli.engine.schema import TRAIN

    rows = dict((k, t) for k, t, _ in reference.rows(TRAIN, {"lr": 0.1, "niters": 5}, "train"))
    assert rows["train.lr"] == "a positive number"
    assert rows["train.niters"] == "a positive integer"


def nav_pages(node: object) -> list[str]:
    """Every page mkdocs.yml's nav lists."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [p for v in node.values() for p in nav_pages(v)]
    if isinstance(node, list):
        return [p for v in node for p in nav_pages(v)]
    return []


def test_the_nav_lists_every_page_and_every_page_exists():
    import yaml

    class Loader(yaml.SafeLoader):  # mkdocs.yml may carry !!python tags: ignore them
        pass

    Loader.add_multi_constructor("", lambda loader, suffix, node: None)
    nav = nav_pages(yaml.load((ROOT / "mkdocs.yml").read_text(), Loader=Loader)["nav"])
    written = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")
               if "hooks" not in p.parts}
    generated = set(reference.generators())
    assert sorted(set(nav) - written - generated) == []  # no dead entry
    assert sorted((written | generated) - set(nav)) == []  # no page the reader cannot reach


LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def test_every_relative_link_of_a_written_page_resolves_as_read_raw():
    """A page read as it is (GitHub, an editor) links files that exist, or a reference page
    made from the code at build time (no file holds it); the results page has its file,
    benchmarks/RESULTS.md, and the site's hook points that link at the generated page."""
    docs = ROOT / "docs"
    only_built = {docs / p for p in reference.generators() if p != "results.md"}
    dead = []
    for page in docs.rglob("*.md"):
        for target in LINK.findall(page.read_text()):
            if "://" in target or target.startswith(("mailto:", "/")):
                continue
            path = Path(os.path.normpath(page.parent / target))
            if not path.exists() and path not in only_built:
                dead.append(f"{page.relative_to(ROOT)}: {target}")
    assert dead == []
    assert reference.site_links("[r](../benchmarks/RESULTS.md#x) [s](../../benchmarks/"
                                "RESULTS.md)") == "[r](results.md#x) [s](../results.md)"
