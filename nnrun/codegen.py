"""Turn a bound graph into the source of an nnsight program (`program.py`) with a line → node map.

The program is a function of its data (torch.fx's `PythonCode` idea): `run(model, data)` runs one
chunk of examples; prompts, loop points, per-example positions and answer ids arrive in `data`,
never as literals, so one compiled program serves every chunk of a dataset and every sweep point
that differs only in data. `finish(values)` runs once, after the reductions over examples.

Invariants: pure text generation (the same graph and model structure give the same source, byte for
byte, so the content-addressed file name is stable); every user string reaches the source only as
a Python literal (`repr`) inside a comment or an expression, never spliced as code; every name is
claimed from one namespace, so node ids never collide with generated names or loop variables.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace

from nnrun import __version__
from nnrun.bind import Binding
from nnrun.emit import LOOP_NAMES, MAX_PROGRAM_LINES, PROGRAM_NAMES, EmitContext, Namespace
from nnrun.graph import Graph
from nnrun.passes import PassPlan
from nnrun.sampling import generate_kwargs
from nnrun.schedule import InvokePlan, Schedule, TracePlan, make_schedule


@dataclass
class Program:
    """Generated source, per line number the node that line belongs to, and the schedule."""

    source: str
    line_map: dict[int, str]
    schedule: Schedule

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]


@dataclass
class _Writer:
    lines: list[str] = field(default_factory=list)
    line_map: dict[int, str] = field(default_factory=dict)

    def add(self, indent: int, text: str, node: str | None = None) -> None:
        for part in text.split("\n"):
            self.lines.append("    " * indent + part if part else "")
            if node:
                self.line_map[len(self.lines)] = node


RUN_PROLOGUE = '''\
rows = data["rows"]  # (example,) 0..n-1 within this chunk
prompts = data["prompts"]  # invoke scope -> input_ids, attention_mask: (example, position), tokenized once
points = data["points"]  # foreach scope -> its loop points
index = data["index"]  # node -> positions counted from the end: slice | (example,) | (example, position)
mask = data["mask"]  # node -> (example, position): True where the prompt has that token
tokens = data["tokens"]  # "node.field" -> (example,) token ids
backend = data["backend"]  # keyword arguments of the outermost context: {} here, remote=... for NDIF'''


def generate(graph: Graph, binding: Binding, source_name: str = "",
             fast: bool = True, prefix: bool = True) -> Program:
    """Compile the graph into a Program (schedule + source text); `fast`: take the fast paths
    where they give the same numbers (nnrun.fastpath), prefix reuse only with `prefix`."""
    from nnrun.codegen_fast import fold_rows  # it imports this module's writers: loaded after
    from nnrun.emit import node_definitions

    definitions = node_definitions(graph)  # their names are reserved: nothing shadows them
    names = Namespace(PROGRAM_NAMES + _preamble_names()
                      + tuple(n for d in definitions for n in d.names))
    for variable in LOOP_NAMES:
        names.name(("loop", variable), variable)
    # Node values claim their ids first (the experiment's own, then named outputs such as
    # `top.values` → top_values): derived names yield to them.
    for nid in sorted(graph.order, key=lambda nid: graph.nodes[nid].of is not None):
        names.name(("node", nid), nid)
    ctx = {nid: EmitContext(graph, binding, nid, names) for nid in graph.nodes}

    def emit(nid: str, fold: str | None = None):
        scope = graph.invoke_of(graph.nodes[nid].scope)
        at = ctx[nid] if fold is None else \
            replace(ctx[nid], fold=fold_rows(names, binding.invokes[scope.id], fold))
        return graph.nodes[nid].type.emit(graph.nodes[nid].params, at)

    def foldable(nid: str) -> bool:
        return graph.nodes[nid].type.foldable(graph.nodes[nid].params, ctx[nid])

    schedule = make_schedule(graph, binding, emit, fast, foldable, prefix)
    w = _Writer()
    _header(w, graph, schedule, source_name)
    for block in definitions:  # a node's own block maps to it: a failure inside names the node
        w.add(0, block.code.rstrip() + "\n\n", block.node)
    functions = []
    for plan in schedule.passes:
        run, finish = ("run", "finish") if plan.index == 0 else (
            names.name(("pass", plan.index), f"run_{plan.index}"),
            names.name(("pass_finish", plan.index), f"finish_{plan.index}"))
        _run(w, run, plan, graph, schedule, names)
        _finish(w, finish, plan, graph, names)
        functions.append(f"({run}, {finish}, {tuple(plan.given)!r})")
    w.add(0, "")
    w.add(0, "")
    w.add(0, "# The passes over the dataset, in order: (run per chunk, finish once, the values of "
             "earlier passes\n# that run() takes from data['given']).")
    w.add(0, f"PASSES = [{', '.join(functions)}]")
    if len(w.lines) > MAX_PROGRAM_LINES:
        from nnrun.errors import CompileError, Issue

        raise CompileError("the program is too large:", [Issue(
            "program_too_large", f"{len(w.lines):,} lines (limit {MAX_PROGRAM_LINES:,})",
            "graph", hint="use foreach or a dataset instead of listing nodes one by one")])
    return Program("\n".join(w.lines) + "\n", w.line_map, schedule)


def _preamble_names() -> tuple[str, ...]:
    """The functions node types define in the program's preamble (`decode_ids`, `pearson`):
    reserved, so that no node value shadows one."""
    import re

    from nnrun.nodes import REGISTRY

    return tuple(name for t in REGISTRY.types()
                 for name in re.findall(r"^def (\w+)", t.preamble, re.MULTILINE))


def _header(w: _Writer, graph: Graph, schedule: Schedule, source: str) -> None:
    from nnrun.codegen_fast import FOLD_POINTS

    w.add(0, f'"""nnsight program generated by nnrun {__version__}.\n\n'
             '`run(model, data)` runs one chunk of examples on an nnsight TransformersModel and '
             'returns the\nvalues that reducers and sinks need; `finish(values)` runs once, after '
             'the statistics over\nexamples. Positions arrive counted from the end of each prompt, '
             'so left padding cannot shift\nthem. Do not edit: regenerate with '
             '`nnrun ... stage=export`.\n"""')
    w.add(0, f"# experiment: {graph.spec.name!r}" + (f"  (from {source!r})" if source else ""))
    if any(t.prefix or t.fold for t in schedule.traces):
        w.add(0, "import itertools")
    w.add(0, "import torch\n")
    for pre in schedule.preambles:
        w.add(0, pre.rstrip())
    if any(t.fold for t in schedule.traces):
        w.add(0, FOLD_POINTS.strip("\n") + "\n")
    w.add(0, "")


