"""`decode`: turn token ids into their strings (a nested list with the input's shape)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.nodes.base import InputNode, NodeParams, Stmt, dim_of, drop_axis, register


@register
class Decode(InputNode):
    op = "decode"
    scannable = False  # token ids become text: fake tensors under scan have no values
    summary = ("token ids → token strings (saved as JSON); `join: step` decodes the tokens "
               "along an axis as one text (generated continuations)")
    preamble = '''
def decode_ids(tokenizer, ids, join=False):
    """Token strings with the nesting of `ids` (a tensor of token ids); with `join`, the last
    dimension is decoded as one text."""
    if ids.dim() == (1 if join else 0):
        return tokenizer.decode(ids.tolist() if join else [int(ids)])
    return [decode_ids(tokenizer, row, join) for row in ids]
'''

    class Params(NodeParams):
        op: Literal["decode"] = "decode"
        join: str | None = Field(None, description="an axis whose tokens are decoded together "
                                                   "as one text (e.g. step)")

    def out_axes(self, p, in_axes, ctx):
        return drop_axis(in_axes["in"], p.join) if p.join else in_axes["in"]

    def emit(self, p, ctx):
        ids = ctx.input("in")
        if p.join is None:
            return [Stmt(f"{ctx.out} = decode_ids(model.tokenizer, {ids})")]
        dim = dim_of(ctx.in_axes("in"), p.join)
        return [Stmt(f"{ctx.out} = decode_ids(model.tokenizer, {ids}.movedim({dim}, -1), "
                     "join=True)")]
