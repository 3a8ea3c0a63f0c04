"""A run's own values written back as overrides (odecli.launch.own_values)."""

from __future__ import annotations

import math

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from odecli.launch.own_values import _literal, pins


@pytest.mark.parametrize("value", [
    None, True, False, 0, -3, 1e-5, 0.1, 2.5e300, float("inf"), -float("inf"), "rms",
    "it's a \\ path/with spaces=1,2", "", [1.5, 2, "x"], [], [[1, 2], [3]],
    {"a": 1.5, "c": [3.0, None]},
])
def test_each_value_comes_back_exactly_through_hydras_parser(value):
    (parsed,) = OverridesParser.create().parse_overrides([f"key={_literal(value)}"])
    got = parsed.value()
    assert got == value and type(got) is type(value)


def test_what_cannot_be_written_exactly_is_left_out():
    assert math.isnan(OverridesParser.create().parse_overrides(
        [f"k={_literal(float('nan'))}"])[0].value())
    assert _literal("${oc.env:HOME}") is None          # no interpolation smuggled in
    assert _literal({"not an id": 1}) is None and _literal(object()) is None


def test_pins_only_what_changed_and_nobody_else_sets():
    stored = {"model": {"output_scale": "max", "width": 50}, "train": {"lr": 0.01,
              "niters": 4}, "device": {"name": "cpu"}, "new_in_stored": 1}
    today = {"model": {"output_scale": "rms", "width": 50}, "train": {"lr": 0.03,
             "niters": 9}, "device": {"name": "cuda"}, "added_later": 2}
    assert pins(stored, today, keep=("train.niters", "device"), user=[]) == [
        "model.output_scale='max'", "train.lr=0.01"]
    assert pins(stored, today, keep=("train.niters", "device"), user=["train.lr=0.5"]) == [
        "model.output_scale='max'"]
