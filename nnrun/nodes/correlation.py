"""`correlation`: the Pearson correlation of two results cell by cell (e.g. attribution patching
against activation patching over every layer × head), one number."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, Stmt, register


@register
class Correlation(NodeType):
    op = "correlation"
    kind = "metric"
    summary = ("Pearson correlation of two dataset-level results over their cells (NaN cells "
               "skipped): one number")
    inputs = {"a": Port("one result, e.g. the mean attribution per layer × head"),
              "b": Port("the other, with the same axes, e.g. the mean patching effect")}
    preamble = '''
def pearson(a, b):
    """Pearson correlation of two tensors' cells (NaN cells skipped)."""
    a, b = a.double().flatten(), b.double().flatten()
    keep = ~(a.isnan() | b.isnan())
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    return ((a * b).sum() / (a.norm() * b.norm())).float()
'''

    class Params(NodeParams):
        op: Literal["correlation"] = "correlation"

    def out_axes(self, p, in_axes, ctx):
        a, b = in_axes["a"], in_axes["b"]
        if a != b:
            raise ValueError(f"`a` has axes ({', '.join(a)}) and `b` ({', '.join(b)}): "
                             "correlate results over the same cells")
        if "example" in a:
            raise ValueError("correlate dataset-level results (e.g. means over `example`): "
                             "per example, one chunk at a time would be correlated")
        return ()

    def emit(self, p, ctx):
        return [Stmt(f"{ctx.out} = pearson({ctx.input('a')}, {ctx.input('b')})")]
