"""`stage=plan`: run the compiled program under nnsight's `scan` (fake tensors, no weights) and
report what a real run would compute and keep.

Invariant: no weights are loaded; a program that would fail at run time with an out-of-order access
or a shape mismatch fails here the same way (as a RunError naming the node). Generation programs
cannot be scanned (nnsight limitation), so their shapes are derived from the config instead.
"""

from __future__ import annotations

SCAN_EXAMPLES = 2  # enough to keep the example axis an axis (never squeezed away)


class ScanModel:
    """Forwards everything to a lazy nnsight model, except that `trace` becomes `scan`."""

    def __init__(self, lazy) -> None:
        self._lazy = lazy

    def __getattr__(self, name):
        return self._lazy.scan if name == "trace" else getattr(self._lazy, name)


def plan_report(compiled) -> str:
    from nnrun.chunks import chunk_data, chunk_ranges, dtype_bytes
    from nnrun.models import load_lazy
    from nnrun.run import call_program, import_program, materialize

    schedule, binding = compiled.program.schedule, compiled.binding
    chunks = chunk_ranges(binding.n_examples, compiled.batch_size)
    lines = [f"plan for `{compiled.spec.name}` on {compiled.model.name} (no weights loaded):",
             f"  {binding.n_examples} example(s) from "
             f"{'the experiment' if binding.dataset.source == 'none' else binding.dataset.source}"
             f", in {len(chunks)} "
             f"chunk(s) of up to {compiled.batch_size}; one compiled program serves every chunk"]
    for trace in schedule.traces:
        lines.append(f"  {_trace_label(trace, schedule)}: {_trace_form(trace)}")
        if trace.fold is not None and compiled.max_points:
            lines.append(f"    at most {compiled.max_points} points per forward pass: all of "
                         "them at once would exceed the activation budget")
    unscannable = any(n.type.needs_grad or not n.type.scannable
                      for n in compiled.graph.nodes.values())
    if unscannable or any(t.scope.kind == "generate" for t in schedule.traces):
        shapes = {nid: derived_shape(compiled, nid) for nid in schedule.returns}
        lines.append("  (generation, gradients, decoded text and your own functions are not "
                     "scanned; shapes derived from the config)")
    else:  # the first chunk under scan; the example axis then scales to the whole dataset
        program = scan_program(compiled)
        path = materialize(program)
        lazy, values = ScanModel(load_lazy(compiled.model)), {}
        scanned = scanned_examples(binding, *chunks[0])
        for run, _, given in import_program(path).PASSES:
            data = chunk_data(binding, *scanned, device="meta")
            data["given"] = {nid: _fake(compiled, nid) for nid in given}   # earlier passes'
            values.update(call_program(program, path, run, lazy, data, graph=compiled.graph))
        shapes = {nid: _whole_dataset(compiled, nid, list(getattr(values[nid], "shape", [])))
                  for nid in schedule.returns}
    itemsize = dtype_bytes(compiled.model.dtype)
    total = 0
    for nid, shape in shapes.items():
        count = 1
        for s in shape:
            count *= s
        total += count * itemsize
        axes = compiled.graph.axes[nid]
        lines.append(f"  {nid:<20} ({', '.join(axes)}) = {tuple(shape)}  {count * itemsize:,} B")
    lines.append(f"  per-example values over the dataset: {total:,} bytes; program.py: "
                 f"{len(compiled.program.source.splitlines())} lines")
    return "\n".join(lines + _budget_lines(compiled))


def _budget_lines(compiled) -> list[str]:
    from nnrun.budget import human

    need, budget = compiled.memory, compiled.memory_budget
    if budget is None:
        return need.lines() + ["  memory budget: none (memory_budget=null)"]
    verdict = "fits" if need.total <= budget else "DOES NOT FIT: `run` will refuse it"
    return need.lines() + [f"  memory budget: {human(budget)} ({verdict})"]


