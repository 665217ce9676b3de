"""The backward phase of the schedule: gradient requests in reverse firing order after the
forward statements, one metric per invoke, none in generation (asserted on the Schedule)."""

from __future__ import annotations

import pytest

from nnrun.bind import bind
from nnrun.codegen import generate
from nnrun.errors import CompileError
from nnrun.graph import build_graph
from nnrun.model_info import info_from_config
from nnrun.schema import ExperimentSpec
from nnrun.tiny import build_config, build_tokenizer

INFO = info_from_config(build_config("tiny-gpt2"))
P = "the cat sat on the mat"
METRIC = [{"id": "logits", "op": "read", "site": "logits", "position": "last", "scope": "t"},
          {"id": "m", "op": "logit_diff", "answer": " cat", "foil": " dog", "scope": "t"}]


def compile_graph(scopes, nodes, edges):
    spec = ExperimentSpec.model_validate({"name": "t", "graph": {
        "scopes": scopes, "nodes": nodes, "edges": edges}})
    graph = build_graph(spec, INFO)
    return generate(graph, bind(graph, build_tokenizer()))


def test_forward_binds_activations_before_the_metric_and_backward_reverses_them():
    program = compile_graph([{"id": "t", "kind": "trace", "input": P}], METRIC + [
        {"id": "g", "op": "grad", "site": "layer_input", "layer": "all", "scope": "t"},
        {"id": "mlp", "op": "grad", "site": "mlp_output", "layer": 0, "scope": "t"}],
        [{"src": "logits", "dst": "m.logits"}, {"src": "m", "dst": "g.metric"},
         {"src": "m", "dst": "mlp.metric"}])
    plan = program.schedule.traces[0].invokes[0]
    forward = [(n, s.access.module) for n, s in plan.stmts if s.access]
    assert forward == [("g", "transformer.h.0"), ("mlp", "transformer.h.0.mlp"),
                       ("g", "transformer.h.1"), ("logits", "lm_head")]
    metric, backward = plan.backward
    assert metric == "m"
    assert [(n, s.access.module if s.access else None) for n, s in backward] == [
        ("g", "transformer.h.1"), ("mlp", "transformer.h.0.mlp"), ("g", "transformer.h.0"),
        ("g", None)]   # the stack, after its last gradient


def test_a_metric_of_another_invoke_is_refused():
    with pytest.raises(CompileError) as err:
        compile_graph([{"id": "t", "kind": "trace", "input": P},
                       {"id": "u", "kind": "trace", "input": P}], METRIC + [
            {"id": "g", "op": "grad", "site": "layer_output", "layer": 0, "scope": "u"}],
            [{"src": "logits", "dst": "m.logits"}, {"src": "m", "dst": "g.metric"}])
    assert [i.code for i in err.value.issues] == ["metric_elsewhere"]


def test_gradients_in_generation_are_refused():
    scopes = [{"id": "gen", "kind": "generate", "max_new_tokens": 1},
              {"id": "t", "kind": "invoke", "parent": "gen", "input": P}]
    with pytest.raises(CompileError) as err:
        compile_graph(scopes, METRIC + [
            {"id": "g", "op": "grad", "site": "layer_output", "layer": 0, "scope": "t"}],
            [{"src": "logits", "dst": "m.logits"}, {"src": "m", "dst": "g.metric"}])
    assert [i.code for i in err.value.issues] == ["grad_in_generate"]
