"""`prob`: probability of one token (softmax over the `vocab` axis, then select the token)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, Stmt, VocabMetric, register


@register
class Prob(VocabMetric):
    op = "prob"
    summary = "softmax probability of `token` over the `vocab` axis"

    class Params(NodeParams):
        op: Literal["prob"] = "prob"
        token: str

    def tokens(self, p):
        return [p.token]

    def emit(self, p, ctx):
        x, t = ctx.input("logits"), ctx.token_id(p.token)
        return [Stmt(f"{ctx.out} = {x}.float().softmax(dim=-1)[..., {t}]  # {p.token!r}")]
