"""`logit_lens`: decode the residual stream after each layer with the model's own final norm and
unembedding, as if the model stopped there (nostalgebraist's logit lens)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, register
from nnrun.nodes.fields import (
    LayerSpec,
    PositionSpec,
    check_site,
    emit_per_layer,
    layer_coords,
    position_field,
)


@register
class LogitLens(NodeType):
    op = "logit_lens"
    kind = "read"
    summary = "final norm + unembedding applied to `layer_output` of each layer → logits"
    touches_model = True

    class Params(NodeParams):
        op: Literal["logit_lens"] = "logit_lens"
        layer: LayerSpec = "all"
        position: PositionSpec = position_field("last")

    def check(self, p, ctx):
        return check_site(_as_read(p), ctx)

    def coords(self, p, info):
        return layer_coords(p, info)

    def out_axes(self, p, in_axes, ctx):
        axes = ("example", "position", "vocab") if p.position == "all" else ("example", "vocab")
        return ("layer",) + axes if p.layer == "all" or isinstance(p.layer, list) else axes

    def emit(self, p, ctx):
        norm, unembed = ctx.module_code("final_norm"), ctx.module_code("logits")
        return emit_per_layer(ctx, ctx.site_refs("layer_output", p.layer),
                              lambda ref: f"{unembed}({norm}({ctx.select(ref, p.position)}))",
                              ctx.stacks_layers(p.layer))


def _as_read(p):
    """Validate the layer against the model exactly as a `read` of `layer_output` would."""
    from types import SimpleNamespace

    return SimpleNamespace(site="layer_output", layer=p.layer, position=p.position)