def _return(nids: list[str], var) -> str:
    return "return {" + ", ".join(f"{nid!r}: {var(nid)}" for nid in nids) + "}"


def _run(w: _Writer, name: str, plan: PassPlan, graph: Graph, schedule: Schedule,
         names: Namespace) -> None:
    from nnrun.codegen_fast import fold_points_line

    var = lambda nid: names.name(("node", nid), nid)  # noqa: E731
    if plan.index:
        w.add(0, "")
        w.add(0, "")
    w.add(0, "@torch.no_grad()")
    w.add(0, f"def {name}(model, data):")
    w.add(1, '"""One chunk of examples -> the values reducers and sinks need'
             + (f" (pass {plan.index})." if plan.index else ".") + '"""')
    w.add(1, RUN_PROLOGUE)
    if plan.given:
        w.add(1, 'given = data["given"]  # statistics over the dataset from earlier passes')
    for nid in plan.given:
        w.add(1, f"{var(nid)} = given[{nid!r}]  # {_axes(graph, nid)}", nid)
    for trace in plan.traces:
        if trace.fold is not None:
            fold_points_line(w, 1, trace, names)
    depth = 1
    if plan.session:  # the outermost context carries the backend: one remote job
        w.add(1, "with model.session(**backend):")
        depth = 2
    for trace in plan.traces:
        _trace(w, depth, trace, graph, schedule, names, plan.session)
    for nid, stmt in plan.post:
        w.add(1, _annotated(stmt.code, nid, graph, var(nid)), nid)
    w.add(1, _return(plan.returns, var))


