"""Fill a run directory from a compiled experiment and the program's results.

Invariant: sinks write only through `ArtifactContext` (atomic files, recorded in the manifest with
their sha256); every tensor file carries str→str metadata naming node, op, site, layers, positions,
config hash and versions.
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from nnrun.outputs import RunDir, versions


def write_static(out: RunDir, compiled, config: dict[str, Any]) -> None:
    """The resolved config and the program (before the model runs)."""
    out.write_text("config.yaml", yaml.safe_dump(config, sort_keys=False), "config")
    out.write_text("program.py", compiled.program.source, "program")


def write_graph_picture(out: RunDir, compiled) -> None:
    """The picture of the graph, drawn once per graph and then copied (nnrun.picture_cache)."""
    try:
        for path in draw(compiled.graph, out.path / "graph", compiled.binding):
            out.record(path, "graph")
    except Exception as err:  # a picture must never cost the researcher their results
        out.manifest.setdefault("warnings", []).append(f"graph picture failed: {err}")


def draw(graph, stem, binding=None):
    from nnrun.graph_picture import draw_graph
    from nnrun.picture_cache import cached_picture

    scopes = []
    for s in graph.spec.graph.scopes:
        item = {"id": s.id, "kind": s.kind, "parent": s.parent}
        if s.foreach and binding and s.id in binding.invokes:
            b = binding.invokes[s.id]
            item["foreach"] = " × ".join(b.loop_vars) + f" ({len(b.points)} points)"
        scopes.append(item)
    nodes = [{"id": n.id, "op": n.type.op, "kind": n.type.kind, "scope": n.scope}
             for n in graph.nodes.values() if n.of is None]  # named outputs label edges instead
    edges = [{"src": e.src_node, "dst": e.dst_node, "port": e.dst_port, "output": e.src_port}
             for e in graph.spec.graph.edges]
    key = json.dumps([scopes, nodes, edges, graph.spec.name], sort_keys=True, default=str)
    return cached_picture(key, stem, lambda: draw_graph(scopes, nodes, edges, stem,
                                                        title=graph.spec.name))


class SinkSet:
    """Every sink node of a run: fed each chunk's values, then the dataset-level values once."""

    def __init__(self, sinks: dict[str, Any], sources: dict[str, str]) -> None:
        self.sinks, self.sources = sinks, sources

    def update_chunk(self, values: dict[str, Any]) -> None:
        for nid, sink in self.sinks.items():
            if self.sources[nid] in values:
                sink.update(values[self.sources[nid]])

    def close(self, values: dict[str, Any]) -> dict[str, float]:
        """`values`: the reductions over examples and finish()'s values (dataset-level).
        Returns the seconds spent writing tensors (`write`) and drawing figures (`plots`)."""
        import time

        seconds = {"write": 0.0, "plots": 0.0}
        for nid, sink in self.sinks.items():
            t0 = time.perf_counter()
            if self.sources[nid] in values:
                sink.update(values[self.sources[nid]])
            paths = sink.close()
            recorded = {a["path"] for a in sink.ctx.run.manifest["artifacts"]}
            for path in paths:
                if str(path.relative_to(sink.ctx.run.path)) not in recorded:
                    sink.ctx.run.record(path, "plot", sink.node.id)
            phase = "plots" if sink.node.type.kind == "plot" else "write"
            seconds[phase] += time.perf_counter() - t0
        return seconds

    def abort(self) -> None:
        for sink in self.sinks.values():
            sink.abort()


def open_sinks(out: RunDir, compiled, config_hash: str) -> SinkSet:
    """One sink per sink node, in the consumption mode its type declares."""
    from nnrun.sinks import MODES, SinkContext

    graph, binding = compiled.graph, compiled.binding
    sinks, sources = {}, {}
    for node in graph.nodes.values():
        if not node.type.is_sink:
            continue
        src = node.sources[0]
        ctx = SinkContext(out, node.id, src, graph.axes[src], binding.node_coords[src],
                          metadata(compiled, src, config_hash))
        sinks[node.id] = MODES[node.type.sink_mode](node, ctx, binding.n_examples)
        sources[node.id] = src
    return SinkSet(sinks, sources)


def metadata(compiled, node_id: str, config_hash: str) -> dict[str, str]:
    """str→str safetensors metadata describing where a value came from."""
    graph, binding = compiled.graph, compiled.binding
    node = graph.nodes[node_id]
    chain = _upstream_reads(graph, node_id)
    meta = {"node": node_id, "op": node.type.op, "experiment": compiled.spec.name,
            "model": compiled.model.path, "config_sha256": config_hash,
            "examples": str(binding.n_examples), "dataset": binding.dataset.source,
            "versions": json.dumps(versions(), sort_keys=True)}
    reads = [graph.nodes[r].params for r in chain]
    if reads:
        meta["site"] = ",".join(sorted({p.site for p in reads if hasattr(p, "site")}))
        meta["writes"] = ",".join(r for r in chain if graph.nodes[r].type.kind == "write")
        meta["layers"] = json.dumps({p.id: getattr(p, "layer", None) for p in reads})
        meta["positions"] = json.dumps({p.id: _plain(p.position) for p in reads
                                        if hasattr(p, "position")})  # `generated` has none
    resolved = {r: list(binding.positions[r].labels[:MAX_LABELS]) for r in chain
                if r in binding.positions and binding.positions[r].labels}
    invoke_coords = {k: v for k, v in binding.node_coords.get(node_id, {}).items()
                     if k in ("position",)}
    if invoke_coords:
        resolved["position_axis"] = invoke_coords["position"]
    if resolved:
        meta["resolved_positions"] = json.dumps(resolved)
    return meta


MAX_LABELS = 10_000  # per-example position labels kept in a tensor file's metadata


def _plain(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


def _upstream_reads(graph, node_id: str) -> list[str]:
    seen, stack, reads = set(), [node_id], []
    while stack:
        nid = stack.pop()
        if nid in seen:
            continue
        seen.add(nid)
        if graph.nodes[nid].type.touches_model:
            reads.append(nid)
        stack += graph.nodes[nid].sources
    # Writes in the same invoke shaped the value too (e.g. the patch behind patched logits).
    invokes = {graph.invoke_of(graph.nodes[r].scope).id for r in reads}
    reads += [n.id for n in graph.nodes.values() if n.type.touches_model and n.id not in reads
              and graph.invoke_of(n.scope).id in invokes]
    return sorted(reads)
