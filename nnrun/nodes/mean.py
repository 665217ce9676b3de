"""`mean`: average over one named axis (`example` over the dataset, `position` over tokens)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import AxisReduction, NodeParams, register


@register
class Mean(AxisReduction):
    op = "mean"
    summary = "mean over a named axis (over `example`: the whole dataset; NaN padding skipped)"
    statistic = "mean"
    # nanmean: positions past the end of a shorter prompt are NaN and must not count.
    method = "{x}.nanmean(dim={dim})"

    class Params(NodeParams):
        op: Literal["mean"] = "mean"
        axis: str
