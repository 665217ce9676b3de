"""Named outputs (`src: node.port`): every output of a multi-output node that an edge uses becomes
a value of its own in the graph, a projection node `node.port` taking attribute `port` of the
node's value (torch.fx lowers multi-output calls to `getitem` nodes the same way). Every later
stage (axes, schedule, passes, generated names, saves, sinks, export) then sees one more node
with one output and needs no notion of ports.

Invariants: a projection's id is `node.port` (a dot, which no user id has: no clash), it has
its node's scope and YAML path and exactly one input, the node; its axes are those the node's
`out_axes` gives that output by name, set with the node's (never recomputed); a bare
`src: node` of a multi-output node reads its `default_output`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from nnrun.errors import Issue, close_matches
from nnrun.nodes.base import Axes, NodeType, Port, Stmt

if TYPE_CHECKING:
    from nnrun.graph import Graph, Node
    from nnrun.schema import EdgeSpec


class OutputParams(BaseModel):
    """The params of a projection: which output of which node (made here, never from YAML)."""

    model_config = ConfigDict(frozen=True)

    id: str
    op: str
    scope: str | None
    port: str


class NamedOutput(NodeType):
    """One named output of a node, as a node: `value.port` of the node's value."""

    inputs = {"in": Port("the node whose output this is")}

    def __init__(self, owner: NodeType, port: str) -> None:
        # Reported, drawn and grouped as the node it belongs to (metadata `op`, plot titles).
        self.op, self.kind, self.scannable = owner.op, owner.kind, owner.scannable  # type: ignore[misc]
        self.summary = owner.outputs[port].doc  # type: ignore[misc]

    def emit(self, p: Any, ctx: Any) -> list[Stmt]:
        return [Stmt(f"{ctx.out} = {ctx.input('in')}.{p.port}")]


def output_id(node_id: str, port: str) -> str:
    return f"{node_id}.{port}"


def edge_source(graph: Graph, edge: EdgeSpec) -> str | None:
    """The id of the value an edge reads: its source node, or the projection of the named
    output it picks (added to the graph the first time). None when the reference is invalid
    (lint reports it, see `source_issues`)."""
    node = graph.nodes.get(edge.src_node)
    if node is None:
        return None
    if not node.type.outputs:
        return node.id if edge.src_port is None else None
    port = edge.src_port or node.type.default_output(node.params)
    if port not in node.type.outputs:
        return None
    return _projection(graph, node, port).id


def _projection(graph: Graph, node: Node, port: str) -> Node:
    from nnrun.graph import Node

    pid = output_id(node.id, port)
    if pid not in graph.nodes:
        params = OutputParams(id=pid, op=node.type.op, scope=node.scope, port=port)
        graph.nodes[pid] = Node(params, NamedOutput(node.type, port), node.index,
                                {"in": [node.id]}, of=node.id)
    return graph.nodes[pid]


def source_issues(edge: EdgeSpec, node: Node, path: str) -> list[Issue]:
    """Problems of an edge's `src` naming one of the source node's outputs (or not naming one
    where it must)."""
    port, outputs = edge.src_port, node.type.outputs
    listed = ", ".join(outputs)
    what = f"`{node.id}` ({node.type.op})"
    if port is None:
        if outputs and node.type.default_output(node.params) is None:
            return [Issue("output_not_named", f"{what} has several outputs; the edge must name "
                          "one", path, node.id, f"e.g. src: {output_id(node.id, next(iter(outputs)))}"
                          f" (its outputs: {listed})")]
        return []
    if not outputs:
        return [Issue("no_named_outputs", f"{what} has one output, not named ones, so "
                      f"`.{port}` names nothing", path, node.id, f"use src: {node.id}")]
    if port not in outputs:
        close = close_matches(port, outputs)
        guess = f"did you mean `{output_id(node.id, close[0])}`? " if close else ""
        return [Issue("unknown_output", f"{what} has no output `{port}`", path, node.id,
                      f"{guess}its outputs: {listed}")]
    return []


def record_output_axes(graph: Graph, node: Node, axes: Any) -> Axes:
    """Set the axes of the node's projections from its `out_axes` (one tuple per output);
    return those of its default output (shown as the node's own, in comments).

    Raises:
        TypeError: the node type's `out_axes` does not give every output's axes (a bug in the
            node type, not in the experiment).
    """
    outputs = node.type.outputs
    if not isinstance(axes, dict) or set(axes) != set(outputs):
        raise TypeError(f"{type(node.type).__name__}.out_axes must return the axes of each "
                        f"named output ({', '.join(outputs)}) by name, got {axes!r}")
    loops = graph.loop_axes(node.scope)
    for port, point in axes.items():
        pid = output_id(node.id, port)
        if pid in graph.nodes:
            graph.point_axes[pid], graph.axes[pid] = tuple(point), loops + tuple(point)
    return tuple(axes.get(node.type.default_output(node.params), ()))
