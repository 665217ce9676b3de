"""The scheduler obeys nnsight's rules: firing order, barriers, sessions, saves (asserted on the
Schedule, not on strings). Uses the model structure from a config (meta device, no weights)."""

from __future__ import annotations

import pytest

from nnrun.bind import bind
from nnrun.codegen import generate
from nnrun.errors import CompileError, GraphError
from nnrun.graph import build_graph
from nnrun.model_info import info_from_config
from nnrun.schema import ExperimentSpec
from nnrun.tiny import build_config, build_tokenizer

INFO = info_from_config(build_config("tiny-gpt2"))
TOKENIZER = build_tokenizer()
P1, P2 = "the cat sat on the mat", "a dog ran on the mat"


def compile_graph(scopes, nodes, edges=()):
    spec = ExperimentSpec.model_validate({"name": "t", "graph": {
        "scopes": scopes, "nodes": nodes, "edges": list(edges)}})
    graph = build_graph(spec, INFO)
    compile_graph.last_binding = bind(graph, TOKENIZER)
    return generate(graph, compile_graph.last_binding)


def stmt_nodes(program, invoke=0, trace=0):
    return [nid for nid, _ in program.schedule.traces[trace].invokes[invoke].stmts]


class TestFiringOrder:
    def test_yaml_order_does_not_matter(self):
        """logits are declared first but the model computes them last."""
        program = compile_graph([{"id": "t", "kind": "trace", "input": P1}], [
            {"id": "logits", "op": "read", "site": "logits", "scope": "t"},
            {"id": "mlp1", "op": "read", "site": "mlp_output", "layer": 1, "scope": "t"},
            {"id": "attn1", "op": "read", "site": "attention_output", "layer": 1, "scope": "t"},
            {"id": "resid0", "op": "read", "site": "layer_output", "layer": 0, "scope": "t"},
            {"id": "emb", "op": "read", "site": "embeddings", "scope": "t"}])
        assert stmt_nodes(program) == ["emb", "resid0", "attn1", "mlp1", "logits"]

    def test_child_output_before_parent_output_and_input_first(self):
        program = compile_graph([{"id": "t", "kind": "trace", "input": P1}], [
            {"id": "out1", "op": "read", "site": "layer_output", "layer": 1, "scope": "t"},
            {"id": "mlp1", "op": "read", "site": "transformer.h.1.mlp", "scope": "t"},
            {"id": "in1", "op": "read", "site": "layer_input", "layer": 1, "scope": "t"}])
        assert stmt_nodes(program) == ["in1", "mlp1", "out1"]

    def test_data_dependency_against_the_forward_pass_is_a_compile_error(self):
        with pytest.raises(CompileError) as err:
            compile_graph([{"id": "t", "kind": "trace", "input": P1}], [
                {"id": "late", "op": "read", "site": "layer_output", "layer": 1, "scope": "t"},
                {"id": "early", "op": "write", "site": "layer_output", "layer": 0, "scope": "t"}],
                [{"src": "late", "dst": "early.value"}])
        assert err.value.issues[0].code == "out_of_order"
        assert err.value.issues[0].node == "early"

    def test_multi_layer_read_interleaves_with_other_nodes(self):
        program = compile_graph([{"id": "t", "kind": "trace", "input": P1}], [
            {"id": "all", "op": "read", "site": "layer_output", "layer": "all", "scope": "t"},
            {"id": "mlp0", "op": "read", "site": "mlp_output", "layer": 0, "scope": "t"}])
        assert stmt_nodes(program) == ["mlp0", "all", "all", "all"]
        codes = [s.code for _, s in program.schedule.traces[0].invokes[0].stmts]
        assert "h[0].mlp" in codes[0] and "h[0].output" in codes[1] and "h[1]" in codes[2]


class TestCrossScope:
    def two_invokes(self, producer_layer, consumer_layer):
        return compile_graph(
            [{"id": "t", "kind": "trace"},
             {"id": "a", "kind": "invoke", "parent": "t", "input": P1},
             {"id": "b", "kind": "invoke", "parent": "t", "input": P2}],
            [{"id": "src", "op": "read", "site": "layer_output", "layer": producer_layer,
              "position": "last", "scope": "a"},
             {"id": "dst", "op": "write", "site": "layer_output", "layer": consumer_layer,
              "position": "last", "scope": "b"},
             {"id": "logits", "op": "read", "site": "logits", "scope": "b"},
             {"id": "out", "op": "save"}],
            [{"src": "src", "dst": "dst.value"}, {"src": "logits", "dst": "out"}])

    def test_value_between_invokes_gets_a_barrier(self):
        program = self.two_invokes(0, 1)
        trace = program.schedule.traces[0]
        assert trace.barriers == ["barrier_0"]
        assert trace.invokes[0].barriers == {1: ["barrier_0"]}
        assert trace.invokes[1].barriers == {0: ["barrier_0"]}
        assert not program.schedule.session
        assert "barrier_0 = tracer.barrier(2)" in program.source

    def test_value_flowing_backwards_between_invokes_is_refused(self):
        with pytest.raises(CompileError) as err:
            self.two_invokes(1, 0)
        assert err.value.issues[0].code == "out_of_order"

    def test_two_traces_run_in_a_session_without_saving_the_crossing_value(self):
        program = compile_graph(
            [{"id": "a", "kind": "trace", "input": P1}, {"id": "b", "kind": "trace", "input": P2}],
            [{"id": "src", "op": "read", "site": "layer_output", "layer": 1, "scope": "a"},
             {"id": "dst", "op": "write", "site": "layer_output", "layer": 0, "scope": "b"},
             {"id": "logits", "op": "read", "site": "logits", "scope": "b"},
             {"id": "out", "op": "save"}],
            [{"src": "src", "dst": "dst.value"}, {"src": "logits", "dst": "out"}])
        assert program.schedule.session
        assert program.schedule.saves == {"logits"}
        assert program.schedule.returns == ["logits"]


