"""`normalize`: rescale a metric so that `low` maps to 0 and `high` to 1 (the normalized patching
metric: 0 = corrupted baseline, 1 = clean run)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, register


@register
class Normalize(NodeType):
    op = "normalize"
    kind = "metric"
    summary = "(value − low) / (high − low): 0 at `low` (corrupt), 1 at `high` (clean)"
    inputs = {"value": Port("the metric, e.g. patched logit difference"),
              "low": Port("its value that maps to 0, e.g. the corrupted run's"),
              "high": Port("its value that maps to 1, e.g. the clean run's")}

    class Params(NodeParams):
        op: Literal["normalize"] = "normalize"

    def out_axes(self, p, in_axes, ctx):
        value = in_axes["value"]
        for port in ("low", "high"):
            axes = in_axes[port]
            if axes != value[len(value) - len(axes):]:
                raise ValueError(f"`{port}` has axes ({', '.join(axes)}), which must equal the "
                                 f"last axes of `value` ({', '.join(value)})")
        return value

    def emit(self, p, ctx):
        v, lo, hi = ctx.input("value"), ctx.input("low"), ctx.input("high")
        return [Stmt(f"{ctx.out} = ({v} - {lo}) / ({hi} - {lo})")]
