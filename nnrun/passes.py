"""When each node runs: its phase (in the model, per chunk, across chunks, once at the end, as a
sink) and its pass over the dataset: a model node that uses a dataset-level value (a statistic
over the examples, or what follows from one) runs in a later pass than the chunks that statistic
sums up.

Invariants: a node that would silently see one chunk of examples only is an issue; every node
runs in the first pass in which everything it needs exists; per-example
values used together come from the same pass (a chunk's values do not outlive its pass); a
trace runs in one pass as a whole; a graph that would need a statistic of its own pass is an
issue, never an endless loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from nnrun.errors import Issue

if TYPE_CHECKING:
    from nnrun.graph import Graph
    from nnrun.nodes.base import Stmt
    from nnrun.schedule import Schedule, TracePlan

DATASET_LEVEL = ("reduce", "final")
PER_EXAMPLE = ("model", "chunk")


def phases(graph: Graph) -> tuple[dict[str, str], list[Issue]]:
    """When each node runs: in the model (`model`), after the model per chunk of examples
    (`chunk`), across chunks (`reduce`: a statistic over `example`), once after every chunk
    (`final`: downstream of a reduction), or as a sink.

    A node that mixes per-example values with dataset-level ones, or that works along the
    `example` axis without being a reduction, would silently see one chunk only: an issue.
    """
    phase: dict[str, str] = {}
    issues: list[Issue] = []
    for nid in graph.order:
        node = graph.nodes[nid]
        src_phases = {phase[s] for s in node.sources}
        if graph.invoke_of(node.scope) is not None:
            phase[nid] = "model"
        elif node.type.is_sink:
            phase[nid] = "sink"
        elif node.type.reducer(node.params, graph.input_axes(nid)) is not None:
            phase[nid] = "reduce"
        elif src_phases & {"reduce", "final"}:
            phase[nid] = "final"
            mixed = [s for s in node.sources if phase[s] in ("model", "chunk")
                     and "example" in graph.axes[s]]
            if mixed:
                issues.append(Issue("mixes_examples", f"`{nid}` combines a statistic over "
                                    f"examples with the per-example values of `{mixed[0]}`",
                                    node.path, nid, f"reduce `{mixed[0]}` over `example` too "
                                    "(mean, std or sem with axis: example)"))
        else:
            phase[nid] = "chunk"
        if getattr(node.params, "axis", None) == "example" and phase[nid] != "reduce":
            issues.append(Issue("example_axis", f"`{node.type.op}` along `example` would see "
                                "one chunk of examples at a time, not the dataset",
                                node.path + ".axis", nid, "reduce over examples with mean, std "
                                "or sem (axis: example); other ops work per example"))
    return phase, issues


def assign_passes(graph: Graph, phase: dict[str, str]) -> tuple[dict[str, int], list[Issue]]:
    """The pass (0, 1, ...) of every node, by raising passes until nothing needs raising."""
    pass_of = {nid: 0 for nid in graph.order}
    traces: dict[str, list[str]] = {}
    for nid in graph.order:
        if phase[nid] == "model":
            traces.setdefault(graph.trace_of(graph.nodes[nid].scope).id, []).append(nid)
    limit = len(graph.order)
    changed = True
    while changed:
        changed = False
        for nid in graph.order:
            changed |= _raise(graph, phase, pass_of, nid)
        for members in traces.values():
            top = max(pass_of[n] for n in members)
            for n in members:
                changed |= pass_of[n] < top
                pass_of[n] = top
        if max(pass_of.values(), default=0) > limit:
            return pass_of, [_cycle(graph, phase)]
    return pass_of, []


def _raise(graph: Graph, phase: dict[str, str], pass_of: dict[str, int], nid: str) -> bool:
    """Raise `nid` to what its inputs need, and its per-example inputs to its own pass."""
    node, changed = graph.nodes[nid], False
    for src in node.sources:
        later = phase[nid] == "model" and phase[src] in DATASET_LEVEL
        need = pass_of[src] + 1 if later else pass_of[src]
        if need > pass_of[nid]:
            pass_of[nid], changed = need, True
    if phase[nid] in PER_EXAMPLE:
        for src in node.sources:
            if phase[src] in PER_EXAMPLE and pass_of[src] < pass_of[nid]:
                pass_of[src], changed = pass_of[nid], True
    return changed


def _cycle(graph: Graph, phase: dict[str, str]) -> Issue:
    user = next(nid for nid in graph.order if phase[nid] == "model" and any(
        phase[s] in DATASET_LEVEL for s in graph.nodes[nid].sources))
    return Issue("pass_cycle", f"`{user}` uses a statistic over the examples that depends on "
                 "its own trace (or on per-example values used with it)", graph.nodes[user].path,
                 user, "compute the statistic from a trace of its own (it then runs in a "
                 "first pass over the dataset)")


@dataclass
class PassPlan:
    """One pass over the dataset: `run` per chunk (these traces, then `post`), the reducers it
    feeds, then `finish` once (`final`). `given`: dataset-level values of earlier passes that
    its model nodes use; `final_returns`: finish's values used after it."""

    index: int
    traces: list[TracePlan]
    post: list[tuple[str, Stmt]]
    returns: list[str]
    reducers: list[str]
    final: list[tuple[str, Stmt]]
    final_inputs: list[str]
    final_returns: list[str]
    given: list[str]

    @property
    def session(self) -> bool:
        """Several traces (a prefix reuse is several: the prefix run, then one per layer)."""
        return len(self.traces) > 1 or any(t.prefix for t in self.traces)


def split_passes(graph: Graph, s: Schedule, pass_of: dict[str, int]) -> list[PassPlan]:
    """Split the schedule's parts by pass (`pass_of` from `assign_passes`)."""
    def in_pass(nids, k):
        return [n for n in nids if pass_of[n] == k]

    def trace_pass(trace: TracePlan) -> int:
        return max((pass_of[n] for p in trace.invokes for n, _ in p.stmts), default=0)
    plans = []
    for k in range(max(pass_of.values(), default=0) + 1):
        final = [(n, st) for n, st in s.final if pass_of[n] == k]
        mine = {n for n, _ in final}
        inputs = {src for n in mine for src in graph.nodes[n].sources
                  if s.phase[src] == "reduce" or (s.phase[src] == "final" and src not in mine)}
        used_later = {n for n in mine if any(c.id not in mine for c in graph.consumers(n))}
        model = [n for n in graph.order if s.phase[n] == "model" and pass_of[n] == k]
        given = {src for n in model for src in graph.nodes[n].sources
                 if s.phase[src] in ("reduce", "final")}
        plans.append(PassPlan(
            k, [t for t in s.traces if trace_pass(t) == k],
            [(n, st) for n, st in s.post if pass_of[n] == k], in_pass(s.returns, k),
            in_pass(s.reducers, k), final, sorted(inputs, key=graph.order.index),
            sorted(used_later, key=graph.order.index), sorted(given, key=graph.order.index)))
    return plans
