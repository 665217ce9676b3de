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
from nnrun.fastpath import FoldPoints, PrefixReuse, fast_traces
from nnrun.graph import Graph
from nnrun.nodes.base import Stmt
from nnrun.passes import PassPlan, assign_passes, phases, split_passes
from nnrun.schema import ScopeSpec


@dataclass
class InvokePlan:
    scope: ScopeSpec
    binding: InvokeBinding
    stmts: list[tuple[str, Stmt]] = field(default_factory=list)   # (node id, statement)
    step: ScopeSpec | None = None           # generation-step loop around the statements
    step_nodes: set[str] = field(default_factory=set)  # nodes of the step scope (others: step 0)
    barriers: dict[int, list[str]] = field(default_factory=dict)  # call before stmt index
    collect: list[str] = field(default_factory=list)  # loop node values appended per point
    # After the forward statements: the backward pass of one metric's sum (its node id) and
    # the statements inside it, gradient requests in reverse firing order.
    backward: tuple[str, list[tuple[str, Stmt]]] | None = None
    after: list[tuple[str, Stmt]] = field(default_factory=list)  # after the generation steps

    @property
    def all_stmts(self) -> list[tuple[str, Stmt]]:
        """The statements in program order: forward, the backward block, then those after
        the generation steps."""
        return self.stmts + (self.backward[1] if self.backward else []) + self.after

    @property
    def looped(self) -> bool:
        return bool(self.binding.loop_vars) or self.step is not None

    def loops(self, node_id: str) -> bool:
        """Whether the node has one value per foreach point or per generation step."""
        return bool(self.binding.loop_vars) or node_id in self.step_nodes

    def loop_shape(self, node_id: str) -> tuple[int, ...]:
        """Shape of the node's loop axes: the foreach grid, then steps for a step node."""
        steps = (self.step.steps,) if node_id in self.step_nodes else ()
        return self.binding.shape + steps


@dataclass
class TracePlan:
    scope: ScopeSpec
    invokes: list[InvokePlan] = field(default_factory=list)
    barriers: list[str] = field(default_factory=list)
    last_logits: bool = False            # fast path: unembed the last position only
    prefix: PrefixReuse | None = None    # fast path: reuse the unedited run's first blocks
    fold: FoldPoints | None = None       # fast path: the foreach's points as rows of one invoke


@dataclass
class Schedule:
    """The program's parts. Per chunk of examples `run()` executes `traces` then `post` and
    returns `returns`; the runner feeds them to `reducers` (across chunks) and sinks; once, at
    the end, `finish()` executes `final` on the reducers' results and returns `final_returns`.
    """

    session: bool
    traces: list[TracePlan]
    post: list[tuple[str, Stmt]]
    saves: set[str]          # values (or loop lists) that must leave the outermost context
    returns: list[str]       # per-chunk values the runner receives (for reducers and sinks)
    preambles: list[str]
    final: list[tuple[str, Stmt]] = field(default_factory=list)
    reducers: list[str] = field(default_factory=list)
    final_inputs: list[str] = field(default_factory=list)   # reducer results finish() reads
    final_returns: list[str] = field(default_factory=list)  # finish()'s values sinks need
    phase: dict[str, str] = field(default_factory=dict)     # node → model|chunk|reduce|final|sink
    passes: list[PassPlan] = field(default_factory=list)    # one, unless the model uses statistics


