"""The contract every node type fulfils, and the registry that maps `op` names to node types.

Invariant: schedule.py and codegen.py know nothing about individual ops. Everything op-specific
(parameters, ports, output axes, model accesses, emitted code, artifacts) lives in one node file that
subclasses `NodeType` and registers itself with `@register`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:  # the contexts are defined by the stages that call into node types
    from pathlib import Path

    from nnrun.errors import Issue
    from nnrun.model_info import ModelInfo
    from nnrun.nodes.contexts import ArtifactContext, CheckContext, DefineContext, EmitContext
    from nnrun.reduce import Reducer

Axes = tuple[str, ...]

NODE_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"

# How a node is drawn and grouped in the README table; it does not change how it is compiled.
Kind = Literal["read", "write", "compute", "metric", "save", "plot"]


class NodeParams(BaseModel):
    """Fields shared by every node; each node type narrows `op` to a `Literal` (the discriminator)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=NODE_ID_PATTERN, description="unique node id; also the output file name")
    op: str
    scope: str | None = Field(
        None, description="scope the node runs in; none = after the model has run")


@dataclass(frozen=True)
class Port:
    """A named input of a node. `variadic` ports accept several edges (in edge order)."""

    doc: str
    required: bool = True
    variadic: bool = False


@dataclass(frozen=True)
class OutputPort:
    """A named output of a node that produces several values; an edge picks it with
    `src: node.port` (nnrun.named_outputs)."""

    doc: str


@dataclass(frozen=True)
class Access:
    """One request to the model: a module path (may contain `{layer}`) and `input` or `output`.
    `last_only`: the statement uses the last position of it only (so a trace whose logits are
    all read that way may skip computing the others, see nnrun.fastpath)."""

    module: str
    event: Literal["input", "output"]
    last_only: bool = False


@dataclass(frozen=True)
class Stmt:
    """One line of generated Python. `access` is set when the line touches the model, so the
    scheduler can put it in forward-execution order. `grad_of` (a node id: a per-example metric
    of the same invoke) puts the line in the backward pass of that metric's sum, a block after
    the forward lines, where the scheduler orders accesses in reverse firing order.
    `after_steps` puts it after the invoke's generation steps, once generation is over."""

    code: str
    access: Access | None = None
    grad_of: str | None = None
    after_steps: bool = False   # runs in its invoke after the generation steps (tracer.result)


