"""Named outputs (`src: node.port`, nnrun.named_outputs), without a model: each used output is a
value of its own with its own axes and generated name; a wrong output name, a port on a node
with one output, or a bare reference to a node whose outputs must be named is a located error;
malformed node types fail at registration."""

from __future__ import annotations

from typing import Literal

import pytest
import yaml

from nnrun.emit import Namespace
from nnrun.errors import GraphError
from nnrun.graph import Node, build_graph
from nnrun.graph_picture import _edge_label
from nnrun.named_outputs import record_output_axes, source_issues
from nnrun.nodes.base import NodeParams, NodeType, OutputPort, Registry
from nnrun.schema import EdgeSpec, ExperimentSpec


def spec(*edges: tuple[str, str], output: str = "indices") -> ExperimentSpec:
    """Logits `x` → `top` (topk over vocab) → the `edges` into `double`, `save_a`, `save_b`
    (those nodes exist when an edge names them)."""
    used = {d for _, d in edges}
    nodes = [{"id": "x", "op": "read", "site": "logits", "position": "last", "scope": "t"},
             {"id": "top", "op": "topk", "k": 2, "output": output}]
    nodes += [n for n in ({"id": "double", "op": "scale", "factor": 2.0},
                          {"id": "save_a", "op": "save"}, {"id": "save_b", "op": "save"})
              if n["id"] in used]
    return ExperimentSpec.model_validate({"name": "n", "graph": {
        "scopes": [{"id": "t", "kind": "trace", "input": "a b"}], "nodes": nodes,
        "edges": [{"src": "x", "dst": "top"}] + [{"src": s, "dst": d} for s, d in edges]}})


def issues(*edges: tuple[str, str]) -> list:
    with pytest.raises(GraphError) as err:
        build_graph(spec(*edges))
    return err.value.issues


def test_each_used_output_is_a_value_with_its_axes():
    graph = build_graph(spec(("top.values", "double"), ("double", "save_a"),
                             ("top.indices", "save_b")))
    assert graph.nodes["double"].inputs == {"in": ["top.values"]}
    assert graph.nodes["save_b"].inputs == {"in": ["top.indices"]}
    assert graph.axes["top.values"] == graph.axes["top.indices"] == ("example", "k")
    projection = graph.nodes["top.values"]
    assert (projection.of, projection.scope, projection.path) == ("top", None, "graph.nodes[1]")
    assert projection.type.op == "topk" and projection.inputs == {"in": ["top"]}
    assert graph.order.index("top") < graph.order.index("top.values")


def test_a_bare_source_reads_the_default_output():
    graph = build_graph(spec(("top", "save_a"), ("top.indices", "save_b")))
    assert graph.nodes["save_a"].inputs == {"in": ["top.indices"]}   # one value for both
    assert "top.values" not in graph.nodes                           # unused: not made
    graph = build_graph(spec(("top", "save_a"), output="values"))
    assert graph.nodes["save_a"].inputs == {"in": ["top.values"]}


def test_an_unknown_output_is_located_with_a_suggestion():
    [issue] = issues(("top.valuez", "save_a"))
    assert (issue.code, issue.path, issue.node) == ("unknown_output", "graph.edges[1].src", "top")
    assert "`top` (topk) has no output `valuez`" in issue.message
    assert "did you mean `top.values`?" in issue.hint and "values, indices" in issue.hint


def test_a_port_on_a_node_with_one_output_is_an_error():
    [issue] = issues(("x.values", "save_a"))
    assert (issue.code, issue.path, issue.node) == ("no_named_outputs", "graph.edges[1].src", "x")
    assert "use src: x" in issue.hint


def test_a_dangling_source_names_the_node_not_the_output():
    [issue] = issues(("nope.values", "save_a"))
    assert (issue.code, issue.node) == ("dangling_edge", "nope")
    assert "top.values" not in issue.hint   # suggestions are the experiment's own ids


class Pair(NodeType):   # a node type whose outputs must be named (no default)
    op = "pair"
    outputs = {"first": OutputPort("a"), "second": OutputPort("b")}

    class Params(NodeParams):
        op: Literal["pair"] = "pair"


def test_a_bare_source_without_a_default_output_must_name_one():
    node = Node(Pair.Params(id="p"), Pair(), 0)
    [issue] = source_issues(EdgeSpec(src="p", dst="s"), node, "graph.edges[0].src")
    assert issue.code == "output_not_named" and "src: p.first" in issue.hint
    assert source_issues(EdgeSpec(src="p.second", dst="s"), node, "graph.edges[0].src") == []


def test_out_axes_must_give_every_output_by_name():
    graph = build_graph(spec(("top.values", "save_a")))
    node = Node(Pair.Params(id="p"), Pair(), 0)
    with pytest.raises(TypeError, match="first, second"):
        record_output_axes(graph, node, ("example",))
    with pytest.raises(TypeError, match="first, second"):
        record_output_axes(graph, node, {"first": ("example",)})


def _pair_with(**attrs):
    return type("Broken", (Pair,), attrs)


@pytest.mark.parametrize("attrs, message", [
    ({"outputs": {"not a name": OutputPort("x")}}, "identifiers to OutputPort"),
    ({"outputs": {"a": "x"}}, "identifiers to OutputPort"),
    ({"has_output": False}, "has_output = False"),
])
def test_malformed_outputs_are_refused_at_registration(attrs, message):
    with pytest.raises(TypeError, match=message):
        Registry().register(_pair_with(**attrs))


def test_each_output_gets_its_own_generated_name():
    names = Namespace()
    assert names.name(("node", "top_values"), "top_values") == "top_values"  # a user's id
    assert names.name(("node", "top.values"), "top.values") == "top_values_1"
    assert names.name(("node", "top.indices"), "top.indices") == "top_indices"


def test_the_edge_carries_its_ports():
    edge = EdgeSpec(src="top.values", dst="effect.a")
    assert (edge.src_node, edge.src_port, edge.dst_node, edge.dst_port) == \
        ("top", "values", "effect", "a")
    assert EdgeSpec(src="top", dst="s").src_port is None
    assert _edge_label({"output": "values", "port": "a"}) == "values → a"
    assert _edge_label({"output": "values", "port": "in"}) == "values →"
    assert _edge_label({"output": None, "port": "in"}) == ""
    assert _edge_label({"port": "logits"}) == "logits"


def test_a_broken_node_hides_the_users_of_its_outputs(tmp_path):
    from nnrun.errors import ConfigError
    from nnrun.pipeline import validate

    text = """\
format: 1
name: broken
graph:
  scopes: [{id: t, kind: trace, input: "the cat sat on the mat"}]
  nodes:
    - {id: x, op: read, site: logits, position: last, scope: t}
    - {id: top, op: topk, k: 2, colour: red}
    - {id: s, op: save}
    - {id: s2, op: save}
  edges:
    - {src: x, dst: top}
    - {src: top.values, dst: s}
    - {src: x.valuez, dst: s2}
"""
    path = tmp_path / "x.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        validate({**yaml.safe_load(text), "model": {"path": "builtin:tiny-gpt2"}}, path)
    got = [(i.code, i.node, i.line) for i in info.value.issues]
    assert got == [("unknown_field", "top", 7), ("no_named_outputs", "x", 13)]
