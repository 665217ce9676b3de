"""`rank`: rank of one token among all tokens (1 = the model's top prediction)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, Stmt, VocabMetric, register


@register
class Rank(VocabMetric):
    op = "rank"
    summary = "rank of `token` over the `vocab` axis (1 = top prediction)"

    class Params(NodeParams):
        op: Literal["rank"] = "rank"
        token: str

    def tokens(self, p):
        return [p.token]

    def emit(self, p, ctx):
        x, t = ctx.input("logits"), ctx.token_id(p.token)
        # Ties count in the token's favour: rank = 1 + number of strictly larger logits.
        return [Stmt(f"{ctx.out} = 1 + ({x} > {x}[..., {t}:{t + 1}]).sum(dim=-1)  # {p.token!r}")]