class NodeType:
    """One kind of node: its parameters, ports, axes, model accesses and emitted code.

    Subclasses set the class attributes and override the hooks they need. Hooks receive the
    validated params and a context from the calling stage; what each context offers is one
    protocol in `nnrun.nodes.contexts` (implemented by `nnrun.lint.CheckContext`,
    `nnrun.emit.EmitContext`/`DefineContext` and `nnrun.sinks.SinkContext`).
    """

    op: ClassVar[str]
    Params: ClassVar[type[NodeParams]]
    kind: ClassVar[Kind] = "compute"
    summary: ClassVar[str] = ""
    inputs: ClassVar[dict[str, Port]] = {}
    touches_model: ClassVar[bool] = False   # must run inside an invoke (reads/writes activations)
    is_sink: ClassVar[bool] = False         # consumes values after the program ran (save, plots)
    has_output: ClassVar[bool] = True
    # Named outputs (`src: node.port`); empty = one unnamed output (`src: node`). A node with
    # named outputs assigns `ctx.out` one object with an attribute per output (a NamedTuple,
    # like torch's topk), and `out_axes` returns each output's axes by name. Every output an
    # edge uses becomes a value of its own in the graph (nnrun.named_outputs).
    outputs: ClassVar[dict[str, OutputPort]] = {}
    needs_grad: ClassVar[bool] = False      # its trace runs with gradients enabled
    scannable: ClassVar[bool] = True        # False: needs real values (decodes tokens to text),
                                            # so `stage=plan` derives shapes instead of scanning
    preamble: ClassVar[str] = ""            # helper functions the emitted code calls
    # How a sink consumes a value computed chunk by chunk over the examples (nnrun.sinks):
    # `collect` (concatenate, then write_artifacts), `stream` (append to disk per chunk) or
    # `mean` (keep running moments; write_artifacts gets the mean and ctx.spread the s.e.m.).
    sink_mode: ClassVar[Literal["collect", "stream", "mean"]] = "collect"
    # A sink whose input `stage=export`'s standalone script writes to <id>.safetensors (or
    # .json), as the run does (nnrun.export); plots and tables are not reproduced there.
    exported: ClassVar[bool] = False

    def check(self, params: Any, ctx: CheckContext) -> list[Issue]:
        """Model- and graph-aware validation (site exists, layer in range, axis known)."""
        return []

    def out_axes(self, params: Any, in_axes: dict[str, Axes],
                 ctx: CheckContext) -> Axes | dict[str, Axes]:
        """Names of the output's dimensions for one loop point, given the inputs' axes; for a
        node with named `outputs`, each output's axes by name.

        Raises:
            ValueError: the inputs' axes do not fit (reported as `axis_mismatch`).
        """
        return ()

    def default_output(self, params: Any) -> str | None:
        """The named output a bare `src: node` means (None: an edge must name one)."""
        return None

    def coords(self, params: Any, info: ModelInfo | None) -> dict[str, list[str]]:
        """Tick labels of the axes this node itself adds (e.g. the layers it stacks), by axis;
        loop and position labels come from the invoke."""
        return {}

    def token_fields(self, params: Any) -> dict[str, Any]:
        """Fields naming a single token (a string or a {column: ...}), by field name; bind
        resolves each to one token id per example, emitted code gets them via `ctx.token_ids`."""
        return {}

    def reducer(self, params: Any, in_axes: dict[str, Axes]) -> Reducer | None:
        """A `nnrun.reduce.Reducer` when this node reduces over the `example` axis: such a
        node is run by the runner across chunks (init/update/finalize), not in the program."""
        return None

    def emit(self, params: Any, ctx: EmitContext) -> list[Stmt]:
        """Python statements computing this node's value into `ctx.out` (or performing a write)."""
        raise NotImplementedError(f"{self.op} emits no code")

    def foldable(self, params: Any, ctx: EmitContext) -> bool:
        """Whether `emit` under a folded context (`ctx.fold`, nnrun.fastpath) gives code for
        every point of a foreach at once: its indexing goes through `ctx.select`/`ctx.target`,
        per row. False (the default) keeps one invoke per point, which is always right."""
        return False

    def definitions(self, params: Any, ctx: DefineContext) -> list[str]:
        """Top-level code this node needs before `run()` that depends on its params (the shared
        helpers of a type go in `preamble`): blocks placed after the preambles, in node order,
        each distinct block once. A block only this node uses has its lines mapped to the node,
        so that a failure inside it names the node. The names a block binds are reserved, so no generated name shadows them."""
        return []

    def write_artifacts(self, params: Any, value: Any, ctx: ArtifactContext) -> list[Path]:
        """For sinks: write files into the run directory from the computed input value."""
        return []


class Registry:
    """Maps op names to node types; rejects collisions; frozen once the schema is built."""

    def __init__(self) -> None:
        self._types: dict[str, NodeType] | MappingProxyType[str, NodeType] = {}

    def register(self, cls: type[NodeType]) -> type[NodeType]:
        """Add a node type, checked once here so that a malformed one fails at import."""
        if isinstance(self._types, MappingProxyType):
            raise RuntimeError(f"registry is frozen; cannot add op {cls.__name__}")
        _check_node_type(cls)
        if cls.op in self._types:
            raise RuntimeError(f"op {cls.op!r} is registered twice")
        self._types[cls.op] = cls()
        return cls

    def freeze(self) -> None:
        """No more registrations: the schema's node union has been built from this set."""
        self._types = MappingProxyType(dict(self._types))

    def get(self, op: str) -> NodeType:
        return self._types[op]

    def ops(self) -> list[str]:
        return sorted(self._types)

    def types(self) -> list[NodeType]:
        return [self._types[op] for op in self.ops()]

    def suggest(self, op: str) -> str:
        """A did-you-mean hint plus the list of valid ops."""
        from nnrun.errors import guess

        return guess(op, self.ops()) + "valid ops: " + ", ".join(self.ops())


def _check_node_type(cls: type) -> None:
    """A node type is a NodeType subclass whose Params narrow `op` to its own name."""
    if not (isinstance(cls, type) and issubclass(cls, NodeType)):
        raise TypeError(f"{cls!r} is not a NodeType subclass")
    op = getattr(cls, "op", None)
    if not isinstance(op, str) or not re.match(NODE_ID_PATTERN, op):
        raise TypeError(f"{cls.__name__}.op must be an identifier, found {op!r}")
    params = getattr(cls, "Params", None)
    if not (isinstance(params, type) and issubclass(params, NodeParams)):
        raise TypeError(f"{cls.__name__}.Params must subclass NodeParams")
    if get_args(params.model_fields["op"].annotation) != (op,):
        raise TypeError(f"{cls.__name__}.Params.op must be Literal[{op!r}]")
    for port in cls.inputs.values():
        if not isinstance(port, Port):
            raise TypeError(f"{cls.__name__}.inputs values must be Port")
    for name, output in cls.outputs.items():
        if not isinstance(output, OutputPort) or not re.match(NODE_ID_PATTERN, name):
            raise TypeError(f"{cls.__name__}.outputs must map identifiers to OutputPort")
    if cls.outputs and not cls.has_output:
        raise TypeError(f"{cls.__name__} has named outputs but has_output = False")


