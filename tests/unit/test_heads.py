"""Attention heads: the geometry ModelInfo knows, the `attention_heads` site, the `head` loop
variable and its checks (model structure from configs on the meta device; no weights)."""

from __future__ import annotations

import pytest

from nnrun.bind import bind
from nnrun.codegen import generate
from nnrun.errors import GraphError
from nnrun.graph import build_graph
from nnrun.model_info import info_from_config
from nnrun.schema import ExperimentSpec
from nnrun.tiny import build_config, build_tokenizer

INFO = {name: info_from_config(build_config(name)) for name in ("tiny-gpt2", "tiny-llama",
                                                                "tiny-neox")}
PROMPT = "the cat sat on the mat"


def compile_graph(scopes, nodes, edges=(), model="tiny-gpt2"):
    spec = ExperimentSpec.model_validate({"name": "t", "graph": {
        "scopes": scopes, "nodes": nodes, "edges": list(edges)}})
    graph = build_graph(spec, INFO[model])
    binding = bind(graph, build_tokenizer())
    return graph, binding, generate(graph, binding)


@pytest.mark.parametrize("model, kv", [("tiny-gpt2", 4), ("tiny-llama", 2), ("tiny-neox", 4)])
def test_head_geometry_comes_from_the_config(model, kv):
    info = INFO[model]
    assert (info.n_heads, info.head_dim, info.n_kv_heads) == (4, 8, kv)  # Llama: GQA, 2 KV heads
    assert info.geometry["n_heads"] * info.geometry["head_dim"] == info.hidden_size


@pytest.mark.parametrize("model, module", [
    ("tiny-gpt2", "transformer.h.1.attn.c_proj"), ("tiny-llama", "model.layers.1.self_attn.o_proj"),
    ("tiny-neox", "gpt_neox.layers.1.attention.dense")])
def test_heads_site_is_the_input_of_the_output_projection_split_into_heads(model, module):
    graph, _, program = compile_graph(
        [{"id": "t", "kind": "trace", "input": PROMPT}],
        [{"id": "z", "op": "read", "site": "attention_heads", "layer": 1, "scope": "t"}],
        model=model)
    (_, stmt), = program.schedule.traces[0].invokes[0].stmts
    assert stmt.access.module == module and stmt.access.event == "input"
    assert ".unflatten(-1, (4, 8))" in stmt.code
    assert graph.axes["z"] == ("example", "position", "head", "head_dim")


def test_foreach_head_expands_to_every_head_with_labels():
    graph, binding, program = compile_graph(
        [{"id": "t", "kind": "trace"},
         {"id": "p", "kind": "invoke", "parent": "t", "input": PROMPT,
          "foreach": {"layer": [1], "head": "all"}}],
        [{"id": "w", "op": "write", "site": "attention_heads", "layer": "{layer}",
          "head": "{head}", "constant": 0.0, "scope": "p"},
         {"id": "logits", "op": "read", "site": "logits", "position": "last", "scope": "p"},
         {"id": "out", "op": "save"}], [{"src": "logits", "dst": "out"}])
    invoke = binding.invokes["p"]
    assert invoke.points == ((1, 0), (1, 1), (1, 2), (1, 3))
    assert invoke.coords["head"] == ["0", "1", "2", "3"]
    assert graph.axes["logits"] == ("layer", "head", "example", "vocab")
    write = next(s for n, s in program.schedule.traces[0].invokes[0].stmts if n == "w")
    # One indexing (position slice, then the head): the write lands in the model's tensor.
    # The points are folded into rows (nnrun.fastpath): the rows and heads are index tensors.
    assert write.code.endswith("[layer_rows, index['w'], layer_head] = 0.0")


def test_a_single_head_drops_the_head_axis_and_all_heads_label_it():
    graph, binding, _ = compile_graph(
        [{"id": "t", "kind": "trace", "input": PROMPT}],
        [{"id": "one", "op": "read", "site": "attention_heads", "layer": 0, "head": 2,
          "position": "last", "scope": "t"},
         {"id": "every", "op": "read", "site": "attention_heads", "layer": "all", "scope": "t"}])
    assert graph.axes["one"] == ("example", "head_dim")
    assert graph.axes["every"] == ("layer", "example", "position", "head", "head_dim")
    assert binding.node_coords["every"]["head"] == ["0", "1", "2", "3"]


@pytest.mark.parametrize("node, code", [
    ({"site": "layer_output", "layer": 0, "head": 1}, "unexpected_head"),
    ({"site": "attention_heads", "layer": 0, "head": 4}, "head_out_of_range")])
def test_head_mistakes_are_graph_errors(node, code):
    with pytest.raises(GraphError) as err:
        compile_graph([{"id": "t", "kind": "trace", "input": PROMPT}],
                      [{"id": "r", "op": "read", "scope": "t", **node}])
    assert [i.code for i in err.value.issues] == [code]


def test_heatmap_rows_can_be_every_layer_head_combination():
    from types import SimpleNamespace

    from nnrun.nodes import REGISTRY
    from nnrun.nodes.plot_heatmap import _ticks

    heatmap = REGISTRY.get("plot_heatmap")
    params = heatmap.Params(id="h", op="plot_heatmap", axes=[["layer", "head"], "position"])
    assert heatmap.out_axes(params, {"in": ("layer", "head", "position")}, None) == ()
    with pytest.raises(ValueError):
        heatmap.out_axes(params, {"in": ("layer", "position")}, None)
    coords = {"layer": ["0", "1"], "head": ["0", "1", "2"]}
    ctx = SimpleNamespace(ticks=coords.get)
    assert _ticks(ctx, ("layer", "head")) == ["L0.H0", "L0.H1", "L0.H2", "L1.H0", "L1.H1",
                                              "L1.H2"]
