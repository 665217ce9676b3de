"""`prob`: probability of one token (softmax over the `vocab` axis, then select the token)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, Stmt, VocabMetric, register
from nnrun.refs import TextOrColumn


@register
class Prob(VocabMetric):
    op = "prob"
    summary = "softmax probability of `token` over the `vocab` axis"

    class Params(NodeParams):
        op: Literal["prob"] = "prob"
        token: TextOrColumn

    def token_fields(self, p):
        return {"token": p.token}

    def emit(self, p, ctx):
        x, axes = ctx.input("logits"), ctx.in_axes("logits")
        return [Stmt(f"{ctx.out} = {ctx.pick_token(f'{x}.float().softmax(dim=-1)', 'token', axes)}")]
