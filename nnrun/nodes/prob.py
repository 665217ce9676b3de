"""`prob`: probability of one token (softmax over the `vocab` axis, then select the token)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, register


@register
class Prob(NodeType):
    op = "prob"
    kind = "metric"
    summary = "softmax probability of `token` over the `vocab` axis"
    inputs = {"logits": Port("logits with a trailing `vocab` axis")}

    class Params(NodeParams):
        op: Literal["prob"] = "prob"
        token: str

    def tokens(self, p):
        return [p.token]

    def out_axes(self, p, in_axes, ctx):
        axes = in_axes["logits"]
        if not axes or axes[-1] != "vocab":
            raise ValueError(f"logits must end in a `vocab` axis (got: {', '.join(axes)})")
        return axes[:-1]

    def emit(self, p, ctx):
        x, t = ctx.input("logits"), ctx.token_id(p.token)
        return [Stmt(f"{ctx.out} = {x}.float().softmax(dim=-1)[..., {t}]  # {p.token!r}")]
