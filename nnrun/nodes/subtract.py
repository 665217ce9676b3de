"""`subtract`: elementwise `a - b` (b broadcasts if its axes are a suffix of a's)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, register


@register
class Subtract(NodeType):
    op = "subtract"
    summary = "a - b, elementwise"
    inputs = {"a": Port("left operand"), "b": Port("right operand")}

    class Params(NodeParams):
        op: Literal["subtract"] = "subtract"

    def out_axes(self, p, in_axes, ctx):
        a, b = in_axes["a"], in_axes["b"]
        if b != a[len(a) - len(b):]:
            raise ValueError(f"cannot combine axes ({', '.join(a)}) and ({', '.join(b)}); "
                             "b's axes must equal the last axes of a")
        return a

    def emit(self, p, ctx):
        return [Stmt(f"{ctx.out} = {ctx.input('a')} - {ctx.input('b')}")]
