"""checkpoint.pt: one format for every command, written atomically, with one compatibility rule.

A checkpoint holds everything a resumed run needs to continue bit for bit where the stopped
one was (modules, best state, optimiser, schedule, every RNG, counters, history) plus the
resolved config it was trained with, so `resume=` and `odecli eval` can refuse a config that
would change what the stored weights mean.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from odecli.engine.rundir import CHECKPOINT, atomic_write_bytes
from odecli.errors import CheckpointError, one_line

FORMAT = 2
# Keys a resumed run (or a checkpoint reload) may change: they do not change what was learned.
RESUMABLE_KEYS = ("resume", "quiet", "train.niters", "train.test_freq", "train.checkpoint_every",
                  "train.checkpoint_seconds", "plots", "device", "logger", "data.dir",
                  "data.cache_dir")


def save(path: Path, state: Mapping[str, Any]) -> None:
    """Write atomically: a crash mid-write keeps the previous checkpoint."""
    buf = io.BytesIO()
    torch.save(dict(state), buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def read(path: Path) -> dict[str, Any]:
    """Load a checkpoint (format 1, written by `odecli train` before the shared engine, is
    upgraded on the fly); one clear line when it is missing, corrupt or too new."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist (no checkpoint to load)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as exc:
        raise CheckpointError(f"checkpoint {path} cannot be read: "
                              f"{exc.strerror or one_line(exc)}") from None
    except Exception as exc:
        # torch's own text may advise weights_only=False: unsafe for a corrupt or untrusted
        # file, so it is never shown
        reason = one_line(exc, 120)
        if "weights_only" in reason or "pickle" in reason.lower():
            reason = "it is not a PyTorch file of plain tensors and containers"
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({reason}); "
                              f"restart the run with --overwrite, or use another run's "
                              f"checkpoint") from None
    if not isinstance(state, dict) or "config" not in state or (
            "modules" not in state and "model" not in state):
        raise CheckpointError(f"checkpoint {path} is not an odecli checkpoint (an odecli run "
                              f"before the shared engine wrote VAE checkpoints without a "
                              f"config; such runs cannot be resumed or evaluated)")
    try:
        version = int(state.get("format", 1))
    except (TypeError, ValueError):
        version = -1
    if version > FORMAT:
        raise CheckpointError(f"checkpoint {path} was written by a newer odecli")
    missing = [k for k in REQUIRED.get(version, ("format",)) if k not in state]
    if missing or not isinstance(state.get("config"), Mapping) or not _is_int(
            state.get("iteration")):
        what = f"missing '{missing[0]}'" if missing else "a damaged config or iteration"
        raise CheckpointError(f"checkpoint {path} is incomplete or damaged ({what}); it "
                              f"cannot be resumed or evaluated")
    return _upgrade(state) if version < FORMAT else state


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_belongs(state: Mapping[str, Any], folder_command: str | None, folder: Path) -> None:
    """Refuse a checkpoint another command wrote (copied into the wrong folder): its
    weights and config mean nothing to the folder's run."""
    from odecli.registry import COMMANDS

    made_by = str(state.get("command", "train"))
    if folder_command in COMMANDS and made_by != folder_command:
        raise CheckpointError(f"the checkpoint in {folder} was written by an `odecli "
                              f"{made_by}` run, but the folder holds an `odecli "
                              f"{folder_command}` run: the checkpoint does not belong there")


# What each format must hold for resume= and eval to use it.
REQUIRED = {
    1: ("iteration", "model", "config"),
    2: ("iteration", "modules", "config", "optimizer", "rng", "counters", "history"),
}


def _upgrade(old: dict[str, Any]) -> dict[str, Any]:
    """Format 1 (`odecli train` only) -> format 2."""
    return {
        "format": FORMAT, "command": old.get("command", "train"),
        "iteration": old["iteration"], "niters": old.get("niters"),
        "modules": {"field": old["model"]}, "best": None, "best_iteration": 0,
        "best_score": None, "optimizer": old.get("optimizer"),
        "scheduler": old.get("scheduler"),
        "rng": {"torch": old.get("torch_rng"), "experiment": {"data": old.get("data_rng")}},
        "config": old["config"], "counters": old.get("counters", {}),
        "last_loss": old.get("last_loss", float("nan")), "last_extras": {},
        "last_eval": old.get("last_eval", {}), "last_eval_iteration": old["iteration"],
        "history": old.get("history", []),
        "experiment": {"frames": old.get("frames", [])},
    }


def flatten(node: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    if isinstance(node, Mapping):
        out: dict[str, Any] = {}
        for k, v in node.items():
            out.update(flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: node}


def config_differences(stored: Mapping[str, Any], given: Mapping[str, Any],
                       allowed: tuple[str, ...] = RESUMABLE_KEYS,
                       given_keys: Collection[str] | None = None) -> list[str]:
    """Keys (outside `allowed` and their subtrees) whose values differ, as 'key: a -> b'.

    With `given_keys` (the keys the overrides behind `given` set), a key the stored config
    lacks and none of them sets is no difference: odecli gained that key after the run was
    made, and a new key's default keeps what odecli did before it (docs/architecture.md), so
    an older run still resumes, evaluates and loads. Without it every key is compared."""
    a, b = flatten(stored), flatten(given)
    out = []
    for key in sorted(set(a) | set(b)):
        if _within(key, allowed):
            continue
        if key not in a and given_keys is not None and not any(
                _within(key, (k,)) or k.startswith(key + ".") for k in given_keys):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            out.append(f"{key}: {a.get(key, '<unset>')} -> {b.get(key, '<unset>')}")
    return out


def _within(key: str, prefixes: Collection[str]) -> bool:
    return any(key == k or key.startswith(k + ".") for k in prefixes)


def check_compatible(stored: Mapping[str, Any], given: Mapping[str, Any], what: str,
                     allowed: tuple[str, ...] = RESUMABLE_KEYS,
                     given_keys: Collection[str] | None = None) -> None:
    """Refuse a config that would change what the stored state means (`given_keys`: see
    config_differences)."""
    diffs = config_differences(stored, given, allowed, given_keys)
    if diffs:
        # what the user changed first, and a group's choice (solver.method) before the keys
        # that follow from it (solver.atol)
        def rank(diff: str) -> tuple[bool, bool]:
            key = diff.partition(":")[0]
            return (not (given_keys and _within(key, given_keys)),
                    not key.endswith((".method", ".name")))

        diffs = sorted(diffs, key=rank)
        more = f" (and {len(diffs) - 3} more)" if len(diffs) > 3 else ""
        raise CheckpointError(f"{what} comes from an incompatible config: "
                              f"{', '.join(diffs[:3])}{more}; "
                              f"only {', '.join(k for k in allowed if k != 'resume')} may change")


def load_modules(modules: Mapping[str, torch.nn.Module], states: Mapping[str, Any],
                 path: Path | str) -> None:
    """Load each module's weights; one line when they do not fit the model built here."""
    try:
        for name, module in modules.items():
            module.load_state_dict(states[name])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"checkpoint {path} does not fit this model: "
                              f"{one_line(exc)}") from None
