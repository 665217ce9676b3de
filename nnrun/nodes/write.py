"""`write`: change the activation at a site: replace it, add to it, or patch it from another run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from nnrun.errors import Issue
from nnrun.nodes.base import NodeType, Port, Stmt, register
from nnrun.nodes.fields import (
    LoopRef,
    SiteParams,
    after_position,
    check_head,
    check_site,
    loop_var,
    picks,
    remaining_after_position,
    site_axes,
)
from nnrun.sites import is_named_site, site_of


@register
class Write(NodeType):
    """Edit `site` in place during the forward pass; later modules see the edited value.

    Modes: `replace` sets it to `value` (an edge) or `constant`; `add` adds `coefficient * value`
    (steering); `patch` copies the same layer and position out of `value`, an activation read in
    another run (activation patching).
    """

    op = "write"
    kind = "write"
    summary = "replace / add to / patch the activation at a site"
    touches_model = True
    has_output = False
    inputs = {"value": Port("tensor to write (replace, add) or patch from", required=False)}

    class Params(SiteParams):
        op: Literal["write"] = "write"
        mode: Literal["replace", "add", "patch"] = "replace"
        constant: float | None = Field(None, description="replace/add this number instead of "
                                                         "an input edge (0 = zero-ablation)")
        coefficient: float | LoopRef = Field(
            1.0, description="add mode: scale of the added value (a number, or "
                             "`{coefficient}` from a foreach: a coefficient sweep)")

    def check(self, p, ctx):
        issues = check_site(p, ctx) + check_head(p, ctx)
        if is_named_site(p.site) and not site_of(p.site).writable:
            issues.append(Issue("read_only_site", f"site `{p.site}` can be read but a write "
                                "there would not change what the model computes",
                                ctx.path + ".site", ctx.node))
        if p.constant is not None and p.constant != p.constant or \
                p.constant in (float("inf"), float("-inf")):
            issues.append(Issue("invalid_value", f"`constant` must be a finite number, found "
                                f"{p.constant!r}", ctx.path + ".constant", ctx.node))
        if p.mode == "patch" and p.constant is not None:
            issues.append(Issue("invalid_value", "patch mode takes its value from an edge, not "
                                "`constant`", ctx.path + ".constant", ctx.node))
        return issues

    def out_axes(self, p, in_axes, ctx):
        if (p.constant is None) != ("value" in in_axes):
            raise ValueError("give exactly one of an edge into `value` or `constant`")
        if "value" in in_axes:
            _check_value_axes(p, in_axes["value"])
        return ()

    def foldable(self, p, ctx):
        """Per row (at the foreach's position or head, or where every point writes): a
        constant, a value without an example axis (a steering vector), or a value patched
        from another run (each row takes its example's)."""
        if p.constant is not None:
            return True
        axes = ctx.in_axes("value")
        if "example" in axes:
            return ctx.outside("value") and p.mode == "patch"
        # one value for every row: it broadcasts, unless a looped head picks from it
        picked = {a for a, spec in zip(site_axes(p.site)[2:], after_position(p))
                  if loop_var(spec)}
        return ctx.outside("value") and not picked & set(axes)

    def emit(self, p, ctx):
        stmts = []
        for ref in ctx.site_refs(p.site, p.layer, p.at):
            target = ctx.target(ref.code, p.position, after_position(p))
            value = self._value(p, ctx, ref)
            if p.mode == "add":
                scale = ctx.index(p.coefficient) if loop_var(p.coefficient) else \
                    ctx.literal(p.coefficient)
                if ctx.fold is not None and loop_var(p.coefficient):   # one per row
                    scale = _per_row(p, scale)
                value = f"{target} + {scale} * {value}"
            stmts.append(Stmt(f"{target} = {value}", ref.access))
        return stmts

    @staticmethod
    def _value(p, ctx, ref) -> str:
        if p.constant is not None:
            return ctx.literal(p.constant)
        source, axes = ctx.input("value"), ctx.in_axes("value")
        # A value with a `layer` axis gives each written layer its own slice.
        if "layer" in axes:
            source += ctx.layer_index_into("value", ref.layer)
            axes = tuple(a for a in axes if a != "layer")
        source, axes = _picked(p, ctx, source, axes)
        if p.mode != "patch" and p.position == "all" and axes == ("example", site_axes(p.site)[-1]):
            # One vector per example written at every position: broadcast over positions.
            return f"{source}.unsqueeze(-2)"
        return source


def _per_row(p, scale: str) -> str:
    """A folded invoke's (row,) coefficients, shaped to broadcast against the write's target:
    rows, then the axes the write keeps (position when it writes all of them, then those after
    it that it does not pick)."""
    kept = (p.position == "all") + remaining_after_position(p)
    return f"{scale}[:{', None' * kept}]"


def _picked(p, ctx, source: str, axes: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    """The value at what the write picks, and the axes left: its position when patching (the
    same token as the write), and its head when the write takes one head of a value that has
    them all."""
    after = after_position(p)
    head = {a: spec for a, spec in zip(site_axes(p.site)[2:], after) if picks(spec)}
    left = tuple(a for a in axes if a not in head)
    if p.mode == "patch" and p.position != "all" and "position" in axes:
        kept = tuple(spec if a in axes else None for a, spec in zip(site_axes(p.site)[2:], after))
        left = tuple(a for a in left if a != "position")
        return ctx.select(source, p.position, kept, len(left) - 1, outside=True), left
    index = [ctx.example_index(outside=True) if axis == "example" else ctx.index(head.get(axis))
             for axis in axes]
    while index and index[-1] == ":":
        index.pop()
    return (f"{source}[{', '.join(index)}]" if index else source), left


def _check_value_axes(p, value: tuple[str, ...]) -> None:
    """The written value must fit the site: after taking this layer's slice (and, when
    patching, this position; and the head the write takes) its axes are the site's, or
    trailing ones that broadcast."""
    site = site_axes(p.site)
    picked = {a for a, spec in zip(site[2:], after_position(p)) if picks(spec)}
    if p.position != "all":
        picked.add("position")
    target = tuple(a for a in site if a not in picked)
    fitted = tuple(a for a in value if a != "layer" and (a not in picked or a == "position"))
    if p.mode == "patch" and p.position != "all":
        fitted = tuple(a for a in fitted if a != "position")
    spread = p.mode != "patch" and p.position == "all" and fitted == ("example", target[-1])
    if "layer" in value and p.layer is None:
        raise ValueError(f"the value has a `layer` axis but `{p.site}` takes no layer")
    per_example = tuple(a for a in value if a != "layer")[:2] == ("example", "position")
    if p.mode == "patch" and p.position != "all" and "position" in value and not per_example:
        raise ValueError("patching one position takes it from a per-example value with axes "
                         "(example, position, ...); write a dataset-level value with "
                         "mode: replace and position: all")
    if fitted == target[len(target) - len(fitted):] and fitted or spread:
        return
    raise ValueError(f"a value with axes ({', '.join(value)}) cannot be written at `{p.site}` "
                     f"with axes ({', '.join(target)}): reduce or select the extra axes first "
                     "(mean, select_position), or patch from a read of the same site")
