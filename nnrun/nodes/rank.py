"""`rank`: rank of one token among all tokens (1 = the model's top prediction)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, register


@register
class Rank(NodeType):
    op = "rank"
    kind = "metric"
    summary = "rank of `token` over the `vocab` axis (1 = top prediction)"
    inputs = {"logits": Port("logits with a trailing `vocab` axis")}

    class Params(NodeParams):
        op: Literal["rank"] = "rank"
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
        # Ties count in the token's favour: rank = 1 + number of strictly larger logits.
        return [Stmt(f"{ctx.out} = 1 + ({x} > {x}[..., {t}:{t + 1}]).sum(dim=-1)  # {p.token!r}")]
