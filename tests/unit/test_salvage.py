"""One pass, every mistake: format errors and graph errors are reported together, and nothing that
is only a consequence of a broken node is reported."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from nnrun.errors import ConfigError, GraphError
from nnrun.pipeline import validate

FIVE_MISTAKES = """\
format: 1
name: waves
graph:
  scopes:
    - {id: t, kind: trace, input: "the cat sat on the mat"}
  nodes:
    - {id: a, op: read, site: layer_outptu, layer: 0, scope: t}
    - {id: b, op: raed, site: layer_output, layer: 0, scope: t}
    - {id: c, op: read, site: layer_output, layer: 99, scope: t}
    - {id: d, op: mean, axis: position, colour: red}
    - {id: e, op: softmax}
    - {id: s, op: save}
    - {id: s2, op: save}
  edges:
    - {src: b, dst: d}
    - {src: d, dst: s}
    - {src: c, dst: e}
    - {src: e, dst: s2}
    - {src: a, dst: nowhere}
"""


def check(text: str, tmp_path: Path):
    path = tmp_path / "x.yaml"
    path.write_text(text)
    config = {**yaml.safe_load(text), "model": {"path": "builtin:tiny-gpt2"}}
    return validate(config, path)


def test_format_and_graph_mistakes_come_in_one_report(tmp_path):
    with pytest.raises(ConfigError) as info:
        check(FIVE_MISTAKES, tmp_path)
    got = [(i.code, i.node, i.line) for i in info.value.issues]
    assert got == [("unknown_site", "a", 7), ("unknown_op", "b", 8),
                   ("layer_out_of_range", "c", 9), ("unknown_field", "d", 10),
                   ("dangling_edge", "nowhere", 19)]
    assert info.value.exit_code == 10
    assert "has 5 problems" in info.value.summary


def test_consequences_of_a_broken_node_are_not_reported(tmp_path):
    # `d` is broken; `s` (fed by d) would lack its input, which is only a consequence.
    text = FIVE_MISTAKES.replace("site: layer_outptu", "site: layer_output").replace(
        "layer: 99", "layer: 1").replace("    - {src: a, dst: nowhere}\n", "")
    with pytest.raises(ConfigError) as info:
        check(text, tmp_path)
    assert [(i.code, i.node) for i in info.value.issues] == [
        ("unknown_op", "b"), ("unknown_field", "d")]


def test_graph_mistakes_alone_are_still_a_graph_error(tmp_path):
    text = FIVE_MISTAKES.replace("op: raed", "op: read").replace(", colour: red", "")
    with pytest.raises(GraphError) as info:
        check(text, tmp_path)
    assert {i.code for i in info.value.issues} == {"unknown_site", "layer_out_of_range",
                                                   "dangling_edge"}
