"""`logit_diff`: logit of the answer token minus logit of the foil token (the patching metric)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, Stmt, VocabMetric, register


@register
class LogitDiff(VocabMetric):
    op = "logit_diff"
    summary = "logits[answer] − logits[foil] over the `vocab` axis"

    class Params(NodeParams):
        op: Literal["logit_diff"] = "logit_diff"
        answer: str
        foil: str

    def tokens(self, p):
        return [p.answer, p.foil]

    def emit(self, p, ctx):
        x, a, f = ctx.input("logits"), ctx.token_id(p.answer), ctx.token_id(p.foil)
        return [Stmt(f"{ctx.out} = {x}[..., {a}] - {x}[..., {f}]  "
                     f"# {p.answer!r} vs {p.foil!r}")]
