"""Typed config schemas: every range rule written once, every default only in the YAML.

A `Schema` lists the keys of one config node, the type and range of each value, and rules that
relate several keys. `Schema.check` returns plain Python values (no OmegaConf in hot loops) or
raises `ConfigError` with one line naming the full key. Schemas hold no defaults on purpose: a
key the schema knows must be in the node (configs/*.yaml give every default, so code and YAML
cannot disagree), and a key it does not know is refused (Hydra refuses unknown keys on plain
overrides, but not `+key=value`, which would otherwise be silently ignored).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from odecli.errors import ConfigError

__all__ = ["Bool", "Choice", "Field", "Float", "Free", "Int", "List", "Range", "Rule", "Schema",
           "Str", "Tagged", "Union", "job_node", "to_plain"]


def to_plain(node: Any) -> Any:
    """OmegaConf containers (resolved) and mappings/sequences as plain dicts and lists."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if isinstance(node, (DictConfig, ListConfig)):
        try:
            return OmegaConf.to_container(node, resolve=True)
        except Exception as exc:  # an interpolation that does not resolve, a ??? value
            raise ConfigError(" ".join(str(exc).split()[:40])) from None
    if isinstance(node, Mapping):
        return {k: to_plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [to_plain(v) for v in node]
    return node


def job_node(cfg: Any) -> Any:
    """A composed config without Hydra's own `hydra` node (which no schema describes and
    whose interpolations resolve only inside a Hydra run); other nodes are returned as is."""
    if isinstance(cfg, Mapping) and "hydra" in cfg:
        return {k: v for k, v in cfg.items() if k != "hydra"}
    return cfg


def _is_list(value: Any) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def _is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


class Field:
    """One config value: `check(value, path)` returns it as a plain value or raises."""

    nullable: bool = False

    def check(self, value: Any, path: str) -> Any:
        if value is None and self.nullable:
            return None
        return self._check(value, path)

    def _check(self, value: Any, path: str) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        """What a valid value is, as in '<key> must be <describe()>'."""
        raise NotImplementedError

    def _error(self, path: str, value: Any) -> ConfigError:
        return ConfigError(f"{path} must be {self.describe()}, got {value!r}")


@dataclass(frozen=True)
class Int(Field):
    """An integer in [low, high] (bounds optional); bools and floats such as 1e3 are refused."""

    low: int | None = None
    high: int | None = None
    nullable: bool = False

    def describe(self) -> str:
        lo, hi = self.low, self.high
        if hi is None:
            return ("an integer" if lo is None else "a positive integer" if lo == 1
                    else f"an integer >= {lo}")
        return f"an integer <= {hi}" if lo is None else f"an integer in [{lo}, {hi}]"

    def _check(self, value: Any, path: str) -> int:
        if (isinstance(value, bool) or not isinstance(value, int)
                or (self.low is not None and value < self.low)
                or (self.high is not None and value > self.high)):
            raise self._error(path, value)
        return int(value)


@dataclass(frozen=True)
class Float(Field):
    """A finite number within optional bounds, each closed or open; ints are accepted."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    nullable: bool = False

    def describe(self) -> str:
        lo, hi = self.low, self.high
        if hi is None:
            if lo is None:
                return "a number"
            if lo == 0:
                return "a positive number" if self.low_open else "a non-negative number"
            return f"a number {'>' if self.low_open else '>='} {lo:g}"
        if lo is None:
            return f"a number {'<' if self.high_open else '<='} {hi:g}"
        return (f"in {'(' if self.low_open else '['}{lo:g}, {hi:g}"
                f"{')' if self.high_open else ']'}")

    def _check(self, value: Any, path: str) -> float:
        if not _is_number(value):
            raise self._error(path, value)
        lo, hi = self.low, self.high
        if lo is not None and (value < lo or (self.low_open and value == lo)):
            raise self._error(path, value)
        if hi is not None and (value > hi or (self.high_open and value == hi)):
            raise self._error(path, value)
        return float(value)


@dataclass(frozen=True)
class Bool(Field):
    """true or false (a YAML/Hydra boolean, not a string or a number)."""

    def describe(self) -> str:
        return "true or false"

    def _check(self, value: Any, path: str) -> bool:
        if not isinstance(value, bool):
            raise self._error(path, value)
        return value


class Choice(Field):
    """One of a fixed set of names; `message` may reword the error ({path}, {value},
    {options}) where a long-standing wording is kept, e.g. "unknown solver method ..."."""

    def __init__(self, *options: str, message: str | None = None,
                 nullable: bool = False) -> None:
        self.options = tuple(options)
        self.message = message or "unknown {path} '{value}'; choose one of: {options}"
        self.nullable = nullable

    def describe(self) -> str:
        return "one of " + ", ".join(self.options)

    def _check(self, value: Any, path: str) -> str:
        if not isinstance(value, str) or value not in self.options:
            raise ConfigError(self.message.format(path=path, value=value,
                                                  options=", ".join(self.options)))
        return value

    def __repr__(self) -> str:
        return f"Choice{self.options!r}"


@dataclass(frozen=True)
class Str(Field):
    """Text. `from_int`: an integer is taken as its digits (Hydra reads record=100 as 100)."""

    nullable: bool = False
    from_int: bool = False

    def describe(self) -> str:
        return "text"

    def _check(self, value: Any, path: str) -> str:
        if self.from_int and isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if not isinstance(value, str):
            raise self._error(path, value)
        return value


_NAME_PART = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class Name(Str):
    """A name that becomes part of a path (a record, a database, a file extension): plain
    parts of letters, digits, `_ . -`, at most `parts` of them joined by `/`; never absolute,
    never `..`, so it cannot point a read or a write outside its folder."""

    parts: int = 1

    def describe(self) -> str:
        return (f"a plain name{' (optionally in a sub-folder: a/b)' if self.parts > 1 else ''}"
                " of letters, digits, '_', '.' and '-'")

    def _check(self, value: Any, path: str) -> str:
        text = super()._check(value, path)
        pieces = text.split("/")
        if len(pieces) > self.parts or not all(_NAME_PART.fullmatch(p) for p in pieces):
            raise self._error(path, value)
        return text


@dataclass(frozen=True)
class Range(Field):
    """A [low, high] pair with 0 <= low <= high, or one number for a fixed value; returned as
    the pair [low, high] of floats (one number x gives [x, x])."""

    def describe(self) -> str:
        return "a number or [low, high] with 0 <= low <= high"

    def _check(self, value: Any, path: str) -> list[float]:
        pair = [value, value] if _is_number(value) else value
        if (not _is_list(pair) or len(pair) != 2 or not all(_is_number(v) for v in pair)
                or not 0 <= pair[0] <= pair[1]):
            raise self._error(path, value)
        return [float(pair[0]), float(pair[1])]


@dataclass(frozen=True)
class List(Field):
    """A list whose entries are all `item` (a nested List makes a matrix); `length` fixes its
    size, `min_length` bounds it from below."""

    item: Field
    length: int | None = None
    min_length: int = 0
    nullable: bool = False

    def describe(self) -> str:
        n = f"{self.length} " if self.length is not None else ""
        return f"a list of {n}entries, each {self.item.describe()}"

    def _check(self, value: Any, path: str) -> list[Any]:
        if not _is_list(value):
            raise self._error(path, value)
        if self.length is not None and len(value) != self.length:
            raise ConfigError(f"{path} must have {self.length} entries, got {len(value)}: "
                              f"{to_plain(value)!r}")
        if len(value) < self.min_length:
            raise ConfigError(f"{path} must have at least {self.min_length} entries, got "
                              f"{len(value)}")
        return [self.item.check(v, f"{path}[{i}]") for i, v in enumerate(value)]


class Union(Field):
    """The first of several field types that accepts the value (model.width: an int or a
    list); `message` ({path}, {value}) says what is allowed when none does."""

    def __init__(self, *fields: Field, message: str) -> None:
        self.fields = fields
        self.message = message
        self.nullable = False

    def describe(self) -> str:
        return " or ".join(f.describe() for f in self.fields)

    def _check(self, value: Any, path: str) -> Any:
        for f in self.fields:
            try:
                return f.check(value, path)
            except ConfigError:
                continue
        raise ConfigError(self.message.format(path=path, value=to_plain(value)))


@dataclass(frozen=True)
class Free(Field):
    """Anything (as plain values): a free-form node whose rules live with its user, such as
    solver.options, which depend on the method. `mapping`: it must be a key: value node."""

    mapping: bool = False

    def describe(self) -> str:
        return "a key: value mapping" if self.mapping else "anything"

    def check(self, value: Any, path: str) -> Any:
        value = to_plain(value)
        if self.mapping and not isinstance(value, dict):
            raise self._error(path, value)
        return value


@dataclass(frozen=True)
class Rule:
    """A check across keys of one node. `test` gets the node's checked values; `message` is a
    template formatted with them and {p} (the node's path and a dot), or a function of
    (values, p). In a partial check, a rule whose keys are absent is skipped."""

    test: Callable[[dict[str, Any]], bool]
    message: str | Callable[[dict[str, Any], str], str]

    def error(self, values: dict[str, Any], p: str) -> ConfigError:
        if callable(self.message):
            return ConfigError(self.message(values, p))
        return ConfigError(self.message.format(p=p, **values))


class Schema(Field):
    """The keys of one config node: `fields` (key -> Field, nested Schemas for sub-nodes)
    and `rules` across them. No defaults: see the module docstring."""

    def __init__(self, fields: Mapping[str, Field], rules: Sequence[Rule] = ()) -> None:
        self.fields = dict(fields)
        self.rules = tuple(rules)
        self.nullable = False

    def extend(self, fields: Mapping[str, Field] | None = None,
               rules: Sequence[Rule] = ()) -> Schema:
        """A new schema with more (or replaced) fields and more rules."""
        return Schema({**self.fields, **(fields or {})}, (*self.rules, *rules))

    def describe(self) -> str:
        return "a config node (key: value)"

    def check(self, node: Any, path: str = "", partial: bool = False) -> dict[str, Any]:
        """Checked plain values of every key. `partial`: keys the node lacks are left out
        instead of refused (builders called with a few keys, e.g. {"method": "euler"})."""
        node = to_plain(node)
        if not isinstance(node, dict):
            raise ConfigError(f"{path or 'the config'} must be {self.describe()}, got {node!r}")
        p = f"{path}." if path else ""
        for key in node:
            if key not in self.fields:
                close = difflib.get_close_matches(str(key), list(self.fields), n=1)
                hint = f" (did you mean '{p}{close[0]}'?)" if close else ""
                raise ConfigError(f"unknown config key '{p}{key}'{hint}")
        out: dict[str, Any] = {}
        for key, f in self.fields.items():
            if key not in node:
                if partial:
                    continue
                raise ConfigError(f"{p}{key} is missing from the config")
            if isinstance(f, (Schema, Tagged)):
                out[key] = f.check(node[key], p + key, partial=partial)
            else:
                out[key] = f.check(node[key], p + key)
        for rule in self.rules:
            try:
                ok = rule.test(out)
            except KeyError:
                if partial:
                    continue
                raise
            if not ok:
                raise rule.error(out, p)
        return out

    def __repr__(self) -> str:
        return f"Schema({list(self.fields)})"


class Tagged(Field):
    """A node whose keys depend on one of its values, e.g. system.name picks a system's keys:
    `variants` maps each value of `tag` to the schema of the other keys."""

    def __init__(self, tag: str, variants: Mapping[str, Schema],
                 message: str | None = None) -> None:
        self.tag = tag
        self.choice = Choice(*variants, message=message)
        self.variants = {name: Schema({tag: self.choice, **s.fields}, s.rules)
                         for name, s in variants.items()}
        self.nullable = False

    def describe(self) -> str:
        return "a config node (key: value)"

    def check(self, node: Any, path: str = "", partial: bool = False) -> dict[str, Any]:
        """Check the tag, then the node against that variant's schema."""
        node = to_plain(node)
        if not isinstance(node, dict):
            raise ConfigError(f"{path} must be {self.describe()}, got {node!r}")
        p = f"{path}." if path else ""
        if self.tag not in node:
            raise ConfigError(f"{p}{self.tag} is missing from the config")
        name = self.choice.check(node[self.tag], p + self.tag)
        return self.variants[name].check(node, path, partial=partial)
