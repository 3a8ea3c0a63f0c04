"""A sweep's configs composed once per kind of job, the others derived from it.

Why: Hydra composes a config from scratch for every job, and odecli's validation, Hydra's
sweeper (`validate_batch_is_legal`) and the launcher each did it again: ~0.1-0.3 s a
composition, three per job, most of a 32-seed sweep's start-up. Jobs that differ only in
plain values (`seed=3` for `seed=0`, `train.lr=0.02`) have configs that differ only in those
values, so one composed config per kind of job is enough: the others are copies with the
values set (`derive`). The first derivation from each composed config is checked once
against Hydra's own composition (`Composer`); a kind of job whose derivation differs is
composed every time, as before.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

_ABSENT = object()
# Override kinds whose plain value a derived config may change: `key=v`, and `+key=v`,
# `++key=v` (the base config was composed with the key added too).
_PLAIN = ("CHANGE", "ADD", "FORCE_ADD")


def derive(base: Any, base_overrides: list[str], overrides: list[str]) -> Any | None:
    """A job's config made from another's when the two differ only in plain values
    (`seed=3` for `seed=0`, `train.lr=0.02`), without composing it again; None when they
    differ in anything else (a group choice, a key only one adds, an interpolation,
    Hydra's own keys)."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf, open_dict

    if len(base_overrides) != len(overrides):
        return None
    parser = OverridesParser.create()
    changes: list[tuple[str, Any]] = []
    for a, b in zip(base_overrides, overrides, strict=True):
        if a == b:
            continue
        try:
            oa, ob = parser.parse_override(a), parser.parse_override(b)
        except Exception:
            return None
        key, value = ob.key_or_group, ob.value()
        if (oa.key_or_group != key or ob.package is not None or ob.type != oa.type
                or ob.type.name not in _PLAIN or ob.is_hydra_override() or "/" in key
                or "${" in b or ob.is_sweep_override() or isinstance(value, (dict, list))):
            return None
        current = OmegaConf.select(base, key, default=_ABSENT)
        if current is _ABSENT or OmegaConf.is_config(current):
            return None
        changes.append((key, value))
    cfg = copy.deepcopy(base)
    task = [str(o) for o in base.hydra.overrides.task]
    swap = dict(zip(base_overrides, overrides, strict=True))
    if any(o not in swap for o in task):
        return None
    with open_dict(cfg):
        for key, value in changes:
            OmegaConf.update(cfg, key, value, merge=True)
        cfg.hydra.overrides.task = [swap[o] for o in task]
        apps = list(parser.parse_overrides(list(cfg.hydra.overrides.task)))
        job = cfg.hydra.job
        job.override_dirname = get_overrides_dirname(
            overrides=apps, kv_sep=job.config.override_dirname.kv_sep,
            item_sep=job.config.override_dirname.item_sep,
            exclude_keys=job.config.override_dirname.exclude_keys)
    return cfg


def same(a: Any, b: Any) -> bool:
    """Whether two composed configs are equal but for what differs per process and job."""
    from omegaconf import OmegaConf

    def plain(c: Any) -> Any:
        d = OmegaConf.to_container(c, resolve=False)
        assert isinstance(d, dict)
        d["hydra"].pop("runtime", None)  # cwd, versions and sources: the same process
        d["hydra"]["job"].pop("id", None)  # set per job after composing
        d["hydra"]["job"].pop("num", None)
        return d

    return bool(plain(a) == plain(b))


@dataclass
class _Base:
    """A composed config others are derived from; `checked`: whether derivations from it
    equal Hydra's composition (None: not compared yet)."""

    overrides: list[str]
    cfg: Any
    checked: bool | None = None


class Composer:
    """`compose(overrides)` (a full composition) called once per kind of job."""

    def __init__(self, compose: Callable[[list[str]], Any]) -> None:
        self.compose = compose
        self.bases: list[_Base] = []
        self.compositions = 0  # how many times `compose` ran (tests, benchmarks)

    def _composed(self, overrides: list[str]) -> Any:
        self.compositions += 1
        return self.compose(overrides)

    def __call__(self, overrides: Sequence[str]) -> Any:
        """The job's config: a fresh object the caller may change."""
        overrides = list(overrides)
        for base in reversed(self.bases):
            if base.checked is False:
                continue
            try:
                derived = derive(base.cfg, base.overrides, overrides)
            except Exception:  # a bad value: Hydra's own composition says what is wrong
                derived = None
            if derived is None:
                continue
            if base.checked is None:
                composed = self._composed(overrides)
                base.checked = same(derived, composed)
                return composed
            return derived
        composed = self._composed(overrides)
        self.bases.append(_Base(overrides, copy.deepcopy(composed)))
        return composed


class DerivingLoader:
    """Hydra's config loader with `load_sweep_config` through a `Composer` (one per master
    config); everything else is the loader's own. `take` hands the launcher the config the
    sweeper's check already made for the same job instead of making it again."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader
        self.composers: dict[int, tuple[Any, Composer]] = {}
        self.made: dict[tuple[int, tuple[str, ...]], Any] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def _composer(self, master_config: Any) -> Composer:
        key = id(master_config)
        if key not in self.composers:  # the master is kept, so its id stays its own
            self.composers[key] = (master_config, Composer(
                lambda o: self.loader.load_sweep_config(master_config, o)))
        return self.composers[key][1]

    def load_sweep_config(self, master_config: Any, sweep_overrides: list[str]) -> Any:
        cfg = self._composer(master_config)(sweep_overrides)
        # the sweeper's check only reads it: the launcher may have this very object
        self.made[(id(master_config), tuple(sweep_overrides))] = cfg
        return cfg

    def take(self, master_config: Any, sweep_overrides: Sequence[str]) -> Any:
        """The job's config, made once for the sweeper's check and the launcher."""
        made = self.made.pop((id(master_config), tuple(sweep_overrides)), None)
        return made if made is not None else self.load_sweep_config(master_config,
                                                                    list(sweep_overrides))

    @property
    def compositions(self) -> int:
        return sum(c.compositions for _, c in self.composers.values())
