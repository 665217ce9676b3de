"""`topk`: the k largest entries along an axis (default: last), as two named outputs, `values`
and `indices` (`src: top.values`); a bare `src: top` reads the one `output` names (indices)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt

from nnrun.nodes.base import InputNode, NodeParams, OutputPort, Stmt, dim_of, register


@register
class TopK(InputNode):
    op = "topk"
    summary = "k largest entries along an axis: outputs `values` and `indices` (token ids)"
    outputs = {"values": OutputPort("the k largest entries, largest first"),
               "indices": OutputPort("their indices along the axis (token ids over `vocab`)")}

    class Params(NodeParams):
        op: Literal["topk"] = "topk"
        k: StrictInt = Field(5, ge=1)
        axis: str | None = None
        output: Literal["indices", "values"] = Field(
            "indices", description="what a bare `src: <id>` reads; `src: <id>.values` and "
                                   "`src: <id>.indices` pick one explicitly")

    def out_axes(self, p, in_axes, ctx):
        axes = in_axes["in"]
        dim = dim_of(axes, p.axis) + len(axes)
        kept = axes[:dim] + ("k",) + axes[dim + 1:]
        return {"values": kept, "indices": kept}

    def default_output(self, p):
        return p.output

    def emit(self, p, ctx):
        # torch.return_types.topk: a NamedTuple with `.values` and `.indices`, one per output
        dim = dim_of(ctx.in_axes("in"), p.axis)
        return [Stmt(f"{ctx.out} = {ctx.input('in')}.topk({p.k}, dim={dim})")]