def _finish(w: _Writer, name: str, plan: PassPlan, graph: Graph, names: Namespace) -> None:
    var = lambda nid: names.name(("node", nid), nid)  # noqa: E731
    w.add(0, "")
    w.add(0, "")
    w.add(0, f"def {name}(values):")
    w.add(1, '"""Once, after every chunk: what follows the statistics over examples."""')
    for nid in plan.final_inputs:
        w.add(1, f"{var(nid)} = values[{nid!r}]  # {_axes(graph, nid)}", nid)
    for nid, stmt in plan.final:
        w.add(1, _annotated(stmt.code, nid, graph, var(nid)), nid)
    w.add(1, _return(plan.final_returns, var))


def _trace(w: _Writer, depth: int, trace: TracePlan, graph: Graph, schedule: Schedule,
           names: Namespace, session: bool) -> None:
    from nnrun.codegen_fast import folded_trace, prefix_trace

    s, backend = trace.scope, "" if session else "**backend"
    grads = [nid for plan in trace.invokes for nid in dict.fromkeys(n for n, _ in plan.stmts)
             if graph.nodes[nid].type.needs_grad]
    if grads:  # run() is under no_grad: only the traces that need gradients keep them
        w.add(depth, f"with torch.enable_grad():  # gradients for: {', '.join(grads)}")
        depth += 1
    kwargs = ", ".join(part for part in (
        "logits_to_keep=1" if trace.last_logits else "", backend) if part)
    note = "; only the last position's logits are used" if trace.last_logits else ""
    var = lambda nid: names.name(("node", nid), nid)  # noqa: E731
    points = lambda nid: names.name(("points", nid), f"{var(nid)}_points")  # noqa: E731
    if trace.prefix is not None:  # always in a session: the lists need no save()
        _collect_lists(w, depth, trace, schedule, points, save=False)
        prefix_trace(w, depth, trace, graph, schedule, names, kwargs, note)
    elif trace.fold is not None:  # a trace per piece of points, in a session
        _collect_lists(w, depth, trace, schedule, points, save=False)
        folded_trace(w, depth, trace, graph, schedule, names, kwargs, note)
    else:
        if s.kind == "generate":
            n = s.max_new_tokens
            w.add(depth, f"with model.generate(max_new_tokens={n}, min_new_tokens={n}, "
                         f"{generate_kwargs(s)}{', ' + backend if backend else ''}) as tracer:  "
                         f"# scope: {s.id}")
        else:
            w.add(depth, f"with model.trace({kwargs}) as tracer:  # scope: {s.id}{note}")
        body = depth + 1
        barrier = {b: names.name(("barrier", s.id, b), b) for b in trace.barriers}
        for name in trace.barriers:
            w.add(body, f"{barrier[name]} = tracer.barrier(2)")
        _collect_lists(w, body, trace, schedule, points, save=not session)
        for plan in trace.invokes:
            _invoke(w, body, plan, graph, schedule, names, barrier)
    depth -= 1 if grads else 0
    for plan in trace.invokes:
        for nid in plan.collect:
            save = ".save()" if session and nid in schedule.saves else ""
            w.add(depth, f"{var(nid)} = {_stacked(plan, nid, points(nid))}"
                         f"{save}  # {_axes(graph, nid)}", nid)


def _collect_lists(w: _Writer, depth: int, trace: TracePlan, schedule: Schedule, points,
                   save: bool) -> None:
    """The per-point lists of the trace's loop values; saved when they leave a lone trace."""
    for plan in trace.invokes:
        for nid in plan.collect:
            saved = ".save()" if save and nid in schedule.saves else ""
            w.add(depth, f"{points(nid)} = list(){saved}  # one entry per loop point", nid)


def _stacked(plan: InvokePlan, nid: str, points: str) -> str:
    """The per-point list as one tensor with the loop axes in front (foreach grid, then step).
    Every generation step runs all the foreach invokes, so a step node's values arrive step by
    step: (step, *grid), moved to (*grid, step)."""
    grid = plan.binding.shape
    if nid in plan.step_nodes and grid:
        order = (plan.step.steps, *grid)
        return f"torch.stack({points}).unflatten(0, {order}).movedim(0, {len(grid)})"
    return f"torch.stack({points}).unflatten(0, {tuple(plan.loop_shape(nid))})"


