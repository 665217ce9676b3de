"""`topk_tokens`: the k most likely tokens of logits, as [token, probability] pairs (for tables)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, StrictInt

from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, register


@register
class TopKTokens(NodeType):
    op = "topk_tokens"
    scannable = False  # token ids become text: fake tensors under scan have no values
    summary = ("the k most likely tokens over the `vocab` axis as [token, probability] pairs "
               "(a `k` axis; for `table`)")
    inputs = {"logits": Port("logits with a trailing `vocab` axis")}
    preamble = '''
def topk_entries(tokenizer, logits, k):
    """[token, probability] of the k most likely tokens, nested like logits' leading dims."""
    probs, ids = logits.float().softmax(dim=-1).topk(k, dim=-1)
    if probs.dim() == 1:
        return [[tokenizer.decode([int(i)]), round(float(p), 6)] for p, i in zip(probs, ids)]
    return [topk_entries(tokenizer, row, k) for row in logits]
'''

    class Params(NodeParams):
        op: Literal["topk_tokens"] = "topk_tokens"
        k: StrictInt = Field(5, ge=1, description="how many tokens per cell")

    def out_axes(self, p, in_axes, ctx):
        axes = in_axes["logits"]
        if not axes or axes[-1] != "vocab":
            raise ValueError(f"logits must end in a `vocab` axis (got: {', '.join(axes)})")
        return axes[:-1] + ("k",)

    def coords(self, p, info):
        return {"k": [str(rank) for rank in range(1, p.k + 1)]}   # rank 1 = most likely

    def emit(self, p, ctx):
        return [Stmt(f"{ctx.out} = topk_entries(model.tokenizer, {ctx.input('logits')}, {p.k})")]
