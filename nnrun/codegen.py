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

import builtins
import hashlib
import keyword
import math
from dataclasses import dataclass, field

from nnrun import __version__
from nnrun.bind import Binding
from nnrun.errors import CompileError, Issue
from nnrun.graph import Graph
from nnrun.loops import LOOPS
from nnrun.nodes.base import Access
from nnrun.nodes.fields import concrete_layers, loop_var
from nnrun.schedule import InvokePlan, PassPlan, Schedule, TracePlan, make_schedule
from nnrun.sites import python_ref, resolve, site_of

# Names the program itself uses: the arguments, the parts of `data`, loop variables.
PROGRAM_NAMES = ("model", "data", "values", "torch", "tracer", "run", "finish", "decode_ids",
                 "rows", "prompts", "points", "index", "mask", "tokens", "backend", "given",
                 "PASSES")
LOOP_NAMES = (*LOOPS, "step")  # claimed first, so they keep their own names
MAX_PROGRAM_LINES = 20_000


class Namespace:
    """One object, one name: every name is unique and never a keyword, a builtin or a name the
    program uses for itself (after torch.fx's `_Namespace`)."""

    def __init__(self, reserved: tuple[str, ...] = PROGRAM_NAMES) -> None:
        self._taken = set(reserved) | set(keyword.kwlist) | set(dir(builtins))
        self._names: dict[object, str] = {}

    def name(self, obj: object, base: str) -> str:
        """The name of `obj`, claimed from `base` the first time (`base`, `base_1`, ...)."""
        if obj not in self._names:
            candidate, n = base, 0
            while candidate in self._taken:
                n += 1
                candidate = f"{base}_{n}"
            self._taken.add(candidate)
            self._names[obj] = candidate
        return self._names[obj]


