"""A run folder's config is the truth for that run, whatever odecli's defaults are now.

`resume=`, `odecli eval`, `odecli.load` (and what builds on it: export, recover, report)
re-compose a run from its stored overrides. When odecli has since changed a default (a
learning rate, an output scale, a whole config group's choice), that composition no longer
says what the run was trained with, and the compatibility check would refuse the run:
every older run of that configuration lost. `pins()` gives the overrides that hold the run's
own values where today's composition differs, so the run means what it meant when it ran.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from odecli.engine.checkpoint import flatten
from odecli.launch import overrides as ov

if TYPE_CHECKING:
    from odecli.registry import Command

# Keys never pinned: bookkeeping, and what a caller may change anyway (`keep`).
SKIP = ("hydra", "resume", "quiet", "plots")


def for_run(cmd: Command, base: Sequence[str], stored_config: Mapping[str, Any],
            keep: Sequence[str], user: Sequence[str]) -> list[str]:
    """`pins()` of a run (its checkpoint's config `stored_config`) that will be composed from
    the overrides `base` (its stored ones, or its sweep job's) with the pins and `user` on
    top; none where `base` no longer composes (that composition then says why, in one
    line)."""
    from omegaconf import OmegaConf

    from odecli.launch.composing import compose

    base = [o for o in base if ov.key(o) != "resume" and not ov.key(o).startswith("hydra")]
    try:
        today = OmegaConf.to_container(compose(cmd, base), resolve=True)
        # the bare defaults only where the run lacks a key (a run of this odecli lacks none)
        lacks = set(flatten(today)) - set(flatten(stored_config))
        bare = OmegaConf.to_container(compose(cmd, []), resolve=True) if lacks else {}
    except Exception:  # noqa: BLE001 - reported by the composition that follows
        return []
    return pins(stored_config, today, bare, keep, user)  # type: ignore[arg-type]


def pins(stored_config: Mapping[str, Any], today: Mapping[str, Any],
         bare: Mapping[str, Any], keep: Sequence[str], user: Sequence[str]) -> list[str]:
    """`key=value` overrides that give the run its own values where `today` (its stored
    overrides composed now, resolved) differs from `stored_config` (resolved, as its
    checkpoint holds it). A key the run lacks (odecli gained it later) gets the command's
    bare default (`bare`: composed without overrides), which keeps what odecli did before
    the key, where a preset now sets it otherwise; a key only the run has is left to the
    compatibility check (refused). Left out too: keys within `keep` or SKIP, keys the `user`
    overrides set (the check judges those), and values an override cannot carry exactly."""
    a, b, c = flatten(stored_config), flatten(today), flatten(bare)
    mine = {ov.key(o) for o in user}
    out = []
    for key in sorted(b):
        own = a[key] if key in a else c.get(key, b[key])
        if own == b[key] or ov.within(key, (*SKIP, *keep, *mine)):
            continue
        text = _literal(own)
        if text is not None:
            out.append(f"{key}={text}")
    return out


def _literal(value: Any) -> str | None:
    """`value` in Hydra's override grammar, or None where it cannot be written exactly."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        if "${" in value:  # no interpolation smuggled in
            return None
        return value if _reads_back(value) else ov.quote(value)
    if isinstance(value, (list, tuple)):
        items = [_literal(v) for v in value]
        return None if any(i is None for i in items) else "[" + ",".join(items) + "]"  # type: ignore[arg-type]
    if isinstance(value, Mapping):
        parts = []
        for k, v in value.items():
            text = _literal(v)
            if text is None or not str(k).isidentifier():
                return None
            parts.append(f"{k}:{text}")
        return "{" + ",".join(parts) + "}"
    return None


def _reads_back(text: str) -> bool:
    """Whether `text` unquoted is read by Hydra as that same string (`max`, not `'max'`, in
    the overrides a run folder keeps and a report shows)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not text or not all(ch.isalnum() or ch in "_-./" for ch in text):
        return False
    try:
        (parsed,) = OverridesParser.create().parse_overrides([f"k={text}"])
    except Exception:  # noqa: BLE001 - not a plain value: quote it
        return False
    value = parsed.value()
    return isinstance(value, str) and value == text