def scan_program(compiled):
    """The program the scan runs: the compiled one, or where it reuses prefixes, the same
    without prefix reuse. The fast paths give the same values, so the same shapes; fake
    tensors cost per operation, and a trace per layer cost ~0.4 s each (head_patching: 18
    traces). The scan also runs every folded grid in one piece (`chunk_data` without
    `max_points`): it holds no data, so the memory cap does not apply."""
    from nnrun.codegen import generate

    schedule = compiled.program.schedule
    if not any(t.prefix is not None for t in schedule.traces):
        return compiled.program
    return generate(compiled.graph, compiled.binding, prefix=False)


def scanned_examples(binding, start: int, stop: int) -> tuple[int, int]:
    """The examples of the first chunk that the scan runs. Fake tensors cost per operation and
    nnsight batches every example's input separately, so scanning a chunk of 128 examples took
    ~3x as long as scanning 2, for the same shapes: every value is per example (an op over the
    example axis is a compile error), and the example axis is scaled to the dataset afterwards.
    Only where each invoke's prompts in the chunk have one length: otherwise left padding to the
    longest prompt sets the position axis, and the whole chunk is scanned."""
    if all(len(set(b.lengths[start:stop])) <= 1 for b in binding.invokes.values()):
        return start, min(stop, start + SCAN_EXAMPLES)
    return start, stop


def _fake(compiled, nid: str):
    """A dataset-level value of an earlier pass, as zeros of its shape (no weights ran)."""
    import torch

    return torch.zeros(derived_shape(compiled, nid), device="meta")


def _whole_dataset(compiled, nid: str, shape: list[int]) -> list[int]:
    axes = compiled.graph.axes[nid]
    if "example" in axes and shape:
        shape[axes.index("example")] = compiled.binding.n_examples
    return shape


def derived_shape(compiled, nid) -> list[int]:
    """A value's shape over the whole dataset from the config alone (axes, tick labels, sizes)."""
    info, coords = compiled.graph.info, compiled.binding.node_coords.get(nid, {})
    sizes = {"hidden": info.hidden_size, "vocab": info.vocab_size, "head_dim": info.head_dim,
             "head": info.n_heads, "example": compiled.binding.n_examples}
    loops = {}
    for plan in (p for t in compiled.program.schedule.traces for p in t.invokes):
        if plan.step is not None:
            loops["step"] = plan.step.steps
    return [len(coords[a]) if a in coords else loops.get(a, sizes.get(a, 1))
            for a in compiled.graph.axes[nid]]


def _trace_label(trace, schedule) -> str:
    """The trace's scope, and its invokes when the scope runs as several traces (a foreach
    invoke in a trace of its own takes a fast path, nnrun.fastpath.fast_traces)."""
    label = f"{trace.scope.kind} `{trace.scope.id}`"
    if sum(t.scope.id == trace.scope.id for t in schedule.traces) > 1:
        label += " (" + ", ".join(f"`{p.scope.id}`" for p in trace.invokes) + ")"
    return label


def _trace_form(trace) -> str:
    """How a trace runs per chunk, fast paths included (nnrun.fastpath)."""
    n = sum(len(p.binding.points) for p in trace.invokes)
    logits = "; logits of the last position only" if trace.last_logits else ""
    folded = "one invoke whose rows are the points (folded)"
    if trace.prefix is None:
        if trace.fold is not None:
            return f"{n} points per chunk: {folded}, one batched forward pass{logits}"
        return f"{n} invoke(s) per chunk in one batched forward pass{logits}"
    layers = len({point[0] for point in trace.invokes[0].binding.points})
    per_layer = folded if trace.fold is not None else "one invoke per point"
    return (f"{n} points per chunk: a prefix run of blocks 0..{trace.prefix.depth - 1}, then "
            f"one forward pass per layer ({layers}) of {per_layer}, reusing the blocks before "
            f"their layer{logits}")
