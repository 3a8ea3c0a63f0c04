"""Where odecli's config tree lives, found without importing Hydra or torch, and its YAML
defaults read as plain values; paths made absolute with one line when they cannot be."""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from odecli.errors import OdecliError


def config_dir() -> Path:
    """The configs/ tree: packaged as `odecli.configs`, or beside the package in a checkout."""
    spec = importlib.util.find_spec("odecli.configs")
    if spec is not None and spec.submodule_search_locations:
        for location in spec.submodule_search_locations:
            if (Path(location) / "train.yaml").exists():
                return Path(location)
    here = Path(__file__).resolve().parents[1] / "configs"
    if (here / "train.yaml").exists():
        return here
    raise OdecliError("cannot find odecli's configs/ folder; reinstall odecli")


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
