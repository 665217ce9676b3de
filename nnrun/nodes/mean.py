"""`mean`: average over one named axis (e.g. `batch` over prompts, `position` over tokens)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import InputNode, NodeParams, Stmt, dim_of, drop_axis, register


@register
class Mean(InputNode):
    op = "mean"
    summary = "mean over a named axis"

    class Params(NodeParams):
        op: Literal["mean"] = "mean"
        axis: str

    def out_axes(self, p, in_axes, ctx):
        return drop_axis(in_axes["in"], p.axis)

    def emit(self, p, ctx):
        dim = dim_of(ctx.in_axes("in"), p.axis)
        return [Stmt(f"{ctx.out} = {ctx.input('in')}.float().mean(dim={dim})")]
