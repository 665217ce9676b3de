"""What a node's `emit()` may ask for while its code is generated (`EmitContext`), and the one
namespace every generated name is claimed from (`Namespace`, after torch.fx's `_Namespace`).

Invariant: every name in `program.py` comes from one `Namespace`, so node ids never collide with
generated names, loop variables or the names the program uses for itself.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
from dataclasses import dataclass

from nnrun.bind import Binding
from nnrun.errors import CompileError, Issue
from nnrun.graph import Graph
from nnrun.loops import LOOPS
from nnrun.nodes.base import Access
from nnrun.nodes.fields import concrete_layers, loop_var
from nnrun.sites import python_ref, resolve, site_of

# Names the program itself uses: the arguments, the parts of `data`, loop variables.
PROGRAM_NAMES = ("model", "data", "values", "torch", "tracer", "run", "finish", "decode_ids",
                 "rows", "prompts", "points", "index", "mask", "tokens", "backend", "given",
                 "PASSES", "itertools", "fold_points", "_")
LOOP_NAMES = (*LOOPS, "step")  # claimed first, so they keep their own names
MAX_PROGRAM_LINES = 20_000


class Namespace:
    """One object, one name: every name is unique and never a keyword, a builtin or a name the
    program uses for itself (after torch.fx's `_Namespace`)."""

    def __init__(self, reserved: tuple[str, ...] = PROGRAM_NAMES) -> None:
        self._taken = set(reserved) | set(keyword.kwlist) | set(dir(builtins))
        self._names: dict[object, str] = {}

    def name(self, obj: object, base: str) -> str:
        """The name of `obj`, claimed from `base` the first time (`base`, `base_1`, ...); a
        character that cannot be in a name becomes `_` (`topk.values` → `topk_values`)."""
        if obj not in self._names:
            base = re.sub(r"\W", "_", base)
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


@dataclass(frozen=True)
class FoldRows:
    """A folded foreach (nnrun.fastpath): its points are rows of one batch, and a statement
    indexes them with per-row tensors, each (row,): `rows`, the batch rows it applies to;
    `example`, the example of the chunk each of those rows is a copy of; `loops`, per loop
    variable other than `layer` (`position`, `head`), the name of its value per row."""

    rows: str
    example: str
    loops: tuple[tuple[str, str], ...]


@dataclass
class EmitContext:
    """What a node's `emit()` may ask for while its code is generated. With `fold` set, the
    node is emitted for a folded invoke: `select` and `target` index rows, not examples."""

    graph: Graph
    binding: Binding
    node_id: str
    names: Namespace
    fold: FoldRows | None = None

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
        per_row = dict(self.fold.loops) if self.fold is not None else {}
        if variable in per_row:
            return per_row[variable]
        return self.names.name(("loop", variable), variable)

    def example_index(self, outside: bool = False) -> str:
        """The index along a value's `example` axis: all of it (`:`), or, in a folded
        invoke, the example of every row (`outside`: a value from outside the invoke, one row
        per example) or every row (the model's tensor)."""
        return self._rows(outside)[0]

    def _source(self, port: str, i: int = 0):
        return self.graph.nodes[self.node.inputs[port][i]]

    def input(self, port: str) -> str:
        return self.var(self._source(port).id)

    def source(self, port: str) -> str:
        """The id of the node feeding `port`."""
        return self._source(port).id

    def in_axes(self, port: str) -> tuple[str, ...]:
        return self.graph.source_axes(self.node_id, self._source(port).id)

    def outside(self, port: str) -> bool:
        """The value reaching `port` is computed outside this node's invoke (in another
        trace, after the model, or in an earlier pass): one row per example, not per point."""
        own = self.graph.invoke_of(self.node.scope)
        theirs = self.graph.invoke_of(self._source(port).scope)
        return theirs is None or own is None or theirs.id != own.id

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

    def select(self, code: str, position, after=(), trailing: int = 1,
               outside: bool = False) -> str:
        """`code` (example, position, ...) read at this node's position(s), per example, then
        at `after` (index specs of the axes that follow position); `trailing`: how many axes
        remain after the position (they broadcast the mask of ragged prompts). `outside`:
        `code` is a value from outside the invoke (see `outside()`), not the model's tensor;
        it matters in a folded invoke only, where the model's tensor has a row per point."""
        more = self._after(after)
        every, each, per_row = self._rows(outside)
        if loop_var(position):
            return f"{code}[{every}, {self.loop(loop_var(position))}{more}]"
        where = self.binding.positions[self.node_id]
        key = repr(self.node_id)
        if where.kind == "slice":
            return f"{code}[{every}, index[{key}]{more}]"
        if where.kind == "row":
            return f"{code}[{each}, {per_row(f'index[{key}]')}{more}]"
        # Prompts of different lengths: gather each example's own tokens; cells past the end of
        # a shorter prompt become NaN, so no statistic can mistake padding for a token.
        present = per_row(f"mask[{key}]") + ".unsqueeze(-1)" * trailing
        return (f"torch.where({present}, {code}[{each}.unsqueeze(-1), "
                f"{per_row(f'index[{key}]')}{more}], torch.nan)")

    def target(self, code: str, position, after=()) -> str:
        """The assignment target writing `code` at this node's position(s) (and `after`, as in
        `select`), per example: one indexing, so that the write lands in the model's tensor."""
        more = self._after(after)
        every, each, per_row = self._rows(outside=False)
        if loop_var(position):
            return f"{code}[{every}, {self.loop(loop_var(position))}{more}]"
        where = self.binding.positions[self.node_id]
        key = repr(self.node_id)
        ragged = f"{code}[{every}, :{more}]" if more or self.fold else f"{code}[:]"
        return {"slice": f"{code}[{every}, index[{key}]{more}]",
                "row": f"{code}[{each}, {per_row(f'index[{key}]')}{more}]",
                "ragged": ragged}[where.kind]

    def _rows(self, outside: bool):
        """How `select`/`target` index the example axis: (all of it, each row paired with a
        per-example index, that per-example index made per row). Plainly `:`, `rows` and the
        index itself; in a folded invoke every one is per row (rows of the model's tensor, or
        for a value from outside, the examples they copy), so positions pair with rows."""
        if self.fold is None:
            return ":", "rows", lambda per_example: per_example
        rows = self.fold.example if outside else self.fold.rows
        return rows, rows, lambda per_example: f"{per_example}[{self.fold.example}]"

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


@dataclass(frozen=True)
class DefineContext:
    """What a node's `definitions()` may ask for. It runs before any name is claimed: the names
    its blocks bind are reserved from them (see `node_definitions`)."""

    graph: Graph
    node_id: str

    @property
    def node(self):
        return self.graph.nodes[self.node_id]

    @property
    def source(self):
        """The experiment file (None when the experiment came without one)."""
        return self.graph.source

    def inputs_axes(self, port: str) -> list[tuple[str, ...]]:
        """The axes of every value reaching `port`, in edge order."""
        return [self.graph.source_axes(self.node_id, src)
                for src in self.node.inputs.get(port, [])]


@dataclass(frozen=True)
class Definition:
    """One block of top-level program code, the node it belongs to (None: several share it),
    and the names it binds."""

    code: str
    node: str | None
    names: tuple[str, ...]


def node_definitions(graph: Graph) -> list[Definition]:
    """The nodes' `definitions()` blocks in node order, each distinct block once."""
    owners: dict[str, list[str]] = {}
    for nid in graph.order:
        node = graph.nodes[nid]
        for code in node.type.definitions(node.params, DefineContext(graph, nid)):
            owners.setdefault(code, []).append(nid)
    return [Definition(code, nids[0] if len(nids) == 1 else None, bound_names(code))
            for code, nids in owners.items()]


def bound_names(code, plain_imports: bool = True) -> tuple[str, ...]:
    """The names a block of code (text or a parsed `ast.Module`) binds at its top level
    (functions, classes, assignments, imports, also inside top-level `if`/`try`/`with`/`for`).
    `plain_imports=False` leaves out `import x` (and `import x.y`, `import x as x`): such a
    line binds `x` to the module `x`, the same object wherever it is imported."""
    import ast

    names: list[str] = []

    def visit(statements) -> None:
        for st in statements:
            if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(st.name)
                continue
            if isinstance(st, (ast.Import, ast.ImportFrom)):
                names.extend((a.asname or a.name).split(".")[0] for a in st.names
                             if plain_imports or isinstance(st, ast.ImportFrom)
                             or a.asname not in (None, a.name))
                continue
            for target in _targets(st):
                names.extend(n.id for n in ast.walk(target) if isinstance(n, ast.Name))
            for field in ("body", "orelse", "finalbody", "handlers"):
                visit(getattr(st, field, []))
            if isinstance(st, ast.ExceptHandler) and st.name:
                names.append(st.name)

    visit((ast.parse(code) if isinstance(code, str) else code).body)
    return tuple(dict.fromkeys(names))


def _targets(st) -> list:
    import ast

    if isinstance(st, ast.Assign):
        return st.targets
    if isinstance(st, (ast.AnnAssign, ast.AugAssign, ast.For, ast.AsyncFor)):
        return [st.target]
    if isinstance(st, (ast.With, ast.AsyncWith)):
        return [item.optional_vars for item in st.items if item.optional_vars is not None]
    return []
