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


@pytest.mark.parametrize("text,plain", [("max", True), ("rk4", True), ("a/b.c-d_e", True),
                                        ("true", False), ("null", False), ("1e-3", False),
                                        ("12", False), ("a b", False), ("", False)])
def test_a_string_is_written_plain_only_where_hydra_reads_it_back_as_that_string(text, plain):
    assert (_literal(text) == text) is plain


def test_what_cannot_be_written_exactly_is_left_out():
    assert math.isnan(OverridesParser.create().parse_overrides(
        [f"k={_literal(float('nan'))}"])[0].value())
    assert _literal("${oc.env:HOME}") is None          # no interpolation smuggled in
    assert _literal({"not an id": 1}) is None and _literal(object()) is None


def test_pins_only_what_changed_and_nobody_else_sets():
    stored = {"model": {"output_scale": "max", "width": 50}, "train": {"lr": 0.01,
              "niters": 4}, "device": {"name": "cpu"}, "only_stored": 1}
    today = {"model": {"output_scale": "rms", "width": 50}, "train": {"lr": 0.03,
             "niters": 9, "final_iters": 200, "new": 1}, "device": {"name": "cuda"}}
    # final_iters: added later and set by a preset now; the command's bare default is 0
    bare = {"model": {"output_scale": "max"}, "train": {"final_iters": 0, "new": 1}}
    assert pins(stored, today, bare, keep=("train.niters", "device"), user=[]) == [
        "model.output_scale=max", "train.final_iters=0", "train.lr=0.01"]
    assert pins(stored, today, bare, keep=("train.niters", "device"),
                user=["train.lr=0.5", "train.final_iters=3"]) == ["model.output_scale=max"]
