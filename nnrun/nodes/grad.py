"""`grad`: the gradient of a per-example metric with respect to the activation at a site (the
backward half of attribution patching)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeType, Port, Stmt, register
from nnrun.nodes.fields import (
    SiteParams,
    after_position,
    check_head,
    check_site,
    point_axes,
    remaining_after_position,
    site_coords,
)


@register
class Grad(NodeType):
    """d metric / d activation, one backward pass of the metric's sum per invoke.

    The examples of a batch do not interact, so the gradient of the sum at one example's
    activation is the gradient of that example's own metric. The forward binds the model's own
    tensor (no copy: its gradient is what flows back); the backward block requests each
    layer's gradient in reverse firing order, then stacks them in layer order.
    """

    op = "grad"
    kind = "read"
    summary = ("gradient of a per-example metric (same invoke) with respect to the activation "
               "at a site: one backward pass; its trace keeps gradients")
    touches_model = True
    needs_grad = True
    inputs = {"metric": Port("per-example scalar computed in the same invoke (e.g. logit_diff)")}

    class Params(SiteParams):
        op: Literal["grad"] = "grad"

    def check(self, p, ctx):
        return check_site(p, ctx) + check_head(p, ctx)

    def coords(self, p, info):
        return site_coords(p, info)

    def out_axes(self, p, in_axes, ctx):
        if in_axes["metric"] != ("example",):
            raise ValueError(f"the metric must be one number per example (axes: example), "
                             f"got ({', '.join(in_axes['metric'])})")
        return point_axes(p)

    def emit(self, p, ctx):
        metric = ctx.source("metric")
        refs = ctx.site_refs(p.site, p.layer, p.at)
        after, kept = after_position(p), remaining_after_position(p)
        acts = [ctx.fresh(f"{ctx.out}_act_{i}") for i in range(len(refs))]
        stmts = [Stmt(f"{act} = {ref.raw}  # the model's own tensor (its gradient flows back)",
                      ref.access) for act, ref in zip(acts, refs)]
        stacked = ctx.stacks_layers(p.layer)
        parts = [ctx.out] if len(refs) == 1 and not stacked else \
            [ctx.fresh(f"{ctx.out}_{i}") for i in range(len(refs))]
        for part, act, ref in reversed(list(zip(parts, acts, refs))):
            value = ctx.select(f"{act}.grad{ref.view}", p.position, after, kept)
            stmts.append(Stmt(f"{part} = {value}", ref.access, grad_of=metric))
        if parts != [ctx.out]:
            stmts.append(Stmt(f"{ctx.out} = torch.stack([{', '.join(parts)}])  # (layer, ...)",
                              grad_of=metric))
        return stmts