@dataclass(frozen=True)
class SiteRef:
    access: Access
    raw: str           # the model's own tensor, e.g. model.transformer.h[layer].attn.output[0]
    view: str          # appended to `raw`, gives the site's axes (a view: writes reach the model)
    layer: str | None  # the layer as code: a literal or a loop variable name

    @property
    def code(self) -> str:
        return self.raw + self.view


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
class EmitContext:
    """What a node's `emit()` may ask for while its code is generated."""

    graph: Graph
    binding: Binding
    node_id: str
    names: Namespace

    @property
    def node(self):
        return self.graph.nodes[self.node_id]

    @property
    def out(self) -> str:
        return self.var(self.node_id)

    def var(self, node_id: str) -> str:
        return self.names.name(("node", node_id), node_id)

    def fresh(self, base: str) -> str:
        """A new name derived from this node's (e.g. one part per layer)."""
        return self.names.name(("part", self.node_id, base), base)

    def loop(self, variable: str) -> str:
        return self.names.name(("loop", variable), variable)

    def _source(self, port: str, i: int = 0):
        return self.graph.nodes[self.node.inputs[port][i]]

    def input(self, port: str) -> str:
        return self.var(self._source(port).id)

    def source(self, port: str) -> str:
        """The id of the node feeding `port`."""
        return self._source(port).id

    def in_axes(self, port: str) -> tuple[str, ...]:
        return self.graph.source_axes(self.node_id, self._source(port).id)

    @staticmethod
    def literal(value) -> str:
        """A number as Python source; non-finite floats stay valid Python."""
        if isinstance(value, float) and not math.isfinite(value):
            return f"float({str(value)!r})"
        return repr(value)

    def token_ids(self, field_name: str) -> str:
        """Code for this node's token ids of `field_name`: one per example, shape (example,)."""
        return f"tokens[{f'{self.node_id}.{field_name}'!r}]"

    def pick_token(self, x: str, field_name: str, axes: tuple[str, ...],
                   keepdim: bool = False) -> str:
        """`x[..., token]` with the token chosen per example: `axes` are x's, ending in vocab."""
        shape = ", ".join("-1" if a == "example" else "1" for a in axes[:-1])
        ids = f"{self.token_ids(field_name)}.view({shape}{', ' if shape else ''}1)"
        picked = f"torch.take_along_dim({x}, {ids}, dim=-1)"
        return picked if keepdim else picked + ".squeeze(-1)"

    def stacks_layers(self, layer) -> bool:
        return layer == "all" or isinstance(layer, list)

    def site_refs(self, site: str, layer, at: str = "output") -> list[SiteRef]:
        info = self.graph.info
        descriptor = site_of(site, at)
        template, event = resolve(site, info.family if info else None, at)
        layers: list[str | None]
        if layer is None:
            layers = [None]
        elif loop_var(layer):
            layers = [self.loop(loop_var(layer))]
        else:
            layers = [str(v) for v in concrete_layers(layer, info.n_layers)]
        element = descriptor.element
        if element is None and info and event == "output" and \
                template.replace("{layer}", "0") in info.tuple_outputs:
            element = 0   # attention modules return (output, weights)
        view = descriptor.view.format(**info.geometry) if descriptor.view and info else ""
        refs = []
        for value in layers:
            module = template if value is None or not value.isdigit() else \
                template.replace("{layer}", value)
            raw = f"{python_ref(module, value)}.{event}"
            raw += f"[{element}]" if element is not None else ""
            refs.append(SiteRef(Access(module, event), raw, view, value))
        return refs

    def module_code(self, site: str) -> str:
        """Code calling a whole module, e.g. `model.transformer.ln_f` for `final_norm`."""
        info = self.graph.info
        template, _ = resolve(site, info.family if info else None)
        return python_ref(template)

    def index(self, spec) -> str:
        """One index expression along an axis: `all` keeps it, an int or a loop variable picks."""
        if spec is None or spec == "all":
            return ":"
        return self.loop(loop_var(spec)) if loop_var(spec) else repr(spec)

    def _after(self, after) -> str:
        parts = [self.index(spec) for spec in after]
        while parts and parts[-1] == ":":
            parts.pop()
        return "".join(f", {part}" for part in parts)

    def select(self, code: str, position, after=(), trailing: int = 1) -> str:
        """`code` (example, position, ...) read at this node's position(s), per example, then
        at `after` (index specs of the axes that follow position); `trailing`: how many axes
        remain after the position (they broadcast the mask of ragged prompts)."""
        more = self._after(after)
        if loop_var(position):
            return f"{code}[:, {self.loop(loop_var(position))}{more}]"
        where = self.binding.positions[self.node_id]
        key = repr(self.node_id)
        if where.kind == "slice":
            return f"{code}[:, index[{key}]{more}]"
        if where.kind == "row":
            return f"{code}[rows, index[{key}]{more}]"
        # Prompts of different lengths: gather each example's own tokens; cells past the end of
        # a shorter prompt become NaN, so no statistic can mistake padding for a token.
        present = f"mask[{key}]" + ".unsqueeze(-1)" * trailing
        return (f"torch.where({present}, {code}[rows.unsqueeze(-1), index[{key}]{more}], "
                "torch.nan)")

    def target(self, code: str, position, after=()) -> str:
        """The assignment target writing `code` at this node's position(s) (and `after`, as in
        `select`), per example: one indexing, so that the write lands in the model's tensor."""
        more = self._after(after)
        if loop_var(position):
            return f"{code}[:, {self.loop(loop_var(position))}{more}]"
        where = self.binding.positions[self.node_id]
        key = repr(self.node_id)
        return {"slice": f"{code}[:, index[{key}]{more}]",
                "row": f"{code}[rows, index[{key}]{more}]",
                "ragged": f"{code}[:, :{more}]" if more else f"{code}[:]"}[where.kind]

    def layer_index_into(self, port: str, layer_code: str | None) -> str:
        """Index of `layer_code` (a literal or the foreach variable) in the input's stacked
        `layer` axis, whichever node stacked it (a read, or a computation on one).

        Raises:
            CompileError: the input holds no value for a layer this node needs.
        """
        src = self._source(port)
        layers = [int(v) for v in self.binding.node_coords[src.id].get("layer", [])]
        missing = sorted(set(self._layer_values(layer_code)) - set(layers))
        if missing:
            raise CompileError(f"experiment `{self.graph.spec.name}` has 1 problem:", [Issue(
                "layer_not_in_value", f"the value from `{src.id}` holds layers "
                f"{layers}, not layer {', '.join(map(str, missing))} that this node needs",
                self.node.path + ".layer", self.node_id,
                f"read those layers in `{src.id}` (e.g. layer: all)")])
        if layers == list(range(self.graph.info.n_layers)):
            return f"[{layer_code}]"
        return f"[{dict(zip(layers, range(len(layers))))}[{layer_code}]]"

    def _layer_values(self, layer_code: str | None) -> list[int]:
        """The layers `layer_code` takes: itself, or every value of the foreach variable."""
        if layer_code is None:
            return []
        if layer_code.lstrip("-").isdigit():
            return [int(layer_code)]
        invoke = self.binding.invokes[self.graph.invoke_of(self.node.scope).id]
        column = invoke.loop_vars.index("layer")
        return [int(point[column]) for point in invoke.points]


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
prompts = data["prompts"]  # invoke scope -> one prompt per example
points = data["points"]  # foreach scope -> its loop points
index = data["index"]  # node -> positions counted from the end: slice | (example,) | (example, position)
mask = data["mask"]  # node -> (example, position): True where the prompt has that token
tokens = data["tokens"]  # "node.field" -> (example,) token ids
backend = data["backend"]  # keyword arguments of the outermost context: {} here, remote=... for NDIF'''


