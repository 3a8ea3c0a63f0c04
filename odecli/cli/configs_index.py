"""What the config groups offer (`odecli list`), without importing Hydra or torch.

`odecli list` and `--help` only read file names and each YAML file's first comment line, so
they stay fast (no torch import on those paths).
"""

from __future__ import annotations

from pathlib import Path

from odecli.registry import COMMANDS, groups_used


def description(path: Path) -> str:
    """First comment line of a YAML file that is not a Hydra directive."""
    for line in path.read_text().splitlines():
        text = line.strip()
        if text.startswith("#") and not text.startswith("# @"):
            return text.lstrip("# ").strip()
        if text and not text.startswith("#"):
            break
    return ""


def options(root: Path, group: str) -> list[tuple[str, str]]:
    return [(p.stem, description(p)) for p in sorted((root / group).glob("*.yaml"))]


def describe_groups(root: Path, only: str | None = None) -> str:
    """Plain-text listing: each group, its options and a one-line description of each."""
    groups = [g for g in groups_used() if (root / g).is_dir()]
    if only is not None:
        if only not in groups:
            raise KeyError(f"unknown config group '{only}'; choose one of: {', '.join(groups)}")
        groups = [only]
    lines: list[str] = []
    for group in groups:
        opts = options(root, group)
        width = max(len(name) for name, _ in opts)
        lines.append(f"{group}:")
        lines.extend(f"  {name:<{width}}  {desc}" for name, desc in opts)
        lines.append("")
    users = sorted({cmd.name for cmd in COMMANDS.values() for g in groups if g in cmd.groups})
    command = users[0] if len(users) == 1 else "COMMAND"
    lines.append(f"Use as `odecli {command} GROUP=OPTION key=value ...`; `odecli {command} "
                 "--cfg job GROUP=OPTION` shows the composed config.")
    if command == "COMMAND" and only is None:
        lines.append("Groups by command: " + "; ".join(
            f"{cmd.name}: {', '.join(g for g in cmd.groups if g in groups)}"
            for cmd in COMMANDS.values()))
    return "\n".join(lines)