REGISTRY = Registry()


def register(cls: type[NodeType]) -> type[NodeType]:
    """Class decorator adding a node type to the global registry."""
    return REGISTRY.register(cls)


def dim_of(axes: tuple[str, ...], name: str | None) -> int:
    """Index of the named axis (None = the last one), as a negative index so that it stays right
    whether or not loop axes are stacked in front.

    Raises:
        ValueError: the axis is not present (reported as `axis_mismatch` with the node id).
    """
    if not axes:
        raise ValueError("the input is a scalar; it has no axis to reduce")
    if name is None:
        return -1
    if name not in axes:
        raise ValueError(f"the input has no axis `{name}` (its axes: {', '.join(axes)})")
    return axes.index(name) - len(axes)


def drop_axis(axes: tuple[str, ...], name: str | None) -> tuple[str, ...]:
    dim = dim_of(axes, name) + len(axes)
    return axes[:dim] + axes[dim + 1:]


class InputNode(NodeType):
    """Base for tensor functions with one input port `in` (the common case)."""

    inputs = {"in": Port("input tensor")}


class VocabMetric(NodeType):
    """Base for metrics over logits: input port `logits`, the trailing `vocab` axis is consumed.
    Token fields may differ per example, so the logits keep their `example` axis."""

    kind = "metric"
    inputs = {"logits": Port("logits with a trailing `vocab` axis")}

    def out_axes(self, p, in_axes, ctx):
        axes = in_axes["logits"]
        if not axes or axes[-1] != "vocab":
            raise ValueError(f"logits must end in a `vocab` axis (got: {', '.join(axes)})")
        if "example" not in axes:
            raise ValueError("logits have no `example` axis (they were averaged over examples); "
                             "compute the metric per example, then take the mean")
        return axes[:-1]


class Elementwise(NodeType):
    """Base for `a <symbol> b` with broadcasting of b over a's leading axes."""

    symbol: ClassVar[str]
    inputs = {"a": Port("left operand"), "b": Port("right operand")}

    def out_axes(self, p, in_axes, ctx):
        a, b = in_axes["a"], in_axes["b"]
        if b != a[len(a) - len(b):]:
            raise ValueError(f"cannot combine axes ({', '.join(a)}) and ({', '.join(b)}); "
                             "b's axes must equal the last axes of a")
        return a

    def emit(self, p, ctx):
        return [Stmt(f"{ctx.out} = {ctx.input('a')} {self.symbol} {ctx.input('b')}")]


class AxisFunction(InputNode):
    """Base for a torch method applied along an optional named axis, keeping the shape."""

    method: ClassVar[str]

    def out_axes(self, p, in_axes, ctx):
        dim_of(in_axes["in"], p.axis)
        return in_axes["in"]

    def emit(self, p, ctx):
        dim = dim_of(ctx.in_axes("in"), p.axis)
        return [Stmt(f"{ctx.out} = {ctx.input('in')}.float().{self.method}(dim={dim})")]


class AxisReduction(InputNode):
    """Base for a statistic over one named axis. Over `example` it runs across chunks in the
    runner (exact for the whole dataset); over any other axis it is ordinary emitted code."""

    statistic: ClassVar[str]     # mean | std | sem
    method: ClassVar[str]        # the emitted torch expression, `{x}` and `{dim}` filled in

    def out_axes(self, p, in_axes, ctx):
        return drop_axis(in_axes["in"], p.axis)

    def reducer(self, p, in_axes):
        if p.axis != "example":
            return None
        from nnrun.reduce import Moments

        return Moments(in_axes["in"].index("example"), self.statistic)

    def emit(self, p, ctx):
        dim = dim_of(ctx.in_axes("in"), p.axis)
        x = f"{ctx.input('in')}.float()"
        return [Stmt(f"{ctx.out} = " + self.method.format(x=x, dim=dim))]
