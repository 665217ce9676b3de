"""`sem`: standard error of the mean over one named axis (error bars over `example`)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import AxisReduction, NodeParams, register


@register
class Sem(AxisReduction):
    op = "sem"
    summary = "standard error of the mean over a named axis (std / √n)"
    statistic = "sem"
    method = "{x}.std(dim={dim}) / {x}.shape[{dim}] ** 0.5"

    class Params(NodeParams):
        op: Literal["sem"] = "sem"
        axis: str