def generate(graph: Graph, binding: Binding, source_name: str = "") -> Program:
    """Compile the graph into a Program (schedule + source text)."""
    names = Namespace(PROGRAM_NAMES + _preamble_names())
    for variable in LOOP_NAMES:
        names.name(("loop", variable), variable)
    for nid in graph.order:  # node values claim their ids first: derived names yield to them
        names.name(("node", nid), nid)
    ctx = {nid: EmitContext(graph, binding, nid, names) for nid in graph.nodes}
    emit = lambda nid: graph.nodes[nid].type.emit(graph.nodes[nid].params, ctx[nid])  # noqa: E731
    schedule = make_schedule(graph, binding, emit)
    w = _Writer()
    _header(w, graph, schedule, source_name)
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
    w.add(0, f'"""nnsight program generated by nnrun {__version__}.\n\n'
             '`run(model, data)` runs one chunk of examples on an nnsight TransformersModel and '
             'returns the\nvalues that reducers and sinks need; `finish(values)` runs once, after '
             'the statistics over\nexamples. Positions arrive counted from the end of each prompt, '
             'so left padding cannot shift\nthem. Do not edit: regenerate with '
             '`nnrun ... stage=export`.\n"""')
    w.add(0, f"# experiment: {graph.spec.name!r}" + (f"  (from {source!r})" if source else ""))
    w.add(0, "import torch\n")
    for pre in schedule.preambles:
        w.add(0, pre.rstrip())
    w.add(0, "")


def _return(nids: list[str], var) -> str:
    return "return {" + ", ".join(f"{nid!r}: {var(nid)}" for nid in nids) + "}"


