"""`argmax`: index of the largest entry along an axis (default: the last, e.g. top token id)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import InputNode, NodeParams, Stmt, dim_of, drop_axis, register


@register
class Argmax(InputNode):
    op = "argmax"
    summary = "index of the maximum along an axis (default: last)"

    class Params(NodeParams):
        op: Literal["argmax"] = "argmax"
        axis: str | None = None

    def out_axes(self, p, in_axes, ctx):
        return drop_axis(in_axes["in"], p.axis)

    def emit(self, p, ctx):
        dim = dim_of(ctx.in_axes("in"), p.axis)
        return [Stmt(f"{ctx.out} = {ctx.input('in')}.argmax(dim={dim})")]
