"""Hydra's strings in one place: override keys and values (`key=value`, `+key=value`,
`~key`), and Hydra's multi-line error texts folded onto one line."""

from __future__ import annotations

import re
from pathlib import Path

from odecli.errors import OdecliError


def key(override: str) -> str:
    """The dotted key an override sets: '+train.lr=1' -> 'train.lr'."""
    return override.split("=", 1)[0].lstrip("+~")


def value(overrides: list[str], name: str) -> str | None:
    """The last value given for `name`, unquoted, or None."""
    found = None
    for o in overrides:
        if key(o) == name and "=" in o:
            found = o.split("=", 1)[1].strip().strip("'\"")
    return found


def parsed_value(override: str) -> str:
    """An override's value as Hydra reads it: quotes and escapes undone (a quoted path as
    odecli.run and resume= write them), interpolations such as ${now:...} left as text."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        return str(OverridesParser.create().parse_override(override).value())
    except Exception:  # noqa: BLE001 - Hydra reports the bad override itself, later
        return override.split("=", 1)[1]


def keys(overrides: list[str]) -> set[str]:
    return {key(o) for o in overrides}


def quote(text: str) -> str:
    """A Hydra override value quoted so paths with odd characters survive the parser exactly.
    Hydra keeps a backslash as it is except in a run of them before a quote or the closing
    quote, where each is escaped; a quote is escaped by one."""
    return "'" + re.sub(r"(\\*)('|$)", lambda m: m.group(1) * 2 + ("\\'" if m.group(2) else ""),
                        text) + "'"


def within(name: str, prefixes: tuple[str, ...]) -> bool:
    """True when `name` is one of `prefixes` or lies under one (as a key or group)."""
    return any(name == k or name.startswith(k + ".") or name.startswith(k + "/")
               for k in prefixes)


_WS = re.compile(r"\s*\n\s*")
# Hydra's grammar parses a long list in superlinear time (20,000 items: half a minute);
# about 1,000 short items fit in this.
MAX_OVERRIDE_CHARS = 4096
_LEXER = ("LexerNoViableAltException", "token recognition error", "mismatched input",
          "extraneous input", "no viable alternative")


def check_sizes(overrides: list[str]) -> None:
    """Refuse, before Hydra parses anything, an override too long to parse quickly."""
    for o in overrides:
        if len(o) > MAX_OVERRIDE_CHARS:
            raise OdecliError(f"the override '{o[:40]}...' is {len(o):,} characters long; "
                              f"odecli takes at most {MAX_OVERRIDE_CHARS:,} per override")


def quote_hint(text: str, override: str = "") -> str:
    """Hydra's parse error of an unquoted value (unicode, spaces, brackets in a path), with
    the fix: quote the value."""
    name, _, val = override.partition("=")
    example = f"{name}='{val}'" if val else "key='value'"
    return (f"{text}; quote the value if it holds unicode, spaces or punctuation, "
            f"e.g. \"{example}\"")


def hydra_message(exc: BaseException) -> str:
    """Hydra's multi-line messages ('Available options in ...') folded onto one line."""
    text = str(exc).strip() or type(exc).__name__
    parse_error = any(m in text for m in _LEXER)
    bad = re.search(r"(\S+=\S*)", text) if parse_error else None
    text = text.split("\nConfig search path", 1)[0].strip()
    text = re.sub(r"^In '[\w/]+': ", "", text)
    text = text.replace("\n\nAvailable options", ". Available options")
    parts = [p for p in _WS.split(text) if p]
    if len(parts) > 1 and parts[0].endswith(":"):
        folded = parts[0] + " " + ", ".join(parts[1:])
    else:
        folded = "; ".join(parts).replace(":;", ":").replace(".;", ".")
    if parse_error:
        return quote_hint(folded, bad.group(1) if bad else "")
    hint = _extra_hint(folded)
    return folded.rstrip(".") + hint if hint else folded


# Hydra plugins that odecli's extras bring: a launcher or sweeper that is not installed.
_EXTRAS = {"hydra/launcher/joblib": "joblib", "hydra/launcher/submitit": "slurm",
           "hydra/launcher/submitit_slurm": "slurm", "hydra/sweeper/optuna": "search"}


def _extra_hint(text: str) -> str:
    found = re.search(r"Could not (?:find|load) '(hydra/(?:launcher|sweeper)/[\w]+)'", text)
    extra = _EXTRAS.get(found.group(1)) if found else None
    return f"; it needs odecli's {extra} extra: pip install 'odecli[{extra}]'" if extra else ""


# Config keys that name a folder or a file: a relative path is made absolute when the run
# starts, so resume= and eval find the data from any working directory.
PATH_KEYS = ("data.dir", "data.cache_dir", "system.path")


def absolute_path(override: str) -> str:
    """`data.dir=rel/path` -> `data.dir=/abs/rel/path` (other overrides unchanged)."""
    name, _, value = override.partition("=")
    if key(override) not in PATH_KEYS or not value or value in ("null", "None") or (
            value.startswith(("/", "~", "$", "'", '"'))):
        return override
    return f"{name}={quote(str(Path(value).resolve()))}"
