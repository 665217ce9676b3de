"""Passes over the dataset: a model node using a statistic over the examples runs in a later pass
(asserted on the Schedule; model structure from a config, no weights)."""

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
ROWS = [{"p": "the cat sat on the mat", "q": "a dog ran on the mat"},
        {"p": "the dog sat on the mat", "q": "a cat ran on the mat"}]


def compile_graph(scopes, nodes, edges):
    spec = ExperimentSpec.model_validate({"name": "t", "data": {"rows": ROWS}, "graph": {
        "scopes": scopes, "nodes": nodes, "edges": edges}})
    graph = build_graph(spec, INFO)
    return generate(graph, bind(graph, build_tokenizer(), _dataset(spec)))


def _dataset(spec):
    from nnrun.data import load_dataset

    return load_dataset(spec.data, None, {})


MEAN_ABLATION = (
    [{"id": "ref", "kind": "trace", "input": {"column": "q"}},
     {"id": "base", "kind": "trace", "input": {"column": "p"}},
     {"id": "ablated", "kind": "trace", "input": {"column": "p"}}],
    [{"id": "acts", "op": "read", "site": "mlp_output", "layer": "all", "scope": "ref"},
     {"id": "mean_acts", "op": "mean", "axis": "example"},
     {"id": "base_logits", "op": "read", "site": "logits", "position": "last", "scope": "base"},
     {"id": "ablate", "op": "write", "site": "mlp_output", "layer": 0, "scope": "ablated"},
     {"id": "logits", "op": "read", "site": "logits", "position": "last", "scope": "ablated"},
     {"id": "effect", "op": "subtract"},
     {"id": "out", "op": "save"}],
    [{"src": "acts", "dst": "mean_acts"}, {"src": "mean_acts", "dst": "ablate.value"},
     {"src": "logits", "dst": "effect.a"}, {"src": "base_logits", "dst": "effect.b"},
     {"src": "effect", "dst": "out"}])


def test_a_statistic_used_in_the_model_comes_from_an_earlier_pass():
    program = compile_graph(*MEAN_ABLATION)
    first, second = program.schedule.passes
    assert [t.scope.id for t in first.traces] == ["ref"]
    assert first.reducers == ["mean_acts"] and first.returns == ["acts"]
    # `base` joins the later pass: its per-example values meet the ablated ones chunk by chunk.
    assert [t.scope.id for t in second.traces] == ["base", "ablated"]
    assert second.given == ["mean_acts"]
    assert [n for n, _ in second.post] == ["effect"]
    source = program.source
    assert "def run_1(model, data):" in source and "mean_acts = given['mean_acts']" in source
    assert "PASSES = [(run, finish, ()), (run_1, finish_1, ('mean_acts',))]" in source
    compile(source, "program.py", "exec")


def test_one_pass_programs_keep_run_and_finish():
    scopes, nodes, edges = MEAN_ABLATION
    program = compile_graph(scopes[1:2], nodes[2:3] + [{"id": "s", "op": "save"}],
                            [{"src": "base_logits", "dst": "s"}])
    assert len(program.schedule.passes) == 1
    assert "PASSES = [(run, finish, ())]" in program.source


def test_a_statistic_of_its_own_trace_is_refused():
    with pytest.raises(CompileError) as err:
        compile_graph([{"id": "t", "kind": "trace", "input": {"column": "p"}}],
                      [{"id": "acts", "op": "read", "site": "mlp_output", "layer": 0,
                        "scope": "t"},
                       {"id": "m", "op": "mean", "axis": "example"},
                       {"id": "w", "op": "write", "site": "mlp_output", "layer": 1, "scope": "t"}],
                      [{"src": "acts", "dst": "m"}, {"src": "m", "dst": "w.value"}])
    assert [i.code for i in err.value.issues] == ["pass_cycle"]
