"""One pass, every mistake: when some nodes of an experiment file break the format, the graph made
of the others is still checked, so a researcher sees schema and graph problems in one report
instead of one wave per run.

Invariant: only problems that stand on their own are added. A broken node is left out, and so is
every node downstream of it (its inputs are unknown), so nothing reported is a mere consequence
of a mistake already reported.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from nnrun.errors import Issue, NnrunError
from nnrun.schema import EXPERIMENT_KEYS, AnyNode, ExperimentSpec

_NODE = TypeAdapter(AnyNode)


def graph_issues(config: dict[str, Any], info) -> list[Issue]:
    """Graph problems among the nodes that match the format (empty: nothing to add)."""
    data = {k: config[k] for k in EXPERIMENT_KEYS if k in config}
    graph = data.get("graph")
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    if not isinstance(nodes, list):
        return []
    kept, broken = [], set()
    for index, raw in enumerate(nodes):
        try:
            _NODE.validate_python(raw)
            kept.append(index)
        except ValidationError:
            broken.add(_intended_id(raw))
    if not broken:
        return []   # the format problems are elsewhere (scopes, edges, ...): nothing to salvage
    try:
        spec = ExperimentSpec.model_validate(
            {**data, "graph": {**graph, "nodes": [nodes[i] for i in kept]}})
    except ValidationError:
        return []   # other parts are broken too: the schema report stands alone
    from nnrun.graph import build_graph

    try:
        build_graph(spec, info, indices=kept)
    except NnrunError as err:
        tainted = _downstream(broken, graph.get("edges"))
        # A broken node without an id may be what any unknown edge endpoint meant.
        nameless = None in broken
        return [i for i in err.issues if i.node not in tainted
                and not any(f"`{t}`" in i.message for t in tainted if t)
                and not (nameless and i.code == "dangling_edge")]
    return []


def _intended_id(raw: Any) -> str | None:
    """The id a broken node was meant to have: its `id`, or the bare string written in its
    place (`- save_effect`); None when there is no telling."""
    if isinstance(raw, dict):
        return raw.get("id") if isinstance(raw.get("id"), str) else None
    return raw if isinstance(raw, str) else None


def _downstream(broken: set, edges: Any) -> set:
    """The broken nodes and every node fed by them, from the raw edges."""
    tainted = set(broken)
    pairs = [(_node_of(e.get("src")), str(e.get("dst", "")).split(".")[0])
             for e in edges or [] if isinstance(e, dict)]
    changed = True
    while changed:
        changed = False
        for src, dst in pairs:
            if src in tainted and dst not in tainted:
                tainted.add(dst)
                changed = True
    return tainted


def _node_of(src: Any) -> Any:
    """The node an edge's `src` names (`top.values` is an output of `top`)."""
    return src.split(".")[0] if isinstance(src, str) else src