def _invoke(w: _Writer, depth: int, plan: InvokePlan, graph: Graph, schedule: Schedule,
            names: Namespace, barrier: dict[str, str],
            prefix: tuple[str, tuple[str, ...]] | None = None) -> None:
    """One invoke (for a foreach: one per point). `prefix`: (the points to run, the lines
    that open the invoke) of a prefix reuse."""
    b = plan.binding
    var = lambda nid: names.name(("node", nid), nid)  # noqa: E731
    if b.loop_vars:
        loops = [names.name(("loop", v), v) for v in b.loop_vars]
        source = prefix[0] if prefix else f"points[{b.scope!r}]"
        w.add(depth, f"for {', '.join(loops)}{',' if len(loops) == 1 else ''} in {source}:")
        depth += 1
    w.add(depth, f"with tracer.invoke(**prompts[{b.scope!r}]):  # scope: {b.scope}")
    depth += 1
    for line in prefix[1] if prefix else ():
        w.add(depth, line)
    first_step = ""
    if plan.step is not None:
        step = names.name(("loop", "step"), "step")
        w.add(depth, f"for {step} in tracer.iter[:{plan.step.steps}]:  # scope: {plan.step.id}")
        depth += 1
        first_step = f"if {step} == 0:  # nodes of the invoke itself run at the first step"
    guarded = False
    every = plan.all_stmts
    for i, (nid, stmt) in enumerate(plan.stmts):
        at = depth
        if first_step and nid not in plan.step_nodes:
            if not guarded:
                w.add(depth, first_step)
            guarded, at = True, depth + 1
        else:
            guarded = False
        for name in plan.barriers.get(i, []):
            w.add(at, f"{barrier[name]}()")
        _statement(w, at, plan, i, every, graph, schedule, names)
    for name in plan.barriers.get(len(plan.stmts), []):
        w.add(depth, f"{barrier[name]}()")
    if plan.backward is not None:
        metric, stmts = plan.backward
        w.add(depth, f"with {var(metric)}.sum().backward():  # gradients of {metric} "
                     "(per example: the examples are independent), in reverse firing order",
              stmts[0][0])
        for i in range(len(stmts)):
            _statement(w, depth + 1, plan, len(plan.stmts) + i, every, graph, schedule, names)
    if plan.after:  # generation is over: what it produced (tracer.result)
        depth -= 1 if plan.step is not None else 0
        start = len(every) - len(plan.after)
        for i in range(start, len(every)):
            _statement(w, depth, plan, i, every, graph, schedule, names)
    if not plan.stmts and not plan.after:
        w.add(depth, "pass")


def _statement(w: _Writer, at: int, plan: InvokePlan, i: int, every: list, graph: Graph,
               schedule: Schedule, names: Namespace, folded: bool = False) -> None:
    """Statement `i` of the invoke, then (after a node's last one) its save or collection;
    `folded`: the value has a row per point and example, collected point by point."""
    var = lambda nid: names.name(("node", nid), nid)  # noqa: E731
    nid, stmt = every[i]
    loops = plan.loops(nid)
    w.add(at, _annotated(stmt.code, nid, graph, var(nid), loops, folded), nid)
    last = all(n != nid for n, _ in every[i + 1:])
    if nid in schedule.saves and not loops and last:
        w.add(at, f"{var(nid)}.save()", nid)
    if loops and nid in plan.collect and last:
        points = names.name(("points", nid), f"{var(nid)}_points")
        if folded:
            w.add(at, f"{points}.extend({var(nid)}.unflatten(0, (-1, len(rows))).unbind(0))"
                      "  # point by point", nid)
        else:
            w.add(at, f"{points}.append({var(nid)})", nid)


def _axes(graph: Graph, nid: str, point: bool = False, folded: bool = False) -> str:
    axes = graph.point_axes.get(nid, ()) if point else graph.axes.get(nid, ())
    if folded:  # a row per point and example
        axes = tuple("row" if a == "example" else a for a in axes)
    return "(" + ", ".join(axes) + ")"


def _annotated(code: str, node_id: str, graph: Graph, name: str, point: bool = False,
               folded: bool = False) -> str:
    """Every generated line names its node; the line that produces the node's value also
    names its axes (nanoGPT style: the shape of every tensor line)."""
    if "#" in code:
        return code
    axes = f" {_axes(graph, node_id, point, folded)}" if code.startswith(f"{name} = ") else ""
    return f"{code}  # node: {node_id}{axes}"


