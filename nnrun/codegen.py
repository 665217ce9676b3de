"""Turn a bound graph into the source of an nnsight program (`program.py`) with a line → node map.

Invariant: pure text generation; the same graph, model structure and binding always give the same
source, byte for byte, so the content-addressed file name is stable.
"""

from __future__ import annotations

import hashlib
import keyword
from dataclasses import dataclass, field

from nnrun import __version__
from nnrun.bind import Binding
from nnrun.graph import Graph
from nnrun.nodes.base import Access
from nnrun.nodes.fields import concrete_layers, loop_var
from nnrun.schedule import InvokePlan, Schedule, TracePlan, make_schedule
from nnrun.sites import python_ref, resolve

RESERVED = {"model", "torch", "tracer", "PROMPTS", "POINTS", "run", "decode_ids", "step"}


@dataclass(frozen=True)
class SiteRef:
    access: Access
    code: str          # e.g. model.transformer.h[layer].output[0]
    layer: str | None  # the layer as code: a literal or a loop variable name


@dataclass
class Program:
    """Generated source and, per line number, the node that line belongs to."""

    source: str
    line_map: dict[int, str]
    schedule: Schedule

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.source.encode()).hexdigest()[:12]


def var(node_id: str) -> str:
    """A Python name for a node's value (node ids are identifiers; avoid keywords/reserved)."""
    return node_id + "_" if keyword.iskeyword(node_id) or node_id in RESERVED else node_id


@dataclass
class EmitContext:
    """What a node's `emit()` may ask for while its code is generated."""

    graph: Graph
    binding: Binding
    node_id: str

    @property
    def node(self):
        return self.graph.nodes[self.node_id]

    @property
    def out(self) -> str:
        return var(self.node_id)

    def _source(self, port: str, i: int = 0):
        return self.graph.nodes[self.node.inputs[port][i]]

    def input(self, port: str) -> str:
        return var(self._source(port).id)

    def in_axes(self, port: str) -> tuple[str, ...]:
        src = self._source(port)
        same_loop = src.scope == self.node.scope and self.graph.loop_axes(src.scope)
        return self.graph.point_axes[src.id] if same_loop else self.graph.axes[src.id]

    def token_id(self, text: str) -> int:
        return self.binding.token_ids[text]

    def stacks_layers(self, layer) -> bool:
        return layer == "all" or isinstance(layer, list)

    def site_refs(self, site: str, layer, at: str = "output") -> list[SiteRef]:
        info = self.graph.info
        template, event = resolve(site, info.family if info else None, at)
        layers: list[str | None]
        if layer is None:
            layers = [None]
        elif loop_var(layer):
            layers = [loop_var(layer)]
        else:
            layers = [str(v) for v in concrete_layers(layer, info.n_layers)]
        refs = []
        for value in layers:
            module = template if value is None or not value.isdigit() else \
                template.replace("{layer}", value)
            code = f"{python_ref(module, value)}.{event}"
            if info and event == "output" and module.replace("{layer}", "0") in info.tuple_outputs:
                code += "[0]"   # attention modules return (output, weights)
            refs.append(SiteRef(Access(module, event), code, value))
        return refs

    def module_code(self, site: str) -> str:
        """Code calling a whole module, e.g. `model.transformer.ln_f` for `final_norm`."""
        info = self.graph.info
        template, _ = resolve(site, info.family if info else None)
        return python_ref(template)

    def position_index(self, position) -> str:
        """Index expression selecting the position dim (dim 1 of (batch, position, ...))."""
        if loop_var(position):
            return f"[:, {loop_var(position)}]"
        invoke = self.graph.invoke_of(self.node.scope)
        index = self.binding.invokes[invoke.id].position(position)
        return "" if index is None else f"[:, {index}]"

    def layer_index_into(self, port: str, layer_code: str | None) -> str:
        """Index of `layer_code` in the input's stacked `layer` axis."""
        src = self._source(port)
        layers = concrete_layers(src.params.layer, self.graph.info.n_layers)
        if layers == list(range(self.graph.info.n_layers)):
            return f"[{layer_code}]"
        return f"[{dict(zip(layers, range(len(layers))))}[{layer_code}]]"


@dataclass
class _Writer:
    lines: list[str] = field(default_factory=list)
    line_map: dict[int, str] = field(default_factory=dict)

    def add(self, indent: int, text: str, node: str | None = None) -> None:
        for part in text.split("\n"):
            self.lines.append("    " * indent + part if part else "")
            if node:
                self.line_map[len(self.lines)] = node


def generate(graph: Graph, binding: Binding, source_name: str = "") -> Program:
    """Compile the graph into a Program (schedule + source text)."""
    emit = lambda nid: graph.nodes[nid].type.emit(  # noqa: E731
        graph.nodes[nid].params, EmitContext(graph, binding, nid))
    schedule = make_schedule(graph, binding, emit)
    w = _Writer()
    _header(w, graph, binding, schedule, source_name)
    w.add(0, "@torch.no_grad()")
    w.add(0, "def run(model):")
    w.add(1, f'"""Run `{graph.spec.name}` on an nnsight model; return the values sinks need."""')
    depth = 1
    if schedule.session:
        w.add(1, "with model.session():")
        depth = 2
    for trace in schedule.traces:
        _trace(w, depth, trace, graph, schedule)
    for nid, stmt in schedule.post:
        w.add(1, _annotated(stmt.code, nid), nid)
    returns = ", ".join(f'"{nid}": {var(nid)}' for nid in schedule.returns)
    w.add(1, f"return {{{returns}}}")
    return Program("\n".join(w.lines) + "\n", w.line_map, schedule)


