"""`generated`: the token ids a generation really produced (after the greedy choice or sampling
and the logits processors, e.g. the end-of-text token held back until `max_new_tokens`)."""

from __future__ import annotations

from typing import Literal

from nnrun.errors import CompileError, Issue
from nnrun.nodes.base import NodeParams, NodeType, Stmt, register


@register
class Generated(NodeType):
    """`tracer.result` of the invoke, read once generation is over: the last `max_new_tokens`
    columns are the generated ids (prompts are left-padded, so they end every row)."""

    op = "generated"
    kind = "read"
    summary = ("the token ids generation produced, per example and step (an invoke of a "
               "generate scope; read after its steps)")
    touches_model = True

    class Params(NodeParams):
        op: Literal["generated"] = "generated"

    def out_axes(self, p, in_axes, ctx):
        return ("example", "step")

    def emit(self, p, ctx):
        trace = ctx.graph.trace_of(ctx.node.scope)
        if trace is None or trace.kind != "generate" or \
                ctx.graph.scopes[ctx.node.scope].kind == "step":
            raise CompileError(f"experiment `{ctx.graph.spec.name}` has 1 problem:", [Issue(
                "not_generating", "`generated` reads what a generation produced", ctx.node.path,
                ctx.node_id, "give it the scope of an invoke of a generate scope (not its step)")])
        n = trace.max_new_tokens
        return [Stmt(f"{ctx.out} = tracer.result[:, -{n}:]  # node: {ctx.node_id} (example, step): "
                     "the ids generation chose",
                     after_steps=True)]
