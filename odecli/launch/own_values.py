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
    from pathlib import Path

    from odecli.registry import Command

# Keys never pinned: bookkeeping, and what a caller may change anyway (`keep`).
SKIP = ("hydra", "resume", "quiet", "plots")


def for_run(cmd: Command, run_dir: Path, stored_config: Mapping[str, Any],
            keep: Sequence[str], user: Sequence[str]) -> list[str]:
    """`pins()` of the run in `run_dir` (its checkpoint's config `stored_config`) against its
    stored overrides composed now; none where those no longer compose (the run's own
    composition then says why, in one line)."""
    from omegaconf import OmegaConf

    from odecli.launch import resume
    from odecli.launch.composing import compose

    stored = [o for o in resume.stored_overrides(run_dir) if ov.key(o) != "resume"]
    try:
        today = OmegaConf.to_container(compose(cmd, stored), resolve=True)
    except Exception:  # noqa: BLE001 - reported by the composition that follows
        return []
    return pins(stored_config, today, keep, user)  # type: ignore[arg-type]


def pins(stored_config: Mapping[str, Any], today: Mapping[str, Any], keep: Sequence[str],
         user: Sequence[str]) -> list[str]:
    """`key=value` overrides giving the run's stored values (`stored_config`, resolved, as its
    checkpoint holds it) to the keys whose value in `today` (the run's stored overrides
    composed now, resolved) differs. Left out: keys within `keep` or SKIP, keys the `user`
    overrides set (the compatibility check judges those), keys only one side has (a key
    added later takes its default; a removed one is refused by the check), and values an
    override cannot carry exactly."""
    a, b = flatten(stored_config), flatten(today)
    mine = {ov.key(o) for o in user}
    out = []
    for key in sorted(set(a) & set(b)):
        if a[key] == b[key] or _within(key, (*SKIP, *keep, *mine)):
            continue
        text = _literal(a[key])
        if text is not None:
            out.append(f"{key}={text}")
    return out


def _within(key: str, prefixes: Sequence[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in prefixes)


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
        return None if "${" in value else ov.quote(value)  # no interpolation smuggled in
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