def make_schedule(graph: Graph, binding: Binding, emit, fast: bool = True,
                  foldable=lambda node_id: False, prefix: bool = True) -> Schedule:
    """Build the schedule. `emit(node_id, fold=None) -> list[Stmt]` comes from codegen (it
    knows names; `fold`: "points" or "layer" emits the node for a folded invoke, indexing the
    rows of all its points or of one layer's; `foldable(node_id)` says whether it can, see
    NodeType.foldable); `fast` takes the fast paths (nnrun.fastpath) where they give the same
    numbers, prefix reuse only with `prefix`.

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
            plan.step_nodes.add(node_id)
        plan.stmts += [(node_id, s) for s in emit(node_id)]
    for plan in plans.values():
        issues += _step_values_stay_in_steps(plan, graph)
    for plan in plans.values():
        issues += _order_invoke(plan, graph)
    issues += _cross_invoke(graph, traces)
    _mark_collections(graph, plans)
    if fast and not issues:
        traces = fast_traces(traces, graph, emit, foldable, prefix)
    phase, phase_issues = phases(graph)
    pass_of, pass_issues = assign_passes(graph, phase) if not phase_issues else ({}, [])
    issues += phase_issues + pass_issues + _post_feeds_model(graph, phase)
    post = [(nid, s) for nid in graph.order if phase[nid] == "chunk" for s in emit(nid)]
    final = [(nid, s) for nid in graph.order if phase[nid] == "final" for s in emit(nid)]
    raise_if_issues(issues, CompileError, f"experiment `{graph.spec.name}`")
    per_chunk = ("model", "chunk")
    consumers = [n for n in graph.nodes.values() if phase[n.id] in ("reduce", "sink")]
    returns = sorted({src for n in consumers for src in n.sources if phase[src] in per_chunk},
                     key=graph.order.index)
    later = [n for n in graph.nodes.values() if phase[n.id] in ("final", "sink")]
    final_inputs = sorted({src for n in later for src in n.sources if phase[src] == "reduce"
                           and phase[n.id] == "final"}, key=graph.order.index)
    final_returns = sorted({src for n in graph.nodes.values() if phase[n.id] == "sink"
                            for src in n.sources if phase[src] == "final"},
                           key=graph.order.index)
    session = len(traces) > 1 or any(t.prefix or t.fold for t in traces)
    leaving = {src for n in graph.nodes.values() if _is_post(graph, n.id) or n.type.is_sink
               for src in n.sources}
    saves = {nid for nid in leaving if graph.invoke_of(graph.nodes[nid].scope) is not None}
    preambles = sorted({graph.nodes[n].type.preamble for n in graph.order
                        if graph.nodes[n].type.preamble})
    reducers = [nid for nid in graph.order if phase[nid] == "reduce"]
    schedule = Schedule(session, traces, post, saves, returns, preambles, final, reducers,
                        final_inputs, final_returns, phase)
    schedule.passes = split_passes(graph, schedule, pass_of)
    return schedule


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
    return _stmt_ranks(plan.stmts, graph, point)


def _stmt_ranks(stmts, graph: Graph, point: dict) -> list[int | None]:
    info = graph.info
    out = []
    for _, stmt in stmts:
        if stmt.access is None or info is None:
            out.append(None)
            continue
        module = stmt.access.module.replace("{layer}", str(point.get("layer", 0)))
        out.append(info.rank(module, stmt.access.event))
    return out


def _order_invoke(plan: InvokePlan, graph: Graph) -> list[Issue]:
    """Sort statements into firing order (stable w.r.t. data order) and verify every point;
    statements of the backward pass go into `plan.backward`, in reverse firing order."""
    points = [dict(zip(plan.binding.loop_vars, p)) for p in plan.binding.points]
    plan.after = [(nid, s) for nid, s in plan.stmts if s.after_steps]
    plan.stmts = [(nid, s) for nid, s in plan.stmts if not s.after_steps]
    issues = _split_backward(plan, graph, points)
    if issues:
        return issues
    ranks = _ranks(plan, graph, points[0])
    plan.stmts = _list_schedule(plan.stmts, ranks, graph, _backward_inputs(plan))
    for point in points:
        ranks = [r for r in _ranks(plan, graph, point) if r is not None]
        bad = next((i for i in range(1, len(ranks)) if ranks[i] < ranks[i - 1]), None)
        if bad is not None:
            return [_out_of_order(plan, graph, point)]
    return []


def _backward_inputs(plan: InvokePlan) -> dict[str, set[str]]:
    """Per node, the metric its backward statements differentiate: its forward statements
    (binding the activations) must not wait for it."""
    out: dict[str, set[str]] = {}
    for nid, stmt in plan.backward[1] if plan.backward else []:
        out.setdefault(nid, set()).add(stmt.grad_of)
    return out


def _split_backward(plan: InvokePlan, graph: Graph, points: list[dict]) -> list[Issue]:
    """Move the backward statements out of the forward list; check that they differentiate
    one metric computed in this invoke, reachable in reverse firing order at every point."""
    backward = [(nid, s) for nid, s in plan.stmts if s.grad_of is not None]
    if not backward:
        return []
    plan.stmts = [(nid, s) for nid, s in plan.stmts if s.grad_of is None]
    first = backward[0][0]
    node = graph.nodes[first]
    if graph.trace_of(plan.scope.id).kind == "generate":
        return [Issue("grad_in_generate", f"`{first}` needs gradients, which generation does "
                      "not keep (transformers generates without them)", node.path, first,
                      "take gradients in a trace scope")]
    metrics = list(dict.fromkeys(s.grad_of for _, s in backward))
    if len(metrics) > 1:
        return [Issue("several_backward", f"invoke `{plan.scope.id}` differentiates "
                      f"{', '.join(metrics)}; one backward pass per invoke", node.path, first,
                      "take every gradient of this invoke with respect to one metric, or put "
                      "the other metric's gradients in another trace")]
    if metrics[0] not in {nid for nid, _ in plan.stmts}:
        return [Issue("metric_elsewhere", f"`{first}` differentiates `{metrics[0]}`, which is "
                      f"not computed in invoke `{plan.scope.id}`", node.path, first,
                      f"give `{metrics[0]}` (and the reads it uses) the scope of `{first}`")]
    ranks = _stmt_ranks(backward, graph, points[0])
    ordered = _list_schedule(backward, [None if r is None else -r for r in ranks], graph)
    for point in points:
        got = [r for r in _stmt_ranks(ordered, graph, point) if r is not None]
        if any(b > a for a, b in zip(got, got[1:])):
            return [Issue("out_of_order", f"in invoke `{plan.scope.id}`, the gradients are not "
                          "requested in reverse firing order", node.path, first)]
    plan.backward = (metrics[0], ordered)
    return []


def _list_schedule(stmts, ranks, graph: Graph, later: dict[str, set[str]] | None = None):
    """Merge per-node statement lists: pure computations as soon as ready, model accesses by rank.

    A node's statements keep their own order; a node starts once all its inputs are complete,
    except the inputs in `later[node]` (used only by its statements in the backward pass).
    """
    later = later or {}
    by_node: dict[str, list[int]] = {}
    for i, (nid, _) in enumerate(stmts):
        by_node.setdefault(nid, []).append(i)
    done_nodes: set[str] = set()
    cursor = {nid: 0 for nid in by_node}
    result = []
    topo = {nid: graph.order.index(nid) for nid in by_node}
    while len(result) < len(stmts):
        ready = [nid for nid in by_node if cursor[nid] < len(by_node[nid]) and all(
            s in done_nodes or s not in by_node or s in later.get(nid, ())
            for s in graph.nodes[nid].sources)]
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


def _post_feeds_model(graph: Graph, phase: dict[str, str]) -> list[Issue]:
    """A per-example value computed after the model cannot flow back into it (a statistic
    over the examples can: its users run in a later pass)."""
    issues = []
    for node in graph.nodes.values():
        if graph.invoke_of(node.scope) is None:
            continue
        for src in node.sources:
            if _is_post(graph, src) and phase.get(src) not in ("reduce", "final"):
                issues.append(Issue("post_feeds_model", f"`{node.id}` runs in the model but its "
                              f"input `{src}` runs after the model", graph.nodes[src].path, src,
                              f"give `{src}` the scope `{node.scope}`"))
    return issues


def _step_values_stay_in_steps(plan: InvokePlan, graph: Graph) -> list[Issue]:
    """A node of the invoke itself runs once, at step 0 (before the step loop's later steps):
    it cannot use a value that has one entry per generation step."""
    issues = []
    for nid in dict.fromkeys(n for n, _ in plan.stmts):
        if nid in plan.step_nodes:
            continue
        for src in graph.nodes[nid].sources:
            if src in plan.step_nodes:
                issues.append(Issue(
                    "step_value_outside_step", f"`{nid}` runs once per invoke but uses "
                    f"`{src}`, which has a value per generation step", graph.nodes[nid].path,
                    nid, f"give `{nid}` the step scope `{plan.step.id}`, or remove its scope so "
                         "it runs after the model on every step's value"))
    return issues


def _mark_collections(graph: Graph, plans: dict[str, InvokePlan]) -> None:
    """Loop-node values used outside their loop are appended to a list per point."""
    for plan in plans.values():
        if not plan.looped:
            continue
        mine = {nid for nid, _ in plan.stmts + plan.after}
        for nid in dict.fromkeys(n for n, _ in plan.stmts + plan.after):
            if not graph.nodes[nid].type.has_output or not plan.loops(nid):
                continue
            users = [c for c in graph.consumers(nid) if c.id not in mine]
            if users:
                plan.collect.append(nid)
