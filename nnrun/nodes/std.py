"""`std`: sample standard deviation over one named axis (e.g. the spread over `example`)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import AxisReduction, NodeParams, register


@register
class Std(AxisReduction):
    op = "std"
    summary = "sample standard deviation over a named axis (over `example`: the whole dataset)"
    statistic = "std"
    method = "{x}.std(dim={dim})"

    class Params(NodeParams):
        op: Literal["std"] = "std"
        axis: str