def _header(w: _Writer, graph: Graph, binding: Binding, schedule: Schedule, source: str) -> None:
    w.add(0, f'"""nnsight program for experiment `{graph.spec.name}`, generated by nnrun '
             f'{__version__}{" from " + source if source else ""}.\n\n'
             'Do not edit: regenerate with `nnrun ... stage=export`. `run(model)` expects an\n'
             'nnsight TransformersModel. Positions are counted from the end of each prompt so '
             'that\nleft padding cannot shift them.\n"""')
    w.add(0, "import torch\n")
    prompts = {b.scope: (list(b.prompts) if b.batched or "prompt" in b.loop_vars
                         else b.prompts[0])
               for b in binding.invokes.values()}
    w.add(0, f"PROMPTS = {_literal(prompts)}")
    points = {b.scope: [tuple(p) for p in b.points] for b in binding.invokes.values()
              if b.loop_vars}
    if points:
        w.add(0, "# foreach grids: one invoke per point, " + "; ".join(
            f"{s}: ({', '.join(binding.invokes[s].loop_vars)})" for s in points))
        w.add(0, f"POINTS = {_literal(points)}")
    for pre in schedule.preambles:
        w.add(0, pre.rstrip())
    w.add(0, "")


def _literal(value) -> str:
    text = repr(value)
    return text if len(text) < 90 else "{\n" + "".join(
        f"    {k!r}: {v!r},\n" for k, v in value.items()) + "}"


def _trace(w: _Writer, depth: int, trace: TracePlan, graph: Graph, schedule: Schedule) -> None:
    s = trace.scope
    if s.kind == "generate":
        n = s.max_new_tokens
        w.add(depth, f"with model.generate(max_new_tokens={n}, min_new_tokens={n}, "
                     f"do_sample=False) as tracer:  # scope: {s.id}")
    else:
        w.add(depth, f"with model.trace() as tracer:  # scope: {s.id}")
    body = depth + 1
    wrote = False
    for name in trace.barriers:
        w.add(body, f"{name} = tracer.barrier(2)")
        wrote = True
    for plan in trace.invokes:
        for nid in plan.collect:
            save = "" if schedule.session or nid not in schedule.saves else ".save()"
            w.add(body, f"{var(nid)}_points = list(){save}  # one entry per loop point", nid)
            wrote = True
    for plan in trace.invokes:
        _invoke(w, body, plan, graph, schedule, first=not wrote)
        wrote = True
    for plan in trace.invokes:
        for nid in plan.collect:
            shape = ", ".join(map(str, plan.loop_shape)) + ("," if len(plan.loop_shape) == 1 else "")
            save = ".save()" if schedule.session and nid in schedule.saves else ""
            w.add(depth, f"{var(nid)} = torch.stack({var(nid)}_points).unflatten(0, ({shape}))"
                         f"{save}  # loop axes first", nid)


def _invoke(w: _Writer, depth: int, plan: InvokePlan, graph: Graph, schedule: Schedule,
            first: bool) -> None:
    b = plan.binding
    if b.loop_vars:
        names = ", ".join(b.loop_vars) + ("," if len(b.loop_vars) == 1 else "")
        w.add(depth, f'for {names} in POINTS["{b.scope}"]:')
        depth += 1
    prompt = "prompt" if "prompt" in b.loop_vars else f'PROMPTS["{b.scope}"]'
    w.add(depth, f"with tracer.invoke({prompt}):  # scope: {b.scope}")
    depth += 1
    if plan.step is not None:
        w.add(depth, f"for step in tracer.iter[:{plan.step.steps}]:  # scope: {plan.step.id}")
        depth += 1
    for i, (nid, stmt) in enumerate(plan.stmts):
        for name in plan.barriers.get(i, []):
            w.add(depth, f"{name}()")
        save = nid in schedule.saves and not plan.looped and _is_last(plan, i)
        w.add(depth, _annotated(stmt.code, nid), nid)
        if save:
            w.add(depth, f"{var(nid)}.save()", nid)
        if plan.looped and nid in plan.collect and _is_last(plan, i):
            w.add(depth, f"{var(nid)}_points.append({var(nid)})", nid)
    for name in plan.barriers.get(len(plan.stmts), []):
        w.add(depth, f"{name}()")
    if not plan.stmts:
        w.add(depth, "pass")


def _annotated(code: str, node_id: str) -> str:
    """Every generated line names its node, unless the node wrote its own comment."""
    return code if "#" in code else f"{code}  # node: {node_id}"


def _is_last(plan: InvokePlan, i: int) -> bool:
    nid = plan.stmts[i][0]
    return all(n != nid for n, _ in plan.stmts[i + 1:])
