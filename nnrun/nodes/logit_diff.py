"""`logit_diff`: logit of the answer token minus logit of the foil token (the patching metric)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, Stmt, VocabMetric, register
from nnrun.refs import TextOrColumn


@register
class LogitDiff(VocabMetric):
    op = "logit_diff"
    summary = "logits[answer] − logits[foil] over the `vocab` axis (per example: a column works)"

    class Params(NodeParams):
        op: Literal["logit_diff"] = "logit_diff"
        answer: TextOrColumn
        foil: TextOrColumn

    def token_fields(self, p):
        return {"answer": p.answer, "foil": p.foil}

    def emit(self, p, ctx):
        x, axes = ctx.input("logits"), ctx.in_axes("logits")
        answer, foil = ctx.pick_token(x, "answer", axes), ctx.pick_token(x, "foil", axes)
        return [Stmt(f"{ctx.out} = {answer} - {foil}")]
