"""Loop variables of a `foreach` (`layer`, `position`, ...): each owns its values and tick labels.

Invariant: the schema, bind and codegen know loop variables only through `LOOPS`; adding one is
one `register` call here (how its spec becomes values and labels), never an edit of those stages.
A node refers to a variable as `"{name}"` and decides itself how the value indexes its tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from nnrun.errors import Issue
    from nnrun.model_info import ModelInfo


class LoopError(ValueError):
    """A foreach spec that cannot be expanded for this model or these prompts (bind reports it
    at the scope, with `code` and `hint`)."""

    def __init__(self, code: str, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.code, self.message, self.hint = code, message, hint


@dataclass(frozen=True)
class LoopContext:
    """What a loop variable may consult: the model's geometry and the invoke's tokens."""

    info: ModelInfo | None
    tokens: tuple[tuple[str, ...], ...]        # token strings per example
    where: Callable[[int], str]                # names a dataset row in messages

    @property
    def lengths(self) -> tuple[int, ...]:
        return tuple(len(t) for t in self.tokens)


Check = Callable[[Any, "ModelInfo | None", str, str], "list[Issue]"]


@dataclass(frozen=True)
class LoopVariable:
    """One foreach variable: `expand(spec, ctx)` gives its values and their tick labels;
    `check(spec, info, path, scope)` the problems of a spec seen before any prompt is read."""

    name: str
    doc: str
    expand: Callable[[Any, LoopContext], tuple[list[Any], list[str]]]
    check: Check


LOOPS: dict[str, LoopVariable] = {}


def register(name: str, doc: str, check: Check):
    """Decorator: register `expand(spec, ctx) -> (values, labels)` as loop variable `name`."""
    def add(expand):
        if name in LOOPS:
            raise RuntimeError(f"loop variable {name!r} is registered twice")
        LOOPS[name] = LoopVariable(name, doc, expand, check)
        return expand
    return add


def _index_spec(var: str, words: tuple[str, ...], bound: Callable | None = None) -> Check:
    """The check of an index variable: one of `words`, an int or a list of ints; `bound(value,
    info, path, scope)` gives the issue of an int outside the model (the first one is reported)."""
    def check(spec, info, path: str, scope: str) -> list[Issue]:
        from nnrun.errors import Issue

        values = spec if isinstance(spec, list) else [spec]
        ints = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
        if spec in words or (values and len(ints) == len(values)):
            if bound is None or info is None:
                return []
            return [i for i in (bound(v, info, path, scope) for v in ints) if i][:1]
        return [Issue("invalid_value", f"foreach {var} {spec!r} is not " + " or ".join(
            f"`{w}`" for w in words) + ", an integer or a list of integers", path, scope,
            f"e.g. foreach: {{{var}: all}} or {{{var}: [0, 1]}}")]
    return check


def _layer_bound(layer: int, info: ModelInfo, path: str, scope: str) -> Issue | None:
    from nnrun.nodes.fields import layer_issue

    inside = -info.n_layers <= layer < info.n_layers
    return None if inside else layer_issue(layer, info.n_layers, path, scope)


def _head_bound(head: int, info: ModelInfo, path: str, scope: str) -> Issue | None:
    from nnrun.errors import Issue

    if -info.n_heads <= head < info.n_heads:
        return None
    return Issue("head_out_of_range", f"head {head} does not exist (the model has {info.n_heads} "
                 f"heads per layer: 0..{info.n_heads - 1})", path, scope)


def _numbers(spec, info, path: str, scope: str) -> list[Issue]:
    """A value loop: a number or a non-empty list of numbers."""
    from nnrun.errors import Issue

    values = spec if isinstance(spec, list) else [spec]
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                      and v == v and abs(v) != float("inf") for v in values):
        return []
    return [Issue("invalid_value", f"foreach values {spec!r} must be finite numbers", path,
                  scope, "e.g. foreach: {coefficient: [0, 2, 4, 8]}")]


def _nothing(spec, info, path: str, scope: str) -> list[Issue]:
    return []


def indices(spec, n: int, what: str, words: tuple[str, ...] = ("all",)) -> list[int]:
    """`all`, an int or a list of ints (negative from the end) as indices into 0..n-1."""
    values = list(range(n)) if spec == "all" else (spec if isinstance(spec, list) else [spec])
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise LoopError("bad_input", f"foreach {what} {spec!r} must be "
                        + ", ".join(f"`{w}`" for w in words) + ", an integer or a list of them")
    positive = [v + n if v < 0 else v for v in values]
    if any(not 0 <= v < n for v in positive):
        raise LoopError("bad_input", f"foreach {what} {spec!r} is outside 0..{n - 1}")
    return positive


@register("layer", "block index: `all`, an int or a list",
          _index_spec("layer", ("all",), _layer_bound))
def _layers(spec, ctx: LoopContext):
    layers = indices(spec, ctx.info.n_layers if ctx.info else 0, "layer")
    return layers, [str(v) for v in layers]


@register("position", "token position: `all`, `last`, an int or a list (prompts of one length)",
          _index_spec("position", ("all", "last")))
def _positions(spec, ctx: LoopContext):
    lengths = ctx.lengths
    if len(set(lengths)) > 1:
        row = next(i for i, n in enumerate(lengths) if n != lengths[0])
        raise LoopError("ragged_positions", f"foreach over positions needs prompts of one token "
                        f"count, but {ctx.where(0)} has {lengths[0]} tokens and "
                        f"{ctx.where(row)} has {lengths[row]}",
                        "use prompts built from one template, or read positions by meaning "
                        "({match: ...}, last) instead of a foreach")
    n_tokens, tokens = lengths[0], ctx.tokens[0]
    if spec == "last":
        spec = -1
    try:
        positive = indices(spec, n_tokens, "position", ("all", "last"))
    except LoopError as err:
        if "outside" in err.message:
            raise LoopError("position_out_of_range", f"foreach position {spec!r} is outside the "
                            f"prompt's {n_tokens} tokens") from None
        raise
    # Counted from the end of the prompt: left padding of a batch cannot shift them.
    return [p - n_tokens for p in positive], [f"{p}:{tokens[p].strip()}" for p in positive]


@register("head", "attention head: `all`, an int or a list (sites split into heads)",
          _index_spec("head", ("all",), _head_bound))
def _heads(spec, ctx: LoopContext):
    heads = indices(spec, ctx.info.n_heads if ctx.info else 0, "head")
    return heads, [str(h) for h in heads]


@register("coefficient", "a number or a list of numbers (e.g. a write's `coefficient`)", _numbers)
def _coefficients(spec, ctx: LoopContext):
    values = [float(v) for v in (spec if isinstance(spec, list) else [spec])]
    return values, [f"{v:g}" for v in values]


@register("prompt", "replaced by datasets (a migration message)", _nothing)
def _prompts(spec, ctx: LoopContext):
    raise LoopError("migrated", "`foreach: {prompt: [...]}` is replaced by datasets",
                    "give the prompts as `input: [...]` (one example each) or as a column of "
                    "`data`; results then have an `example` axis")
