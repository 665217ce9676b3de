"""The loop-variable registry: every foreach variable's spec is checked before any prompt is
read, and expands into values and tick labels (no weights)."""

from __future__ import annotations

import pytest

from nnrun.loops import LOOPS, LoopContext
from nnrun.model_info import info_from_config
from nnrun.tiny import build_config

INFO = info_from_config(build_config("tiny-gpt2"))


@pytest.mark.parametrize("var, spec, code", [
    ("layer", [0, 2], "layer_out_of_range"), ("layer", "every", "invalid_value"),
    ("head", 4, "head_out_of_range"), ("head", "last", "invalid_value"),
    ("position", "first", "invalid_value"), ("coefficient", [0, "big"], "invalid_value"),
    ("coefficient", [], "invalid_value"), ("coefficient", float("nan"), "invalid_value")])
def test_bad_specs_are_located_issues(var, spec, code):
    issues = LOOPS[var].check(spec, INFO, f"graph.scopes[0].foreach.{var}", "p")
    assert [(i.code, i.path, i.node) for i in issues] == [
        (code, f"graph.scopes[0].foreach.{var}", "p")]


@pytest.mark.parametrize("var, spec", [("layer", "all"), ("head", [0, -1]),
                                       ("position", "last"), ("coefficient", [0, 0.5, 4])])
def test_good_specs_pass(var, spec):
    assert LOOPS[var].check(spec, INFO, "p", "s") == []


def test_values_and_labels():
    ctx = LoopContext(INFO, (("the", "cat", "sat"),), lambda i: f"row {i}")
    assert LOOPS["head"].expand([0, -1], ctx) == ([0, 3], ["0", "3"])
    assert LOOPS["coefficient"].expand([0, 0.5, 4], ctx) == ([0.0, 0.5, 4.0], ["0", "0.5", "4"])
    assert LOOPS["position"].expand("last", ctx) == ([-1], ["2:sat"])
