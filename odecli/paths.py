"""Where odecli's config tree lives, found without importing Hydra or torch, and its YAML
defaults read as plain values; paths made absolute with one line when they cannot be."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from odecli.errors import OdecliError


def config_dir() -> Path:
    """The configs/ tree: the one of the source checkout the code was imported from, else
    the packaged `odecli.configs`. A checkout's own tree comes first because an editable
    install maps `odecli.configs` to the checkout it was made from: a second checkout (a git
    worktree) run with that environment would otherwise run its own code on the first
    checkout's configs, silently."""
    checkout = Path(__file__).resolve().parents[1]
    own = checkout / "configs"
    has_own = (own / "train.yaml").exists()
    if has_own and _is_odecli_project(checkout):
        return own
    spec = importlib.util.find_spec("odecli.configs")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "train.yaml").exists():
                return Path(location)
    if has_own:
        return own
    raise OdecliError("cannot find odecli's configs/ folder; reinstall odecli")


def _is_odecli_project(folder: Path) -> bool:
    """Whether folder is odecli's source tree (its pyproject.toml names the project), so
    that a stray configs/ beside an installed package (site-packages) is never taken."""
    try:
        text = (folder / "pyproject.toml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return 'name = "odecli"' in text


def resolved(value: str | Path) -> Path:
    """A path made absolute, or one line when it cannot be (a symlink loop)."""
    try:
        return Path(value).expanduser().resolve()
    except (RuntimeError, OSError) as exc:  # RuntimeError: Python < 3.13's "Symlink loop"
        raise OdecliError(f"cannot follow the path {value}: {exc}; a symbolic link in it "
                          f"points back at itself (see `ls -l` along the path)") from None


@functools.cache
def _load_yaml(relative: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(config_dir() / relative), resolve=False)


def yaml_node(relative: str, key: str | None = None) -> dict[str, Any]:
    """A node of a YAML file under configs/ (e.g. "system/spiral.yaml", "system"), as plain
    values. Builders called with a partial node (tests, scripts) take the keys it lacks from
    here, so even their defaults live only in the YAML."""
    import copy

    conf = _load_yaml(relative)
    node = conf if key is None else conf[key]
    return copy.deepcopy(node)