def _run(w: _Writer, name: str, plan: PassPlan, graph: Graph, schedule: Schedule,
         names: Namespace) -> None:
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
    s, backend = trace.scope, "" if session else "**backend"
    grads = [nid for plan in trace.invokes for nid in dict.fromkeys(n for n, _ in plan.stmts)
             if graph.nodes[nid].type.needs_grad]
    if grads:  # run() is under no_grad: only the traces that need gradients keep them
        w.add(depth, f"with torch.enable_grad():  # gradients for: {', '.join(grads)}")
        depth += 1
    if s.kind == "generate":
        n = s.max_new_tokens
        w.add(depth, f"with model.generate(max_new_tokens={n}, min_new_tokens={n}, "
                     f"do_sample=False{', ' + backend if backend else ''}) as tracer:  "
                     f"# scope: {s.id}")
    else:
        w.add(depth, f"with model.trace({backend}) as tracer:  # scope: {s.id}")
    body = depth + 1
    barrier = {b: names.name(("barrier", s.id, b), b) for b in trace.barriers}
    for name in trace.barriers:
        w.add(body, f"{barrier[name]} = tracer.barrier(2)")
    var = lambda nid: names.name(("node", nid), nid)  # noqa: E731
    points = lambda nid: names.name(("points", nid), f"{var(nid)}_points")  # noqa: E731
    for plan in trace.invokes:
        for nid in plan.collect:
            save = "" if session or nid not in schedule.saves else ".save()"
            w.add(body, f"{points(nid)} = list(){save}  # one entry per loop point", nid)
    for plan in trace.invokes:
        _invoke(w, body, plan, graph, schedule, names, barrier)
    depth -= 1 if grads else 0
    for plan in trace.invokes:
        for nid in plan.collect:
            save = ".save()" if session and nid in schedule.saves else ""
            w.add(depth, f"{var(nid)} = {_stacked(plan, nid, points(nid))}"
                         f"{save}  # {_axes(graph, nid)}", nid)


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
            names: Namespace, barrier: dict[str, str]) -> None:
    b = plan.binding
    var = lambda nid: names.name(("node", nid), nid)  # noqa: E731
    if b.loop_vars:
        loops = [names.name(("loop", v), v) for v in b.loop_vars]
        w.add(depth, f"for {', '.join(loops)}{',' if len(loops) == 1 else ''} in "
                     f"points[{b.scope!r}]:")
        depth += 1
    w.add(depth, f"with tracer.invoke(prompts[{b.scope!r}]):  # scope: {b.scope}")
    depth += 1
    first_step = ""
    if plan.step is not None:
        step = names.name(("loop", "step"), "step")
        w.add(depth, f"for {step} in tracer.iter[:{plan.step.steps}]:  # scope: {plan.step.id}")
        depth += 1
        first_step = f"if {step} == 0:  # nodes of the invoke itself run at the first step"
    guarded = False
    every = _all_stmts(plan)
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


def _all_stmts(plan: InvokePlan) -> list:
    """The invoke's statements in program order: forward, the backward block, then those after
    the generation steps."""
    return plan.stmts + (plan.backward[1] if plan.backward else []) + plan.after


def _statement(w: _Writer, at: int, plan: InvokePlan, i: int, every: list, graph: Graph,
               schedule: Schedule, names: Namespace) -> None:
    """Statement `i` of the invoke, then (after a node's last one) its save or collection."""
    var = lambda nid: names.name(("node", nid), nid)  # noqa: E731
    nid, stmt = every[i]
    loops = plan.loops(nid)
    w.add(at, _annotated(stmt.code, nid, graph, var(nid), loops), nid)
    last = all(n != nid for n, _ in every[i + 1:])
    if nid in schedule.saves and not loops and last:
        w.add(at, f"{var(nid)}.save()", nid)
    if loops and nid in plan.collect and last:
        points = names.name(("points", nid), f"{var(nid)}_points")
        w.add(at, f"{points}.append({var(nid)})", nid)


def _axes(graph: Graph, nid: str, point: bool = False) -> str:
    axes = graph.point_axes.get(nid, ()) if point else graph.axes.get(nid, ())
    return "(" + ", ".join(axes) + ")"


def _annotated(code: str, node_id: str, graph: Graph, name: str, point: bool = False) -> str:
    """Every generated line names its node; the line that produces the node's value also
    names its axes (nanoGPT style: the shape of every tensor line)."""
    if "#" in code:
        return code
    axes = f" {_axes(graph, node_id, point)}" if code.startswith(f"{name} = ") else ""
    return f"{code}  # node: {node_id}{axes}"


