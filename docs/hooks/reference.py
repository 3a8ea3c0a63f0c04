"""The documentation's reference pages, generated from the code at build time (never by hand).

- One configuration page per command: every key with its type and range (from the schema
  each experiment declares) and its default (from the YAML the command composes), and every
  config group's options with the keys each one sets.
- The command-line reference, from the Typer app (itself built from odecli's registry).
- The results page: benchmarks/RESULTS.md, where every benchmark records its measurements.

MkDocs runs `on_files` (mkdocs.yml lists this file under `hooks:`); tests/test_docs.py
calls the same functions and compares the pages with the schemas.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

CONFIG_DIR = "reference/config"


# ------------------------------------------------------------------------ the config pages

def _plain(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    node = OmegaConf.to_container(cfg, resolve=True)
    node.pop("hydra", None)
    return node


def _composed(command: Any, overrides: list[str]) -> dict[str, Any]:
    from odecli.launch.bridge import compose

    return _plain(compose(command, overrides))


def show(value: Any) -> str:
    """A default as YAML writes it (null, true, 1.0e-05, [1, 2])."""
    if isinstance(value, str):
        return value
    return json.dumps(value).replace("NaN", ".nan")


def describe(field: Any) -> str:
    from odecli.fields import Free

    text = field.describe() if not isinstance(field, Free) else (
        "a key: value mapping" if field.mapping else "anything")
    if getattr(field, "nullable", False):
        text += ", or null"
    return text


def rows(schema: Any, node: Any, prefix: str) -> list[tuple[str, str, str]]:
    """(key, type and range, default) of every leaf key under a schema node."""
    from odecli.fields import Schema, Tagged

    if isinstance(schema, Tagged):
        tag = node.get(schema.tag) if isinstance(node, dict) else None
        schema = schema.variants.get(tag, next(iter(schema.variants.values())))
    if type(schema).__name__ == "Trackers" and isinstance(node, dict) and node:
        from odecli.engine.schema import TRACKERS

        return [r for k, v in node.items() for r in rows(TRACKERS[k], v, f"{prefix}.{k}")]
    if not isinstance(schema, Schema) or not isinstance(node, dict):
        return [(prefix, describe(schema), show(node))]
    out: list[tuple[str, str, str]] = []
    for key, field in schema.fields.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(node.get(key), dict) and (isinstance(field, (Schema, Tagged))
                                                or type(field).__name__ == "Trackers"):
            out += rows(field, node[key], path)
        else:
            out.append((path, describe(field), show(node.get(key))))
    return out


def table(entries: list[tuple[str, str, str]]) -> list[str]:
    lines = ["| key | type and range | default |", "|---|---|---|"]
    lines += [f"| `{k}` | {t.replace('|', '/')} | `{d}` |" for k, t, d in entries]
    return lines


def package_of(path: Path, group: str) -> str:
    """Where a group option's keys land: its `# @package` line, else the group's name."""
    for line in path.read_text().splitlines()[:5]:
        if line.startswith("# @package"):
            return line.split(None, 2)[2].strip()
    return group


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    if not isinstance(node, dict) or not node:
        return {prefix: node} if prefix else {}
    out: dict[str, Any] = {}
    for k, v in node.items():
        out.update(flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def node_at(node: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def config_page(name: str) -> str:
    """The configuration reference of one command, as Markdown."""
    from odecli.cli.configs_index import description
    from odecli.paths import config_dir
    from odecli.registry import COMMANDS

    cmd = COMMANDS[name]
    schema = cmd.experiment_class().schema
    defaults = _composed(cmd, [])
    root = config_dir()
    packages = {g: {p.stem: package_of(p, g) for p in sorted((root / g).glob("*.yaml"))}
                for g in cmd.groups if (root / g).is_dir()}
    owned = {pkg for opts in packages.values() for pkg in opts.values() if pkg != "_global_"}
    lines = [f"# `odecli {name}` configuration", "",
             f"{cmd.help} Every key below is checked before a run starts; a value outside its "
             "range is one `error:` line and nothing is written.", "",
             f"Generated from the schemas and `configs/{cmd.config}.yaml` by "
             "`docs/hooks/reference.py`.", "",
             "## Keys of the command", ""]
    own = [r for r in rows(schema, defaults, "")
           if not any(r[0] == o or r[0].startswith(o + ".") for o in owned)]
    lines += table(own)
    for group in cmd.groups:
        if group not in packages:
            continue
        chosen = _choice(root / cmd.config, group)
        lines += ["", f"## Group `{group}`", "",
                  f"Choose with `{group}=OPTION`" + (f" (default: `{chosen}`)." if chosen
                                                    else " (default: none).")]
        for option, pkg in packages[group].items():
            lines += ["", f"### `{group}={option}`", "",
                      description(root / group / f"{option}.yaml") or "", ""]
            cfg = _composed(cmd, [f"{group}={option}"])
            if pkg == "_global_":
                before = flatten(defaults)
                changed = {k for k, v in flatten(cfg).items() if before.get(k, object()) != v}
                picked = [r for r in rows(schema, cfg, "") if r[0] in changed]
                lines += (["Sets (the rest as above):", ""] + table(picked) if picked
                          else ["Sets nothing beyond the defaults above."])
            else:
                field = node_at_schema(schema, pkg)
                lines += table(rows(field, node_at(cfg, pkg), pkg))
    return "\n".join(lines) + "\n"


def node_at_schema(schema: Any, path: str) -> Any:
    for part in path.split("."):
        schema = schema.fields[part]
    return schema


def _choice(primary: Path, group: str) -> str | None:
    import yaml

    data = yaml.safe_load(primary.with_suffix(".yaml").read_text())
    for entry in data.get("defaults", []):
        if isinstance(entry, dict):
            (key, value), = entry.items()
            if key.removeprefix("optional ").strip() == group:
                return None if value is None else str(value)
    return None


def config_index() -> str:
    """The configuration reference's index page: every command, linked."""
    from odecli.registry import COMMANDS

    index = ["# Configuration reference", "",
             "Every command's keys, their types, ranges and defaults, and every config "
             "group's options. Override any of them on the command line as `key=value`, or "
             "in Python as `odecli.run(command, [\"key=value\"])`.", ""]
    index += [f"- [`odecli {n}`]({n}.md): {c.help}" for n, c in COMMANDS.items()]
    return "\n".join(index) + "\n"


