"""`rank`: rank of one token among all tokens (1 = the model's top prediction)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, Stmt, VocabMetric, register
from nnrun.refs import TextOrColumn


@register
class Rank(VocabMetric):
    op = "rank"
    summary = "rank of `token` over the `vocab` axis (1 = top prediction)"

    class Params(NodeParams):
        op: Literal["rank"] = "rank"
        token: TextOrColumn

    def token_fields(self, p):
        return {"token": p.token}

    def emit(self, p, ctx):
        x, axes = ctx.input("logits"), ctx.in_axes("logits")
        # Ties count in the token's favour: rank = 1 + number of strictly larger logits.
        chosen = ctx.pick_token(x, "token", axes, keepdim=True)
        return [Stmt(f"{ctx.out} = 1 + ({x} > {chosen}).sum(dim=-1)")]
