"""`stage=plan`: what a run would compute and save, without loading any weights.

Invariant: shapes come from the model's config and the bound prompts (no weights are read); the
report lists every value the sinks receive with its axes, shape and bytes, and the program's size.
"""

from __future__ import annotations


def plan_report(compiled) -> str:
    graph, binding, info = compiled.graph, compiled.binding, compiled.graph.info
    sizes = {"hidden": info.hidden_size, "vocab": info.vocab_size, "layer": info.n_layers}
    lines = [f"plan for `{compiled.spec.name}` on {compiled.model.name}:"]
    for trace in compiled.program.schedule.traces:
        n = sum(len(p.binding.points) for p in trace.invokes)
        lines.append(f"  {trace.scope.kind} `{trace.scope.id}`: {len(trace.invokes)} invoke "
                     f"scope(s), {n} invoke(s) in one batched forward pass")
    total = 0
    for nid in compiled.program.schedule.returns:
        shape = _shape(graph, binding, nid, sizes)
        count = 1
        for s in shape:
            count *= s
        total += count * 4
        axes = graph.axes[nid]
        lines.append(f"  {nid:<20} ({', '.join(axes)}) = {tuple(shape)}  ~{count * 4:,} bytes")
    lines.append(f"  total kept after the run: ~{total:,} bytes (float32)")
    lines.append(f"  program: {len(compiled.program.source.splitlines())} lines")
    return "\n".join(lines)


def _shape(graph, binding, nid, sizes) -> list[int]:
    coords = binding.node_coords.get(nid, {})
    shape = []
    for axis in graph.axes[nid]:
        if axis in coords:
            shape.append(len(coords[axis]))
        elif axis == "batch":
            shape.append(1)
        else:
            shape.append(sizes.get(axis, 1))
    return shape
