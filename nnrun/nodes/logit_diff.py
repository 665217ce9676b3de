"""`logit_diff`: logit of the answer token minus logit of the foil token (the patching metric)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, register


@register
class LogitDiff(NodeType):
    op = "logit_diff"
    kind = "metric"
    summary = "logits[answer] − logits[foil] over the `vocab` axis"
    inputs = {"logits": Port("logits with a trailing `vocab` axis")}

    class Params(NodeParams):
        op: Literal["logit_diff"] = "logit_diff"
        answer: str
        foil: str

    def tokens(self, p):
        return [p.answer, p.foil]

    def out_axes(self, p, in_axes, ctx):
        axes = in_axes["logits"]
        if not axes or axes[-1] != "vocab":
            raise ValueError(f"logits must end in a `vocab` axis (got: {', '.join(axes)})")
        return axes[:-1]

    def emit(self, p, ctx):
        x, a, f = ctx.input("logits"), ctx.token_id(p.answer), ctx.token_id(p.foil)
        return [Stmt(f"{ctx.out} = {x}[..., {a}] - {x}[..., {f}]  "
                     f"# {p.answer!r} vs {p.foil!r}")]
