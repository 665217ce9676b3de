"""`function`: call a Python function from a file beside the experiment (trusted code, opt-in).

The file's text is copied verbatim into the program (so `program.py`, the exported script and the
manifest's sha256 all describe the code that ran), with a wrapper per node that calls the function
on the inputs in edge order and checks that the result has the declared axes.
"""

from __future__ import annotations

import functools
from typing import Annotated, Literal

from pydantic import Field, field_validator

from nnrun.errors import CompileError, Issue
from nnrun.nodes.base import NODE_ID_PATTERN, NodeParams, NodeType, Port, Stmt, register

AxisName = Annotated[str, Field(pattern=NODE_ID_PATTERN)]


@register
class Function(NodeType):
    op = "function"
    summary = ("call `fn: FILE.py:NAME` on the inputs (in edge order); returns one tensor with "
               "the declared `axes` (needs allow_functions=true)")
    inputs = {"in": Port("tensors passed to the function as positional arguments, in edge "
                         "order", variadic=True)}
    scannable = False   # `stage=plan` never runs the user's code: it derives shapes instead

    class Params(NodeParams):
        op: Literal["function"] = "function"
        fn: str = Field(description="`FILE.py:NAME`: a function defined in a Python file, the "
                                    "path relative to the experiment file's folder (or below)")
        axes: list[AxisName] | Literal["same"] = Field(
            description="the axes of the returned tensor, e.g. [example]; `same`: those of the "
                        "first input")

        @field_validator("fn")
        @classmethod
        def _file_and_name(cls, value: str) -> str:
            from nnrun.functions import split_fn

            split_fn(value)
            return value

    def check(self, p, ctx):
        from nnrun.functions import check_file

        issues = []
        if p.scope is not None:
            issues.append(Issue("illegal_scope", "a function runs after the model, on the "
                                "values it produced; remove its `scope`", ctx.path + ".scope",
                                ctx.node))
        if isinstance(p.axes, list) and len(set(p.axes)) < len(p.axes):
            issues.append(Issue("invalid_value", f"`axes` names an axis twice: {p.axes}",
                                ctx.path + ".axes", ctx.node))
        if ctx.source is None:  # no file to look beside (a salvage pass): compile reports it
            return issues
        return issues + check_file(p.fn, ctx.source, ctx.path + ".fn", ctx.node,
                                   _program_names())

    def out_axes(self, p, in_axes, ctx):
        axes = in_axes["in"] if p.axes == "same" else tuple(p.axes)
        problem = _example_problem(axes, [in_axes["in"]])
        if problem:
            raise ValueError(problem)
        return axes

    def definitions(self, p, ctx):
        from nnrun.functions import read, split_fn

        file = read(p.fn, ctx.source)
        name = split_fn(p.fn)[1]
        code = (f"# ---- your code: {file.shown}, copied verbatim (allow_functions=true) ----\n"
                f"# sha256 {file.sha256}\n{file.text.rstrip()}\n"
                f"# ---- end of {file.shown} ----")
        return [code, _wrapper(ctx.node_id, name, file.shown, self._axes(p, ctx),
                               ctx.inputs_axes("in"))]

    def emit(self, p, ctx):
        inputs = ctx.node.inputs["in"]
        problem = _example_problem(self._axes(p, ctx),
                                   [ctx.graph.source_axes(ctx.node_id, s) for s in inputs])
        if problem:
            raise CompileError(f"experiment `{ctx.graph.spec.name}` has 1 problem:", [Issue(
                "axis_mismatch", problem, ctx.node.path + ".axes", ctx.node_id)])
        args = ", ".join(ctx.var(src) for src in inputs)
        return [Stmt(f"{ctx.out} = {wrapper_name(ctx.node_id)}({args})")]

    @staticmethod
    def _axes(p, ctx) -> tuple[str, ...]:
        return ctx.graph.axes[ctx.node_id]


def wrapper_name(node_id: str) -> str:
    return f"nnrun_function_{node_id}"


@functools.lru_cache(maxsize=1)
def _program_names() -> frozenset[str]:
    from nnrun.functions import program_names

    return frozenset(program_names())


def _example_problem(axes: tuple[str, ...], inputs: list[tuple[str, ...]]) -> str | None:
    """A function runs once per chunk of examples: it must keep the `example` axis its inputs
    have (or it would see only a chunk), and cannot invent one."""
    has = any("example" in a for a in inputs)
    if has and "example" not in axes:
        return ("a function runs on one chunk of examples at a time, so it must keep the "
                "`example` axis; to reduce over the examples, add a mean/std/sem node with "
                "axis: example after it")
    if not has and "example" in axes:
        return "no input has an `example` axis, so the result cannot have one"
    return None


def _wrapper(node_id: str, name: str, shown: str, axes: tuple[str, ...],
             inputs: list[tuple[str, ...]]) -> str:
    """The function the node's line calls: the user's function on the inputs, its failure said
    as such, and its result checked against the declared axes (sizes the inputs fix)."""
    where = []
    for axis in axes:  # (input, its dimension) giving this axis's size; None for a new axis
        k = next((k for k, a in enumerate(inputs) if axis in a), None)
        where.append(None if k is None else (k, inputs[k].index(axis)))
    declared = "(" + ", ".join(axes) + ")"
    declares = f", but the node declares axes {declared} of sizes "
    return f'''def {wrapper_name(node_id)}(*inputs):
    """Node {node_id!r}: {name}() from {shown!r} -> {declared}."""
    try:
        value = {name}(*inputs)
    except Exception as err:  # the user's function failed: the node's line says where
        raise RuntimeError({f"{name}() in {shown} raised "!r} + type(err).__name__ + ": "
                           + str(err)) from err
    where = {tuple(where)!r}  # {declared}: (input, dim) fixing each size; None: any
    sizes = tuple(None if w is None or not isinstance(inputs[w[0]], torch.Tensor)
                  else inputs[w[0]].shape[w[1]] for w in where)
    shape = tuple(value.shape) if isinstance(value, torch.Tensor) else None
    if shape is None or len(shape) != len(sizes) or any(
            size is not None and size != got for size, got in zip(sizes, shape)):
        found = "shape " + str(shape) if shape is not None else type(value).__name__
        raise ValueError({f"{name}() returned "!r} + found + {declares!r}
                         + str(sizes) + " (None: any); set `axes:` to what it returns")
    return value'''
