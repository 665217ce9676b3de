"""`read`: read the activation at a site (one layer, several layers, or a foreach layer)."""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from nnrun.nodes.base import NodeType, register
from nnrun.nodes.fields import (
    SiteParams,
    after_position,
    check_head,
    check_keys_aligned,
    check_site,
    emit_per_layer,
    point_axes,
    remaining_after_position,
    site_coords,
)


@register
class Read(NodeType):
    """Copy the activation at `site` (and `layer`, `position`) out of the forward pass."""

    op = "read"
    kind = "read"
    summary = "activation at a site; several layers are stacked on a `layer` axis"
    touches_model = True

    class Params(SiteParams):
        op: Literal["read"] = "read"

    def check(self, p, ctx):
        return check_site(p, ctx) + check_head(p, ctx)

    def coords(self, p, info):
        return site_coords(p, info)

    def out_axes(self, p, in_axes, ctx):
        return point_axes(p)

    def foldable(self, p, ctx):
        return not ctx.stacks_layers(p.layer)   # one statement per point: indexed per row

    def emit(self, p, ctx):
        check_keys_aligned(p, ctx)
        after, kept = after_position(p), remaining_after_position(p)
        stmts = emit_per_layer(ctx, ctx.site_refs(p.site, p.layer, p.at),
                               lambda ref: f"{ctx.select(ref, p.position, after, kept)}.clone()",
                               ctx.stacks_layers(p.layer))
        if p.position != "last":
            return stmts
        return [replace(s, access=replace(s.access, last_only=True)) if s.access else s
                for s in stmts]
