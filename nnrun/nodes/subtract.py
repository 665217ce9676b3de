"""`subtract`: elementwise `a - b` (b broadcasts if its axes are a suffix of a's)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import Elementwise, NodeParams, register


@register
class Subtract(Elementwise):
    op = "subtract"
    symbol = "-"
    summary = "a - b, elementwise"

    class Params(NodeParams):
        op: Literal["subtract"] = "subtract"