class TestCodegen:
    def test_program_is_valid_python_and_deterministic(self):
        args = ([{"id": "t", "kind": "trace"},
                 {"id": "p", "kind": "invoke", "parent": "t", "input": P1,
                  "foreach": {"layer": "all", "position": [0, -1]}}],
                [{"id": "w", "op": "write", "site": "layer_output", "layer": "{layer}",
                  "position": "{position}", "constant": 0.0, "scope": "p"},
                 {"id": "logits", "op": "read", "site": "logits", "position": "last",
                  "scope": "p"},
                 {"id": "out", "op": "save"}],
                [{"src": "logits", "dst": "out"}])
        first, second = compile_graph(*args), compile_graph(*args)
        assert first.source == second.source and first.digest == second.digest
        compile(first.source, "program.py", "exec")
        # The grid and the prompt are data, not source: one program serves every chunk.
        assert "points['p']" in first.source and P1 not in first.source
        assert (0, -6) in compile_graph.last_binding.invokes["p"].points  # 6-token prompt
        assert all(first.line_map[n] for n in first.line_map)


GEN = [{"id": "gen", "kind": "generate", "max_new_tokens": 2},
       {"id": "inv", "kind": "invoke", "parent": "gen", "input": P1},
       {"id": "steps", "kind": "step", "parent": "inv", "steps": 2}]


class TestGenerationScopes:
    def test_invoke_node_runs_only_at_the_first_step(self):
        program = compile_graph(GEN, [
            {"id": "once", "op": "read", "site": "layer_output", "layer": 0, "scope": "inv"},
            {"id": "each", "op": "read", "site": "logits", "position": "last", "scope": "steps"},
            {"id": "s1", "op": "save"}, {"id": "s2", "op": "save"}],
            [{"src": "once", "dst": "s1"}, {"src": "each", "dst": "s2"}])
        plan = program.schedule.traces[0].invokes[0]
        assert plan.step_nodes == {"each"}
        assert plan.collect == ["each"]          # one value per step; `once` has one value
        assert plan.loop_shape("each") == (2,) and plan.loop_shape("once") == ()

    def test_invoke_node_cannot_use_a_step_value(self):
        with pytest.raises(CompileError) as info:
            compile_graph(GEN, [
                {"id": "each", "op": "read", "site": "logits", "position": "last",
                 "scope": "steps"},
                {"id": "p", "op": "softmax", "scope": "inv"}, {"id": "s", "op": "save"}],
                [{"src": "each", "dst": "p"}, {"src": "p", "dst": "s"}])
        assert [(i.code, i.node) for i in info.value.issues] == [("step_value_outside_step", "p")]

    @pytest.mark.parametrize("op, position, ok", [
        ("read", 2, False), ("read", "all", False), ("read", "last", True),
        ("write", "all", True), ("write", 0, False)])
    def test_positions_in_a_step_scope(self, op, position, ok):
        node = {"id": "n", "op": op, "site": "layer_output", "layer": 0, "position": position,
                "scope": "steps", **({"constant": 0.0} if op == "write" else {})}
        nodes = [node] + ([{"id": "s", "op": "save"}] if op == "read" else [])
        edges = [{"src": "n", "dst": "s"}] if op == "read" else []
        if ok:
            compile_graph(GEN, nodes, edges)
            return
        with pytest.raises(GraphError) as info:
            compile_graph(GEN, nodes, edges)
        assert [(i.code, i.node, i.path) for i in info.value.issues] == [
            ("step_position", "n", "graph.nodes[0].position")]


class TestWrittenValues:
    SCOPES = [{"id": "c", "kind": "trace", "input": P1}, {"id": "p", "kind": "trace"},
              {"id": "pt", "kind": "invoke", "parent": "p", "input": P2,
               "foreach": {"layer": "all"}}]

    def _write(self, read_layer, write, extra=()):
        return [{"id": "r", "op": "read", "site": "layer_output", "layer": read_layer,
                 "scope": "c"}, *extra,
                {"id": "w", "op": "write", "site": "layer_output", "scope": "pt", **write}]

    def test_value_with_extra_axes_is_refused(self):
        with pytest.raises(GraphError) as info:
            compile_graph(self.SCOPES, self._write("all", {"layer": "{layer}", "position": -1}),
                          [{"src": "r", "dst": "w.value"}])  # (layer, example, position, hidden)
        assert [(i.code, i.node) for i in info.value.issues] == [("axis_mismatch", "w")]

    def test_patch_needs_the_layers_it_writes(self):
        with pytest.raises(CompileError) as info:
            compile_graph(self.SCOPES, self._write([0], {"layer": "{layer}", "mode": "patch"}),
                          [{"src": "r", "dst": "w.value"}])
        assert [(i.code, i.node) for i in info.value.issues] == [("layer_not_in_value", "w")]
        assert "layer 1" in info.value.issues[0].message

    def test_patch_from_a_computed_value_indexes_its_layer_axis(self):
        mean = {"id": "m", "op": "scale", "factor": 2.0, "scope": "c"}
        program = compile_graph(self.SCOPES, self._write("all", {"layer": "{layer}",
                                                                 "mode": "patch"}, [mean]),
                                [{"src": "r", "dst": "m"}, {"src": "m", "dst": "w.value"}])
        assert "m[layer]" in program.source
