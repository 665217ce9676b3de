"""`save`: write a value to `tensors/<id>.safetensors` (token strings go to `tensors/<id>.json`)."""

from __future__ import annotations

from typing import Literal

from nnrun.nodes.base import NodeParams, NodeType, Port, register


@register
class Save(NodeType):
    op = "save"
    kind = "save"
    summary = "write the input to tensors/<id>.safetensors with its axes and metadata"
    inputs = {"in": Port("value to save")}
    is_sink = True
    sink_mode = "stream"
    has_output = False
    exported = True

    class Params(NodeParams):
        op: Literal["save"] = "save"

    def write_artifacts(self, p, value, ctx):
        return [ctx.write_value(p.id, value)]
