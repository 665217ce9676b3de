"""`read`: read the activation at a site (one layer, several layers, or a foreach layer)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.nodes.base import NodeParams, NodeType, Stmt, register
from nnrun.nodes.fields import (LayerSpec, PositionSpec, check_site, layer_field, point_axes,
                                position_field, site_field)


@register
class Read(NodeType):
    """Copy the activation at `site` (and `layer`, `position`) out of the forward pass."""

    op = "read"
    kind = "read"
    summary = "activation at a site; several layers are stacked on a `layer` axis"
    touches_model = True

    class Params(NodeParams):
        op: Literal["read"] = "read"
        site: str = site_field()
        layer: LayerSpec | None = layer_field()
        position: PositionSpec = position_field()
        at: Literal["output", "input"] = Field("output", description="for module paths only")

    def check(self, p, ctx):
        return check_site(p, ctx)

    def out_axes(self, p, in_axes, ctx):
        return point_axes(p)

    def emit(self, p, ctx):
        refs = ctx.site_refs(p.site, p.layer, p.at)
        index = ctx.position_index(p.position)
        if len(refs) == 1 and not ctx.stacks_layers(p.layer):
            return [Stmt(f"{ctx.out} = {refs[0].code}{index}.clone()", refs[0].access)]
        parts = [f"{ctx.out}_{i}" for i in range(len(refs))]
        stmts = [Stmt(f"{part} = {ref.code}{index}.clone()", ref.access)
                 for part, ref in zip(parts, refs)]
        return stmts + [Stmt(f"{ctx.out} = torch.stack([{', '.join(parts)}])  # (layer, ...)")]
