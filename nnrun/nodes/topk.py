"""`topk`: the k largest entries along an axis (default: last); returns their indices or values."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt

from nnrun.nodes.base import InputNode, NodeParams, Stmt, dim_of, register


@register
class TopK(InputNode):
    op = "topk"
    summary = "k largest entries along an axis: `indices` (token ids) or `values`"

    class Params(NodeParams):
        op: Literal["topk"] = "topk"
        k: StrictInt = Field(5, ge=1)
        axis: str | None = None
        output: Literal["indices", "values"] = "indices"

    def out_axes(self, p, in_axes, ctx):
        axes = in_axes["in"]
        dim = dim_of(axes, p.axis) + len(axes)
        return axes[:dim] + ("k",) + axes[dim + 1:]

    def emit(self, p, ctx):
        dim = dim_of(ctx.in_axes("in"), p.axis)
        return [Stmt(f"{ctx.out} = {ctx.input('in')}.topk({p.k}, dim={dim}).{p.output}")]
