"""`softmax`: softmax over a named axis (default: the last, e.g. `vocab`)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import InputNode, NodeParams, Stmt, dim_of, register


@register
class Softmax(InputNode):
    op = "softmax"
    summary = "softmax over an axis (default: last)"

    class Params(NodeParams):
        op: Literal["softmax"] = "softmax"
        axis: str | None = None

    def out_axes(self, p, in_axes, ctx):
        dim_of(in_axes["in"], p.axis)
        return in_axes["in"]

    def emit(self, p, ctx):
        dim = dim_of(ctx.in_axes("in"), p.axis)
        return [Stmt(f"{ctx.out} = {ctx.input('in')}.float().softmax(dim={dim})")]
