"""`decode`: turn token ids into their strings (a nested list with the input's shape)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import InputNode, NodeParams, Stmt, register


@register
class Decode(InputNode):
    op = "decode"
    summary = "token ids → token strings (saved as JSON)"
    preamble = '''
def decode_ids(tokenizer, ids):
    """Token strings with the nesting of `ids` (a tensor of token ids)."""
    if ids.dim() == 0:
        return tokenizer.decode([int(ids)])
    return [decode_ids(tokenizer, row) for row in ids]
'''

    class Params(NodeParams):
        op: Literal["decode"] = "decode"

    def out_axes(self, p, in_axes, ctx):
        return in_axes["in"]

    def emit(self, p, ctx):
        return [Stmt(f"{ctx.out} = decode_ids(model.tokenizer, {ctx.input('in')})")]
