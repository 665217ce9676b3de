"""`log_softmax`: log_softmax over a named axis (default: the last, e.g. `vocab`)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import AxisFunction, NodeParams, register


@register
class LogSoftmax(AxisFunction):
    op = "log_softmax"
    method = "log_softmax"
    summary = "log_softmax over an axis (default: last)"

    class Params(NodeParams):
        op: Literal["log_softmax"] = "log_softmax"
        axis: str | None = None
