"""`scale`: multiply a tensor by a constant factor."""

from __future__ import annotations

import math
from typing import Literal

from nnrun.errors import Issue
from nnrun.nodes.base import InputNode, NodeParams, Stmt, register


@register
class Scale(InputNode):
    op = "scale"
    summary = "multiply by `factor`"

    class Params(NodeParams):
        op: Literal["scale"] = "scale"
        factor: float

    def check(self, p, ctx):
        if math.isfinite(p.factor):
            return []
        return [Issue("invalid_value", f"`factor` must be a finite number, found {p.factor!r}",
                      ctx.path + ".factor", ctx.node)]

    def out_axes(self, p, in_axes, ctx):
        return in_axes["in"]

    def emit(self, p, ctx):
        return [Stmt(f"{ctx.out} = {ctx.input('in')} * {p.factor!r}")]