# --------------------------------------------------------------------------- the CLI page

def cli_page() -> str:
    """Every command's usage, arguments and options, from the Typer app."""
    import typer
    from typer.cli import get_docs_for_click

    from odecli.cli.app import app

    command = typer.main.get_command(app)
    ctx = typer.Context(command, info_name="odecli")
    text = get_docs_for_click(obj=command, ctx=ctx, name="odecli")
    return ("# Command-line reference\n\nGenerated from the Typer app "
            "(`odecli COMMAND --help` prints the same).\n\n"
            + text.split("\n", 1)[1].replace("\n## ", "\n## "))


# ---------------------------------------------------------------------- the results page

RESULTS = Path(__file__).resolve().parents[2] / "benchmarks" / "RESULTS.md"


def results_page() -> str:
    """benchmarks/RESULTS.md as a page: the measurements live in one file, beside the code
    that makes them, and the site shows that file as it is."""
    text = RESULTS.read_text()
    title, _, rest = text.partition("\n")
    return (f"{title}\n\n!!! note \"Generated\"\n    This page is `benchmarks/RESULTS.md`, "
            "copied at build time; each section names the script, date and machine that "
            "produced it.\n" + rest)


def generators() -> dict[str, Callable[[], str]]:
    """What makes each generated page, by its path under docs/: the names alone cost
    nothing, the config pages compose every option (seconds)."""
    from odecli.registry import COMMANDS

    made: dict[str, Callable[[], str]] = {
        f"{CONFIG_DIR}/{name}.md": functools.partial(config_page, name) for name in COMMANDS}
    made[f"{CONFIG_DIR}/index.md"] = config_index
    made["reference/cli.md"] = cli_page
    made["results.md"] = results_page
    return made


def pages() -> dict[str, str]:
    """Every generated page, by its path under docs/."""
    return {path: make() for path, make in generators().items()}


# A page links benchmarks/RESULTS.md by its path in the repository, which works where the
# markdown is read as it is (GitHub, an editor); on the site that file is results.md.
RESULTS_LINK = re.compile(r"\]\(((?:\.\./)+)benchmarks/RESULTS\.md")


def site_links(markdown: str) -> str:
    """Links to ../benchmarks/RESULTS.md (from any depth) pointed at the site's results.md."""
    return RESULTS_LINK.sub(lambda m: "](" + m.group(1)[3:] + "results.md", markdown)


# ----------------------------------------------------------------------- the MkDocs hook

def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    return site_links(markdown)


def on_files(files: Any, config: Any) -> Any:
    from mkdocs.structure.files import File

    for path, content in pages().items():
        files.append(File.generated(config, path, content=content))
    return files
