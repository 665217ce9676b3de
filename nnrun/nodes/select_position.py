"""`select_position`: keep one token position of a tensor that has a `position` axis."""

from __future__ import annotations

from typing import Literal, Union

from pydantic import Field

from nnrun.nodes.base import InputNode, NodeParams, Stmt, dim_of, drop_axis, register


@register
class SelectPosition(InputNode):
    op = "select_position"
    summary = "one position along the `position` axis (int, negative from the end, or `last`)"

    class Params(NodeParams):
        op: Literal["select_position"] = "select_position"
        position: Union[int, Literal["last"]] = Field(  # noqa: UP007
            "last", description="index over the stored sequence; negative counts from the end")

    def out_axes(self, p, in_axes, ctx):
        return drop_axis(in_axes["in"], "position")

    def emit(self, p, ctx):
        dim = dim_of(ctx.in_axes("in"), "position")
        index = -1 if p.position == "last" else p.position
        return [Stmt(f"{ctx.out} = {ctx.input('in')}.select({dim}, {index})")]
