"""Build the experiment graph (nodes, edges, scopes) from a spec and lint it, returning ALL problems.

Invariant: a Graph that passed `lint()` has unique ids, no dangling edge, no cycle, legal scope
nesting, every model-touching node inside an invoke, and every site present in the model.
"""

from __future__ import annotations

import graphlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nnrun.errors import GraphError, Issue, raise_if_issues
from nnrun.model_info import ModelInfo
from nnrun.named_outputs import edge_source
from nnrun.nodes import REGISTRY
from nnrun.nodes.base import NodeType
from nnrun.schema import ExperimentSpec, ScopeSpec

# kind → kinds its parent may have (None = top level)
PARENTS: dict[str, tuple[str | None, ...]] = {
    "session": (None,), "trace": (None, "session"), "generate": (None, "session"),
    "invoke": ("trace", "generate"), "step": ("invoke",),
}


@dataclass
class Node:
    """A node with its type and resolved inputs (port → producing node ids, in edge order).
    `of`: set on the projection of a named output (nnrun.named_outputs): its node's id."""

    params: Any
    type: NodeType
    index: int
    inputs: dict[str, list[str]] = field(default_factory=dict)
    of: str | None = None

    @property
    def id(self) -> str:
        return self.params.id

    @property
    def scope(self) -> str | None:
        return self.params.scope

    @property
    def path(self) -> str:
        return f"graph.nodes[{self.index}]"

    @property
    def sources(self) -> list[str]:
        """Producing node ids over all ports, in port then edge order, without repeats."""
        return list(dict.fromkeys(s for srcs in self.inputs.values() for s in srcs))


@dataclass
class Graph:
    """Nodes in YAML order, scopes by id, and derived facts used by later stages."""

    spec: ExperimentSpec
    nodes: dict[str, Node]
    scopes: dict[str, ScopeSpec]
    info: ModelInfo | None = None
    source: Path | None = None    # the experiment file: files it names are relative to it
    order: list[str] = field(default_factory=list)              # topological, deterministic
    point_axes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # per loop point
    axes: dict[str, tuple[str, ...]] = field(default_factory=dict)        # after leaving loops

    # --- scope queries -------------------------------------------------------------------
    def chain(self, scope: str | None) -> list[ScopeSpec]:
        """The scope and its ancestors, innermost first."""
        out: list[ScopeSpec] = []
        while scope is not None and scope in self.scopes and len(out) <= len(self.scopes):
            out.append(self.scopes[scope])
            scope = self.scopes[scope].parent
        return out

    def invoke_of(self, scope: str | None) -> ScopeSpec | None:
        """The invoke a scope runs in: an explicit invoke or a trace/generate with an input."""
        for s in self.chain(scope):
            if s.kind == "invoke" or (s.kind in ("trace", "generate") and s.input is not None):
                return s
        return None

    def trace_of(self, scope: str | None) -> ScopeSpec | None:
        return next((s for s in self.chain(scope) if s.kind in ("trace", "generate")), None)

    def loop_axes(self, scope: str | None) -> tuple[str, ...]:
        """Axes added by loops (foreach, generation steps) around a scope, outermost first."""
        axes: list[str] = []
        for s in reversed(self.chain(scope)):
            axes += list(s.foreach or {})
            if s.kind == "step":
                axes.append("step")
        return tuple(axes)

    def input_axes(self, node_id: str) -> dict[str, tuple[str, ...]]:
        """Each input port's axes as the node receives them: per loop point when the producer
        runs in the same loop (scope) as the node, else after the producer's loops."""
        node = self.nodes[node_id]
        return {port: self.source_axes(node_id, srcs[0]) for port, srcs in node.inputs.items()}

    def source_axes(self, node_id: str, src_id: str) -> tuple[str, ...]:
        scope = self.nodes[src_id].scope
        same_loop = scope == self.nodes[node_id].scope and self.loop_axes(scope)
        return self.point_axes[src_id] if same_loop else self.axes[src_id]

    def consumers(self, node_id: str) -> list[Node]:
        return [n for n in self.nodes.values() if node_id in n.sources]

    def lint(self) -> list[Issue]:
        """Every structural problem of the graph (empty list = valid)."""
        from nnrun.lint import lint_graph

        return lint_graph(self)


def build_graph(spec: ExperimentSpec, info: ModelInfo | None = None,
                indices: list[int] | None = None, source: Path | None = None) -> Graph:
    """Build and lint the graph.

    Args:
        indices: each node's index in the experiment file, when `spec` holds only some of its
            nodes (nnrun.salvage); issues then point at the right `graph.nodes[i]`.
        source: the experiment file (a `function` node's file is found beside it).

    Raises:
        GraphError: with every problem found.
    """
    graph = Graph(spec, {}, {}, info, source)
    for scope in spec.graph.scopes:
        graph.scopes.setdefault(scope.id, scope)
    for index, params in enumerate(spec.graph.nodes):
        index = indices[index] if indices is not None else index
        graph.nodes.setdefault(params.id, Node(params, REGISTRY.get(params.op), index))
    for edge in spec.graph.edges:
        dst, src = graph.nodes.get(edge.dst_node), edge_source(graph, edge)
        if dst is not None and src is not None:  # else lint reports the edge
            dst.inputs.setdefault(edge.dst_port, []).append(src)
    raise_if_issues(graph.lint(), GraphError, f"graph of `{spec.name}`")
    return graph


def topological_order(graph: Graph) -> tuple[list[str], list[str] | None]:
    """Deterministic topological order (YAML order breaks ties) and a cycle if there is one."""
    sorter = graphlib.TopologicalSorter(
        {n.id: set(n.sources) for n in graph.nodes.values()})
    try:
        sorter.prepare()
    except graphlib.CycleError as err:
        return [], list(err.args[1])
    rank = {nid: i for i, nid in enumerate(graph.nodes)}
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=rank.__getitem__)
        order += ready
        sorter.done(*ready)
    return order, None
