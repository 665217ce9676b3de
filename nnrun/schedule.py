"""Order a bound graph into an nnsight-valid schedule: traces, invokes, statements, barriers, saves.

Invariants (nnsight 0.8 rules, DESIGN.md §5):
* within one invoke, statements that touch the model are in the model's real firing order, for
  every foreach point; a data dependency that contradicts it is a CompileError, never a runtime one;
* a value crossing invokes of one trace goes through a barrier; one crossing traces needs a session;
* only values used after the outermost trace/session are saved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nnrun.bind import Binding, InvokeBinding
from nnrun.errors import CompileError, Issue, raise_if_issues
from nnrun.graph import Graph
from nnrun.nodes.base import Stmt
from nnrun.schema import ScopeSpec


@dataclass
class InvokePlan:
    scope: ScopeSpec
    binding: InvokeBinding
    stmts: list[tuple[str, Stmt]] = field(default_factory=list)   # (node id, statement)
    step: ScopeSpec | None = None           # generation-step loop around the statements
    barriers: dict[int, list[str]] = field(default_factory=dict)  # call before stmt index
    collect: list[str] = field(default_factory=list)  # loop node values appended per point

    @property
    def looped(self) -> bool:
        return bool(self.binding.loop_vars) or self.step is not None

    @property
    def loop_shape(self) -> tuple[int, ...]:
        steps = (self.step.steps,) if self.step else ()
        return self.binding.shape + steps


@dataclass
class TracePlan:
    scope: ScopeSpec
    invokes: list[InvokePlan] = field(default_factory=list)
    barriers: list[str] = field(default_factory=list)


@dataclass
class Schedule:
    session: bool
    traces: list[TracePlan]
    post: list[tuple[str, Stmt]]
    saves: set[str]          # values (or loop lists) that must leave the outermost context
    returns: list[str]       # values the runner receives (inputs of sinks)
    preambles: list[str]


def make_schedule(graph: Graph, binding: Binding, emit) -> Schedule:
    """Build the schedule. `emit(node_id) -> list[Stmt]` comes from codegen (it knows names).

    Raises:
        CompileError: out-of-order accesses, cross-invoke flows nnsight cannot express.
    """
    issues: list[Issue] = []
    traces = _traces(graph, binding)
    plans = {p.scope.id: p for t in traces for p in t.invokes}
    for node_id in graph.order:
        node = graph.nodes[node_id]
        invoke = graph.invoke_of(node.scope)
        if invoke is None:
            continue
        plan = plans[invoke.id]
        if node.scope and graph.scopes[node.scope].kind == "step":
            plan.step = graph.scopes[node.scope]
        plan.stmts += [(node_id, s) for s in emit(node_id)]
    for plan in plans.values():
        issues += _order_invoke(plan, graph)
    issues += _cross_invoke(graph, traces)
    post = [(nid, s) for nid in graph.order if _is_post(graph, nid) for s in emit(nid)]
    issues += _post_feeds_model(graph)
    raise_if_issues(issues, CompileError, f"experiment `{graph.spec.name}`")
    returns = sorted({src for n in graph.nodes.values() if n.type.is_sink for src in n.sources},
                     key=graph.order.index)
    session = len(traces) > 1
    leaving = {src for n in graph.nodes.values() if _is_post(graph, n.id) or n.type.is_sink
               for src in n.sources}
    saves = {nid for nid in leaving if graph.invoke_of(graph.nodes[nid].scope) is not None}
    _mark_collections(graph, plans)
    preambles = sorted({graph.nodes[n].type.preamble for n in graph.order
                        if graph.nodes[n].type.preamble})
    return Schedule(session, traces, post, saves, returns, preambles)


def _is_post(graph: Graph, node_id: str) -> bool:
    node = graph.nodes[node_id]
    return node.scope is None and not node.type.is_sink


def _traces(graph: Graph, binding: Binding) -> list[TracePlan]:
    """Traces in YAML order, each with its invokes in YAML order (declaration order matters)."""
    traces = []
    for scope in graph.spec.graph.scopes:
        if scope.kind not in ("trace", "generate"):
            continue
        plan = TracePlan(scope)
        members = [scope] if scope.input is not None else [
            s for s in graph.spec.graph.scopes if s.kind == "invoke" and s.parent == scope.id]
        plan.invokes = [InvokePlan(s, binding.invokes[s.id]) for s in members]
        traces.append(plan)
    return traces


def _ranks(plan: InvokePlan, graph: Graph, point: dict) -> list[int | None]:
    info = graph.info
    out = []
    for _, stmt in plan.stmts:
        if stmt.access is None or info is None:
            out.append(None)
            continue
        module = stmt.access.module.replace("{layer}", str(point.get("layer", 0)))
        out.append(info.rank(module, stmt.access.event))
    return out


def _order_invoke(plan: InvokePlan, graph: Graph) -> list[Issue]:
    """Sort statements into firing order (stable w.r.t. data order) and verify every point."""
    points = [dict(zip(plan.binding.loop_vars, p)) for p in plan.binding.points]
    ranks = _ranks(plan, graph, points[0])
    plan.stmts = _list_schedule(plan.stmts, ranks, graph)
    for point in points:
        ranks = [r for r in _ranks(plan, graph, point) if r is not None]
        bad = next((i for i in range(1, len(ranks)) if ranks[i] < ranks[i - 1]), None)
        if bad is not None:
            return [_out_of_order(plan, graph, point)]
    return []


def _list_schedule(stmts, ranks, graph: Graph):
    """Merge per-node statement lists: pure computations as soon as ready, model accesses by rank.

    A node's statements keep their own order; a node starts once all its inputs are complete.
    """
    by_node: dict[str, list[int]] = {}
    for i, (nid, _) in enumerate(stmts):
        by_node.setdefault(nid, []).append(i)
    done_nodes: set[str] = set()
    cursor = {nid: 0 for nid in by_node}
    result = []
    topo = {nid: graph.order.index(nid) for nid in by_node}
    while len(result) < len(stmts):
        ready = [nid for nid in by_node if cursor[nid] < len(by_node[nid]) and all(
            s in done_nodes or s not in by_node for s in graph.nodes[nid].sources)]
        def key(nid):
            i = by_node[nid][cursor[nid]]
            return (ranks[i] is not None, ranks[i] or 0, topo[nid])
        nid = min(ready, key=key)
        result.append(stmts[by_node[nid][cursor[nid]]])
        cursor[nid] += 1
        if cursor[nid] == len(by_node[nid]):
            done_nodes.add(nid)
    return result


def _out_of_order(plan: InvokePlan, graph: Graph, point: dict) -> Issue:
    accesses = [(nid, s.access) for nid, s in plan.stmts if s.access is not None]
    ranks = _ranks(plan, graph, point)
    ranked = [r for r in ranks if r is not None]
    i = next(i for i in range(1, len(ranked)) if ranked[i] < ranked[i - 1])
    (first, a), (second, b) = accesses[i - 1], accesses[i]
    at = f" (at {point})" if point else ""
    node = graph.nodes[second]
    return Issue("out_of_order", f"in invoke `{plan.scope.id}`{at}, node `{second}` needs "
                 f"`{b.module}.{b.event}` after node `{first}` used `{a.module}.{a.event}`, "
                 "which the model computes later", node.path, second,
                 "nnsight requests must follow the forward pass; move one of them to its own "
                 "trace (the traces then run in a session)")


def _cross_invoke(graph: Graph, traces: list[TracePlan]) -> list[Issue]:
    """Insert barriers for edges between invokes of one trace, and check they are reachable."""
    issues = []
    where = {nid: (t, p) for t in traces for p in t.invokes for nid, _ in p.stmts}
    for node in graph.nodes.values():
        for src in node.sources:
            if src not in where or node.id not in where:
                continue
            (t1, p1), (t2, p2) = where[src], where[node.id]
            if t1 is not t2 or p1 is p2:
                continue
            if p1.looped or p2.looped:
                issues.append(Issue("loop_crossing", f"`{node.id}` uses `{src}` from another "
                              "invoke of the same trace, and one of them loops", graph.nodes[
                                  node.id].path, node.id, "put the producer in its own trace"))
                continue
            issues += _add_barrier(graph, t1, p1, p2, src, node.id)
    return issues


def _add_barrier(graph, trace, producer, consumer, src, dst) -> list[Issue]:
    name = f"barrier_{len(trace.barriers)}"
    trace.barriers.append(name)
    after = max(i for i, (nid, _) in enumerate(producer.stmts) if nid == src) + 1
    before = min(i for i, (nid, _) in enumerate(consumer.stmts) if nid == dst)
    producer.barriers.setdefault(after, []).append(name)
    consumer.barriers.setdefault(before, []).append(name)
    def rank(plan: InvokePlan, part: slice) -> list[int]:
        return [r for r in _ranks(plan, graph, {})[part] if r is not None]

    release = max(rank(producer, slice(0, after)) + rank(consumer, slice(0, before)) + [-1])
    later = rank(producer, slice(after, None)) + rank(consumer, slice(before, None))
    if later and min(later) < release:
        return [Issue("out_of_order", f"`{dst}` uses `{src}` from another invoke, but after "
                      "they meet at a barrier the model is already past a site one of them "
                      "still needs", graph.nodes[dst].path, dst,
                      "move the producer to its own trace (the traces then run in a session)")]
    return []


def _post_feeds_model(graph: Graph) -> list[Issue]:
    issues = []
    for node in graph.nodes.values():
        if graph.invoke_of(node.scope) is None:
            continue
        for src in node.sources:
            if _is_post(graph, src):
                issues.append(Issue("post_feeds_model", f"`{node.id}` runs in the model but its "
                              f"input `{src}` runs after the model", graph.nodes[src].path, src,
                              f"give `{src}` the scope `{node.scope}`"))
    return issues


def _mark_collections(graph: Graph, plans: dict[str, InvokePlan]) -> None:
    """Loop-node values used outside their loop are appended to a list per point."""
    for plan in plans.values():
        if not plan.looped:
            continue
        mine = {nid for nid, _ in plan.stmts}
        for nid in dict.fromkeys(n for n, _ in plan.stmts):
            if not graph.nodes[nid].type.has_output:
                continue
            users = [c for c in graph.consumers(nid) if c.id not in mine]
            if users:
                plan.collect.append(nid)
