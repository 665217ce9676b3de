"""`softmax`: softmax over a named axis (default: the last, e.g. `vocab`)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import AxisFunction, NodeParams, register


@register
class Softmax(AxisFunction):
    op = "softmax"
    method = "softmax"
    summary = "softmax over an axis (default: last)"

    class Params(NodeParams):
        op: Literal["softmax"] = "softmax"
        axis: str | None = None
