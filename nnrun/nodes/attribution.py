"""`attribution`: attribution patching (AtP), the first-order estimate of what patching an
activation from the clean run into the corrupted run does to a metric:
(clean − corrupt) · d metric / d activation (at the corrupted run), summed over feature axes."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, dim_of, register


@register
class Attribution(NodeType):
    op = "attribution"
    kind = "metric"
    summary = ("(clean − corrupt) · grad summed over `sum` axes (default: the last): the "
               "attribution-patching estimate of each activation's patching effect")
    inputs = {"grad": Port("d metric / d activation on the corrupted run (a `grad` node)"),
              "clean": Port("the activation on the clean run (a `read` of the same site)"),
              "corrupt": Port("the activation on the corrupted run (a `read` of the same site)")}

    class Params(NodeParams):
        op: Literal["attribution"] = "attribution"
        sum: list[str] | None = Field(None, description="axes to sum over, e.g. [head_dim] or "
                                                        "[position, head_dim]; default: the last")

    def out_axes(self, p, in_axes, ctx):
        grad = in_axes["grad"]
        for port in ("clean", "corrupt"):
            if in_axes[port] != grad:
                raise ValueError(f"`{port}` has axes ({', '.join(in_axes[port])}) but the "
                                 f"gradient has ({', '.join(grad)}): read the same site, "
                                 "layers, positions and heads")
        summed = _summed(p, grad)
        for axis in summed:
            dim_of(grad, axis)
        return tuple(a for a in grad if a not in summed)

    def emit(self, p, ctx):
        axes = ctx.in_axes("grad")
        dims = tuple(dim_of(axes, a) for a in _summed(p, axes))
        delta = f"({ctx.input('clean')} - {ctx.input('corrupt')})"
        return [Stmt(f"{ctx.out} = ({delta} * {ctx.input('grad')}).sum(dim={dims})")]


def _summed(p, axes: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(p.sum) if p.sum else axes[-1:]
